"""FastAPI dependencies that turn a request's credentials into a `Principal` and count it against rate limits."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import TYPE_CHECKING, Annotated, Any

import jwt
from fastapi import Depends, Request
from fastapi.security import APIKeyHeader

from paymux.auth.devices import ISSUER as DEVICE_ISSUER
from paymux.auth.errors import (
    InvalidAccessToken,
    InvalidSignature,
    MissingCredentials,
    TimestampOutOfRange,
    UnknownClient,
)
from paymux.auth.service import TOKEN_PREFIX
from paymux.core.errors import Unauthorized
from paymux.gateway import hmac_signing
from paymux.gateway.idempotency import HEADER as IDEMPOTENCY_HEADER
from paymux.gateway.idempotency import IdempotentCall, request_path
from paymux.gateway.principal import CallerType, Principal, Role
from paymux.gateway.replay import SignatureClaim

if TYPE_CHECKING:
    from paymux.container import Container

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# Declared for the OpenAPI document: both schemes travel in the Authorization header.
hmac_scheme = APIKeyHeader(
    name="Authorization",
    scheme_name="HMAC",
    description="`HMAC-SHA256 <client_id>:<timestamp>:<base64 signature>` over "
    "`METHOD:PATH:timestamp:body` (PATH with its query string), signed with the client's secret.",
    auto_error=False,
)
token_scheme = APIKeyHeader(
    name="Authorization",
    scheme_name="PaymentToken",
    description="`Bearer tok_...`: the payment_token of one payment intent (5 minutes; confirm or cancel spends it).",
    auto_error=False,
)


device_scheme = APIKeyHeader(
    name="Authorization",
    scheme_name="DeviceJWT",
    description="`Bearer <access_token>`: a POS device's access token from `POST /auth/device/token` (ES256 JWT, "
    "90 seconds, with the device's scopes).",
    auto_error=False,
)
user_scheme = APIKeyHeader(
    name="Authorization",
    scheme_name="UserJWT",
    description="`Bearer <access_token>`: a portal user's access token from `POST /api/v1/auth/login` (ES256 JWT, "
    "15 minutes; keys at `/.well-known/jwks.json`).",
    auto_error=False,
)


def container_of(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


def client_ip(request: Request) -> str:
    peer = request.client.host if request.client else "unknown"
    trusted = container_of(request).settings.trusted_proxies
    forwarded = request.headers.get("x-forwarded-for")
    if forwarded and peer in trusted:
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        for hop in reversed(hops):
            if hop not in trusted:
                return hop
    return peer


async def _authenticate_hmac(request: Request, header: str) -> Principal:
    try:
        return await _verify_hmac(request, header)
    except Unauthorized:
        # A failed signature counts against the caller's IP, so guessing is throttled like any anonymous call.
        await container_of(request).rate_limiter.hit(ip=client_ip(request))
        raise


async def _verify_hmac(request: Request, header: str) -> Principal:
    container = container_of(request)
    try:
        auth = hmac_signing.parse_authorization(header)
    except hmac_signing.MalformedAuthorization as exc:
        raise InvalidSignature(str(exc)) from exc
    now = container.clock.now().timestamp()
    tolerance = container.settings.hmac_tolerance_seconds
    if abs(now - auth.timestamp) > tolerance:
        raise TimestampOutOfRange(
            f"The timestamp must be within {tolerance} s of the server's clock ({int(now)})."
        )
    verified = await container.api_clients.find_active(auth.client_id)
    if verified is None:
        raise UnknownClient("No active API client with this client_id.")
    body = await request.body()
    path = request_path(request)
    if not hmac_signing.verify(verified.secret, request.method, path, auth, body):
        raise InvalidSignature(
            "Sign METHOD:PATH:timestamp:body with the client's secret, PATH with its query string."
        )
    claim = None
    if request.method in STATE_CHANGING:
        signature_key = hashlib.sha256(f"{auth.client_id}:{auth.signature}".encode()).hexdigest()
        claim = SignatureClaim(signature_key, request.headers.get(IDEMPOTENCY_HEADER), 2 * tolerance)
    client = verified.client
    # The signature is claimed in the rate limits' round trip; a replay raises SignatureReplayed from there.
    request.state.rate_limit = await container.rate_limiter.hit(
        merchant_id=client.merchant_id, store_id=client.store_id, claim=claim
    )
    return Principal(
        caller_type=CallerType.API_CLIENT,
        caller_id=client.id,
        client_partner_id=client.client_partner_id,
        merchant_id=client.merchant_id,
        store_id=client.store_id,
    )


async def _authenticate_token(request: Request, token: str) -> Principal:
    container = container_of(request)
    request.state.rate_limit = await container.rate_limiter.hit(ip=client_ip(request))
    record = await container.payment_tokens.resolve(token)
    principal = Principal(
        caller_type=CallerType.PAYMENT_TOKEN,
        caller_id=f"token:{record.payment_intent_id}",
        client_partner_id=record.client_partner_id,
        merchant_id=record.merchant_id,
        store_id=record.store_id,
        payment_intent_id=record.payment_intent_id,
        payment_token_hash=record.token_hash,
    )
    state = await container.rate_limiter.hit(
        merchant_id=record.merchant_id, store_id=record.store_id, count_global=False
    )
    if state is not None and (
        request.state.rate_limit is None or state.remaining < request.state.rate_limit.remaining
    ):
        request.state.rate_limit = state
    return principal


async def _unauthenticated(request: Request, expected: str) -> MissingCredentials:
    request.state.rate_limit = await container_of(request).rate_limiter.hit(ip=client_ip(request))
    schemes = " or ".join(expected.split(", "))
    return MissingCredentials(
        f"Send an Authorization header: {schemes}.", headers={"WWW-Authenticate": expected}
    )


async def _authenticate_jwt(request: Request, token: str) -> Principal:
    """A portal user's or a POS device's access token; the issuer says which, and each is verified as its own."""
    container = container_of(request)
    try:
        issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
        if issuer == DEVICE_ISSUER:
            principal = _device_principal(await container.devices.verify_access_token(token))
        else:
            principal = _user_principal(await container.users.verify_access_token(token))
    except jwt.PyJWTError:
        await container.rate_limiter.hit(ip=client_ip(request))
        raise InvalidAccessToken("The bearer credential is neither a payment token nor a JWT.") from None
    except Unauthorized:
        await container.rate_limiter.hit(ip=client_ip(request))
        raise
    request.state.rate_limit = await container.rate_limiter.hit(
        merchant_id=principal.merchant_id, store_id=principal.store_id, ip=client_ip(request)
    )
    return principal


def _user_principal(claims: dict[str, Any]) -> Principal:
    return Principal(
        caller_type=CallerType.USER,
        caller_id=str(claims["sub"]),
        client_partner_id=_claim_id(claims, "psp_id"),
        merchant_id=_claim_id(claims, "merchant_id"),
        store_id=_claim_id(claims, "store_id"),
        role=Role(claims["role"]),
        impersonated_by=claims.get("impersonated_by"),
    )


def _device_principal(claims: dict[str, Any]) -> Principal:
    return Principal(
        caller_type=CallerType.DEVICE,
        caller_id=str(claims["sub"]),
        client_partner_id=claims["psp_id"],
        merchant_id=claims["merchant_id"],
        store_id=claims["store_id"],
        scopes=frozenset(claims["scope"]),
    )


async def require_caller(
    request: Request,
    _hmac: Annotated[str | None, Depends(hmac_scheme)],
    _token: Annotated[str | None, Depends(token_scheme)],
    _user: Annotated[str | None, Depends(user_scheme)],
    _device: Annotated[str | None, Depends(device_scheme)],
) -> Principal:
    """Any caller kind: an HMAC-signed server, a payment token, a portal user or a POS device. What it may do is
    the permission matrix's answer (`gateway.permissions`), asked by the service."""
    header = request.headers.get("authorization", "")
    if header.startswith(hmac_signing.SCHEME + " "):
        principal = await _authenticate_hmac(request, header)
    elif header[:7].lower() == "bearer ":
        credential = header[7:].strip()
        if credential.startswith(TOKEN_PREFIX):
            principal = await _authenticate_token(request, credential)
        else:
            principal = await _authenticate_jwt(request, credential)
    else:
        raise await _unauthenticated(request, f"{hmac_signing.SCHEME}, Bearer")
    principal = replace(principal, ip=client_ip(request))
    request.state.principal = principal
    return principal


def _claim_id(claims: dict[str, Any], name: str) -> int | None:
    value = claims.get(name)
    if value is None:
        return None
    if type(value) is not int:
        raise InvalidAccessToken(f"The access token's {name} is not an id.")
    return value


async def idempotent_call(request: Request) -> IdempotentCall:
    # async: FastAPI runs a plain function dependency in its thread pool, a thread hop on every POST
    return IdempotentCall(request, container_of(request).idempotency)


Caller = Annotated[Principal, Depends(require_caller)]
Idempotent = Annotated[IdempotentCall, Depends(idempotent_call)]
