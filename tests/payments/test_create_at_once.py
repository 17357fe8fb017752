"""Create PaymentIntent written at once: one insert of every row and the Idempotency-Key (the store is kept).

When a unique constraint refuses that insert (a taken key or merchant_ref_id) nothing of it stays, and the
atomic run answers: a replay, or the conflict, stored under the key.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, func, select, update

from paymux.auth.models import PaymentToken
from paymux.container import Container
from paymux.core.clock import FrozenClock
from paymux.events.models import Event
from paymux.gateway.models import IdempotencyRecord
from paymux.payments.models import PaymentIntent, PaymentIntentStatusChange
from paymux.tenants import payable
from paymux.tenants.models import Store
from tests.support import ServerClient, Tenant, intent_body

INTENTS = "/v1/payment_intents"


@contextmanager
def statements_of(container: Container) -> Iterator[list[str]]:
    """The SQL statements the database is sent while the block runs."""
    sent: list[str] = []

    def record(_connection: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sent.append(statement)

    engine = container.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", record)


async def count(container: Container, model: Any, *where: Any) -> int:
    async with container.db.reading() as session:
        return int(
            (await session.execute(select(func.count()).select_from(model).where(*where))).scalar_one()
        )


@pytest.mark.postgres
async def test_a_create_is_one_insert(server: ServerClient, tenant: Tenant, container: Container) -> None:
    await server.create_intent(tenant)  # the API client and the store are read once, then kept
    body = intent_body(tenant)
    with statements_of(container) as sent:
        response = await server.post(INTENTS, body, idempotency_key="at-once")
    assert response.status_code == 201, response.text
    assert len(sent) == 1, sent
    for table in ("payment_intents", "payment_intent_status_changes", "events", "payment_tokens"):
        assert f"INSERT INTO {table}" in sent[0]
    assert "INSERT INTO idempotency_keys" in sent[0]

    intent_id = response.json()["id"]
    assert (
        await count(
            container, PaymentIntentStatusChange, PaymentIntentStatusChange.payment_intent_id == intent_id
        )
        == 1
    )
    async with container.db.reading() as session:
        record = (
            await session.execute(select(IdempotencyRecord).where(IdempotencyRecord.key == "at-once"))
        ).scalar_one()
    assert (record.response_status, record.locked_at) == (201, None)


async def test_a_taken_merchant_ref_id_under_a_new_key_leaves_nothing_of_the_draft(
    server: ServerClient, tenant: Tenant, container: Container, clock: FrozenClock
) -> None:
    body = intent_body(tenant)
    first = await server.post(INTENTS, body, idempotency_key="first")
    assert first.status_code == 201, first.text
    events_before = await count(container, Event)

    clock.advance(1)
    taken = await server.post(INTENTS, {**body, "amount": 2000}, idempotency_key="second")
    assert taken.status_code == 409, taken.text
    assert taken.json()["code"] == "merchant_ref_id_taken"
    assert taken.json()["payment_intent_id"] == first.json()["id"]

    # Only the first create's rows: the refused insert wrote no intent, history, event, token or key answer.
    assert (
        await count(container, PaymentIntent, PaymentIntent.merchant_ref_id == body["merchant_ref_id"]) == 1
    )
    assert await count(container, Event) == events_before
    assert await count(container, PaymentToken) == 1
    async with container.db.reading() as session:
        answers = dict(
            (await session.execute(select(IdempotencyRecord.key, IdempotencyRecord.response_status))).all()
        )
    assert answers == {"first": 201, "second": 409}

    clock.advance(1)
    replay = await server.post(INTENTS, {**body, "amount": 2000}, idempotency_key="second")
    assert replay.status_code == 409
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.content == taken.content


async def test_a_refused_create_is_answered_and_stored_by_the_atomic_run(
    server: ServerClient, tenant: Tenant, other_tenant: Tenant, container: Container, clock: FrozenClock
) -> None:
    """A draft that the use case refuses writes nothing; the atomic run gives the refusal and stores it."""
    foreign = intent_body(tenant, store_id=other_tenant.store_id)
    refused = await server.post(INTENTS, foreign, idempotency_key="foreign")
    assert refused.status_code == 404, refused.text
    assert await count(container, PaymentIntent) == 0
    assert await count(container, IdempotencyRecord, IdempotencyRecord.response_status == 404) == 1
    clock.advance(1)
    replay = await server.post(INTENTS, foreign, idempotency_key="foreign")
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.content == refused.content


async def test_a_store_deactivated_elsewhere_stops_payments_within_the_ttl(
    server: ServerClient, tenant: Tenant, container: Container, clock: FrozenClock
) -> None:
    await server.create_intent(tenant)
    # Another process deactivates the store: this one keeps what it read for up to payable.TTL.
    async with container.db.unit_of_work() as session:
        await session.execute(update(Store).where(Store.id == tenant.store_id).values(is_active=False))
    await server.create_intent(tenant)
    clock.advance(payable.TTL)
    refused = await server.post(INTENTS, intent_body(tenant))
    assert refused.status_code == 409, refused.text
    assert refused.json()["code"] == "store_inactive"
