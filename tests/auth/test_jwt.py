"""Access tokens under attack, the JWKS, and key rotation (docs/security.md, "Portal users", "Keys").

paymux verifies only with its own keys, by `kid`, with the algorithm pinned to ES256. Every forged, tampered,
expired or not-yet-valid token is `401 invalid_access_token` at GET /api/v1/merchants; no token at all is
`401 missing_credentials`. The forged tokens are built here with PyJWT and cryptography directly; each attack has
a control next to it (the same construction done right is accepted), so a refusal means the check, not a broken
harness.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from fastapi import FastAPI

from paymux.app import create_app
from paymux.auth.keys import CACHE_SECONDS, CLOCK_SKEW_SECONDS
from paymux.auth.models import SigningKey
from paymux.auth.users import UserScope
from paymux.config import Settings
from paymux.container import Container
from paymux.core.clock import FrozenClock
from paymux.core.ids import new_id
from paymux.gateway.principal import Role
from tests.live import serving
from tests.support import ServerClient, Tenant, bearer

PASSWORD = "correct horse battery staple"
MERCHANTS = "/api/v1/merchants"
JWKS = "/.well-known/jwks.json"
PROBLEM_JSON = "application/problem+json"
ISSUER = "svc-portal-users"
ACCESS_TTL = 900


# ---------------------------------------------------------------------------------------------- helpers


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def claims_of(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def attacker_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_jwk(key: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
    jwk: dict[str, Any] = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    return jwk


def es256(claims: dict[str, Any], key: ec.EllipticCurvePrivateKey, **header: Any) -> str:
    return jwt.encode(claims, key, algorithm="ES256", headers=header)


def es256_raw(header: dict[str, Any], claims: dict[str, Any], key: ec.EllipticCurvePrivateKey) -> str:
    """ES256 by hand, for headers PyJWT refuses to write."""
    signing_input = f"{segment(header)}.{segment(claims)}"
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


async def paymux_key(container: Container, kid: str) -> ec.EllipticCurvePrivateKey:
    """The private key paymux keeps sealed for `kid`: the one thing an attacker does not have."""
    async with container.db.reading() as session:
        row = await session.get(SigningKey, kid)
    assert row is not None
    pem = container.cipher.open(row.private_key_sealed, context=f"signing_key:{kid}")
    key = serialization.load_pem_private_key(pem, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


async def published(http: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    response = await http.get(JWKS)
    assert response.status_code == 200, response.text
    return {key["kid"]: key for key in response.json()["keys"]}


async def probe(http: httpx.AsyncClient, token: str) -> httpx.Response:
    return await http.get(MERCHANTS, headers=bearer(token))


async def assert_accepted(http: httpx.AsyncClient, token: str) -> None:
    response = await probe(http, token)
    assert response.status_code == 200, response.text


async def assert_refused(http: httpx.AsyncClient, token: str, code: str = "invalid_access_token") -> str:
    response = await probe(http, token)
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body = response.json()
    assert (body["status"], body["code"]) == (401, code), body
    detail: str = body["detail"] or ""
    return detail


class Issued:
    """A signed-in merchant admin: its real tokens, and the claims a well-formed token of it carries."""

    def __init__(self, tokens: dict[str, Any], clock: FrozenClock) -> None:
        self.access_token: str = tokens["access_token"]
        self.header = jwt.get_unverified_header(self.access_token)
        self.kid: str = self.header["kid"]
        self.claims = claims_of(self.access_token)
        self.clock = clock

    def fresh_claims(self, *, drop: tuple[str, ...] = (), **changes: Any) -> dict[str, Any]:
        now = int(self.clock.now().timestamp())
        claims = {**self.claims, "iat": now, "exp": now + ACCESS_TTL, "jti": new_id("jti"), **changes}
        return {key: value for key, value in claims.items() if key not in drop}


@pytest.fixture
async def issued(http: httpx.AsyncClient, container: Container, tenant: Tenant, clock: FrozenClock) -> Issued:
    await container.users.create(
        email="ada@example.com",
        password=PASSWORD,
        role=Role.MERCHANT_ADMIN,
        scope=UserScope(tenant.client_partner_id, tenant.merchant_id),
    )
    response = await http.post("/api/v1/auth/login", json={"email": "ada@example.com", "password": PASSWORD})
    assert response.status_code == 200, response.text
    return Issued(response.json(), clock)


@pytest.fixture
async def real_key(container: Container, issued: Issued) -> ec.EllipticCurvePrivateKey:
    return await paymux_key(container, issued.kid)


@asynccontextmanager
async def another_process(settings: Settings, clock: FrozenClock) -> AsyncIterator[FastAPI]:
    """A second paymux process on the same database (its own key cache); the `app` fixture cleans up."""
    application = create_app(settings, clock=clock)
    try:
        yield application
    finally:
        container: Container = application.state.container
        await container.close()


def client_of(application: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=application, client=("203.0.113.8", 50001))
    return httpx.AsyncClient(transport=transport, base_url="http://paymux.test")


# ---------------------------------------------------------------------------------------------- controls


async def test_the_forging_harness_makes_accepted_tokens_when_it_holds_the_key(
    http: httpx.AsyncClient, container: Container, issued: Issued, real_key: ec.EllipticCurvePrivateKey
) -> None:
    await assert_accepted(http, issued.access_token)
    await assert_accepted(http, es256(issued.fresh_claims(), real_key, kid=issued.kid))
    await assert_accepted(http, await container.signing_keys.sign(issued.fresh_claims()))
    # The scheme name is case-insensitive, as HTTP says.
    response = await http.get(MERCHANTS, headers={"Authorization": f"bearer {issued.access_token}"})
    assert response.status_code == 200, response.text


# ---------------------------------------------------------------------------------------------- algorithms


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
async def test_alg_none_is_refused(http: httpx.AsyncClient, issued: Issued, alg: str) -> None:
    header = {"alg": alg, "typ": "JWT", "kid": issued.kid}
    unsigned = f"{segment(header)}.{segment(issued.fresh_claims(role='SYSTEM_OP', psp_id=None))}"
    await assert_refused(http, unsigned + ".")
    # ... also with a real signature left in place.
    await assert_refused(http, unsigned + "." + issued.access_token.split(".")[2])


@pytest.mark.parametrize("variant", ["pem", "pem-without-newline", "der", "jwk-json"])
async def test_hs256_signed_with_the_public_key_is_refused(
    http: httpx.AsyncClient, issued: Issued, variant: str
) -> None:
    jwk = (await published(http))[issued.kid]
    public = jwt.PyJWK(jwk).key
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    secret = {
        "pem": pem,
        "pem-without-newline": pem.rstrip(b"\n"),
        "der": public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "jwk-json": json.dumps(jwk).encode(),
    }[variant]
    header = {"alg": "HS256", "typ": "JWT", "kid": issued.kid}
    signing_input = f"{segment(header)}.{segment(issued.fresh_claims(role='SYSTEM_OP', psp_id=None))}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    await assert_refused(http, f"{signing_input}.{b64url(signature)}")


async def test_other_asymmetric_algorithms_are_refused(http: httpx.AsyncClient, issued: Issued) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for alg in ("RS256", "PS256"):
        await assert_refused(
            http, jwt.encode(issued.fresh_claims(), rsa_key, algorithm=alg, headers={"kid": issued.kid})
        )
    p384 = ec.generate_private_key(ec.SECP384R1())
    await assert_refused(
        http, jwt.encode(issued.fresh_claims(), p384, algorithm="ES384", headers={"kid": issued.kid})
    )


# ---------------------------------------------------------------------------------------------- keys


async def test_an_unknown_or_missing_kid_is_refused_even_with_the_real_key(
    http: httpx.AsyncClient, issued: Issued, real_key: ec.EllipticCurvePrivateKey
) -> None:
    claims = issued.fresh_claims()
    assert "Unknown signing key" in await assert_refused(http, es256(claims, real_key, kid=new_id("key")))
    await assert_refused(http, es256(claims, real_key))  # no kid at all
    await assert_refused(http, es256_raw({"alg": "ES256", "kid": [issued.kid]}, claims, real_key))
    await assert_accepted(http, es256_raw({"alg": "ES256", "kid": issued.kid}, claims, real_key))


async def test_a_token_signed_by_another_key_under_our_kid_is_refused(
    http: httpx.AsyncClient, issued: Issued
) -> None:
    detail = await assert_refused(http, es256(issued.fresh_claims(), attacker_key(), kid=issued.kid))
    assert "does not verify" in detail


async def test_a_tampered_payload_is_refused(http: httpx.AsyncClient, issued: Issued) -> None:
    header, _, signature = issued.access_token.split(".")
    escalated = {**issued.claims, "role": "SYSTEM_OP", "psp_id": None, "merchant_id": None}
    await assert_refused(http, f"{header}.{segment(escalated)}.{signature}")
    flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    await assert_refused(http, f"{header}.{issued.access_token.split('.')[1]}.{flipped}")


@pytest.mark.parametrize("carrier", ["jwk", "jku", "x5u", "x5c"])
async def test_a_key_carried_in_the_token_is_refused(
    http: httpx.AsyncClient, issued: Issued, real_key: ec.EllipticCurvePrivateKey, carrier: str
) -> None:
    forger = attacker_key()
    value: Any = {
        "jwk": public_jwk(forger),
        "jku": "https://attacker.example/jwks.json",
        "x5u": "https://attacker.example/cert.pem",
        "x5c": [b64url(b"not really a certificate")],
    }[carrier]
    claims = issued.fresh_claims(role="SYSTEM_OP", psp_id=None)
    # The attack: the attacker's own key, named in the token, with or without our kid.
    await assert_refused(http, es256(claims, forger, **{carrier: value}))
    await assert_refused(http, es256(claims, forger, kid=issued.kid, **{carrier: value}))
    # paymux verifies with its own keys only: such a header is refused even on a token it signed.
    detail = await assert_refused(
        http, es256(issued.fresh_claims(), real_key, kid=issued.kid, **{carrier: value})
    )
    assert "own keys" in detail


# ---------------------------------------------------------------------------------------------- claims


@pytest.mark.parametrize(
    "changes",
    [
        {"iss": "svc-evil"},
        {"iss": ISSUER.upper()},
        {"aud": "other-service"},
        {"aud": ["other-service"]},
        {"aud": ""},
    ],
    ids=["iss", "iss-case", "aud", "aud-list", "aud-empty"],
)
async def test_a_wrong_issuer_or_audience_is_refused(
    http: httpx.AsyncClient, container: Container, issued: Issued, changes: dict[str, Any]
) -> None:
    await assert_refused(http, await container.signing_keys.sign(issued.fresh_claims(**changes)))


async def test_an_access_token_expires_after_fifteen_minutes(
    http: httpx.AsyncClient, issued: Issued, clock: FrozenClock
) -> None:
    clock.advance(ACCESS_TTL - 1)
    await assert_accepted(http, issued.access_token)
    clock.advance(2)
    assert "expired" in await assert_refused(http, issued.access_token)


async def test_a_token_from_the_future_is_refused(
    http: httpx.AsyncClient, container: Container, issued: Issued, clock: FrozenClock
) -> None:
    issued_at = clock.now()
    clock.set(issued_at - timedelta(seconds=60))  # paymux's clock went back: iat is a minute ahead
    assert "not valid yet" in await assert_refused(http, issued.access_token)
    clock.set(issued_at)
    await assert_accepted(http, issued.access_token)

    now = int(clock.now().timestamp())
    ahead = issued.fresh_claims(iat=now + 60, exp=now + 60 + ACCESS_TTL)
    await assert_refused(http, await container.signing_keys.sign(ahead))


async def test_a_token_with_nbf_in_the_future_is_refused(
    http: httpx.AsyncClient, container: Container, issued: Issued, clock: FrozenClock
) -> None:
    now = int(clock.now().timestamp())
    assert "not valid yet" in await assert_refused(
        http, await container.signing_keys.sign(issued.fresh_claims(nbf=now + 60))
    )
    await assert_accepted(http, await container.signing_keys.sign(issued.fresh_claims(nbf=now)))


@pytest.mark.parametrize("claim", ["jti", "sub", "exp", "iat", "iss", "aud", "role"])
async def test_a_token_missing_a_claim_is_refused(
    http: httpx.AsyncClient, container: Container, issued: Issued, claim: str
) -> None:
    await assert_refused(http, await container.signing_keys.sign(issued.fresh_claims(drop=(claim,))))


@pytest.mark.parametrize("role", ["ADMIN", "system_op", "SYSTEM_OP ", "", None, 5])
async def test_a_role_that_is_not_one_of_the_five_is_refused(
    http: httpx.AsyncClient, container: Container, issued: Issued, role: Any
) -> None:
    detail = await assert_refused(http, await container.signing_keys.sign(issued.fresh_claims(role=role)))
    assert "role" in detail


@pytest.mark.parametrize("role", [["SYSTEM_OP"], {"name": "SYSTEM_OP"}], ids=["list", "object"])
async def test_a_role_that_is_not_a_string_is_refused(
    http: httpx.AsyncClient, container: Container, issued: Issued, role: Any
) -> None:
    """Only a token paymux signed gets this far, so this is robustness, not a way in."""
    await assert_refused(http, await container.signing_keys.sign(issued.fresh_claims(role=role)))


@pytest.mark.parametrize(
    "changes",
    [{"psp_id": "1"}, {"merchant_id": "1"}, {"store_id": "1"}, {"psp_id": 1.0}, {"merchant_id": True}],
    ids=["psp_id-str", "merchant_id-str", "store_id-str", "psp_id-float", "merchant_id-bool"],
)
async def test_tenant_ids_that_are_not_integers_are_refused(
    http: httpx.AsyncClient, container: Container, issued: Issued, changes: dict[str, Any]
) -> None:
    await assert_refused(http, await container.signing_keys.sign(issued.fresh_claims(**changes)))


@pytest.mark.parametrize(
    "token",
    ["garbage", "a.b.c", "e30.e30.", "..", "eyJhbGciOiJFUzI1NiJ9", "tok_" + "A" * 43, "Bearer x.y.z"],
)
async def test_garbage_is_refused(http: httpx.AsyncClient, issued: Issued, token: str) -> None:
    # A `tok_` credential is taken for a payment token, anything else for an access token.
    await assert_refused(
        http, token, "invalid_payment_token" if token.startswith("tok_") else "invalid_access_token"
    )


async def test_no_bearer_token_is_missing_credentials(
    http: httpx.AsyncClient, issued: Issued, server: ServerClient
) -> None:
    response = await http.get(MERCHANTS)
    assert response.status_code == 401, response.text
    assert response.json()["code"] == "missing_credentials"
    assert response.headers["www-authenticate"] == "HMAC-SHA256, Bearer"
    basic = await http.get(MERCHANTS, headers={"Authorization": "Basic YWRhOnB3"})
    assert basic.json()["code"] == "missing_credentials"
    # A signed server is a known caller, but the merchants listing is a portal operation.
    signed = await server.get(MERCHANTS)
    assert (signed.status_code, signed.json()["code"]) == (403, "operation_forbidden")


# ---------------------------------------------------------------------------------------------- JWKS


async def test_the_jwks_publishes_the_public_key_only(http: httpx.AsyncClient, container: Container) -> None:
    assert (await http.get(JWKS)).json() == {"keys": []}  # no key before the first token
    kid = await container.signing_keys.rotate()
    response = await http.get(JWKS)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=60"
    (jwk,) = response.json()["keys"]
    assert set(jwk) == {"kty", "crv", "x", "y", "kid", "alg", "use"}  # no "d": nothing private
    assert (jwk["kty"], jwk["crv"], jwk["kid"], jwk["alg"], jwk["use"]) == (
        "EC",
        "P-256",
        kid,
        "ES256",
        "sig",
    )
    assert (await paymux_key(container, kid)).public_key() == jwt.PyJWK(jwk).key


async def test_a_jwks_client_verifies_paymux_tokens(
    app: FastAPI, http: httpx.AsyncClient, issued: Issued
) -> None:
    async with serving(app) as base_url:
        client = jwt.PyJWKClient(f"{base_url}{JWKS}")
        signing_key = await asyncio.to_thread(client.get_signing_key_from_jwt, issued.access_token)
        assert signing_key.key_id == issued.kid
        claims = jwt.decode(
            issued.access_token, signing_key.key, audience="paymux", issuer=ISSUER, algorithms=["ES256"]
        )
        assert claims == issued.claims
        # The client really verifies: a token signed by someone else under our kid does not pass.
        forged = es256(issued.fresh_claims(), attacker_key(), kid=issued.kid)
        with pytest.raises(jwt.InvalidSignatureError):
            jwt.decode(forged, signing_key.key, audience="paymux", issuer=ISSUER, algorithms=["ES256"])


async def test_rotation_keeps_the_previous_key_until_its_tokens_have_expired(
    app: FastAPI,
    http: httpx.AsyncClient,
    container: Container,
    settings: Settings,
    issued: Issued,
    clock: FrozenClock,
) -> None:
    old_kid = issued.kid
    old_key = await paymux_key(container, old_kid)
    rotated_at = clock.now()
    new_kid = await container.signing_keys.rotate()
    assert new_kid != old_kid

    after = await http.post("/api/v1/auth/login", json={"email": "ada@example.com", "password": PASSWORD})
    new_token = after.json()["access_token"]
    assert jwt.get_unverified_header(new_token)["kid"] == new_kid
    await assert_accepted(http, new_token)
    await assert_accepted(http, issued.access_token)  # signed before the rotation
    assert list(await published(http)) == [new_kid, old_kid]  # newest first

    # A JWKS client verifies both, through the rotation.
    async with serving(app) as base_url:
        client = jwt.PyJWKClient(f"{base_url}{JWKS}", cache_jwk_set=False)
        for token in (issued.access_token, new_token):
            key = await asyncio.to_thread(client.get_signing_key_from_jwt, token)
            jwt.decode(token, key.key, audience="paymux", issuer=ISSUER, algorithms=["ES256"])

    # A long-lived token under the old key tells "key gone" apart from "token expired".
    long_lived = es256(
        issued.fresh_claims(exp=int(rotated_at.timestamp()) + 10 * ACCESS_TTL), old_key, kid=old_kid
    )
    await assert_accepted(http, long_lived)

    # Published for the access TTL, plus the time another process may keep signing with the retired key (its
    # cache) and the clock skew allowed.
    published_for = ACCESS_TTL + CACHE_SECONDS + CLOCK_SKEW_SECONDS
    clock.set(rotated_at + timedelta(seconds=published_for - 1))
    async with another_process(settings, clock) as fresh, client_of(fresh) as elsewhere:
        assert list(await published(elsewhere)) == [new_kid, old_kid]
        await assert_accepted(elsewhere, long_lived)

    clock.set(rotated_at + timedelta(seconds=published_for + 1))
    async with another_process(settings, clock) as fresh, client_of(fresh) as elsewhere:
        assert list(await published(elsewhere)) == [new_kid]
        await assert_refused(elsewhere, issued.access_token)
        assert "Unknown signing key" in await assert_refused(elsewhere, long_lived)
        relogin = await elsewhere.post(
            "/api/v1/auth/login", json={"email": "ada@example.com", "password": PASSWORD}
        )
        assert jwt.get_unverified_header(relogin.json()["access_token"])["kid"] == new_kid
        await assert_accepted(elsewhere, relogin.json()["access_token"])

    # The same process sees it too once its key cache is refreshed (a rotation clears it).
    newest_kid = await container.signing_keys.rotate()
    assert list(await published(http)) == [newest_kid, new_kid]
    assert "Unknown signing key" in await assert_refused(http, long_lived)


async def test_a_token_signed_by_a_process_that_has_not_seen_the_rotation_verifies_until_it_expires(
    container: Container, settings: Settings, issued: Issued, clock: FrozenClock
) -> None:
    async with another_process(settings, clock) as lagging, client_of(lagging) as lagging_http:
        # The second process signs once, so it has the current key list cached.
        warmup = await lagging_http.post(
            "/api/v1/auth/login", json={"email": "ada@example.com", "password": PASSWORD}
        )
        assert jwt.get_unverified_header(warmup.json()["access_token"])["kid"] == issued.kid

        assert lagging.state.container is not container
        rotated_at = clock.now()
        new_kid = await container.signing_keys.rotate()  # in the first process

        # 20 seconds later the lagging process (within its 30 s cache) signs again: today with the retired key
        # (`issued.kid`, not `new_kid`), which is what the docs allow ("how soon another process sees a rotation").
        clock.advance(20)
        late = await lagging_http.post(
            "/api/v1/auth/login", json={"email": "ada@example.com", "password": PASSWORD}
        )
        token = late.json()["access_token"]
        signed_with = jwt.get_unverified_header(token)["kid"]
        assert signed_with in {issued.kid, new_kid}
        assert claims_of(token)["exp"] == int(rotated_at.timestamp()) + 20 + ACCESS_TTL

    # 910 s after the rotation the token has 10 s to live: the docs promise the key stays published (and
    # accepted) until every token it signed has expired.
    clock.set(rotated_at + timedelta(seconds=ACCESS_TTL + 10))
    async with another_process(settings, clock) as verifier, client_of(verifier) as verifier_http:
        assert signed_with in await published(verifier_http)
        await assert_accepted(verifier_http, token)
