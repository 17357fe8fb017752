"""Operation x starting status, through the API: each operation either does what the state machine allows or is
refused with 409 (and then changes nothing: status, amounts, history, transactions, events)."""

from __future__ import annotations

from dataclasses import dataclass
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


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    problem: dict[str, Any] = response.json()
    assert problem["code"] == code
    assert problem["status"] == status
    assert problem["type"] == f"urn:paymux:problem:{code}"
    assert isinstance(problem["title"], str)
    assert problem["title"]
    assert problem["request_id"] == response.headers["x-request-id"]
    return problem


@dataclass(frozen=True)
class Snapshot:
    view: dict[str, Any]
    events: list[tuple[str, str]]
    history: list[tuple[str | None, str]]
    transactions: list[tuple[str, str, str, int]]


async def snapshot(server: ServerClient, container: Container, intent_id: str) -> Snapshot:
    response = await server.get(f"/v1/payment_intents/{intent_id}")
    assert response.status_code == 200, response.text
    async with container.db.reading() as session:
        events = (await session.execute(select(Event).order_by(Event.id))).scalars().all()
        history = (
            (
                await session.execute(
                    select(PaymentIntentStatusChange)
                    .where(PaymentIntentStatusChange.payment_intent_id == intent_id)
                    .order_by(PaymentIntentStatusChange.id)
                )
            )
            .scalars()
            .all()
        )
        transactions = (await session.execute(select(Transaction).order_by(Transaction.id))).scalars().all()
    return Snapshot(
        view=response.json(),
        events=[(event.id, event.type) for event in events],
        history=[(row.from_status, row.to_status) for row in history],
        transactions=[(txn.id, txn.type, txn.status, txn.amount) for txn in transactions],
    )


# ---------------------------------------------------------------------------------------------- the matrix

CAPTURE_SUCCESS = {
    "status": "success",
    "approval_code": "123456",
    "card_last_4": "1234",
    "card_slip_number": "00123",
}
CAPTURE_DECLINED = {"status": "declined", "error_message": "Do not honour"}

OPERATIONS: dict[str, Any] = {
    "confirm": None,
    "cancel": {"cancellation_reason": "customer walked away"},
    "capture": CAPTURE_SUCCESS,
    "refund": None,
}


@dataclass(frozen=True)
class Start:
    """How to bring a fresh intent into one status."""

    mode: str
    amount: int
    steps: tuple[tuple[str, Any], ...]
    status: str


STARTS: dict[str, Start] = {
    "requires_payment_method/pgw": Start("pgw_processed", 1000, (), "requires_payment_method"),
    "requires_payment_method/external": Start("external", 1000, (), "requires_payment_method"),
    "requires_capture/external": Start("external", 1000, (("confirm", None),), "requires_capture"),
    "processing/pgw": Start("pgw_processed", 40091, (("confirm", None),), "processing"),
    "succeeded/pgw": Start("pgw_processed", 1000, (("confirm", None),), "succeeded"),
    "succeeded/external": Start(
        "external", 1000, (("confirm", None), ("capture", CAPTURE_SUCCESS)), "succeeded"
    ),
    "failed/pgw": Start("pgw_processed", 40002, (("confirm", None),), "failed"),
    "failed/external": Start("external", 1000, (("capture", CAPTURE_DECLINED),), "failed"),
    "cancelled/pgw": Start("pgw_processed", 1000, (("cancel", None),), "cancelled"),
    "cancelled/external": Start("external", 1000, (("confirm", None), ("cancel", None)), "cancelled"),
}


@dataclass(frozen=True)
class Allowed:
    http_status: int
    status: str  # the intent's status afterwards
    history: tuple[tuple[str, str], ...]  # new history rows (from, to)
    events: tuple[str, ...]  # new outbox events, in order


@dataclass(frozen=True)
class Refused:
    code: str
    current_status: str | None  # the `current_status` member of an invalid_state_transition


def refused(status: str) -> Refused:
    return Refused("invalid_state_transition", status)


NOT_CAPTURABLE = Refused("capture_not_allowed", None)
RPM = "requires_payment_method"

EXPECTED: dict[tuple[str, str], Allowed | Refused] = {
    ("requires_payment_method/pgw", "confirm"): Allowed(
        200,
        "succeeded",
        ((RPM, "processing"), ("processing", "succeeded")),
        ("payment_intent.processing", "payment_intent.succeeded"),
    ),
    ("requires_payment_method/pgw", "cancel"): Allowed(
        200, "cancelled", ((RPM, "cancelled"),), ("payment_intent.cancelled",)
    ),
    ("requires_payment_method/pgw", "capture"): NOT_CAPTURABLE,
    ("requires_payment_method/pgw", "refund"): refused(RPM),
    ("requires_payment_method/external", "confirm"): Allowed(
        200, "requires_capture", ((RPM, "requires_capture"),), ("payment_intent.requires_capture",)
    ),
    ("requires_payment_method/external", "cancel"): Allowed(
        200, "cancelled", ((RPM, "cancelled"),), ("payment_intent.cancelled",)
    ),
    ("requires_payment_method/external", "capture"): Allowed(
        200, "succeeded", ((RPM, "succeeded"),), ("payment_intent.succeeded",)
    ),
    ("requires_payment_method/external", "refund"): refused(RPM),
    ("requires_capture/external", "confirm"): refused("requires_capture"),
    ("requires_capture/external", "cancel"): Allowed(
        200, "cancelled", (("requires_capture", "cancelled"),), ("payment_intent.cancelled",)
    ),
    ("requires_capture/external", "capture"): Allowed(
        200, "succeeded", (("requires_capture", "succeeded"),), ("payment_intent.succeeded",)
    ),
    ("requires_capture/external", "refund"): refused("requires_capture"),
    ("processing/pgw", "confirm"): refused("processing"),
    ("processing/pgw", "cancel"): refused("processing"),
    ("processing/pgw", "capture"): NOT_CAPTURABLE,
    ("processing/pgw", "refund"): refused("processing"),
    ("succeeded/pgw", "confirm"): refused("succeeded"),
    ("succeeded/pgw", "cancel"): refused("succeeded"),
    ("succeeded/pgw", "capture"): NOT_CAPTURABLE,
    ("succeeded/pgw", "refund"): Allowed(201, "succeeded", (), ("refund.succeeded",)),
    ("succeeded/external", "confirm"): refused("succeeded"),
    ("succeeded/external", "cancel"): refused("succeeded"),
    ("succeeded/external", "capture"): refused("succeeded"),
    ("succeeded/external", "refund"): Allowed(201, "succeeded", (), ("refund.succeeded",)),
    ("failed/pgw", "confirm"): refused("failed"),
    ("failed/pgw", "cancel"): refused("failed"),
    ("failed/pgw", "capture"): NOT_CAPTURABLE,
    ("failed/pgw", "refund"): refused("failed"),
    ("failed/external", "confirm"): refused("failed"),
    ("failed/external", "cancel"): refused("failed"),
    ("failed/external", "capture"): refused("failed"),
    ("failed/external", "refund"): refused("failed"),
    ("cancelled/pgw", "confirm"): refused("cancelled"),
    ("cancelled/pgw", "cancel"): refused("cancelled"),
    ("cancelled/pgw", "capture"): NOT_CAPTURABLE,
    ("cancelled/pgw", "refund"): refused("cancelled"),
    ("cancelled/external", "confirm"): refused("cancelled"),
    ("cancelled/external", "cancel"): refused("cancelled"),
    ("cancelled/external", "capture"): refused("cancelled"),
    ("cancelled/external", "refund"): refused("cancelled"),
}


def test_the_matrix_covers_every_start_and_operation() -> None:
    assert set(EXPECTED) == {(start, operation) for start in STARTS for operation in OPERATIONS}


async def reach(server: ServerClient, clock: FrozenClock, tenant: Tenant, start: Start) -> dict[str, Any]:
    intent = await server.create_intent(tenant, amount=start.amount, processing_mode=start.mode)
    for operation, body in start.steps:
        response = await post(server, clock, f"/v1/payment_intents/{intent['id']}/{operation}", body)
        assert response.status_code == 200, response.text
        intent = response.json()
    assert intent["status"] == start.status
    return intent


@pytest.mark.parametrize(("start_name", "operation"), sorted(EXPECTED), ids=lambda value: str(value))
async def test_operation_from_status(
    server: ServerClient,
    tenant: Tenant,
    container: Container,
    clock: FrozenClock,
    start_name: str,
    operation: str,
) -> None:
    start = STARTS[start_name]
    intent = await reach(server, clock, tenant, start)
    before = await snapshot(server, container, intent["id"])
    assert before.view["status"] == start.status

    response = await post(
        server, clock, f"/v1/payment_intents/{intent['id']}/{operation}", OPERATIONS[operation]
    )
    after = await snapshot(server, container, intent["id"])
    expected = EXPECTED[(start_name, operation)]

    if isinstance(expected, Refused):
        problem = assert_problem(response, 409, expected.code)
        if expected.current_status is not None:
            assert problem["current_status"] == expected.current_status
        else:
            assert "current_status" not in problem
        assert after == before, "a refused operation must change nothing"
        return

    assert response.status_code == expected.http_status, response.text
    assert after.view["status"] == expected.status
    assert after.history == before.history + list(expected.history)
    new_events = after.events[len(before.events) :]
    assert after.events[: len(before.events)] == before.events
    assert [event_type for _, event_type in new_events] == list(expected.events)
    if operation == "refund":
        refund = response.json()
        assert refund["object"] == "transaction"
        assert refund["type"] == "refund"
        assert refund["status"] == "succeeded"
        assert refund["amount"] == before.view["amount_captured"] == start.amount
        assert after.view["amount_refunded"] == start.amount
        assert after.view["amount_captured"] == before.view["amount_captured"]
    else:
        assert response.json() == after.view
        assert after.view["amount_refunded"] == 0
        expected_captured = start.amount if expected.status == "succeeded" else 0
        assert after.view["amount_captured"] == expected_captured
    if operation == "cancel":
        assert after.view["cancellation_reason"] == "customer walked away"
    if operation == "capture":
        captures = [txn for txn in after.transactions if txn[1] == "capture"]
        assert [(kind, status, amount) for _, kind, status, amount in captures] == [
            ("capture", "succeeded", start.amount)
        ]
