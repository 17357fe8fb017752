"""A PayPay sandbox: Open Payment API v2 as PayPay speaks it, with state in memory.

It checks `hmac OPA-Auth` exactly as PayPay does (over the provider's own path, the raw body and the raw
Content-Type, the epoch within two minutes) and X-ASSUME-MERCHANT (or `?assumeMerchant=`, which wins), and
answers with PayPay's `resultInfo`/`data` envelope. The customer is played by
`POST /_sandbox/payments/{merchantPaymentId}` with `{"outcome": "COMPLETED" | "FAILED" | "EXPIRED" | "CANCELED"}`;
each change of a payment sends PayPay's notification to the webhook URL.

Magic amounts on `POST /v2/codes`: 40002 is declined as soon as the customer tries (FAILED, notified at once);
40091 creates the code but answers only after the timeout delay; 40092 answers after the slow delay. A refund of
40091 is made at once but answered only after the timeout delay.

Every completed payment, refund and reversal is written to the day's settlement file (a layout paymux defines in
PayPay's style): `GET /v2/settlements/{YYYY-MM-DD}`, signed like any GET, or `GET /_sandbox/settlements/{day}.csv`.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from paymux.core.crypto import constant_time_equals
from paymux.providers.notifications import body_signature
from paymux.providers.paypay import signing
from paymux.providers.sandbox_kit import (
    OutcomeRequest,
    SandboxCredentials,
    SandboxTiming,
    WebhookSender,
    provider_path,
    sandbox_app,
    serve_settlements,
    settled,
    settlement_csv,
    settlement_day,
)
from paymux.providers.settlement import LAYOUTS, LineKind, SettlementBook

# The demo's credentials: public on purpose, accepted only by this sandbox.
DEFAULTS = SandboxCredentials(
    api_key="sandbox-paypay-api-key",
    api_secret="sandbox-paypay-api-secret",  # noqa: S106
    merchant_id="sandbox-paypay-merchant",
    webhook_secret="sandbox-paypay-webhook-secret",  # noqa: S106
)
MERCHANT_PAYMENT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
CODE_LIFETIME_SECONDS = 300
DECLINE_AMOUNT, TIMEOUT_AMOUNT, SLOW_AMOUNT = 40002, 40091, 40092


@dataclass
class SandboxPayment:
    merchant_payment_id: str
    code_id: str
    amount: int
    currency: str
    requested_at: int
    expires_at: int
    status: str = "CREATED"
    payment_id: str | None = None
    accepted_at: int | None = None
    refunds: list[dict[str, Any]] = field(default_factory=list)

    def view(self) -> dict[str, Any]:
        return {
            "paymentId": self.payment_id,
            "status": self.status,
            "acceptedAt": self.accepted_at,
            "refunds": {"data": self.refunds},
            "merchantPaymentId": self.merchant_payment_id,
            "amount": {"amount": self.amount, "currency": self.currency},
            "requestedAt": self.requested_at,
            "storeId": None,
            "terminalId": None,
            "orderReceiptNumber": None,
        }


def envelope(code: str, message: str, data: Any = None, *, status: int = 200) -> JSONResponse:
    return JSONResponse(
        {
            "resultInfo": {"code": code, "message": message, "codeId": _code_ids.get(code, "08100000")},
            "data": data,
        },
        status_code=status,
    )


_code_ids = {
    "SUCCESS": "08100001",
    "REQUEST_ACCEPTED": "08100001",
    "UNAUTHORIZED": "08100016",
    "INVALID_PARAMS": "08100006",
    "DUPLICATE_DYNAMIC_QR_REQUEST": "01652073",
    "DYNAMIC_QR_PAYMENT_NOT_FOUND": "01652075",
    "DYNAMIC_QR_NOT_FOUND": "01652074",
    "ORDER_NOT_REVERSIBLE": "01652076",
    "REFUND_AMOUNT_EXCEEDED": "01652077",
    "REFUND_NOT_FOUND": "01652078",
}


class PayPaySandbox:
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
        self.payments: dict[str, SandboxPayment] = {}
        self.codes: dict[str, str] = {}
        self.refunds: dict[str, dict[str, Any]] = {}
        self.settlements = SettlementBook(LAYOUTS["paypay"])

    # ------------------------------------------------------------------ auth

    async def _authenticate(self, request: Request) -> JSONResponse | None:
        unauthorized = envelope("UNAUTHORIZED", "Unauthorized request", status=401)
        try:
            auth = signing.parse(request.headers.get("authorization", ""))
        except signing.MalformedPayPayAuthorization:
            return unauthorized
        if not constant_time_equals(auth.api_key, self.credentials.api_key):
            return unauthorized
        if not auth.epoch.isdigit() or abs(time.time() - int(auth.epoch)) > 120:
            return unauthorized
        body = await request.body()
        path = provider_path(request)
        if not signing.verify(
            self.credentials.api_secret,
            auth,
            method=request.method,
            path=path,
            content_type=request.headers.get("content-type"),
            body=body,
        ):
            return unauthorized
        merchant = request.query_params.get("assumeMerchant") or request.headers.get("x-assume-merchant")
        if merchant != self.credentials.merchant_id:
            return envelope("UNAUTHORIZED", "Unknown merchant for this API key", status=401)
        return None

    # ------------------------------------------------------------------ state changes

    def _settle(self, payment: SandboxPayment, outcome: str) -> None:
        if outcome == "COMPLETED":
            payment.payment_id = payment.payment_id or str(secrets.randbelow(10**19)).zfill(19)
            payment.accepted_at = int(time.time())
            self.settlements.record(
                settled(
                    LineKind.PAYMENT,
                    payment.payment_id,
                    payment.merchant_payment_id,
                    payment.amount,
                    payment.currency,
                    at=payment.accepted_at,
                )
            )
        elif outcome == "CANCELED" and payment.status == "COMPLETED" and payment.payment_id is not None:
            # A completed payment reversed: the money goes back, a refund line under the payment's own ids.
            self.settlements.record(
                settled(
                    LineKind.REFUND,
                    payment.payment_id,
                    payment.merchant_payment_id,
                    payment.amount,
                    payment.currency,
                )
            )
        payment.status = outcome
        self._notify(payment)

    def _notify(self, payment: SandboxPayment) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        body = json.dumps(
            {
                "notification_type": "Transaction",
                "merchant_id": self.credentials.merchant_id,
                "store_id": None,
                "pos_id": None,
                "order_id": payment.payment_id,
                "merchant_order_id": payment.merchant_payment_id,
                "authorized_at": None,
                "expires_at": None,
                "paid_at": now if payment.status == "COMPLETED" else None,
                "order_amount": str(payment.amount),
                "state": payment.status,
            },
            separators=(",", ":"),
        ).encode()
        headers = {"content-type": "application/json"}
        if self.credentials.webhook_secret:
            headers["X-PayPay-Signature"] = body_signature(self.credentials.webhook_secret, body)
        self.webhooks.send(body, headers)

    def _expire_if_due(self, payment: SandboxPayment) -> None:
        if payment.status == "CREATED" and time.time() > payment.expires_at:
            self._settle(payment, "EXPIRED")

    # ------------------------------------------------------------------ the app

    def app(self) -> FastAPI:
        app = sandbox_app("PayPay sandbox", self._authenticate)

        @app.post("/v2/codes")
        async def create_code(request: Request) -> Response:
            try:
                body = json.loads(await request.body())
                merchant_payment_id = body["merchantPaymentId"]
                amount = body["amount"]["amount"]
                currency = body["amount"]["currency"]
                requested_at = body["requestedAt"]
                valid = (
                    isinstance(merchant_payment_id, str)
                    and MERCHANT_PAYMENT_ID.match(merchant_payment_id)
                    and isinstance(amount, int)
                    and amount > 0
                    and currency == "JPY"
                    and body.get("codeType") == "ORDER_QR"
                    and isinstance(requested_at, int)
                )
            except (ValueError, KeyError, TypeError):
                valid = False
            if not valid:
                return envelope("INVALID_PARAMS", "Invalid request params", status=400)
            if merchant_payment_id in self.payments:
                return envelope(
                    "DUPLICATE_DYNAMIC_QR_REQUEST", "Duplicate Dynamic QR request error", status=400
                )
            code_id = f"04-{secrets.token_hex(8)}"
            now = int(time.time())
            payment = SandboxPayment(
                merchant_payment_id=merchant_payment_id,
                code_id=code_id,
                amount=amount,
                currency=currency,
                requested_at=requested_at,
                expires_at=now + CODE_LIFETIME_SECONDS,
            )
            self.payments[merchant_payment_id] = payment
            self.codes[code_id] = merchant_payment_id
            data = {
                "codeId": code_id,
                "url": f"https://qr-stg.sandbox.paypay.ne.jp/{code_id}",
                "deeplink": f"paypay://payment?link_key=https%3A%2F%2Fqr-stg.sandbox.paypay.ne.jp%2F{code_id}",
                "expiryDate": payment.expires_at,
                "merchantPaymentId": merchant_payment_id,
                "amount": {"amount": amount, "currency": currency},
                "orderDescription": body.get("orderDescription"),
                "codeType": "ORDER_QR",
                "requestedAt": requested_at,
                "redirectType": body.get("redirectType"),
                "isAuthorization": bool(body.get("isAuthorization", False)),
            }
            if amount == DECLINE_AMOUNT:
                self._settle(payment, "FAILED")
            elif amount == TIMEOUT_AMOUNT:
                await asyncio.sleep(self.timing.timeout_seconds)
            elif amount == SLOW_AMOUNT:
                await asyncio.sleep(self.timing.slow_seconds)
            return envelope("SUCCESS", "Success", data, status=201)

        @app.get("/v2/codes/payments/{merchant_payment_id}")
        async def payment_details(merchant_payment_id: str) -> Response:
            payment = self.payments.get(merchant_payment_id)
            if payment is None:
                return envelope("DYNAMIC_QR_PAYMENT_NOT_FOUND", "Dynamic QR payment not found", status=404)
            self._expire_if_due(payment)
            return envelope("SUCCESS", "Success", payment.view())

        @app.delete("/v2/codes/{code_id}")
        async def delete_code(code_id: str) -> Response:
            merchant_payment_id = self.codes.pop(code_id, None)
            if merchant_payment_id is None:
                return envelope("DYNAMIC_QR_NOT_FOUND", "Dynamic QR code not found", status=404)
            payment = self.payments[merchant_payment_id]
            if payment.status == "CREATED":
                self._settle(payment, "CANCELED")
            return envelope("SUCCESS", "Success")

        @app.delete("/v2/payments/{merchant_payment_id}")
        async def cancel_payment(merchant_payment_id: str) -> Response:
            payment = self.payments.get(merchant_payment_id)
            if payment is None:
                return envelope("DYNAMIC_QR_PAYMENT_NOT_FOUND", "Dynamic QR payment not found", status=404)
            if payment.refunds:
                return envelope("ORDER_NOT_REVERSIBLE", "Order cannot be reversed", status=400)
            if payment.status in {"CREATED", "COMPLETED"}:
                self._settle(payment, "CANCELED")
            return envelope("REQUEST_ACCEPTED", "Request accepted", status=202)

        async def refund(request: Request) -> Response:
            try:
                body = json.loads(await request.body())
                refund_id, payment_id = body["merchantRefundId"], body["paymentId"]
                amount = body["amount"]["amount"]
                valid = (
                    isinstance(refund_id, str)
                    and MERCHANT_PAYMENT_ID.match(refund_id)
                    and isinstance(amount, int)
                    and amount > 0
                )
            except (ValueError, KeyError, TypeError):
                valid = False
            if not valid:
                return envelope("INVALID_PARAMS", "Invalid request params", status=400)
            if (
                refund_id in self.refunds
            ):  # PayPay answers a repeated merchantRefundId with the earlier result
                return envelope("SUCCESS", "Success", self.refunds[refund_id])
            payment = next((p for p in self.payments.values() if p.payment_id == payment_id), None)
            if payment is None or payment.status not in {"COMPLETED", "REFUNDED"}:
                return envelope(
                    "DYNAMIC_QR_PAYMENT_NOT_FOUND", "Payment not found or not completed", status=400
                )
            refunded = sum(r["amount"]["amount"] for r in payment.refunds)
            if refunded + amount > payment.amount:
                return envelope(
                    "REFUND_AMOUNT_EXCEEDED", "Refund amount exceeds the payment amount", status=400
                )
            record = {
                "status": "REFUNDED",
                "acceptedAt": int(time.time()),
                "merchantRefundId": refund_id,
                "paymentId": str(secrets.randbelow(10**19)).zfill(19),
                "amount": {"amount": amount, "currency": payment.currency},
                "requestedAt": body.get("requestedAt"),
                "reason": body.get("reason"),
            }
            self.refunds[refund_id] = record
            payment.refunds.append(record)
            self.settlements.record(
                settled(
                    LineKind.REFUND,
                    record["paymentId"],
                    refund_id,
                    amount,
                    payment.currency,
                    at=record["acceptedAt"],
                )
            )
            if refunded + amount == payment.amount:
                payment.status = "REFUNDED"
            if amount == TIMEOUT_AMOUNT:  # refunded, but the answer comes too late
                await asyncio.sleep(self.timing.timeout_seconds)
            return envelope("SUCCESS", "Success", record)

        # PayPay's Python SDK posts refunds to /v2/refunds/ (trailing slash).
        app.add_api_route("/v2/refunds", refund, methods=["POST"])
        app.add_api_route("/v2/refunds/", refund, methods=["POST"])

        @app.get("/v2/refunds/{merchant_refund_id}")
        async def refund_details(merchant_refund_id: str) -> Response:
            record = self.refunds.get(merchant_refund_id)
            if record is None:
                return envelope("REFUND_NOT_FOUND", "Refund not found", status=404)
            return envelope("SUCCESS", "Success", record)

        @app.get("/v2/settlements/{day}")
        async def settlement_file(day: str) -> Response:
            """The day's settlement file (UTC) as CSV; errors in PayPay's envelope."""
            parsed = settlement_day(day)
            if parsed is None:
                return envelope("INVALID_PARAMS", "Invalid request params: the day is YYYY-MM-DD", status=400)
            return settlement_csv(self.settlements, parsed)

        serve_settlements(app, self.settlements)

        @app.post("/_sandbox/payments/{merchant_payment_id}")
        async def play_customer(merchant_payment_id: str, outcome: OutcomeRequest) -> Response:
            payment = self.payments.get(merchant_payment_id)
            if payment is None:
                return JSONResponse({"error": "no such payment"}, status_code=404)
            if payment.status != "CREATED":
                return JSONResponse({"error": f"the payment is already {payment.status}"}, status_code=409)
            self._settle(payment, outcome.outcome)
            return JSONResponse(payment.view())

        return app
