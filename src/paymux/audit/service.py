"""Writing and reading the audit log.

`record` adds an event to the caller's unit of work, so the act and its record commit together or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from paymux.audit.models import AuditEvent
from paymux.core.clock import Clock
from paymux.core.db import Database
from paymux.core.ids import new_id
from paymux.core.pagination import fetch_page
from paymux.gateway.permissions import Operation, require
from paymux.gateway.principal import Principal


class AuditAction(StrEnum):
    USER_LOGIN = "user.login"
    USER_LOGIN_FAILED = "user.login_failed"
    USER_LOCKED = "user.locked"
    USER_IMPERSONATED = "user.impersonated"
    USER_CREATED = "user.created"
    USER_UPDATED = "user.updated"
    SIGNING_KEY_ROTATED = "signing_key.rotated"
    API_CLIENT_CREATED = "api_client.created"
    API_CLIENT_SECRET_ROTATED = "api_client.secret_rotated"  # noqa: S105 - an action name
    API_CLIENT_REVOKED = "api_client.revoked"
    DEVICE_REGISTERED = "device.registered"
    DEVICE_REVOKED = "device.revoked"
    PARTNER_CREATED = "partner.created"
    MERCHANT_CREATED = "merchant.created"
    MERCHANT_UPDATED = "merchant.updated"
    STORE_CREATED = "store.created"
    STORE_UPDATED = "store.updated"
    CONFIG_SYNCED = "config.synced"
    PROVIDER_CONFIG_SET = "provider_config.set"
    PAYMENT_REFUNDED = "payment_intent.refunded"
    WEBHOOK_ENDPOINT_CREATED = "webhook_endpoint.created"
    WEBHOOK_ENDPOINT_UPDATED = "webhook_endpoint.updated"
    WEBHOOK_ENDPOINT_DELETED = "webhook_endpoint.deleted"
    WEBHOOK_ENDPOINT_SECRET_ROTATED = "webhook_endpoint.secret_rotated"  # noqa: S105 - an action name
    RECONCILIATION_EXCEPTION_RESOLVED = "reconciliation_exception.resolved"


@dataclass(frozen=True, slots=True)
class AuditObject:
    """The object an act was done to, and the tenant it belongs to (who may read about it)."""

    type: str
    id: str
    client_partner_id: int | None = None
    merchant_id: int | None = None
    store_id: int | None = None


@dataclass(frozen=True, slots=True)
class AuditFilters:
    action: str | None = None
    object_id: str | None = None
    actor_id: str | None = None


class AuditLog:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def record(
        self,
        session: AsyncSession,
        actor: Principal | None,
        action: AuditAction,
        subject: AuditObject,
        *,
        details: dict[str, Any] | None = None,
        ip: str | None = None,
    ) -> AuditEvent:
        """Add an event to `session`'s unit of work. `actor` None is an anonymous caller (a failed login)."""
        event = AuditEvent(
            id=new_id("aud"),
            occurred_at=self._clock.now(),
            actor_type=str(actor.caller_type) if actor is not None else "anonymous",
            actor_id=actor.caller_id if actor is not None else "anonymous",
            actor_role=str(actor.role) if actor is not None and actor.role is not None else None,
            impersonated_by=actor.impersonated_by if actor is not None else None,
            action=str(action),
            object_type=subject.type,
            object_id=subject.id,
            client_partner_id=subject.client_partner_id,
            merchant_id=subject.merchant_id,
            store_id=subject.store_id,
            ip=ip if ip is not None else (actor.ip if actor is not None else None),
            details=details or {},
        )
        session.add(event)
        return event

    async def list_events(
        self, principal: Principal, filters: AuditFilters, *, limit: int, starting_after: str | None
    ) -> tuple[list[AuditEvent], bool]:
        """Events in the caller's scope, newest first. A partner admin sees its partner's, a merchant admin its
        merchant's; events of no tenant (a SYSTEM_OP's key rotation, an unknown email's login) only a SYSTEM_OP."""
        require(principal, Operation.AUDIT_READ)
        statement = principal.scope(select(AuditEvent), AuditEvent)
        if filters.action is not None:
            statement = statement.where(AuditEvent.action == filters.action)
        if filters.object_id is not None:
            statement = statement.where(AuditEvent.object_id == filters.object_id)
        if filters.actor_id is not None:
            statement = statement.where(AuditEvent.actor_id == filters.actor_id)
        async with self._db.reading() as session:
            return await fetch_page(
                session, statement, AuditEvent.id, limit=limit, starting_after=starting_after
            )
