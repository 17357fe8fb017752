"""POS devices and OAuth2 private_key_jwt (docs/security.md, "POS devices (seed 003)").

A terminal's key pair and its RFC 7523 client assertions are made with a standard JOSE library (joserfc), never
with paymux code, so the tests prove interoperability rather than agreement with paymux's own encoder. They show
that:

- `POST /auth/device/token` trades an assertion for `{access_token, token_type, expires_in: 90, scope}`, and the
  access token verifies against the published JWKS and carries exactly seed 003's device claims plus psp_id, aud,
  iat and jti;
- an assertion works once, in any paymux process and under concurrent replays;
- every refusal is an RFC 6749 section 5.2 error with the contract's status and `error`, an `error_description`
  and `Cache-Control: no-store`, while the tolerances the contract grants (5 s skew, a list `aud`, the public URL
  as `aud`, a five-minute assertion) are accepted;
- a device token acts for its own store within its scopes, reaches no admin route and expires after 90 seconds;
- registration refuses private, non-P-256 and malformed keys, unknown scopes, a second live device per serial and
  stores outside the admin's scope, and revocation stops new tokens;
- the worker's purge forgets only the jtis of expired assertions;
- `paymux devices register --json` prints the contract's JSON, and a file that is not a JWK is refused.
"""

from __future__ import annotations

import asyncio
import base64
import enum
import json
import os
import secrets
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
import pytest
from fastapi import FastAPI
from joserfc import jwt as jose_jwt
from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey
from sqlalchemy import select

from paymux import migrations
from paymux.app import create_app
from paymux.auth.devices import DeviceExists
from paymux.auth.models import Device, SpentAssertion
from paymux.auth.users import UserScope
from paymux.config import Settings
from paymux.container import Container
from paymux.core.clock import FrozenClock
from paymux.gateway.principal import Principal, Role
from tests.conftest import CLI_ON_SQLITE_ONLY
from tests.portal import (
    DEVICE_TOKEN_PATH,
    DEVICE_TOKEN_URL,
    PASSWORD,
    assertion_claims,
    new_user_access_token,
    register_device,
    token_request_form,
)
from tests.support import ServerClient, Tenant, bearer, bootstrap_tenant, intent_body

BASE_URL = "http://paymux.test"  # the `http` fixture's: the URL a device calls
JWKS_PATH = "/.well-known/jwks.json"
DEVICES = "/api/v1/devices"
INTENTS = "/v1/payment_intents"
AUDIT_EVENTS = "/api/v1/audit_events"
FORM = "application/x-www-form-urlencoded"
DEVICE_ISSUER = "svc-portal-devices"
ACCESS_TOKEN_AUDIENCE = "paymux"
TILL_SCOPES = ["payment:create", "payment:read"]
EVERY_SCOPE = [
    "bill:create",
    "order:create",
    "payment:cancel",
    "payment:create",
    "payment:read",
    "payment:refund",
]
UNKNOWN_DEVICE = "dev_" + "0" * 26
TOKEN_RESPONSE_KEYS = {"access_token", "token_type", "expires_in", "scope"}
ACCESS_TOKEN_CLAIMS = {
    # seed 003, "JWT Claims (Device)"
    "iss",
    "sub",
    "device_sn",
    "merchant_id",
    "store_id",
    "scope",
    "exp",
    # docs/security.md adds these
    "psp_id",
    "aud",
    "iat",
    "jti",
}


class _Omit(enum.Enum):
    OMIT = enum.auto()


OMIT = _Omit.OMIT  # leave this claim or form field out


# ---------------------------------------------------------------------------------------------- helpers


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(claims: Mapping[str, Any]) -> str:
    """An `alg: none` JWT (RFC 7519 section 6), which JOSE libraries rightly refuse to make."""
    header = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{b64url(json.dumps(dict(claims)).encode())}."


def signed(claims: Mapping[str, Any], key: ECKey | OctKey, *, alg: str = "ES256", **header: Any) -> str:
    return jose_jwt.encode({"alg": alg, **header}, dict(claims), key, algorithms=[alg])


@dataclass(frozen=True)
class Pos:
    """A registered terminal as a test drives it: its client_id and the private key that never leaves it."""

    client_id: str
    key: ECKey
    clock: FrozenClock

    @property
    def public_jwk(self) -> dict[str, Any]:
        return dict(self.key.as_dict(private=False))

    def claims(self, **changes: Any) -> dict[str, Any]:
        """An assertion's claims as docs/security.md shows them, with `changes` applied (OMIT drops one)."""
        claims = assertion_claims(self.client_id, self.clock) | changes
        return {name: value for name, value in claims.items() if value is not OMIT}

    def assertion(self, **changes: Any) -> str:
        return signed(self.claims(**changes), self.key)

    def form(self, assertion: str | None = None, **fields: str | _Omit) -> dict[str, str]:
        """The token request's form: client_credentials with this device's assertion (a fresh one by default)."""
        form: dict[str, str | _Omit] = {
            **token_request_form(self.assertion() if assertion is None else assertion),
            **fields,
        }
        return {name: value for name, value in form.items() if isinstance(value, str)}


async def register_pos(
    container: Container,
    store_id: int,
    clock: FrozenClock,
    *,
    scopes: list[str] | None = None,
    serial: str | None = None,
) -> Pos:
    """A device registered by the operator (the CLI's principal), with a fresh P-256 key."""
    client_id, key = await register_device(
        container, store_id, TILL_SCOPES if scopes is None else scopes, serial_number=serial
    )
    return Pos(client_id, key, clock)


async def request_token(http: httpx.AsyncClient, form: Mapping[str, str]) -> httpx.Response:
    return await http.post(DEVICE_TOKEN_PATH, data=dict(form))


async def access_token(http: httpx.AsyncClient, pos: Pos, **fields: str) -> str:
    response = await request_token(http, pos.form(**fields))
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def oauth_error_mismatch(response: httpx.Response, status: int, error: str) -> str | None:
    """What is wrong with `response` as an RFC 6749 section 5.2 error of this status and code; None if nothing."""
    try:
        body = response.json()
    except ValueError:
        return f"{response.status_code}, not JSON: {response.text[:200]}"
    if (response.status_code, body.get("error")) != (status, error):
        return f"{response.status_code} {body.get('error')!r}: {body.get('error_description') or body}"
    if not isinstance(body.get("error_description"), str) or not body["error_description"]:
        return f"no error_description: {body}"
    if (body.get("status"), body.get("code")) != (status, error) or not {"type", "title", "detail"} <= set(
        body
    ):
        return f"the problem members do not match: {body}"
    if response.headers.get("cache-control") != "no-store":
        return f"Cache-Control is {response.headers.get('cache-control')!r}"
    return None


def assert_oauth_error(response: httpx.Response, status: int, error: str) -> None:
    mismatch = oauth_error_mismatch(response, status, error)
    assert mismatch is None, mismatch


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert (response.status_code, response.json().get("code")) == (status, code), response.text
    body: dict[str, Any] = response.json()
    return body


async def verified_claims(http: httpx.AsyncClient, token: str) -> dict[str, Any]:
    """The access token's claims as any resource server checks them: signature by a key of the published JWKS,
    ES256 only, paymux's audience, the device issuer."""
    jwks = jwt.PyJWKSet.from_dict((await http.get(JWKS_PATH)).json())
    kid = jwt.get_unverified_header(token)["kid"]
    claims: dict[str, Any] = jwt.decode(
        token,
        jwks[kid].key,
        algorithms=["ES256"],
        audience=ACCESS_TOKEN_AUDIENCE,
        issuer=DEVICE_ISSUER,
        options={"require": ["exp", "iat", "jti", "sub"]},
    )
    return claims


async def user_token(
    container: Container, http: httpx.AsyncClient, role: Role, tenant: Tenant, *, store_id: int | None = None
) -> str:
    """A signed-in portal user of `role`, scoped to the tenant's merchant (or one of its stores)."""
    scope = UserScope(tenant.client_partner_id, tenant.merchant_id, store_id)
    return await new_user_access_token(http, container, role, scope)


def registration(
    store_id: int, jwk: Mapping[str, Any], *, serial: str = "ABC123", scopes: list[str] | None = None
) -> dict[str, Any]:
    return {
        "store_id": store_id,
        "serial_number": serial,
        "jwk": dict(jwk),
        "scopes": TILL_SCOPES if scopes is None else scopes,
    }


async def sibling_store(container: Container) -> Tenant:
    """A second store (S-2) of the `tenant` fixture's merchant."""
    return await bootstrap_tenant(container, partner="acme", merchant="M-1", store="S-2")


# ---------------------------------------------------------------------------------------------- the flow


async def test_a_device_trades_a_signed_assertion_for_a_90_second_access_token(
    container: Container, http: httpx.AsyncClient, tenant: Tenant, clock: FrozenClock
) -> None:
    pos = await register_pos(container, tenant.store_id, clock, serial="ABC123")
    issued_at = int(clock.now().timestamp())

    response = await request_token(http, pos.form())

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == TOKEN_RESPONSE_KEYS
    assert (body["token_type"], body["expires_in"], body["scope"]) == (
        "Bearer",
        90,
        "payment:create payment:read",
    )
    claims = await verified_claims(http, body["access_token"])
    assert set(claims) == ACCESS_TOKEN_CLAIMS
    assert claims == {
        "iss": DEVICE_ISSUER,
        "sub": pos.client_id,
        "aud": ACCESS_TOKEN_AUDIENCE,
        "device_sn": "ABC123",
        "psp_id": tenant.client_partner_id,
        "merchant_id": tenant.merchant_id,
        "store_id": tenant.store_id,
        "scope": TILL_SCOPES,
        "iat": issued_at,
        "exp": issued_at + 90,
        "jti": claims["jti"],
    }
    assert isinstance(claims["jti"], str)
    assert claims["jti"]
    # Each token has its own jti, so a resource server can tell two of them apart.
    assert (await verified_claims(http, await access_token(http, pos)))["jti"] != claims["jti"]


async def test_a_requested_subset_of_scopes_is_all_the_token_grants(
    container: Container, http: httpx.AsyncClient, tenant: Tenant, clock: FrozenClock
) -> None:
    pos = await register_pos(container, tenant.store_id, clock, scopes=EVERY_SCOPE)

    response = await request_token(http, pos.form(scope="payment:read"))

    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "payment:read"
    token = response.json()["access_token"]
    assert (await verified_claims(http, token))["scope"] == ["payment:read"]
    # The narrower token is enforced as narrow: the device could create, this token cannot.
    refused = await http.post(INTENTS, json=intent_body(tenant, store_id=None), headers=bearer(token))
    assert_problem(refused, 403, "insufficient_scope")
    assert (await http.get(INTENTS, headers=bearer(token))).status_code == 200


# Tolerances the contract grants; each must still give a token.
ACCEPTED: dict[str, Callable[[Pos, Settings], tuple[dict[str, str], str]]] = {
    "aud naming the endpoint at PAYMUX_PUBLIC_URL": lambda pos, settings: (
        pos.form(pos.assertion(aud=settings.public_url.rstrip("/") + DEVICE_TOKEN_PATH)),
        FORM,
    ),
    "aud as a list that holds the endpoint": lambda pos, _: (
        pos.form(pos.assertion(aud=["https://elsewhere.example/token", DEVICE_TOKEN_URL])),
        FORM,
    ),
    "exp exactly five minutes out": lambda pos, _: (
        pos.form(pos.assertion(exp=int(pos.clock.now().timestamp()) + 300)),
        FORM,
    ),
    "iat and nbf within the 5 s skew": lambda pos, _: (
        pos.form(
            pos.assertion(iat=int(pos.clock.now().timestamp()) + 5, nbf=int(pos.clock.now().timestamp()) + 5)
        ),
        FORM,
    ),
    "no iat (RFC 7523 makes it optional)": lambda pos, _: (pos.form(pos.assertion(iat=OMIT)), FORM),
    "a client_id equal to iss": lambda pos, _: (pos.form(client_id=pos.client_id), FORM),
    "every held scope named": lambda pos, _: (pos.form(scope="payment:read payment:create"), FORM),
    "a charset on the form's content type": lambda pos, _: (pos.form(), f"{FORM}; charset=UTF-8"),
}


async def test_assertions_within_the_contracts_tolerances_get_tokens(
    container: Container, http: httpx.AsyncClient, tenant: Tenant, clock: FrozenClock, settings: Settings
) -> None:
    pos = await register_pos(container, tenant.store_id, clock)
    refused = {}
    for name, build in ACCEPTED.items():
        form, content_type = build(pos, settings)
        response = await http.post(
            DEVICE_TOKEN_PATH, content=urlencode(form).encode(), headers={"Content-Type": content_type}
        )
        if response.status_code != 200:
            refused[name] = response.text
    assert not refused, refused


# ---------------------------------------------------------------------------------------------- replay


async def test_an_assertion_works_once_even_in_another_paymux_process(
    container: Container, http: httpx.AsyncClient, tenant: Tenant, clock: FrozenClock, settings: Settings
) -> None:
    pos = await register_pos(container, tenant.store_id, clock)
    assertion = pos.assertion()
    assert (await request_token(http, pos.form(assertion))).status_code == 200

    assert_oauth_error(await request_token(http, pos.form(assertion)), 400, "invalid_grant")

    # A second app on the same database stands in for another process: the spent jti is shared state.
    other_process = create_app(settings, clock=clock)
    try:
        transport = httpx.ASGITransport(app=other_process, client=("203.0.113.8", 50001))
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as other:
            assert_oauth_error(await request_token(other, pos.form(assertion)), 400, "invalid_grant")
            assert (await request_token(other, pos.form())).status_code == 200
    finally:
        await other_process.state.container.close()


@pytest.mark.postgres
async def test_concurrent_replays_of_one_assertion_get_exactly_one_token(
    container: Container, http: httpx.AsyncClient, tenant: Tenant, clock: FrozenClock
) -> None:
    pos = await register_pos(container, tenant.store_id, clock)
    form = pos.form()

    responses = await asyncio.gather(*(request_token(http, form) for _ in range(10)))

    assert Counter(response.status_code for response in responses) == {200: 1, 400: 9}
    for response in responses:
        if response.status_code == 400:
            assert_oauth_error(response, 400, "invalid_grant")


# ---------------------------------------------------------------------------------------------- refusals


@dataclass(frozen=True)
class Parties:
    """Who the refused requests come from: a live device, a revoked one, and a key paymux never saw."""

    live: Pos
    revoked: Pos
    stranger: ECKey

    def now(self) -> int:
        return int(self.live.clock.now().timestamp())


@dataclass(frozen=True)
class Sent:
    """A token request's body as sent, and its Content-Type (None: no header at all)."""

    content: bytes
    content_type: str | None = FORM


def as_form(form: Mapping[str, str] | list[tuple[str, str]]) -> Sent:
    return Sent(urlencode(form).encode())


def with_assertion(parties: Parties, assertion: str, **fields: str | _Omit) -> Sent:
    return as_form(parties.live.form(assertion, **fields))


def stranger_jwk(parties: Parties) -> dict[str, Any]:
    return dict(parties.stranger.as_dict(private=False))


# error -> (status, {case: the request}); one setup per error code keeps the file fast.
REFUSED: dict[str, tuple[int, dict[str, Callable[[Parties], Sent]]]] = {
    "invalid_request": (
        400,
        {
            "a JSON body": lambda p: Sent(json.dumps(p.live.form()).encode(), "application/json"),
            "no content type": lambda p: Sent(urlencode(p.live.form()).encode(), None),
            "a body that is not ASCII": lambda p: Sent(b"grant_type=client_credentials&scope=\xff"),
            "a repeated parameter": lambda p: as_form(
                [*p.live.form().items(), ("client_assertion", p.live.assertion())]
            ),
            "no grant_type": lambda p: as_form(p.live.form(grant_type=OMIT)),
            "a blank grant_type (counts as omitted)": lambda p: as_form(p.live.form(grant_type="")),
            "no client_assertion": lambda p: as_form(p.live.form(client_assertion=OMIT)),
            "no client_assertion_type": lambda p: as_form(p.live.form(client_assertion_type=OMIT)),
        },
    ),
    "unsupported_grant_type": (
        400,
        {
            "password": lambda p: as_form(p.live.form(grant_type="password")),
            "the RFC 7523 authorization grant": lambda p: as_form(
                p.live.form(grant_type="urn:ietf:params:oauth:grant-type:jwt-bearer")
            ),
        },
    ),
    "invalid_client": (
        401,
        {
            "another client_assertion_type": lambda p: as_form(
                p.live.form(client_assertion_type="urn:ietf:params:oauth:client-assertion-type:saml2-bearer")
            ),
            "an assertion that is not a JWT": lambda p: with_assertion(p, "not-a-jwt"),
            "HS256 with a random secret": lambda p: with_assertion(
                p, signed(p.live.claims(), OctKey.import_key(secrets.token_bytes(32)), alg="HS256")
            ),
            "HS256 keyed with the device's public JWK": lambda p: with_assertion(
                p,
                signed(
                    p.live.claims(), OctKey.import_key(json.dumps(p.live.public_jwk).encode()), alg="HS256"
                ),
            ),
            "alg none": lambda p: with_assertion(p, unsigned(p.live.claims())),
            "ES384 (another algorithm)": lambda p: with_assertion(
                p, signed(p.live.claims(), ECKey.generate_key("P-384"), alg="ES384")
            ),
            "a key carried in the jwk header": lambda p: with_assertion(
                p, signed(p.live.claims(), p.stranger, jwk=stranger_jwk(p))
            ),
            "a jku header": lambda p: with_assertion(
                p, signed(p.live.claims(), p.live.key, jku="https://attacker.example/jwks.json")
            ),
            "an x5u header": lambda p: with_assertion(
                p, signed(p.live.claims(), p.live.key, x5u="https://attacker.example/cert.pem")
            ),
            "an unknown client_id": lambda p: with_assertion(
                p, signed(p.live.claims(iss=UNKNOWN_DEVICE, sub=UNKNOWN_DEVICE), p.live.key)
            ),
            "no iss": lambda p: with_assertion(p, p.live.assertion(iss=OMIT)),
            "a revoked device": lambda p: as_form(p.revoked.form()),
            "a signature by another key": lambda p: with_assertion(p, signed(p.live.claims(), p.stranger)),
            # RFC 7521 section 4.2: client_id must name the client the assertion authenticates.
            "a client_id form field other than iss": lambda p: as_form(
                p.live.form(client_id=p.revoked.client_id)
            ),
        },
    ),
    "invalid_grant": (
        400,
        {
            "another aud": lambda p: with_assertion(
                p, p.live.assertion(aud="https://elsewhere.example/token")
            ),
            "no aud": lambda p: with_assertion(p, p.live.assertion(aud=OMIT)),
            "sub other than iss": lambda p: with_assertion(p, p.live.assertion(sub=p.revoked.client_id)),
            "no sub": lambda p: with_assertion(p, p.live.assertion(sub=OMIT)),
            "exp a second ago": lambda p: with_assertion(p, p.live.assertion(exp=p.now() - 1)),
            "exp now": lambda p: with_assertion(p, p.live.assertion(exp=p.now())),
            "exp six minutes out": lambda p: with_assertion(p, p.live.assertion(exp=p.now() + 360)),
            "exp not a number": lambda p: with_assertion(p, p.live.assertion(exp="tomorrow")),
            "no exp": lambda p: with_assertion(p, p.live.assertion(exp=OMIT)),
            "iat a minute ahead": lambda p: with_assertion(p, p.live.assertion(iat=p.now() + 60)),
            "iat not a number": lambda p: with_assertion(p, p.live.assertion(iat="yesterday")),
            "nbf a minute ahead": lambda p: with_assertion(p, p.live.assertion(nbf=p.now() + 60)),
            "no jti": lambda p: with_assertion(p, p.live.assertion(jti=OMIT)),
            "an empty jti": lambda p: with_assertion(p, p.live.assertion(jti="")),
            "a jti of 201 characters": lambda p: with_assertion(p, p.live.assertion(jti="j" * 201)),
        },
    ),
    "invalid_scope": (
        400,
        {
            "a real scope the device lacks": lambda p: as_form(p.live.form(scope="payment:refund")),
            "an unknown scope": lambda p: as_form(p.live.form(scope="payment:create admin:all")),
        },
    ),
}


@pytest.mark.parametrize("error", list(REFUSED))
async def test_every_refused_token_request_is_the_contracts_oauth_error(
    container: Container, http: httpx.AsyncClient, tenant: Tenant, clock: FrozenClock, error: str
) -> None:
    revoked = await register_pos(container, tenant.store_id, clock)
    await container.devices.revoke(Principal.operator("test"), revoked.client_id)
    parties = Parties(
        live=await register_pos(container, tenant.store_id, clock),
        revoked=revoked,
        stranger=ECKey.generate_key("P-256"),
    )
    status, cases = REFUSED[error]
    wrong = {}
    for case, build in cases.items():
        sent = build(parties)
        headers = {} if sent.content_type is None else {"Content-Type": sent.content_type}
        mismatch = oauth_error_mismatch(
            await http.post(DEVICE_TOKEN_PATH, content=sent.content, headers=headers), status, error
        )
        if mismatch is not None:
            wrong[case] = mismatch
    assert not wrong, wrong
    # The refusals locked nothing: the same device still gets a token with a proper assertion.
    assert (await request_token(http, parties.live.form())).status_code == 200


@pytest.mark.parametrize("claim", ["exp", "iat", "nbf"])
async def test_a_nan_time_in_the_assertion_is_invalid_grant(
    container: Container, http: httpx.AsyncClient, tenant: Tenant, clock: FrozenClock, claim: str
) -> None:
    pos = await register_pos(container, tenant.store_id, clock)
    # Python's json (and so joserfc) writes NaN, and PyJWT's json reads it back as a float.
    response = await request_token(http, pos.form(pos.assertion(**{claim: float("nan")})))
    assert_oauth_error(response, 400, "invalid_grant")


@pytest.mark.parametrize(
    "claim",
    [
        "iss",  # looked up before the signature is checked
        "sub",
        "aud",
        "jti",  # stored as spent
    ],
)
async def test_a_nul_in_an_assertion_claim_is_never_a_server_error(
    container: Container, http: httpx.AsyncClient, tenant: Tenant, clock: FrozenClock, claim: str
) -> None:
    pos = await register_pos(container, tenant.store_id, clock)
    value = f"{pos.claims()[claim]}\u0000"

    response = await request_token(http, pos.form(pos.assertion(**{claim: value})))

    # Refusing is right; accepting a NUL the database can hold (SQLite) does no harm. A 500 is wrong.
    assert response.status_code < 500, response.text
    if response.status_code != 200:
        assert response.json()["error"] in {"invalid_request", "invalid_client", "invalid_grant"}


async def test_a_blank_client_id_counts_as_omitted(
    container: Container, http: httpx.AsyncClient, tenant: Tenant, clock: FrozenClock
) -> None:
    pos = await register_pos(container, tenant.store_id, clock)
    # RFC 6749 section 3.2: "Parameters sent without a value MUST be treated as if they were omitted".
    response = await request_token(http, pos.form(client_id=""))
    assert response.status_code == 200, response.text


# ---------------------------------------------------------------------------------------------- device tokens


async def test_a_device_creates_intents_for_its_own_store_only(
    container: Container, http: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, clock: FrozenClock
) -> None:
    sibling = await sibling_store(container)
    assert sibling.merchant_id == tenant.merchant_id  # the same merchant: only the store differs
    pos = await register_pos(container, tenant.store_id, clock, scopes=["payment:create"])
    headers = bearer(await access_token(http, pos))

    implied = await http.post(INTENTS, json=intent_body(tenant, store_id=None), headers=headers)
    named = await http.post(INTENTS, json=intent_body(tenant), headers=headers)

    for created in (implied, named):
        assert created.status_code == 201, created.text
        assert (created.json()["store_id"], created.json()["merchant_id"]) == (
            tenant.store_id,
            tenant.merchant_id,
        )
    for store_id in (sibling.store_id, other_tenant.store_id):
        refused = await http.post(INTENTS, json=intent_body(tenant, store_id=store_id), headers=headers)
        assert_problem(refused, 404, "store_not_found")


async def test_a_read_only_device_reads_only_its_stores_intents_and_cannot_create(
    container: Container,
    http: httpx.AsyncClient,
    tenant: Tenant,
    other_tenant: Tenant,
    server: ServerClient,
    other_server: ServerClient,
    clock: FrozenClock,
) -> None:
    sibling = await sibling_store(container)
    own = await server.create_intent(tenant)
    siblings = await server.create_intent(tenant, store_id=sibling.store_id)
    foreign = await other_server.create_intent(other_tenant)
    pos = await register_pos(container, tenant.store_id, clock, scopes=["payment:read"])
    headers = bearer(await access_token(http, pos))

    listed = await http.get(INTENTS, headers=headers)
    assert listed.status_code == 200, listed.text
    assert [intent["id"] for intent in listed.json()["data"]] == [own["id"]]
    filtered = await http.get(INTENTS, params={"store_id": sibling.store_id}, headers=headers)
    assert filtered.json()["data"] == []
    assert (await http.get(f"{INTENTS}/{own['id']}", headers=headers)).status_code == 200
    for hidden in (siblings, foreign):
        assert_problem(
            await http.get(f"{INTENTS}/{hidden['id']}", headers=headers), 404, "payment_intent_not_found"
        )

    refused = assert_problem(
        await http.post(INTENTS, json=intent_body(tenant, store_id=None), headers=headers),
        403,
        "insufficient_scope",
    )
    assert refused["required_scope"] == "payment:create"
    assert "payment:create" in refused["detail"]


async def test_a_device_token_reaches_no_admin_route_whatever_its_scopes(
    container: Container, http: httpx.AsyncClient, tenant: Tenant, server: ServerClient, clock: FrozenClock
) -> None:
    intent = await server.create_intent(tenant)
    pos = await register_pos(container, tenant.store_id, clock, scopes=EVERY_SCOPE)
    headers = bearer(await access_token(http, pos))
    calls: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", "/api/v1/partners", None),
        ("GET", "/api/v1/merchants", None),
        ("GET", f"/api/v1/merchants/{tenant.merchant_id}", None),
        ("GET", "/api/v1/stores", None),
        ("GET", f"/api/v1/stores/{tenant.store_id}", None),
        ("GET", "/api/v1/users", None),
        ("POST", "/api/v1/users", {"email": "eve@example.com", "password": PASSWORD, "role": "STAFF"}),
        ("GET", "/api/v1/api_clients", None),
        ("POST", "/api/v1/api_clients", {"name": "till"}),
        ("GET", DEVICES, None),
        ("GET", f"{DEVICES}/{pos.client_id}", None),
        ("POST", DEVICES, registration(tenant.store_id, ECKey.generate_key("P-256").as_dict(private=False))),
        ("POST", f"{DEVICES}/{pos.client_id}/revoke", None),
        ("POST", "/api/v1/signing_keys/rotate", None),
        ("GET", AUDIT_EVENTS, None),
        ("GET", "/v1/events", None),
        ("GET", "/v1/balances", None),
        ("GET", "/v1/webhook_endpoints", None),
        ("POST", "/v1/webhook_endpoints", {"url": "http://127.0.0.1:9/hook"}),
        ("GET", "/v1/reconciliation_runs", None),
        ("GET", f"/v1/stores/{tenant.store_id}/provider_configs", None),
        # a payment operation with no device scope at all
        ("POST", f"{INTENTS}/{intent['id']}/capture", {}),
    ]
    reached = {}
    for method, path, body in calls:
        response = await http.request(method, path, json=body, headers=headers)
        if (response.status_code, response.json().get("code")) != (403, "operation_forbidden"):
            reached[f"{method} {path}"] = f"{response.status_code} {response.text[:160]}"
    assert not reached, reached


async def test_a_device_token_may_not_impersonate(
    container: Container, http: httpx.AsyncClient, tenant: Tenant, clock: FrozenClock
) -> None:
    target = await container.users.create(
        email="staff@example.com",
        password=PASSWORD,
        role=Role.STAFF,
        scope=UserScope(tenant.client_partner_id, tenant.merchant_id, tenant.store_id),
    )
    pos = await register_pos(container, tenant.store_id, clock, scopes=EVERY_SCOPE)
    response = await http.post(
        "/api/v1/auth/impersonate", json={"user_id": target.id}, headers=bearer(await access_token(http, pos))
    )
    # docs/security.md: users.impersonate is SYSTEM_OP and PSP_ADMIN only; a device is refused like any caller.
    assert_problem(response, 403, "operation_forbidden")


async def test_a_device_token_expires_after_90_seconds(
    container: Container, http: httpx.AsyncClient, tenant: Tenant, clock: FrozenClock
) -> None:
    pos = await register_pos(container, tenant.store_id, clock, scopes=["payment:read"])
    headers = bearer(await access_token(http, pos))

    clock.advance(89)
    assert (await http.get(INTENTS, headers=headers)).status_code == 200
    clock.advance(1)
    assert_problem(await http.get(INTENTS, headers=headers), 401, "invalid_access_token")


# ---------------------------------------------------------------------------------------------- registration


async def test_an_admin_registers_a_device_that_then_gets_tokens(
    container: Container, http: httpx.AsyncClient, tenant: Tenant, clock: FrozenClock
) -> None:
    admin = bearer(await user_token(container, http, Role.MERCHANT_ADMIN, tenant))
    key = ECKey.generate_key("P-256")
    public = dict(key.as_dict(private=False))

    response = await http.post(
        DEVICES,
        json=registration(tenant.store_id, public, scopes=["payment:read", "payment:create"]),
        headers=admin,
    )

    assert response.status_code == 201, response.text
    device = response.json()
    assert device["client_id"] == device["id"]
    assert device["id"].startswith("dev_")
    assert {
        name: device[name] for name in ("serial_number", "client_partner_id", "merchant_id", "store_id")
    } == {
        "serial_number": "ABC123",
        "client_partner_id": tenant.client_partner_id,
        "merchant_id": tenant.merchant_id,
        "store_id": tenant.store_id,
    }
    assert device["jwk"] == {name: public[name] for name in ("kty", "crv", "x", "y")}
    assert (device["scopes"], device["revoked_at"]) == (TILL_SCOPES, None)
    fetched = await http.get(f"{DEVICES}/{device['id']}", headers=admin)
    assert fetched.status_code == 200, fetched.text
    assert fetched.json() == device
    assert (await request_token(http, Pos(device["client_id"], key, clock).form())).status_code == 200


async def test_registration_refuses_keys_that_are_not_p256_public_keys_and_unknown_scopes(
    container: Container, http: httpx.AsyncClient, tenant: Tenant
) -> None:
    admin = bearer(await user_token(container, http, Role.MERCHANT_ADMIN, tenant))
    key = ECKey.generate_key("P-256")
    public = dict(key.as_dict(private=False))
    cases: dict[str, tuple[dict[str, Any], list[str], str]] = {
        "a private JWK (with d)": (dict(key.as_dict(private=True)), TILL_SCOPES, "invalid_device_key"),
        "an RSA key": (
            dict(RSAKey.generate_key(2048).as_dict(private=False)),
            TILL_SCOPES,
            "invalid_device_key",
        ),
        "a P-384 key": (
            dict(ECKey.generate_key("P-384").as_dict(private=False)),
            TILL_SCOPES,
            "invalid_device_key",
        ),
        "an Ed25519 key": (
            dict(OKPKey.generate_key("Ed25519").as_dict(private=False)),
            TILL_SCOPES,
            "invalid_device_key",
        ),
        "a point off the curve": (
            {**public, "y": ECKey.generate_key("P-256").as_dict(private=False)["y"]},
            TILL_SCOPES,
            "invalid_device_key",
        ),
        "an unknown scope": (public, ["payment:create", "admin:all"], "invalid_device_scopes"),
    }
    wrong = {}
    for case, (jwk, scopes, code) in cases.items():
        response = await http.post(
            DEVICES, json=registration(tenant.store_id, jwk, scopes=scopes), headers=admin
        )
        if (response.status_code, response.json().get("code")) != (422, code):
            wrong[case] = f"{response.status_code} {response.text[:160]}"
    assert not wrong, wrong
    assert (await http.get(DEVICES, headers=admin)).json()["data"] == []


async def test_one_live_device_per_serial_until_it_is_revoked(
    container: Container, http: httpx.AsyncClient, tenant: Tenant, clock: FrozenClock
) -> None:
    admin = bearer(await user_token(container, http, Role.MERCHANT_ADMIN, tenant))
    old_key, new_key = ECKey.generate_key("P-256"), ECKey.generate_key("P-256")
    first = await http.post(
        DEVICES, json=registration(tenant.store_id, old_key.as_dict(private=False)), headers=admin
    )
    assert first.status_code == 201, first.text
    old = Pos(first.json()["client_id"], old_key, clock)
    held = bearer(await access_token(http, old))

    duplicate = await http.post(
        DEVICES, json=registration(tenant.store_id, new_key.as_dict(private=False)), headers=admin
    )
    assert_problem(duplicate, 409, "device_exists")

    revoked = await http.post(f"{DEVICES}/{old.client_id}/revoke", headers=admin)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked_at"] is not None
    assert_oauth_error(await request_token(http, old.form()), 401, "invalid_client")
    # The token it already holds lives out its 90 seconds, and no longer.
    assert (await http.get(INTENTS, headers=held)).status_code == 200
    clock.advance(90)
    assert_problem(await http.get(INTENTS, headers=held), 401, "invalid_access_token")

    again = await http.post(
        DEVICES, json=registration(tenant.store_id, new_key.as_dict(private=False)), headers=admin
    )
    assert again.status_code == 201, again.text
    assert again.json()["client_id"] != old.client_id
    assert (
        await request_token(http, Pos(again.json()["client_id"], new_key, clock).form())
    ).status_code == 200
    assert_oauth_error(await request_token(http, old.form()), 401, "invalid_client")

    audit = await http.get(AUDIT_EVENTS, params={"object_id": old.client_id}, headers=admin)
    assert {event["action"] for event in audit.json()["data"]} == {"device.registered", "device.revoked"}


async def test_a_serial_live_at_one_merchant_registers_at_another(
    container: Container, tenant: Tenant, other_tenant: Tenant
) -> None:
    # Serials are unique per merchant: one tenant's terminal neither blocks nor reveals another tenant's.
    for store_id in (tenant.store_id, other_tenant.store_id):
        device = await container.devices.register(
            Principal.operator("test"),
            store_id=store_id,
            serial_number="SHARED-SN",
            jwk=ECKey.generate_key("P-256").as_dict(private=False),
            scopes=["payment:create"],
        )
        assert device.store_id == store_id


async def test_admins_see_and_register_devices_only_within_their_scope(
    container: Container, http: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, clock: FrozenClock
) -> None:
    sibling = await sibling_store(container)
    own = await register_pos(container, tenant.store_id, clock)
    siblings = await register_pos(container, sibling.store_id, clock)
    foreign = await register_pos(container, other_tenant.store_id, clock)
    merchant_admin = bearer(await user_token(container, http, Role.MERCHANT_ADMIN, tenant))
    store_manager = bearer(
        await user_token(container, http, Role.STORE_MANAGER, tenant, store_id=tenant.store_id)
    )
    staff = bearer(await user_token(container, http, Role.STAFF, tenant, store_id=tenant.store_id))

    async def listed(headers: dict[str, str], **params: int) -> set[str]:
        response = await http.get(DEVICES, params=params, headers=headers)
        assert response.status_code == 200, response.text
        return {device["client_id"] for device in response.json()["data"]}

    assert await listed(merchant_admin) == {own.client_id, siblings.client_id}
    assert await listed(merchant_admin, store_id=sibling.store_id) == {siblings.client_id}
    assert await listed(store_manager) == {own.client_id}
    assert_problem(
        await http.get(f"{DEVICES}/{foreign.client_id}", headers=merchant_admin), 404, "device_not_found"
    )
    assert_problem(
        await http.get(f"{DEVICES}/{siblings.client_id}", headers=store_manager), 404, "device_not_found"
    )
    revoked = await http.post(f"{DEVICES}/{foreign.client_id}/revoke", headers=merchant_admin)
    assert_problem(revoked, 404, "device_not_found")
    assert (await request_token(http, foreign.form())).status_code == 200  # untouched by the refused revoke
    assert_problem(await http.get(DEVICES, headers=staff), 403, "operation_forbidden")

    for headers, store_id in ((merchant_admin, other_tenant.store_id), (store_manager, sibling.store_id)):
        key = ECKey.generate_key("P-256").as_dict(private=False)
        response = await http.post(
            DEVICES, json=registration(store_id, key, serial=f"SN-{store_id}"), headers=headers
        )
        assert response.status_code == 404, response.text


async def test_a_store_outside_the_admins_scope_is_tenant_not_found(
    container: Container, http: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    admin = bearer(await user_token(container, http, Role.MERCHANT_ADMIN, tenant))
    # docs/security.md, "Scope": naming a tenant outside the scope is the same 404 tenant_not_found as naming one
    # that does not exist (as users and API clients answer).
    for store_id in (other_tenant.store_id, 999_999):
        key = ECKey.generate_key("P-256").as_dict(private=False)
        response = await http.post(DEVICES, json=registration(store_id, key), headers=admin)
        assert_problem(response, 404, "tenant_not_found")


@pytest.mark.postgres
async def test_concurrent_registrations_of_one_serial_leave_one_live_device(
    container: Container, tenant: Tenant
) -> None:
    async def register(key: ECKey) -> Device:
        return await container.devices.register(
            Principal.operator("test"),
            store_id=tenant.store_id,
            serial_number="ABC123",
            jwk=dict(key.as_dict(private=False)),
            scopes=TILL_SCOPES,
        )

    outcomes = await asyncio.gather(
        *(register(ECKey.generate_key("P-256")) for _ in range(5)), return_exceptions=True
    )

    assert Counter(type(outcome) for outcome in outcomes) == {Device: 1, DeviceExists: 4}, outcomes


# ---------------------------------------------------------------------------------------------- the worker's purge


async def test_the_purge_forgets_only_the_jtis_of_expired_assertions(
    container: Container, http: httpx.AsyncClient, tenant: Tenant, clock: FrozenClock
) -> None:
    pos = await register_pos(container, tenant.store_id, clock)
    now = int(clock.now().timestamp())
    short, long = pos.claims(exp=now + 60), pos.claims(exp=now + 240)
    for claims in (short, long):
        assert (await request_token(http, pos.form(signed(claims, pos.key)))).status_code == 200

    clock.advance(120)
    assert await container.devices.purge_spent_assertions() == 1

    async with container.db.reading() as session:
        kept = set((await session.execute(select(SpentAssertion.jti))).scalars())
    assert kept == {long["jti"]}
    # The live assertion stays spent; the forgotten one is refused anyway, as expired.
    for claims in (long, short):
        assert_oauth_error(await request_token(http, pos.form(signed(claims, pos.key))), 400, "invalid_grant")


# ---------------------------------------------------------------------------------------------- the CLI

PUBLIC_URL = "https://pay.example.com"


def cli_environment(directory: Path) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("PAYMUX_")}
    env.update(
        PAYMUX_DATABASE_URL=f"sqlite:///{directory / 'cli.db'}",
        PAYMUX_MASTER_KEY_FILE=str(directory / "master.key"),
        PAYMUX_LOG_LEVEL="WARNING",
        PAYMUX_PUBLIC_URL=PUBLIC_URL,
    )
    return env


def paymux(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "paymux", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@CLI_ON_SQLITE_ONLY
async def test_the_cli_registers_a_device_and_prints_what_it_needs(
    tmp_path: Path, clock: FrozenClock
) -> None:
    env = cli_environment(tmp_path)
    settings = Settings(
        database_url=env["PAYMUX_DATABASE_URL"],
        master_key=None,
        master_key_file=tmp_path / "master.key",
        redis_url=None,
        log_level="WARNING",
        public_url=PUBLIC_URL,
    )
    await asyncio.to_thread(migrations.upgrade, settings.database_url)
    application: FastAPI = create_app(settings, clock=clock)
    container: Container = application.state.container
    try:
        store = await bootstrap_tenant(container, partner="acme", merchant="M-1", store="S-1")
        key = ECKey.generate_key("P-256")
        jwk_file = tmp_path / "device-public.jwk.json"
        jwk_file.write_text(json.dumps(key.as_dict(private=False)), encoding="utf-8")

        result = await asyncio.to_thread(
            paymux,
            env,
            *("devices", "register", "--store", str(store.store_id), "--serial", "ABC123"),
            *("--jwk", str(jwk_file), "--scopes", "payment:read,payment:create", "--json"),
        )

        assert result.returncode == 0, result.stderr
        printed = json.loads(result.stdout)
        assert printed == {
            "client_id": printed["client_id"],
            "serial_number": "ABC123",
            "client_partner_id": store.client_partner_id,
            "merchant_id": store.merchant_id,
            "store_id": store.store_id,
            "scopes": TILL_SCOPES,
            "token_endpoint": PUBLIC_URL + DEVICE_TOKEN_PATH,
        }
        assert printed["client_id"].startswith("dev_")
        # What it printed is all a device needs: its client_id, and the token endpoint to name as aud.
        pos = Pos(printed["client_id"], key, clock)
        transport = httpx.ASGITransport(app=application, client=("203.0.113.9", 50002))
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
            response = await request_token(http, pos.form(pos.assertion(aud=printed["token_endpoint"])))
        assert response.status_code == 200, response.text
    finally:
        await container.close()


@CLI_ON_SQLITE_ONLY
def test_the_cli_refuses_a_file_that_is_not_a_jwk(tmp_path: Path) -> None:
    pem = tmp_path / "device-public.pem"
    pem.write_text(
        "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n"
    )

    result = paymux(
        cli_environment(tmp_path),
        *("devices", "register", "--store", "1", "--serial", "ABC123", "--jwk", str(pem)),
        *("--scopes", "payment:create", "--json"),
    )

    assert result.returncode != 0
    assert result.stdout == ""
    assert "cannot read a JWK" in " ".join(result.stderr.split())  # the console wraps long lines
