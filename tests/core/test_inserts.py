"""The Core inserts of the hot paths (`insert_new`, `insert_if_absent`), on the suite's backend: rows that refer
to each other go in together, a failure takes none of them, a taken unique key leaves the transaction usable."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from paymux.auth.models import PaymentToken
from paymux.container import Container
from paymux.core.clock import FrozenClock
from paymux.core.db import insert_if_absent, insert_new
from paymux.core.ids import new_id
from paymux.events.models import Event
from paymux.payments.models import PaymentIntent, PaymentIntentStatusChange
from tests.support import Tenant


def an_intent(tenant: Tenant, clock: FrozenClock, merchant_ref_id: str) -> PaymentIntent:
    now = clock.now()
    return PaymentIntent(
        id=new_id("pi"),
        client_partner_id=tenant.client_partner_id,
        merchant_id=tenant.merchant_id,
        store_id=tenant.store_id,
        merchant_ref_id=merchant_ref_id,
        amount=1250,
        currency="JPY",
        amount_captured=0,
        amount_refunded=0,
        payment_method_type="card",
        processing_mode="redirect",
        status="requires_payment_method",
        metadata_={"order": "A-1"},
        created_at=now,
        updated_at=now,
    )


def its_rows(
    intent: PaymentIntent, clock: FrozenClock
) -> tuple[PaymentIntentStatusChange, Event, PaymentToken]:
    now = clock.now()
    history = PaymentIntentStatusChange(
        id=new_id("psc"),
        payment_intent_id=intent.id,
        merchant_id=intent.merchant_id,
        from_status=None,
        to_status=intent.status,
        reason="created",
        created_at=now,
    )
    event = Event(
        id=new_id("evt"),
        type="payment_intent.created",
        object_type="payment_intent",
        object_id=intent.id,
        payload={"id": intent.id, "amount": intent.amount, "nested": {"ok": True}},
        client_partner_id=intent.client_partner_id,
        merchant_id=intent.merchant_id,
        store_id=intent.store_id,
        created_at=now,
    )
    token = PaymentToken(
        token_hash=new_id("hash"),
        payment_intent_id=intent.id,
        client_partner_id=intent.client_partner_id,
        merchant_id=intent.merchant_id,
        store_id=intent.store_id,
        created_at=now,
        expires_at=now + timedelta(minutes=15),
    )
    return history, event, token


async def test_rows_that_refer_to_each_other_go_in_together(
    container: Container, tenant: Tenant, clock: FrozenClock
) -> None:
    intent = an_intent(tenant, clock, "ref-1")
    history, event, token = its_rows(intent, clock)
    async with container.db.unit_of_work() as session:
        await insert_new(session, intent, history, event, token)

    async with container.db.reading() as session:
        stored = await session.get(PaymentIntent, intent.id)
        stored_event = await session.get(Event, event.id)
        stored_token = await session.get(PaymentToken, token.token_hash)
        changes = await session.scalar(
            select(func.count()).where(PaymentIntentStatusChange.payment_intent_id == intent.id)
        )
    assert stored is not None
    assert stored.metadata_ == {"order": "A-1"}
    assert stored.created_at == intent.created_at
    assert stored_event is not None
    assert stored_event.payload == event.payload
    assert stored_event.relayed_at is None
    assert stored_token is not None
    assert stored_token.expires_at == token.expires_at
    assert changes == 1


async def test_a_failing_row_takes_the_others_with_it(
    container: Container, tenant: Tenant, clock: FrozenClock
) -> None:
    first = an_intent(tenant, clock, "ref-1")
    async with container.db.unit_of_work() as session:
        await insert_new(session, first)

    second = an_intent(tenant, clock, "ref-2")
    history, event, _ = its_rows(second, clock)
    duplicate_event = its_rows(second, clock)[1]
    duplicate_event.id = event.id  # the same primary key twice: the whole insert fails
    with pytest.raises(IntegrityError):
        async with container.db.unit_of_work() as session:
            await insert_new(session, second, history, event, duplicate_event)

    async with container.db.reading() as session:
        assert await session.get(PaymentIntent, second.id) is None
        assert await session.get(Event, event.id) is None
        assert await session.get(PaymentIntentStatusChange, history.id) is None
        assert await session.get(PaymentIntent, first.id) is not None


async def test_a_taken_unique_key_is_reported_and_the_transaction_goes_on(
    container: Container, tenant: Tenant, clock: FrozenClock
) -> None:
    first = an_intent(tenant, clock, "ref-1")
    same_ref = an_intent(tenant, clock, "ref-1")
    unique = ("merchant_id", "merchant_ref_id")
    async with container.db.unit_of_work() as session:
        assert await insert_if_absent(session, first, unique=unique)
        assert not await insert_if_absent(session, same_ref, unique=unique)
        # Still usable: no aborted transaction to roll back.
        history, _, _ = its_rows(first, clock)
        await insert_new(session, history)

    async with container.db.reading() as session:
        assert await session.get(PaymentIntent, same_ref.id) is None
        assert await session.get(PaymentIntentStatusChange, history.id) is not None


async def test_dependents_go_in_with_their_row_and_only_with_it(
    container: Container, tenant: Tenant, clock: FrozenClock
) -> None:
    unique = ("merchant_id", "merchant_ref_id")
    intent = an_intent(tenant, clock, "ref-1")
    # Columns left unset take their defaults.
    del intent.amount_captured, intent.metadata_
    async with container.db.unit_of_work() as session:
        assert await insert_if_absent(session, intent, *its_rows(intent, clock), unique=unique)

    again = an_intent(tenant, clock, "ref-1")
    history, event, token = its_rows(again, clock)
    async with container.db.unit_of_work() as session:
        assert not await insert_if_absent(session, again, history, event, token, unique=unique)

    async with container.db.reading() as session:
        stored = await session.get(PaymentIntent, intent.id)
        events = await session.scalar(select(func.count()).select_from(Event))
        tokens = await session.scalar(select(func.count()).select_from(PaymentToken))
        assert await session.get(PaymentIntent, again.id) is None
        assert await session.get(PaymentIntentStatusChange, history.id) is None
    assert stored is not None
    assert stored.amount_captured == 0
    assert stored.metadata_ == {}
    assert events == 1
    assert tokens == 1
