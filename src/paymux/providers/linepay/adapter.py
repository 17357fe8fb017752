"""The LINE Pay adapter: Online API v3.

| protocol call | LINE Pay |
|---|---|
| create_payment (qr_mpm) | POST /v3/payments/request (orderId = the PaymentIntent id); the payment URL is shown as a QR code |
| get_payment_status | GET /v3/payments/requests/{transactionId}/check; an approved payment (0110) is confirmed with POST /v3/payments/{transactionId}/confirm, as LINE Pay requires of the merchant |
| cancel_payment | nothing to stop before approval (an unconfirmed payment is never charged); a confirmed one is refunded |
| refund_payment | POST /v3/payments/{transactionId}/refund |

Credentials of a store's `linepay` config: `channel_id`, `channel_secret`. LINE Pay amounts are whole units of the
currency; paymux sends JPY only.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx

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
from paymux.providers.linepay import signing
from paymux.providers.notifications import verify_body_signature

PRODUCTION_URL = "https://api-pay.line.me"
DECLINE_CODES = frozenset({"1142", "1110", "1141", "1169", "1153"})


class LinePayProvider:
    name = "linepay"
    payment_methods = frozenset({PaymentMethodType.QR_MPM})
    signature_header = "X-LINE-Signature"

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        return_url: Callable[[str], str],
        nonce: Callable[[], str] | None = None,
    ) -> None:
        self._http = http
        self._return_url = return_url
        self._nonce = nonce or (lambda: str(uuid.uuid4()))

    async def create_payment(
        self, credentials: ProviderCredentials, request: PaymentRequest
    ) -> ProviderPayment:
        if request.payment_method_type is not PaymentMethodType.QR_MPM:
            raise UnsupportedFlow(f"linepay: {request.payment_method_type.value} is not supported")
        if request.currency != "JPY":
            raise UnsupportedFlow("linepay: paymux sends LINE Pay payments in JPY")
        name = (request.description or request.payment_intent_id)[:100]
        body = {
            "amount": request.amount,
            "currency": request.currency,
            "orderId": request.payment_intent_id,
            "packages": [
                {
                    "id": "1",
                    "amount": request.amount,
                    "name": name,
                    "products": [{"name": name, "quantity": 1, "price": request.amount}],
                }
            ],
            "redirectUrls": {
                "confirmUrl": self._return_url(self.name),
                "cancelUrl": self._return_url(self.name),
            },
        }
        info = await self._call(credentials, "POST", "/v3/payments/request", body=body)
        transaction_id = _transaction_id(info)
        urls = info.get("paymentUrl")
        if not isinstance(urls, dict) or not isinstance(urls.get("web"), str):
            raise ProviderProtocolError("linepay: the answer lacks paymentUrl.web")
        return ProviderPayment(
            status=ProviderPaymentStatus.REQUIRES_ACTION,
            provider_transaction_id=transaction_id,
            amount=request.amount,
            currency=request.currency,
            provider_reference=transaction_id,
            next_action={
                "type": "display_qr_code",
                "provider": self.name,
                "qr_payload": urls["web"],
                "url": urls["web"],
                "deeplink": urls.get("app"),
                "expires_at": None,
            },
        )

    async def get_payment_status(
        self, credentials: ProviderCredentials, reference: PaymentReference
    ) -> ProviderPayment:
        transaction_id = reference.provider_reference or reference.provider_transaction_id
        if transaction_id is None:
            return await self._find_by_order(credentials, reference)
        code, message, _ = await self._call_raw(
            credentials, "GET", f"/v3/payments/requests/{transaction_id}/check"
        )

        def outcome(status: ProviderPaymentStatus, failure: str | None = None) -> ProviderPayment:
            return ProviderPayment(
                status=status,
                provider_transaction_id=transaction_id,
                amount=reference.amount,
                currency=reference.currency,
                provider_reference=transaction_id,
                failure_code=failure,
                failure_message=f"LINE Pay {code}: {message}" if failure else None,
            )

        match code:
            case "0000":  # the customer has not approved yet
                return outcome(ProviderPaymentStatus.REQUIRES_ACTION)
            case "0110":  # approved: LINE Pay charges only once the merchant confirms
                return await self._confirm(credentials, transaction_id, reference)
            case "0121":  # cancelled by the customer, or the 20-minute window passed
                return outcome(ProviderPaymentStatus.CANCELLED, "cancelled_or_expired")
            case "0122":
                return outcome(ProviderPaymentStatus.FAILED, "payment_failed")
            case "0123":
                return outcome(ProviderPaymentStatus.SUCCEEDED)
            case _:
                raise ProviderRejected(f"linepay: {code}: {message}", provider_code=code)

    async def _find_by_order(
        self, credentials: ProviderCredentials, reference: PaymentReference
    ) -> ProviderPayment:
        """The request timed out, so paymux never learnt the transactionId: look the order up instead.

        GET /v3/payments lists confirmed payments. If the order is not there, its payment URL never reached the
        customer, nobody can approve it, and LINE Pay lets the reservation lapse: nothing was or can be charged.
        """
        query = f"orderId={reference.payment_intent_id}"
        code, message, info = await self._call_raw(credentials, "GET", "/v3/payments", query=query)
        if code != "0000":
            raise ProviderRejected(f"linepay: {code}: {message}", provider_code=code)
        listed = info if isinstance(info, list) else []
        found = [
            item
            for item in listed
            if isinstance(item, dict) and item.get("orderId") == reference.payment_intent_id
        ]
        if found:
            transaction_id = str(found[0].get("transactionId"))
            return ProviderPayment(
                status=ProviderPaymentStatus.SUCCEEDED,
                provider_transaction_id=transaction_id,
                amount=reference.amount,
                currency=reference.currency,
                provider_reference=transaction_id,
            )
        return ProviderPayment(
            status=ProviderPaymentStatus.FAILED,
            provider_transaction_id=None,
            amount=reference.amount,
            currency=reference.currency,
            failure_code="provider_timeout",
            failure_message="LINE Pay did not answer the payment request in time; the customer never got its URL.",
        )

    async def _confirm(
        self, credentials: ProviderCredentials, transaction_id: str, reference: PaymentReference
    ) -> ProviderPayment:
        code, message, info = await self._call_raw(
            credentials,
            "POST",
            f"/v3/payments/{transaction_id}/confirm",
            body={"amount": reference.amount, "currency": reference.currency},
        )
        if code == "0000":
            pay_info = info.get("payInfo", []) if isinstance(info, dict) else []
            paid = sum(int(item.get("amount", 0)) for item in pay_info if isinstance(item, dict))
            return ProviderPayment(
                status=ProviderPaymentStatus.SUCCEEDED,
                provider_transaction_id=transaction_id,
                amount=paid or reference.amount,
                currency=reference.currency,
                provider_reference=transaction_id,
            )
        if code in DECLINE_CODES:
            return ProviderPayment(
                status=ProviderPaymentStatus.FAILED,
                provider_transaction_id=transaction_id,
                amount=reference.amount,
                currency=reference.currency,
                failure_code="payment_failed",
                failure_message=f"LINE Pay {code}: {message}",
            )
        raise ProviderRejected(f"linepay: confirm answered {code}: {message}", provider_code=code)

    async def cancel_payment(self, credentials: ProviderCredentials, reference: PaymentReference) -> None:
        status = (
            await self.get_payment_status(credentials, reference) if reference.provider_reference else None
        )
        if status is not None and status.status is ProviderPaymentStatus.SUCCEEDED:
            # Charged between the customer's approval and this cancel: give the money back.
            await self._call(
                credentials, "POST", f"/v3/payments/{reference.provider_reference}/refund", body={}
            )

    async def refund_payment(
        self, credentials: ProviderCredentials, request: RefundRequest
    ) -> ProviderRefund:
        transaction_id = request.payment.provider_reference or request.payment.provider_transaction_id
        if transaction_id is None:
            raise ProviderRejected("linepay: the payment has no transactionId to refund")
        info = await self._call(
            credentials,
            "POST",
            f"/v3/payments/{transaction_id}/refund",
            body={"refundAmount": request.amount},
        )
        refund_id = info.get("refundTransactionId")
        return ProviderRefund(
            status=ProviderRefundStatus.SUCCEEDED, provider_refund_id=str(refund_id) if refund_id else None
        )

    async def get_refund_status(
        self, credentials: ProviderCredentials, request: RefundRequest
    ) -> ProviderRefund:
        """LINE Pay refunds carry no merchant refund id: compare LINE Pay's refunded total for the payment with
        what paymux had refunded before this one."""
        transaction_id = request.payment.provider_reference or request.payment.provider_transaction_id
        code, message, info = await self._call_raw(
            credentials, "GET", "/v3/payments", query=f"transactionId={transaction_id}"
        )
        if code != "0000":
            raise ProviderRejected(f"linepay: {code}: {message}", provider_code=code)
        payments = info if isinstance(info, list) else []
        refunded = sum(
            int(entry.get("refundAmount", 0))
            for payment in payments
            if isinstance(payment, dict)
            for entry in payment.get("refundList", []) or []
            if isinstance(entry, dict)
        )
        if refunded >= request.previously_refunded + request.amount:
            return ProviderRefund(ProviderRefundStatus.SUCCEEDED, None)
        return ProviderRefund(
            ProviderRefundStatus.FAILED,
            None,
            failure_code="refund_not_received",
            failure_message="LINE Pay has no record of this refund; nothing was refunded.",
        )

    # ------------------------------------------------------------------ webhooks (paymux-defined, see the docs)

    def parse_notification(self, body: bytes) -> ProviderNotification | None:
        try:
            payload = json.loads(body, parse_int=str)
        except ValueError:
            raise WebhookNotUnderstood("not JSON") from None
        if not isinstance(payload, dict) or not isinstance(payload.get("orderId"), str):
            raise WebhookNotUnderstood("not a LINE Pay notification")
        return ProviderNotification(
            payment_intent_id=payload["orderId"],
            dedupe_key=f"{payload['orderId']}:{payload.get('transactionId')}:{payload.get('event')}",
            provider_status=str(payload.get("event")),
        )

    def verify_notification(self, body: bytes, signature: str | None, secret: str) -> bool:
        return verify_body_signature(secret, body, signature)

    # ------------------------------------------------------------------ wire

    async def _call(
        self, credentials: ProviderCredentials, method: str, path: str, *, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        code, message, info = await self._call_raw(credentials, method, path, body=body)
        if code != "0000":
            raise ProviderRejected(f"linepay: {code}: {message}", provider_code=code)
        return info if isinstance(info, dict) else {}

    async def _call_raw(
        self,
        credentials: ProviderCredentials,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        query: str = "",
    ) -> tuple[str, str, Any]:
        """(returnCode, returnMessage, info as LINE Pay sent it: an object, a list, or None)."""
        try:
            channel_id, secret = credentials.values["channel_id"], credentials.values["channel_secret"]
        except KeyError as exc:
            raise ProviderRejected(f"linepay: the store's credentials lack {exc.args[0]}") from None
        raw = json.dumps(body, separators=(",", ":")) if body is not None else ""
        nonce = self._nonce()
        signed = raw if method == "POST" else query
        headers = {
            "Content-Type": "application/json",
            "X-LINE-ChannelId": channel_id,
            "X-LINE-Authorization-Nonce": nonce,
            "X-LINE-Authorization": signing.signature(secret, path=path, payload=signed, nonce=nonce),
        }
        url = (credentials.base_url or PRODUCTION_URL).rstrip("/") + path + (f"?{query}" if query else "")
        response = await send(
            self._http,
            self.name,
            method,
            url,
            content=raw.encode() if body is not None else None,
            headers=headers,
        )
        try:
            # transactionId is a 19-digit number: read integers as text so none is rounded anywhere.
            envelope = json.loads(response.content, parse_int=str)
        except ValueError:
            raise ProviderProtocolError(f"linepay: HTTP {response.status_code} without a JSON body") from None
        code = envelope.get("returnCode") if isinstance(envelope, dict) else None
        if not isinstance(code, str):
            raise ProviderProtocolError("linepay: an answer without returnCode")
        return code, str(envelope.get("returnMessage") or ""), envelope.get("info")

    def __repr__(self) -> str:
        return "LinePayProvider()"


def _transaction_id(info: dict[str, Any]) -> str:
    value = info.get("transactionId")
    if not isinstance(value, str) or not value.isdigit():
        raise ProviderProtocolError("linepay: the answer lacks transactionId")
    return value
