"""Events for polling consumers (seed 004: "emit event for svc-smarttab to poll")."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from paymux.core.errors import problem_responses
from paymux.core.inputs import ID_PATTERN, ObjectId
from paymux.core.pagination import Limit, StartingAfter
from paymux.events.schemas import EventList, EventOut
from paymux.gateway.auth import Caller, container_of

router = APIRouter(prefix="/v1", tags=["events"], responses=problem_responses(401, 403, 413, 429, 503))


@router.get(
    "/events",
    response_model=EventList,
    summary="List events, newest first (server, HMAC)",
    responses=problem_responses(422),
)
async def list_events(
    request: Request,
    caller: Caller,
    limit: Limit = 10,
    starting_after: StartingAfter = None,
    type: Annotated[
        str | None, Query(max_length=64, pattern=r"^[a-z_.]+$", description="Only events of this type")
    ] = None,
    object_id: Annotated[
        str | None, Query(pattern=ID_PATTERN, description="Only events about this object")
    ] = None,
) -> EventList:
    rows, has_more = await container_of(request).events.list_events(
        caller, type=type, object_id=object_id, limit=limit, starting_after=starting_after
    )
    return EventList(data=[EventOut.of(row) for row in rows], has_more=has_more)


@router.get(
    "/events/{event_id}",
    response_model=EventOut,
    summary="Retrieve an event (server, HMAC)",
    responses=problem_responses(404),
)
async def retrieve_event(request: Request, event_id: ObjectId, caller: Caller) -> EventOut:
    return EventOut.of(await container_of(request).events.get(caller, event_id))
