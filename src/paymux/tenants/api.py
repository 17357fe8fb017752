"""Config sync from the portal (seed 004) and a masked view of a store's provider configs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from paymux.core.errors import problem_responses
from paymux.gateway.auth import Idempotent, ServerCaller, UserCaller, container_of
from paymux.tenants.schemas import (
    MerchantList,
    MerchantOut,
    MerchantSyncRequest,
    MerchantSyncResult,
    ProviderConfigList,
)

router = APIRouter(prefix="/v1", tags=["tenants"], responses=problem_responses(401, 413, 429, 503))


@router.post(
    "/sync/merchants",
    response_model=MerchantSyncResult,
    summary="Upsert a partner's merchants, stores and provider configs (server, HMAC, partner scope)",
    responses=problem_responses(400, 403, 409, 422),
)
async def sync_merchants(
    request: Request, body: MerchantSyncRequest, caller: ServerCaller, idempotent: Idempotent
) -> Response:
    async def sync() -> MerchantSyncResult:
        return await container_of(request).tenants.sync(caller, body)

    return await idempotent.run(sync)


@router.get(
    "/stores/{store_id}/provider_configs",
    response_model=ProviderConfigList,
    summary="A store's provider configs, secrets masked (server, HMAC)",
    responses=problem_responses(404, 422),
)
async def list_provider_configs(
    request: Request, store_id: Annotated[int, Path(gt=0, lt=2**53)], caller: ServerCaller
) -> ProviderConfigList:
    return ProviderConfigList(data=await container_of(request).tenants.provider_configs(caller, store_id))


portal_router = APIRouter(prefix="/api/v1", tags=["portal"], responses=problem_responses(401, 413, 429, 503))


@portal_router.get(
    "/merchants",
    response_model=MerchantList,
    summary="The merchants in the user's scope (portal user, JWT)",
    responses=problem_responses(422),
)
async def list_merchants(
    request: Request,
    caller: UserCaller,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    starting_after: Annotated[
        int | None, Query(gt=0, lt=2**53, description="A merchant id from the last page")
    ] = None,
) -> MerchantList:
    rows, has_more = await container_of(request).tenants.list_merchants(
        caller, limit=limit, starting_after=starting_after
    )
    return MerchantList(data=[MerchantOut.of(row) for row in rows], has_more=has_more)
