from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from paymux.core.db import Base, JSONDocument, UTCDateTime


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_merchant_id_id", "merchant_id", "id"),
        Index("ix_events_object_id", "object_id"),
        # The relay's queue: events not yet fanned out to webhook deliveries.
        Index(
            "ix_events_unrelayed",
            "id",
            postgresql_where=text("relayed_at IS NULL"),
            sqlite_where=text("relayed_at IS NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    type: Mapped[str] = mapped_column(String(64))
    client_partner_id: Mapped[int] = mapped_column(BigInteger)
    merchant_id: Mapped[int] = mapped_column(BigInteger)
    store_id: Mapped[int | None] = mapped_column(BigInteger)
    object_type: Mapped[str] = mapped_column(String(32))
    object_id: Mapped[str] = mapped_column(String(40))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    relayed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
