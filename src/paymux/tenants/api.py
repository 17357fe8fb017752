"""Config sync from the portal (seed 004) and a masked view of a store's provider configs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from paymux.core.errors import problem_responses
from paymux.gateway.auth import Caller, Idempotent, container_of
from paymux.tenants.schemas import (
    MerchantCreate,
    MerchantList,
    MerchantOut,
    MerchantSyncRequest,
    MerchantSyncResult,
    MerchantUpdate,
    PartnerCreate,
    PartnerList,
    PartnerOut,
    ProviderConfigList,
    StoreCreate,
    StoreList,
    StoreOut,
    StoreUpdate,
)

router = APIRouter(prefix="/v1", tags=["tenants"], responses=problem_responses(401, 403, 413, 429, 503))


@router.post(
    "/sync/merchants",
    response_model=MerchantSyncResult,
    summary="Upsert a partner's merchants, stores and provider configs (server, HMAC, partner scope)",
    responses=problem_responses(400, 403, 409, 422),
)
async def sync_merchants(
    request: Request, body: MerchantSyncRequest, caller: Caller, idempotent: Idempotent
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
    request: Request, store_id: Annotated[int, Path(gt=0, lt=2**53)], caller: Caller
) -> ProviderConfigList:
    return ProviderConfigList(data=await container_of(request).tenants.provider_configs(caller, store_id))


portal_router = APIRouter(
    prefix="/api/v1", tags=["portal"], responses=problem_responses(401, 403, 413, 429, 503)
)


@portal_router.get(
    "/merchants",
    response_model=MerchantList,
    summary="The merchants in the user's scope (portal user, JWT)",
    responses=problem_responses(422),
)
async def list_merchants(
    request: Request,
    caller: Caller,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    starting_after: Annotated[
        int | None, Query(gt=0, lt=2**53, description="A merchant id from the last page")
    ] = None,
) -> MerchantList:
    rows, has_more = await container_of(request).tenants.list_merchants(
        caller, limit=limit, starting_after=starting_after
    )
    return MerchantList(data=[MerchantOut.of(row) for row in rows], has_more=has_more)


TenantPathId = Annotated[int, Path(gt=0, lt=2**53)]
IntCursor = Annotated[int | None, Query(gt=0, lt=2**53, description="An id from the last page")]


@portal_router.get(
    "/partners", response_model=PartnerList, summary="Client partners in the caller's scope",
    responses=problem_responses(403, 422),
)  # fmt: skip
async def list_partners(
    request: Request,
    caller: Caller,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    starting_after: IntCursor = None,
) -> PartnerList:
    rows, has_more = await container_of(request).tenant_admin.list_partners(
        caller, limit=limit, starting_after=starting_after
    )
    return PartnerList(data=[PartnerOut.of(row) for row in rows], has_more=has_more)


@portal_router.post(
    "/partners", response_model=PartnerOut, status_code=201, summary="Create a client partner (SYSTEM_OP)",
    responses=problem_responses(403, 409, 422),
)  # fmt: skip
async def create_partner(request: Request, body: PartnerCreate, caller: Caller) -> PartnerOut:
    return PartnerOut.of(await container_of(request).tenant_admin.create_partner(caller, body))


@portal_router.get(
    "/partners/{partner_id}", response_model=PartnerOut, summary="A client partner",
    responses=problem_responses(403, 404, 422),
)  # fmt: skip
async def get_partner(request: Request, partner_id: TenantPathId, caller: Caller) -> PartnerOut:
    return PartnerOut.of(await container_of(request).tenant_admin.get_partner(caller, partner_id))


@portal_router.post(
    "/merchants", response_model=MerchantOut, status_code=201, summary="Create a merchant",
    responses=problem_responses(403, 404, 409, 422),
)  # fmt: skip
async def create_merchant(request: Request, body: MerchantCreate, caller: Caller) -> MerchantOut:
    return MerchantOut.of(await container_of(request).tenant_admin.create_merchant(caller, body))


@portal_router.get(
    "/merchants/{merchant_id}", response_model=MerchantOut, summary="A merchant",
    responses=problem_responses(403, 404, 422),
)  # fmt: skip
async def get_merchant(request: Request, merchant_id: TenantPathId, caller: Caller) -> MerchantOut:
    return MerchantOut.of(await container_of(request).tenant_admin.get_merchant(caller, merchant_id))


@portal_router.patch(
    "/merchants/{merchant_id}", response_model=MerchantOut, summary="Rename, enable or disable a merchant",
    responses=problem_responses(403, 404, 422),
)  # fmt: skip
async def update_merchant(
    request: Request, merchant_id: TenantPathId, body: MerchantUpdate, caller: Caller
) -> MerchantOut:
    return MerchantOut.of(await container_of(request).tenant_admin.update_merchant(caller, merchant_id, body))


@portal_router.get(
    "/stores", response_model=StoreList, summary="Stores in the caller's scope",
    responses=problem_responses(403, 422),
)  # fmt: skip
async def list_stores(
    request: Request,
    caller: Caller,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    starting_after: IntCursor = None,
    merchant_id: Annotated[int | None, Query(gt=0, lt=2**53)] = None,
) -> StoreList:
    rows, has_more = await container_of(request).tenant_admin.list_stores(
        caller, merchant_id=merchant_id, limit=limit, starting_after=starting_after
    )
    return StoreList(data=[StoreOut.of(row) for row in rows], has_more=has_more)


@portal_router.post(
    "/stores", response_model=StoreOut, status_code=201, summary="Create a store",
    responses=problem_responses(403, 404, 409, 422),
)  # fmt: skip
async def create_store(request: Request, body: StoreCreate, caller: Caller) -> StoreOut:
    return StoreOut.of(await container_of(request).tenant_admin.create_store(caller, body))


@portal_router.get(
    "/stores/{store_id}", response_model=StoreOut, summary="A store",
    responses=problem_responses(403, 404, 422),
)  # fmt: skip
async def get_store(request: Request, store_id: TenantPathId, caller: Caller) -> StoreOut:
    return StoreOut.of(await container_of(request).tenant_admin.get_store(caller, store_id))


@portal_router.patch(
    "/stores/{store_id}", response_model=StoreOut, summary="Rename, enable or disable a store, or set its fees",
    responses=problem_responses(403, 404, 422),
)  # fmt: skip
async def update_store(
    request: Request, store_id: TenantPathId, body: StoreUpdate, caller: Caller
) -> StoreOut:
    return StoreOut.of(await container_of(request).tenant_admin.update_store(caller, store_id, body))
