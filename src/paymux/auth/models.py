from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from paymux.core.db import Base, JSONDocument, UTCDateTime


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


class User(Base):
    """A person using the portal: a role and a tenant scope (seed 003), an argon2 password hash."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)  # stored lower-cased
    password_hash: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(String(20))
    client_partner_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("client_partners.id"))
    merchant_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("merchants.id"), index=True)
    store_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("stores.id"))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RefreshToken(Base):
    """One refresh token of a login session, kept as its SHA-256. Every use replaces it with a new one of the same
    family; using a replaced one again revokes the family (someone else holds a copy)."""

    __tablename__ = "refresh_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    family_id: Mapped[str] = mapped_column(String(40), index=True)
    user_id: Mapped[str] = mapped_column(String(40), ForeignKey("users.id"), index=True)
    impersonated_by: Mapped[str | None] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(16))  # active, used, revoked
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SigningKey(Base):
    """A key paymux signs access tokens with. The newest active key signs; a retired key stays published in the
    JWKS until every token it signed has expired."""

    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(40), primary_key=True)
    algorithm: Mapped[str] = mapped_column(String(10))
    private_key_sealed: Mapped[str] = mapped_column(Text)
    public_jwk: Mapped[dict[str, str]] = mapped_column(JSONDocument)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Device(Base):
    """A SmartPOS terminal bound to one store (seed 003). It proves who it is with its EC P-256 key
    (OAuth2 private_key_jwt); paymux keeps only the public half. Its id is its OAuth2 client_id."""

    __tablename__ = "devices"
    __table_args__ = (
        # One live registration per serial number within a merchant; a revoked terminal may be registered
        # again. (Per merchant, so one tenant's registration neither blocks nor reveals another's.)
        Index(
            "uq_devices_live_serial",
            "merchant_id",
            "serial_number",
            unique=True,
            sqlite_where=text("revoked_at IS NULL"),
            postgresql_where=text("revoked_at IS NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    serial_number: Mapped[str] = mapped_column(String(64))
    client_partner_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("client_partners.id"))
    merchant_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("merchants.id"), index=True)
    store_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("stores.id"))
    public_jwk: Mapped[dict[str, str]] = mapped_column(JSONDocument)
    scopes: Mapped[list[str]] = mapped_column(JSONDocument)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SpentAssertion(Base):
    """The jti of a device's client assertion, kept until the assertion expires so it cannot be used twice."""

    __tablename__ = "spent_device_assertions"

    client_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    jti: Mapped[str] = mapped_column(String(200), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
