"""Idempotency-Key on every POST (reliability 2(b)): one effect per key, the first response replayed.

Keys belong to one API client and live 24 hours. Same key + same request replays the first status and body with
`Idempotent-Replayed: true`; same key + another body or path is 422 idempotency_key_reused; request validation
failures are not stored; domain 4xx results are; concurrent duplicates produce one effect, the others the replay
or 409 idempotency_request_in_progress.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from paymux.container import Container
from paymux.core.clock import FrozenClock
from paymux.gateway.models import IdempotencyRecord
from paymux.payments.models import PaymentIntent
from tests.support import ServerClient, Tenant, bearer, encode, intent_body

PROBLEM_JSON = "application/problem+json"
INTENTS = "/v1/payment_intents"
REPLAYED = "idempotent-replayed"


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    return body


def assert_fresh(response: httpx.Response, status: int) -> None:
    """The request ran: the expected status, and no replay marker."""
    assert response.status_code == status, response.text
    assert REPLAYED not in response.headers


def assert_replay_of(response: httpx.Response, first: httpx.Response) -> None:
    assert response.status_code == first.status_code, response.text
    assert response.headers[REPLAYED] == "true"
    assert response.json() == first.json()
    if first.status_code < 400:
        assert response.content == first.content
    assert response.headers["content-type"] == first.headers["content-type"]


async def listed_with_ref(server: ServerClient, merchant_ref_id: str) -> list[dict[str, Any]]:
    response = await server.get(f"{INTENTS}?merchant_ref_id={merchant_ref_id}&limit=100")
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()["data"]
    return rows


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


# ---------------------------------------------------------------------------------------------- replay


async def test_same_key_and_body_replays_the_first_response(
    server: ServerClient, tenant: Tenant, container: Container, clock: FrozenClock
) -> None:
    body = intent_body(tenant)
    first = await server.post(INTENTS, body, idempotency_key="create-1")
    assert_fresh(first, 201)

    clock.advance(5)  # a client retry, signed anew
    again = await server.post(INTENTS, body, idempotency_key="create-1")
    assert_replay_of(again, first)
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["payment_token"] == first.json()["payment_token"]

    assert [row["id"] for row in await listed_with_ref(server, body["merchant_ref_id"])] == [
        first.json()["id"]
    ]
    assert await stored_with_ref(container, body["merchant_ref_id"]) == 1


async def test_replay_of_a_200_endpoint(server: ServerClient, tenant: Tenant, clock: FrozenClock) -> None:
    intent = await server.create_intent(tenant)
    path = f"{INTENTS}/{intent['id']}/confirm"
    first = await server.post(path, idempotency_key="confirm-1")
    assert_fresh(first, 200)
    assert first.json()["status"] == "succeeded"

    clock.advance(1)
    again = await server.post(path, idempotency_key="confirm-1")
    assert_replay_of(again, first)

    transactions = await server.get(f"{INTENTS}/{intent['id']}/transactions")
    assert transactions.status_code == 200, transactions.text
    assert [txn["type"] for txn in transactions.json()["data"]] == ["payment"]

    # Without the key the request runs again, and the state machine refuses it.
    clock.advance(1)
    assert_problem(await server.post(path, idempotency_key="confirm-2"), 409, "invalid_state_transition")


async def test_same_key_with_another_body_is_refused(
    server: ServerClient, tenant: Tenant, container: Container, clock: FrozenClock
) -> None:
    first_body = intent_body(tenant)
    first = await server.post(INTENTS, first_body, idempotency_key="create-2")
    assert_fresh(first, 201)

    for changed in (
        intent_body(tenant),  # another merchant_ref_id
        {**first_body, "amount": first_body["amount"] + 1},
    ):
        clock.advance(1)
        response = await server.post(INTENTS, changed, idempotency_key="create-2")
        assert_problem(response, 422, "idempotency_key_reused")
        assert REPLAYED not in response.headers
        assert await stored_with_ref(container, changed["merchant_ref_id"]) == (
            1 if changed["merchant_ref_id"] == first_body["merchant_ref_id"] else 0
        )
    assert (await retrieve(server, first.json()["id"]))["amount"] == first_body["amount"]


async def test_same_body_bytes_are_compared_not_their_meaning(
    server: ServerClient, tenant: Tenant, clock: FrozenClock
) -> None:
    body = intent_body(tenant)
    first = await server.post(INTENTS, body, idempotency_key="create-bytes")
    assert_fresh(first, 201)
    clock.advance(1)
    reformatted = encode(body).replace(b",", b", ")
    response = await server.post(INTENTS, raw=reformatted, idempotency_key="create-bytes")
    assert_problem(response, 422, "idempotency_key_reused")


async def test_same_key_on_another_path_is_refused(
    server: ServerClient, tenant: Tenant, clock: FrozenClock
) -> None:
    intent = await server.create_intent(tenant)
    confirm_path = f"{INTENTS}/{intent['id']}/confirm"
    confirmed = await server.post(confirm_path, idempotency_key="op-1")
    assert_fresh(confirmed, 200)

    clock.advance(1)
    cancel = await server.post(f"{INTENTS}/{intent['id']}/cancel", idempotency_key="op-1")
    assert_problem(cancel, 422, "idempotency_key_reused")

    clock.advance(1)
    other = await server.create_intent(tenant)
    other_confirm = await server.post(f"{INTENTS}/{other['id']}/confirm", idempotency_key="op-1")
    assert_problem(other_confirm, 422, "idempotency_key_reused")
    assert (await retrieve(server, other["id"]))["status"] == "requires_payment_method"

    # The query string is part of the request, too.
    clock.advance(1)
    with_query = await server.post(f"{confirm_path}?retry=1", idempotency_key="op-1")
    assert_problem(with_query, 422, "idempotency_key_reused")


# ---------------------------------------------------------------------------------------------- what is stored


async def test_validation_failures_are_not_stored(
    server: ServerClient, tenant: Tenant, container: Container, clock: FrozenClock
) -> None:
    corrected = intent_body(tenant)
    invalid = {key: value for key, value in corrected.items() if key != "currency"}

    first = await server.post(INTENTS, invalid, idempotency_key="create-3")
    assert_problem(first, 422, "validation_error")
    clock.advance(1)
    again = await server.post(INTENTS, invalid, idempotency_key="create-3")
    assert_problem(again, 422, "validation_error")
    assert REPLAYED not in again.headers

    clock.advance(1)
    malformed = await server.post(INTENTS, raw=b'{"amount": ', idempotency_key="create-3")
    assert_problem(malformed, 422, "validation_error")

    clock.advance(1)
    fixed = await server.post(INTENTS, corrected, idempotency_key="create-3")
    assert_fresh(fixed, 201)
    assert await stored_with_ref(container, corrected["merchant_ref_id"]) == 1

    clock.advance(1)
    assert_replay_of(await server.post(INTENTS, corrected, idempotency_key="create-3"), fixed)


async def test_domain_errors_are_stored_and_replayed(
    server: ServerClient, tenant: Tenant, clock: FrozenClock
) -> None:
    intent = await server.create_intent(tenant)
    refund_path = f"{INTENTS}/{intent['id']}/refund"
    refused = await server.post(refund_path, {"amount": 300}, idempotency_key="refund-1")
    assert_problem(refused, 409, "invalid_state_transition")

    token_confirm = await server.http.post(
        f"{INTENTS}/{intent['id']}/confirm", headers=bearer(intent["payment_token"])
    )
    assert token_confirm.status_code == 200, token_confirm.text
    assert token_confirm.json()["status"] == "succeeded"

    # Run again, the refund would now succeed; the key gives back the stored refusal instead.
    clock.advance(1)
    replay = await server.post(refund_path, {"amount": 300}, idempotency_key="refund-1")
    assert_replay_of(replay, refused)
    assert replay.headers["content-type"].startswith(PROBLEM_JSON)
    assert replay.json()["code"] == "invalid_state_transition"
    assert (await retrieve(server, intent["id"]))["amount_refunded"] == 0

    clock.advance(1)
    fresh = await server.post(refund_path, {"amount": 300}, idempotency_key="refund-2")
    assert_fresh(fresh, 201)
    assert (await retrieve(server, intent["id"]))["amount_refunded"] == 300


async def test_not_found_results_are_stored_too(
    server: ServerClient, tenant: Tenant, other_tenant: Tenant, clock: FrozenClock
) -> None:
    foreign_store = intent_body(tenant, store_id=other_tenant.store_id)
    first = await server.post(INTENTS, foreign_store, idempotency_key="create-4")
    assert_problem(first, 404, "store_not_found")
    clock.advance(1)
    assert_replay_of(await server.post(INTENTS, foreign_store, idempotency_key="create-4"), first)


@pytest.mark.parametrize(
    ("key", "status"),
    [("", 400), ("k" * 256, 400), (b"caf\xe9", 400), ("k" * 255, 201), ("a b~!", 201)],
)
async def test_key_syntax(
    server: ServerClient, tenant: Tenant, container: Container, key: str | bytes, status: int
) -> None:
    body = intent_body(tenant)
    raw = encode(body)
    headers = {
        b"Authorization": server.authorization("POST", INTENTS, raw).encode(),
        b"Content-Type": b"application/json",
        b"Idempotency-Key": key if isinstance(key, bytes) else key.encode(),
    }
    response = await server.http.post(INTENTS, content=raw, headers=headers)
    if status == 400:
        assert_problem(response, 400, "invalid_idempotency_key")
        assert await stored_with_ref(container, body["merchant_ref_id"]) == 0
    else:
        assert_fresh(response, status)


# ---------------------------------------------------------------------------------------------- 24 hours


async def test_key_is_kept_for_24_hours_then_counts_as_new(
    server: ServerClient, tenant: Tenant, container: Container, clock: FrozenClock
) -> None:
    first_body = intent_body(tenant)
    first = await server.post(INTENTS, first_body, idempotency_key="daily")
    assert_fresh(first, 201)

    clock.advance(timedelta(hours=24, seconds=-1))
    assert_replay_of(await server.post(INTENTS, first_body, idempotency_key="daily"), first)
    second_body = intent_body(tenant)
    assert_problem(
        await server.post(INTENTS, second_body, idempotency_key="daily"), 422, "idempotency_key_reused"
    )

    clock.advance(timedelta(seconds=2))  # 24 h + 1 s after the first use
    second = await server.post(INTENTS, second_body, idempotency_key="daily")
    assert_fresh(second, 201)
    assert second.json()["id"] != first.json()["id"]
    assert await stored_with_ref(container, second_body["merchant_ref_id"]) == 1

    clock.advance(1)
    assert_replay_of(await server.post(INTENTS, second_body, idempotency_key="daily"), second)


async def test_after_24_hours_the_same_request_runs_again(
    server: ServerClient, tenant: Tenant, container: Container, clock: FrozenClock
) -> None:
    body = intent_body(tenant)
    first = await server.post(INTENTS, body, idempotency_key="daily-2")
    assert_fresh(first, 201)

    clock.advance(timedelta(hours=24, seconds=1))
    again = await server.post(INTENTS, body, idempotency_key="daily-2")
    # Not a replay: the create ran again and met the merchant_ref_id it made a day ago.
    assert_problem(again, 409, "merchant_ref_id_taken")
    assert REPLAYED not in again.headers
    assert again.json()["payment_intent_id"] == first.json()["id"]
    assert await stored_with_ref(container, body["merchant_ref_id"]) == 1


# ---------------------------------------------------------------------------------------------- scope


async def test_keys_belong_to_one_client(
    server: ServerClient,
    other_server: ServerClient,
    tenant: Tenant,
    other_tenant: Tenant,
    container: Container,
    clock: FrozenClock,
) -> None:
    mine = intent_body(tenant)
    theirs = intent_body(other_tenant)
    first = await server.post(INTENTS, mine, idempotency_key="shared-key")
    assert_fresh(first, 201)

    other = await other_server.post(INTENTS, theirs, idempotency_key="shared-key")
    assert_fresh(other, 201)
    assert other.json()["id"] != first.json()["id"]
    assert other.json()["merchant_id"] == other_tenant.merchant_id

    # A second client of the same merchant has keys of its own as well.
    client_id, secret = await container.tenants.create_client(
        name="second", partner_id=tenant.client_partner_id, merchant_id=tenant.merchant_id
    )
    second_client = ServerClient(server.http, client_id, secret, clock)
    colleague_body = intent_body(tenant)
    colleague = await second_client.post(INTENTS, colleague_body, idempotency_key="shared-key")
    assert_fresh(colleague, 201)
    assert colleague.json()["merchant_ref_id"] == colleague_body["merchant_ref_id"]

    clock.advance(1)
    assert_replay_of(await server.post(INTENTS, mine, idempotency_key="shared-key"), first)
    assert_replay_of(await other_server.post(INTENTS, theirs, idempotency_key="shared-key"), other)


async def test_payment_token_retry_with_its_key_gets_the_replay(server: ServerClient, tenant: Tenant) -> None:
    intent = await server.create_intent(tenant)
    path = f"{INTENTS}/{intent['id']}/confirm"
    headers = {**bearer(intent["payment_token"]), "Idempotency-Key": "sdk-confirm"}
    first = await server.http.post(path, headers=headers)
    assert_fresh(first, 200)
    assert first.json()["status"] == "succeeded"

    retry = await server.http.post(path, headers=headers)
    assert_replay_of(retry, first)

    other_key = await server.http.post(path, headers={**headers, "Idempotency-Key": "sdk-confirm-2"})
    assert_problem(other_key, 401, "payment_token_consumed")


# ---------------------------------------------------------------------------------------------- concurrency


async def _fifty_concurrent_duplicate_creates(
    server: ServerClient, tenant: Tenant, container: Container
) -> None:
    body = intent_body(tenant)
    raw = encode(body)
    headers = {
        "Authorization": server.authorization("POST", INTENTS, raw),
        "Content-Type": "application/json",
        "Idempotency-Key": "concurrent-create",
    }
    responses = await asyncio.gather(
        *(server.http.post(INTENTS, content=raw, headers=headers) for _ in range(50))
    )

    statuses = Counter(response.status_code for response in responses)
    assert not [status for status in statuses if status >= 500], statuses
    assert set(statuses) <= {201, 409}, statuses
    for response in responses:
        if response.status_code == 409:
            assert_problem(response, 409, "idempotency_request_in_progress")
    created = [response for response in responses if response.status_code == 201]
    originals = [response for response in created if REPLAYED not in response.headers]
    assert len(originals) == 1, statuses
    for response in created:
        assert response.content == originals[0].content

    intent_id = originals[0].json()["id"]
    assert [row["id"] for row in await listed_with_ref(server, body["merchant_ref_id"])] == [intent_id]
    assert await stored_with_ref(container, body["merchant_ref_id"]) == 1
    async with container.db.reading() as session:
        records = list(
            (
                await session.execute(
                    select(IdempotencyRecord).where(IdempotencyRecord.key == "concurrent-create")
                )
            ).scalars()
        )
    assert [(record.owner, record.response_status) for record in records] == [(tenant.client_id, 201)]

    # Once the dust settles, the same request is a replay of the one that ran.
    late = await server.http.post(INTENTS, content=raw, headers=headers)
    assert_replay_of(late, originals[0])


@pytest.mark.postgres
async def test_fifty_concurrent_duplicates_make_one_intent_on_postgres(
    server: ServerClient, tenant: Tenant, container: Container
) -> None:
    assert not container.db.is_sqlite
    await _fifty_concurrent_duplicate_creates(server, tenant, container)


async def test_fifty_concurrent_duplicates_make_one_intent(
    server: ServerClient, tenant: Tenant, container: Container
) -> None:
    """The same on whichever backend this pass runs (SQLite serialises its writers)."""
    await _fifty_concurrent_duplicate_creates(server, tenant, container)
