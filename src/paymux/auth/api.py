"""Portal sign-in (seed 003, "JWT Claims (Human)"): login, refresh, logout, impersonation, and the JWKS."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from paymux.auth.schemas import ImpersonateRequest, Jwks, LoginRequest, RefreshRequest, TokenResponse
from paymux.auth.users import Session
from paymux.core.errors import problem_responses
from paymux.gateway.auth import UserCaller, client_ip, container_of

router = APIRouter(tags=["portal users"], responses=problem_responses(413, 429, 503))


def _tokens(session: Session) -> TokenResponse:
    return TokenResponse(
        access_token=session.access_token, expires_in=session.expires_in, refresh_token=session.refresh_token
    )


@router.post(
    "/api/v1/auth/login",
    response_model=TokenResponse,
    summary="Sign in with email and password",
    responses=problem_responses(401, 422),
)
async def login(request: Request, body: LoginRequest) -> TokenResponse:
    container = container_of(request)
    request.state.rate_limit = await container.rate_limiter.hit(ip=client_ip(request))
    return _tokens(await container.users.login(body.email, body.password))


@router.post(
    "/api/v1/auth/refresh",
    response_model=TokenResponse,
    summary="Trade a refresh token for new tokens (the old one is spent)",
    responses=problem_responses(401, 422),
)
async def refresh(request: Request, body: RefreshRequest) -> TokenResponse:
    container = container_of(request)
    request.state.rate_limit = await container.rate_limiter.hit(ip=client_ip(request))
    return _tokens(await container.users.refresh(body.refresh_token))


@router.post(
    "/api/v1/auth/logout",
    status_code=204,
    summary="Close the session of a refresh token",
    responses=problem_responses(422),
)
async def logout(request: Request, body: RefreshRequest) -> Response:
    container = container_of(request)
    request.state.rate_limit = await container.rate_limiter.hit(ip=client_ip(request))
    await container.users.logout(body.refresh_token)
    return Response(status_code=204)


@router.post(
    "/api/v1/auth/impersonate",
    response_model=TokenResponse,
    summary="Act as another user (SYSTEM_OP; PSP_ADMIN within its partner); the tokens carry impersonated_by",
    responses=problem_responses(401, 403, 404, 422),
)
async def impersonate(request: Request, body: ImpersonateRequest, caller: UserCaller) -> TokenResponse:
    users = container_of(request).users
    actor = await users.get(caller.impersonated_by or caller.caller_id)
    return _tokens(await users.impersonate(actor, body.user_id))


@router.get(
    "/.well-known/jwks.json",
    response_model=Jwks,
    summary="The public keys that verify access tokens",
)
async def jwks(request: Request, response: Response) -> Jwks:
    response.headers["Cache-Control"] = "public, max-age=60"
    return Jwks.model_validate(await container_of(request).signing_keys.jwks())
