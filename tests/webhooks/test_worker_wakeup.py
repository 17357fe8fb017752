"""An idle worker wakes when an event commits (PostgreSQL LISTEN/NOTIFY), and polls where it cannot listen."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import asyncpg
import pytest

from paymux.container import Container
from paymux.events import wakeup
from paymux.events.wakeup import EventWakeup
from paymux.worker import Worker
from tests.support import ServerClient, Tenant
from tests.webhooks.receiver import Receiver, running_receiver

LONG_POLL = 60.0  # far longer than any wait below: only a notification can explain a prompt delivery


@asynccontextmanager
async def running_worker(container: Container) -> AsyncIterator[Worker]:
    settings = container.settings.model_copy(update={"worker_poll_seconds": LONG_POLL})
    worker = Worker(Container(**{**container.__dict__, "settings": settings}), worker_id="listener")
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield worker
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def eventually(condition: Callable[[], bool], seconds: float = 5.0) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < seconds, "not within the time allowed"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def register(server: ServerClient, receiver: Receiver) -> None:
    response = await server.post("/v1/webhook_endpoints", {"url": receiver.url, "events": ["*"]})
    assert response.status_code == 201, response.text


@pytest.mark.postgres
async def test_an_idle_worker_delivers_a_new_event_at_once(
    container: Container, server: ServerClient, tenant: Tenant
) -> None:
    async with running_receiver() as receiver, running_worker(container) as worker:
        await eventually(lambda: worker.wakeup.listening)
        await register(server, receiver)
        await asyncio.sleep(0.3)  # the worker has found nothing to do and waits on its long poll
        for _ in range(3):
            before = len(receiver.received)
            await server.create_intent(tenant)
            await eventually(lambda: len(receiver.received) > before, seconds=5)  # noqa: B023


@pytest.mark.postgres
async def test_a_lost_listener_is_replaced(
    container: Container,
    server: ServerClient,
    tenant: Tenant,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(wakeup, "RECONNECT_EVERY", 0.0)
    async with running_receiver() as receiver, running_worker(container) as worker:
        await eventually(lambda: worker.wakeup.listening)
        await register(server, receiver)
        first = worker.wakeup.listener_pid
        admin = await asyncpg.connect(database_url)
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", first)
        finally:
            await admin.close()
        await eventually(lambda: worker.wakeup.listener_pid not in {None, first})
        # The worker's next poll is a minute away: the notification that wakes it comes over the new listener.
        await server.create_intent(tenant)
        await eventually(lambda: len(receiver.received) >= 1, seconds=10)
        assert worker.wakeup.listening


async def test_without_a_listener_the_wait_is_the_poll_or_the_stop(database_url: str) -> None:
    waiting = EventWakeup("sqlite:///unused.db", batch_seconds=0.05)
    stop = asyncio.Event()
    started = time.monotonic()
    await waiting.wait(stop, seconds=0.2)
    assert 0.15 <= time.monotonic() - started < 2
    assert not waiting.listening

    asyncio.get_running_loop().call_later(0.1, stop.set)
    started = time.monotonic()
    await waiting.wait(stop, seconds=LONG_POLL)
    assert time.monotonic() - started < 2
    await waiting.close()


@pytest.mark.postgres
async def test_a_notification_is_followed_by_the_batching_pause(database_url: str) -> None:
    waiting = EventWakeup(database_url, batch_seconds=0.3)
    stop = asyncio.Event()
    admin = await asyncpg.connect(database_url)

    def notify_in(seconds: float) -> None:
        asyncio.get_running_loop().call_later(
            seconds, asyncio.ensure_future, admin.execute("NOTIFY paymux_events")
        )

    try:
        await waiting.wait(stop, seconds=0.01)  # starts listening; catching up wakes this first wait
        assert waiting.listening
        notify_in(0.05)
        notify_in(0.2)  # during the pause: part of the same batch
        started = time.monotonic()
        await waiting.wait(stop, seconds=LONG_POLL)
        assert 0.35 <= time.monotonic() - started < 5  # woken, then the pause in which a burst gathers

        # The notification that came during the pause does not wake the next wait: its round relays it.
        started = time.monotonic()
        await waiting.wait(stop, seconds=0.2)
        assert 0.15 <= time.monotonic() - started < 2
    finally:
        await admin.close()
        await waiting.close()


@pytest.mark.postgres
async def test_a_stop_ends_the_batching_pause(database_url: str) -> None:
    waiting = EventWakeup(database_url, batch_seconds=LONG_POLL)
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.2, stop.set)
    started = time.monotonic()
    await waiting.wait(stop, seconds=LONG_POLL)  # listening begins with a catch-up wake, then the pause
    assert waiting.listening
    assert time.monotonic() - started < 5
    await waiting.close()
