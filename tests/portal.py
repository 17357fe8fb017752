"""Portal users and POS devices as tests drive them.

A portal user is made the way `paymux users create` makes one and signs in at `POST /api/v1/auth/login`; a
`Portal` then calls the API with the user's access token. `Cast` is the usual staff of two tenants, acme (the
`tenant` fixture) and globex (`other_tenant`).

A POS device is registered by the operator with the public half of a P-256 key; it signs an RFC 7523 client
assertion with joserfc, as a terminal would, and trades it at `POST /auth/device/token` for an access token.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from joserfc import jwt as jose_jwt
from joserfc.jwk import ECKey

from paymux.auth.models import User
from paymux.auth.users import UserScope
from paymux.container import Container
from paymux.core.clock import Clock
from paymux.gateway.principal import Principal, Role
from tests.support import Tenant, bearer, ok

PASSWORD = "correct horse battery staple"
LOGIN = "/api/v1/auth/login"
DEVICE_TOKEN_PATH = "/auth/device/token"
DEVICE_TOKEN_URL = "http://paymux.test" + DEVICE_TOKEN_PATH  # the `http` fixture's base URL: a device's `aud`
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"  # RFC 7523 section 2.2


# ---------------------------------------------------------------------------------------------- portal users


async def make_user(
    container: Container,
    email: str,
    role: Role,
    *,
    partner: int | None = None,
    merchant: int | None = None,
    store: int | None = None,
    password: str = PASSWORD,
    actor: Principal | None = None,
) -> User:
    """A user as `paymux users create` makes one: the narrowest id completes the scope."""
    partner_id, merchant_id, store_id = await container.tenants.resolve_scope(
        partner_id=partner, merchant_id=merchant, store_id=store
    )
    return await container.users.create(
        email=email,
        password=password,
        role=role,
        scope=UserScope(partner_id, merchant_id, store_id),
        actor=actor,
    )


async def login(http: httpx.AsyncClient, email: str, password: str = PASSWORD) -> httpx.Response:
    return await http.post(LOGIN, json={"email": email, "password": password})


async def session_tokens(http: httpx.AsyncClient, email: str, password: str = PASSWORD) -> dict[str, Any]:
    """The sign-in answer (access and refresh token); fails the test unless the sign-in succeeds."""
    return ok(await login(http, email, password))


def claims_of(token: str) -> dict[str, Any]:
    """The payload as sent (signature checks are the business of test_jwt.py and of paymux)."""
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


async def new_user_access_token(
    http: httpx.AsyncClient, container: Container, role: Role, scope: UserScope
) -> str:
    """A new user of `role` in `scope`, signed in: its access token."""
    email = f"{role.lower()}-{secrets.token_hex(4)}@example.com"
    await container.users.create(email=email, password=PASSWORD, role=role, scope=scope)
    token: str = (await session_tokens(http, email))["access_token"]
    return token


@dataclass
class Portal:
    """A signed-in portal user: its account, its tokens and the client it calls from."""

    http: httpx.AsyncClient
    user: User
    access_token: str
    refresh_token: str | None = None

    @property
    def id(self) -> str:
        return self.user.id

    async def request(self, method: str, path: str, body: Any = None, **params: Any) -> httpx.Response:
        return await self.http.request(
            method, path, json=body, params=params or None, headers=bearer(self.access_token)
        )

    async def get(self, path: str, **params: Any) -> httpx.Response:
        return await self.request("GET", path, **params)

    async def post(self, path: str, body: Any = None) -> httpx.Response:
        return await self.request("POST", path, body)

    async def patch(self, path: str, body: Any) -> httpx.Response:
        return await self.request("PATCH", path, body)


async def signed_in(http: httpx.AsyncClient, user: User, password: str = PASSWORD) -> Portal:
    tokens = await session_tokens(http, user.email, password)
    return Portal(http, user, tokens["access_token"], tokens["refresh_token"])


async def sign_in(
    http: httpx.AsyncClient,
    container: Container,
    email: str,
    role: Role,
    *,
    partner: int | None = None,
    merchant: int | None = None,
    store: int | None = None,
) -> Portal:
    """A new user, signed in."""
    user = await make_user(container, email, role, partner=partner, merchant=merchant, store=store)
    return await signed_in(http, user)


@dataclass
class Cast:
    """Acme (the `tenant` fixture) and globex (`other_tenant`) staffed with portal users, all signed in."""

    op: Portal
    acme_psp: Portal
    acme_admin: Portal
    acme_manager: Portal
    acme_staff: Portal
    globex_psp: Portal
    globex_admin: Portal


async def sign_in_cast(
    http: httpx.AsyncClient,
    container: Container,
    acme: Tenant,
    globex: Tenant,
    *,
    before_each: Callable[[], None] | None = None,
) -> Cast:
    """The cast, made and signed in one by one in the order of its fields; `before_each` runs before each."""

    async def staffed(email: str, role: Role, **scope: int) -> Portal:
        if before_each is not None:
            before_each()
        return await sign_in(http, container, email, role, **scope)

    return Cast(
        op=await staffed("op@paymux.example", Role.SYSTEM_OP),
        acme_psp=await staffed("psp@acme.example", Role.PSP_ADMIN, partner=acme.client_partner_id),
        acme_admin=await staffed("admin@acme.example", Role.MERCHANT_ADMIN, merchant=acme.merchant_id),
        acme_manager=await staffed("manager@acme.example", Role.STORE_MANAGER, store=acme.store_id),
        acme_staff=await staffed("staff@acme.example", Role.STAFF, store=acme.store_id),
        globex_psp=await staffed("psp@globex.example", Role.PSP_ADMIN, partner=globex.client_partner_id),
        globex_admin=await staffed("admin@globex.example", Role.MERCHANT_ADMIN, merchant=globex.merchant_id),
    )


# ---------------------------------------------------------------------------------------------- POS devices


def device_key_pair() -> tuple[ECKey, dict[str, Any]]:
    """A fresh P-256 key, as a SmartPOS terminal keeps it, and the public JWK it is registered with."""
    key = ECKey.generate_key("P-256")
    return key, dict(key.as_dict(private=False))


def device_public_jwk() -> dict[str, Any]:
    """The public half of a fresh P-256 key."""
    return device_key_pair()[1]


async def register_device(
    container: Container,
    store_id: int,
    scopes: Sequence[str],
    *,
    serial_number: str | None = None,
    operator: str = "tests",
) -> tuple[str, ECKey]:
    """A device of the store registered by the operator (the CLI's principal): its client_id and private key."""
    key, public_jwk = device_key_pair()
    device = await container.devices.register(
        Principal.operator(operator),
        store_id=store_id,
        serial_number=serial_number or f"POS-{secrets.token_hex(6)}",
        jwk=public_jwk,
        scopes=scopes,
    )
    return device.id, key


def assertion_claims(client_id: str, clock: Clock) -> dict[str, Any]:
    """A client assertion's claims as docs/security.md shows them: for the token endpoint, good for a minute."""
    now = int(clock.now().timestamp())
    return {
        "iss": client_id,
        "sub": client_id,
        "aud": DEVICE_TOKEN_URL,
        "iat": now,
        "exp": now + 60,
        "jti": secrets.token_urlsafe(16),
    }


def token_request_form(assertion: str) -> dict[str, str]:
    """The token request's form: the client_credentials grant, authenticated by `assertion`."""
    return {
        "grant_type": "client_credentials",
        "client_assertion_type": CLIENT_ASSERTION_TYPE,
        "client_assertion": assertion,
    }


async def device_token_response(
    http: httpx.AsyncClient, client_id: str, key: ECKey, clock: Clock
) -> dict[str, Any]:
    """The token endpoint's answer to a fresh assertion signed with `key`; fails the test unless it is 200."""
    assertion = jose_jwt.encode({"alg": "ES256"}, assertion_claims(client_id, clock), key)
    return ok(await http.post(DEVICE_TOKEN_PATH, data=token_request_form(assertion)))
