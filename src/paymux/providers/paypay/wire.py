"""PayPay's statuses and envelope, mapped onto the adapter protocol. Every status is named; none is guessed."""

from __future__ import annotations

from typing import Any

from paymux.providers.base import ProviderPaymentStatus, ProviderProtocolError, ProviderRefundStatus

PAYMENT_STATUSES = (
    "CREATED",
    "AUTHORIZED",
    "REAUTHORIZING",
    "COMPLETED",
    "REFUNDED",
    "FAILED",
    "CANCELED",
    "EXPIRED",
)
REFUND_STATUSES = ("CREATED", "REFUNDED", "FAILED")


def payment_status(value: str) -> ProviderPaymentStatus:
    match value:
        case "CREATED":  # the QR code waits for the customer
            return ProviderPaymentStatus.REQUIRES_ACTION
        case "AUTHORIZED" | "REAUTHORIZING":  # authorised, not yet captured
            return ProviderPaymentStatus.PROCESSING
        case "COMPLETED" | "REFUNDED":  # paid (refunds are tracked as paymux refunds)
            return ProviderPaymentStatus.SUCCEEDED
        case "FAILED" | "EXPIRED":  # declined, or the QR code expired unpaid
            return ProviderPaymentStatus.FAILED
        case "CANCELED":
            return ProviderPaymentStatus.CANCELLED
        case _:
            raise ProviderProtocolError(f"paypay: unknown payment status {value!r}")


def refund_status(value: str) -> ProviderRefundStatus:
    match value:
        case "CREATED":
            return ProviderRefundStatus.PENDING
        case "REFUNDED":
            return ProviderRefundStatus.SUCCEEDED
        case "FAILED":
            return ProviderRefundStatus.FAILED
        case _:
            raise ProviderProtocolError(f"paypay: unknown refund status {value!r}")


def failure_code(status: str) -> str | None:
    return {"FAILED": "payment_failed", "EXPIRED": "expired"}.get(status)


def result_code(envelope: Any) -> str:
    """The `resultInfo.code` of a PayPay answer ("SUCCESS", "UNAUTHORIZED", ...)."""
    if not isinstance(envelope, dict) or not isinstance(envelope.get("resultInfo"), dict):
        raise ProviderProtocolError("paypay: an answer without resultInfo")
    code = envelope["resultInfo"].get("code")
    if not isinstance(code, str):
        raise ProviderProtocolError("paypay: resultInfo without a code")
    return code
