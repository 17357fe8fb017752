from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from paymux.core.db import Base, JSONDocument, UTCDateTime


class ClientPartner(Base):
    __tablename__ = "client_partners"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Merchant(Base):
    __tablename__ = "merchants"
    __table_args__ = (UniqueConstraint("client_partner_id", "merchant_code"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    client_partner_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("client_partners.id"), index=True)
    merchant_code: Mapped[str] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(200))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Store(Base):
    __tablename__ = "stores"
    __table_args__ = (UniqueConstraint("merchant_id", "store_code"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    merchant_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("merchants.id"), index=True)
    client_partner_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("client_partners.id"))
    store_code: Mapped[str] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(200))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    # [{"currency": "JPY", "percent_bps": 325, "fixed_amount": 0}, ...]: the fee charged on its payments.
    fee_rules: Mapped[list[dict[str, object]]] = mapped_column(JSONDocument, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class StoreProviderConfig(Base):
    """How one store reaches one provider. Credentials and webhook secret are sealed (envelope encryption)."""

    __tablename__ = "store_provider_configs"
    __table_args__ = (UniqueConstraint("store_id", "provider_code"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    store_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("stores.id"))
    merchant_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("merchants.id"), index=True)
    client_partner_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("client_partners.id"))
    provider_code: Mapped[str] = mapped_column(String(32))
    credentials_sealed: Mapped[str] = mapped_column(Text)
    webhook_secret_sealed: Mapped[str | None] = mapped_column(Text)
    base_url: Mapped[str | None] = mapped_column(String(500))
    options: Mapped[dict[str, str]] = mapped_column(JSONDocument, default=dict)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
