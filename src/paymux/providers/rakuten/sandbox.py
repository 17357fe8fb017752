"""A Rakuten Pay sandbox: LITE's charge API as LITE speaks it, plus paymux's QR-code extension, state in memory.

It serves both `/v1` and `/sandbox/v1` and, as LITE does, lets a `sandbox_private_` secret key in only under
`/sandbox/v1` and any other key only under `/v1`. It checks `Authorization: Basic Base64("<secret key>:")`
and answers LITE's `{"errors": [{"type", "code", "message"}]}` (401 `authentication_error` for a wrong key).
The customer is played by `POST /_sandbox/payments/{cart_id}` with
`{"outcome": "COMPLETED" | "FAILED" | "EXPIRED" | "CANCELED"}`: COMPLETED pays the code, which creates an
authorised charge (paid, not captured) that the merchant must capture. Each change is notified to paymux as a
LITE Event, with LITE's static `X-Lite-Webhook-Signature` and paymux's `X-Rakuten-Signature` (HMAC-SHA256).

Magic amounts on `POST /v1/codes`: 40002 is declined when the customer pays (code `failed`, `card_declined`,
notified); 40003 is authorised but refused at capture (402 `payment_error`, the authorisation released);
40091 creates the code but answers only after the timeout delay; 40092 after the slow delay.

Every capture and every refund (a cancel of a captured charge, or an amount change) is written to the day's
settlement file (a layout paymux defines in LITE's style), served at `GET /_sandbox/settlements/{YYYY-MM-DD}.csv`.
LITE refunds are changes to the charge: a refund's line carries the charge id and the cart_id.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from paymux.core.crypto import constant_time_equals
from paymux.providers.rakuten import signing
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

# The demo's credentials: public on purpose, accepted only by this sandbox. A `sandbox_private_` key talks to
# `/sandbox/v1`, as LITE's SDK does with its sandbox keys.
DEFAULTS = SandboxCredentials(
    api_key="sandbox_public_paymux_demo",
    api_secret="sandbox_private_paymux_demo",  # noqa: S106
    merchant_id="sandbox-rakuten-merchant",
    webhook_secret="sandbox-rakuten-webhook-secret",  # noqa: S106
)
# LITE's static webhook signature (the dashboard's value), sent beside paymux's HMAC signature.
LITE_WEBHOOK_SIGNATURE = "sandbox-rakuten-lite-webhook-signature"
CART_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
CODE_LIFETIME_SECONDS, MIN_LIFETIME_SECONDS, MAX_LIFETIME_SECONDS = 300, 60, 86400
MAX_AMOUNT = 9_999_999
DECLINE_AMOUNT, TIMEOUT_AMOUNT, SLOW_AMOUNT = 40002, 40091, 40092
CAPTURE_DECLINE_AMOUNT = 40003  # authorised, then refused at capture (402 payment_error)
FORM = "application/x-www-form-urlencoded"
JST_OFFSET_SECONDS = 9 * 3600


@dataclass
class SandboxCharge:
    id: str
    cart_id: str
    amount: int
    items: list[dict[str, Any]]
    livemode: bool
    created: int
    updated: int
    paid: bool = True
    captured: bool = False
    refunded: bool = False
    amount_changes: list[int] = field(default_factory=list)  # the amount after each change, in order

    def view(self) -> dict[str, Any]:
        return {
            "object": "charge",
            "open_id": None,
            "id": self.id,
            "cipher": None,
            "livemode": self.livemode,
            "currency": "jpy",
            "amount": self.amount,
            "point": 0,
            "cart_id": self.cart_id,
            "paid": self.paid,
            "captured": self.captured,
            "status": "succeeded",  # LITE: always; the state is in the booleans
            "refunded": self.refunded,
            "items": self.items,
            "address": None,
            "created": self.created,
            "updated": self.updated,
        }


@dataclass
class SandboxCode:
    id: str
    cart_id: str
    amount: int
    item_name: str | None
    livemode: bool
    created: int
    expires_at: int
    status: str = "pending"
    charge_id: str | None = None
    failure_code: str | None = None
    failure_message: str | None = None

    @property
    def url(self) -> str:
        return f"https://checkout.rakuten.example/sandbox/codes/{self.id}"

    def view(self) -> dict[str, Any]:
        return {
            "object": "code",
            "id": self.id,
            "livemode": self.livemode,
            "status": self.status,
            "url": self.url,
            "cart_id": self.cart_id,
            "currency": "jpy",
            "amount": self.amount,
            "item_name": self.item_name,
            "expires_at": self.expires_at,
            "charge": self.charge_id,
            "failure_code": self.failure_code,
            "failure_message": self.failure_message,
            "created": self.created,
        }


@dataclass
class SandboxPayment:
    """One cart: its code, and the charge the customer's payment created."""

    code: SandboxCode
    charge: SandboxCharge | None = None


def error(status: int, kind: str, code: str, message: str) -> JSONResponse:
    return JSONResponse({"errors": [{"type": kind, "code": code, "message": message}]}, status_code=status)


def listing(url: str, data: list[dict[str, Any]], limit: int = 100, offset: int = 0) -> JSONResponse:
    return JSONResponse(
        {
            "object": "list",
            "url": url,
            "limit": limit,
            "offset": offset,
            "total": len(data),
            "data": data[offset : offset + limit],
        }
    )


def _int(value: str | None) -> int | None:
    return int(value) if value is not None and value.isascii() and value.isdigit() else None


class RakutenPaySandbox:
    def __init__(
        self,
        credentials: SandboxCredentials = DEFAULTS,
        *,
        webhook_url: str | None = None,
        timing: SandboxTiming | None = None,
        lite_webhook_signature: str = LITE_WEBHOOK_SIGNATURE,
    ) -> None:
        self.credentials = credentials
        self.timing = timing or SandboxTiming()
        self.webhooks = WebhookSender(webhook_url)
        self.lite_webhook_signature = lite_webhook_signature
        self.payments: dict[str, SandboxPayment] = {}  # by cart_id (the PaymentIntent id)
        self.codes: dict[str, str] = {}  # code id -> cart_id
        self.charges: dict[str, str] = {}  # charge id -> cart_id
        self.events: list[dict[str, Any]] = []  # every notification sent, oldest first
        self.settlements = SettlementBook(LAYOUTS["rakuten"])
        digest = hashlib.sha256(credentials.merchant_id.encode()).hexdigest()
        self._shop_number = str(int(digest[:12], 16) % 10**10).zfill(10)

    @property
    def livemode(self) -> bool:
        return self.credentials.api_secret.startswith("live_private_")

    # ------------------------------------------------------------------ auth

    async def _authenticate(self, request: Request) -> Response | None:
        presented = signing.parse_authorization(request.headers.get("authorization"))
        path = provider_path(request)
        base = signing.api_base(self.credentials.api_secret)
        valid = (
            presented is not None
            and constant_time_equals(presented[0], self.credentials.api_secret)
            and presented[1] == ""
            and path.startswith(base + "/")  # a sandbox key is unknown to /v1, a live key to /sandbox/v1
        )
        if valid:
            return None
        refused = error(401, "authentication_error", "invalid_api_key", "Invalid API key provided.")
        refused.headers["WWW-Authenticate"] = 'Basic realm="Rakuten Pay LITE"'
        return refused

    @staticmethod
    async def _form(request: Request) -> dict[str, str] | None:
        """The form-encoded body; None when a body is there but is not a form."""
        body = await request.body()
        if not body:
            return {}
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != FORM:
            return None
        try:
            return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True))
        except (UnicodeDecodeError, ValueError):
            return None

    # ------------------------------------------------------------------ state changes

    def _notify(self, kind: str, subject: dict[str, Any]) -> None:
        event = {
            "object": "event",
            "id": f"evt_{secrets.token_hex(16)}",
            "livemode": self.livemode,
            "type": kind,
            "synchronous": False,
            "data": {"object": subject},
            "pending_webhooks": 1,
            "created": int(time.time()),
        }
        self.events.append(event)
        body = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
        headers = {
            "content-type": "application/json",
            signing.LITE_SIGNATURE_HEADER: self.lite_webhook_signature,
        }
        if self.credentials.webhook_secret:
            headers[signing.SIGNATURE_HEADER] = signing.notification_signature(
                self.credentials.webhook_secret, body
            )
        self.webhooks.send(body, headers)

    def _end_code(self, code: SandboxCode, status: str, failure: tuple[str, str] | None = None) -> None:
        code.status = status
        if failure is not None:
            code.failure_code, code.failure_message = failure
        self._notify(f"code.{status}", code.view())

    def _pay(self, payment: SandboxPayment) -> None:
        code = payment.code
        if code.amount == DECLINE_AMOUNT:
            self._end_code(code, "failed", ("card_declined", "The customer's card was declined."))
            return
        now = int(time.time())
        day = time.strftime("%Y%m%d", time.gmtime(now + JST_OFFSET_SECONDS))
        charge = SandboxCharge(
            id=f"{self._shop_number}-{day}-{secrets.randbelow(10**10):010d}",
            cart_id=code.cart_id,
            amount=code.amount,
            items=[
                {"id": "1", "name": code.item_name or code.cart_id, "quantity": 1, "unit_price": code.amount}
            ],
            livemode=code.livemode,
            created=now,
            updated=now,
        )
        payment.charge = charge
        self.charges[charge.id] = code.cart_id
        code.status, code.charge_id = "paid", charge.id
        self._notify("charge.succeeded", charge.view())

    def _expire_if_due(self, code: SandboxCode) -> None:
        if code.status == "pending" and time.time() > code.expires_at:
            self._end_code(code, "expired", ("expired", "The code expired unpaid."))

    def _settled(self, kind: LineKind, charge: SandboxCharge, amount: int) -> None:
        self.settlements.record(settled(kind, charge.id, charge.cart_id, amount, "JPY", at=charge.updated))

    def _charge(self, charge_id: str) -> SandboxCharge | None:
        cart_id = self.charges.get(charge_id)
        return self.payments[cart_id].charge if cart_id is not None else None

    # ------------------------------------------------------------------ the app

    def app(self) -> FastAPI:
        app = sandbox_app("Rakuten Pay sandbox", self._authenticate)

        @app.exception_handler(StarletteHTTPException)
        async def lite_error(request: Request, exc: StarletteHTTPException) -> Response:
            code, message = {
                404: ("not_found", "Unrecognized request URL."),
                405: ("method_not_allowed", "Method not allowed."),
            }.get(exc.status_code, ("invalid_request", str(exc.detail)))
            return error(exc.status_code, "invalid_request_error", code, message)

        app.include_router(self._router(), prefix=signing.LIVE_API_BASE)
        app.include_router(self._router(), prefix=signing.SANDBOX_API_BASE)
        app.include_router(self._control())
        serve_settlements(app, self.settlements)
        return app

    def _router(self) -> APIRouter:
        router = APIRouter()

        # -------------------------------------------------------------- codes (paymux-defined)

        @router.post("/codes")
        async def create_code(request: Request) -> Response:
            form = await self._form(request)
            if form is None:
                return error(400, "invalid_request_error", "invalid_body", "The body must be form-encoded.")
            cart_id = form.get("cart_id", "")
            amount = _int(form.get("amount"))
            lifetime = _int(form.get("expires_in", str(CODE_LIFETIME_SECONDS)))
            item_name = form.get("item_name")
            if not CART_ID.match(cart_id):
                return error(400, "invalid_request_error", "invalid_cart_id", "cart_id is invalid.")
            if amount is None or not 0 < amount <= MAX_AMOUNT:
                return error(400, "invalid_request_error", "invalid_amount", "amount is invalid.")
            if lifetime is None or not MIN_LIFETIME_SECONDS <= lifetime <= MAX_LIFETIME_SECONDS:
                return error(400, "invalid_request_error", "invalid_expires_in", "expires_in is invalid.")
            if item_name is not None and len(item_name) > 255:
                return error(400, "invalid_request_error", "invalid_item_name", "item_name is too long.")
            if cart_id in self.payments:
                return error(400, "invalid_request_error", "duplicate_cart_id", "cart_id is already used.")
            now = int(time.time())
            code = SandboxCode(
                id=f"code_{secrets.token_hex(12)}",
                cart_id=cart_id,
                amount=amount,
                item_name=item_name,
                livemode=self.livemode,
                created=now,
                expires_at=now + lifetime,
            )
            self.payments[cart_id] = SandboxPayment(code)  # saved first: a status check finds it
            self.codes[code.id] = cart_id
            if amount == TIMEOUT_AMOUNT:
                await asyncio.sleep(self.timing.timeout_seconds)
            elif amount == SLOW_AMOUNT:
                await asyncio.sleep(self.timing.slow_seconds)
            return JSONResponse(code.view())

        @router.get("/codes")
        async def list_codes(request: Request) -> Response:
            cart_id = request.query_params.get("cart_id")
            found = [
                payment.code
                for payment in self.payments.values()
                if cart_id is None or payment.code.cart_id == cart_id
            ]
            for code in found:
                self._expire_if_due(code)
            return listing(provider_path(request), [code.view() for code in found])

        @router.get("/codes/{code_id}")
        async def get_code(code_id: str) -> Response:
            cart_id = self.codes.get(code_id)
            if cart_id is None:
                return error(404, "invalid_request_error", "code_not_found", "No such code.")
            code = self.payments[cart_id].code
            self._expire_if_due(code)
            return JSONResponse(code.view())

        @router.post("/codes/{code_id}/cancel")
        async def cancel_code(code_id: str) -> Response:
            cart_id = self.codes.get(code_id)
            if cart_id is None:
                return error(404, "invalid_request_error", "code_not_found", "No such code.")
            code = self.payments[cart_id].code
            self._expire_if_due(code)
            if code.status == "pending":
                self._end_code(code, "canceled")
            elif code.status != "canceled":
                return error(400, "invalid_request_error", "code_not_pending", f"The code is {code.status}.")
            return JSONResponse(code.view())

        # -------------------------------------------------------------- charges (LITE)

        @router.get("/charges")
        async def list_charges(request: Request) -> Response:
            charge_id = request.query_params.get("id")
            cart_id = request.query_params.get("cart_id")  # paymux extension
            limit = _int(request.query_params.get("limit", "100"))
            offset = _int(request.query_params.get("offset", "0"))
            if limit is None or not 1 <= limit <= 100 or offset is None:
                return error(400, "invalid_request_error", "invalid_parameter", "limit or offset is invalid.")
            found = [
                payment.charge
                for payment in self.payments.values()
                if payment.charge is not None
                and (charge_id is None or payment.charge.id == charge_id)
                and (cart_id is None or payment.charge.cart_id == cart_id)
            ]
            return listing(provider_path(request), [charge.view() for charge in found], limit, offset)

        @router.post("/charges/{charge_id}/capture")
        async def capture(charge_id: str) -> Response:
            charge = self._charge(charge_id)
            if charge is None:
                return error(404, "invalid_request_error", "charge_not_found", "No such charge.")
            if charge.refunded:
                return error(400, "invalid_request_error", "charge_already_refunded", "Already cancelled.")
            if charge.captured:
                return error(400, "invalid_request_error", "charge_already_captured", "Already captured.")
            if charge.amount == CAPTURE_DECLINE_AMOUNT:
                # The merchant learns it from this answer: no notification (it would race the answer).
                charge.refunded, charge.paid, charge.updated = True, False, int(time.time())
                return error(402, "payment_error", "capture_declined", "The payment could not be captured.")
            charge.captured, charge.updated = True, int(time.time())
            self._settled(LineKind.PAYMENT, charge, charge.amount)
            self._notify("charge.captured", charge.view())
            return JSONResponse(charge.view())

        @router.post("/charges/{charge_id}/refund")
        async def refund(charge_id: str, request: Request) -> Response:
            charge = self._charge(charge_id)
            if charge is None:
                return error(404, "invalid_request_error", "charge_not_found", "No such charge.")
            form = await self._form(request)
            if form is None:
                return error(400, "invalid_request_error", "invalid_body", "The body must be form-encoded.")
            if charge.refunded:
                return error(400, "invalid_request_error", "charge_already_refunded", "Already cancelled.")
            if not form:  # cancel: before capture nothing is sold, after it everything is refunded
                sold = charge.captured
                charge.refunded, charge.paid, charge.captured = True, False, False
                charge.updated = int(time.time())
                if sold:
                    self._settled(LineKind.REFUND, charge, charge.amount)
                self._notify("charge.refunded", charge.view())
                return JSONResponse(charge.view())
            items = _items(form)
            if items is None:
                return error(
                    400,
                    "invalid_request_error",
                    "invalid_items",
                    "item_id_N, item_name_N, item_quantity_N and item_unit_price_N are required.",
                )
            total = sum(item["quantity"] * item["unit_price"] for item in items)
            if not 0 < total < charge.amount:
                return error(
                    400,
                    "invalid_request_error",
                    "invalid_amount",
                    "The new amount must be below the current one.",
                )
            refunded = charge.amount - total
            charge.items, charge.amount, charge.updated = items, total, int(time.time())
            charge.amount_changes.append(total)
            if charge.captured:
                self._settled(LineKind.REFUND, charge, refunded)
            return JSONResponse(charge.view())

        return router

    def _control(self) -> APIRouter:
        router = APIRouter()

        @router.post("/_sandbox/payments/{cart_id}")
        async def play_customer(cart_id: str, outcome: OutcomeRequest) -> Response:
            payment = self.payments.get(cart_id)
            if payment is None:
                return JSONResponse({"error": "no such payment"}, status_code=404)
            self._expire_if_due(payment.code)
            if payment.code.status != "pending":
                return JSONResponse({"error": f"the code is already {payment.code.status}"}, status_code=409)
            match outcome.outcome:
                case "COMPLETED":
                    self._pay(payment)
                case "FAILED":
                    self._end_code(
                        payment.code, "failed", ("payment_failed", "The customer's payment failed.")
                    )
                case "EXPIRED":
                    self._end_code(payment.code, "expired", ("expired", "The code expired unpaid."))
                case "CANCELED":
                    self._end_code(payment.code, "canceled")
            return JSONResponse(
                {
                    "code": payment.code.view(),
                    "charge": payment.charge.view() if payment.charge is not None else None,
                }
            )

        return router


def _items(form: dict[str, str]) -> list[dict[str, Any]] | None:
    """LITE's item_id_N / item_name_N / item_quantity_N / item_unit_price_N, N = 1, 2, ...; None if malformed."""
    items: list[dict[str, Any]] = []
    for number in range(1, len(form) + 1):
        keys = [f"item_{part}_{number}" for part in ("id", "name", "quantity", "unit_price")]
        if not any(key in form for key in keys):
            break
        item_id, name, quantity, price = (form.get(key) for key in keys)
        count, unit_price = _int(quantity), _int(price)
        if not item_id or not name or count is None or count < 1 or unit_price is None:
            return None
        items.append({"id": item_id, "name": name, "quantity": count, "unit_price": unit_price})
    used = {
        f"item_{part}_{n}"
        for n in range(1, len(items) + 1)
        for part in ("id", "name", "quantity", "unit_price")
    }
    return items if items and set(form) == used else None
