"""The au PAY adapter: "aupay v1", a protocol defined by paymux (KDDI publishes no merchant API; see the docs).

| protocol call | aupay v1 |
|---|---|
| create_payment (qr_mpm) | POST /v1/payment_codes (merchant_order_id = the PaymentIntent id); the customer scans qr_url |
| create_payment (qr_cpm) | POST /v1/charges with the scanned customer_code; answered at once, paid or failed |
| get_payment_status | GET /v1/charges/{merchant_order_id} |
| cancel_payment | POST /v1/charges/{merchant_order_id}/cancel (stops an unpaid code, reverses a paid charge until day 89) |
| refund_payment | POST /v1/charges/{merchant_order_id}/refunds (merchant_refund_id = the refund transaction id) |

Credentials of a store's `aupay` config: `api_key` (the key id), `api_secret`, `merchant_id`. There is no
production URL until a KDDI contract gives one: the store's `base_url` is required.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from datetime import UTC
from typing import Any

import httpx

from paymux.core.clock import Clock
from paymux.providers.aupay import signing, wire
from paymux.providers.base import (
    PaymentMethodType,
    PaymentReference,
    PaymentRequest,
    ProviderCredentials,
    ProviderNotification,
    ProviderPayment,
    ProviderPaymentStatus,
    ProviderProtocolError,
    ProviderRefund,
    ProviderRejected,
    RefundRequest,
    UnsupportedFlow,
    WebhookNotUnderstood,
)
from paymux.providers.http import send

PRODUCTION_URL: str | None = None  # KDDI's API address comes with the merchant contract
CONTENT_TYPE = "application/json"
# Error answers to POST /v1/charges that mean "the customer's wallet declined", not "the request was wrong".
CHARGE_DECLINES = {"insufficient_balance": "payment_failed", "code_expired": "expired"}


class AuPayProvider:
    name = "aupay"
    payment_methods = frozenset({PaymentMethodType.QR_MPM, PaymentMethodType.QR_CPM})
    signature_header = signing.SIGNATURE_HEADER

    def __init__(self, http: httpx.AsyncClient, clock: Clock, nonce: Callable[[], str] | None = None) -> None:
        self._http = http
        self._clock = clock
        self._nonce = nonce or (lambda: secrets.token_hex(16))

    # ------------------------------------------------------------------ the protocol

    async def create_payment(
        self, credentials: ProviderCredentials, request: PaymentRequest
    ) -> ProviderPayment:
        match request.payment_method_type:
            case PaymentMethodType.QR_MPM:
                return await self._create_code(credentials, request)
            case PaymentMethodType.QR_CPM:
                return await self._charge(credentials, request)
            case _:
                raise UnsupportedFlow(f"aupay: {request.payment_method_type.value} is not supported")

    async def _create_code(
        self, credentials: ProviderCredentials, request: PaymentRequest
    ) -> ProviderPayment:
        body: dict[str, Any] = {
            "merchant_order_id": _order_id(request.payment_intent_id),
            "amount": request.amount,
            "currency": request.currency,
            "expires_in": wire.CODE_LIFETIME_SECONDS,
        }
        if request.description:
            body["description"] = request.description[: wire.DESCRIPTION_MAX]
        code = wire.parse_payment_code(await self._call(credentials, "POST", "/v1/payment_codes", body))
        _same_order(code.merchant_order_id, request.payment_intent_id)
        return ProviderPayment(
            status=ProviderPaymentStatus.REQUIRES_ACTION,
            provider_transaction_id=None,
            amount=code.amount,
            currency=code.currency,
            provider_reference=code.payment_code_id,
            next_action={
                "type": "display_qr_code",
                "provider": self.name,
                "qr_payload": code.qr_url,
                "url": code.qr_url,
                "deeplink": code.app_url,
                "expires_at": code.expires_at.astimezone(UTC).isoformat(),
            },
        )

    async def _charge(self, credentials: ProviderCredentials, request: PaymentRequest) -> ProviderPayment:
        if not request.customer_code:
            raise ProviderRejected("aupay: a qr_cpm payment needs the customer's scanned code")
        body = {
            "merchant_order_id": _order_id(request.payment_intent_id),
            "amount": request.amount,
            "currency": request.currency,
            "customer_code": request.customer_code,
        }
        try:
            data = await self._call(credentials, "POST", "/v1/charges", body)
        except ProviderRejected as exc:
            decline = CHARGE_DECLINES.get(exc.provider_code or "")
            if decline is None:
                raise
            return ProviderPayment(
                status=ProviderPaymentStatus.FAILED,
                provider_transaction_id=None,
                amount=request.amount,
                currency=request.currency,
                failure_code=decline,
                failure_message=str(exc)[:500],
            )
        charge = wire.parse_charge(data)
        _same_order(charge.merchant_order_id, request.payment_intent_id)
        return _payment(charge, None)

    async def get_payment_status(
        self, credentials: ProviderCredentials, reference: PaymentReference
    ) -> ProviderPayment:
        path = f"/v1/charges/{_order_id(reference.payment_intent_id)}"
        charge = wire.parse_charge(await self._call(credentials, "GET", path, None))
        _same_order(charge.merchant_order_id, reference.payment_intent_id)
        return _payment(charge, reference.provider_reference)

    async def cancel_payment(self, credentials: ProviderCredentials, reference: PaymentReference) -> None:
        path = f"/v1/charges/{_order_id(reference.payment_intent_id)}/cancel"
        try:
            data = await self._call(credentials, "POST", path, None)
        except ProviderRejected as exc:
            if exc.provider_code == "already_canceled":
                return
            raise
        charge = wire.parse_charge(data)
        if charge.status in {"pending", "paid"}:
            raise ProviderProtocolError(f"aupay: cancel answered with a {charge.status} charge")

    async def refund_payment(
        self, credentials: ProviderCredentials, request: RefundRequest
    ) -> ProviderRefund:
        body: dict[str, Any] = {"merchant_refund_id": _order_id(request.refund_id), "amount": request.amount}
        if request.reason:
            body["reason"] = request.reason[: wire.DESCRIPTION_MAX]
        path = f"/v1/charges/{_order_id(request.payment.payment_intent_id)}/refunds"
        refund = wire.parse_refund(await self._call(credentials, "POST", path, body))
        if refund.merchant_refund_id != request.refund_id or refund.amount != request.amount:
            raise ProviderProtocolError("aupay: the refund answer is about another refund")
        status = wire.refund_status(refund.status)
        failed = refund.status == "failed"
        return ProviderRefund(
            status=status,
            provider_refund_id=refund.id,
            failure_code="refund_failed" if failed else None,
            failure_message="au PAY reports the refund as failed" if failed else None,
        )

    async def get_refund_status(
        self, credentials: ProviderCredentials, request: RefundRequest
    ) -> ProviderRefund:
        # aupay v1 answers a repeated refund (same merchant_refund_id, same body) with the original result, and
        # makes it now if the first request never arrived: asking again is the status check.
        return await self.refund_payment(credentials, request)

    # ------------------------------------------------------------------ webhooks (paymux's convention)

    def parse_notification(self, body: bytes) -> ProviderNotification | None:
        try:
            payload = json.loads(body)
        except ValueError:
            raise WebhookNotUnderstood("not JSON") from None
        if (
            not isinstance(payload, dict)
            or not isinstance(payload.get("id"), str)
            or not payload["id"].startswith("evt_")
            or not isinstance(payload.get("type"), str)
            or not isinstance(payload.get("data"), dict)
        ):
            raise WebhookNotUnderstood("not an au PAY notification")
        event_type: str = payload["type"]
        if event_type not in wire.CHARGE_EVENTS and event_type not in wire.REFUND_EVENTS:
            return None  # a newer event type: acknowledged, nothing to check
        merchant_order_id = payload["data"].get("merchant_order_id")
        if not isinstance(merchant_order_id, str):
            raise WebhookNotUnderstood(f"a {event_type} notification without data.merchant_order_id")
        return ProviderNotification(
            payment_intent_id=merchant_order_id, dedupe_key=payload["id"], provider_status=event_type
        )

    def verify_notification(self, body: bytes, signature: str | None, secret: str) -> bool:
        return signing.verify_webhook(secret, body, signature)

    # ------------------------------------------------------------------ wire

    async def _call(
        self, credentials: ProviderCredentials, method: str, path: str, body: dict[str, Any] | None
    ) -> dict[str, Any]:
        values = credentials.values
        try:
            key_id, api_secret, merchant = values["api_key"], values["api_secret"], values["merchant_id"]
        except KeyError as exc:
            raise ProviderRejected(f"aupay: the store's credentials lack {exc.args[0]}") from None
        base_url = credentials.base_url or PRODUCTION_URL
        if not base_url:
            raise ProviderRejected("aupay: set base_url: KDDI's API address comes with the merchant contract")
        raw = json.dumps(body, separators=(",", ":")).encode() if body is not None else b""
        headers = signing.request_headers(
            key_id=key_id,
            api_secret=api_secret,
            merchant_id=merchant,
            method=method,
            path=path,
            timestamp=int(self._clock.now().timestamp()),
            nonce=self._nonce(),
            body=raw,
        )
        if body is not None:
            headers["Content-Type"] = CONTENT_TYPE
        response = await send(
            self._http, self.name, method, base_url.rstrip("/") + path, content=raw or None, headers=headers
        )
        try:
            answer = response.json()
        except ValueError:
            raise ProviderProtocolError(f"aupay: HTTP {response.status_code} without a JSON body") from None
        if response.status_code >= 400:
            code, message = wire.error_of(answer)
            raise ProviderRejected(f"aupay: {code}: {message}", provider_code=code)
        if response.status_code not in {200, 201} or not isinstance(answer, dict):
            raise ProviderProtocolError(f"aupay: unexpected HTTP {response.status_code} answer")
        return answer

    def __repr__(self) -> str:
        return "AuPayProvider()"


def _payment(charge: wire.Charge, provider_reference: str | None) -> ProviderPayment:
    code = wire.failure_code(charge.status)
    message = None
    if code is not None:
        detail = f" ({charge.failure_code})" if charge.failure_code else ""
        message = f"au PAY reports the charge as {charge.status}{detail}"
    return ProviderPayment(
        status=wire.payment_status(charge.status),
        provider_transaction_id=charge.id,
        amount=charge.amount,
        currency=charge.currency,
        provider_reference=provider_reference,
        failure_code=code,
        failure_message=message,
    )


def _order_id(value: str) -> str:
    """A merchant order or refund id as the protocol takes it (it also goes into URL paths unescaped)."""
    if not wire.ORDER_ID.fullmatch(value):
        raise ProviderRejected(f"aupay: {value!r} is not a valid merchant id (1-40 of [A-Za-z0-9_-])")
    return value


def _same_order(answered: str, asked: str) -> None:
    if answered != asked:
        raise ProviderProtocolError(f"aupay: asked about {asked}, answered about {answered}")
