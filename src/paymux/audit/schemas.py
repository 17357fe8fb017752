from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from paymux.audit.models import AuditEvent


class AuditEventOut(BaseModel):
    object: Literal["audit_event"] = "audit_event"
    id: str
    occurred_at: datetime
    actor_type: str = Field(description="user, api_client, device, operator (the CLI) or anonymous")
    actor_id: str
    actor_role: str | None
    impersonated_by: str | None = Field(description="The user acting as actor_id, when impersonating")
    action: str = Field(examples=["user.login"])
    object_type: str
    object_id: str
    client_partner_id: int | None
    merchant_id: int | None
    store_id: int | None
    ip: str | None
    details: dict[str, Any]

    @classmethod
    def of(cls, event: AuditEvent) -> AuditEventOut:
        return cls(
            id=event.id,
            occurred_at=event.occurred_at,
            actor_type=event.actor_type,
            actor_id=event.actor_id,
            actor_role=event.actor_role,
            impersonated_by=event.impersonated_by,
            action=event.action,
            object_type=event.object_type,
            object_id=event.object_id,
            client_partner_id=event.client_partner_id,
            merchant_id=event.merchant_id,
            store_id=event.store_id,
            ip=event.ip,
            details=dict(event.details or {}),
        )


class AuditEventList(BaseModel):
    data: list[AuditEventOut]
    has_more: bool
