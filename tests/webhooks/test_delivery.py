"""Merchant webhooks end to end: a payment's events reach a real HTTP receiver, signed, on schedule."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from standardwebhooks import Webhook, WebhookVerificationError

from paymux.container import Container
from paymux.core.clock import FrozenClock
from paymux.webhooks import schedule
from paymux.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from paymux.worker import Worker
from tests.support import ServerClient, Tenant
from tests.webhooks.receiver import Receiver, Reply, running_receiver


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with running_receiver() as running:
        yield running


@pytest.fixture
async def worker(container: Container) -> AsyncIterator[Worker]:
    process = Worker(container, worker_id="test-worker", jitter=lambda: 0.5)  # no jitter: factor 1.0
    yield process
    await process.aclose()


async def register(server: ServerClient, url: str, events: list[str] | None = None) -> dict[str, Any]:
    response = await server.post("/v1/webhook_endpoints", {"url": url, "events": events or ["*"]})
    assert response.status_code == 201, response.text
    endpoint: dict[str, Any] = response.json()
    return endpoint


async def five_created_for(server: ServerClient, tenant: Tenant, receiver: Receiver) -> None:
    """An endpoint at the receiver for payment_intent.created, and five intents created for it."""
    await register(server, receiver.url, events=["payment_intent.created"])
    for _ in range(5):
        await server.create_intent(tenant)


async def paid_intent(server: ServerClient, tenant: Tenant, amount: int = 1000) -> dict[str, Any]:
    intent = await server.create_intent(tenant, amount=amount)
    confirmed = await server.post(f"/v1/payment_intents/{intent['id']}/confirm")
    assert confirmed.status_code == 200, confirmed.text
    result: dict[str, Any] = confirmed.json()
    return result


async def deliveries(server: ServerClient, endpoint_id: str) -> list[dict[str, Any]]:
    response = await server.get(f"/v1/webhook_endpoints/{endpoint_id}/deliveries?limit=100")
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def verify(secret: str, request: Any) -> dict[str, Any]:
    payload: dict[str, Any] = Webhook(secret).verify(request.body, request.headers)
    return payload


async def test_a_payments_events_arrive_signed_and_in_order(
    server: ServerClient, tenant: Tenant, receiver: Receiver, worker: Worker
) -> None:
    endpoint = await register(server, receiver.url)
    assert endpoint["secret"].startswith("whsec_")
    intent = await paid_intent(server, tenant)

    assert await worker.run_once() > 0

    types = [json.loads(request.body)["type"] for request in receiver.received]
    assert types == ["payment_intent.created", "payment_intent.processing", "payment_intent.succeeded"]
    events = (await server.get(f"/v1/events?object_id={intent['id']}&limit=10")).json()["data"]
    ids_newest_first = [event["id"] for event in events]
    for request, event_id in zip(receiver.received, reversed(ids_newest_first), strict=True):
        payload = verify(endpoint["secret"], request)  # the standardwebhooks library accepts it
        assert request.headers["webhook-id"] == event_id == payload["id"]
        assert payload["data"]["id"] == intent["id"]
    assert json.loads(receiver.received[-1].body)["data"]["status"] == "succeeded"
    assert all(delivery["status"] == "succeeded" for delivery in await deliveries(server, endpoint["id"]))


async def test_the_secret_is_shown_only_at_creation(server: ServerClient, receiver: Receiver) -> None:
    endpoint = await register(server, receiver.url)
    fetched = (await server.get(f"/v1/webhook_endpoints/{endpoint['id']}")).json()
    listed = (await server.get("/v1/webhook_endpoints")).json()["data"]
    assert fetched["secret"] is None
    assert listed[0]["secret"] is None
    assert endpoint["secret"] not in json.dumps([fetched, listed])


async def test_only_subscribed_events_are_sent(
    server: ServerClient, tenant: Tenant, receiver: Receiver, worker: Worker
) -> None:
    await register(server, receiver.url, events=["payment_intent.succeeded"])
    await paid_intent(server, tenant)
    await worker.run_once()
    assert [json.loads(request.body)["type"] for request in receiver.received] == ["payment_intent.succeeded"]


async def test_a_failing_receiver_gets_retries_on_schedule(
    server: ServerClient, tenant: Tenant, receiver: Receiver, worker: Worker, clock: FrozenClock
) -> None:
    endpoint = await register(server, receiver.url, events=["payment_intent.created"])
    await server.create_intent(tenant)
    receiver.replies = [Reply(500), Reply(503), Reply(502)]

    await worker.run_once()
    assert len(receiver.received) == 1
    for delay in schedule.RETRY_DELAYS[:3]:
        clock.advance(delay - timedelta(seconds=1))
        await worker.run_once()
        assert receiver.received, "nothing may be sent before the retry is due"
        sent_before = len(receiver.received)
        clock.advance(timedelta(seconds=1))
        await worker.run_once()
        assert len(receiver.received) == sent_before + 1

    [delivery] = await deliveries(server, endpoint["id"])
    assert delivery["status"] == "succeeded"
    assert [attempt["status_code"] for attempt in delivery["attempts"]] == [500, 503, 502, 200]
    assert [attempt["succeeded"] for attempt in delivery["attempts"]] == [False, False, False, True]
    assert all(attempt["latency_ms"] >= 0 for attempt in delivery["attempts"])
    assert delivery["attempts"][0]["error"] == "HTTP 500"
    # every attempt is signed afresh, and the message id stays the event id
    assert len({request.headers["webhook-id"] for request in receiver.received}) == 1


async def test_a_woken_round_sends_what_it_relayed_and_leaves_due_retries_to_the_poll(
    server: ServerClient, tenant: Tenant, receiver: Receiver, worker: Worker, clock: FrozenClock
) -> None:
    await register(server, receiver.url, events=["payment_intent.created"])
    await server.create_intent(tenant)
    receiver.replies = [Reply(500)]

    first = await worker.deliver(look_for_due=False)
    assert (first.events, first.attempts, first.backlog) == (1, 1, True)  # relayed, sent, failed
    after = await worker.deliver(look_for_due=False)  # the last round sent, so this one looks (nothing due)
    assert (after.events, after.attempts, after.backlog) == (0, 0, False)

    clock.advance(schedule.RETRY_DELAYS[0])
    woken = await worker.deliver(look_for_due=False)  # nothing relayed or sent: the due retry waits
    assert (woken.events, woken.attempts, woken.backlog) == (0, 0, False)
    assert len(receiver.received) == 1
    polled = await worker.deliver()
    assert (polled.events, polled.attempts) == (0, 1)
    assert len(receiver.received) == 2


async def test_retries_run_out_after_three_days_into_the_dead_letter_state_and_redeliver_works(
    server: ServerClient, tenant: Tenant, receiver: Receiver, worker: Worker, clock: FrozenClock
) -> None:
    endpoint = await register(server, receiver.url, events=["payment_intent.created"])
    intent = await server.create_intent(tenant)
    receiver.default = Reply(500)
    started = clock.now()

    await worker.run_once()
    while True:
        [delivery] = await deliveries(server, endpoint["id"])
        if delivery["status"] != "pending":
            break
        clock.set(max(clock.now(), _parse(delivery["next_attempt_at"])))
        await worker.run_once()

    assert delivery["status"] == "dead"
    assert delivery["dead_reason"] == "retries_exhausted"
    assert delivery["attempt_count"] == schedule.MAX_ATTEMPTS == 16
    assert clock.now() - started <= schedule.GIVE_UP_AFTER

    receiver.default = Reply(200)
    [event] = (await server.get(f"/v1/events?object_id={intent['id']}")).json()["data"]
    redelivered = await server.post(f"/v1/events/{event['id']}/redeliver")
    assert redelivered.status_code == 200, redelivered.text
    assert redelivered.json()["data"][0]["status"] == "pending"
    await worker.run_once()
    [delivery] = await deliveries(server, endpoint["id"])
    assert delivery["status"] == "succeeded"
    assert delivery["attempt_count"] == 17


async def test_410_gone_disables_the_endpoint_and_dead_letters_its_deliveries(
    server: ServerClient, tenant: Tenant, receiver: Receiver, worker: Worker
) -> None:
    endpoint = await register(server, receiver.url)
    await paid_intent(server, tenant)
    receiver.default = Reply(410)

    await worker.run_once()
    assert len(receiver.received) == 1  # the first 410 stops everything
    fetched = (await server.get(f"/v1/webhook_endpoints/{endpoint['id']}")).json()
    assert (fetched["enabled"], fetched["disabled_reason"]) == (False, "gone")
    assert {d["status"] for d in await deliveries(server, endpoint["id"])} == {"dead"}

    await paid_intent(server, tenant)  # later events are not sent to a disabled endpoint
    await worker.run_once()
    assert len(receiver.received) == 1

    receiver.default = Reply(200)
    enabled = await server.request("PATCH", f"/v1/webhook_endpoints/{endpoint['id']}", {"enabled": True})
    assert enabled.json()["enabled"] is True
    events = (await server.get("/v1/events?limit=100")).json()["data"]
    for event in reversed(events[3:]):  # the first payment's three events
        assert (await server.post(f"/v1/events/{event['id']}/redeliver")).status_code == 200
    await worker.run_once()
    assert len(receiver.received) == 4


async def test_secret_rotation_signs_with_both_secrets_for_a_day(
    server: ServerClient, tenant: Tenant, receiver: Receiver, worker: Worker, clock: FrozenClock
) -> None:
    endpoint = await register(server, receiver.url, events=["payment_intent.created"])
    old_secret = endpoint["secret"]
    rotated = await server.post(f"/v1/webhook_endpoints/{endpoint['id']}/rotate_secret")
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["secret"]
    assert new_secret != old_secret

    await server.create_intent(tenant)
    await worker.run_once()
    request = receiver.received[-1]
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    verify(old_secret, request)
    verify(new_secret, request)

    clock.advance(timedelta(hours=24, seconds=1))
    await server.create_intent(tenant)
    await worker.run_once()
    later = receiver.received[-1]
    # standardwebhooks checks the timestamp against the real clock, which the frozen clock does not move
    later.headers["webhook-timestamp"] = request.headers["webhook-timestamp"]
    with pytest.raises(WebhookVerificationError):
        Webhook(old_secret).verify(later.body, later.headers)
    assert len(later.headers["webhook-signature"].split(" ")) == 1


async def test_many_events_arrive_in_event_order(
    server: ServerClient, tenant: Tenant, receiver: Receiver, worker: Worker
) -> None:
    await register(server, receiver.url, events=["payment_intent.created"])
    created = [(await server.create_intent(tenant))["id"] for _ in range(25)]
    while await worker.run_once():
        pass
    assert [json.loads(request.body)["data"]["id"] for request in receiver.received] == created


async def test_redirects_are_not_followed(
    server: ServerClient, tenant: Tenant, receiver: Receiver, worker: Worker
) -> None:
    endpoint = await register(server, receiver.url, events=["payment_intent.created"])
    receiver.replies = [Reply(302, headers={"location": "http://169.254.169.254/"})]
    await server.create_intent(tenant)
    await worker.run_once()
    assert len(receiver.received) == 1
    [delivery] = await deliveries(server, endpoint["id"])
    assert delivery["attempts"][0]["status_code"] == 302
    assert delivery["status"] == "pending"


async def test_only_the_start_of_a_response_body_is_read(
    container: Container, server: ServerClient, tenant: Tenant, receiver: Receiver, worker: Worker
) -> None:
    await register(server, receiver.url, events=["payment_intent.created"])
    receiver.replies = [Reply(200, body=b"x" * 1_000_000)]
    await server.create_intent(tenant)
    await worker.run_once()
    async with container.db.reading() as session:
        [excerpt] = (await session.execute(select(WebhookAttempt.response_excerpt))).scalars().all()
    assert excerpt is not None
    assert 0 < len(excerpt) <= 1024


async def test_a_slow_receiver_times_out_and_is_retried(
    container: Container, server: ServerClient, tenant: Tenant, receiver: Receiver
) -> None:
    endpoint = await register(server, receiver.url, events=["payment_intent.created"])
    receiver.replies = [Reply(200, delay=2.0)]
    quick = Worker(
        Container(
            **{
                **container.__dict__,
                "settings": container.settings.model_copy(update={"webhook_timeout_seconds": 0.3}),
            }
        ),
        worker_id="impatient",
        jitter=lambda: 0.5,
    )
    try:
        await server.create_intent(tenant)
        await quick.run_once()
    finally:
        await quick.aclose()
    [delivery] = await deliveries(server, endpoint["id"])
    assert delivery["status"] == "pending"
    assert delivery["attempts"][0]["status_code"] is None
    assert delivery["attempts"][0]["error"].startswith("timeout")


async def test_two_workers_at_once_deliver_each_event_once(
    container: Container, server: ServerClient, tenant: Tenant, receiver: Receiver, worker: Worker
) -> None:
    await five_created_for(server, tenant, receiver)
    other = Worker(container, worker_id="other-worker", jitter=lambda: 0.5)
    try:
        await worker.dispatcher.relay()
        attempts = await asyncio.gather(worker.dispatcher.dispatch(), other.dispatcher.dispatch())
    finally:
        await other.aclose()
    assert sorted(attempts) == [0, 5]  # one leased the endpoint; the other found it taken, or nothing due
    assert (
        len({request.headers["webhook-id"] for request in receiver.received}) == len(receiver.received) == 5
    )


async def test_an_endpoint_leased_by_another_worker_waits_for_its_lease_to_lapse(
    container: Container,
    server: ServerClient,
    tenant: Tenant,
    receiver: Receiver,
    worker: Worker,
    clock: FrozenClock,
) -> None:
    endpoint = await register(server, receiver.url, events=["payment_intent.created"])
    await server.create_intent(tenant)
    await worker.dispatcher.relay()
    async with container.db.unit_of_work() as session:
        held = await session.get(WebhookEndpoint, endpoint["id"])
        assert held is not None
        held.lease_owner, held.lease_expires_at = "crashed-worker", clock.now() + timedelta(seconds=30)
    assert await worker.dispatcher.dispatch() == 0
    assert receiver.received == []
    clock.advance(timedelta(seconds=31))  # the crashed worker's lease has lapsed
    assert await worker.dispatcher.dispatch() == 1
    assert len(receiver.received) == 1
    async with container.db.reading() as session:
        released = await session.get(WebhookEndpoint, endpoint["id"])
    assert released is not None
    assert released.lease_owner is None


async def test_a_deleted_endpoint_gets_nothing_more(
    server: ServerClient, tenant: Tenant, receiver: Receiver, worker: Worker
) -> None:
    endpoint = await register(server, receiver.url)
    await server.create_intent(tenant)
    deleted = await server.request("DELETE", f"/v1/webhook_endpoints/{endpoint['id']}")
    assert deleted.status_code == 200
    await worker.run_once()
    assert receiver.received == []
    assert (await server.get(f"/v1/webhook_endpoints/{endpoint['id']}")).json()[
        "code"
    ] == "webhook_endpoint_not_found"


async def test_a_stopping_worker_finishes_in_flight_work_and_releases_its_leases(
    container: Container, server: ServerClient, tenant: Tenant, receiver: Receiver, worker: Worker
) -> None:
    await five_created_for(server, tenant, receiver)
    stopped_after_first = False

    def reply_and_stop(_: Any) -> Reply:
        nonlocal stopped_after_first
        worker.stop_soon()  # SIGTERM arrives while the first request is in flight
        stopped_after_first = True
        return Reply(200)

    receiver.respond = reply_and_stop
    await worker.dispatcher.relay()
    await worker.dispatcher.dispatch()
    assert stopped_after_first
    assert len(receiver.received) == 1
    async with container.db.reading() as session:
        statuses = dict(
            (
                await session.execute(
                    select(WebhookDelivery.status, func.count()).group_by(WebhookDelivery.status)
                )
            ).all()
        )
        leases = (await session.execute(select(WebhookEndpoint.lease_owner))).scalars().all()
    assert statuses == {"succeeded": 1, "pending": 4}
    assert leases == [None]


async def test_events_api_lists_filters_and_isolates(
    server: ServerClient, other_server: ServerClient, tenant: Tenant
) -> None:
    intent = await paid_intent(server, tenant)
    listed = (await server.get(f"/v1/events?object_id={intent['id']}")).json()
    assert [event["type"] for event in listed["data"]] == [
        "payment_intent.succeeded",
        "payment_intent.processing",
        "payment_intent.created",
    ]
    only = (await server.get("/v1/events?type=payment_intent.succeeded")).json()["data"]
    assert [event["object_id"] for event in only] == [intent["id"]]
    assert only[0]["data"]["status"] == "succeeded"
    event_id = only[0]["id"]
    assert (await server.get(f"/v1/events/{event_id}")).json()["id"] == event_id
    assert (await other_server.get(f"/v1/events/{event_id}")).json()["code"] == "event_not_found"
    assert (await other_server.get("/v1/events")).json()["data"] == []
    assert (await other_server.post(f"/v1/events/{event_id}/redeliver")).json()["code"] == "event_not_found"


async def test_endpoint_validation(server: ServerClient, receiver: Receiver) -> None:
    bad_event = await server.post("/v1/webhook_endpoints", {"url": receiver.url, "events": ["payment.nope"]})
    assert bad_event.json()["code"] == "validation_error"
    unresolvable = await server.post("/v1/webhook_endpoints", {"url": "https://no-such-host.invalid/hook"})
    assert unresolvable.json()["code"] == "webhook_url_not_allowed"


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
