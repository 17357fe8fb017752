from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from paymux.core.db import Base, UTCDateTime


class ApiClient(Base):
    """A server that signs its calls with HMAC-SHA256; scoped to a partner, a merchant or a store."""

    __tablename__ = "api_clients"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    client_partner_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("client_partners.id"), index=True)
    merchant_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("merchants.id"))
    store_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("stores.id"))
    secret_sealed: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class PaymentToken(Base):
    """A short-lived bearer credential for one payment intent, kept as its SHA-256 only."""

    __tablename__ = "payment_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    payment_intent_id: Mapped[str] = mapped_column(String(40), index=True)
    client_partner_id: Mapped[int] = mapped_column(BigInteger)
    merchant_id: Mapped[int] = mapped_column(BigInteger)
    store_id: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    consumed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
