"""`paymux worker`: the outbox relay, webhook delivery and housekeeping, in a loop until told to stop.

Any number of workers run side by side on PostgreSQL (they share work through SKIP LOCKED and endpoint leases);
on SQLite run one. An idle worker polls every `worker_poll_seconds`; on PostgreSQL a committed event wakes it
at once (`events.wakeup`). On SIGTERM or SIGINT a worker finishes the requests it has in flight, records them,
releases its leases and exits.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import time
from collections.abc import Callable
from datetime import timedelta
from typing import NamedTuple

import structlog

from paymux.container import Container
from paymux.core.ids import new_id
from paymux.events.wakeup import EventWakeup
from paymux.webhooks.dispatcher import RELAY_BATCH, WebhookDispatcher
from paymux.webhooks.ssrf import guarded_client

log = structlog.get_logger(__name__)

HOUSEKEEPING_EVERY = timedelta(minutes=10)


class DeliveryRound(NamedTuple):
    """Events relayed and webhook attempts made in one round."""

    events: int
    attempts: int

    @property
    def backlog(self) -> bool:
        """More to do at once: the relay took a full batch, or deliveries were sent and their endpoints may have
        more queued."""
        return self.events >= RELAY_BATCH or self.attempts > 0


class Worker:
    def __init__(
        self,
        container: Container,
        *,
        worker_id: str | None = None,
        jitter: Callable[[], float] | None = None,
    ) -> None:
        settings = container.settings
        self.container = container
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{new_id('wk')[-6:]}"
        self._http = guarded_client(
            allow_private=settings.webhooks_allow_private, timeout=settings.webhook_timeout_seconds
        )
        self.dispatcher = WebhookDispatcher(
            container.db,
            container.clock,
            container.webhooks,
            self._http,
            worker_id=self.worker_id,
            lease=timedelta(seconds=settings.webhook_lease_seconds),
            random=jitter or random.SystemRandom().random,
            send_timeout=settings.webhook_timeout_seconds,
        )
        self._poll = settings.worker_poll_seconds
        self.wakeup = EventWakeup(settings.database_url, batch_seconds=settings.worker_batch_seconds)
        self._next_housekeeping = container.clock.now()
        self._sent_last_round = False

    async def deliver(self, *, look_for_due: bool = True) -> DeliveryRound:
        """The outbox relay and webhook delivery, what a committed event wakes the worker for.

        Deliveries are looked for when this relay made some, when the last round sent some (an endpoint may
        have more queued), or with `look_for_due` (retries fall due, another worker's lease lapses): a round
        that relayed only events nobody subscribes to costs no lease query."""
        relayed = await self.dispatcher.relay()
        attempts = 0
        if look_for_due or relayed.deliveries or self._sent_last_round:
            attempts = await self.dispatcher.dispatch()
        self._sent_last_round = attempts > 0
        return DeliveryRound(relayed.events, attempts)

    async def run_once(self) -> int:
        """One round of every job; returns how much work it found."""
        delivered = await self.deliver()
        return delivered.events + delivered.attempts + await self.run_jobs()

    async def run_jobs(self) -> int:
        """The jobs a poll runs besides the outbox: payment and refund checks, stragglers' webhooks, expired
        holds and housekeeping; returns how much work they found."""
        checked = await self.container.payments.check_due_payments()
        checked += await self.container.payments.check_due_refunds()
        settled = await self.container.inbound_webhooks.settle_stragglers()
        expired = await self.container.ledger.expire_holds()
        now = self.container.clock.now()
        if now >= self._next_housekeeping:
            purged = await self.container.idempotency.purge_expired()
            if purged:
                log.info("purged expired idempotency keys", count=purged)
            await self.container.devices.purge_spent_assertions()
            if self.container.settings.reconciliation_daily:
                await self.container.reconciliation.run_daily(
                    self.container.tenants, self.container.providers, (now - timedelta(days=1)).date()
                )
            self._next_housekeeping = now + HOUSEKEEPING_EVERY
        return checked + settled + expired

    async def run(self, stop: asyncio.Event) -> None:
        log.info("worker started", worker=self.worker_id)
        try:
            next_round = 0.0
            while not stop.is_set():
                try:
                    poll_due = time.monotonic() >= next_round
                    backlog = (await self.deliver(look_for_due=poll_due)).backlog
                    if poll_due:
                        # The polled jobs run again at once only while they find work of their own: under
                        # load the outbox is always busy, and that must not turn polling into a spin.
                        jobs = await self.run_jobs()
                        next_round = time.monotonic() + (0 if jobs else self._poll)
                        backlog = backlog or jobs > 0
                except Exception:
                    log.exception("worker round failed; retrying")
                    backlog = False
                    next_round = time.monotonic() + self._poll
                if not backlog:
                    # Events that committed during the round have already set the wake-up: the wait is then
                    # the short batching pause, so a steady stream is relayed in batches, not one by one.
                    await self.wakeup.wait(stop, seconds=max(0.0, next_round - time.monotonic()))
        finally:
            self.dispatcher.stopping = True
            await self.wakeup.close()
            await self._http.aclose()
            log.info("worker stopped", worker=self.worker_id)

    async def aclose(self) -> None:
        """Release what `run_once` callers hold (`run` does this itself)."""
        await self.wakeup.close()
        await self._http.aclose()

    def stop_soon(self) -> None:
        """Stop taking new deliveries; requests in flight finish and are recorded."""
        self.dispatcher.stopping = True
