"""The admin API for identities: portal users, API clients, POS devices and the token signing keys.

Every route runs behind the permission matrix (docs/security.md) in the caller's scope; an object outside the
scope is a 404.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from paymux.auth.schemas import (
    ApiClientCreate,
    ApiClientList,
    ApiClientOut,
    ApiClientWithSecret,
    DeviceList,
    DeviceOut,
    DeviceRegister,
    KeyRotated,
    UserCreate,
    UserList,
    UserOut,
    UserUpdate,
)
from paymux.auth.service import IssuedClient
from paymux.auth.user_admin import UserChange
from paymux.core.errors import problem_responses
from paymux.core.inputs import ID_PATTERN
from paymux.core.pagination import Limit, StartingAfter
from paymux.gateway.auth import Caller, container_of
from paymux.gateway.principal import Role

router = APIRouter(prefix="/api/v1", tags=["admin"], responses=problem_responses(401, 403, 413, 429, 503))

UserId = Annotated[str, Path(pattern=ID_PATTERN, description="A user id, `usr_...`")]
ClientId = Annotated[str, Path(pattern=ID_PATTERN, description="An API client id, `cli_...`")]
DeviceId = Annotated[str, Path(pattern=ID_PATTERN, description="A device's client_id, `dev_...`")]


# ---------------------------------------------------------------- users


@router.get(
    "/users", response_model=UserList, summary="Users in the caller's scope", responses=problem_responses(422)
)
async def list_users(
    request: Request,
    caller: Caller,
    limit: Limit = 20,
    starting_after: StartingAfter = None,
    role: Annotated[Role | None, Query()] = None,
) -> UserList:
    rows, has_more = await container_of(request).user_admin.list_users(
        caller, role=role, limit=limit, starting_after=starting_after
    )
    return UserList(data=[UserOut.of(row) for row in rows], has_more=has_more)


@router.post(
    "/users",
    response_model=UserOut,
    status_code=201,
    summary="Create a user of a narrower role, within the caller's scope",
    responses=problem_responses(404, 409, 422),
)
async def create_user(request: Request, body: UserCreate, caller: Caller) -> UserOut:
    user = await container_of(request).user_admin.create(
        caller,
        email=body.email,
        password=body.password,
        role=body.role,
        partner_id=body.client_partner_id,
        merchant_id=body.merchant_id,
        store_id=body.store_id,
    )
    return UserOut.of(user)


@router.get(
    "/users/{user_id}", response_model=UserOut, summary="A user", responses=problem_responses(404, 422)
)
async def get_user(request: Request, user_id: UserId, caller: Caller) -> UserOut:
    return UserOut.of(await container_of(request).user_admin.get(caller, user_id))


@router.patch(
    "/users/{user_id}",
    response_model=UserOut,
    summary="Change a user's role and scope, or disable it (its sessions close)",
    responses=problem_responses(404, 422),
)
async def update_user(request: Request, user_id: UserId, body: UserUpdate, caller: Caller) -> UserOut:
    change = UserChange(
        role=body.role,
        client_partner_id=body.client_partner_id,
        merchant_id=body.merchant_id,
        store_id=body.store_id,
        is_active=body.is_active,
    )
    return UserOut.of(await container_of(request).user_admin.update(caller, user_id, change))


# ---------------------------------------------------------------- API clients


def _with_secret(issued: IssuedClient) -> ApiClientWithSecret:
    return ApiClientWithSecret(**ApiClientOut.of(issued.client).model_dump(), client_secret=issued.secret)


@router.get(
    "/api_clients", response_model=ApiClientList, summary="API clients in the caller's scope",
    responses=problem_responses(422),
)  # fmt: skip
async def list_api_clients(
    request: Request, caller: Caller, limit: Limit = 20, starting_after: StartingAfter = None
) -> ApiClientList:
    rows, has_more = await container_of(request).client_admin.list_clients(
        caller, limit=limit, starting_after=starting_after
    )
    return ApiClientList(data=[ApiClientOut.of(row) for row in rows], has_more=has_more)


@router.post(
    "/api_clients",
    response_model=ApiClientWithSecret,
    status_code=201,
    summary="Create an API client (HMAC); its secret is shown once",
    responses=problem_responses(404, 422),
)
async def create_api_client(request: Request, body: ApiClientCreate, caller: Caller) -> ApiClientWithSecret:
    issued = await container_of(request).client_admin.create(
        caller,
        name=body.name,
        partner_id=body.client_partner_id,
        merchant_id=body.merchant_id,
        store_id=body.store_id,
    )
    return _with_secret(issued)


@router.get(
    "/api_clients/{client_id}", response_model=ApiClientOut, summary="An API client",
    responses=problem_responses(404, 422),
)  # fmt: skip
async def get_api_client(request: Request, client_id: ClientId, caller: Caller) -> ApiClientOut:
    return ApiClientOut.of(await container_of(request).client_admin.get(caller, client_id))


@router.post(
    "/api_clients/{client_id}/rotate_secret",
    response_model=ApiClientWithSecret,
    summary="Replace the client's HMAC secret now; the new one is shown once",
    responses=problem_responses(404, 409, 422),
)
async def rotate_api_client_secret(
    request: Request, client_id: ClientId, caller: Caller
) -> ApiClientWithSecret:
    return _with_secret(await container_of(request).client_admin.rotate_secret(caller, client_id))


@router.post(
    "/api_clients/{client_id}/revoke",
    response_model=ApiClientOut,
    summary="Revoke an API client: its signatures stop verifying",
    responses=problem_responses(404, 422),
)
async def revoke_api_client(request: Request, client_id: ClientId, caller: Caller) -> ApiClientOut:
    return ApiClientOut.of(await container_of(request).client_admin.revoke(caller, client_id))


# ---------------------------------------------------------------- devices


@router.get(
    "/devices", response_model=DeviceList, summary="POS devices in the caller's scope",
    responses=problem_responses(422),
)  # fmt: skip
async def list_devices(
    request: Request,
    caller: Caller,
    limit: Limit = 20,
    starting_after: StartingAfter = None,
    store_id: Annotated[int | None, Query(gt=0, lt=2**53)] = None,
) -> DeviceList:
    rows, has_more = await container_of(request).devices.list_devices(
        caller, store_id=store_id, limit=limit, starting_after=starting_after
    )
    return DeviceList(data=[DeviceOut.of(row) for row in rows], has_more=has_more)


@router.post(
    "/devices",
    response_model=DeviceOut,
    status_code=201,
    summary="Register a POS device: its store, serial number, EC P-256 public key and scopes",
    responses=problem_responses(404, 409, 422),
)
async def register_device(request: Request, body: DeviceRegister, caller: Caller) -> DeviceOut:
    device = await container_of(request).devices.register(
        caller, store_id=body.store_id, serial_number=body.serial_number, jwk=body.jwk, scopes=body.scopes
    )
    return DeviceOut.of(device)


@router.get(
    "/devices/{device_id}", response_model=DeviceOut, summary="A POS device",
    responses=problem_responses(404, 422),
)  # fmt: skip
async def get_device(request: Request, device_id: DeviceId, caller: Caller) -> DeviceOut:
    return DeviceOut.of(await container_of(request).devices.get(caller, device_id))


@router.post(
    "/devices/{device_id}/revoke",
    response_model=DeviceOut,
    summary="Revoke a device: it gets no more tokens (the one it holds lives out its 90 seconds)",
    responses=problem_responses(404, 422),
)
async def revoke_device(request: Request, device_id: DeviceId, caller: Caller) -> DeviceOut:
    return DeviceOut.of(await container_of(request).devices.revoke(caller, device_id))


# ---------------------------------------------------------------- signing keys


@router.post(
    "/signing_keys/rotate",
    response_model=KeyRotated,
    summary="Sign access tokens with a new key; the old one stays published until its tokens expire",
)
async def rotate_signing_key(request: Request, caller: Caller) -> KeyRotated:
    return KeyRotated(kid=await container_of(request).signing_keys.rotate(caller))
