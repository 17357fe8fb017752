"""Inbound provider webhooks: `POST /v1/webhooks/{provider}`.

A notification is verified (the provider's signature header, HMAC-SHA256 with the store's webhook secret; an
unsigned one only where the store's config says `unsigned_webhooks: accept`), recorded once (a repeat is
acknowledged and ignored), and answered at once. It moves nothing by itself: after the commit paymux asks the
provider for the payment's status, and only that answer changes the intent, so a forged or stale notification
can never succeed a payment. Notifications whose status check did not run (the process stopped) are picked up
by the worker.
"""

from __future__ import annotations

from datetime import timedelta
from typing import cast

import structlog
from sqlalchemy import Table, bindparam, select, update

from paymux.core.clock import Clock
from paymux.core.db import Database, conflict_insert
from paymux.core.errors import BadRequest, NotFound, Unauthorized
from paymux.core.ids import new_id
from paymux.payments.models import PaymentIntent
from paymux.payments.service import PaymentService
from paymux.providers.base import WebhookCapable, WebhookNotUnderstood
from paymux.providers.registry import ProviderRegistry
from paymux.tenants.service import TenantService
from paymux.webhooks.models import ProviderWebhookEvent

log = structlog.get_logger(__name__)

UNSIGNED_OPTION = "unsigned_webhooks"
_EVENTS = cast(Table, ProviderWebhookEvent.__table__)
_INTENTS = cast(Table, PaymentIntent.__table__)
# What a notification needs of its intent: whose provider it is, and whose store and merchant.
_INTENT_OF_NOTIFICATION = select(
    _INTENTS.c.id, _INTENTS.c.provider_name, _INTENTS.c.store_id, _INTENTS.c.merchant_id
).where(_INTENTS.c.id == bindparam("intent_id"))


class UnknownWebhookProvider(NotFound):
    code = "unknown_provider"
    title = "No provider takes webhooks at this path"


class InvalidWebhookSignature(Unauthorized):
    code = "invalid_webhook_signature"
    title = "The provider webhook's signature does not verify"


class MalformedNotification(BadRequest):
    code = "malformed_notification"
    title = "Not a notification of this provider"


class InboundWebhookService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        providers: ProviderRegistry,
        tenants: TenantService,
        payments: PaymentService,
    ) -> None:
        self._db = db
        self._clock = clock
        self._providers = providers
        self._tenants = tenants
        self._payments = payments

    def provider(self, name: str) -> WebhookCapable:
        if name not in self._providers:
            raise UnknownWebhookProvider(f"No provider {name!r}.")
        provider = self._providers.get(name)
        if not isinstance(provider, WebhookCapable):
            raise UnknownWebhookProvider(f"{name} does not send webhooks to paymux.")
        return provider

    async def receive(self, name: str, body: bytes, signature: str | None) -> str | None:
        """Verify and record a notification; returns the intent to check, or None when there is nothing to do."""
        provider = self.provider(name)
        try:
            notification = provider.parse_notification(body)
        except WebhookNotUnderstood as exc:
            raise MalformedNotification(str(exc)) from exc
        if notification is None:
            return None
        async with self._db.reading() as session:
            connection = await session.connection()  # a Core statement: four columns, no PaymentIntent object
            found = await connection.execute(
                _INTENT_OF_NOTIFICATION, {"intent_id": notification.payment_intent_id}
            )
            intent = found.one_or_none()
            if intent is None or intent.provider_name != name:
                raise NotFound(
                    f"No {name} payment {notification.payment_intent_id}.", code="payment_intent_not_found"
                )
            config = await self._tenants.provider_config(session, intent.store_id, name)
        if config is None:
            raise NotFound(
                f"Store {intent.store_id} has no {name} configuration.", code="provider_not_configured"
            )
        secret = self._tenants.credentials(config).webhook_secret
        if secret is not None:
            if not provider.verify_notification(body, signature, secret):
                raise InvalidWebhookSignature(f"{provider.signature_header} does not match the body.")
        elif (config.options or {}).get(UNSIGNED_OPTION) != "accept":
            raise InvalidWebhookSignature(
                f"The store has no {name} webhook secret and does not accept unsigned notifications."
            )
        # Recording it is the whole write: one INSERT that commits by itself.
        async with self._db.at_once() as connection:
            recorded = await connection.execute(
                conflict_insert(self._db.engine.dialect.name)(_EVENTS)
                .values(
                    id=new_id("pwh"),
                    provider=name,
                    dedupe_key=notification.dedupe_key[:200],
                    payment_intent_id=intent.id,
                    merchant_id=intent.merchant_id,
                    body=body.decode("utf-8", "replace"),
                    received_at=self._clock.now(),
                )
                .on_conflict_do_nothing()
                .returning(_EVENTS.c.id)
            )
            if recorded.scalar_one_or_none() is None:
                log.info("duplicate provider notification ignored", provider=name, intent=intent.id)
                return None
        return str(intent.id)

    async def returned(self, name: str, intent_id: str) -> PaymentIntent:
        """The provider sent the customer back: check the payment now rather than at the next poll."""
        self.provider(name)
        async with self._db.reading() as session:
            intent = await session.get(PaymentIntent, intent_id)
        if intent is None or intent.provider_name != name:
            raise NotFound(f"No {name} payment {intent_id}.", code="payment_intent_not_found")
        return await self._payments.check_payment(intent_id) or intent

    async def settle(self, intent_id: str) -> None:
        """The slow part, after the answer: check with the provider, then mark the notifications processed."""
        await self._payments.check_payment(intent_id)
        async with self._db.at_once() as connection:
            await connection.execute(
                update(_EVENTS)
                .where(_EVENTS.c.payment_intent_id == intent_id, _EVENTS.c.processed_at.is_(None))
                .values(processed_at=self._clock.now())
            )

    async def settle_stragglers(self, older_than: timedelta = timedelta(seconds=30), limit: int = 50) -> int:
        """Notifications whose check never ran (the server stopped after answering): the worker settles them."""
        cutoff = self._clock.now() - older_than
        async with self._db.reading() as session:
            intent_ids = list(
                dict.fromkeys(
                    (
                        await session.execute(
                            select(ProviderWebhookEvent.payment_intent_id)
                            .where(
                                ProviderWebhookEvent.processed_at.is_(None),
                                ProviderWebhookEvent.received_at < cutoff,
                            )
                            .limit(limit)
                        )
                    ).scalars()
                )
            )
        for intent_id in intent_ids:
            await self.settle(intent_id)
        return len(intent_ids)
