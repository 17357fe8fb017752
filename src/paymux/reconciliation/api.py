"""Reconciliation runs over the API: upload a file, read its report, work through its exceptions (server, HMAC)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from paymux.core.errors import problem_responses
from paymux.core.inputs import ObjectId
from paymux.core.pagination import Limit, StartingAfter
from paymux.gateway.auth import Caller, client_ip, container_of
from paymux.providers.settlement import LAYOUTS
from paymux.reconciliation.schemas import ExceptionList, ExceptionOut, ResolveRequest, RunList, RunReport
from paymux.reconciliation.service import ExceptionKind, ExceptionStatus

router = APIRouter(
    prefix="/v1", tags=["reconciliation"], responses=problem_responses(401, 403, 413, 429, 503)
)

ProviderQuery = Annotated[
    str, Query(pattern=r"^[a-z0-9_]{1,32}$", description=f"One of {', '.join(LAYOUTS)}")
]

UPLOAD_BODY = {
    "required": True,
    "description": "The file itself: a provider's settlement CSV (text/csv) or a camt.053 bank statement "
    "(application/xml).",
    "content": {
        "text/csv": {"schema": {"type": "string"}},
        "application/xml": {"schema": {"type": "string"}},
    },
}


@router.post(
    "/reconciliation_runs",
    response_model=RunReport,
    status_code=201,
    summary="Import a settlement file or bank statement and match it (server, HMAC)",
    responses={
        200: {"model": RunReport, "description": "The same file was imported before"},
        **problem_responses(404, 422),
    },
    openapi_extra={"requestBody": UPLOAD_BODY},
)
async def create_run(
    request: Request,
    response: Response,
    caller: Caller,
    provider: ProviderQuery,
    file_name: Annotated[str | None, Query(max_length=255, pattern=r"^[\x20-\x7e]+$")] = None,
) -> RunReport:
    container = container_of(request)
    result = await container.reconciliation.import_upload(
        caller, await request.body(), provider=provider, file_name=file_name or "upload"
    )
    if result.replayed:
        response.status_code = 200
    return RunReport.of(result.run, replayed=result.replayed)


@router.get(
    "/reconciliation_runs",
    response_model=RunList,
    summary="List reconciliation runs, newest first (server, HMAC)",
    responses=problem_responses(422),
)
async def list_runs(
    request: Request,
    caller: Caller,
    limit: Limit = 10,
    starting_after: StartingAfter = None,
    provider: Annotated[str | None, Query(pattern=r"^[a-z0-9_]{1,32}$")] = None,
) -> RunList:
    rows, has_more = await container_of(request).reconciliation.list_runs(
        caller, provider=provider, limit=limit, starting_after=starting_after
    )
    return RunList(data=[RunReport.of(row) for row in rows], has_more=has_more)


@router.get(
    "/reconciliation_runs/{run_id}",
    response_model=RunReport,
    summary="A run's report (server, HMAC)",
    responses=problem_responses(404, 422),
)
async def retrieve_run(request: Request, run_id: ObjectId, caller: Caller) -> RunReport:
    return RunReport.of(await container_of(request).reconciliation.get_run(caller, run_id))


@router.get(
    "/reconciliation_runs/{run_id}/exceptions",
    response_model=ExceptionList,
    summary="What a run could not match, in file order (server, HMAC)",
    responses=problem_responses(404, 422),
)
async def list_exceptions(
    request: Request,
    run_id: ObjectId,
    caller: Caller,
    limit: Limit = 10,
    starting_after: StartingAfter = None,
    status: ExceptionStatus | None = None,
    kind: ExceptionKind | None = None,
) -> ExceptionList:
    rows, has_more = await container_of(request).reconciliation.list_exceptions(
        caller, run_id, status=status, kind=kind, limit=limit, starting_after=starting_after
    )
    return ExceptionList(data=[ExceptionOut.of(row) for row in rows], has_more=has_more)


@router.post(
    "/reconciliation_exceptions/{exception_id}/resolve",
    response_model=ExceptionOut,
    summary="Close an exception with a reason; who, when and from where are kept (server, HMAC)",
    responses=problem_responses(404, 409, 422),
)
async def resolve_exception(
    request: Request, exception_id: ObjectId, body: ResolveRequest, caller: Caller
) -> ExceptionOut:
    item = await container_of(request).reconciliation.resolve(
        caller, exception_id, reason=body.reason, from_address=client_ip(request)
    )
    return ExceptionOut.of(item)
