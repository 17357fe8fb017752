from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from paymux.core.pagination import Page
from paymux.events.models import Event


class EventOut(BaseModel):
    object: Literal["event"] = "event"
    id: str = Field(examples=["evt_01JD4Q9V6W2N8X3Y5Z7A9B1C3D"])
    type: str = Field(examples=["payment_intent.succeeded"])
    client_partner_id: int
    merchant_id: int
    store_id: int | None
    object_type: str
    object_id: str
    data: dict[str, Any] = Field(description="The object as the API returned it when the event happened")
    created_at: datetime

    @classmethod
    def of(cls, event: Event) -> EventOut:
        return cls(
            id=event.id,
            type=event.type,
            client_partner_id=event.client_partner_id,
            merchant_id=event.merchant_id,
            store_id=event.store_id,
            object_type=event.object_type,
            object_id=event.object_id,
            data=event.payload,
            created_at=event.created_at,
        )


class EventList(Page[EventOut]):
    pass
