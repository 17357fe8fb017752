"""Config sync from the portal (seed 004) and a masked view of a store's provider configs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from paymux.core.errors import problem_responses
from paymux.gateway.auth import Idempotent, ServerCaller, container_of
from paymux.tenants.schemas import MerchantSyncRequest, MerchantSyncResult, ProviderConfigList

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
