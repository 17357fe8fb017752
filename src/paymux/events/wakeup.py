"""Wakes an idle worker when events commit, so it relays and delivers them at once rather than at its next poll.

On PostgreSQL a trigger on `events` sends a NOTIFY on the `paymux_events` channel (delivered on commit, once per
transaction) and each worker LISTENs on a connection of its own, outside the pool. Polling stays as the floor:
SQLite (one process, no NOTIFY) or a listener that cannot connect only means waiting for the next poll. A woken
worker waits `PAYMUX_WORKER_BATCH_SECONDS` more before its round, so that under load each round relays a batch.
A lost listener wakes the worker, and the next wait listens again (trying at most every `RECONNECT_EVERY` s).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import asyncpg
import structlog
from sqlalchemy.engine import make_url

log = structlog.get_logger(__name__)

CHANNEL = "paymux_events"
RECONNECT_EVERY = 5.0


class EventWakeup:
    def __init__(self, database_url: str, *, batch_seconds: float) -> None:
        url = make_url(database_url)
        self._dsn = (
            url.set(drivername="postgresql").render_as_string(hide_password=False)
            if url.get_backend_name() in {"postgresql", "postgres"}
            else None
        )
        self._connection: asyncpg.Connection | None = None
        self._notified = asyncio.Event()
        self._next_attempt = 0.0
        self._batch_seconds = batch_seconds

    @property
    def listening(self) -> bool:
        return self._connection is not None and not self._connection.is_closed()

    @property
    def listener_pid(self) -> int | None:
        """The PostgreSQL backend that listens (pg_stat_activity's pid), while one does."""
        return int(self._connection.get_server_pid()) if self.listening and self._connection else None

    async def wait(self, stop: asyncio.Event, seconds: float) -> None:
        """Until an event commits (or did since the last wait), `stop` is set, or `seconds` pass. A notification
        is followed by `batch_seconds` in which further events gather, so that a steady stream is relayed in
        batches rather than one round (a transaction and its queries) per commit, in every worker."""
        await self._ensure_listening()
        if not self._notified.is_set():
            notified = asyncio.ensure_future(self._notified.wait())
            stopped = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({notified, stopped}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
            finally:
                notified.cancel()
                stopped.cancel()
        if self._notified.is_set() and not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._batch_seconds)
        # What committed during the pause is found by the round that follows.
        self._notified.clear()

    async def close(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            try:
                await connection.close(timeout=2)
            except (OSError, asyncpg.PostgresError, TimeoutError):
                connection.terminate()

    async def _ensure_listening(self) -> None:
        if self._dsn is None or self.listening or time.monotonic() < self._next_attempt:
            return
        self._next_attempt = time.monotonic() + RECONNECT_EVERY
        try:
            connection = await asyncpg.connect(self._dsn, timeout=5)
            await connection.add_listener(CHANNEL, self._on_notify)
            # A lost listener wakes the worker too: a round catches up, and the wait after it listens again.
            connection.add_termination_listener(self._on_notify)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            log.warning("cannot listen for events; polling only", error=str(exc))
            return
        self._connection = connection
        # Whatever committed while nobody listened is found by the round that follows.
        self._notified.set()

    def _on_notify(self, *_: Any) -> None:
        self._notified.set()
