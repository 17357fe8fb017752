"""A d払い sandbox: dpay v1 (the paymux-defined protocol of docs/providers/dpayment.md), with state in memory.

It checks `hmac DPAY-Auth` as the protocol defines it (over the provider's own path and query, the raw body and the
raw Content-Type; the epoch within 120 s; a nonce never seen in the last ten minutes) and X-DPAY-MERCHANT-ID, and
answers with the `{resultInfo, data}` envelope. The customer is played by
`POST /_sandbox/payments/{merchantPaymentId}` with `{"outcome": "COMPLETED" | "FAILED" | "EXPIRED" | "CANCELED"}`;
each change of a payment or refund sends a notification, signed with X-DPayment-Signature, to the webhook URL.

Rules from d払い's public terms as aggregators publish them: amounts from 1 JPY, partial refunds, refunds within 179
days. A completed payment can be cancelled (reversed) until 23:59 JST of the next day.

Magic amounts: 40002 is declined (qr_mpm: FAILED as soon as the code is created, notified at once; qr_cpm: the
charge answers 422 INSUFFICIENT_BALANCE with the FAILED payment); 40091 records the payment but answers only after
the timeout delay; 40092 answers after the slow delay.

Every completed payment, refund and reversal is written to the day's settlement file (a layout paymux defines in
dpay v1's style), served at `GET /_sandbox/settlements/{YYYY-MM-DD}.csv`.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from paymux.providers.dpayment import signing, wire
from paymux.providers.sandbox_kit import (
    OutcomeRequest,
    SandboxCredentials,
    SandboxTiming,
    WebhookSender,
    serve_settlements,
    settled,
)
from paymux.providers.settlement import LAYOUTS, LineKind, SettlementBook

# The demo's credentials: public on purpose, accepted only by this sandbox.
DEFAULTS = SandboxCredentials(
    api_key="sandbox-dpayment-api-key",
    api_secret="sandbox-dpayment-api-secret",  # noqa: S106
    merchant_id="sandbox-dpayment-merchant",
    webhook_secret="sandbox-dpayment-webhook-secret",  # noqa: S106
)
MERCHANT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
CUSTOMER_CODE = re.compile(r"^[A-Za-z0-9]{1,64}$")
MIN_AMOUNT, MAX_AMOUNT = 1, 9_999_999
CODE_LIFETIME_SECONDS = 300
MAX_CODE_LIFETIME_SECONDS = 86_400
EPOCH_WINDOW_SECONDS = 120
NONCE_MEMORY_SECONDS = 600
REFUND_WINDOW = timedelta(days=179)
JST = timezone(timedelta(hours=9), "JST")
DECLINE_AMOUNT, TIMEOUT_AMOUNT, SLOW_AMOUNT = 40002, 40091, 40092
CODE_IDS = {
    "SUCCESS": "DP0000",
    "INVALID_PARAMS": "DP4001",
    "UNAUTHORIZED": "DP4011",
    "ORDER_NOT_FOUND": "DP4041",
    "CODE_NOT_FOUND": "DP4042",
    "DUPLICATE_MERCHANT_PAYMENT_ID": "DP4091",
    "ALREADY_CANCELED": "DP4092",
    "CODE_EXPIRED": "DP4221",
    "INSUFFICIENT_BALANCE": "DP4222",
    "CANCEL_PERIOD_EXPIRED": "DP4223",
    "REFUND_AMOUNT_EXCEEDED": "DP4224",
    "REFUND_PERIOD_EXPIRED": "DP4225",
    "RATE_LIMIT": "DP4291",
    "INTERNAL_ERROR": "DP5001",
    "MAINTENANCE": "DP5031",
}


def envelope(code: str, message: str, data: Any = None, *, status: int | None = None) -> JSONResponse:
    return JSONResponse(
        {"resultInfo": {"code": code, "message": message, "codeId": CODE_IDS[code]}, "data": data},
        status_code=status if status is not None else wire.HTTP_STATUS[code],
    )


def cancel_deadline(accepted_at: int) -> int:
    """A completed payment can be reversed until 23:59:59 JST of the day after it was accepted."""
    day = datetime.fromtimestamp(accepted_at, JST).date() + timedelta(days=1)
    return int(datetime(day.year, day.month, day.day, 23, 59, 59, tzinfo=JST).timestamp())


@dataclass
class SandboxRefund:
    merchant_refund_id: str
    refund_id: str
    merchant_payment_id: str
    amount: int
    currency: str
    requested_at: int
    reason: str | None
    status: str = "REFUNDED"

    def view(self) -> dict[str, Any]:
        return {
            "merchantRefundId": self.merchant_refund_id,
            "refundId": self.refund_id,
            "merchantPaymentId": self.merchant_payment_id,
            "status": self.status,
            "amount": {"amount": self.amount, "currency": self.currency},
            "requestedAt": self.requested_at,
            "reason": self.reason,
        }


@dataclass
class SandboxPayment:
    merchant_payment_id: str
    method: str  # "qr_mpm" (a code the customer scans) or "qr_cpm" (the customer's code, charged at once)
    amount: int
    currency: str
    requested_at: int
    code_id: str | None = None
    expires_at: int | None = None
    user_authorization_code: str | None = None
    order_description: str | None = None
    status: str = "CREATED"
    payment_id: str | None = None
    accepted_at: int | None = None
    failure_code: str | None = None
    refunds: list[SandboxRefund] = field(default_factory=list)

    @property
    def refunded(self) -> int:
        return sum(refund.amount for refund in self.refunds if refund.status != "REFUND_FAILED")

    def view(self) -> dict[str, Any]:
        return {
            "paymentId": self.payment_id,
            "merchantPaymentId": self.merchant_payment_id,
            "status": self.status,
            "amount": {"amount": self.amount, "currency": self.currency},
            "requestedAt": self.requested_at,
            "acceptedAt": self.accepted_at,
            "failureCode": self.failure_code,
            "orderDescription": self.order_description,
            "refunds": [refund.view() for refund in self.refunds],
        }


@dataclass(frozen=True)
class Recorded:
    """A POST's first answer, replayed for a repeat with the same merchant id and body."""

    route: str
    fingerprint: str
    status: int
    content: dict[str, Any]


def fingerprint(body: dict[str, Any]) -> str:
    """What makes two POSTs "the same": every field except requestedAt, which a retry renews."""
    return json.dumps({key: value for key, value in body.items() if key != "requestedAt"}, sort_keys=True)


def valid_amount(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and type(value.get("amount")) is int
        and MIN_AMOUNT <= value["amount"] <= MAX_AMOUNT
        and value.get("currency") == "JPY"
    )


def valid_id(value: Any) -> bool:
    return isinstance(value, str) and MERCHANT_ID.match(value) is not None


class DPaymentSandbox:
    def __init__(
        self,
        credentials: SandboxCredentials = DEFAULTS,
        *,
        webhook_url: str | None = None,
        timing: SandboxTiming | None = None,
    ) -> None:
        self.credentials = credentials
        self.timing = timing or SandboxTiming()
        self.webhooks = WebhookSender(webhook_url)
        self.payments: dict[str, SandboxPayment] = {}  # by merchantPaymentId
        self.codes: dict[str, str] = {}  # live codeId -> merchantPaymentId
        self.refunds: dict[str, SandboxRefund] = {}  # by merchantRefundId
        self._answers: dict[str, Recorded] = {}  # merchantPaymentId / merchantRefundId -> first answer
        self._nonces: dict[str, float] = {}  # nonce -> when it was used
        self.settlements = SettlementBook(LAYOUTS["dpayment"])

    # ------------------------------------------------------------------ auth

    async def _authenticate(self, request: Request) -> JSONResponse | None:
        unauthorized = envelope("UNAUTHORIZED", "Unauthorized request")
        try:
            auth = signing.parse(request.headers.get("authorization", ""))
        except signing.MalformedDPayAuthorization:
            return unauthorized
        if not signing.same(self.credentials.api_key, auth.api_key):
            return unauthorized
        now = time.time()
        if not auth.epoch.isdigit() or abs(now - int(auth.epoch)) > EPOCH_WINDOW_SECONDS:
            return envelope("UNAUTHORIZED", "The request's epoch is outside the allowed window")
        if not signing.NONCE.match(auth.nonce):
            return unauthorized
        path = request.url.path.removeprefix(request.scope.get("root_path", ""))
        if request.url.query:
            path += "?" + request.url.query
        if not signing.verify(
            self.credentials.api_secret,
            auth,
            method=request.method,
            path=path,
            content_type=request.headers.get("content-type"),
            body=await request.body(),
        ):
            return unauthorized
        # Only a correctly signed request spends its nonce, so nobody can burn another's in advance.
        self._nonces = {
            nonce: seen for nonce, seen in self._nonces.items() if now - seen < NONCE_MEMORY_SECONDS
        }
        if auth.nonce in self._nonces:
            return envelope("UNAUTHORIZED", "The nonce was used before")
        self._nonces[auth.nonce] = now
        if not signing.same(self.credentials.merchant_id, request.headers.get("x-dpay-merchant-id", "")):
            return envelope("UNAUTHORIZED", "Unknown merchant for this API key")
        return None

    # ------------------------------------------------------------------ state changes

    def _settle(self, payment: SandboxPayment, outcome: str, failure_code: str | None = None) -> None:
        now = int(time.time())
        if payment.payment_id is None and outcome in {"COMPLETED", "FAILED"}:  # the customer tried to pay
            payment.payment_id = "DP" + str(secrets.randbelow(10**18)).zfill(18)
        if outcome == "COMPLETED" and payment.payment_id is not None:
            payment.accepted_at = now
            self.settlements.record(
                settled(
                    LineKind.PAYMENT,
                    payment.payment_id,
                    payment.merchant_payment_id,
                    payment.amount,
                    payment.currency,
                    at=now,
                )
            )
        elif outcome == "CANCELED" and payment.status == "COMPLETED" and payment.payment_id is not None:
            # A completed payment reversed: what was not refunded goes back, a refund line under its own ids.
            reversed_amount = payment.amount - payment.refunded
            if reversed_amount > 0:
                self.settlements.record(
                    settled(
                        LineKind.REFUND,
                        payment.payment_id,
                        payment.merchant_payment_id,
                        reversed_amount,
                        payment.currency,
                        at=now,
                    )
                )
        payment.status = outcome
        payment.failure_code = failure_code
        if payment.code_id is not None and outcome != "COMPLETED":
            self.codes.pop(payment.code_id, None)  # a code that can no longer be paid is gone
        self._notify(
            f"PAYMENT_{outcome}",
            payment,
            status=outcome,
            amount=payment.amount,
            occurred_at=now,
        )

    def _notify(
        self,
        notification_type: str,
        payment: SandboxPayment,
        *,
        status: str,
        amount: int,
        occurred_at: int,
        merchant_refund_id: str | None = None,
    ) -> None:
        payload: dict[str, Any] = {
            "notificationId": f"ntf-{secrets.token_hex(12)}",
            "notificationType": notification_type,
            "merchantId": self.credentials.merchant_id,
            "merchantPaymentId": payment.merchant_payment_id,
            "paymentId": payment.payment_id,
            "status": status,
            "amount": {"amount": amount, "currency": payment.currency},
            "occurredAt": occurred_at,
        }
        if merchant_refund_id is not None:
            payload["merchantRefundId"] = merchant_refund_id
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = {"content-type": "application/json"}
        if self.credentials.webhook_secret:
            headers["X-DPayment-Signature"] = signing.notification_signature(
                self.credentials.webhook_secret, body
            )
        self.webhooks.send(body, headers)

    def _expire_if_due(self, payment: SandboxPayment) -> None:
        if (
            payment.status == "CREATED"
            and payment.expires_at is not None
            and time.time() > payment.expires_at
        ):
            self._settle(payment, "EXPIRED")

    def _replay(self, key: str, route: str, body: dict[str, Any]) -> JSONResponse | None:
        """The first answer again for a repeat of the same POST; 409 for the same id with another body."""
        recorded = self._answers.get(key)
        if recorded is None:
            return None
        if recorded.route != route or recorded.fingerprint != fingerprint(body):
            return envelope("DUPLICATE_MERCHANT_PAYMENT_ID", f"{key} was used with another request")
        return JSONResponse(recorded.content, status_code=200 if recorded.status < 300 else recorded.status)

    def _record(self, key: str, route: str, body: dict[str, Any], response: JSONResponse) -> JSONResponse:
        self._answers[key] = Recorded(
            route, fingerprint(body), response.status_code, json.loads(bytes(response.body))
        )
        return response

    async def _delay(self, amount: int) -> None:
        if amount == TIMEOUT_AMOUNT:
            await asyncio.sleep(self.timing.timeout_seconds)
        elif amount == SLOW_AMOUNT:
            await asyncio.sleep(self.timing.slow_seconds)

    # ------------------------------------------------------------------ the app

    def app(self) -> FastAPI:
        app = FastAPI(title="d払い sandbox (dpay v1)", openapi_url=None, docs_url=None, redoc_url=None)

        @app.middleware("http")
        async def authenticate(request: Request, call_next: Any) -> Response:
            path = request.url.path.removeprefix(request.scope.get("root_path", ""))
            if not path.startswith("/_sandbox/"):
                refused = await self._authenticate(request)
                if refused is not None:
                    return refused
            response: Response = await call_next(request)
            return response

        async def json_body(request: Request) -> dict[str, Any] | None:
            try:
                body = json.loads(await request.body())
            except ValueError:
                return None
            return body if isinstance(body, dict) else None

        def invalid() -> JSONResponse:
            return envelope("INVALID_PARAMS", "Invalid request params")

        @app.post("/v1/codes")
        async def create_code(request: Request) -> Response:
            body = await json_body(request)
            now = int(time.time())
            if (
                body is None
                or not valid_id(body.get("merchantPaymentId"))
                or not valid_amount(body.get("amount"))
                or not isinstance(body.get("orderDescription", ""), str | None)
                or len(body.get("orderDescription") or "") > 255
            ):
                return invalid()
            expires_at = body.get("expiresAt", now + CODE_LIFETIME_SECONDS)
            if type(expires_at) is not int or not now < expires_at <= now + MAX_CODE_LIFETIME_SECONDS:
                return invalid()
            merchant_payment_id: str = body["merchantPaymentId"]
            if (replayed := self._replay(merchant_payment_id, "codes", body)) is not None:
                return replayed
            code_id = f"DC{secrets.token_hex(10)}"
            amount: int = body["amount"]["amount"]
            payment = SandboxPayment(
                merchant_payment_id=merchant_payment_id,
                method="qr_mpm",
                amount=amount,
                currency="JPY",
                requested_at=now,
                code_id=code_id,
                expires_at=expires_at,
                order_description=body.get("orderDescription"),
            )
            self.payments[merchant_payment_id] = payment
            self.codes[code_id] = merchant_payment_id
            response = self._record(
                merchant_payment_id,
                "codes",
                body,
                envelope(
                    "SUCCESS",
                    "Success",
                    {
                        "codeId": code_id,
                        "url": f"https://qr.sandbox.dpayment.paymux.invalid/c/{code_id}",
                        "deeplink": f"dpayment-sandbox://pay?codeId={code_id}",
                        "merchantPaymentId": merchant_payment_id,
                        "expiresAt": expires_at,
                    },
                    status=201,
                ),
            )
            if amount == DECLINE_AMOUNT:
                self._settle(payment, "FAILED", "INSUFFICIENT_BALANCE")
            await self._delay(amount)
            return response

        @app.post("/v1/payments")
        async def charge(request: Request) -> Response:
            body = await json_body(request)
            if (
                body is None
                or not valid_id(body.get("merchantPaymentId"))
                or not valid_amount(body.get("amount"))
                or not isinstance(body.get("userAuthorizationCode"), str)
                or not CUSTOMER_CODE.match(body["userAuthorizationCode"])
                or type(body.get("requestedAt")) is not int
            ):
                return invalid()
            merchant_payment_id: str = body["merchantPaymentId"]
            if (replayed := self._replay(merchant_payment_id, "payments", body)) is not None:
                return replayed
            amount: int = body["amount"]["amount"]
            payment = SandboxPayment(
                merchant_payment_id=merchant_payment_id,
                method="qr_cpm",
                amount=amount,
                currency="JPY",
                requested_at=body["requestedAt"],
                user_authorization_code=body["userAuthorizationCode"],
            )
            self.payments[merchant_payment_id] = payment
            if amount == DECLINE_AMOUNT:
                self._settle(payment, "FAILED", "INSUFFICIENT_BALANCE")
                answer = envelope("INSUFFICIENT_BALANCE", "The customer's balance is too low", payment.view())
            else:
                self._settle(payment, "COMPLETED")
                answer = envelope("SUCCESS", "Success", payment.view())
            response = self._record(merchant_payment_id, "payments", body, answer)
            await self._delay(amount)
            return response

        @app.get("/v1/payments/{merchant_payment_id}")
        async def payment_details(merchant_payment_id: str) -> Response:
            payment = self.payments.get(merchant_payment_id)
            if payment is None:
                return envelope("ORDER_NOT_FOUND", "Payment not found")
            self._expire_if_due(payment)
            return envelope("SUCCESS", "Success", payment.view())

        @app.delete("/v1/codes/{code_id}")
        async def delete_code(code_id: str) -> Response:
            merchant_payment_id = self.codes.pop(code_id, None)
            if merchant_payment_id is None:
                return envelope("CODE_NOT_FOUND", "Code not found")
            payment = self.payments[merchant_payment_id]
            self._expire_if_due(payment)
            if payment.status == "CREATED":
                self._settle(payment, "CANCELED")
            return envelope("SUCCESS", "Success")

        @app.post("/v1/payments/{merchant_payment_id}/cancel")
        async def cancel_payment(merchant_payment_id: str) -> Response:
            payment = self.payments.get(merchant_payment_id)
            if payment is None:
                return envelope("ORDER_NOT_FOUND", "Payment not found")
            self._expire_if_due(payment)
            if payment.status == "COMPLETED" and payment.accepted_at is not None:
                if time.time() > cancel_deadline(payment.accepted_at):
                    return envelope(
                        "CANCEL_PERIOD_EXPIRED",
                        "Completed payments can be cancelled until 23:59 JST next day",
                    )
                self._settle(payment, "CANCELED")  # reverses what has not been refunded yet
            elif payment.status == "CREATED":
                self._settle(payment, "CANCELED")
            # CANCELED again, FAILED, EXPIRED: nothing to stop; the answer says where the payment is.
            return envelope("SUCCESS", "Success", payment.view())

        @app.post("/v1/refunds")
        async def refund(request: Request) -> Response:
            body = await json_body(request)
            if (
                body is None
                or not valid_id(body.get("merchantRefundId"))
                or not valid_id(body.get("merchantPaymentId"))
                or not valid_amount(body.get("amount"))
                or not isinstance(body.get("reason", ""), str | None)
                or len(body.get("reason") or "") > 255
            ):
                return invalid()
            refund_id: str = body["merchantRefundId"]
            if (replayed := self._replay(refund_id, "refunds", body)) is not None:
                return replayed
            payment = self.payments.get(body["merchantPaymentId"])
            if payment is None:
                return envelope("ORDER_NOT_FOUND", "Payment not found")
            if payment.status == "CANCELED":
                return envelope("ALREADY_CANCELED", "The payment was cancelled")
            if payment.status != "COMPLETED" or payment.accepted_at is None:
                return envelope("INVALID_PARAMS", "Only completed payments can be refunded")
            if time.time() > payment.accepted_at + REFUND_WINDOW.total_seconds():
                return envelope("REFUND_PERIOD_EXPIRED", "Payments can be refunded for 179 days")
            amount: int = body["amount"]["amount"]
            if payment.refunded + amount > payment.amount:
                return envelope("REFUND_AMOUNT_EXCEEDED", "Refund amount exceeds the refundable amount")
            now = int(time.time())
            record = SandboxRefund(
                merchant_refund_id=refund_id,
                refund_id="DR" + str(secrets.randbelow(10**18)).zfill(18),
                merchant_payment_id=payment.merchant_payment_id,
                amount=amount,
                currency=payment.currency,
                requested_at=now,
                reason=body.get("reason"),
            )
            self.refunds[refund_id] = record
            payment.refunds.append(record)
            self.settlements.record(
                settled(LineKind.REFUND, record.refund_id, refund_id, amount, record.currency, at=now)
            )
            self._notify(
                "REFUND_COMPLETED",
                payment,
                status=record.status,
                amount=amount,
                occurred_at=now,
                merchant_refund_id=refund_id,
            )
            return self._record(refund_id, "refunds", body, envelope("SUCCESS", "Success", record.view()))

        @app.get("/v1/refunds/{merchant_refund_id}")
        async def refund_details(merchant_refund_id: str) -> Response:
            record = self.refunds.get(merchant_refund_id)
            if record is None:
                return envelope("ORDER_NOT_FOUND", "Refund not found")
            return envelope("SUCCESS", "Success", record.view())

        serve_settlements(app, self.settlements)

        @app.post("/_sandbox/payments/{merchant_payment_id}")
        async def play_customer(merchant_payment_id: str, outcome: OutcomeRequest) -> Response:
            payment = self.payments.get(merchant_payment_id)
            if payment is None:
                return JSONResponse({"error": "no such payment"}, status_code=404)
            self._expire_if_due(payment)
            if payment.status != "CREATED" or payment.code_id not in self.codes:
                return JSONResponse({"error": f"the payment is already {payment.status}"}, status_code=409)
            self._settle(payment, outcome.outcome)
            return JSONResponse(payment.view())

        return app
