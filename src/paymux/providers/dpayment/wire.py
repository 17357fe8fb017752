"""dpay v1's statuses, codes and envelope, mapped onto the adapter protocol. Every status is named; none is guessed."""

from __future__ import annotations

from typing import Any

from paymux.providers.base import ProviderPaymentStatus, ProviderProtocolError, ProviderRefundStatus

PAYMENT_STATUSES = ("CREATED", "COMPLETED", "FAILED", "CANCELED", "EXPIRED")
REFUND_STATUSES = ("REFUND_PENDING", "REFUNDED", "REFUND_FAILED")
NOTIFICATION_TYPES = (
    "PAYMENT_COMPLETED",
    "PAYMENT_FAILED",
    "PAYMENT_CANCELED",
    "PAYMENT_EXPIRED",
    "REFUND_COMPLETED",
    "REFUND_FAILED",
)
SUCCESS = "SUCCESS"
# 422 answers to a customer-presented charge that carry the FAILED payment: a decline, not a bad request.
DECLINE_CODES = frozenset({"INSUFFICIENT_BALANCE", "CODE_EXPIRED"})
# HTTP status of each result code; the sandbox answers with these, the adapter reads the code.
HTTP_STATUS = {
    "SUCCESS": 200,
    "INVALID_PARAMS": 400,
    "UNAUTHORIZED": 401,
    "ORDER_NOT_FOUND": 404,
    "CODE_NOT_FOUND": 404,
    "DUPLICATE_MERCHANT_PAYMENT_ID": 409,
    "ALREADY_CANCELED": 409,
    "CODE_EXPIRED": 422,
    "INSUFFICIENT_BALANCE": 422,
    "CANCEL_PERIOD_EXPIRED": 422,
    "REFUND_AMOUNT_EXCEEDED": 422,
    "REFUND_PERIOD_EXPIRED": 422,
    "RATE_LIMIT": 429,
    "INTERNAL_ERROR": 500,
    "MAINTENANCE": 503,
}


def payment_status(value: str) -> ProviderPaymentStatus:
    match value:
        case "CREATED":  # the code waits for the customer
            return ProviderPaymentStatus.REQUIRES_ACTION
        case "COMPLETED":  # paid (refunds are listed on the payment and tracked as paymux refunds)
            return ProviderPaymentStatus.SUCCEEDED
        case "FAILED" | "EXPIRED":  # declined, or the code lapsed unpaid
            return ProviderPaymentStatus.FAILED
        case "CANCELED":  # stopped by the merchant or the customer, or reversed
            return ProviderPaymentStatus.CANCELLED
        case _:
            raise ProviderProtocolError(f"dpayment: unknown payment status {value!r}")


def refund_status(value: str) -> ProviderRefundStatus:
    match value:
        case "REFUND_PENDING":
            return ProviderRefundStatus.PENDING
        case "REFUNDED":
            return ProviderRefundStatus.SUCCEEDED
        case "REFUND_FAILED":
            return ProviderRefundStatus.FAILED
        case _:
            raise ProviderProtocolError(f"dpayment: unknown refund status {value!r}")


def failure_code(status: str) -> str | None:
    return {"FAILED": "payment_failed", "EXPIRED": "expired"}.get(status)


def result_info(envelope: Any) -> tuple[str, str]:
    """The `resultInfo.code` and `.message` of a dpay answer ("SUCCESS", "UNAUTHORIZED", ...)."""
    if not isinstance(envelope, dict) or not isinstance(envelope.get("resultInfo"), dict):
        raise ProviderProtocolError("dpayment: an answer without resultInfo")
    info = envelope["resultInfo"]
    code = info.get("code")
    if not isinstance(code, str) or not code:
        raise ProviderProtocolError("dpayment: resultInfo without a code")
    message = info.get("message")
    return code, message if isinstance(message, str) and message else code
