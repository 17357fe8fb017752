"""Writes outbox events inside the caller's unit of work."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from paymux.core.clock import Clock
from paymux.core.ids import new_id
from paymux.events.models import Event


class EventRecorder:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    def record(
        self,
        session: AsyncSession,
        *,
        type: str,
        object_type: str,
        object_id: str,
        payload: Mapping[str, Any],
        client_partner_id: int,
        merchant_id: int,
        store_id: int | None,
    ) -> Event:
        event = Event(
            id=new_id("evt"),
            type=type,
            object_type=object_type,
            object_id=object_id,
            payload=dict(payload),
            client_partner_id=client_partner_id,
            merchant_id=merchant_id,
            store_id=store_id,
            created_at=self._clock.now(),
        )
        session.add(event)
        return event
