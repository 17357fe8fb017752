"""The PayPay adapter: Open Payment API v2, dynamic QR codes (merchant-presented).

| protocol call | PayPay |
|---|---|
| create_payment (qr_mpm) | POST /v2/codes (codeType ORDER_QR; merchantPaymentId = the PaymentIntent id) |
| get_payment_status | GET /v2/codes/payments/{merchantPaymentId} |
| cancel_payment | DELETE /v2/codes/{codeId}, then DELETE /v2/payments/{merchantPaymentId} (reverses a payment that slipped through) |
| refund_payment | POST /v2/refunds (merchantRefundId = the refund transaction id) |
| fetch_settlement_file | GET /v2/settlements/{YYYY-MM-DD} (paymux-defined, in PayPay's style): CSV, errors in the envelope |

Credentials of a store's `paypay` config: `api_key`, `api_secret`, `merchant_id` (sent as X-ASSUME-MERCHANT).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import httpx

from paymux.core.clock import Clock
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
    ProviderRefundStatus,
    ProviderRejected,
    RefundRequest,
    UnsupportedFlow,
    WebhookNotUnderstood,
)
from paymux.providers.http import send
from paymux.providers.notifications import verify_body_signature
from paymux.providers.paypay import signing, wire
from paymux.providers.settlement import LAYOUTS, SettlementLayout

PRODUCTION_URL = "https://api.paypay.ne.jp"
CONTENT_TYPE = "application/json;charset=UTF-8"
SUCCESS_CODES = frozenset({"SUCCESS", "REQUEST_ACCEPTED"})


class PayPayProvider:
    name = "paypay"
    payment_methods = frozenset({PaymentMethodType.QR_MPM})
    signature_header = "X-PayPay-Signature"

    def __init__(self, http: httpx.AsyncClient, clock: Clock, nonce: Callable[[], str] | None = None) -> None:
        self._http = http
        self._clock = clock
        self._nonce = nonce or (lambda: secrets.token_hex(4))

    # ------------------------------------------------------------------ the protocol

    async def create_payment(
        self, credentials: ProviderCredentials, request: PaymentRequest
    ) -> ProviderPayment:
        if request.payment_method_type is not PaymentMethodType.QR_MPM:
            raise UnsupportedFlow(f"paypay: {request.payment_method_type.value} is not supported")
        body = {
            "merchantPaymentId": request.payment_intent_id,
            "amount": {"amount": request.amount, "currency": request.currency},
            "codeType": "ORDER_QR",
            "orderDescription": (request.description or request.payment_intent_id)[:255],
            "requestedAt": self._epoch(),
            "isAuthorization": False,
        }
        data = await self._call(credentials, "POST", "/v2/codes", body)
        amount = _amount(data)
        expiry = data.get("expiryDate")
        return ProviderPayment(
            status=ProviderPaymentStatus.REQUIRES_ACTION,
            provider_transaction_id=None,
            amount=amount[0],
            currency=amount[1],
            provider_reference=_text(data, "codeId"),
            next_action={
                "type": "display_qr_code",
                "provider": self.name,
                "qr_payload": _text(data, "url"),
                "url": _text(data, "url"),
                "deeplink": data.get("deeplink"),
                "expires_at": datetime.fromtimestamp(int(expiry), UTC).isoformat() if expiry else None,
            },
        )

    async def get_payment_status(
        self, credentials: ProviderCredentials, reference: PaymentReference
    ) -> ProviderPayment:
        data = await self._call(credentials, "GET", f"/v2/codes/payments/{reference.payment_intent_id}", None)
        status = _text(data, "status")
        amount = _amount(data)
        return ProviderPayment(
            status=wire.payment_status(status),
            provider_transaction_id=data.get("paymentId"),
            amount=amount[0],
            currency=amount[1],
            provider_reference=reference.provider_reference,
            failure_code=wire.failure_code(status),
            failure_message=f"PayPay reports the payment as {status}" if wire.failure_code(status) else None,
        )

    async def cancel_payment(self, credentials: ProviderCredentials, reference: PaymentReference) -> None:
        if reference.provider_reference:
            try:
                await self._call(credentials, "DELETE", f"/v2/codes/{reference.provider_reference}", None)
            except ProviderRejected as exc:
                if exc.provider_code not in {"CODE_NOT_FOUND", "DYNAMIC_QR_NOT_FOUND"}:
                    raise
        # Deleting the code stops new payments; this reverses one that completed in the meantime.
        await self._call(credentials, "DELETE", f"/v2/payments/{reference.payment_intent_id}", None)

    async def refund_payment(
        self, credentials: ProviderCredentials, request: RefundRequest
    ) -> ProviderRefund:
        if request.payment.provider_transaction_id is None:
            raise ProviderRejected("paypay: the payment has no paymentId to refund")
        body: dict[str, Any] = {
            "merchantRefundId": request.refund_id,
            "paymentId": request.payment.provider_transaction_id,
            "amount": {"amount": request.amount, "currency": request.payment.currency},
            "requestedAt": self._epoch(),
        }
        if request.reason:
            body["reason"] = request.reason[:150]
        data = await self._call(credentials, "POST", "/v2/refunds", body)
        return ProviderRefund(
            status=wire.refund_status(_text(data, "status")), provider_refund_id=data.get("paymentId")
        )

    async def get_refund_status(
        self, credentials: ProviderCredentials, request: RefundRequest
    ) -> ProviderRefund:
        try:
            data = await self._call(credentials, "GET", f"/v2/refunds/{request.refund_id}", None)
        except ProviderRejected as exc:
            if exc.provider_code != "REFUND_NOT_FOUND":
                raise
            # The refund request never reached PayPay: nothing was refunded, and it may be asked again.
            return ProviderRefund(
                ProviderRefundStatus.FAILED,
                None,
                failure_code="refund_not_received",
                failure_message=str(exc),
            )
        return ProviderRefund(
            status=wire.refund_status(_text(data, "status")), provider_refund_id=data.get("paymentId")
        )

    # ------------------------------------------------------------------ settlement files

    @property
    def settlement_layout(self) -> SettlementLayout:
        return LAYOUTS["paypay"]

    async def fetch_settlement_file(self, credentials: ProviderCredentials, day: date) -> bytes:
        """The CSV of the payments and refunds PayPay settled on `day` (UTC), in `settlement_layout`."""
        response = await self._send(credentials, "GET", f"/v2/settlements/{day.isoformat()}", None)
        media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if response.status_code == 200 and media_type == "text/csv":
            return response.content
        envelope = _envelope(response)
        code = wire.result_code(envelope)
        if code in SUCCESS_CODES and response.status_code < 400:
            raise ProviderProtocolError(f"paypay: a settlement file answered as {media_type or 'nothing'}")
        raise _rejected(envelope, code)

    # ------------------------------------------------------------------ webhooks

    def parse_notification(self, body: bytes) -> ProviderNotification | None:
        try:
            payload = json.loads(body)
        except ValueError:
            raise WebhookNotUnderstood("not JSON") from None
        if not isinstance(payload, dict) or "notification_type" not in payload:
            raise WebhookNotUnderstood("not a PayPay notification")
        if payload["notification_type"] != "Transaction":
            return None  # file.created and friends: nothing to do with one payment
        merchant_order_id = payload.get("merchant_order_id")
        state = payload.get("state")
        if not isinstance(merchant_order_id, str) or not isinstance(state, str):
            raise WebhookNotUnderstood("a Transaction notification without merchant_order_id or state")
        return ProviderNotification(
            payment_intent_id=merchant_order_id,
            dedupe_key=f"{merchant_order_id}:{state}:{payload.get('order_id') or ''}",
            provider_status=state,
        )

    def verify_notification(self, body: bytes, signature: str | None, secret: str) -> bool:
        return verify_body_signature(secret, body, signature)

    # ------------------------------------------------------------------ wire

    def _epoch(self) -> int:
        return int(self._clock.now().timestamp())

    async def _call(
        self, credentials: ProviderCredentials, method: str, path: str, body: dict[str, Any] | None
    ) -> dict[str, Any]:
        response = await self._send(credentials, method, path, body)
        envelope = _envelope(response)
        code = wire.result_code(envelope)
        if code not in SUCCESS_CODES or response.status_code >= 400:
            raise _rejected(envelope, code)
        data = envelope.get("data")
        return data if isinstance(data, dict) else {}

    async def _send(
        self, credentials: ProviderCredentials, method: str, path: str, body: dict[str, Any] | None
    ) -> httpx.Response:
        """One signed request; transport failures and 5xx answers become the protocol's errors."""
        values = credentials.values
        try:
            api_key, api_secret, merchant = values["api_key"], values["api_secret"], values["merchant_id"]
        except KeyError as exc:
            raise ProviderRejected(f"paypay: the store's credentials lack {exc.args[0]}") from None
        raw = json.dumps(body, separators=(",", ":")).encode() if body is not None else b""
        headers = {
            "Authorization": signing.authorization(
                api_key,
                api_secret,
                method=method,
                path=path,
                content_type=CONTENT_TYPE if raw else None,
                body=raw,
                nonce=self._nonce(),
                epoch=self._epoch(),
            ),
            "X-ASSUME-MERCHANT": merchant,
        }
        if raw:
            headers["Content-Type"] = CONTENT_TYPE
        url = (credentials.base_url or PRODUCTION_URL).rstrip("/") + path
        return await send(self._http, self.name, method, url, content=raw or None, headers=headers)

    def __repr__(self) -> str:
        return "PayPayProvider()"


def _envelope(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise ProviderProtocolError(f"paypay: HTTP {response.status_code} without a JSON body") from None


def _rejected(envelope: Any, code: str) -> ProviderRejected:
    """PayPay's refusal (`envelope` has passed `wire.result_code`)."""
    message = envelope["resultInfo"].get("message") or code
    return ProviderRejected(f"paypay: {code}: {message}", provider_code=code)


def _text(data: dict[str, Any], field: str) -> str:
    value = data.get(field)
    if not isinstance(value, str):
        raise ProviderProtocolError(f"paypay: the answer lacks {field}")
    return value


def _amount(data: dict[str, Any]) -> tuple[int, str]:
    amount = data.get("amount")
    if (
        not isinstance(amount, dict)
        or not isinstance(amount.get("amount"), int)
        or not isinstance(amount.get("currency"), str)
    ):
        raise ProviderProtocolError("paypay: the answer lacks amount {amount, currency}")
    return amount["amount"], amount["currency"]
