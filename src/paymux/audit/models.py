from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from paymux.core.db import Base, JSONDocument, UTCDateTime


class AuditEvent(Base):
    """One administrative or security-relevant act. Rows are never changed or deleted (database triggers refuse
    both); the tenant columns say whose object it was, so each admin lists only their own part of the log."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_merchant", "merchant_id", "id"),
        Index("ix_audit_events_partner", "client_partner_id", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor_type: Mapped[str] = mapped_column(String(20))
    actor_id: Mapped[str] = mapped_column(String(80))
    actor_role: Mapped[str | None] = mapped_column(String(20))
    impersonated_by: Mapped[str | None] = mapped_column(String(40))
    action: Mapped[str] = mapped_column(String(60), index=True)
    object_type: Mapped[str] = mapped_column(String(40))
    object_id: Mapped[str] = mapped_column(String(80), index=True)
    client_partner_id: Mapped[int | None] = mapped_column(BigInteger)
    merchant_id: Mapped[int | None] = mapped_column(BigInteger)
    store_id: Mapped[int | None] = mapped_column(BigInteger)
    ip: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)
