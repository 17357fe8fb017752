"""The outbox: writes events inside the caller's unit of work, and reads them for polling consumers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select

from paymux.core.clock import Clock
from paymux.core.db import Database
from paymux.core.errors import NotFound
from paymux.core.ids import new_id
from paymux.core.pagination import fetch_page
from paymux.events.models import Event
from paymux.gateway.permissions import Operation, require
from paymux.gateway.principal import Principal


class EventNotFound(NotFound):
    code = "event_not_found"
    title = "No such event"


class EventService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def new_event(
        self,
        *,
        type: str,
        object_type: str,
        object_id: str,
        payload: Mapping[str, Any],
        client_partner_id: int,
        merchant_id: int,
        store_id: int | None,
    ) -> Event:
        """An event for the caller to add to its unit of work: it commits if and only if the change it
        describes does."""
        return Event(
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

    async def list_events(
        self,
        principal: Principal,
        *,
        type: str | None,
        object_id: str | None,
        limit: int,
        starting_after: str | None,
    ) -> tuple[list[Event], bool]:
        require(principal, Operation.EVENTS_READ)
        statement = principal.scope(select(Event), Event)
        if type is not None:
            statement = statement.where(Event.type == type)
        if object_id is not None:
            statement = statement.where(Event.object_id == object_id)
        async with self._db.reading() as session:
            return await fetch_page(session, statement, Event.id, limit=limit, starting_after=starting_after)

    async def get(self, principal: Principal, event_id: str) -> Event:
        require(principal, Operation.EVENTS_READ)
        statement = principal.scope(select(Event).where(Event.id == event_id), Event)
        async with self._db.reading() as session:
            event = (await session.execute(statement)).scalar_one_or_none()
        if event is None:
            raise EventNotFound(f"No event {event_id} in this client's scope.")
        return event
