"""Webhook endpoints of a merchant: registration, changes, secret rotation, delivery history, redelivery."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from paymux.audit.service import AuditAction, AuditLog, AuditObject
from paymux.core.clock import Clock
from paymux.core.crypto import EnvelopeCipher
from paymux.core.db import Database
from paymux.core.ids import new_id
from paymux.core.pagination import fetch_page
from paymux.events.catalogue import subscribes
from paymux.events.models import Event
from paymux.events.service import EventNotFound
from paymux.gateway.permissions import Operation, require
from paymux.gateway.principal import Principal
from paymux.tenants.models import Merchant
from paymux.webhooks import signing
from paymux.webhooks.errors import (
    MerchantRequired,
    UnsafeEndpointURL,
    WebhookEndpointNotFound,
    WebhookScopeForbidden,
)
from paymux.webhooks.models import DeliveryStatus, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from paymux.webhooks.schemas import WebhookEndpointCreate, WebhookEndpointUpdate
from paymux.webhooks.ssrf import UnsafeWebhookURL, validate_url


@dataclass(frozen=True, slots=True)
class EndpointWithSecret:
    endpoint: WebhookEndpoint
    secret: str


class WebhookService:
    def __init__(
        self, db: Database, clock: Clock, cipher: EnvelopeCipher, audit: AuditLog, *, allow_private: bool
    ) -> None:
        self._db = db
        self._audit = audit
        self._clock = clock
        self._cipher = cipher
        self._allow_private = allow_private

    # ------------------------------------------------------------------ secrets

    @staticmethod
    def _context(endpoint_id: str) -> str:
        return f"webhook_endpoint:{endpoint_id}:secret"

    def signing_secrets(self, endpoint: WebhookEndpoint) -> list[str]:
        """The secrets a delivery is signed with now: the current one, and the previous one until it expires."""
        current = self._cipher.open_text(endpoint.secret_sealed, context=self._context(endpoint.id))
        secrets = [current]
        expires = endpoint.previous_secret_expires_at
        if (
            endpoint.previous_secret_sealed is not None
            and expires is not None
            and expires > self._clock.now()
        ):
            secrets.append(
                self._cipher.open_text(endpoint.previous_secret_sealed, context=self._context(endpoint.id))
            )
        return secrets

    # ------------------------------------------------------------------ endpoints

    async def _check_url(self, url: str) -> None:
        try:
            await validate_url(url, allow_private=self._allow_private)
        except UnsafeWebhookURL as exc:
            raise UnsafeEndpointURL(str(exc)) from exc

    async def _merchant_for(
        self, session: AsyncSession, principal: Principal, merchant_id: int | None
    ) -> Merchant:
        if principal.store_id is not None:
            raise WebhookScopeForbidden(
                "Use a merchant- or partner-scoped client to manage webhook endpoints."
            )
        wanted = merchant_id if merchant_id is not None else principal.merchant_id
        if wanted is None:
            raise MerchantRequired("Name the merchant the endpoint belongs to.")
        merchant = await session.get(Merchant, wanted)
        if merchant is None or not principal.sees(
            client_partner_id=merchant.client_partner_id, merchant_id=merchant.id
        ):
            raise MerchantRequired(f"No merchant {wanted} in this client's scope.")
        return merchant

    async def create(self, principal: Principal, request: WebhookEndpointCreate) -> EndpointWithSecret:
        require(principal, Operation.WEBHOOK_ENDPOINTS_MANAGE)
        await self._check_url(request.url)
        now = self._clock.now()
        async with self._db.unit_of_work() as session:
            merchant = await self._merchant_for(session, principal, request.merchant_id)
            endpoint_id = new_id("we")
            secret = signing.new_secret()
            endpoint = WebhookEndpoint(
                id=endpoint_id,
                client_partner_id=merchant.client_partner_id,
                merchant_id=merchant.id,
                url=request.url,
                events=list(request.events),
                description=request.description,
                enabled=request.enabled,
                secret_sealed=self._cipher.seal_text(secret, context=self._context(endpoint_id)),
                created_at=now,
                updated_at=now,
            )
            session.add(endpoint)
            self._audit.record(
                session,
                principal,
                AuditAction.WEBHOOK_ENDPOINT_CREATED,
                _subject(endpoint),
                details={"url": endpoint.url, "events": endpoint.events},
            )
        return EndpointWithSecret(endpoint=endpoint, secret=secret)

    async def _find(
        self, session: AsyncSession, principal: Principal, endpoint_id: str, *, lock: bool = False
    ) -> WebhookEndpoint:
        if principal.store_id is not None:
            raise WebhookScopeForbidden(
                "Use a merchant- or partner-scoped client to manage webhook endpoints."
            )
        statement = principal.scope(
            select(WebhookEndpoint).where(
                WebhookEndpoint.id == endpoint_id, WebhookEndpoint.deleted_at.is_(None)
            ),
            WebhookEndpoint,
        )
        if lock:
            statement = statement.with_for_update()
        endpoint = (await session.execute(statement)).scalar_one_or_none()
        if endpoint is None:
            raise WebhookEndpointNotFound(f"No webhook endpoint {endpoint_id} in this client's scope.")
        return endpoint

    async def get(self, principal: Principal, endpoint_id: str) -> WebhookEndpoint:
        require(principal, Operation.WEBHOOK_ENDPOINTS_READ)
        async with self._db.reading() as session:
            return await self._find(session, principal, endpoint_id)

    async def list_endpoints(
        self, principal: Principal, *, limit: int, starting_after: str | None
    ) -> tuple[list[WebhookEndpoint], bool]:
        require(principal, Operation.WEBHOOK_ENDPOINTS_READ)
        if principal.store_id is not None:
            raise WebhookScopeForbidden(
                "Use a merchant- or partner-scoped client to manage webhook endpoints."
            )
        statement = principal.scope(
            select(WebhookEndpoint).where(WebhookEndpoint.deleted_at.is_(None)), WebhookEndpoint
        )
        async with self._db.reading() as session:
            return await fetch_page(
                session, statement, WebhookEndpoint.id, limit=limit, starting_after=starting_after
            )

    async def update(
        self, principal: Principal, endpoint_id: str, request: WebhookEndpointUpdate
    ) -> WebhookEndpoint:
        require(principal, Operation.WEBHOOK_ENDPOINTS_MANAGE)
        if request.url is not None:
            await self._check_url(request.url)
        async with self._db.unit_of_work() as session:
            endpoint = await self._find(session, principal, endpoint_id, lock=True)
            if request.url is not None:
                endpoint.url = request.url
            if request.events is not None:
                endpoint.events = list(request.events)
            if request.description is not None:
                endpoint.description = request.description
            if request.enabled is not None:
                endpoint.enabled = request.enabled
                endpoint.disabled_reason = None if request.enabled else "disabled_by_merchant"
            endpoint.updated_at = self._clock.now()
            self._audit.record(
                session,
                principal,
                AuditAction.WEBHOOK_ENDPOINT_UPDATED,
                _subject(endpoint),
                details=request.model_dump(mode="json", exclude_unset=True),
            )
            return endpoint

    async def delete(self, principal: Principal, endpoint_id: str) -> WebhookEndpoint:
        """Stop sending to the endpoint; its pending deliveries go to the dead-letter state."""
        require(principal, Operation.WEBHOOK_ENDPOINTS_MANAGE)
        now = self._clock.now()
        async with self._db.unit_of_work() as session:
            endpoint = await self._find(session, principal, endpoint_id, lock=True)
            endpoint.deleted_at = now
            endpoint.enabled = False
            endpoint.disabled_reason = "deleted"
            endpoint.updated_at = now
            await kill_pending_deliveries(
                session, endpoint.id, reason="endpoint_deleted", now=self._clock.now()
            )
            self._audit.record(session, principal, AuditAction.WEBHOOK_ENDPOINT_DELETED, _subject(endpoint))
            return endpoint

    async def rotate_secret(
        self, principal: Principal, endpoint_id: str, *, expire_previous_in: timedelta
    ) -> EndpointWithSecret:
        require(principal, Operation.WEBHOOK_ENDPOINTS_MANAGE)
        now = self._clock.now()
        async with self._db.unit_of_work() as session:
            endpoint = await self._find(session, principal, endpoint_id, lock=True)
            secret = signing.new_secret()
            endpoint.previous_secret_sealed = endpoint.secret_sealed
            endpoint.previous_secret_expires_at = now + expire_previous_in
            endpoint.secret_sealed = self._cipher.seal_text(secret, context=self._context(endpoint.id))
            endpoint.updated_at = now
            self._audit.record(
                session,
                principal,
                AuditAction.WEBHOOK_ENDPOINT_SECRET_ROTATED,
                _subject(endpoint),
                details={"previous_secret_expires_at": endpoint.previous_secret_expires_at.isoformat()},
            )
            return EndpointWithSecret(endpoint=endpoint, secret=secret)

    # ------------------------------------------------------------------ deliveries

    async def list_deliveries(
        self, principal: Principal, endpoint_id: str, *, limit: int, starting_after: str | None
    ) -> tuple[list[tuple[WebhookDelivery, list[WebhookAttempt]]], bool]:
        require(principal, Operation.WEBHOOK_ENDPOINTS_READ)
        async with self._db.reading() as session:
            await self._find(session, principal, endpoint_id)
            statement = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)
            if starting_after is not None:
                statement = statement.where(WebhookDelivery.id < starting_after)
            deliveries = list(
                (
                    await session.execute(statement.order_by(WebhookDelivery.id.desc()).limit(limit + 1))
                ).scalars()
            )
            page = deliveries[:limit]
            attempts = (
                await session.execute(
                    select(WebhookAttempt)
                    .where(WebhookAttempt.delivery_id.in_([delivery.id for delivery in page]))
                    .order_by(WebhookAttempt.id)
                )
            ).scalars()
            by_delivery: dict[str, list[WebhookAttempt]] = {}
            for attempt in attempts:
                by_delivery.setdefault(attempt.delivery_id, []).append(attempt)
        return [(delivery, by_delivery.get(delivery.id, [])) for delivery in page], len(deliveries) > limit

    async def redeliver(
        self, principal: Principal, event_id: str, endpoint_id: str | None
    ) -> list[WebhookDelivery]:
        """Send an event again: out of the dead-letter state, or on demand after it was delivered."""
        require(principal, Operation.EVENTS_REDELIVER)
        now = self._clock.now()
        async with self._db.unit_of_work() as session:
            event = (
                await session.execute(principal.scope(select(Event).where(Event.id == event_id), Event))
            ).scalar_one_or_none()
            if event is None:
                raise EventNotFound(f"No event {event_id} in this client's scope.")
            if endpoint_id is not None:
                endpoint = await self._find(session, principal, endpoint_id)
                if endpoint.merchant_id != event.merchant_id:
                    raise WebhookEndpointNotFound(
                        f"Endpoint {endpoint_id} does not belong to the event's merchant."
                    )
                targets = [endpoint]
            else:
                candidates = (
                    await session.execute(
                        select(WebhookEndpoint).where(
                            WebhookEndpoint.merchant_id == event.merchant_id,
                            WebhookEndpoint.enabled.is_(True),
                            WebhookEndpoint.deleted_at.is_(None),
                        )
                    )
                ).scalars()
                targets = [endpoint for endpoint in candidates if subscribes(endpoint.events, event.type)]
            deliveries = []
            for endpoint in targets:
                delivery = (
                    await session.execute(
                        select(WebhookDelivery)
                        .where(
                            WebhookDelivery.endpoint_id == endpoint.id, WebhookDelivery.event_id == event.id
                        )
                        .with_for_update()
                    )
                ).scalar_one_or_none()
                if delivery is None:
                    delivery = new_delivery(endpoint, event, now)
                    session.add(delivery)
                else:
                    delivery.status = DeliveryStatus.PENDING.value
                    delivery.dead_reason = None
                    delivery.first_attempt_at = None  # a fresh three-day window
                    delivery.next_attempt_at = now
                    delivery.updated_at = now
                deliveries.append(delivery)
            return deliveries


class DeliverableEvent(Protocol):
    """What a delivery needs of its event: an Event, or the columns a relay took of one."""

    @property
    def id(self) -> str: ...
    @property
    def client_partner_id(self) -> int: ...
    @property
    def merchant_id(self) -> int: ...


def new_delivery(endpoint: WebhookEndpoint, event: DeliverableEvent, now: datetime) -> WebhookDelivery:
    return WebhookDelivery(
        id=new_id("wd"),
        endpoint_id=endpoint.id,
        event_id=event.id,
        client_partner_id=event.client_partner_id,
        merchant_id=event.merchant_id,
        status=DeliveryStatus.PENDING.value,
        attempt_count=0,
        next_attempt_at=now,
        created_at=now,
        updated_at=now,
    )


async def kill_pending_deliveries(
    session: AsyncSession, endpoint_id: str, *, reason: str, now: datetime
) -> None:
    await session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.endpoint_id == endpoint_id, WebhookDelivery.status == DeliveryStatus.PENDING.value
        )
        .values(status=DeliveryStatus.DEAD.value, dead_reason=reason, next_attempt_at=None, updated_at=now)
    )


def _subject(endpoint: WebhookEndpoint) -> AuditObject:
    return AuditObject("webhook_endpoint", endpoint.id, endpoint.client_partner_id, endpoint.merchant_id)
