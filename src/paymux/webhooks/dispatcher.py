"""The worker side of webhooks: the outbox relay, and delivery.

Relay: events not yet relayed are locked (SKIP LOCKED, so workers share the queue), fanned out into one
delivery per subscribed, enabled endpoint of their merchant, and marked relayed, in one transaction.

Delivery: a worker leases an endpoint (a short lease row update, committed), sends that endpoint's due
deliveries one after another in event order, and records each attempt in its own small transaction, renewing
the lease. No transaction is open while a request is in flight. A worker that dies leaves its lease to expire;
the delivery it was sending is sent again by whoever takes the endpoint next (at least once). Because an endpoint
has one sender at a time, its first attempts arrive in event order; retries may overtake later events.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import NamedTuple

import httpx
import structlog
from sqlalchemy import select, update

from paymux.core.clock import Clock
from paymux.core.db import Database
from paymux.core.ids import new_id
from paymux.events.catalogue import subscribes
from paymux.events.models import Event
from paymux.webhooks import schedule
from paymux.webhooks.models import DeliveryStatus, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from paymux.webhooks.service import WebhookService, kill_pending_deliveries, new_delivery
from paymux.webhooks.signing import signature_headers

log = structlog.get_logger(__name__)

RESPONSE_EXCERPT_BYTES = 1024
RELAY_BATCH = 500
USER_AGENT = "paymux-webhooks/1"


@dataclass(frozen=True, slots=True)
class SendResult:
    status_code: int | None
    latency_ms: int
    error: str | None
    excerpt: str | None
    retry_after: timedelta | None

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class Relayed(NamedTuple):
    """What a relay round did: events taken from the outbox, and deliveries it made of them."""

    events: int
    deliveries: int


@dataclass(slots=True)
class _Lease:
    expires_at: datetime


def webhook_body(event: Event) -> str:
    return json.dumps(
        {
            "id": event.id,
            "type": event.type,
            "created_at": event.created_at.isoformat().replace("+00:00", "Z"),
            "data": event.payload,
        },
        separators=(",", ":"),
    )


def _retry_after(value: str | None, now: datetime) -> timedelta | None:
    if not value:
        return None
    if value.strip().isdigit():
        return timedelta(seconds=int(value.strip()))
    try:
        return parsedate_to_datetime(value) - now
    except (TypeError, ValueError):
        return None


class WebhookDispatcher:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        webhooks: WebhookService,
        http: httpx.AsyncClient,
        *,
        worker_id: str,
        lease: timedelta,
        random: Callable[[], float],
        endpoints_per_round: int = 50,
        deliveries_per_endpoint: int = 100,
        send_timeout: float = 10.0,
    ) -> None:
        self._db = db
        self._clock = clock
        self._webhooks = webhooks
        self._http = http
        self.worker_id = worker_id
        self._lease = lease
        self._random = random
        self._endpoints_per_round = endpoints_per_round
        self._deliveries_per_endpoint = deliveries_per_endpoint
        self._send_timeout = send_timeout
        self.stopping = False

    # ------------------------------------------------------------------ relay

    async def relay(self, limit: int = RELAY_BATCH) -> Relayed:
        """Fan a batch of committed events out to webhook deliveries."""
        now = self._clock.now()
        async with self._db.unit_of_work() as session:
            # Taken and marked in one statement: the batch is the oldest unrelayed events nobody else holds.
            batch = (
                select(Event.id)
                .where(Event.relayed_at.is_(None))
                .order_by(Event.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            events = (
                await session.execute(
                    update(Event)
                    .where(Event.id.in_(batch.scalar_subquery()))
                    .values(relayed_at=now)
                    .returning(Event.id, Event.client_partner_id, Event.merchant_id, Event.type)
                    .execution_options(synchronize_session=False)
                )
            ).all()
            if not events:
                return Relayed(0, 0)
            merchant_ids = {event.merchant_id for event in events}
            endpoints = (
                await session.execute(
                    select(WebhookEndpoint).where(
                        WebhookEndpoint.merchant_id.in_(merchant_ids),
                        WebhookEndpoint.enabled.is_(True),
                        WebhookEndpoint.deleted_at.is_(None),
                    )
                )
            ).scalars()
            by_merchant: dict[int, list[WebhookEndpoint]] = {}
            for endpoint in endpoints:
                by_merchant.setdefault(endpoint.merchant_id, []).append(endpoint)
            deliveries = [
                new_delivery(endpoint, event, now)
                for event in sorted(events, key=lambda event: event.id)  # event order within an endpoint
                for endpoint in by_merchant.get(event.merchant_id, [])
                if subscribes(endpoint.events, event.type)
            ]
            session.add_all(deliveries)
            return Relayed(len(events), len(deliveries))

    # ------------------------------------------------------------------ delivery

    async def dispatch(self) -> int:
        """Lease endpoints with due deliveries and send them; returns how many attempts were made."""
        leased = await self._lease_endpoints()
        if not leased:
            return 0
        counts = await asyncio.gather(*(self._drain(endpoint_id) for endpoint_id in leased))
        return sum(counts)

    async def _lease_endpoints(self) -> list[str]:
        """Lease endpoints with due deliveries that nobody holds: chosen, locked and leased in one statement."""
        now = self._clock.now()
        due = (
            select(WebhookDelivery.endpoint_id)
            .where(
                WebhookDelivery.status == DeliveryStatus.PENDING.value,
                WebhookDelivery.next_attempt_at <= now,
            )
            .distinct()
            .limit(self._endpoints_per_round * 4)
        )
        free = (
            select(WebhookEndpoint.id)
            .where(
                WebhookEndpoint.id.in_(due),
                (WebhookEndpoint.lease_expires_at.is_(None)) | (WebhookEndpoint.lease_expires_at < now),
            )
            .limit(self._endpoints_per_round)
            .with_for_update(skip_locked=True)
        )
        async with self._db.at_once() as connection:
            leased = await connection.execute(
                update(WebhookEndpoint)
                .where(WebhookEndpoint.id.in_(free.scalar_subquery()))
                .values(lease_owner=self.worker_id, lease_expires_at=now + self._lease)
                .returning(WebhookEndpoint.id)
            )
            return list(leased.scalars())

    async def _drain(self, endpoint_id: str) -> int:
        attempts = 0
        try:
            async with self._db.reading() as session:
                endpoint = await session.get(WebhookEndpoint, endpoint_id)
                if endpoint is None or not endpoint.enabled or endpoint.deleted_at is not None:
                    return 0
                rows = (
                    await session.execute(
                        select(WebhookDelivery, Event)
                        .join(Event, Event.id == WebhookDelivery.event_id)
                        .where(
                            WebhookDelivery.endpoint_id == endpoint_id,
                            WebhookDelivery.status == DeliveryStatus.PENDING.value,
                            WebhookDelivery.next_attempt_at <= self._clock.now(),
                        )
                        .order_by(WebhookDelivery.event_id)
                        .limit(self._deliveries_per_endpoint)
                    )
                ).all()
            lease = _Lease(self._clock.now() + self._lease)
            secrets = self._webhooks.signing_secrets(endpoint)
            for delivery, event in rows:
                if self.stopping:
                    break
                result = await self._send(endpoint.url, event, secrets)
                attempts += 1
                keep_going = await self._record(endpoint_id, delivery, result, lease)
                if not keep_going or not result.succeeded:
                    break  # a failing receiver gets its retries on schedule, not a burst of the queue
        finally:
            await self._release(endpoint_id)
        return attempts

    async def _send(self, url: str, event: Event, secrets: list[str]) -> SendResult:
        body = webhook_body(event)
        headers = {
            **signature_headers(event.id, self._clock.now(), body, secrets),
            "content-type": "application/json",
            "user-agent": USER_AGENT,
        }
        started = time.perf_counter()
        try:
            async with self._http.stream(
                "POST", url, content=body.encode(), headers=headers, timeout=self._send_timeout
            ) as response:
                excerpt = b""
                async for chunk in response.aiter_bytes():
                    excerpt += chunk
                    if len(excerpt) >= RESPONSE_EXCERPT_BYTES:
                        break
                latency = int((time.perf_counter() - started) * 1000)
                return SendResult(
                    status_code=response.status_code,
                    latency_ms=latency,
                    error=None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}",
                    excerpt=excerpt[:RESPONSE_EXCERPT_BYTES].decode("utf-8", "replace"),
                    retry_after=_retry_after(response.headers.get("retry-after"), self._clock.now()),
                )
        except httpx.TimeoutException:
            error = f"timeout after {self._send_timeout:g} s"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        return SendResult(None, int((time.perf_counter() - started) * 1000), error, None, None)

    async def _record(
        self, endpoint_id: str, delivery: WebhookDelivery, result: SendResult, lease: _Lease
    ) -> bool:
        """Write the attempt and what follows from it; False when this worker should stop sending here.

        The delivery row was read before the send; while this worker holds the endpoint's lease nobody else
        sends it, so its attempt count is current. The update still requires `pending`, in case the endpoint
        was deleted meanwhile.
        """
        now = self._clock.now()
        attempt_count = delivery.attempt_count + 1
        first_attempt_at = delivery.first_attempt_at or now
        values: dict[str, object] = {
            "attempt_count": attempt_count,
            "first_attempt_at": first_attempt_at,
            "last_attempt_at": now,
            "updated_at": now,
        }
        gone = result.status_code == 410
        if result.succeeded:
            values.update(status=DeliveryStatus.SUCCEEDED.value, delivered_at=now, next_attempt_at=None)
        elif not gone:
            retry_at = schedule.next_attempt_at(
                attempts_made=attempt_count,
                first_attempt_at=first_attempt_at,
                now=now,
                random=self._random,
                retry_after=result.retry_after,
            )
            if retry_at is None:
                values.update(
                    status=DeliveryStatus.DEAD.value, dead_reason="retries_exhausted", next_attempt_at=None
                )
            else:
                values["next_attempt_at"] = retry_at
        async with self._db.unit_of_work() as session:
            session.add(
                WebhookAttempt(
                    id=new_id("wa"),
                    delivery_id=delivery.id,
                    endpoint_id=endpoint_id,
                    merchant_id=delivery.merchant_id,
                    attempted_at=now,
                    succeeded=result.succeeded,
                    status_code=result.status_code,
                    latency_ms=result.latency_ms,
                    error=result.error,
                    response_excerpt=result.excerpt,
                )
            )
            await session.execute(
                update(WebhookDelivery)
                .where(
                    WebhookDelivery.id == delivery.id, WebhookDelivery.status == DeliveryStatus.PENDING.value
                )
                .values(**values)
            )
            if gone:
                await session.execute(
                    update(WebhookEndpoint)
                    .where(WebhookEndpoint.id == endpoint_id)
                    .values(enabled=False, disabled_reason="gone", updated_at=now)
                )
                await kill_pending_deliveries(session, endpoint_id, reason="endpoint_gone", now=now)
                log.warning("webhook endpoint answered 410 Gone; disabled", endpoint=endpoint_id)
                return False
            if lease.expires_at - now < self._lease / 2:
                # Renew before half the lease is spent; losing it means another worker took the endpoint over.
                renewed = await session.execute(
                    update(WebhookEndpoint)
                    .where(WebhookEndpoint.id == endpoint_id, WebhookEndpoint.lease_owner == self.worker_id)
                    .values(lease_expires_at=now + self._lease)
                )
                if not getattr(renewed, "rowcount", 0):
                    return False
                lease.expires_at = now + self._lease
            return True

    async def _release(self, endpoint_id: str) -> None:
        async with self._db.at_once() as connection:
            await connection.execute(
                update(WebhookEndpoint)
                .where(WebhookEndpoint.id == endpoint_id, WebhookEndpoint.lease_owner == self.worker_id)
                .values(lease_owner=None, lease_expires_at=None)
            )
