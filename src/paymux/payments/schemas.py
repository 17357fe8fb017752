from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, model_validator

from paymux.core.inputs import InputModel
from paymux.core.money import Amount, CurrencyCode
from paymux.core.pagination import Page
from paymux.payments.models import PaymentIntent, Transaction
from paymux.payments.state import PaymentStatus
from paymux.providers.base import PaymentMethodType


class ProcessingMode(StrEnum):
    PGW_PROCESSED = "pgw_processed"  # paymux calls the provider
    EXTERNAL = "external"  # a terminal (card app) processed it; paymux records the result
    MANUAL = "manual"  # a cashier took it (cash, say); paymux records the result


class TransactionType(StrEnum):
    PAYMENT = "payment"
    CAPTURE = "capture"
    REFUND = "refund"


class TransactionStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


Printable = Annotated[str, Field(pattern=r"^[\x20-\x7e]+$")]
ProviderName = Annotated[str, Field(pattern=r"^[a-z0-9_]{1,32}$", examples=["test", "paypay"])]
Metadata = Annotated[
    dict[Annotated[str, Field(min_length=1, max_length=40)], Annotated[str, Field(max_length=500)]],
    Field(max_length=50, description="Up to 50 string pairs for the merchant's own use"),
]
StrictId = Annotated[int, Field(strict=True, gt=0, lt=2**53)]


class PaymentIntentCreate(InputModel):
    merchant_ref_id: Printable = Field(
        min_length=1, max_length=128, description="The merchant's reference, unique per merchant"
    )
    amount: Amount
    currency: CurrencyCode
    store_id: StrictId | None = Field(
        default=None, description="The store taking the payment; implied for store-scoped clients"
    )
    order_id: Printable | None = Field(default=None, max_length=128)
    payment_method_type: PaymentMethodType
    processing_mode: ProcessingMode = ProcessingMode.PGW_PROCESSED
    provider_name: ProviderName | None = None
    metadata: Metadata = Field(default_factory=dict)

    @model_validator(mode="after")
    def _cash_is_never_processed_by_a_provider(self) -> PaymentIntentCreate:
        if (
            self.payment_method_type is PaymentMethodType.CASH
            and self.processing_mode is ProcessingMode.PGW_PROCESSED
        ):
            raise ValueError("cash payments use processing_mode external or manual")
        if self.processing_mode is not ProcessingMode.PGW_PROCESSED and self.provider_name is not None:
            raise ValueError("provider_name applies to pgw_processed payments only")
        return self


class PaymentIntentConfirm(InputModel):
    provider_name: ProviderName | None = Field(
        default=None,
        description="Provider to use; default: the store's only active one for the payment method",
    )
    customer_code: Printable | None = Field(
        default=None, max_length=256, description="qr_cpm: the customer's code as scanned by the POS"
    )


class PaymentIntentCancel(InputModel):
    cancellation_reason: Printable | None = Field(default=None, max_length=500)


class PaymentIntentCapture(InputModel):
    """The result of a payment processed outside paymux (seed 003 card-app response)."""

    amount: Amount | None = Field(default=None, description="Captured amount; default the intent's amount")
    status: Literal["success", "declined", "error", "cancelled"] = "success"
    approval_code: Printable | None = Field(default=None, max_length=32)
    card_last_4: str | None = Field(default=None, pattern=r"^[0-9]{4}$")
    card_slip_number: Printable | None = Field(default=None, max_length=32)
    error_message: Printable | None = Field(default=None, max_length=500)


class RefundCreate(InputModel):
    amount: Amount | None = Field(
        default=None, description="Amount to refund; default all that is refundable"
    )
    reason: Printable | None = Field(default=None, max_length=500)


class PaymentIntentOut(BaseModel):
    object: Literal["payment_intent"] = "payment_intent"
    id: str = Field(examples=["pi_01JD4Q9V6W2N8X3Y5Z7A9B1C3D"])
    client_partner_id: int
    merchant_id: int
    store_id: int
    merchant_ref_id: str
    order_id: str | None
    amount: int
    currency: str
    amount_captured: int
    amount_refunded: int
    payment_method_type: PaymentMethodType
    processing_mode: ProcessingMode
    status: PaymentStatus
    payment_token: str | None = Field(
        default=None, description="Bearer token for the SDK; only in the response that created the intent"
    )
    payment_token_expires_at: datetime | None = None
    provider_name: str | None
    provider_transaction_id: str | None
    failure_code: str | None
    failure_message: str | None
    cancellation_reason: str | None
    next_action: dict[str, Any] | None
    metadata: dict[str, str]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(
        cls, intent: PaymentIntent, *, payment_token: str | None = None, expires_at: datetime | None = None
    ) -> PaymentIntentOut:
        return cls(
            id=intent.id,
            client_partner_id=intent.client_partner_id,
            merchant_id=intent.merchant_id,
            store_id=intent.store_id,
            merchant_ref_id=intent.merchant_ref_id,
            order_id=intent.order_id,
            amount=intent.amount,
            currency=intent.currency,
            amount_captured=intent.amount_captured,
            amount_refunded=intent.amount_refunded,
            payment_method_type=PaymentMethodType(intent.payment_method_type),
            processing_mode=ProcessingMode(intent.processing_mode),
            status=PaymentStatus(intent.status),
            payment_token=payment_token,
            payment_token_expires_at=expires_at,
            provider_name=intent.provider_name,
            provider_transaction_id=intent.provider_transaction_id,
            failure_code=intent.failure_code,
            failure_message=intent.failure_message,
            cancellation_reason=intent.cancellation_reason,
            next_action=intent.next_action,
            metadata=dict(intent.metadata_ or {}),
            created_at=intent.created_at,
            updated_at=intent.updated_at,
        )


class TransactionOut(BaseModel):
    object: Literal["transaction"] = "transaction"
    id: str
    payment_intent_id: str
    client_partner_id: int
    merchant_id: int
    store_id: int
    type: TransactionType
    status: TransactionStatus
    amount: int
    currency: str
    provider_name: str | None
    provider_transaction_id: str | None
    approval_code: str | None
    card_last_4: str | None
    card_slip_number: str | None
    failure_code: str | None
    failure_message: str | None
    reason: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, txn: Transaction) -> TransactionOut:
        return cls(
            id=txn.id,
            payment_intent_id=txn.payment_intent_id,
            client_partner_id=txn.client_partner_id,
            merchant_id=txn.merchant_id,
            store_id=txn.store_id,
            type=TransactionType(txn.type),
            status=TransactionStatus(txn.status),
            amount=txn.amount,
            currency=txn.currency,
            provider_name=txn.provider_name,
            provider_transaction_id=txn.provider_transaction_id,
            approval_code=txn.approval_code,
            card_last_4=txn.card_last_4,
            card_slip_number=txn.card_slip_number,
            failure_code=txn.failure_code,
            failure_message=txn.failure_message,
            reason=txn.reason,
            created_at=txn.created_at,
            updated_at=txn.updated_at,
        )


class PaymentIntentList(Page[PaymentIntentOut]):
    pass


class TransactionList(Page[TransactionOut]):
    pass


class IntentFilters(BaseModel):
    status: PaymentStatus | None = None
    store_id: int | None = None
    merchant_id: int | None = None
    merchant_ref_id: str | None = None
    created_gte: datetime | None = None
    created_lte: datetime | None = None
