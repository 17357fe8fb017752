"""The keys access tokens are signed with (ES256, EC P-256), their rotation, and the JWKS that publishes them.

Private keys are sealed with the envelope cipher like every other secret. The newest active key signs. A rotated
key stops signing at once but stays published (and accepted) until every token it signed has expired, so callers
holding a JWKS copy keep verifying through a rotation. Verification takes the key from paymux's own table by the
token's `kid` and pins the algorithm to the key's: a token naming another algorithm, an unknown kid, or a key of
its own (`jwk`, `jku`, `x5u`) is refused.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import or_, select

from paymux.audit.service import AuditAction, AuditLog, AuditObject
from paymux.auth.errors import InvalidAccessToken
from paymux.auth.models import SigningKey
from paymux.core.clock import Clock
from paymux.core.crypto import EnvelopeCipher
from paymux.core.db import Database
from paymux.core.ids import new_id
from paymux.gateway.permissions import Operation, require
from paymux.gateway.principal import Principal

ALGORITHM = "ES256"
CACHE_SECONDS = 30.0  # how soon another process sees a rotation
CLOCK_SKEW_SECONDS = 5  # a token issued by a process whose clock runs slightly ahead


@dataclass(frozen=True, slots=True)
class _Key:
    kid: str
    private: ec.EllipticCurvePrivateKey | None  # None once retired: it only verifies
    public: ec.EllipticCurvePublicKey
    jwk: dict[str, str]


class SigningKeys:
    def __init__(
        self,
        db: Database,
        cipher: EnvelopeCipher,
        clock: Clock,
        audit: AuditLog,
        *,
        published_for: timedelta,
    ) -> None:
        self._db = db
        self._audit = audit
        self._cipher = cipher
        self._clock = clock
        self._published_for = published_for  # the longest lifetime of a token these keys sign
        self._cache: tuple[float, list[_Key]] | None = None

    @staticmethod
    def _context(kid: str) -> str:
        return f"signing_key:{kid}"

    async def rotate(self, actor: Principal | None = None) -> str:
        """A new signing key; the previous ones retire (still published until their tokens expire). `actor`
        None is paymux itself making the first key of an installation."""
        if actor is not None:
            require(actor, Operation.SIGNING_KEYS_ROTATE)
        private = ec.generate_private_key(ec.SECP256R1())
        kid = new_id("key")
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
        jwk.update({"kid": kid, "alg": ALGORITHM, "use": "sig"})
        pem = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        now = self._clock.now()
        async with self._db.unit_of_work() as session:
            for active in (
                await session.execute(
                    select(SigningKey).where(SigningKey.retired_at.is_(None)).with_for_update()
                )
            ).scalars():
                active.retired_at = now
            session.add(
                SigningKey(
                    kid=kid,
                    algorithm=ALGORITHM,
                    private_key_sealed=self._cipher.seal(pem, context=self._context(kid)),
                    public_jwk=jwk,
                    created_at=now,
                )
            )
            if actor is not None:
                self._audit.record(
                    session, actor, AuditAction.SIGNING_KEY_ROTATED, AuditObject("signing_key", kid)
                )
        self._cache = None
        return kid

    async def _keys(self) -> list[_Key]:
        """Active and still-published keys, newest first (cached briefly: keys change rarely)."""
        if self._cache is not None and time.monotonic() - self._cache[0] < CACHE_SECONDS:
            return self._cache[1]
        # A process that has not seen the rotation yet signs with the retired key for up to CACHE_SECONDS more.
        horizon = (
            self._clock.now() - self._published_for - timedelta(seconds=CACHE_SECONDS + CLOCK_SKEW_SECONDS)
        )
        async with self._db.reading() as session:
            rows = list(
                (
                    await session.execute(
                        select(SigningKey)
                        .where(or_(SigningKey.retired_at.is_(None), SigningKey.retired_at > horizon))
                        .order_by(SigningKey.created_at.desc(), SigningKey.kid.desc())
                    )
                ).scalars()
            )
        keys = []
        for row in rows:
            public = jwt.algorithms.ECAlgorithm.from_jwk(json.dumps(row.public_jwk))
            assert isinstance(public, ec.EllipticCurvePublicKey)  # noqa: S101 - paymux stores only EC keys
            private = None
            if row.retired_at is None:
                loaded = serialization.load_pem_private_key(
                    self._cipher.open(row.private_key_sealed, context=self._context(row.kid)), None
                )
                assert isinstance(loaded, ec.EllipticCurvePrivateKey)  # noqa: S101
                private = loaded
            keys.append(_Key(row.kid, private, public, dict(row.public_jwk)))
        self._cache = (time.monotonic(), keys)
        return keys

    async def jwks(self) -> dict[str, Any]:
        return {"keys": [key.jwk for key in await self._keys()]}

    async def sign(self, claims: dict[str, Any]) -> str:
        signer = next((key for key in await self._keys() if key.private is not None), None)
        if signer is None:
            await self.rotate()  # the first token of a fresh installation
            signer = next(key for key in await self._keys() if key.private is not None)
        assert signer.private is not None  # noqa: S101
        return jwt.encode(claims, signer.private, algorithm=ALGORITHM, headers={"kid": signer.kid})

    async def verify(self, token: str, *, issuer: str, audience: str, now: datetime) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidAccessToken(f"Not a JWT: {exc}") from None
        if header.get("alg") != ALGORITHM:
            raise InvalidAccessToken(f"Access tokens are signed with {ALGORITHM}.")
        if {"jwk", "jku", "x5u", "x5c"} & set(header):
            raise InvalidAccessToken("paymux verifies with its own keys only.")
        keys = {key.kid: key for key in await self._keys()}
        key = keys.get(str(header.get("kid")))
        if key is None:
            self._cache = None  # perhaps a key rotated in another process a moment ago
            key = {key.kid: key for key in await self._keys()}.get(str(header.get("kid")))
        if key is None:
            raise InvalidAccessToken("Unknown signing key (kid).")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.public,
                algorithms=[ALGORITHM],
                audience=audience,
                issuer=issuer,
                # Times are checked below against paymux's clock, not the library's.
                options={
                    "require": ["exp", "iat", "iss", "aud", "sub", "jti"],
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.PyJWTError as exc:
            raise InvalidAccessToken(f"The access token does not verify: {exc}") from None
        moment = now.timestamp()
        if not isinstance(claims["exp"], int | float) or claims["exp"] <= moment:
            raise InvalidAccessToken("The access token has expired.")
        if not isinstance(claims["iat"], int | float) or claims["iat"] > moment + CLOCK_SKEW_SECONDS:
            raise InvalidAccessToken("The access token is not valid yet.")
        if "nbf" in claims and (
            not isinstance(claims["nbf"], int | float) or claims["nbf"] > moment + CLOCK_SKEW_SECONDS
        ):
            raise InvalidAccessToken("The access token is not valid yet.")
        return claims
