"""API clients (HMAC) and payment tokens."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from paymux.auth.errors import InvalidPaymentToken, PaymentTokenConsumed, PaymentTokenExpired
from paymux.auth.models import ApiClient, PaymentToken
from paymux.core.clock import Clock
from paymux.core.crypto import EnvelopeCipher, sha256_hex
from paymux.core.db import Database
from paymux.core.ids import new_id
from paymux.core.kept import Kept

TOKEN_PREFIX = "tok_"  # noqa: S105 - an id prefix, not a secret
SECRET_PREFIX = "sk_"  # noqa: S105 - an id prefix, not a secret
CACHE_TTL = timedelta(seconds=5)


@dataclass(frozen=True, slots=True)
class IssuedClient:
    client: ApiClient
    secret: str


@dataclass(frozen=True, slots=True)
class VerifiedClient:
    client: ApiClient
    secret: str


class ApiClientService:
    def __init__(self, db: Database, cipher: EnvelopeCipher, clock: Clock) -> None:
        self._db = db
        self._cipher = cipher
        self._clock = clock
        self._kept: Kept[str, VerifiedClient] = Kept(CACHE_TTL, clock)

    @staticmethod
    def _context(client_id: str) -> str:
        return f"api_client:{client_id}"

    async def create(
        self,
        session: AsyncSession,
        *,
        name: str,
        client_partner_id: int,
        merchant_id: int | None = None,
        store_id: int | None = None,
    ) -> IssuedClient:
        """A new client with a fresh secret; the secret is returned here and sealed at rest."""
        if store_id is not None and merchant_id is None:
            raise ValueError("a store-scoped client also names its merchant")
        client_id = new_id("cli")
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        client = ApiClient(
            id=client_id,
            name=name,
            client_partner_id=client_partner_id,
            merchant_id=merchant_id,
            store_id=store_id,
            secret_sealed=self._cipher.seal_text(secret, context=self._context(client_id)),
            created_at=self._clock.now(),
        )
        session.add(client)
        await session.flush()
        return IssuedClient(client=client, secret=secret)

    async def find_active(self, client_id: str) -> VerifiedClient | None:
        """The client and its secret, for verifying a signature; None when unknown or revoked.

        Every signed call asks this, so an active client is kept for `CACHE_TTL` (a database read and an
        unsealing saved per call). A revocation or rotation here takes effect at once; one made by another
        process is seen within `CACHE_TTL`.
        """
        if len(client_id) > 40:
            return None
        kept = self._kept.get(client_id)
        if kept is not None:
            return kept
        read_at = self._kept.generation
        async with self._db.reading() as session:
            client = await session.get(ApiClient, client_id)
        if client is None or client.revoked_at is not None:
            return None
        verified = VerifiedClient(client=client, secret=self.reveal_secret(client))
        self._kept.keep(client_id, verified, read_at=read_at)
        return verified

    def forget(self, client_id: str) -> None:
        """Drop a cached client (its secret changed or it was revoked)."""
        self._kept.forget(client_id)

    def reseal(self, client: ApiClient) -> str:
        """Give the client a new secret (the old one stops verifying); returns the new secret. The caller forgets
        the cached client once the change is committed."""
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        client.secret_sealed = self._cipher.seal_text(secret, context=self._context(client.id))
        return secret

    def reveal_secret(self, client: ApiClient) -> str:
        return self._cipher.open_text(client.secret_sealed, context=self._context(client.id))

    async def find_by_name(self, session: AsyncSession, name: str, merchant_id: int) -> ApiClient | None:
        statement = select(ApiClient).where(
            ApiClient.name == name, ApiClient.merchant_id == merchant_id, ApiClient.revoked_at.is_(None)
        )
        return (await session.execute(statement.limit(1))).scalar_one_or_none()


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    expires_at: datetime


class PaymentTokenService:
    """One-time bearer tokens for one payment intent (seed 003): 5 minutes, consumed by confirm or cancel."""

    def __init__(self, db: Database, clock: Clock, ttl: timedelta) -> None:
        self._db = db
        self._clock = clock
        self._ttl = ttl

    def new_token(
        self, *, payment_intent_id: str, client_partner_id: int, merchant_id: int, store_id: int
    ) -> tuple[IssuedToken, PaymentToken]:
        """A new token and its record, for the caller to insert in its unit of work."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = self._clock.now()
        record = PaymentToken(
            token_hash=sha256_hex(token),
            payment_intent_id=payment_intent_id,
            client_partner_id=client_partner_id,
            merchant_id=merchant_id,
            store_id=store_id,
            created_at=now,
            expires_at=now + self._ttl,
        )
        return IssuedToken(token=token, expires_at=record.expires_at), record

    async def resolve(self, token: str) -> PaymentToken:
        """The live record of a presented token; raises when unknown or expired."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > 100:
            raise InvalidPaymentToken("The bearer credential is not a paymux payment token.")
        async with self._db.reading() as session:
            record = await session.get(PaymentToken, sha256_hex(token))
        if record is None:
            raise InvalidPaymentToken("The payment token is not known.")
        if record.expires_at <= self._clock.now():
            raise PaymentTokenExpired("Ask the merchant for a new payment token.")
        return record

    async def consume(self, session: AsyncSession, token_hash: str) -> None:
        """Spend the token inside the caller's unit of work; only one concurrent spender wins."""
        result = await session.execute(
            update(PaymentToken)
            .where(PaymentToken.token_hash == token_hash, PaymentToken.consumed_at.is_(None))
            .values(consumed_at=self._clock.now())
        )
        if getattr(result, "rowcount", 0) != 1:
            raise PaymentTokenConsumed("This payment token has already confirmed or cancelled its payment.")
