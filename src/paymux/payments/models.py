from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from paymux.core.db import Base, JSONDocument, UTCDateTime


class PaymentIntent(Base):
    __tablename__ = "payment_intents"
    __table_args__ = (
        UniqueConstraint("merchant_id", "merchant_ref_id"),
        Index("ix_payment_intents_merchant_id_id", "merchant_id", "id"),
        Index("ix_payment_intents_client_partner_id_id", "client_partner_id", "id"),
        Index("ix_payment_intents_provider_transaction_id", "provider_name", "provider_transaction_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    client_partner_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("client_partners.id"))
    merchant_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("merchants.id"))
    store_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("stores.id"), index=True)
    merchant_ref_id: Mapped[str] = mapped_column(String(128))
    order_id: Mapped[str | None] = mapped_column(String(128))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    amount_captured: Mapped[int] = mapped_column(BigInteger, default=0)
    amount_refunded: Mapped[int] = mapped_column(BigInteger, default=0)
    payment_method_type: Mapped[str] = mapped_column(String(20))
    processing_mode: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(32))
    provider_name: Mapped[str | None] = mapped_column(String(32))
    provider_transaction_id: Mapped[str | None] = mapped_column(String(128))
    provider_reference: Mapped[str | None] = mapped_column(String(128))
    failure_code: Mapped[str | None] = mapped_column(String(64))
    failure_message: Mapped[str | None] = mapped_column(String(500))
    cancellation_reason: Mapped[str | None] = mapped_column(String(500))
    next_action: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONDocument, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class PaymentIntentStatusChange(Base):
    """The history of an intent: one row per transition, written with it."""

    __tablename__ = "payment_intent_status_changes"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    payment_intent_id: Mapped[str] = mapped_column(String(40), ForeignKey("payment_intents.id"), index=True)
    merchant_id: Mapped[int] = mapped_column(BigInteger)
    from_status: Mapped[str | None] = mapped_column(String(32))
    to_status: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Transaction(Base):
    """A money movement under an intent: the provider payment, an external capture, or a refund."""

    __tablename__ = "transactions"
    __table_args__ = (
        Index("ix_transactions_provider_transaction_id", "provider_name", "provider_transaction_id"),
        Index("ix_transactions_provider_settled", "provider_name", "status", "updated_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    payment_intent_id: Mapped[str] = mapped_column(String(40), ForeignKey("payment_intents.id"), index=True)
    client_partner_id: Mapped[int] = mapped_column(BigInteger)
    merchant_id: Mapped[int] = mapped_column(BigInteger, index=True)
    store_id: Mapped[int] = mapped_column(BigInteger)
    type: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    provider_name: Mapped[str | None] = mapped_column(String(32))
    provider_transaction_id: Mapped[str | None] = mapped_column(String(128))
    approval_code: Mapped[str | None] = mapped_column(String(32))
    card_last_4: Mapped[str | None] = mapped_column(String(4))
    card_slip_number: Mapped[str | None] = mapped_column(String(32))
    failure_code: Mapped[str | None] = mapped_column(String(64))
    failure_message: Mapped[str | None] = mapped_column(String(500))
    reason: Mapped[str | None] = mapped_column(String(500))
    # A pending payment is checked with the provider on a schedule (webhooks may never come).
    next_check_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    check_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
