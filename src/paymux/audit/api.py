"""Reading the audit log (admins, in their scope)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from paymux.audit.schemas import AuditEventList, AuditEventOut
from paymux.audit.service import AuditFilters
from paymux.core.errors import problem_responses
from paymux.core.inputs import ID_PATTERN
from paymux.core.pagination import Limit, StartingAfter
from paymux.gateway.auth import Caller, container_of

router = APIRouter(prefix="/api/v1", tags=["admin"], responses=problem_responses(401, 403, 413, 429, 503))


@router.get(
    "/audit_events",
    response_model=AuditEventList,
    summary="The audit log in the caller's scope, newest first",
    responses=problem_responses(422),
)
async def list_audit_events(
    request: Request,
    caller: Caller,
    limit: Limit = 20,
    starting_after: StartingAfter = None,
    action: Annotated[
        str | None, Query(max_length=60, pattern=r"^[a-z_.]+$", examples=["user.login"])
    ] = None,
    object_id: Annotated[str | None, Query(max_length=80, pattern=ID_PATTERN)] = None,
    actor_id: Annotated[str | None, Query(max_length=80, pattern=r"^[A-Za-z0-9_:.@-]{1,80}$")] = None,
) -> AuditEventList:
    rows, has_more = await container_of(request).audit.list_events(
        caller,
        AuditFilters(action=action, object_id=object_id, actor_id=actor_id),
        limit=limit,
        starting_after=starting_after,
    )
    return AuditEventList(data=[AuditEventOut.of(row) for row in rows], has_more=has_more)
