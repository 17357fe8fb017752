"""Capture (the card app's result for external/manual intents, seed 003) and refunds, full and partial, never
more than was captured."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from paymux.container import Container
from paymux.core.clock import FrozenClock
from paymux.events.models import Event
from paymux.payments.models import PaymentIntentStatusChange, Transaction
from tests.support import ServerClient, Tenant

PROBLEM_JSON = "application/problem+json"


# ---------------------------------------------------------------------------------------------- helpers


async def post(server: ServerClient, clock: FrozenClock, path: str, body: Any = None) -> httpx.Response:
    # The test clock is frozen: move it so two identical requests carry two signatures, not one replayed.
    clock.advance(1)
    return await server.post(path, body)


async def capture(server: ServerClient, clock: FrozenClock, intent_id: str, body: Any) -> httpx.Response:
    return await post(server, clock, f"/v1/payment_intents/{intent_id}/capture", body)


async def refund(
    server: ServerClient, clock: FrozenClock, intent_id: str, body: Any = None
) -> httpx.Response:
    return await post(server, clock, f"/v1/payment_intents/{intent_id}/refund", body)


async def view(server: ServerClient, intent_id: str) -> dict[str, Any]:
    response = await server.get(f"/v1/payment_intents/{intent_id}")
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def transaction(server: ServerClient, transaction_id: str) -> dict[str, Any]:
    response = await server.get(f"/v1/transactions/{transaction_id}")
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def listed_transactions(server: ServerClient, intent_id: str) -> list[dict[str, Any]]:
    response = await server.get(f"/v1/payment_intents/{intent_id}/transactions?limit=100")
    assert response.status_code == 200, response.text
    page = response.json()
    assert page["has_more"] is False
    data: list[dict[str, Any]] = page["data"]
    return data


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


async def event_count(container: Container) -> int:
    async with container.db.reading() as session:
        return len((await session.execute(select(Event.id))).all())


async def history_of(container: Container, intent_id: str) -> list[tuple[str | None, str]]:
    async with container.db.reading() as session:
        rows = await session.execute(
            select(PaymentIntentStatusChange)
            .where(PaymentIntentStatusChange.payment_intent_id == intent_id)
            .order_by(PaymentIntentStatusChange.id)
        )
        return [(row.from_status, row.to_status) for row in rows.scalars()]


async def refund_rows(container: Container, intent_id: str) -> list[Transaction]:
    async with container.db.reading() as session:
        rows = await session.execute(
            select(Transaction)
            .where(Transaction.payment_intent_id == intent_id, Transaction.type == "refund")
            .order_by(Transaction.id)
        )
        return list(rows.scalars())


async def paid_by_provider(
    server: ServerClient, tenant: Tenant, clock: FrozenClock, amount: int
) -> dict[str, Any]:
    intent = await server.create_intent(tenant, amount=amount)
    confirmed = await post(server, clock, f"/v1/payment_intents/{intent['id']}/confirm")
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["status"] == "succeeded"
    assert confirmed.json()["amount_captured"] == amount
    result: dict[str, Any] = confirmed.json()
    return result


async def captured_externally(
    server: ServerClient, tenant: Tenant, clock: FrozenClock, amount: int, captured: int | None = None
) -> dict[str, Any]:
    intent = await server.create_intent(tenant, amount=amount, processing_mode="external")
    body: dict[str, Any] = {"status": "success", "approval_code": "123456"}
    if captured is not None:
        body["amount"] = captured
    response = await capture(server, clock, intent["id"], body)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "succeeded"
    result: dict[str, Any] = response.json()
    return result


# ---------------------------------------------------------------------------------------------- capture

CARD_APP_RESULT = {
    "approval_code": "123456",
    "card_slip_number": "00123",
    "card_last_4": "1234",
}


@pytest.mark.parametrize("confirm_first", [False, True], ids=["straight", "after_confirm"])
async def test_capture_success_records_the_card_app_result(
    server: ServerClient, tenant: Tenant, container: Container, clock: FrozenClock, confirm_first: bool
) -> None:
    intent = await server.create_intent(tenant, amount=100000, processing_mode="external")
    start = "requires_payment_method"
    if confirm_first:
        confirmed = await post(server, clock, f"/v1/payment_intents/{intent['id']}/confirm")
        start = "requires_capture"
        assert confirmed.json()["status"] == start
    response = await capture(server, clock, intent["id"], {**CARD_APP_RESULT, "status": "success"})
    assert response.status_code == 200, response.text
    final = await view(server, intent["id"])
    assert response.json() == final
    assert final["status"] == "succeeded"
    assert final["amount_captured"] == 100000
    assert final["amount_refunded"] == 0
    assert final["failure_code"] is None

    listed = await listed_transactions(server, intent["id"])
    assert len(listed) == 1
    record = listed[0]
    assert record == await transaction(server, record["id"])
    assert record["object"] == "transaction"
    assert record["payment_intent_id"] == intent["id"]
    assert (record["type"], record["status"], record["amount"], record["currency"]) == (
        "capture",
        "succeeded",
        100000,
        "JPY",
    )
    assert (record["approval_code"], record["card_last_4"], record["card_slip_number"]) == (
        "123456",
        "1234",
        "00123",
    )
    assert record["provider_name"] is None
    assert record["failure_code"] is None
    assert (record["merchant_id"], record["store_id"]) == (tenant.merchant_id, tenant.store_id)

    assert (await history_of(container, intent["id"]))[-1] == (start, "succeeded")
    events = await events_of(container, intent["id"])
    assert events[-1].type == "payment_intent.succeeded"
    assert events[-1].payload == final


@pytest.mark.parametrize(
    ("terminal_status", "intent_status", "failure_code"),
    [
        ("declined", "failed", "card_declined"),
        ("error", "failed", "terminal_error"),
        ("cancelled", "cancelled", "cancelled_at_terminal"),
    ],
)
async def test_capture_of_an_unsuccessful_terminal_result(
    server: ServerClient,
    tenant: Tenant,
    container: Container,
    clock: FrozenClock,
    terminal_status: str,
    intent_status: str,
    failure_code: str,
) -> None:
    intent = await server.create_intent(tenant, amount=5000, processing_mode="external")
    body = {**CARD_APP_RESULT, "status": terminal_status, "error_message": "Terminal says no"}
    response = await capture(server, clock, intent["id"], body)
    assert response.status_code == 200, response.text
    final = await view(server, intent["id"])
    assert response.json() == final
    assert final["status"] == intent_status
    assert final["amount_captured"] == 0
    if intent_status == "failed":
        assert (final["failure_code"], final["failure_message"]) == (failure_code, "Terminal says no")
        assert final["cancellation_reason"] is None
    else:
        assert (final["failure_code"], final["failure_message"]) == (None, None)
        assert final["cancellation_reason"] == "Terminal says no"

    [record] = await listed_transactions(server, intent["id"])
    assert record == await transaction(server, record["id"])
    assert (record["type"], record["status"], record["amount"]) == ("capture", "failed", 5000)
    assert (record["failure_code"], record["failure_message"]) == (failure_code, "Terminal says no")
    assert (record["approval_code"], record["card_last_4"], record["card_slip_number"]) == (
        "123456",
        "1234",
        "00123",
    )

    assert await history_of(container, intent["id"]) == [
        (None, "requires_payment_method"),
        ("requires_payment_method", intent_status),
    ]
    events = await events_of(container, intent["id"])
    assert [event.type for event in events] == ["payment_intent.created", f"payment_intent.{intent_status}"]
    assert events[-1].payload == final

    # The intent is final: refunds and a second capture are refused.
    again = await capture(server, clock, intent["id"], {"status": "success"})
    assert assert_problem(again, 409, "invalid_state_transition")["current_status"] == intent_status
    no_refund = await refund(server, clock, intent["id"])
    assert assert_problem(no_refund, 409, "invalid_state_transition")["current_status"] == intent_status


async def test_capture_without_a_body_captures_the_whole_amount(
    server: ServerClient, tenant: Tenant, clock: FrozenClock
) -> None:
    intent = await server.create_intent(
        tenant, amount=2500, processing_mode="manual", payment_method_type="cash"
    )
    response = await capture(server, clock, intent["id"], None)
    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["amount_captured"]) == ("succeeded", 2500)
    [record] = await listed_transactions(server, intent["id"])
    assert (record["type"], record["status"], record["amount"]) == ("capture", "succeeded", 2500)


@pytest.mark.parametrize("amount", [1001, 999_999_999_999])
async def test_capture_above_the_intent_amount_is_422(
    server: ServerClient, tenant: Tenant, container: Container, clock: FrozenClock, amount: int
) -> None:
    intent = await server.create_intent(tenant, amount=1000, processing_mode="external")
    before = await view(server, intent["id"])
    response = await capture(server, clock, intent["id"], {"status": "success", "amount": amount})
    assert_problem(response, 422, "capture_amount_too_large")
    assert await view(server, intent["id"]) == before
    assert await listed_transactions(server, intent["id"]) == []
    assert len(await events_of(container, intent["id"])) == 1


@pytest.mark.parametrize(
    "body",
    [
        {"status": "approved"},
        {"status": "success", "amount": 0},
        {"status": "success", "amount": 500.0},
        {"status": "success", "card_last_4": "12345"},
        {"status": "success", "card_last_4": "12ab"},
        {"status": "success", "pan": "4111111111111111"},
    ],
)
async def test_capture_body_is_validated(
    server: ServerClient, tenant: Tenant, clock: FrozenClock, body: dict[str, Any]
) -> None:
    intent = await server.create_intent(tenant, amount=1000, processing_mode="external")
    before = await view(server, intent["id"])
    assert_problem(await capture(server, clock, intent["id"], body), 422, "validation_error")
    assert await view(server, intent["id"]) == before


async def test_capture_of_a_provider_processed_intent_is_409(
    server: ServerClient, tenant: Tenant, container: Container, clock: FrozenClock
) -> None:
    intent = await server.create_intent(tenant, amount=1000)
    before = await view(server, intent["id"])
    response = await capture(server, clock, intent["id"], {**CARD_APP_RESULT, "status": "success"})
    assert_problem(response, 409, "capture_not_allowed")
    assert await view(server, intent["id"]) == before
    assert await listed_transactions(server, intent["id"]) == []
    assert len(await events_of(container, intent["id"])) == 1


# ---------------------------------------------------------------------------------------------- refunds


async def test_full_refund_is_the_default_amount(
    server: ServerClient, tenant: Tenant, container: Container, clock: FrozenClock
) -> None:
    intent = await paid_by_provider(server, tenant, clock, 1500)
    response = await refund(server, clock, intent["id"], {"reason": "customer returned it"})
    assert response.status_code == 201, response.text
    created = response.json()
    assert created == await transaction(server, created["id"])
    assert (created["type"], created["status"], created["amount"], created["currency"]) == (
        "refund",
        "succeeded",
        1500,
        "JPY",
    )
    assert created["reason"] == "customer returned it"
    assert created["provider_name"] == "test"
    assert created["provider_transaction_id"]
    after = await view(server, intent["id"])
    assert (after["status"], after["amount_captured"], after["amount_refunded"]) == ("succeeded", 1500, 1500)

    events = await events_of(container, created["id"])
    assert [(event.type, event.object_type) for event in events] == [("refund.succeeded", "refund")]
    assert events[0].payload == created
    # A refund changes no status: no history row, no payment_intent event.
    assert await history_of(container, intent["id"]) == [
        (None, "requires_payment_method"),
        ("requires_payment_method", "processing"),
        ("processing", "succeeded"),
    ]

    total_events = await event_count(container)
    again = await refund(server, clock, intent["id"])
    assert assert_problem(again, 409, "refund_exceeds_captured")["refundable_amount"] == 0
    one_more = await refund(server, clock, intent["id"], {"amount": 1})
    assert_problem(one_more, 409, "refund_exceeds_captured")
    assert await event_count(container) == total_events
    assert len(await refund_rows(container, intent["id"])) == 1
    assert (await view(server, intent["id"]))["amount_refunded"] == 1500


async def test_partial_refunds_up_to_the_captured_total(
    server: ServerClient, tenant: Tenant, container: Container, clock: FrozenClock
) -> None:
    intent = await paid_by_provider(server, tenant, clock, 1000)
    for amount, refunded in [(300, 300), (300, 600), (399, 999)]:
        response = await refund(server, clock, intent["id"], {"amount": amount})
        assert response.status_code == 201, response.text
        assert (response.json()["status"], response.json()["amount"]) == ("succeeded", amount)
        assert (await view(server, intent["id"]))["amount_refunded"] == refunded

    too_much = await refund(server, clock, intent["id"], {"amount": 2})
    assert assert_problem(too_much, 409, "refund_exceeds_captured")["refundable_amount"] == 1
    last = await refund(server, clock, intent["id"], {"amount": 1})
    assert last.status_code == 201, last.text
    nothing_left = await refund(server, clock, intent["id"], {"amount": 1})
    assert assert_problem(nothing_left, 409, "refund_exceeds_captured")["refundable_amount"] == 0

    rows = await refund_rows(container, intent["id"])
    assert [(row.status, row.amount) for row in rows] == [
        ("succeeded", 300),
        ("succeeded", 300),
        ("succeeded", 399),
        ("succeeded", 1),
    ]
    listed = await listed_transactions(server, intent["id"])
    assert sorted(txn["type"] for txn in listed) == ["payment", "refund", "refund", "refund", "refund"]
    assert [txn["id"] for txn in listed] == sorted((txn["id"] for txn in listed), reverse=True)
    final = await view(server, intent["id"])
    assert (final["status"], final["amount_captured"], final["amount_refunded"]) == ("succeeded", 1000, 1000)


async def test_refunds_are_bounded_by_a_partial_capture(
    server: ServerClient, tenant: Tenant, container: Container, clock: FrozenClock
) -> None:
    intent = await captured_externally(server, tenant, clock, amount=1000, captured=600)
    assert (intent["amount"], intent["amount_captured"]) == (1000, 600)

    over = await refund(server, clock, intent["id"], {"amount": 601})
    assert assert_problem(over, 409, "refund_exceeds_captured")["refundable_amount"] == 600
    assert await refund_rows(container, intent["id"]) == []

    partial = await refund(server, clock, intent["id"], {"amount": 250})
    assert partial.status_code == 201, partial.text
    rest = await refund(server, clock, intent["id"])  # the default: all that is left of the capture
    assert rest.status_code == 201, rest.text
    assert rest.json()["amount"] == 350
    # Refunds of external payments are recorded: the terminal or cashier paid the money back.
    for response in (partial, rest):
        assert (response.json()["status"], response.json()["provider_name"]) == ("succeeded", None)
        assert response.json()["provider_transaction_id"] is None
    final = await view(server, intent["id"])
    assert (final["amount_captured"], final["amount_refunded"]) == (600, 600)
    assert_problem(await refund(server, clock, intent["id"], {"amount": 1}), 409, "refund_exceeds_captured")
    refund_events = [
        event
        for row in await refund_rows(container, intent["id"])
        for event in await events_of(container, row.id)
    ]
    assert [event.type for event in refund_events] == ["refund.succeeded", "refund.succeeded"]
    assert refund_events[1].payload == await transaction(server, rest.json()["id"])


async def test_declined_refund_leaves_amount_refunded_unchanged(
    server: ServerClient, tenant: Tenant, container: Container, clock: FrozenClock
) -> None:
    intent = await paid_by_provider(server, tenant, clock, 50000)
    response = await refund(server, clock, intent["id"], {"amount": 40022})
    assert response.status_code == 201, response.text
    declined = response.json()
    assert declined == await transaction(server, declined["id"])
    assert (declined["type"], declined["status"], declined["amount"]) == ("refund", "failed", 40022)
    assert declined["failure_code"] == "refund_declined"
    assert declined["failure_message"]
    after = await view(server, intent["id"])
    assert (after["status"], after["amount_captured"], after["amount_refunded"]) == ("succeeded", 50000, 0)
    events = await events_of(container, declined["id"])
    assert [event.type for event in events] == ["refund.failed"]
    assert events[0].payload == declined

    # A declined refund holds nothing back: the whole captured amount can still be refunded.
    full = await refund(server, clock, intent["id"])
    assert full.status_code == 201, full.text
    assert (full.json()["status"], full.json()["amount"]) == ("succeeded", 50000)
    assert (await view(server, intent["id"]))["amount_refunded"] == 50000
    rows = await refund_rows(container, intent["id"])
    assert [(row.status, row.amount) for row in rows] == [("failed", 40022), ("succeeded", 50000)]


@pytest.mark.parametrize("amount", [100.5, 100.0, "100", 0, -100, True, 999_999_999_999 + 1], ids=repr)
async def test_refund_amount_must_be_a_positive_integer(
    server: ServerClient, tenant: Tenant, container: Container, clock: FrozenClock, amount: Any
) -> None:
    intent = await paid_by_provider(server, tenant, clock, 1000)
    response = await refund(server, clock, intent["id"], {"amount": amount})
    problem = assert_problem(response, 422, "validation_error")
    assert problem["errors"][0]["loc"] == ["body", "amount"]
    assert await refund_rows(container, intent["id"]) == []
    assert (await view(server, intent["id"]))["amount_refunded"] == 0


async def test_transactions_of_another_merchant_are_not_found(
    server: ServerClient, other_server: ServerClient, tenant: Tenant, clock: FrozenClock
) -> None:
    intent = await paid_by_provider(server, tenant, clock, 1000)
    created = (await refund(server, clock, intent["id"], {"amount": 10})).json()
    assert_problem(await other_server.get(f"/v1/transactions/{created['id']}"), 404, "transaction_not_found")
    assert_problem(
        await other_server.get(f"/v1/payment_intents/{intent['id']}/transactions"),
        404,
        "payment_intent_not_found",
    )
    assert_problem(await refund(other_server, clock, intent["id"]), 404, "payment_intent_not_found")
    assert_problem(
        await server.get("/v1/transactions/txn_01HXYZNOSUCHTRANSACTION000"), 404, "transaction_not_found"
    )


# ---------------------------------------------------------------------------------------------- concurrency


@pytest.mark.postgres
@pytest.mark.parametrize("mode", ["pgw_processed", "external"])
async def test_concurrent_refunds_never_exceed_the_captured_amount(
    server: ServerClient, tenant: Tenant, container: Container, clock: FrozenClock, mode: str
) -> None:
    if mode == "pgw_processed":
        intent = await paid_by_provider(server, tenant, clock, 1000)
    else:
        intent = await captured_externally(server, tenant, clock, amount=1000)
    assert intent["amount_captured"] == 1000
    path = f"/v1/payment_intents/{intent['id']}/refund"
    now = int(clock.now().timestamp())

    async def one_refund(index: int) -> httpx.Response:
        # Separately signed requests (distinct timestamps), each with its own Idempotency-Key.
        return await server.post(
            path, {"amount": 100}, timestamp=now - index, idempotency_key=f"refund-{intent['id']}-{index}"
        )

    responses = await asyncio.gather(*(one_refund(index) for index in range(20)))
    succeeded = [response for response in responses if response.status_code == 201]
    refused = [response for response in responses if response.status_code != 201]
    assert len(succeeded) == 10, [response.text for response in responses]
    assert all(response.json()["status"] == "succeeded" for response in succeeded)
    assert len(refused) == 10
    for response in refused:
        assert_problem(response, 409, "refund_exceeds_captured")
    final = await view(server, intent["id"])
    assert (final["amount_captured"], final["amount_refunded"]) == (1000, 1000)
    rows = await refund_rows(container, intent["id"])
    assert [(row.status, row.amount) for row in rows] == [("succeeded", 100)] * 10
