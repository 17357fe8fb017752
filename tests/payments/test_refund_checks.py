"""A refund whose provider answer was lost stays pending until the worker's refund status check settles it."""

from __future__ import annotations

from datetime import timedelta

from paymux.container import Container
from paymux.core.clock import FrozenClock
from tests.support import ServerClient, Tenant


async def test_a_timed_out_refund_is_settled_by_the_status_check(
    server: ServerClient, tenant: Tenant, container: Container, clock: FrozenClock
) -> None:
    intent = await server.create_intent(tenant, amount=50000)
    assert (await server.post(f"/v1/payment_intents/{intent['id']}/confirm")).json()["status"] == "succeeded"
    refund = (await server.post(f"/v1/payment_intents/{intent['id']}/refund", {"amount": 40091})).json()
    assert refund["status"] == "pending"
    assert (await server.get(f"/v1/payment_intents/{intent['id']}")).json()["amount_refunded"] == 0

    assert await container.payments.check_due_refunds() == 0  # not due yet
    clock.advance(timedelta(seconds=6))
    assert await container.payments.check_due_refunds() == 1
    settled = (await server.get(f"/v1/transactions/{refund['id']}")).json()
    assert settled["status"] == "succeeded"
    assert (await server.get(f"/v1/payment_intents/{intent['id']}")).json()["amount_refunded"] == 40091
    events = (await server.get("/v1/events?type=refund.succeeded")).json()["data"]
    assert [event["object_id"] for event in events] == [refund["id"]]

    clock.advance(timedelta(hours=1))
    assert await container.payments.check_due_refunds() == 0  # settled refunds are not checked again


async def test_a_pending_refund_still_counts_against_the_refundable_amount(
    server: ServerClient, tenant: Tenant
) -> None:
    intent = await server.create_intent(tenant, amount=50000)
    await server.post(f"/v1/payment_intents/{intent['id']}/confirm")
    assert (await server.post(f"/v1/payment_intents/{intent['id']}/refund", {"amount": 40091})).json()[
        "status"
    ] == "pending"
    too_much = await server.post(f"/v1/payment_intents/{intent['id']}/refund", {"amount": 10000})
    assert too_much.json()["code"] == "refund_exceeds_captured"
    assert too_much.json()["refundable_amount"] == 50000 - 40091
