"""HMAC-SHA256 request signing of server calls (seed 003; reliability 2(e) "HMAC").

message = METHOD:PATH:timestamp:body, PATH with its query string as sent, body the raw bytes;
`Authorization: HMAC-SHA256 <client_id>:<timestamp>:<base64 signature>`. Timestamps more than 300 s from the
server's clock, unknown clients, bad signatures and replayed state-changing signatures are 401 problems.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from paymux.app import create_app
from paymux.auth.models import ApiClient
from paymux.auth.service import CACHE_TTL
from paymux.config import Settings
from paymux.container import Container
from paymux.core.clock import FrozenClock
from paymux.gateway import hmac_signing
from paymux.gateway.principal import Principal
from paymux.payments.models import PaymentIntent
from tests.conftest import empty_all_tables
from tests.support import ServerClient, Tenant, bearer, bootstrap_tenant, encode, intent_body

PROBLEM_JSON = "application/problem+json"
INTENTS = "/v1/payment_intents"

# Seed 003's worked example, and its signature computed outside Python as well:
#   printf '%s' "$MESSAGE" | openssl dgst -sha256 -hmac secret_abc123 -binary | base64
SEED_SECRET = "secret_abc123"
SEED_TIMESTAMP = 1706515200
SEED_BODY = b'{"merchant_ref_id":"REF123","amount":100000}'
SEED_MESSAGE = b'POST:/v1/payment_intents:1706515200:{"merchant_ref_id":"REF123","amount":100000}'
SEED_SIGNATURE = "ZF7pA9MazX2FQGcfTqRyIU32QB727BeyaS0sTZ8bZRk="


def stdlib_authorization(
    client_id: str, secret: str, method: str, path: str, timestamp: int, body: bytes
) -> str:
    """The header as a merchant would build it from the seed's formula, with the standard library only."""
    message = f"{method}:{path}:{timestamp}:".encode() + body
    digest = hmac.new(secret.encode("utf-8"), message, hashlib.sha256).digest()
    return f"HMAC-SHA256 {client_id}:{timestamp}:{base64.b64encode(digest).decode('ascii')}"


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == f"urn:paymux:problem:{code}"
    return body


def now_seconds(clock: FrozenClock) -> int:
    return int(clock.now().timestamp())


async def listed_with_ref(server: ServerClient, merchant_ref_id: str) -> int:
    response = await server.get(f"{INTENTS}?merchant_ref_id={merchant_ref_id}&limit=100")
    assert response.status_code == 200, response.text
    return len(response.json()["data"])


async def stored_with_ref(container: Container, merchant_ref_id: str) -> int:
    async with container.db.reading() as session:
        count = await session.execute(
            select(func.count())
            .select_from(PaymentIntent)
            .where(PaymentIntent.merchant_ref_id == merchant_ref_id)
        )
        return int(count.scalar_one())


async def retrieve(server: ServerClient, intent_id: str) -> dict[str, Any]:
    response = await server.get(f"{INTENTS}/{intent_id}")
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


# ---------------------------------------------------------------------------------------------- the format


def test_seed_003_example_signed_with_the_standard_library() -> None:
    message = b"POST" + b":" + b"/v1/payment_intents" + b":" + str(SEED_TIMESTAMP).encode() + b":" + SEED_BODY
    assert message == SEED_MESSAGE
    digest = hmac.new(SEED_SECRET.encode(), message, hashlib.sha256).digest()
    assert base64.b64encode(digest).decode() == SEED_SIGNATURE
    assert stdlib_authorization("mpac", SEED_SECRET, "POST", INTENTS, SEED_TIMESTAMP, SEED_BODY) == (
        f"HMAC-SHA256 mpac:{SEED_TIMESTAMP}:{SEED_SIGNATURE}"
    )


def test_paymux_signer_agrees_with_the_seed_example() -> None:
    assert hmac_signing.signing_message("POST", INTENTS, SEED_TIMESTAMP, SEED_BODY) == SEED_MESSAGE
    assert hmac_signing.sign(SEED_SECRET, "POST", INTENTS, SEED_TIMESTAMP, SEED_BODY) == SEED_SIGNATURE
    header = hmac_signing.authorization_header(
        "mpac", SEED_SECRET, "POST", INTENTS, SEED_TIMESTAMP, SEED_BODY
    )
    assert header == f"HMAC-SHA256 mpac:{SEED_TIMESTAMP}:{SEED_SIGNATURE}"
    parsed = hmac_signing.parse_authorization(header)
    assert (parsed.client_id, parsed.timestamp, parsed.signature) == ("mpac", SEED_TIMESTAMP, SEED_SIGNATURE)
    assert hmac_signing.verify(SEED_SECRET, "POST", INTENTS, parsed, SEED_BODY)
    assert not hmac_signing.verify(SEED_SECRET, "POST", INTENTS, parsed, SEED_BODY.replace(b"1", b"2", 1))


async def test_server_accepts_a_request_signed_with_the_standard_library(
    http: httpx.AsyncClient, tenant: Tenant, clock: FrozenClock
) -> None:
    fields = intent_body(tenant)
    body = encode(fields)
    authorization = stdlib_authorization(
        tenant.client_id, tenant.client_secret, "POST", INTENTS, now_seconds(clock), body
    )
    response = await http.post(
        INTENTS, content=body, headers={"Authorization": authorization, "Content-Type": "application/json"}
    )
    assert response.status_code == 201, response.text
    assert response.json()["amount"] == 1000

    # PATH is signed with its query string, exactly as sent.
    path = f"{INTENTS}?merchant_ref_id={fields['merchant_ref_id']}&limit=5"
    fetched = await http.get(
        path,
        headers={
            "Authorization": stdlib_authorization(
                tenant.client_id, tenant.client_secret, "GET", path, now_seconds(clock), b""
            )
        },
    )
    assert fetched.status_code == 200, fetched.text
    assert [row["id"] for row in fetched.json()["data"]] == [response.json()["id"]]


# ---------------------------------------------------------------------------------------------- PATH and body


async def test_signed_get_with_a_query_string(server: ServerClient, tenant: Tenant) -> None:
    first = await server.create_intent(tenant)
    second = await server.create_intent(tenant)

    page = await server.get(f"{INTENTS}?limit=1")
    assert page.status_code == 200, page.text
    assert [row["id"] for row in page.json()["data"]] == [second["id"]]
    assert page.json()["has_more"] is True

    filtered = await server.get(f"{INTENTS}?merchant_ref_id={first['merchant_ref_id']}&limit=5")
    assert filtered.status_code == 200, filtered.text
    assert [row["id"] for row in filtered.json()["data"]] == [first["id"]]

    encoded = await server.get(f"{INTENTS}?merchant_ref_id=NO%20SUCH%20REF")
    assert encoded.status_code == 200, encoded.text
    assert encoded.json()["data"] == []


async def test_tampered_query_string_is_refused(server: ServerClient, tenant: Tenant) -> None:
    await server.create_intent(tenant)
    await server.create_intent(tenant)
    signed = server.authorization("GET", f"{INTENTS}?limit=1")
    response = await server.http.get(f"{INTENTS}?limit=2", headers={"Authorization": signed})
    assert_problem(response, 401, "invalid_signature")


async def test_query_string_left_out_of_the_signed_path_is_refused(server: ServerClient) -> None:
    signed_without_query = server.authorization("GET", INTENTS)
    response = await server.http.get(f"{INTENTS}?limit=1", headers={"Authorization": signed_without_query})
    assert_problem(response, 401, "invalid_signature")

    signed_with_query = server.authorization("GET", f"{INTENTS}?limit=1")
    response = await server.http.get(INTENTS, headers={"Authorization": signed_with_query})
    assert_problem(response, 401, "invalid_signature")

    control = await server.http.get(f"{INTENTS}?limit=1", headers={"Authorization": signed_with_query})
    assert control.status_code == 200, control.text


async def test_path_is_signed(server: ServerClient, tenant: Tenant) -> None:
    intent = await server.create_intent(tenant)
    signed_for_cancel = server.authorization("POST", f"{INTENTS}/{intent['id']}/cancel")
    response = await server.http.post(
        f"{INTENTS}/{intent['id']}/confirm", headers={"Authorization": signed_for_cancel}
    )
    assert_problem(response, 401, "invalid_signature")
    assert (await retrieve(server, intent["id"]))["status"] == "requires_payment_method"


async def test_method_is_signed(server: ServerClient, tenant: Tenant) -> None:
    intent = await server.create_intent(tenant)
    path = f"{INTENTS}/{intent['id']}/cancel"
    signed_as_get = server.authorization("GET", path)
    response = await server.http.post(path, headers={"Authorization": signed_as_get})
    assert_problem(response, 401, "invalid_signature")
    assert (await retrieve(server, intent["id"]))["status"] == "requires_payment_method"


async def test_body_tampered_by_one_byte_is_refused(
    server: ServerClient, tenant: Tenant, container: Container
) -> None:
    body = intent_body(tenant, amount=1000)
    signed_bytes = encode(body)
    position = signed_bytes.index(b'"amount":1000') + len(b'"amount":100')
    tampered = signed_bytes[:position] + b"1" + signed_bytes[position + 1 :]
    assert len(tampered) == len(signed_bytes)
    assert sum(a != b for a, b in zip(signed_bytes, tampered, strict=True)) == 1

    response = await server.http.post(
        INTENTS,
        content=tampered,
        headers={
            "Authorization": server.authorization("POST", INTENTS, signed_bytes),
            "Content-Type": "application/json",
        },
    )
    assert_problem(response, 401, "invalid_signature")
    assert await listed_with_ref(server, body["merchant_ref_id"]) == 0
    assert await stored_with_ref(container, body["merchant_ref_id"]) == 0


async def test_empty_body_signed_but_a_body_sent_is_refused(server: ServerClient, tenant: Tenant) -> None:
    intent = await server.create_intent(tenant)
    path = f"{INTENTS}/{intent['id']}/cancel"
    response = await server.http.post(
        path,
        content=b'{"cancellation_reason":"x"}',
        headers={
            "Authorization": server.authorization("POST", path, b""),
            "Content-Type": "application/json",
        },
    )
    assert_problem(response, 401, "invalid_signature")
    assert (await retrieve(server, intent["id"]))["status"] == "requires_payment_method"


# ---------------------------------------------------------------------------------------------- timestamps


@pytest.mark.parametrize("offset", [-299, 299, -300, 300, 0])
async def test_timestamps_within_300_seconds_are_accepted(
    server: ServerClient, clock: FrozenClock, offset: int
) -> None:
    clock.set(clock.now().replace(microsecond=0))
    response = await server.get(INTENTS, timestamp=now_seconds(clock) + offset)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("offset", [-301, 301, -86_400, 86_400])
async def test_timestamps_more_than_300_seconds_away_are_refused(
    server: ServerClient, clock: FrozenClock, offset: int
) -> None:
    clock.set(clock.now().replace(microsecond=0))
    response = await server.get(INTENTS, timestamp=now_seconds(clock) + offset)
    assert_problem(response, 401, "timestamp_out_of_range")


async def test_timestamps_out_of_range_refuse_state_changes(
    server: ServerClient, tenant: Tenant, clock: FrozenClock, container: Container
) -> None:
    body = intent_body(tenant)
    response = await server.post(INTENTS, body, timestamp=now_seconds(clock) - 301)
    assert_problem(response, 401, "timestamp_out_of_range")
    assert await stored_with_ref(container, body["merchant_ref_id"]) == 0

    accepted = await server.post(INTENTS, body, timestamp=now_seconds(clock) - 299)
    assert accepted.status_code == 201, accepted.text


async def test_a_signed_request_held_back_past_the_window_is_refused(
    server: ServerClient, clock: FrozenClock
) -> None:
    signed = server.authorization("GET", INTENTS)
    clock.advance(timedelta(seconds=302))
    response = await server.http.get(INTENTS, headers={"Authorization": signed})
    assert_problem(response, 401, "timestamp_out_of_range")


# ---------------------------------------------------------------------------------------------- clients


async def test_unknown_client_is_refused(http: httpx.AsyncClient, clock: FrozenClock) -> None:
    authorization = stdlib_authorization(
        "cli_01JUNKNOWNCLIENT000000000000", "sk_whatever", "GET", INTENTS, now_seconds(clock), b""
    )
    response = await http.get(INTENTS, headers={"Authorization": authorization})
    assert_problem(response, 401, "unknown_client")


async def test_overlong_client_id_is_an_unknown_client(http: httpx.AsyncClient, clock: FrozenClock) -> None:
    authorization = stdlib_authorization("c" * 500, "sk_whatever", "GET", INTENTS, now_seconds(clock), b"")
    response = await http.get(INTENTS, headers={"Authorization": authorization})
    assert_problem(response, 401, "unknown_client")


async def test_revoked_client_is_an_unknown_client(
    server: ServerClient, tenant: Tenant, container: Container, clock: FrozenClock
) -> None:
    assert (await server.get(INTENTS)).status_code == 200
    await container.client_admin.revoke(Principal.operator("ops"), tenant.client_id)
    clock.advance(1)
    response = await server.get(INTENTS)
    assert_problem(response, 401, "unknown_client")


async def test_a_revocation_by_another_process_takes_effect_within_the_client_cache(
    server: ServerClient, tenant: Tenant, container: Container, clock: FrozenClock
) -> None:
    assert (await server.get(INTENTS)).status_code == 200  # the client is now cached in this process
    async with container.db.unit_of_work() as session:  # as another paymux process would revoke it
        await session.execute(
            update(ApiClient).where(ApiClient.id == tenant.client_id).values(revoked_at=clock.now())
        )
    clock.advance(1)
    assert (await server.get(INTENTS)).status_code == 200
    clock.advance(CACHE_TTL.total_seconds())
    assert_problem(await server.get(INTENTS), 401, "unknown_client")


async def test_wrong_secret_is_an_invalid_signature(
    http: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, clock: FrozenClock
) -> None:
    for secret in ("sk_not-the-secret", other_tenant.client_secret, tenant.client_secret + "x"):
        authorization = stdlib_authorization(
            tenant.client_id, secret, "GET", INTENTS, now_seconds(clock), b""
        )
        response = await http.get(INTENTS, headers={"Authorization": authorization})
        assert_problem(response, 401, "invalid_signature")


# ---------------------------------------------------------------------------------------------- malformed headers


def _malformed_headers(tenant: Tenant, clock: FrozenClock) -> list[tuple[str, str]]:
    ts = now_seconds(clock)
    signature = hmac_signing.sign(tenant.client_secret, "GET", INTENTS, ts, b"")
    cid = tenant.client_id
    return [
        # not the HMAC scheme at all: no credentials of a kind this route takes
        (f"HMAC-SHA1 {cid}:{ts}:{signature}", "missing_credentials"),
        (f"Basic {base64.b64encode(b'user:pass').decode()}", "missing_credentials"),
        (f"HMAC-SHA256:{cid}:{ts}:{signature}", "missing_credentials"),
        ("HMAC-SHA256", "missing_credentials"),
        # the scheme, with parts missing, empty or extra
        (f"HMAC-SHA256 {cid}", "invalid_signature"),
        (f"HMAC-SHA256 {cid}:{ts}", "invalid_signature"),
        (f"HMAC-SHA256 {cid}:{ts}:", "invalid_signature"),
        (f"HMAC-SHA256 :{ts}:{signature}", "invalid_signature"),
        (f"HMAC-SHA256 {cid}::{signature}", "invalid_signature"),
        (f"HMAC-SHA256 {cid}:{ts}:{signature}:extra", "invalid_signature"),
        # timestamps that are not Unix seconds
        (f"HMAC-SHA256 {cid}:now:{signature}", "invalid_signature"),
        (f"HMAC-SHA256 {cid}:-{ts}:{signature}", "invalid_signature"),
        (f"HMAC-SHA256 {cid}:{ts}.0:{signature}", "invalid_signature"),
        (f"HMAC-SHA256 {cid}:1.7e9:{signature}", "invalid_signature"),
        (f"HMAC-SHA256 {cid}:0x{ts:x}:{signature}", "invalid_signature"),
        (f"HMAC-SHA256 {cid}:{'9' * 40}:{signature}", "invalid_signature"),
        # a signature that is not the base64 of the right digest
        (f"HMAC-SHA256 {cid}:{ts}:{signature[:-4]}", "invalid_signature"),
        (f"HMAC-SHA256 {cid}:{ts}:{signature.lower()}", "invalid_signature"),
    ]


async def test_malformed_authorization_headers_are_401_problems(
    http: httpx.AsyncClient, tenant: Tenant, clock: FrozenClock
) -> None:
    cases = _malformed_headers(tenant, clock)
    for header, code in cases:
        response = await http.get(INTENTS, headers={"Authorization": header})
        assert response.status_code == 401, (header, response.text)
        assert response.headers["content-type"].startswith(PROBLEM_JSON), header
        assert response.json()["code"] == code, (header, response.json())
    # The same credentials, well-formed, are accepted: the cases above fail on their form alone.
    good = f"HMAC-SHA256 {tenant.client_id}:{now_seconds(clock)}:" + hmac_signing.sign(
        tenant.client_secret, "GET", INTENTS, now_seconds(clock), b""
    )
    assert (await http.get(INTENTS, headers={"Authorization": good})).status_code == 200


async def test_non_ascii_digit_timestamp_is_a_401_not_a_crash(settings: Settings, clock: FrozenClock) -> None:
    # U+00B2 SUPERSCRIPT TWO is a latin-1 header byte; '²'.isdigit() is True but int('²') raises ValueError.
    # An app of its own: CRITICAL logging spares the 5 s console rendering of the crash's traceback, and the
    # transport hands back the 500 a real client would get instead of re-raising the app's exception.
    application = create_app(settings.model_copy(update={"log_level": "CRITICAL"}), clock=clock)
    container: Container = application.state.container
    transport = httpx.ASGITransport(
        app=application, raise_app_exceptions=False, client=("203.0.113.7", 50000)
    )
    try:
        if container.redis is not None:
            await container.redis.flushdb()
        tenant = await bootstrap_tenant(container, partner="acme", merchant="M-1", store="S-1")
        header = f"HMAC-SHA256 {tenant.client_id}:".encode() + b"\xb2:c2lnbmF0dXJl"
        async with httpx.AsyncClient(transport=transport, base_url="http://paymux.test") as client:
            response = await client.get(INTENTS, headers={b"Authorization": header})
        assert_problem(response, 401, "invalid_signature")
    finally:
        await empty_all_tables(container.db)
        if container.redis is not None:
            await container.redis.flushdb()
        await container.close()


async def test_missing_authorization_is_missing_credentials_with_a_challenge(
    http: httpx.AsyncClient, tenant: Tenant, container: Container
) -> None:
    # Every route takes any credential kind, so the challenge names both schemes.
    listed = await http.get(INTENTS)
    assert_problem(listed, 401, "missing_credentials")
    assert listed.headers["www-authenticate"] == "HMAC-SHA256, Bearer"

    body = intent_body(tenant)
    created = await http.post(INTENTS, content=encode(body), headers={"Content-Type": "application/json"})
    assert_problem(created, 401, "missing_credentials")
    assert created.headers["www-authenticate"] == "HMAC-SHA256, Bearer"
    assert await stored_with_ref(container, body["merchant_ref_id"]) == 0

    transaction = await http.get("/v1/transactions/txn_whatever")
    assert_problem(transaction, 401, "missing_credentials")
    assert transaction.headers["www-authenticate"] == "HMAC-SHA256, Bearer"


async def test_intent_routes_challenge_for_both_schemes(server: ServerClient, tenant: Tenant) -> None:
    intent = await server.create_intent(tenant)
    response = await server.http.get(f"{INTENTS}/{intent['id']}")
    assert_problem(response, 401, "missing_credentials")
    challenge = response.headers["www-authenticate"]
    assert "HMAC-SHA256" in challenge
    assert "Bearer" in challenge


async def test_intent_route_challenge_is_a_valid_challenge_list(server: ServerClient, tenant: Tenant) -> None:
    intent = await server.create_intent(tenant)
    response = await server.http.get(f"{INTENTS}/{intent['id']}")
    assert response.status_code == 401
    # RFC 9110 11.6.1: WWW-Authenticate = #challenge, challenges separated by commas.
    challenges = {part.strip() for part in response.headers["www-authenticate"].split(",")}
    assert challenges == {"HMAC-SHA256", "Bearer"}


# ---------------------------------------------------------------------------------------------- replay


def _captured(server: ServerClient, path: str, body: bytes, key: str | None) -> dict[str, str]:
    headers = {"Authorization": server.authorization("POST", path, body), "Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return headers


def _with_key(headers: dict[str, str], key: str | None) -> dict[str, str]:
    replayed = {name: value for name, value in headers.items() if name != "Idempotency-Key"}
    if key is not None:
        replayed["Idempotency-Key"] = key
    return replayed


async def test_captured_post_replayed_under_another_key_or_none_is_refused(
    server: ServerClient, tenant: Tenant, container: Container
) -> None:
    body = intent_body(tenant)
    raw = encode(body)
    captured = _captured(server, INTENTS, raw, "key-original")
    first = await server.http.post(INTENTS, content=raw, headers=captured)
    assert first.status_code == 201, first.text

    for key in ("key-attacker", None, ""):
        replay = await server.http.post(INTENTS, content=raw, headers=_with_key(captured, key))
        assert_problem(replay, 401, "signature_replayed")

    assert await listed_with_ref(server, body["merchant_ref_id"]) == 1
    assert await stored_with_ref(container, body["merchant_ref_id"]) == 1


async def test_captured_post_without_a_key_cannot_be_replayed_with_or_without_one(
    server: ServerClient, tenant: Tenant, container: Container
) -> None:
    body = intent_body(tenant)
    raw = encode(body)
    captured = _captured(server, INTENTS, raw, None)
    first = await server.http.post(INTENTS, content=raw, headers=captured)
    assert first.status_code == 201, first.text

    for key in (None, "key-attacker"):
        replay = await server.http.post(INTENTS, content=raw, headers=_with_key(captured, key))
        assert_problem(replay, 401, "signature_replayed")
    assert await stored_with_ref(container, body["merchant_ref_id"]) == 1


async def test_captured_post_retried_with_its_own_key_gets_the_idempotent_replay(
    server: ServerClient, tenant: Tenant, container: Container
) -> None:
    body = intent_body(tenant)
    raw = encode(body)
    captured = _captured(server, INTENTS, raw, "key-retry")
    first = await server.http.post(INTENTS, content=raw, headers=captured)
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers

    again = await server.http.post(INTENTS, content=raw, headers=captured)
    assert again.status_code == 201, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    assert await stored_with_ref(container, body["merchant_ref_id"]) == 1


async def test_captured_refund_cannot_be_replayed_to_refund_twice(
    server: ServerClient, tenant: Tenant
) -> None:
    intent = await server.create_intent(tenant, amount=1000)
    confirmed = await server.post(f"{INTENTS}/{intent['id']}/confirm")
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["status"] == "succeeded"

    path = f"{INTENTS}/{intent['id']}/refund"
    raw = encode({"amount": 100})
    captured = _captured(server, path, raw, None)
    refund = await server.http.post(path, content=raw, headers=captured)
    assert refund.status_code == 201, refund.text

    replay = await server.http.post(path, content=raw, headers=captured)
    assert_problem(replay, 401, "signature_replayed")
    assert (await retrieve(server, intent["id"]))["amount_refunded"] == 100


async def test_replay_is_refused_even_when_the_first_request_failed(
    server: ServerClient, tenant: Tenant, container: Container
) -> None:
    missing_store = intent_body(tenant, store_id=987_654)
    raw = encode(missing_store)
    captured = _captured(server, INTENTS, raw, None)
    first = await server.http.post(INTENTS, content=raw, headers=captured)
    assert_problem(first, 404, "store_not_found")
    replay = await server.http.post(INTENTS, content=raw, headers=captured)
    assert_problem(replay, 401, "signature_replayed")


async def test_a_get_signature_may_be_reused(server: ServerClient, tenant: Tenant) -> None:
    intent = await server.create_intent(tenant)
    path = f"{INTENTS}/{intent['id']}"
    headers = {"Authorization": server.authorization("GET", path)}
    first = await server.http.get(path, headers=headers)
    second = await server.http.get(path, headers=headers)
    assert first.status_code == 200, first.text
    assert second.status_code == 200, second.text
    assert first.json() == second.json()


async def test_the_same_request_signed_anew_is_not_a_replay(
    server: ServerClient, tenant: Tenant, clock: FrozenClock
) -> None:
    intent = await server.create_intent(tenant)
    path = f"{INTENTS}/{intent['id']}/cancel"
    first = await server.post(path, idempotency_key="cancel-1")
    assert first.status_code == 200, first.text
    clock.advance(1)
    again = await server.post(path, idempotency_key="cancel-1")
    assert again.status_code == 200, again.text
    assert again.headers["idempotent-replayed"] == "true"


async def test_payment_token_lists_only_its_own_intent(server: ServerClient, tenant: Tenant) -> None:
    await server.create_intent(tenant)
    intent = await server.create_intent(tenant)
    response = await server.http.get(INTENTS, headers=bearer(intent["payment_token"]))
    assert [item["id"] for item in response.json()["data"]] == [intent["id"]]
