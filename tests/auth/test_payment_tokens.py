"""payment_token (seed 003): issued at create, bound to one intent, 5 minutes, `Authorization: Bearer tok_...`.

Retrieve and transactions work until expiry; confirm or cancel spends the token (then 401
payment_token_consumed); expired is 401 payment_token_expired. Stored only as its SHA-256 (reliability 2(e)).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from paymux.auth.models import PaymentToken
from paymux.config import Settings
from paymux.container import Container
from paymux.core.clock import FrozenClock
from paymux.models import Base
from paymux.payments.models import Transaction
from tests.support import ServerClient, Tenant, bearer, intent_body

PROBLEM_JSON = "application/problem+json"
INTENTS = "/v1/payment_intents"


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    return body


class Sdk:
    """The WebView SDK of one intent: it holds the payment token and nothing else."""

    def __init__(self, http: httpx.AsyncClient, token: str) -> None:
        self.http = http
        self.token = token

    async def retrieve(self, intent_id: str) -> httpx.Response:
        return await self.http.get(f"{INTENTS}/{intent_id}", headers=bearer(self.token))

    async def transactions(self, intent_id: str) -> httpx.Response:
        return await self.http.get(f"{INTENTS}/{intent_id}/transactions", headers=bearer(self.token))

    async def confirm(self, intent_id: str) -> httpx.Response:
        return await self.http.post(f"{INTENTS}/{intent_id}/confirm", headers=bearer(self.token))

    async def cancel(self, intent_id: str) -> httpx.Response:
        return await self.http.post(f"{INTENTS}/{intent_id}/cancel", headers=bearer(self.token))


def sdk_of(server: ServerClient, intent: dict[str, Any]) -> Sdk:
    return Sdk(server.http, intent["payment_token"])


async def server_view(server: ServerClient, intent_id: str) -> dict[str, Any]:
    response = await server.get(f"{INTENTS}/{intent_id}")
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def server_transactions(server: ServerClient, intent_id: str) -> list[dict[str, Any]]:
    response = await server.get(f"{INTENTS}/{intent_id}/transactions")
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()["data"]
    return rows


async def token_record(container: Container, token: str) -> PaymentToken:
    async with container.db.reading() as session:
        record = await session.get(PaymentToken, hashlib.sha256(token.encode()).hexdigest())
    assert record is not None
    return record


# ---------------------------------------------------------------------------------------------- issue and use


async def test_create_issues_a_token_that_retrieves_its_intent(
    server: ServerClient, tenant: Tenant, clock: FrozenClock, settings: Settings
) -> None:
    assert settings.payment_token_ttl_seconds == 300  # seed 003: five minutes
    intent = await server.create_intent(tenant)
    token = intent["payment_token"]
    assert token.startswith("tok_")
    assert len(token) - len("tok_") >= 22  # at least 128 bits of URL-safe base64
    expires_at = intent["payment_token_expires_at"].replace("Z", "+00:00")
    assert expires_at == (clock.now() + timedelta(seconds=300)).isoformat()

    retrieved = await sdk_of(server, intent).retrieve(intent["id"])
    assert retrieved.status_code == 200, retrieved.text
    assert retrieved.json()["id"] == intent["id"]
    assert retrieved.json()["status"] == "requires_payment_method"
    assert retrieved.json()["payment_token"] is None  # only the create response shows it

    listed = await sdk_of(server, intent).transactions(intent["id"])
    assert listed.status_code == 200, listed.text
    assert listed.json()["data"] == []


async def test_each_intent_gets_its_own_token(server: ServerClient, tenant: Tenant) -> None:
    tokens = {(await server.create_intent(tenant))["payment_token"] for _ in range(5)}
    assert len(tokens) == 5


async def test_token_expires_after_its_ttl(
    server: ServerClient, tenant: Tenant, clock: FrozenClock, settings: Settings
) -> None:
    intent = await server.create_intent(tenant)
    sdk = sdk_of(server, intent)
    clock.advance(timedelta(seconds=settings.payment_token_ttl_seconds - 1))  # 299 s
    assert (await sdk.retrieve(intent["id"])).status_code == 200
    assert (await sdk.transactions(intent["id"])).status_code == 200

    clock.advance(timedelta(seconds=2))  # 301 s
    assert_problem(await sdk.retrieve(intent["id"]), 401, "payment_token_expired")
    assert_problem(await sdk.transactions(intent["id"]), 401, "payment_token_expired")
    assert_problem(await sdk.confirm(intent["id"]), 401, "payment_token_expired")
    assert_problem(await sdk.cancel(intent["id"]), 401, "payment_token_expired")

    # The server's view is untouched, and the server can still act on the intent.
    assert (await server_view(server, intent["id"]))["status"] == "requires_payment_method"
    assert await server_transactions(server, intent["id"]) == []


async def test_confirm_just_before_expiry_succeeds(
    server: ServerClient, tenant: Tenant, clock: FrozenClock
) -> None:
    intent = await server.create_intent(tenant)
    clock.advance(timedelta(seconds=299))
    confirmed = await sdk_of(server, intent).confirm(intent["id"])
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["status"] == "succeeded"


# ---------------------------------------------------------------------------------------------- spending


async def test_confirm_spends_the_token(server: ServerClient, tenant: Tenant) -> None:
    intent = await server.create_intent(tenant)
    sdk = sdk_of(server, intent)
    confirmed = await sdk.confirm(intent["id"])
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["status"] == "succeeded"

    assert_problem(await sdk.confirm(intent["id"]), 401, "payment_token_consumed")
    assert_problem(await sdk.cancel(intent["id"]), 401, "payment_token_consumed")

    retrieved = await sdk.retrieve(intent["id"])
    assert retrieved.status_code == 200, retrieved.text
    assert retrieved.json()["status"] == "succeeded"
    transactions = await sdk.transactions(intent["id"])
    assert transactions.status_code == 200, transactions.text
    assert [(txn["type"], txn["status"]) for txn in transactions.json()["data"]] == [("payment", "succeeded")]
    assert (await server_view(server, intent["id"]))["status"] == "succeeded"


async def test_cancel_spends_the_token(server: ServerClient, tenant: Tenant) -> None:
    intent = await server.create_intent(tenant)
    sdk = sdk_of(server, intent)
    cancelled = await sdk.cancel(intent["id"])
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"

    assert_problem(await sdk.cancel(intent["id"]), 401, "payment_token_consumed")
    assert_problem(await sdk.confirm(intent["id"]), 401, "payment_token_consumed")

    retrieved = await sdk.retrieve(intent["id"])
    assert retrieved.status_code == 200, retrieved.text
    assert retrieved.json()["status"] == "cancelled"
    assert (await sdk.transactions(intent["id"])).status_code == 200
    assert await server_transactions(server, intent["id"]) == []


async def test_a_spent_token_still_expires(server: ServerClient, tenant: Tenant, clock: FrozenClock) -> None:
    intent = await server.create_intent(tenant)
    sdk = sdk_of(server, intent)
    assert (await sdk.confirm(intent["id"])).status_code == 200
    clock.advance(timedelta(seconds=301))
    assert_problem(await sdk.retrieve(intent["id"]), 401, "payment_token_expired")


async def test_a_refused_confirm_does_not_spend_the_token(
    server: ServerClient, tenant: Tenant, container: Container
) -> None:
    intent = await server.create_intent(tenant)
    sdk = sdk_of(server, intent)
    # The server cancels first; the SDK's confirm meets the state machine, and its token stays unspent.
    assert (await server.post(f"{INTENTS}/{intent['id']}/cancel")).status_code == 200
    assert_problem(await sdk.confirm(intent["id"]), 409, "invalid_state_transition")
    assert_problem(await sdk.confirm(intent["id"]), 409, "invalid_state_transition")
    assert (await token_record(container, intent["payment_token"])).consumed_at is None
    # ...while a confirm that ran spends it
    other = await server.create_intent(tenant)
    assert (await sdk_of(server, other).confirm(other["id"])).status_code == 200
    assert (await token_record(container, other["payment_token"])).consumed_at is not None


# ---------------------------------------------------------------------------------------------- binding


async def test_a_token_opens_only_its_own_intent(
    server: ServerClient, other_server: ServerClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    mine = await server.create_intent(tenant)
    sibling = await server.create_intent(tenant)
    foreign = await other_server.create_intent(other_tenant)
    sdk = sdk_of(server, mine)

    for target in (sibling["id"], foreign["id"], "pi_doesnotexist"):
        assert_problem(await sdk.retrieve(target), 404, "payment_intent_not_found")
        assert_problem(await sdk.transactions(target), 404, "payment_intent_not_found")
        assert_problem(await sdk.confirm(target), 404, "payment_intent_not_found")
        assert_problem(await sdk.cancel(target), 404, "payment_intent_not_found")

    assert (await server_view(server, sibling["id"]))["status"] == "requires_payment_method"
    foreign_view = await other_server.get(f"{INTENTS}/{foreign['id']}")
    assert foreign_view.json()["status"] == "requires_payment_method"

    # The failed attempts did not spend the token on its own intent.
    confirmed = await sdk.confirm(mine["id"])
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["status"] == "succeeded"


async def test_a_token_is_refused_on_server_only_routes(
    server: ServerClient, tenant: Tenant, container: Container
) -> None:
    intent = await server.create_intent(tenant)
    confirmed = await server.post(f"{INTENTS}/{intent['id']}/confirm")  # signed: the token stays unspent
    assert confirmed.status_code == 200, confirmed.text
    transaction_id = (await server_transactions(server, intent["id"]))[0]["id"]
    token = bearer(intent["payment_token"])
    assert (await sdk_of(server, intent).retrieve(intent["id"])).status_code == 200  # the token is live

    body = intent_body(tenant)
    attempts = [
        server.http.post(INTENTS, json=body, headers=token),
        server.http.post(f"{INTENTS}/{intent['id']}/capture", json={}, headers=token),
        server.http.post(f"{INTENTS}/{intent['id']}/refund", json={"amount": 100}, headers=token),
    ]
    for attempt in attempts:
        # The token authenticates, but the permission matrix gives it only its intent's read, confirm, cancel.
        assert_problem(await attempt, 403, "operation_forbidden")
    # Reading is allowed, but a token's scope is its one intent.
    listed = await server.http.get(INTENTS, headers=token)
    assert [item["id"] for item in listed.json()["data"]] == [intent["id"]]
    assert (await server.http.get(f"/v1/transactions/{transaction_id}", headers=token)).status_code == 200

    async with container.db.reading() as session:
        created = await session.execute(
            select(func.count()).select_from(Transaction).where(Transaction.payment_intent_id == intent["id"])
        )
        assert created.scalar_one() == 1
    view = await server_view(server, intent["id"])
    assert (view["amount_refunded"], view["status"]) == (0, "succeeded")
    listed = await server.get(f"{INTENTS}?merchant_ref_id={body['merchant_ref_id']}")
    assert listed.json()["data"] == []


@pytest.mark.parametrize(
    "credential",
    [
        "garbage",
        "tok_",
        "tok_" + "A" * 43,
        "sk_" + "A" * 43,
        "tok_" + "A" * 200,
        "{token}x",
        "{token_upper}",
        "{token_without_prefix}",
    ],
)
async def test_garbage_bearer_is_refused(server: ServerClient, tenant: Tenant, credential: str) -> None:
    intent = await server.create_intent(tenant)
    token = intent["payment_token"]
    presented = credential.format(
        token=token, token_upper="tok_" + token[4:].swapcase(), token_without_prefix=token[4:]
    )
    sdk = Sdk(server.http, presented)
    # A `tok_` credential is taken for a payment token; anything else for an access token (a JWT).
    code = "invalid_payment_token" if presented.startswith("tok_") else "invalid_access_token"
    assert_problem(await sdk.retrieve(intent["id"]), 401, code)
    assert_problem(await sdk.confirm(intent["id"]), 401, code)
    assert (await server_view(server, intent["id"]))["status"] == "requires_payment_method"
    assert (await sdk_of(server, intent).retrieve(intent["id"])).status_code == 200


async def test_bearer_scheme_is_case_insensitive(server: ServerClient, tenant: Tenant) -> None:
    intent = await server.create_intent(tenant)
    response = await server.http.get(
        f"{INTENTS}/{intent['id']}", headers={"Authorization": f"bearer {intent['payment_token']}"}
    )
    assert response.status_code == 200, response.text


# ---------------------------------------------------------------------------------------------- at rest


async def test_the_token_is_stored_only_hashed(
    server: ServerClient, tenant: Tenant, container: Container
) -> None:
    intent = await server.create_intent(tenant)
    token = intent["payment_token"]
    async with container.db.reading() as session:
        rows = list(
            (
                await session.execute(
                    select(PaymentToken).where(PaymentToken.payment_intent_id == intent["id"])
                )
            ).scalars()
        )
    assert len(rows) == 1
    row = rows[0]
    assert row.token_hash == hashlib.sha256(token.encode("utf-8")).hexdigest()
    for column in PaymentToken.__table__.columns:
        value = getattr(row, column.key)
        assert value != token, column.key
        assert token not in str(value), column.key
        assert token[4:] not in str(value), column.key


async def test_no_table_holds_the_plaintext_token(
    server: ServerClient, tenant: Tenant, container: Container
) -> None:
    created = await server.post(INTENTS, intent_body(tenant), idempotency_key="create-with-key")
    assert created.status_code == 201, created.text
    secret_part = created.json()["payment_token"][4:]
    holders = []
    async with container.db.reading() as session:
        for table in Base.metadata.sorted_tables:
            for row in (await session.execute(select(table))).all():
                if any(secret_part in str(value) for value in row):
                    holders.append(table.name)
    assert holders == []


# ---------------------------------------------------------------------------------------------- concurrency


async def test_fifty_concurrent_confirms_with_one_token_succeed_once(
    server: ServerClient, tenant: Tenant, container: Container
) -> None:
    intent = await server.create_intent(tenant)
    sdk = sdk_of(server, intent)
    responses = await asyncio.gather(*(sdk.confirm(intent["id"]) for _ in range(50)))

    outcomes = Counter(
        (response.status_code, response.json().get("code") or response.json().get("status"))
        for response in responses
    )
    assert outcomes[(200, "succeeded")] == 1, outcomes
    assert set(outcomes) <= {
        (200, "succeeded"),
        (401, "payment_token_consumed"),
        (409, "invalid_state_transition"),
    }, outcomes
    assert sum(outcomes.values()) == 50
    for response in responses:
        if response.status_code != 200:
            assert response.headers["content-type"].startswith(PROBLEM_JSON)

    transactions = await sdk.transactions(intent["id"])
    assert transactions.status_code == 200, transactions.text
    payments = [txn for txn in transactions.json()["data"] if txn["type"] == "payment"]
    assert [(txn["status"], txn["amount"]) for txn in payments] == [("succeeded", intent["amount"])]
    assert len(transactions.json()["data"]) == 1
    async with container.db.reading() as session:
        stored = await session.execute(
            select(func.count()).select_from(Transaction).where(Transaction.payment_intent_id == intent["id"])
        )
        assert stored.scalar_one() == 1
    assert (await server_view(server, intent["id"]))["status"] == "succeeded"
