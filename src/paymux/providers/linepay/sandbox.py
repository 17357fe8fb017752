"""A LINE Pay sandbox: Online API v3 as LINE Pay speaks it, with state in memory.

It checks X-LINE-ChannelId and the X-LINE-Authorization signature over LINE Pay's own path (without the mount
prefix) and answers with `{returnCode, returnMessage, info}`. The customer is played by
`POST /_sandbox/payments/{orderId}` with `{"outcome": "COMPLETED" | "FAILED" | "EXPIRED" | "CANCELED"}`:
COMPLETED approves the payment (check answers 0110 until the merchant confirms), FAILED gives 0122, EXPIRED and
CANCELED give 0121. Each change is notified to paymux (a paymux-defined notification, see docs/providers).

Magic amounts on `POST /v3/payments/request`: 40002 is declined at confirm (1142, low balance); 40091 answers
only after the timeout delay; 40092 after the slow delay.

Every confirmed payment and every refund is written to the day's settlement file (a layout paymux defines in LINE
Pay's style), served at `GET /_sandbox/settlements/{YYYY-MM-DD}.csv`. A refund's line carries its
refundTransactionId and the payment's orderId: LINE Pay refunds have no merchant id.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from paymux.core.money import currency_exponent
from paymux.providers.linepay import signing
from paymux.providers.notifications import body_signature
from paymux.providers.sandbox_kit import (
    OutcomeRequest,
    SandboxCredentials,
    SandboxTiming,
    WebhookSender,
    provider_path,
    sandbox_app,
    serve_settlements,
    settled,
)
from paymux.providers.settlement import LAYOUTS, LineKind, SettlementBook

# The demo's credentials: public on purpose, accepted only by this sandbox. api_key is the channel id.
DEFAULTS = SandboxCredentials(
    api_key="1655000000",
    api_secret="sandbox-linepay-channel-secret",  # noqa: S106
    merchant_id="sandbox-linepay-merchant",
    webhook_secret="sandbox-linepay-webhook-secret",  # noqa: S106
)
DECLINE_AMOUNT, TIMEOUT_AMOUNT, SLOW_AMOUNT = 40002, 40091, 40092
CHECK_CODES = {
    "RESERVED": "0000",
    "AUTHORIZED": "0110",
    "CANCELED": "0121",
    "FAILED": "0122",
    "CONFIRMED": "0123",
}


@dataclass
class SandboxPayment:
    transaction_id: str
    order_id: str
    amount: int
    currency: str
    state: str = "RESERVED"
    refunded: int = 0
    refunds: list[dict[str, Any]] = field(default_factory=list)


def answer(code: str, message: str, info: Any = None, *, status: int = 200) -> Response:
    body: dict[str, Any] = {"returnCode": code, "returnMessage": message}
    if info is not None:
        body["info"] = info
    return JSONResponse(body, status_code=status)


class LinePaySandbox:
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
        self.payments: dict[str, SandboxPayment] = {}  # by transactionId
        self.orders: dict[str, str] = {}  # orderId -> transactionId
        self.settlements = SettlementBook(LAYOUTS["linepay"])

    def _settled(self, kind: LineKind, payment: SandboxPayment, transaction_id: str, amount: int) -> None:
        """A settlement line; LINE Pay's amounts are whole units of the currency, the file's are minor units."""
        minor = amount * 10 ** currency_exponent(payment.currency)
        self.settlements.record(settled(kind, transaction_id, payment.order_id, minor, payment.currency))

    async def _authenticate(self, request: Request) -> Response | None:
        refused = answer("1106", "Header information error.", status=401)
        channel = request.headers.get("x-line-channelid")
        nonce = request.headers.get("x-line-authorization-nonce")
        presented = request.headers.get("x-line-authorization")
        if channel != self.credentials.api_key or not nonce or not presented:
            return refused
        path = provider_path(request)
        payload = (await request.body()).decode() if request.method == "POST" else request.url.query
        if not signing.verify(
            self.credentials.api_secret, presented, path=path, payload=payload, nonce=nonce
        ):
            return refused
        return None

    def _notify(self, payment: SandboxPayment, event: str) -> None:
        body = json.dumps(
            {"transactionId": payment.transaction_id, "orderId": payment.order_id, "event": event},
            separators=(",", ":"),
        ).encode()
        headers = {"content-type": "application/json"}
        if self.credentials.webhook_secret:
            headers["X-LINE-Signature"] = body_signature(self.credentials.webhook_secret, body)
        self.webhooks.send(body, headers)

    def app(self) -> FastAPI:
        app = sandbox_app("LINE Pay sandbox", self._authenticate)

        @app.post("/v3/payments/request")
        async def request_payment(request: Request) -> Response:
            try:
                body = json.loads(await request.body())
                amount, currency, order_id = body["amount"], body["currency"], body["orderId"]
                packages_total = sum(package["amount"] for package in body["packages"])
                valid = (
                    isinstance(amount, int)
                    and amount > 0
                    and currency in {"JPY", "TWD", "THB"}
                    and isinstance(order_id, str)
                    and 0 < len(order_id) <= 100
                    and packages_total == amount
                    and isinstance(body["redirectUrls"]["confirmUrl"], str)
                )
            except (ValueError, KeyError, TypeError):
                valid = False
            if not valid:
                return answer("1124", "Amount info error or invalid request.")
            if order_id in self.orders:
                return answer("1172", "There is a record of transaction with the same order number.")
            transaction_id = str(2026000000000000000 + secrets.randbelow(10**15))
            self.payments[transaction_id] = SandboxPayment(transaction_id, order_id, amount, currency)
            self.orders[order_id] = transaction_id
            if amount == TIMEOUT_AMOUNT:
                await asyncio.sleep(self.timing.timeout_seconds)
            elif amount == SLOW_AMOUNT:
                await asyncio.sleep(self.timing.slow_seconds)
            base = "https://sandbox-web-pay.line.me/web/payment/wait"
            return answer(
                "0000",
                "Success.",
                {
                    "transactionId": int(transaction_id),  # a 19-digit JSON number, as LINE Pay sends it
                    "paymentAccessToken": str(secrets.randbelow(10**12)).zfill(12),
                    "paymentUrl": {
                        "web": f"{base}?transactionReserveId={secrets.token_urlsafe(16)}",
                        "app": f"line://pay/payment/{secrets.token_urlsafe(16)}",
                    },
                },
            )

        @app.get("/v3/payments/requests/{transaction_id}/check")
        async def check(transaction_id: str) -> Response:
            payment = self.payments.get(transaction_id)
            if payment is None:
                return answer("1150", "Transaction record not found.")
            messages = {
                "0000": "Reserved transaction.",
                "0110": "Authorization completed.",
                "0121": "Cancelled or expired.",
                "0122": "Payment failed.",
                "0123": "Payment completed.",
            }
            code = CHECK_CODES[payment.state]
            return answer(code, messages[code])

        @app.post("/v3/payments/{transaction_id}/confirm")
        async def confirm(transaction_id: str, request: Request) -> Response:
            payment = self.payments.get(transaction_id)
            if payment is None:
                return answer("1150", "Transaction record not found.")
            body = json.loads(await request.body())
            if body.get("amount") != payment.amount or body.get("currency") != payment.currency:
                return answer("1153", "The payment amount is different than the requested amount.")
            if payment.state == "CONFIRMED":
                return answer("1152", "There is a history of transactions with the same transactionId.")
            if payment.state != "AUTHORIZED":
                return answer("1169", "Payment has not been approved by the user.")
            if payment.amount == DECLINE_AMOUNT:
                payment.state = "FAILED"  # the merchant learns it from this answer: no notification
                return answer("1142", "Low balance.")
            payment.state = "CONFIRMED"
            self._settled(LineKind.PAYMENT, payment, payment.transaction_id, payment.amount)
            return answer(
                "0000",
                "Success.",
                {
                    "orderId": payment.order_id,
                    "transactionId": int(payment.transaction_id),
                    "payInfo": [{"method": "BALANCE", "amount": payment.amount}],
                },
            )

        @app.post("/v3/payments/{transaction_id}/refund")
        async def refund(transaction_id: str, request: Request) -> Response:
            payment = self.payments.get(transaction_id)
            if payment is None or payment.state != "CONFIRMED":
                return answer("1150", "Transaction record not found.")
            body = json.loads(await request.body() or b"{}")
            amount = body.get("refundAmount", payment.amount - payment.refunded)
            if not isinstance(amount, int) or amount <= 0:
                return answer("1124", "Amount info error.")
            if payment.refunded >= payment.amount:
                return answer("1165", "A transaction already been refunded.")
            if payment.refunded + amount > payment.amount:
                return answer("1164", "Exceeded refundable amount.")
            payment.refunded += amount
            record = {
                "refundTransactionId": 2026100000000000000 + secrets.randbelow(10**15),
                "refundTransactionDate": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "amount": amount,
            }
            payment.refunds.append(record)
            self._settled(LineKind.REFUND, payment, str(record["refundTransactionId"]), amount)
            return answer(
                "0000",
                "Success.",
                {key: record[key] for key in ("refundTransactionId", "refundTransactionDate")},
            )

        @app.get("/v3/payments")
        async def payment_details(request: Request) -> Response:
            """Confirmed payments, by transactionId or orderId (LINE Pay's payment details API)."""
            order_id = request.query_params.get("orderId")
            transaction_id = request.query_params.get("transactionId")
            found = [
                {
                    "transactionId": int(payment.transaction_id),
                    "orderId": payment.order_id,
                    "payInfo": [{"method": "BALANCE", "amount": payment.amount}],
                    "refundList": [
                        {
                            "refundTransactionId": refund["refundTransactionId"],
                            "refundAmount": refund["amount"],
                            "refundTransactionDate": refund["refundTransactionDate"],
                        }
                        for refund in payment.refunds
                    ],
                }
                for payment in self.payments.values()
                if payment.state == "CONFIRMED"
                and (order_id is None or payment.order_id == order_id)
                and (transaction_id is None or payment.transaction_id == transaction_id)
            ]
            return answer("0000", "Success.", found)

        serve_settlements(app, self.settlements)

        @app.post("/_sandbox/payments/{order_id}")
        async def play_customer(order_id: str, outcome: OutcomeRequest) -> Response:
            transaction_id = self.orders.get(order_id)
            if transaction_id is None:
                return JSONResponse({"error": "no such payment"}, status_code=404)
            payment = self.payments[transaction_id]
            if payment.state != "RESERVED":
                return JSONResponse({"error": f"the payment is already {payment.state}"}, status_code=409)
            payment.state = {"COMPLETED": "AUTHORIZED", "FAILED": "FAILED"}.get(outcome.outcome, "CANCELED")
            self._notify(
                payment,
                {"AUTHORIZED": "PAYMENT_AUTHORIZED", "FAILED": "PAYMENT_FAILED"}.get(
                    payment.state, "PAYMENT_CANCELED"
                ),
            )
            return JSONResponse({"transactionId": payment.transaction_id, "state": payment.state})

        return app
