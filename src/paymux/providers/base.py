"""The adapter protocol every provider implements, and the values that cross it.

Seed 004 names the QR provider interface CreateQR / GetPaymentStatus / CancelPayment / RefundPayment; here they
are `create_payment` (which creates the QR code, or charges, depending on the provider), `get_payment_status`,
`cancel_payment` and `refund_payment`, async and typed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable


class PaymentMethodType(StrEnum):
    QR_MPM = "qr_mpm"  # merchant-presented QR: the customer scans the code paymux shows
    QR_CPM = "qr_cpm"  # customer-presented QR: the POS scans the customer's code
    CREDIT_CARD = "credit_card"
    CASH = "cash"


class ProviderPaymentStatus(StrEnum):
    REQUIRES_ACTION = "requires_action"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ProviderRefundStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class ProviderCredentials:
    """What a store's provider config holds, decrypted for one call. Its repr never shows the values."""

    values: Mapping[str, str]
    base_url: str | None = None
    webhook_secret: str | None = None

    def __repr__(self) -> str:
        return f"ProviderCredentials(keys={sorted(self.values)!r}, base_url={self.base_url!r})"


@dataclass(frozen=True, slots=True)
class PaymentRequest:
    payment_intent_id: str  # the provider's merchant payment id / order id
    amount: int
    currency: str
    payment_method_type: PaymentMethodType
    description: str | None = None
    customer_code: str | None = None  # qr_cpm: the code the POS scanned
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PaymentReference:
    """Enough to find a payment again at the provider."""

    payment_intent_id: str
    provider_transaction_id: str | None
    amount: int
    currency: str
    provider_reference: str | None = None  # the provider's handle on the pending payment (PayPay's codeId)


@dataclass(frozen=True, slots=True)
class ProviderPayment:
    status: ProviderPaymentStatus
    provider_transaction_id: str | None
    amount: int
    currency: str
    next_action: Mapping[str, Any] | None = None
    provider_reference: str | None = None
    failure_code: str | None = None
    failure_message: str | None = None


@dataclass(frozen=True, slots=True)
class RefundRequest:
    refund_id: str  # paymux's transaction id, the provider's merchant refund id
    payment: PaymentReference
    amount: int
    reason: str | None = None
    previously_refunded: int = 0  # refunded before this one, for providers that only report totals


@dataclass(frozen=True, slots=True)
class ProviderRefund:
    status: ProviderRefundStatus
    provider_refund_id: str | None
    failure_code: str | None = None
    failure_message: str | None = None


class ProviderError(Exception):
    """The provider call did not give a usable answer."""

    code = "provider_error"


class ProviderTimeout(ProviderError):
    """No answer in time, or the connection dropped after sending: the outcome is unknown."""

    code = "provider_timeout"


class ProviderUnavailable(ProviderError):
    """The request never reached the provider (connection refused, DNS): nothing happened there."""

    code = "provider_unavailable"


class ProviderRejected(ProviderError):
    """The provider answered with an error for this request (bad credentials, invalid field, not found)."""

    code = "provider_rejected"

    def __init__(self, message: str, *, provider_code: str | None = None) -> None:
        super().__init__(message)
        self.provider_code = provider_code


class ProviderProtocolError(ProviderError):
    """The provider answered something this adapter does not understand (an unknown status, say)."""

    code = "provider_protocol_error"


class UnsupportedFlow(ProviderError):
    """This provider does not offer the requested operation."""

    code = "unsupported_flow"


@dataclass(frozen=True, slots=True)
class ProviderNotification:
    """What an inbound provider webhook is about; its claims are checked with a status call, never trusted."""

    payment_intent_id: str
    dedupe_key: str  # the same notification delivered twice has the same key
    provider_status: str | None = None


class WebhookNotUnderstood(ValueError):
    pass


class PaymentProvider(Protocol):
    """One provider's adapter. Implementations live in `paymux.providers.<name>`."""

    @property
    def name(self) -> str: ...

    @property
    def payment_methods(self) -> frozenset[PaymentMethodType]: ...

    async def create_payment(
        self, credentials: ProviderCredentials, request: PaymentRequest
    ) -> ProviderPayment:
        """Start a payment: create the QR code (qr_mpm), charge the scanned code (qr_cpm) or the card."""
        ...

    async def get_payment_status(
        self, credentials: ProviderCredentials, reference: PaymentReference
    ) -> ProviderPayment:
        """The provider's current view of the payment; the truth a webhook or a timeout is checked against."""
        ...

    async def cancel_payment(self, credentials: ProviderCredentials, reference: PaymentReference) -> None:
        """Stop a payment that has not completed (and reverse it where the provider allows)."""
        ...

    async def refund_payment(
        self, credentials: ProviderCredentials, request: RefundRequest
    ) -> ProviderRefund:
        """Refund all or part of a completed payment."""
        ...

    async def get_refund_status(
        self, credentials: ProviderCredentials, request: RefundRequest
    ) -> ProviderRefund:
        """The provider's view of a refund whose answer was lost (a timeout); FAILED if it never arrived."""
        ...


@runtime_checkable
class WebhookCapable(Protocol):
    """A provider that notifies paymux of payment changes at `POST /v1/webhooks/{name}`."""

    @property
    def name(self) -> str: ...

    @property
    def signature_header(self) -> str: ...

    def parse_notification(self, body: bytes) -> ProviderNotification | None:
        """Which payment a notification is about; None for notifications about something else (acknowledged and
        ignored); `WebhookNotUnderstood` when it is not one of the provider's at all."""
        ...

    def verify_notification(self, body: bytes, signature: str | None, secret: str) -> bool:
        """Whether the signature header was made over the body with the store's webhook secret."""
        ...
