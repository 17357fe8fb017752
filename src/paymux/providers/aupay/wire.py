"""The objects, statuses and errors of "aupay v1", and their mapping onto the adapter protocol.

Every status is named; none is guessed. The protocol is paymux's (KDDI publishes no merchant API for au PAY);
its limits are au PAY's public ones, as aggregators document them (see docs/providers/aupay.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from paymux.providers.base import ProviderPaymentStatus, ProviderProtocolError, ProviderRefundStatus

# Patterns are used with fullmatch.
ORDER_ID = re.compile(r"[A-Za-z0-9_-]{1,40}")  # merchant_order_id and merchant_refund_id
MIN_AMOUNT, MAX_AMOUNT = 1, 300_000  # yen per transaction
CURRENCY = "JPY"
CODE_LIFETIME_SECONDS = 300  # a payment code's default `expires_in`
CODE_LIFETIME_RANGE = (60, 86_400)
DESCRIPTION_MAX = 255
CUSTOMER_CODE = re.compile(r"[0-9A-Za-z]{8,64}")

CHARGE_STATUSES = ("pending", "paid", "failed", "canceled", "expired")
REFUND_STATUSES = ("succeeded", "failed")
CHARGE_EVENTS = ("charge.paid", "charge.failed", "charge.canceled", "charge.expired")
REFUND_EVENTS = ("refund.succeeded", "refund.failed")

# Every error code of the protocol and the HTTP status it comes with.
ERRORS: dict[str, int] = {
    "invalid_parameter": 400,
    "authentication_failed": 401,
    "order_not_found": 404,
    "duplicate_order_id": 409,
    "already_canceled": 409,
    "limit_exceeded": 422,
    "insufficient_balance": 422,
    "code_expired": 422,
    "period_expired": 422,
    "refund_amount_exceeded": 422,
    "rate_limited": 429,
    "internal_error": 500,
}


@dataclass(frozen=True, slots=True)
class PaymentCode:
    payment_code_id: str
    qr_url: str
    app_url: str | None
    expires_at: datetime
    merchant_order_id: str
    amount: int
    currency: str


@dataclass(frozen=True, slots=True)
class Charge:
    id: str
    merchant_order_id: str
    amount: int
    amount_refunded: int
    currency: str
    status: str
    failure_code: str | None = None


@dataclass(frozen=True, slots=True)
class Refund:
    id: str
    merchant_refund_id: str
    amount: int
    status: str


def payment_status(value: str) -> ProviderPaymentStatus:
    match value:
        case "pending":  # the payment code waits for the customer
            return ProviderPaymentStatus.REQUIRES_ACTION
        case "paid":  # paid (refunds do not change it: they are paymux refunds)
            return ProviderPaymentStatus.SUCCEEDED
        case "failed" | "expired":  # declined, or the code lapsed unpaid
            return ProviderPaymentStatus.FAILED
        case "canceled":  # cancelled before payment, or reversed after it
            return ProviderPaymentStatus.CANCELLED
        case _:
            raise ProviderProtocolError(f"aupay: unknown charge status {value!r}")


def failure_code(status: str) -> str | None:
    return {"failed": "payment_failed", "expired": "expired"}.get(status)


def refund_status(value: str) -> ProviderRefundStatus:
    match value:
        case "succeeded":
            return ProviderRefundStatus.SUCCEEDED
        case "failed":
            return ProviderRefundStatus.FAILED
        case _:
            raise ProviderProtocolError(f"aupay: unknown refund status {value!r}")


def error_of(body: Any) -> tuple[str, str]:
    """(code, message) of an error answer `{"error": {"code", "message"}}`."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or not isinstance(error.get("code"), str):
        raise ProviderProtocolError("aupay: an error answer without error.code")
    message = error.get("message")
    return error["code"], message if isinstance(message, str) else ""


def parse_payment_code(data: Any) -> PaymentCode:
    body = _object(data, "payment code")
    app_url = body.get("app_url")
    if app_url is not None and not isinstance(app_url, str):
        raise ProviderProtocolError("aupay: app_url is not text")
    return PaymentCode(
        payment_code_id=_text(body, "payment_code_id"),
        qr_url=_text(body, "qr_url"),
        app_url=app_url,
        expires_at=parse_time(_text(body, "expires_at")),
        merchant_order_id=_text(body, "merchant_order_id"),
        amount=_int(body, "amount"),
        currency=_text(body, "currency"),
    )


def parse_charge(data: Any) -> Charge:
    body = _object(data, "charge")
    failure = body.get("failure_code")
    if failure is not None and not isinstance(failure, str):
        raise ProviderProtocolError("aupay: failure_code is not text")
    return Charge(
        id=_text(body, "id"),
        merchant_order_id=_text(body, "merchant_order_id"),
        amount=_int(body, "amount"),
        amount_refunded=_int(body, "amount_refunded"),
        currency=_text(body, "currency"),
        status=_text(body, "status"),
        failure_code=failure,
    )


def parse_refund(data: Any) -> Refund:
    body = _object(data, "refund")
    return Refund(
        id=_text(body, "id"),
        merchant_refund_id=_text(body, "merchant_refund_id"),
        amount=_int(body, "amount"),
        status=_text(body, "status"),
    )


def parse_time(value: str) -> datetime:
    """An RFC 3339 time with its offset (au PAY answers in JST, `+09:00`)."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ProviderProtocolError(f"aupay: {value!r} is not an RFC 3339 time") from None
    if moment.tzinfo is None:
        raise ProviderProtocolError(f"aupay: {value!r} has no UTC offset")
    return moment


def _object(data: Any, what: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ProviderProtocolError(f"aupay: expected a {what} object")
    return data


def _text(data: dict[str, Any], field: str) -> str:
    value = data.get(field)
    if not isinstance(value, str) or not value:
        raise ProviderProtocolError(f"aupay: the answer lacks {field}")
    return value


def _int(data: dict[str, Any], field: str) -> int:
    value = data.get(field)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProviderProtocolError(f"aupay: the answer lacks the integer {field}")
    return value
