"""The d払い (d Payment) adapter: dpay v1, a paymux-defined protocol (docomo's own is given to contracted merchants
only; see docs/providers/dpayment.md).

| protocol call | dpay v1 |
|---|---|
| create_payment (qr_mpm) | POST /v1/codes (merchantPaymentId = the PaymentIntent id) |
| create_payment (qr_cpm) | POST /v1/payments (userAuthorizationCode = the scanned code); answers COMPLETED or FAILED |
| get_payment_status | GET /v1/payments/{merchantPaymentId} |
| cancel_payment | DELETE /v1/codes/{codeId}, then POST /v1/payments/{merchantPaymentId}/cancel (reverses a payment that slipped through) |
| refund_payment | POST /v1/refunds (merchantRefundId = the refund transaction id) |

Credentials of a store's `dpayment` config: `api_key`, `api_secret`, `merchant_id` (sent as X-DPAY-MERCHANT-ID).
There is no public production address: the store's `base_url` must be set.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
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
from paymux.providers.dpayment import signing, wire
from paymux.providers.http import send

PRODUCTION_URL: str | None = None  # docomo's API address comes with the merchant contract
CONTENT_TYPE = "application/json;charset=UTF-8"
MERCHANT_HEADER = "X-DPAY-MERCHANT-ID"


@dataclass(frozen=True, slots=True)
class Answer:
    http_status: int
    code: str
    message: str
    data: dict[str, Any] | None


class DPaymentProvider:
    name = "dpayment"
    payment_methods = frozenset({PaymentMethodType.QR_MPM, PaymentMethodType.QR_CPM})
    signature_header = "X-DPayment-Signature"

    def __init__(self, http: httpx.AsyncClient, clock: Clock, nonce: Callable[[], str] | None = None) -> None:
        self._http = http
        self._clock = clock
        self._nonce = nonce or (lambda: secrets.token_hex(8))

    # ------------------------------------------------------------------ the protocol

    async def create_payment(
        self, credentials: ProviderCredentials, request: PaymentRequest
    ) -> ProviderPayment:
        if request.currency != "JPY":
            raise UnsupportedFlow("dpayment: d払い takes JPY only")
        match request.payment_method_type:
            case PaymentMethodType.QR_MPM:
                return await self._create_code(credentials, request)
            case PaymentMethodType.QR_CPM:
                return await self._charge_code(credentials, request)
            case other:
                raise UnsupportedFlow(f"dpayment: {other.value} is not supported")

    async def _create_code(
        self, credentials: ProviderCredentials, request: PaymentRequest
    ) -> ProviderPayment:
        body = {
            "merchantPaymentId": request.payment_intent_id,
            "amount": {"amount": request.amount, "currency": request.currency},
            "orderDescription": (request.description or request.payment_intent_id)[:255],
        }
        data = await self._call(credentials, "POST", "/v1/codes", body)
        if data.get("merchantPaymentId") != request.payment_intent_id:
            raise ProviderProtocolError("dpayment: the code answer names another merchantPaymentId")
        url = _text(data, "url")
        expires_at = data.get("expiresAt")
        return ProviderPayment(
            status=ProviderPaymentStatus.REQUIRES_ACTION,
            provider_transaction_id=None,
            amount=request.amount,
            currency=request.currency,
            provider_reference=_text(data, "codeId"),
            next_action={
                "type": "display_qr_code",
                "provider": self.name,
                "qr_payload": url,
                "url": url,
                "deeplink": data.get("deeplink"),
                "expires_at": (
                    datetime.fromtimestamp(expires_at, UTC).isoformat()
                    if isinstance(expires_at, int)
                    else None
                ),
            },
        )

    async def _charge_code(
        self, credentials: ProviderCredentials, request: PaymentRequest
    ) -> ProviderPayment:
        if not request.customer_code:
            raise ProviderRejected("dpayment: a qr_cpm payment needs the customer's scanned code")
        body = {
            "merchantPaymentId": request.payment_intent_id,
            "userAuthorizationCode": request.customer_code,
            "amount": {"amount": request.amount, "currency": request.currency},
            "requestedAt": self._epoch(),
        }
        answer = await self._exchange(credentials, "POST", "/v1/payments", body)
        if answer.code in wire.DECLINE_CODES and answer.data is not None:
            # Declined: the answer carries the FAILED payment, which a status check will also find.
            payment = self._payment(answer.data, request.payment_intent_id, None)
            if payment.status is not ProviderPaymentStatus.FAILED:
                raise ProviderProtocolError(f"dpayment: {answer.code} with a {payment.status} payment")
            return payment
        return self._payment(self._success(answer), request.payment_intent_id, None)

    async def get_payment_status(
        self, credentials: ProviderCredentials, reference: PaymentReference
    ) -> ProviderPayment:
        data = await self._call(credentials, "GET", f"/v1/payments/{reference.payment_intent_id}", None)
        return self._payment(data, reference.payment_intent_id, reference.provider_reference)

    async def cancel_payment(self, credentials: ProviderCredentials, reference: PaymentReference) -> None:
        if reference.provider_reference:
            try:
                await self._call(credentials, "DELETE", f"/v1/codes/{reference.provider_reference}", None)
            except ProviderRejected as exc:
                if exc.provider_code != "CODE_NOT_FOUND":  # deleted before, or never paid through
                    raise
        # Deleting the code stops new payments; this reverses one that completed in the meantime.
        try:
            await self._call(credentials, "POST", f"/v1/payments/{reference.payment_intent_id}/cancel", None)
        except ProviderRejected as exc:
            if exc.provider_code != "ALREADY_CANCELED":
                raise

    async def refund_payment(
        self, credentials: ProviderCredentials, request: RefundRequest
    ) -> ProviderRefund:
        body: dict[str, Any] = {
            "merchantRefundId": request.refund_id,
            "merchantPaymentId": request.payment.payment_intent_id,
            "amount": {"amount": request.amount, "currency": request.payment.currency},
        }
        if request.reason:
            body["reason"] = request.reason[:255]
        return self._refund(await self._call(credentials, "POST", "/v1/refunds", body))

    async def get_refund_status(
        self, credentials: ProviderCredentials, request: RefundRequest
    ) -> ProviderRefund:
        try:
            data = await self._call(credentials, "GET", f"/v1/refunds/{request.refund_id}", None)
        except ProviderRejected as exc:
            if exc.provider_code != "ORDER_NOT_FOUND":
                raise
            # The refund request never reached d払い: nothing was refunded, and it may be asked again.
            return ProviderRefund(
                ProviderRefundStatus.FAILED,
                None,
                failure_code="refund_not_received",
                failure_message=str(exc),
            )
        return self._refund(data)

    @staticmethod
    def _refund(data: dict[str, Any]) -> ProviderRefund:
        status = wire.refund_status(_text(data, "status"))
        refund_id = data.get("refundId") or data.get("merchantRefundId")
        return ProviderRefund(
            status=status,
            provider_refund_id=refund_id if isinstance(refund_id, str) else None,
            failure_code="refund_failed" if status is ProviderRefundStatus.FAILED else None,
            failure_message="d払い refused the refund (REFUND_FAILED)"
            if status is ProviderRefundStatus.FAILED
            else None,
        )

    # ------------------------------------------------------------------ webhooks

    def parse_notification(self, body: bytes) -> ProviderNotification | None:
        try:
            payload = json.loads(body)
        except ValueError:
            raise WebhookNotUnderstood("not JSON") from None
        if not isinstance(payload, dict) or not isinstance(payload.get("notificationType"), str):
            raise WebhookNotUnderstood("not a d払い notification")
        notification_id = payload.get("notificationId")
        merchant_payment_id = payload.get("merchantPaymentId")
        if not isinstance(notification_id, str) or not notification_id:
            raise WebhookNotUnderstood("a d払い notification without notificationId")
        if not isinstance(merchant_payment_id, str) or not merchant_payment_id:
            raise WebhookNotUnderstood("a d払い notification without merchantPaymentId")
        # Every notification type is about one payment; whatever it claims, the status call decides.
        status = payload.get("status")
        return ProviderNotification(
            payment_intent_id=merchant_payment_id,
            dedupe_key=notification_id,
            provider_status=status if isinstance(status, str) else payload["notificationType"],
        )

    def verify_notification(self, body: bytes, signature: str | None, secret: str) -> bool:
        return signing.verify_notification(secret, body, signature)

    # ------------------------------------------------------------------ wire

    def _payment(
        self, data: dict[str, Any], merchant_payment_id: str, provider_reference: str | None
    ) -> ProviderPayment:
        if data.get("merchantPaymentId") != merchant_payment_id:
            raise ProviderProtocolError("dpayment: the answer is about another merchantPaymentId")
        status = _text(data, "status")
        mapped = wire.payment_status(status)
        amount, currency = _amount(data)
        payment_id = data.get("paymentId")
        failure = wire.failure_code(status)
        reason = data.get("failureCode")
        return ProviderPayment(
            status=mapped,
            provider_transaction_id=payment_id if isinstance(payment_id, str) else None,
            amount=amount,
            currency=currency,
            provider_reference=provider_reference,
            failure_code=failure,
            failure_message=(
                f"d払い reports the payment as {status}" + (f" ({reason})" if isinstance(reason, str) else "")
                if failure
                else None
            ),
        )

    def _epoch(self) -> int:
        return int(self._clock.now().timestamp())

    async def _call(
        self, credentials: ProviderCredentials, method: str, path: str, body: dict[str, Any] | None
    ) -> dict[str, Any]:
        return self._success(await self._exchange(credentials, method, path, body))

    @staticmethod
    def _success(answer: Answer) -> dict[str, Any]:
        if answer.code != wire.SUCCESS or answer.http_status >= 400:
            raise ProviderRejected(f"dpayment: {answer.code}: {answer.message}", provider_code=answer.code)
        return answer.data or {}

    async def _exchange(
        self, credentials: ProviderCredentials, method: str, path: str, body: dict[str, Any] | None
    ) -> Answer:
        values = credentials.values
        try:
            api_key, api_secret, merchant = values["api_key"], values["api_secret"], values["merchant_id"]
        except KeyError as exc:
            raise ProviderRejected(f"dpayment: the store's credentials lack {exc.args[0]}") from None
        base_url = credentials.base_url or PRODUCTION_URL
        if not base_url:
            raise ProviderRejected(
                "dpayment: set base_url: docomo's API address comes with the merchant contract"
            )
        raw = (
            json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode() if body is not None else b""
        )
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
            MERCHANT_HEADER: merchant,
        }
        if raw:
            headers["Content-Type"] = CONTENT_TYPE
        response = await send(
            self._http, self.name, method, base_url.rstrip("/") + path, content=raw or None, headers=headers
        )
        try:
            envelope = response.json()
        except ValueError:
            raise ProviderProtocolError(
                f"dpayment: HTTP {response.status_code} without a JSON body"
            ) from None
        code, message = wire.result_info(envelope)
        data = envelope.get("data")
        return Answer(response.status_code, code, message, data if isinstance(data, dict) else None)

    def __repr__(self) -> str:
        return "DPaymentProvider()"


def _text(data: dict[str, Any], field: str) -> str:
    value = data.get(field)
    if not isinstance(value, str):
        raise ProviderProtocolError(f"dpayment: the answer lacks {field}")
    return value


def _amount(data: dict[str, Any]) -> tuple[int, str]:
    amount = data.get("amount")
    if (
        not isinstance(amount, dict)
        or type(amount.get("amount")) is not int
        or not isinstance(amount.get("currency"), str)
    ):
        raise ProviderProtocolError("dpayment: the answer lacks amount {amount, currency}")
    return amount["amount"], amount["currency"]
