"""An au PAY sandbox: "aupay v1" (the paymux-defined protocol) spoken back, with state in memory.

It checks the X-AuPay-* headers exactly as the protocol says (key id, merchant id, timestamp within 120 s, a nonce
never seen in the last 10 minutes, the signature over the provider's own path without the mount prefix) and answers
`401 {"error": {"code": "authentication_failed", ...}}` otherwise. It enforces au PAY's public limits: 1 to
300,000 JPY per transaction, cancellation until 23:59 JST of the 89th day after the payment, refunds (partial
ones too) within 90 days of it. A repeated merchant_order_id / merchant_refund_id with the same body answers 200
with the original object; with another body, 409.

The customer is played by `POST /_sandbox/payments/{merchant_order_id}` with
`{"outcome": "COMPLETED" | "FAILED" | "EXPIRED" | "CANCELED"}`; each change of a charge or refund sends a
notification to the webhook URL.

Magic amounts: 40002 is declined (a payment code fails at once and is notified; a qr_cpm charge answers failed,
`insufficient_balance`); 40091 is recorded first and answered only after the timeout delay; 40092 after the slow
delay.

Every paid charge, refund and reversal is written to the day's settlement file (a layout paymux defines in aupay
v1's style), served at `GET /_sandbox/settlements/{YYYY-MM-DD}.csv`.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from paymux.providers.aupay import signing, wire
from paymux.providers.sandbox_kit import (
    OutcomeRequest,
    SandboxCredentials,
    SandboxTiming,
    WebhookSender,
    serve_settlements,
    settled,
)
from paymux.providers.settlement import LAYOUTS, LineKind, SettlementBook

# The demo's credentials: public on purpose, accepted only by this sandbox. api_key is the key id.
DEFAULTS = SandboxCredentials(
    api_key="sandbox-aupay-key-id",
    api_secret="sandbox-aupay-api-secret",  # noqa: S106
    merchant_id="sandbox-aupay-merchant",
    webhook_secret="sandbox-aupay-webhook-secret",  # noqa: S106
)
DECLINE_AMOUNT, TIMEOUT_AMOUNT, SLOW_AMOUNT = 40002, 40091, 40092
NONCE_MEMORY_SECONDS = 600
CANCEL_DAYS = 89  # cancel (reverse) until 23:59:59 JST of the 89th day after the payment's day
REFUND_DAYS = 90
JST = timezone(timedelta(hours=9), "JST")
QR_BASE = "https://qr.aupay.sandbox.paymux.invalid/"  # not a KDDI address: the sandbox's codes pay nothing
EVENTS = {
    "paid": "charge.paid",
    "failed": "charge.failed",
    "canceled": "charge.canceled",
    "expired": "charge.expired",
}
PAYMENT_CODE_FIELDS = frozenset({"merchant_order_id", "amount", "currency", "description", "expires_in"})
CHARGE_FIELDS = frozenset({"merchant_order_id", "amount", "currency", "customer_code"})
REFUND_FIELDS = frozenset({"merchant_refund_id", "amount", "reason"})


def rfc3339(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, JST).isoformat(timespec="seconds")


def cancel_deadline(created_at: float) -> float:
    """23:59:59 JST of the 89th day after the day (in JST) the payment was made."""
    day = datetime.fromtimestamp(created_at, JST).date() + timedelta(days=CANCEL_DAYS)
    return datetime(day.year, day.month, day.day, 23, 59, 59, tzinfo=JST).timestamp()


@dataclass
class SandboxRefund:
    id: str
    merchant_refund_id: str
    merchant_order_id: str
    amount: int
    reason: str | None
    fingerprint: str
    created_at: float
    status: str = "succeeded"

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "merchant_refund_id": self.merchant_refund_id,
            "merchant_order_id": self.merchant_order_id,
            "amount": self.amount,
            "reason": self.reason,
            "status": self.status,
            "created_at": rfc3339(self.created_at),
        }


@dataclass
class SandboxCharge:
    id: str
    merchant_order_id: str
    kind: Literal["payment_code", "charge"]
    amount: int
    currency: str
    fingerprint: str
    created_at: float
    status: str = "pending"
    payment_code_id: str | None = None
    expires_at: float | None = None
    paid_at: float | None = None
    failure_code: str | None = None
    amount_refunded: int = 0
    refunds: list[SandboxRefund] = field(default_factory=list)

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "merchant_order_id": self.merchant_order_id,
            "amount": self.amount,
            "amount_refunded": self.amount_refunded,
            "currency": self.currency,
            "status": self.status,
            "failure_code": self.failure_code,
            "created_at": rfc3339(self.created_at),
            "paid_at": rfc3339(self.paid_at),
        }

    def code_view(self) -> dict[str, Any]:
        return {
            "payment_code_id": self.payment_code_id,
            "qr_url": f"{QR_BASE}{self.payment_code_id}",
            "app_url": f"aupay-sandbox://pay?code={self.payment_code_id}",
            "expires_at": rfc3339(self.expires_at),
            "merchant_order_id": self.merchant_order_id,
            "amount": self.amount,
            "currency": self.currency,
        }


def error(code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=wire.ERRORS[code])


def _fingerprint(body: dict[str, Any]) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


def _amount_problem(amount: Any) -> JSONResponse | None:
    if not isinstance(amount, int) or isinstance(amount, bool) or amount < wire.MIN_AMOUNT:
        return error("invalid_parameter", "amount must be a whole number of yen, at least 1")
    if amount > wire.MAX_AMOUNT:
        return error("limit_exceeded", f"au PAY takes at most {wire.MAX_AMOUNT} JPY per transaction")
    return None


def _order_problem(body: dict[str, Any], allowed: frozenset[str]) -> JSONResponse | None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        return error("invalid_parameter", f"unknown fields: {', '.join(unknown)}")
    order_id = body.get("merchant_order_id")
    if not isinstance(order_id, str) or not wire.ORDER_ID.fullmatch(order_id):
        return error("invalid_parameter", "merchant_order_id must be 1-40 characters of [A-Za-z0-9_-]")
    if body.get("currency") != wire.CURRENCY:
        return error("invalid_parameter", "currency must be JPY")
    return _amount_problem(body.get("amount"))


class AuPaySandbox:
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
        self.payments: dict[str, SandboxCharge] = {}  # by merchant_order_id
        self.refunds: dict[str, SandboxRefund] = {}  # by merchant_refund_id
        self.nonces: dict[str, float] = {}  # nonce -> when it was used, oldest first
        self.settlements = SettlementBook(LAYOUTS["aupay"])

    # ------------------------------------------------------------------ auth

    async def _authenticate(self, request: Request) -> Response | None:
        headers = request.headers
        key_id = headers.get(signing.KEY_ID_HEADER)
        merchant = headers.get(signing.MERCHANT_HEADER)
        timestamp = headers.get(signing.TIMESTAMP_HEADER)
        nonce = headers.get(signing.NONCE_HEADER)
        presented = headers.get(signing.SIGNATURE_HEADER)
        if not (key_id and merchant and timestamp and nonce and presented):
            return error(
                "authentication_failed",
                "X-AuPay-Key-Id, -Merchant-Id, -Timestamp, -Nonce and -Signature are required",
            )
        if not hmac.compare_digest(key_id.encode(), self.credentials.api_key.encode()):
            return error("authentication_failed", "unknown key id")
        if not hmac.compare_digest(merchant.encode(), self.credentials.merchant_id.encode()):
            return error("authentication_failed", "the key id does not belong to this merchant")
        now = time.time()
        if (
            not re.fullmatch(r"[0-9]{1,12}", timestamp)
            or abs(now - int(timestamp)) > signing.TIMESTAMP_TOLERANCE_SECONDS
        ):
            return error("authentication_failed", "the timestamp is more than 120 s away")
        if not signing.NONCE.fullmatch(nonce):
            return error("authentication_failed", "the nonce must be 16-64 characters of [A-Za-z0-9_-]")
        path = request.url.path.removeprefix(request.scope.get("root_path", ""))
        if request.url.query:
            path = f"{path}?{request.url.query}"
        if not signing.verify(
            self.credentials.api_secret,
            presented,
            method=request.method,
            path=path,
            timestamp=timestamp,
            nonce=nonce,
            body=await request.body(),
        ):
            return error("authentication_failed", "the signature does not match")
        while self.nonces:  # oldest first (insertion order): forget those older than 10 minutes
            oldest = next(iter(self.nonces))
            if now - self.nonces[oldest] <= NONCE_MEMORY_SECONDS:
                break
            del self.nonces[oldest]
        if nonce in self.nonces:
            return error("authentication_failed", "the nonce was already used")
        self.nonces[nonce] = now
        return None

    # ------------------------------------------------------------------ state changes

    def _settle(self, charge: SandboxCharge, status: str, failure_code: str | None = None) -> None:
        now = time.time()
        if status == "paid":
            charge.paid_at = now
            self.settlements.record(
                settled(
                    LineKind.PAYMENT,
                    charge.id,
                    charge.merchant_order_id,
                    charge.amount,
                    charge.currency,
                    at=now,
                )
            )
        elif status == "canceled" and charge.status == "paid" and charge.amount > charge.amount_refunded:
            # A paid charge reversed: what was not refunded goes back, a refund line under the charge's own ids.
            self.settlements.record(
                settled(
                    LineKind.REFUND,
                    charge.id,
                    charge.merchant_order_id,
                    charge.amount - charge.amount_refunded,
                    charge.currency,
                    at=now,
                )
            )
        charge.status = status
        charge.failure_code = failure_code
        self._notify(EVENTS[status], charge.view())

    def _expire_if_due(self, charge: SandboxCharge) -> None:
        if charge.status == "pending" and charge.expires_at is not None and time.time() > charge.expires_at:
            self._settle(charge, "expired", "code_expired")

    def _notify(self, event_type: str, data: dict[str, Any]) -> None:
        body = json.dumps(
            {
                "id": f"evt_{secrets.token_hex(12)}",
                "type": event_type,
                "created_at": rfc3339(time.time()),
                "data": data,
            },
            separators=(",", ":"),
        ).encode()
        headers = {"content-type": "application/json"}
        if self.credentials.webhook_secret:
            headers[signing.SIGNATURE_HEADER] = signing.webhook_signature(
                self.credentials.webhook_secret, body
            )
        self.webhooks.send(body, headers)

    async def _delay(self, amount: int) -> None:
        if amount == TIMEOUT_AMOUNT:
            await asyncio.sleep(self.timing.timeout_seconds)
        elif amount == SLOW_AMOUNT:
            await asyncio.sleep(self.timing.slow_seconds)

    def _repeat(
        self, order_id: str, kind: Literal["payment_code", "charge"], fingerprint: str
    ) -> Response | None:
        """The answer to a repeated merchant_order_id: the original object, or 409 for another request."""
        existing = self.payments.get(order_id)
        if existing is None:
            return None
        if existing.kind != kind or existing.fingerprint != fingerprint:
            return error("duplicate_order_id", f"merchant_order_id {order_id} was used with another request")
        return JSONResponse(existing.code_view() if kind == "payment_code" else existing.view())

    # ------------------------------------------------------------------ the app

    def app(self) -> FastAPI:
        app = FastAPI(title="au PAY sandbox (aupay v1)", openapi_url=None, docs_url=None, redoc_url=None)

        @app.middleware("http")
        async def authenticate(request: Request, call_next: Any) -> Response:
            path = request.url.path.removeprefix(request.scope.get("root_path", ""))
            if not path.startswith("/_sandbox/"):
                refused = await self._authenticate(request)
                if refused is not None:
                    return refused
            response: Response = await call_next(request)
            return response

        @app.post("/v1/payment_codes")
        async def create_payment_code(request: Request) -> Response:
            body = await _json_object(request)
            if body is None:
                return error("invalid_parameter", "the body must be a JSON object")
            problem = _order_problem(body, PAYMENT_CODE_FIELDS)
            description, expires_in = (
                body.get("description"),
                body.get("expires_in", wire.CODE_LIFETIME_SECONDS),
            )
            if problem is None and (
                description is not None
                and (not isinstance(description, str) or len(description) > wire.DESCRIPTION_MAX)
            ):
                problem = error("invalid_parameter", "description must be text of at most 255 characters")
            low, high = wire.CODE_LIFETIME_RANGE
            if problem is None and (
                not isinstance(expires_in, int)
                or isinstance(expires_in, bool)
                or not low <= expires_in <= high
            ):
                problem = error("invalid_parameter", f"expires_in must be {low} to {high} seconds")
            if problem is not None:
                return problem
            order_id, amount = body["merchant_order_id"], body["amount"]
            repeat = self._repeat(order_id, "payment_code", _fingerprint(body))
            if repeat is not None:
                return repeat
            now = time.time()
            charge = SandboxCharge(
                id=f"ch_{secrets.token_hex(12)}",
                merchant_order_id=order_id,
                kind="payment_code",
                amount=amount,
                currency=body["currency"],
                fingerprint=_fingerprint(body),
                created_at=now,
                payment_code_id=f"pc_{secrets.token_hex(12)}",
                expires_at=now + expires_in,
            )
            self.payments[order_id] = charge
            if amount == DECLINE_AMOUNT:
                self._settle(
                    charge, "failed", "insufficient_balance"
                )  # the customer's wallet declines at once
            await self._delay(amount)
            return JSONResponse(charge.code_view(), status_code=201)

        @app.post("/v1/charges")
        async def create_charge(request: Request) -> Response:
            body = await _json_object(request)
            if body is None:
                return error("invalid_parameter", "the body must be a JSON object")
            problem = _order_problem(body, CHARGE_FIELDS)
            customer_code = body.get("customer_code")
            if problem is None and (
                not isinstance(customer_code, str) or not wire.CUSTOMER_CODE.fullmatch(customer_code)
            ):
                problem = error("invalid_parameter", "customer_code must be 8-64 letters or digits")
            if problem is not None:
                return problem
            order_id, amount = body["merchant_order_id"], body["amount"]
            repeat = self._repeat(order_id, "charge", _fingerprint(body))
            if repeat is not None:
                return repeat
            charge = SandboxCharge(
                id=f"ch_{secrets.token_hex(12)}",
                merchant_order_id=order_id,
                kind="charge",
                amount=amount,
                currency=body["currency"],
                fingerprint=_fingerprint(body),
                created_at=time.time(),
            )
            self.payments[order_id] = charge
            if amount == DECLINE_AMOUNT:
                self._settle(charge, "failed", "insufficient_balance")
            else:
                self._settle(charge, "paid")
            await self._delay(amount)
            return JSONResponse(charge.view(), status_code=201)

        @app.get("/v1/charges/{merchant_order_id}")
        async def retrieve_charge(merchant_order_id: str) -> Response:
            charge = self.payments.get(merchant_order_id)
            if charge is None:
                return error("order_not_found", f"no charge {merchant_order_id}")
            self._expire_if_due(charge)
            return JSONResponse(charge.view())

        @app.post("/v1/charges/{merchant_order_id}/cancel")
        async def cancel_charge(merchant_order_id: str) -> Response:
            charge = self.payments.get(merchant_order_id)
            if charge is None:
                return error("order_not_found", f"no charge {merchant_order_id}")
            self._expire_if_due(charge)
            if charge.status in {"pending", "paid"}:
                if time.time() > cancel_deadline(charge.created_at):
                    return error("period_expired", "a payment can be cancelled until 23:59 of its 89th day")
                self._settle(charge, "canceled")  # an unpaid code stops; a paid charge is reversed
            return JSONResponse(charge.view())  # canceled, failed, expired: nothing (more) to do

        @app.post("/v1/charges/{merchant_order_id}/refunds")
        async def refund_charge(merchant_order_id: str, request: Request) -> Response:
            body = await _json_object(request)
            if body is None:
                return error("invalid_parameter", "the body must be a JSON object")
            unknown = sorted(set(body) - REFUND_FIELDS)
            refund_id, reason = body.get("merchant_refund_id"), body.get("reason")
            if unknown:
                return error("invalid_parameter", f"unknown fields: {', '.join(unknown)}")
            if not isinstance(refund_id, str) or not wire.ORDER_ID.fullmatch(refund_id):
                return error(
                    "invalid_parameter", "merchant_refund_id must be 1-40 characters of [A-Za-z0-9_-]"
                )
            if reason is not None and (not isinstance(reason, str) or len(reason) > wire.DESCRIPTION_MAX):
                return error("invalid_parameter", "reason must be text of at most 255 characters")
            problem = _amount_problem(body.get("amount"))
            if problem is not None:
                return problem
            amount: int = body["amount"]
            fingerprint = _fingerprint({"merchant_order_id": merchant_order_id, **body})
            earlier = self.refunds.get(refund_id)
            if earlier is not None:
                if earlier.fingerprint != fingerprint:
                    return error(
                        "duplicate_order_id", f"merchant_refund_id {refund_id} was used with another request"
                    )
                return JSONResponse(earlier.view())
            charge = self.payments.get(merchant_order_id)
            if charge is None:
                return error("order_not_found", f"no charge {merchant_order_id}")
            if charge.status == "canceled":
                return error("already_canceled", "the charge was cancelled: there is nothing to refund")
            if charge.status != "paid" or charge.paid_at is None:
                return error("refund_amount_exceeded", f"the charge is {charge.status}: nothing was paid")
            if time.time() > charge.paid_at + REFUND_DAYS * 86_400:
                return error("period_expired", "refunds are possible for 90 days after the payment")
            if charge.amount_refunded + amount > charge.amount:
                return error(
                    "refund_amount_exceeded",
                    f"{charge.amount - charge.amount_refunded} JPY is left to refund",
                )
            refund = SandboxRefund(
                id=f"re_{secrets.token_hex(12)}",
                merchant_refund_id=refund_id,
                merchant_order_id=merchant_order_id,
                amount=amount,
                reason=reason,
                fingerprint=fingerprint,
                created_at=time.time(),
            )
            self.refunds[refund_id] = refund
            charge.refunds.append(refund)
            charge.amount_refunded += amount
            self.settlements.record(
                settled(
                    LineKind.REFUND,
                    refund.id,
                    refund_id,
                    amount,
                    charge.currency,
                    at=refund.created_at,
                )
            )
            self._notify("refund.succeeded", refund.view())
            return JSONResponse(refund.view(), status_code=201)

        serve_settlements(app, self.settlements)

        @app.post("/_sandbox/payments/{merchant_order_id}")
        async def play_customer(merchant_order_id: str, outcome: OutcomeRequest) -> Response:
            charge = self.payments.get(merchant_order_id)
            if charge is None:
                return JSONResponse({"error": "no such payment"}, status_code=404)
            self._expire_if_due(charge)
            if charge.status != "pending":
                return JSONResponse({"error": f"the payment is already {charge.status}"}, status_code=409)
            match outcome.outcome:
                case "COMPLETED":
                    self._settle(charge, "paid")
                case "FAILED":
                    self._settle(charge, "failed", "declined")
                case "EXPIRED":
                    self._settle(charge, "expired", "code_expired")
                case "CANCELED":
                    self._settle(charge, "canceled")
            return JSONResponse(charge.view())

        return app


async def _json_object(request: Request) -> dict[str, Any] | None:
    try:
        body = json.loads(await request.body())
    except ValueError:
        return None
    return body if isinstance(body, dict) else None
