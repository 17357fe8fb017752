"""Rakuten Pay LITE's objects, parsed and mapped onto the adapter protocol. Every state is named; none is guessed.

A LITE Charge has no status of its own (`status` is always "succeeded"): its state is in three booleans, `paid`
(authorised, 仮売上), `captured` (captured, 実売上) and `refunded` (cancelled, キャンセル済み). A Code (the QR
code, a paymux-defined extension) has a `status`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from paymux.providers.base import ProviderPaymentStatus, ProviderProtocolError

T = TypeVar("T")

CHARGE_STATUS = "succeeded"  # LITE: 固定値
CODE_STATUSES = ("pending", "paid", "failed", "expired", "canceled")
# Notifications about one payment: each makes paymux check the payment's status.
PAYMENT_EVENTS = frozenset(
    {"charge.succeeded", "charge.captured", "charge.refunded", "code.failed", "code.expired", "code.canceled"}
)
# LITE's own events that say nothing about a payment's outcome: acknowledged and ignored.
IGNORED_EVENTS = frozenset({"ping", "charge.check"})


class ChargeState(StrEnum):
    AUTHORIZED = "authorized"  # paid, not captured: the merchant must capture
    CAPTURED = "captured"
    CANCELLED = "cancelled"  # refunded: cancelled (before capture) or refunded in full (after)
    UNPAID = "unpaid"  # on record, not authorised


@dataclass(frozen=True, slots=True)
class Charge:
    id: str
    cart_id: str
    amount: int
    currency: str  # ISO, upper case: LITE writes "jpy"
    paid: bool
    captured: bool
    refunded: bool
    created: int

    @property
    def state(self) -> ChargeState:
        match (self.paid, self.captured, self.refunded):
            case (_, _, True):
                return ChargeState.CANCELLED
            case (True, True, False):
                return ChargeState.CAPTURED
            case (True, False, False):
                return ChargeState.AUTHORIZED
            case (False, False, False):
                return ChargeState.UNPAID
            case _:
                raise ProviderProtocolError(f"rakuten: charge {self.id} is captured but not paid")


@dataclass(frozen=True, slots=True)
class Code:
    id: str
    cart_id: str
    amount: int
    currency: str
    status: str
    url: str
    expires_at: int | None
    charge: str | None
    failure_code: str | None
    failure_message: str | None


@dataclass(frozen=True, slots=True)
class ApiError:
    type: str
    code: str | None
    message: str


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    type: str
    cart_id: str | None


def code_payment_status(status: str) -> ProviderPaymentStatus:
    match status:
        case "pending":  # the code waits for the customer
            return ProviderPaymentStatus.REQUIRES_ACTION
        case "paid":  # the customer paid; the charge (listed by cart_id) is what counts
            return ProviderPaymentStatus.PROCESSING
        case "failed" | "expired":  # declined, or the code lapsed unpaid
            return ProviderPaymentStatus.FAILED
        case "canceled":
            return ProviderPaymentStatus.CANCELLED
        case _:
            raise ProviderProtocolError(f"rakuten: unknown code status {status!r}")


def code_failure_code(status: str) -> str | None:
    return {"failed": "payment_failed", "expired": "expired"}.get(status)


# ---------------------------------------------------------------------- parsing


def _field(data: dict[str, Any], name: str, kind: type[T], what: str) -> T:
    value = data.get(name)
    # bool is an int in Python: an amount of `true` is not an amount.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ProviderProtocolError(f"rakuten: {what} without a valid {name}")
    return value


def _optional_text(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    return value if isinstance(value, str) else None


def _currency(data: dict[str, Any], what: str) -> str:
    value = _field(data, "currency", str, what)
    if len(value) != 3 or not value.isalpha():
        raise ProviderProtocolError(f"rakuten: {what} with currency {value!r}")
    return value.upper()


def parse_charge(data: Any) -> Charge:
    if not isinstance(data, dict) or data.get("object") != "charge":
        raise ProviderProtocolError("rakuten: expected a charge object")
    status = data.get("status")
    if status != CHARGE_STATUS:
        raise ProviderProtocolError(f"rakuten: unknown charge status {status!r}")
    created = data.get("created")
    return Charge(
        id=_field(data, "id", str, "a charge"),
        cart_id=_field(data, "cart_id", str, "a charge"),
        amount=_field(data, "amount", int, "a charge"),
        currency=_currency(data, "a charge"),
        paid=_field(data, "paid", bool, "a charge"),
        captured=_field(data, "captured", bool, "a charge"),
        refunded=_field(data, "refunded", bool, "a charge"),
        created=created if isinstance(created, int) and not isinstance(created, bool) else 0,
    )


def parse_code(data: Any) -> Code:
    if not isinstance(data, dict) or data.get("object") != "code":
        raise ProviderProtocolError("rakuten: expected a code object")
    expires_at = data.get("expires_at")
    return Code(
        id=_field(data, "id", str, "a code"),
        cart_id=_field(data, "cart_id", str, "a code"),
        amount=_field(data, "amount", int, "a code"),
        currency=_currency(data, "a code"),
        status=_field(data, "status", str, "a code"),
        url=_field(data, "url", str, "a code"),
        expires_at=expires_at if isinstance(expires_at, int) and not isinstance(expires_at, bool) else None,
        charge=_optional_text(data, "charge"),
        failure_code=_optional_text(data, "failure_code"),
        failure_message=_optional_text(data, "failure_message"),
    )


def parse_list(data: Any, item: Callable[[Any], T]) -> list[T]:
    """LITE's list object: `{"object": "list", "data": [...]}`; an empty `data` means nothing was found."""
    if not isinstance(data, dict) or data.get("object") != "list" or not isinstance(data.get("data"), list):
        raise ProviderProtocolError("rakuten: expected a list object")
    return [item(entry) for entry in data["data"]]


def parse_error(data: Any) -> ApiError | None:
    """The first of LITE's `{"errors": [{"type", "code", "message"}]}`; None when the body is not one."""
    if not isinstance(data, dict) or not isinstance(data.get("errors"), list) or not data["errors"]:
        return None
    first = data["errors"][0]
    if not isinstance(first, dict) or not isinstance(first.get("type"), str):
        return None
    return ApiError(
        type=first["type"], code=_optional_text(first, "code"), message=_optional_text(first, "message") or ""
    )


def parse_event(body: bytes) -> Event:
    """A LITE Event: `{"object": "event", "id": "evt_...", "type", "data": {"object": {...}}, ...}`."""
    try:
        payload = json.loads(body)
    except ValueError:
        raise ValueError("not JSON") from None
    if (
        not isinstance(payload, dict)
        or payload.get("object") != "event"
        or not isinstance(payload.get("id"), str)
        or not isinstance(payload.get("type"), str)
    ):
        raise ValueError("not a Rakuten Pay LITE event")
    data = payload.get("data")
    subject = data.get("object") if isinstance(data, dict) else None
    cart_id = subject.get("cart_id") if isinstance(subject, dict) else None
    return Event(
        id=payload["id"], type=payload["type"], cart_id=cart_id if isinstance(cart_id, str) else None
    )
