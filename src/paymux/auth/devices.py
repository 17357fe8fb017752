"""POS devices (seed 003, "SmartPOS Device -> Backend"): registration, and the OAuth2 token endpoint that trades a
device's signed client assertion (RFC 7523 private_key_jwt) for a 90-second access token.

A device is registered with its EC P-256 public key; it signs each assertion with the private half, which never
leaves the terminal. An assertion names the device as `iss` and `sub`, the token endpoint as `aud`, expires at
most five minutes out, and carries a `jti` that paymux keeps until then, so an assertion works once.

Failures that leave the device unproven (unknown or revoked client, bad signature, another algorithm) are
`invalid_client`; a proven device's assertion that cannot be used (expired, too long-lived, another audience,
replayed) is `invalid_grant`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from paymux.audit.service import AuditAction, AuditLog, AuditObject
from paymux.auth.errors import (
    InvalidAccessToken,
    InvalidClient,
    InvalidGrant,
    InvalidScope,
    OAuthError,
    UnsupportedGrantType,
)
from paymux.auth.keys import CLOCK_SKEW_SECONDS, SigningKeys
from paymux.auth.models import Device, SpentAssertion
from paymux.core.clock import Clock
from paymux.core.db import Database
from paymux.core.errors import Conflict, NotFound, Unprocessable
from paymux.core.ids import new_id
from paymux.core.pagination import fetch_page
from paymux.gateway.permissions import DeviceScope, Operation, require
from paymux.gateway.principal import Principal
from paymux.tenants.errors import TenantNotInScope
from paymux.tenants.models import Store

ISSUER = "svc-portal-devices"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TOKEN_PATH = "/auth/device/token"  # noqa: S105 - a path
ACCESS_TOKEN_TTL = timedelta(seconds=90)  # seed 003: 60 to 120 seconds
MAX_ASSERTION_LIFETIME = timedelta(minutes=5)
ASSERTION_ALGORITHM = "ES256"
CLIENT_ID = re.compile(r"dev_[0-9A-Z]{26}")


class DeviceNotFound(NotFound):
    code = "device_not_found"
    title = "No such device"


class DeviceExists(Conflict):
    code = "device_exists"
    title = "A live device has this serial number"


class InvalidDeviceKey(Unprocessable):
    code = "invalid_device_key"
    title = "The device key is not an EC P-256 public JWK"


class InvalidDeviceScopes(Unprocessable):
    code = "invalid_device_scopes"
    title = "Unknown device scopes"


@dataclass(frozen=True, slots=True)
class DeviceToken:
    access_token: str
    expires_in: int
    scope: list[str]


def public_jwk(jwk: dict[str, Any]) -> dict[str, str]:
    """The device's key as paymux stores it: an EC P-256 public JWK, with nothing private in it."""
    if not isinstance(jwk, dict):
        raise InvalidDeviceKey("Send the key as a JSON object (a JWK).")
    if "d" in jwk:
        raise InvalidDeviceKey("This JWK holds a private key; register the public half only.")
    if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
        raise InvalidDeviceKey('Devices use EC P-256 keys: "kty": "EC", "crv": "P-256".')
    try:
        key = jwt.algorithms.ECAlgorithm.from_jwk(json.dumps(jwk))
    except (jwt.InvalidKeyError, ValueError, TypeError) as exc:
        raise InvalidDeviceKey(f"The JWK is not a valid EC key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise InvalidDeviceKey("The JWK is not an EC P-256 public key.")
    return {"kty": "EC", "crv": "P-256", "x": str(jwk["x"]), "y": str(jwk["y"])}


def checked_scopes(scopes: Sequence[str]) -> list[str]:
    known = {str(scope) for scope in DeviceScope}
    wanted = sorted({scope.strip() for scope in scopes if scope.strip()})
    unknown = [scope for scope in wanted if scope not in known]
    if unknown or not wanted:
        raise InvalidDeviceScopes(
            f"Scopes are some of {', '.join(sorted(known))}"
            + (f"; unknown: {', '.join(unknown)}." if unknown else "; give at least one.")
        )
    return wanted


class DeviceService:
    def __init__(
        self, db: Database, clock: Clock, keys: SigningKeys, audit: AuditLog, *, audience: str
    ) -> None:
        self._db = db
        self._clock = clock
        self._keys = keys
        self._audit = audit
        self._audience = audience

    # ------------------------------------------------------------------ registry

    async def register(
        self,
        principal: Principal,
        *,
        store_id: int,
        serial_number: str,
        jwk: dict[str, Any],
        scopes: Sequence[str],
    ) -> Device:
        require(principal, Operation.DEVICES_MANAGE)
        key = public_jwk(jwk)
        granted = checked_scopes(scopes)
        serial = serial_number.strip()
        if not serial or len(serial) > 64 or not serial.isprintable():
            raise Unprocessable("A serial number is 1 to 64 printable characters.")
        try:
            async with self._db.unit_of_work() as session:
                store = await session.get(Store, store_id)
                if store is None or not principal.sees(
                    client_partner_id=store.client_partner_id,
                    merchant_id=store.merchant_id,
                    store_id=store.id,
                ):
                    raise TenantNotInScope(f"No store {store_id} in your scope.")
                live = await session.execute(
                    select(Device.id).where(
                        Device.merchant_id == store.merchant_id,
                        Device.serial_number == serial,
                        Device.revoked_at.is_(None),
                    )
                )
                if live.first() is not None:
                    raise DeviceExists(f"Serial {serial} is registered; revoke that device first.")
                device = Device(
                    id=new_id("dev"),
                    serial_number=serial,
                    client_partner_id=store.client_partner_id,
                    merchant_id=store.merchant_id,
                    store_id=store.id,
                    public_jwk=key,
                    scopes=granted,
                    created_at=self._clock.now(),
                )
                session.add(device)
                self._audit.record(
                    session,
                    principal,
                    AuditAction.DEVICE_REGISTERED,
                    _subject(device),
                    details={"serial_number": serial, "scopes": granted},
                )
        except IntegrityError:  # the same serial registered at the same moment
            raise DeviceExists(f"Serial {serial} is registered; revoke that device first.") from None
        return device

    async def get(self, principal: Principal, device_id: str) -> Device:
        require(principal, Operation.DEVICES_READ)
        async with self._db.reading() as session:
            device = (
                await session.execute(principal.scope(select(Device).where(Device.id == device_id), Device))
            ).scalar_one_or_none()
        if device is None:
            raise DeviceNotFound(f"No device {device_id} in your scope.")
        return device

    async def list_devices(
        self, principal: Principal, *, store_id: int | None, limit: int, starting_after: str | None
    ) -> tuple[list[Device], bool]:
        require(principal, Operation.DEVICES_READ)
        statement = principal.scope(select(Device), Device)
        if store_id is not None:
            statement = statement.where(Device.store_id == store_id)
        async with self._db.reading() as session:
            return await fetch_page(session, statement, Device.id, limit=limit, starting_after=starting_after)

    async def revoke(self, principal: Principal, device_id: str) -> Device:
        """The device can no longer get tokens; a token it holds runs out within 90 seconds."""
        require(principal, Operation.DEVICES_MANAGE)
        async with self._db.unit_of_work() as session:
            device = (
                await session.execute(
                    principal.scope(select(Device).where(Device.id == device_id), Device).with_for_update()
                )
            ).scalar_one_or_none()
            if device is None:
                raise DeviceNotFound(f"No device {device_id} in your scope.")
            if device.revoked_at is None:
                device.revoked_at = self._clock.now()
                self._audit.record(session, principal, AuditAction.DEVICE_REVOKED, _subject(device))
        return device

    # ------------------------------------------------------------------ tokens

    async def issue_token(
        self,
        *,
        grant_type: str | None,
        client_assertion_type: str | None,
        client_assertion: str | None,
        client_id: str | None,
        scope: str | None,
        audiences: Collection[str],
    ) -> DeviceToken:
        """RFC 6749 client credentials with an RFC 7523 client assertion. `audiences` are the token endpoint's
        URLs an assertion may name as `aud`."""
        if not grant_type:
            raise OAuthError("grant_type is required (client_credentials).")
        if grant_type != "client_credentials":
            raise UnsupportedGrantType(f"grant_type {grant_type!r} is not supported; use client_credentials.")
        if not client_assertion or not client_assertion_type:
            raise OAuthError("client_assertion and client_assertion_type are required (private_key_jwt).")
        if client_assertion_type != ASSERTION_TYPE:
            raise InvalidClient(f"client_assertion_type must be {ASSERTION_TYPE}.")
        device = await self._asserting_device(client_assertion, client_id)
        claims = self._verified_assertion(client_assertion, device, audiences)
        granted = self._granted_scopes(device, scope)
        expires_at = datetime.fromtimestamp(float(claims["exp"]), UTC)
        try:
            async with self._db.unit_of_work() as session:
                session.add(SpentAssertion(client_id=device.id, jti=claims["jti"], expires_at=expires_at))
        except IntegrityError:
            raise InvalidGrant(
                "This client assertion was already used (its jti is spent); sign a new one."
            ) from None
        now = self._clock.now()
        token = await self._keys.sign(
            {
                "iss": ISSUER,
                "sub": device.id,
                "aud": self._audience,
                "device_sn": device.serial_number,
                "psp_id": device.client_partner_id,
                "merchant_id": device.merchant_id,
                "store_id": device.store_id,
                "scope": granted,
                "iat": int(now.timestamp()),
                "exp": int((now + ACCESS_TOKEN_TTL).timestamp()),
                "jti": new_id("jti"),
            }
        )
        return DeviceToken(
            access_token=token, expires_in=int(ACCESS_TOKEN_TTL.total_seconds()), scope=granted
        )

    async def _asserting_device(self, assertion: str, client_id: str | None) -> Device:
        try:
            header = jwt.get_unverified_header(assertion)
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise InvalidClient(f"client_assertion is not a JWT: {exc}") from None
        if header.get("alg") != ASSERTION_ALGORITHM:
            raise InvalidClient(f"Sign the assertion with the device key ({ASSERTION_ALGORITHM}).")
        if {"jwk", "jku", "x5u", "x5c"} & set(header):
            raise InvalidClient("The assertion is verified with the registered device key only.")
        issuer = unverified.get("iss")
        if not isinstance(issuer, str) or not CLIENT_ID.fullmatch(issuer):
            raise InvalidClient("The assertion's iss must be the device's client_id.")
        if client_id is not None and client_id != issuer:
            raise InvalidClient("client_id and the assertion's iss differ.")
        async with self._db.reading() as session:
            device = await session.get(Device, issuer)
        if device is None or device.revoked_at is not None:
            raise InvalidClient("No active device with this client_id.")
        return device

    def _verified_assertion(
        self, assertion: str, device: Device, audiences: Collection[str]
    ) -> dict[str, Any]:
        key = jwt.algorithms.ECAlgorithm.from_jwk(json.dumps(device.public_jwk))
        try:
            claims: dict[str, Any] = jwt.decode(
                assertion,
                key,  # type: ignore[arg-type]  # PyJWT's from_jwk is typed as returning either half
                algorithms=[ASSERTION_ALGORITHM],
                # Times and the audience are checked below, against paymux's clock and endpoint.
                options={
                    "require": ["iss", "sub", "aud", "exp", "jti"],
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                    "verify_aud": False,
                },
            )
        except (jwt.InvalidSignatureError, jwt.DecodeError):
            raise InvalidClient("The assertion's signature does not verify with the device key.") from None
        except jwt.PyJWTError as exc:
            raise InvalidGrant(f"The assertion is not usable: {exc}") from None
        if claims["sub"] != device.id:
            raise InvalidGrant("The assertion's sub must equal its iss (the device's client_id).")
        aud = claims["aud"]
        named = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if not any(value in audiences for value in named):
            raise InvalidGrant(f"The assertion's aud must be the token endpoint: {sorted(audiences)[0]}.")
        now = self._clock.now().timestamp()
        exp = claims["exp"]
        if not _is_time(exp):
            raise InvalidGrant("The assertion's exp is not a time.")
        if exp <= now:
            raise InvalidGrant("The assertion has expired.")
        if exp > now + MAX_ASSERTION_LIFETIME.total_seconds() + CLOCK_SKEW_SECONDS:
            raise InvalidGrant("An assertion expires at most 5 minutes after it is made.")
        for name in ("iat", "nbf"):
            value = claims.get(name)
            if value is not None and (not _is_time(value) or value > now + CLOCK_SKEW_SECONDS):
                raise InvalidGrant(f"The assertion's {name} is in the future.")
        jti = claims["jti"]
        if not isinstance(jti, str) or not 1 <= len(jti) <= 200 or not jti.isprintable():
            raise InvalidGrant("The assertion's jti is 1 to 200 printable characters.")
        return claims

    @staticmethod
    def _granted_scopes(device: Device, requested: str | None) -> list[str]:
        wanted = sorted(set((requested or "").split()))
        if not wanted:  # omitted or blank: everything the device holds
            return list(device.scopes)
        beyond = [scope for scope in wanted if scope not in device.scopes]
        if beyond:
            raise InvalidScope(f"This device may not have: {' '.join(beyond)}.")
        return wanted

    async def verify_access_token(self, token: str) -> dict[str, Any]:
        claims = await self._keys.verify(token, issuer=ISSUER, audience=self._audience, now=self._clock.now())
        scope = claims.get("scope")
        if not isinstance(scope, list) or not all(isinstance(item, str) for item in scope):
            raise InvalidAccessToken("The device token's scope is not a list of scopes.")
        for name in ("psp_id", "merchant_id", "store_id"):
            if type(claims.get(name)) is not int:
                raise InvalidAccessToken(f"The device token's {name} is not an id.")
        return claims

    async def purge_spent_assertions(self) -> int:
        """Forget the jtis of assertions that have expired anyway (the worker runs this)."""
        async with self._db.unit_of_work() as session:
            result = await session.execute(
                delete(SpentAssertion).where(SpentAssertion.expires_at <= self._clock.now())
            )
        return int(getattr(result, "rowcount", 0) or 0)


def _is_time(value: object) -> bool:
    """A JWT NumericDate: a finite number (NaN compares false with everything, so it would pass any check)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _subject(device: Device) -> AuditObject:
    return AuditObject(
        type="device",
        id=device.id,
        client_partner_id=device.client_partner_id,
        merchant_id=device.merchant_id,
        store_id=device.store_id,
    )
