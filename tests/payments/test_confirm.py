"""Confirm through the built-in `test` provider (magic amounts), provider selection, merchant_ref_id uniqueness
and the intent list. Every transition must leave a history row and an outbox event whose payload is the API view.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from paymux.container import Container
from paymux.core.clock import FrozenClock
from paymux.events.models import Event
from paymux.payments.models import PaymentIntentStatusChange, Transaction
from tests.support import ServerClient, Tenant, bootstrap_tenant, intent_body

PROBLEM_JSON = "application/problem+json"
RPM = "requires_payment_method"


# ---------------------------------------------------------------------------------------------- helpers


async def post(server: ServerClient, clock: FrozenClock, path: str, body: Any = None) -> httpx.Response:
    # The test clock is frozen: move it so two identical requests carry two signatures, not one replayed.
    clock.advance(1)
    return await server.post(path, body)


async def confirm(
    server: ServerClient, clock: FrozenClock, intent_id: str, body: Any = None
) -> httpx.Response:
    return await post(server, clock, f"/v1/payment_intents/{intent_id}/confirm", body)


async def view(server: ServerClient, intent_id: str) -> dict[str, Any]:
    response = await server.get(f"/v1/payment_intents/{intent_id}")
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    problem: dict[str, Any] = response.json()
    assert problem["code"] == code
    assert problem["status"] == status
    assert problem["type"] == f"urn:paymux:problem:{code}"
    assert problem["title"]
    assert problem["request_id"] == response.headers["x-request-id"]
    return problem


async def events_of(container: Container, object_id: str) -> list[Event]:
    async with container.db.reading() as session:
        rows = await session.execute(select(Event).where(Event.object_id == object_id).order_by(Event.id))
        return list(rows.scalars())


async def history_of(container: Container, intent_id: str) -> list[PaymentIntentStatusChange]:
    async with container.db.reading() as session:
        rows = await session.execute(
            select(PaymentIntentStatusChange)
            .where(PaymentIntentStatusChange.payment_intent_id == intent_id)
            .order_by(PaymentIntentStatusChange.id)
        )
        return list(rows.scalars())


async def transactions_of(container: Container, intent_id: str) -> list[Transaction]:
    async with container.db.reading() as session:
        rows = await session.execute(
            select(Transaction).where(Transaction.payment_intent_id == intent_id).order_by(Transaction.id)
        )
        return list(rows.scalars())


def created_view(created: dict[str, Any]) -> dict[str, Any]:
    """The create response as any later reader sees it: the payment token is only in that one response."""
    assert created["payment_token"]
    assert created["payment_token_expires_at"]
    return {**created, "payment_token": None, "payment_token_expires_at": None}


async def assert_unchanged(
    server: ServerClient, container: Container, before: dict[str, Any], events_before: int
) -> None:
    assert await view(server, before["id"]) == before
    assert len(await events_of(container, before["id"])) == events_before
    assert await transactions_of(container, before["id"]) == []


# ---------------------------------------------------------------------------------------------- magic amounts


@dataclass(frozen=True)
class Outcome:
    status: str
    failure_code: str | None
    failure_message: str | None  # "*" = any non-empty message
    attempt_status: str
    charged: bool  # the provider answered with a charge id


MAGIC_AMOUNTS: dict[int, Outcome] = {
    1000: Outcome("succeeded", None, None, "succeeded", charged=True),
    40002: Outcome("failed", "card_declined", "The card was declined.", "failed", charged=True),
    40051: Outcome(
        "failed", "insufficient_funds", "The card has insufficient funds.", "failed", charged=True
    ),
    40054: Outcome("failed", "expired_card", "The card has expired.", "failed", charged=True),
    40091: Outcome("processing", None, None, "pending", charged=False),
    40096: Outcome("failed", "provider_unavailable", "*", "failed", charged=False),
}


@pytest.mark.parametrize("amount", sorted(MAGIC_AMOUNTS))
async def test_confirm_outcome_follows_the_magic_amount(
    server: ServerClient, tenant: Tenant, container: Container, clock: FrozenClock, amount: int
) -> None:
    outcome = MAGIC_AMOUNTS[amount]
    created = await server.create_intent(tenant, amount=amount)
    response = await confirm(server, clock, created["id"])
    assert response.status_code == 200, response.text
    final = await view(server, created["id"])
    assert response.json() == final

    assert final["status"] == outcome.status
    assert final["provider_name"] == "test"
    assert final["failure_code"] == outcome.failure_code
    if outcome.failure_message == "*":
        assert isinstance(final["failure_message"], str)
        assert final["failure_message"]
    else:
        assert final["failure_message"] == outcome.failure_message
    assert final["amount_captured"] == (amount if outcome.status == "succeeded" else 0)
    assert final["amount_refunded"] == 0

    attempts = await transactions_of(container, created["id"])
    assert [(txn.type, txn.status, txn.amount, txn.currency) for txn in attempts] == [
        ("payment", outcome.attempt_status, amount, "JPY")
    ]
    attempt = attempts[0]
    assert attempt.provider_name == "test"
    assert attempt.failure_code == outcome.failure_code
    if outcome.charged:
        assert attempt.provider_transaction_id is not None
        assert attempt.provider_transaction_id.startswith("test_ch_")
    else:
        assert attempt.provider_transaction_id is None
    assert final["provider_transaction_id"] == attempt.provider_transaction_id

    listed = await server.get(f"/v1/payment_intents/{created['id']}/transactions")
    assert listed.status_code == 200, listed.text
    assert [(txn["id"], txn["type"], txn["status"]) for txn in listed.json()["data"]] == [
        (attempt.id, "payment", outcome.attempt_status)
    ]

    # History and events: one per transition, in order, committed with it.
    expected_path: list[tuple[str | None, str]] = [(None, RPM), (RPM, "processing")]
    if outcome.status != "processing":
        expected_path.append(("processing", outcome.status))
    history = await history_of(container, created["id"])
    assert [(row.from_status, row.to_status) for row in history] == expected_path
    assert all(row.merchant_id == tenant.merchant_id and row.reason for row in history)

    events = await events_of(container, created["id"])
    assert [event.type for event in events] == [
        "payment_intent.created",
        *(f"payment_intent.{to_status}" for _, to_status in expected_path[1:]),
    ]
    for event in events:
        assert event.object_type == "payment_intent"
        assert (event.client_partner_id, event.merchant_id, event.store_id) == (
            tenant.client_partner_id,
            tenant.merchant_id,
            tenant.store_id,
        )
    assert events[0].payload == created_view(created)
    processing_view = {
        **final,
        "status": "processing",
        "failure_code": None,
        "failure_message": None,
        "provider_transaction_id": None,
        "amount_captured": 0,
    }
    assert events[1].payload == processing_view
    assert events[-1].payload == final


async def test_timed_out_confirm_is_not_confirmed_twice(
    server: ServerClient, tenant: Tenant, container: Container, clock: FrozenClock
) -> None:
    created = await server.create_intent(tenant, amount=40091)
    assert (await confirm(server, clock, created["id"])).json()["status"] == "processing"
    again = await confirm(server, clock, created["id"])
    problem = assert_problem(again, 409, "invalid_state_transition")
    assert problem["current_status"] == "processing"
    attempts = await transactions_of(container, created["id"])
    assert [(txn.type, txn.status) for txn in attempts] == [("payment", "pending")]


# ---------------------------------------------------------------------------------------------- external / manual


@pytest.mark.parametrize(
    ("mode", "method"),
    [("external", "credit_card"), ("manual", "cash"), ("external", "qr_mpm"), ("manual", "credit_card")],
)
async def test_confirm_of_an_intent_processed_outside_paymux_awaits_capture(
    server: ServerClient, tenant: Tenant, container: Container, clock: FrozenClock, mode: str, method: str
) -> None:
    created = await server.create_intent(tenant, processing_mode=mode, payment_method_type=method)
    response = await confirm(server, clock, created["id"])
    assert response.status_code == 200, response.text
    final = await view(server, created["id"])
    assert response.json() == final
    assert final["status"] == "requires_capture"
    assert final["processing_mode"] == mode
    assert final["provider_name"] is None
    assert final["amount_captured"] == 0
    assert await transactions_of(container, created["id"]) == []
    history = await history_of(container, created["id"])
    assert [(row.from_status, row.to_status) for row in history] == [
        (None, RPM),
        (RPM, "requires_capture"),
    ]
    events = await events_of(container, created["id"])
    assert [event.type for event in events] == ["payment_intent.created", "payment_intent.requires_capture"]
    assert events[0].payload == created_view(created)
    assert events[1].payload == final


# ---------------------------------------------------------------------------------------------- provider selection


async def test_unknown_provider_at_confirm_is_422(
    server: ServerClient, tenant: Tenant, container: Container, clock: FrozenClock
) -> None:
    created = await server.create_intent(tenant)
    before = await view(server, created["id"])
    response = await confirm(server, clock, created["id"], {"provider_name": "nosuchpay"})
    assert_problem(response, 422, "unknown_provider")
    await assert_unchanged(server, container, before, events_before=1)


async def test_unknown_provider_at_create_is_422(server: ServerClient, tenant: Tenant) -> None:
    body = intent_body(tenant, provider_name="nosuchpay")
    response = await server.post("/v1/payment_intents", body)
    assert_problem(response, 422, "unknown_provider")
    listed = await server.get("/v1/payment_intents")
    assert listed.json()["data"] == []


@pytest.mark.parametrize("provider_name", [None, "test"])
async def test_provider_not_configured_for_the_store_is_409(
    http: httpx.AsyncClient,
    container: Container,
    clock: FrozenClock,
    provider_name: str | None,
) -> None:
    bare = await bootstrap_tenant(
        container, partner="initech", merchant="I-1", store="IS-1", test_provider=False
    )
    client = ServerClient(http, bare.client_id, bare.client_secret, clock)
    created = await client.create_intent(bare, provider_name=provider_name)
    before = await view(client, created["id"])
    response = await confirm(client, clock, created["id"])
    assert_problem(response, 409, "provider_not_configured")
    await assert_unchanged(client, container, before, events_before=1)
    if provider_name is None:
        # Naming the provider at confirm does not help either.
        named = await confirm(client, clock, created["id"], {"provider_name": "test"})
        assert_problem(named, 409, "provider_not_configured")
        await assert_unchanged(client, container, before, events_before=1)


async def test_payment_method_the_provider_does_not_take_is_422_at_create(
    server: ServerClient, tenant: Tenant
) -> None:
    body = intent_body(tenant, payment_method_type="qr_mpm", provider_name="test")
    assert_problem(await server.post("/v1/payment_intents", body), 422, "payment_method_not_supported")


async def test_payment_method_the_provider_does_not_take_is_422_at_confirm(
    server: ServerClient, tenant: Tenant, container: Container, clock: FrozenClock
) -> None:
    created = await server.create_intent(tenant, payment_method_type="qr_mpm")
    before = await view(server, created["id"])
    named = await confirm(server, clock, created["id"], {"provider_name": "test"})
    assert_problem(named, 422, "payment_method_not_supported")
    await assert_unchanged(server, container, before, events_before=1)
    # Without a name, no configured provider of the store takes qr_mpm.
    unnamed = await confirm(server, clock, created["id"])
    assert_problem(unnamed, 409, "provider_not_configured")
    await assert_unchanged(server, container, before, events_before=1)


async def test_cash_cannot_be_processed_by_a_provider(server: ServerClient, tenant: Tenant) -> None:
    body = intent_body(tenant, payment_method_type="cash", processing_mode="pgw_processed")
    problem = assert_problem(await server.post("/v1/payment_intents", body), 422, "validation_error")
    assert problem["errors"]
    listed = await server.get("/v1/payment_intents")
    assert listed.json()["data"] == []


async def test_provider_name_is_only_for_pgw_processed(server: ServerClient, tenant: Tenant) -> None:
    body = intent_body(tenant, processing_mode="external", provider_name="test")
    assert_problem(await server.post("/v1/payment_intents", body), 422, "validation_error")


async def test_provider_named_at_create_is_used_at_confirm(
    server: ServerClient, tenant: Tenant, clock: FrozenClock
) -> None:
    created = await server.create_intent(tenant, provider_name="test")
    assert created["provider_name"] == "test"
    response = await confirm(server, clock, created["id"])
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "succeeded"
    assert response.json()["provider_name"] == "test"


# ---------------------------------------------------------------------------------------------- merchant_ref_id


async def test_merchant_ref_id_is_unique_per_merchant(
    server: ServerClient, other_server: ServerClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    first = await server.create_intent(tenant, merchant_ref_id="POS-TXN-12345")
    # Another body (so another signature), same merchant_ref_id.
    again = await server.post(
        "/v1/payment_intents", intent_body(tenant, merchant_ref_id="POS-TXN-12345", amount=2000)
    )
    problem = assert_problem(again, 409, "merchant_ref_id_taken")
    assert problem["payment_intent_id"] == first["id"]

    theirs = await other_server.create_intent(other_tenant, merchant_ref_id="POS-TXN-12345")
    assert theirs["id"] != first["id"]
    assert theirs["merchant_id"] == other_tenant.merchant_id != tenant.merchant_id

    mine = await server.get("/v1/payment_intents?merchant_ref_id=POS-TXN-12345")
    assert [intent["id"] for intent in mine.json()["data"]] == [first["id"]]
    assert mine.json()["data"][0]["amount"] == 1000
    other = await other_server.get("/v1/payment_intents?merchant_ref_id=POS-TXN-12345")
    assert [intent["id"] for intent in other.json()["data"]] == [theirs["id"]]


# ---------------------------------------------------------------------------------------------- list


async def list_ids(server: ServerClient, query: str) -> tuple[list[str], bool]:
    response = await server.get(f"/v1/payment_intents?{query}" if query else "/v1/payment_intents")
    assert response.status_code == 200, response.text
    page = response.json()
    assert set(page) == {"data", "has_more"}
    return [intent["id"] for intent in page["data"]], page["has_more"]


def rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


async def test_list_pages_newest_first(
    server: ServerClient, other_server: ServerClient, tenant: Tenant, other_tenant: Tenant, clock: FrozenClock
) -> None:
    created = []
    for _ in range(5):
        clock.advance(10)
        created.append((await server.create_intent(tenant))["id"])
    await other_server.create_intent(other_tenant)  # never visible to this merchant
    newest_first = list(reversed(created))
    assert newest_first == sorted(created, reverse=True)

    assert await list_ids(server, "") == (newest_first, False)
    first, more = await list_ids(server, "limit=2")
    assert (first, more) == (newest_first[:2], True)
    second, more = await list_ids(server, f"limit=2&starting_after={first[-1]}")
    assert (second, more) == (newest_first[2:4], True)
    third, more = await list_ids(server, f"limit=2&starting_after={second[-1]}")
    assert (third, more) == (newest_first[4:], False)
    assert await list_ids(server, "limit=5") == (newest_first, False)
    assert await list_ids(server, "limit=4") == (newest_first[:4], True)
    assert await list_ids(server, f"starting_after={newest_first[-1]}") == ([], False)
    assert await list_ids(server, "limit=100") == (newest_first, False)


async def test_list_filters(
    server: ServerClient, tenant: Tenant, container: Container, clock: FrozenClock
) -> None:
    second_store = await bootstrap_tenant(container, partner="acme", merchant="M-1", store="S-2")
    assert second_store.merchant_id == tenant.merchant_id
    assert second_store.store_id != tenant.store_id

    started = clock.now()
    clock.advance(60)
    early = await server.create_intent(tenant, merchant_ref_id="EARLY")
    clock.advance(60)
    middle = await server.create_intent(tenant, merchant_ref_id="MIDDLE")
    assert (await confirm(server, clock, middle["id"])).json()["status"] == "succeeded"
    clock.advance(60)
    late = await server.create_intent(tenant, store_id=second_store.store_id, merchant_ref_id="LATE")
    clock.advance(60)

    assert await list_ids(server, "status=succeeded") == ([middle["id"]], False)
    assert await list_ids(server, f"status={RPM}") == ([late["id"], early["id"]], False)
    assert await list_ids(server, "status=cancelled") == ([], False)
    assert await list_ids(server, f"store_id={second_store.store_id}") == ([late["id"]], False)
    assert await list_ids(server, f"store_id={tenant.store_id}") == ([middle["id"], early["id"]], False)
    assert await list_ids(server, "merchant_ref_id=MIDDLE") == ([middle["id"]], False)
    assert await list_ids(server, "merchant_ref_id=NOPE") == ([], False)

    early_at = started + timedelta(seconds=60)
    middle_at = early_at + timedelta(seconds=60)
    late_at = middle_at + timedelta(seconds=61)  # the confirm moved the clock one more second
    assert early["created_at"].startswith(early_at.strftime("%Y-%m-%dT%H:%M:%S"))
    assert late["created_at"].startswith(late_at.strftime("%Y-%m-%dT%H:%M:%S"))

    assert await list_ids(server, f"created_gte={rfc3339(middle_at)}") == ([late["id"], middle["id"]], False)
    assert await list_ids(server, f"created_lte={rfc3339(middle_at)}") == ([middle["id"], early["id"]], False)
    window = f"created_gte={rfc3339(middle_at)}&created_lte={rfc3339(middle_at)}"
    assert await list_ids(server, window) == ([middle["id"]], False)
    assert await list_ids(server, f"created_gte={rfc3339(late_at + timedelta(seconds=1))}") == ([], False)
    combined = f"status={RPM}&created_gte={rfc3339(middle_at)}"
    assert await list_ids(server, combined) == ([late["id"]], False)


@pytest.mark.parametrize(
    "query",
    ["limit=0", "limit=101", "limit=-1", "limit=ten", "status=paid", "created_gte=yesterday", "store_id=0"],
)
async def test_list_rejects_bad_parameters(server: ServerClient, tenant: Tenant, query: str) -> None:
    await server.create_intent(tenant)
    problem = assert_problem(await server.get(f"/v1/payment_intents?{query}"), 422, "validation_error")
    assert problem["errors"]
    assert problem["errors"][0]["loc"][0] == "query"


async def test_list_with_a_naive_created_filter_is_a_validation_error(
    app: FastAPI, tenant: Tenant, clock: FrozenClock
) -> None:
    # Our own client that turns an unhandled error into its 500 response instead of raising it into the test.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://paymux.test") as http:
        server = ServerClient(http, tenant.client_id, tenant.client_secret, clock)
        await server.create_intent(tenant)
        response = await server.get("/v1/payment_intents?created_gte=2026-01-28T11:00:00")
    assert_problem(response, 422, "validation_error")
