"""The Rakuten Pay adapter: 楽天ペイ(オンライン決済 LITE版), with a paymux-defined QR flow in LITE's style.

| protocol call | Rakuten Pay |
|---|---|
| create_payment (qr_mpm) | POST /v1/codes (cart_id = the PaymentIntent id) — paymux extension |
| get_payment_status | GET /v1/charges?cart_id= (extension filter on LITE's list); an authorised charge is captured with POST /v1/charges/{id}/capture (LITE); no charge yet: GET /v1/codes/{id} (extension) |
| cancel_payment | POST /v1/codes/{id}/cancel (extension), then POST /v1/charges/{id}/refund (LITE) for a charge that slipped through |
| refund_payment | GET /v1/charges?id= then POST /v1/charges/{id}/refund (LITE): empty for the whole rest, else an amount change to one item priced at the new total |

Every request carries `Authorization: Basic Base64("<api_secret>:")`; POST bodies are form-encoded, answers JSON,
errors `{"errors": [{"type", "code", "message"}]}`. `/v1` becomes `/sandbox/v1` for `sandbox_private_` keys.

Credentials of a store's `rakuten` config: `api_secret` (LITE's secret key), and `api_key` (the public key, used
only by LITE's browser button) and `merchant_id` kept for reference. JPY only.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import httpx
import structlog

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
from paymux.providers.rakuten import signing, wire
from paymux.providers.rakuten.wire import Charge, ChargeState, Code

log = structlog.get_logger(__name__)

PRODUCTION_URL = "https://api.lite.checkout.rakuten.co.jp"
FORM = "application/x-www-form-urlencoded"
# The single item a partial refund leaves on the charge: LITE changes an amount by replacing the items.
REMAINDER_ITEM_ID = "paymux-remainder"
# Errors that mean "already done": the answer is re-read rather than trusted or raised.
CODE_NOT_PENDING = "code_not_pending"
ALREADY_CAPTURED = "charge_already_captured"


class RakutenPaymentError(ProviderRejected):
    """LITE's 402 `payment_error`: the request was valid, the payment was refused."""


class RakutenPayProvider:
    name = "rakuten"
    payment_methods = frozenset({PaymentMethodType.QR_MPM})
    signature_header = signing.SIGNATURE_HEADER

    def __init__(self, http: httpx.AsyncClient, clock: Clock) -> None:
        self._http = http
        self._clock = clock

    # ------------------------------------------------------------------ the protocol

    async def create_payment(
        self, credentials: ProviderCredentials, request: PaymentRequest
    ) -> ProviderPayment:
        if request.payment_method_type is not PaymentMethodType.QR_MPM:
            raise UnsupportedFlow(f"rakuten: {request.payment_method_type.value} is not supported")
        if request.currency != "JPY":
            raise UnsupportedFlow("rakuten: Rakuten Pay charges JPY only")
        form = {
            "cart_id": request.payment_intent_id,
            "amount": str(request.amount),
            "item_name": (request.description or request.payment_intent_id)[:255],
        }
        code = wire.parse_code(await self._call(credentials, "POST", "/codes", form=form))
        if code.status != "pending":
            return self._from_code(code)
        return ProviderPayment(
            status=ProviderPaymentStatus.REQUIRES_ACTION,
            provider_transaction_id=None,
            amount=code.amount,
            currency=code.currency,
            provider_reference=code.id,
            next_action={
                "type": "display_qr_code",
                "provider": self.name,
                "qr_payload": code.url,
                "url": code.url,
                "deeplink": None,
                "expires_at": (
                    datetime.fromtimestamp(code.expires_at, UTC).isoformat() if code.expires_at else None
                ),
            },
        )

    async def get_payment_status(
        self, credentials: ProviderCredentials, reference: PaymentReference
    ) -> ProviderPayment:
        charge = await self._charge_of_cart(credentials, reference.payment_intent_id)
        if charge is not None:
            return await self._from_charge(credentials, charge, reference)
        code = await self._code(credentials, reference)
        if code is None:
            raise ProviderRejected(
                f"rakuten: no code or charge for cart {reference.payment_intent_id}",
                provider_code="not_found",
            )
        return self._from_code(code)

    async def cancel_payment(self, credentials: ProviderCredentials, reference: PaymentReference) -> None:
        code = await self._code(credentials, reference)
        if code is not None and code.status == "pending":
            try:
                await self._call(credentials, "POST", f"/codes/{code.id}/cancel", form={})
            except ProviderRejected as exc:
                if exc.provider_code != CODE_NOT_PENDING:
                    raise
        # Cancelling the code stops new payments; this cancels one that was authorised in the meantime.
        charge = await self._charge_of_cart(credentials, reference.payment_intent_id)
        if charge is None:
            return
        match charge.state:
            case ChargeState.AUTHORIZED | ChargeState.UNPAID:
                wire.parse_charge(
                    await self._call(credentials, "POST", f"/charges/{charge.id}/refund", form={})
                )
            case ChargeState.CAPTURED:
                # Only paymux's status check captures, and it records the success: the intent is (about to be)
                # succeeded. Refund it then; cancelling here could leave a cancelled intent with money taken.
                raise ProviderRejected(
                    f"rakuten: charge {charge.id} is already captured; refund the payment instead",
                    provider_code=ALREADY_CAPTURED,
                )
            case ChargeState.CANCELLED:
                pass

    async def refund_payment(
        self, credentials: ProviderCredentials, request: RefundRequest
    ) -> ProviderRefund:
        charge_id = request.payment.provider_transaction_id
        if charge_id is None:
            raise ProviderRejected("rakuten: the payment has no charge id to refund")
        charges = wire.parse_list(
            await self._call(credentials, "GET", "/charges", query={"id": charge_id}), wire.parse_charge
        )
        if not charges:
            raise ProviderRejected(f"rakuten: no charge {charge_id}", provider_code="not_found")
        charge = charges[0]
        if charge.state is not ChargeState.CAPTURED:
            raise ProviderRejected(
                f"rakuten: charge {charge_id} is {charge.state.value}, not captured",
                provider_code=charge.state,
            )
        remainder = charge.amount - request.amount
        if remainder < 0:
            raise ProviderRejected(
                f"rakuten: charge {charge_id} holds {charge.amount} JPY, less than {request.amount}",
                provider_code="amount_too_large",
            )
        # LITE refunds by cancelling the charge (the whole rest) or by changing its amount to a new item total.
        form = {} if remainder == 0 else remainder_items(remainder)
        answer = await self._call(credentials, "POST", f"/charges/{charge_id}/refund", form=form)
        try:
            after = wire.parse_charge(answer)
            done = after.state is ChargeState.CANCELLED if remainder == 0 else after.amount == remainder
        except ProviderProtocolError:
            done = False
        if not done:
            # Rakuten accepted the request, but its answer does not show the refund: the outcome is unknown, so
            # the refund stays pending rather than being reported as failed.
            # (The answer is not logged: a LITE charge can carry the buyer's address.)
            log.error(
                "rakuten refund accepted with an unexpected answer", charge=charge_id, expected=remainder
            )
            return ProviderRefund(status=ProviderRefundStatus.PENDING, provider_refund_id=charge_id)
        return ProviderRefund(status=ProviderRefundStatus.SUCCEEDED, provider_refund_id=charge_id)

    async def get_refund_status(
        self, credentials: ProviderCredentials, request: RefundRequest
    ) -> ProviderRefund:
        """LITE refunds by setting the charge's amount: compare it with what this refund should have left."""
        charge_id = request.payment.provider_transaction_id
        if charge_id is None:
            raise ProviderRejected("rakuten: the payment has no charge id")
        charges = wire.parse_list(
            await self._call(credentials, "GET", "/charges", query={"id": charge_id}), wire.parse_charge
        )
        if not charges:
            raise ProviderRejected(f"rakuten: no charge {charge_id}", provider_code="not_found")
        charge = charges[0]
        before = request.payment.amount - request.previously_refunded
        expected = before - request.amount
        if charge.state is ChargeState.CANCELLED or charge.amount <= expected:
            return ProviderRefund(status=ProviderRefundStatus.SUCCEEDED, provider_refund_id=charge_id)
        if charge.amount >= before:
            return ProviderRefund(
                ProviderRefundStatus.FAILED,
                None,
                failure_code="refund_not_received",
                failure_message="Rakuten Pay's charge still holds the whole amount; nothing was refunded.",
            )
        return ProviderRefund(status=ProviderRefundStatus.PENDING, provider_refund_id=charge_id)

    # ------------------------------------------------------------------ webhooks

    def parse_notification(self, body: bytes) -> ProviderNotification | None:
        try:
            event = wire.parse_event(body)
        except ValueError as exc:
            raise WebhookNotUnderstood(str(exc)) from None
        if event.type in wire.IGNORED_EVENTS:
            return None
        if event.cart_id is None:
            raise WebhookNotUnderstood(f"a {event.type} event without data.object.cart_id")
        # Types paymux does not know yet still name a cart: the status check decides, so checking is safe.
        return ProviderNotification(
            payment_intent_id=event.cart_id, dedupe_key=event.id, provider_status=event.type
        )

    def verify_notification(self, body: bytes, signature: str | None, secret: str) -> bool:
        return signing.verify_notification(secret, body, signature)

    # ------------------------------------------------------------------ mapping

    async def _from_charge(
        self, credentials: ProviderCredentials, charge: Charge, reference: PaymentReference
    ) -> ProviderPayment:
        match charge.state:
            case ChargeState.AUTHORIZED:
                if (charge.amount, charge.currency) != (reference.amount, reference.currency):
                    raise ProviderProtocolError(
                        f"rakuten: charge {charge.id} is {charge.amount} {charge.currency}, the payment "
                        f"{reference.amount} {reference.currency}: not captured"
                    )
                # Authorised only: LITE sells nothing until the merchant captures, so paymux captures now.
                return await self._capture(credentials, charge, reference)
            case ChargeState.CAPTURED:
                status, failure = ProviderPaymentStatus.SUCCEEDED, None
            case ChargeState.CANCELLED:
                status, failure = ProviderPaymentStatus.CANCELLED, "cancelled"
            case ChargeState.UNPAID:
                status, failure = ProviderPaymentStatus.PROCESSING, None
        return ProviderPayment(
            status=status,
            provider_transaction_id=charge.id,
            amount=charge.amount,
            currency=charge.currency,
            provider_reference=reference.provider_reference,
            failure_code=failure,
            failure_message=f"Rakuten Pay cancelled charge {charge.id}" if failure else None,
        )

    async def _capture(
        self, credentials: ProviderCredentials, charge: Charge, reference: PaymentReference
    ) -> ProviderPayment:
        try:
            captured = wire.parse_charge(
                await self._call(credentials, "POST", f"/charges/{charge.id}/capture", form={})
            )
        except RakutenPaymentError as exc:  # 402: Rakuten refused to sell the authorised amount
            return ProviderPayment(
                status=ProviderPaymentStatus.FAILED,
                provider_transaction_id=charge.id,
                amount=charge.amount,
                currency=charge.currency,
                provider_reference=reference.provider_reference,
                failure_code="payment_failed",
                failure_message=str(exc)[:500],
            )
        except ProviderRejected as exc:
            if exc.provider_code == ALREADY_CAPTURED:  # another status check got there first
                again = await self._charge_of_cart(credentials, reference.payment_intent_id)
                if again is not None and again.state is not ChargeState.AUTHORIZED:
                    return await self._from_charge(credentials, again, reference)
            raise
        if captured.state is not ChargeState.CAPTURED:
            raise ProviderProtocolError(f"rakuten: capture left charge {charge.id} {captured.state.value}")
        return await self._from_charge(credentials, captured, reference)

    def _from_code(self, code: Code) -> ProviderPayment:
        status = wire.code_payment_status(code.status)
        failure = wire.code_failure_code(code.status)
        if status is ProviderPaymentStatus.CANCELLED:
            failure = "cancelled"
        message = None
        if failure is not None:
            message = f"Rakuten Pay code {code.id} is {code.status}"
            if code.failure_code:
                message += f": {code.failure_code}"
            if code.failure_message:
                message += f" ({code.failure_message})"
        return ProviderPayment(
            status=status,
            provider_transaction_id=code.charge,
            amount=code.amount,
            currency=code.currency,
            provider_reference=code.id,
            failure_code=failure,
            failure_message=message,
        )

    # ------------------------------------------------------------------ look-ups

    async def _charge_of_cart(self, credentials: ProviderCredentials, cart_id: str) -> Charge | None:
        """The cart's charge (the newest, should there be several); None before the customer has paid."""
        charges = wire.parse_list(
            await self._call(credentials, "GET", "/charges", query={"cart_id": cart_id}), wire.parse_charge
        )
        mine = [charge for charge in charges if charge.cart_id == cart_id]
        return max(mine, key=lambda charge: charge.created) if mine else None

    async def _code(self, credentials: ProviderCredentials, reference: PaymentReference) -> Code | None:
        """The payment's code: by id when paymux has it, else by cart_id (a create that timed out)."""
        if reference.provider_reference:
            return wire.parse_code(
                await self._call(credentials, "GET", f"/codes/{reference.provider_reference}")
            )
        codes = wire.parse_list(
            await self._call(credentials, "GET", "/codes", query={"cart_id": reference.payment_intent_id}),
            wire.parse_code,
        )
        mine = [code for code in codes if code.cart_id == reference.payment_intent_id]
        return mine[-1] if mine else None

    # ------------------------------------------------------------------ wire

    async def _call(
        self,
        credentials: ProviderCredentials,
        method: str,
        path: str,
        *,
        form: dict[str, str] | None = None,
        query: dict[str, str] | None = None,
    ) -> Any:
        secret = credentials.values.get("api_secret")
        if not secret:
            raise ProviderRejected("rakuten: the store's credentials lack api_secret")
        headers = {"Authorization": signing.authorization(secret), "Accept": "application/json"}
        content: bytes | None = None
        if form is not None:
            headers["Content-Type"] = FORM
            content = urlencode(form).encode("ascii")
        url = (credentials.base_url or PRODUCTION_URL).rstrip("/") + signing.api_base(secret) + path
        response = await send(
            self._http, self.name, method, url, params=query, content=content, headers=headers
        )
        try:
            data = response.json()
        except ValueError:
            raise ProviderProtocolError(f"rakuten: HTTP {response.status_code} without a JSON body") from None
        if response.status_code >= 400:
            error = wire.parse_error(data)
            if error is None:
                raise ProviderProtocolError(f"rakuten: HTTP {response.status_code} without an errors body")
            refused = RakutenPaymentError if response.status_code == 402 else ProviderRejected
            raise refused(
                f"rakuten: HTTP {response.status_code} {error.type}/{error.code}: {error.message}",
                provider_code=error.code or error.type,
            )
        return data

    def __repr__(self) -> str:
        return "RakutenPayProvider()"


def remainder_items(total: int) -> dict[str, str]:
    """LITE's amount change: the charge's items are replaced by these, and the amount becomes their total."""
    return {
        "item_id_1": REMAINDER_ITEM_ID,
        "item_name_1": "Remaining amount after refunds",
        "item_quantity_1": "1",
        "item_unit_price_1": str(total),
    }
