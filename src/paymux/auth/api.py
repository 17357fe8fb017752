"""Portal sign-in (seed 003, "JWT Claims (Human)"): login, refresh, logout, impersonation, and the JWKS."""

from __future__ import annotations

from urllib.parse import parse_qsl

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from paymux.auth.devices import ASSERTION_TYPE, TOKEN_PATH
from paymux.auth.errors import OAuthError
from paymux.auth.schemas import (
    DeviceTokenResponse,
    ImpersonateRequest,
    Jwks,
    LoginRequest,
    OAuthErrorOut,
    RefreshRequest,
    TokenResponse,
)
from paymux.auth.users import Session
from paymux.core.errors import problem_responses, request_id_of
from paymux.gateway.auth import Caller, client_ip, container_of

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
    return _tokens(await container.users.login(body.email, body.password, ip=client_ip(request)))


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
async def impersonate(request: Request, body: ImpersonateRequest, caller: Caller) -> TokenResponse:
    return _tokens(await container_of(request).users.impersonate_as(caller, body.user_id))


@router.get(
    "/.well-known/jwks.json",
    response_model=Jwks,
    summary="The public keys that verify access tokens",
)
async def jwks(request: Request, response: Response) -> Jwks:
    response.headers["Cache-Control"] = "public, max-age=60"
    return Jwks.model_validate(await container_of(request).signing_keys.jwks())


FORM_BODY = {
    "required": True,
    "content": {
        "application/x-www-form-urlencoded": {
            "schema": {
                "type": "object",
                "required": ["grant_type", "client_assertion_type", "client_assertion"],
                "properties": {
                    "grant_type": {"type": "string", "enum": ["client_credentials"]},
                    "client_assertion_type": {"type": "string", "enum": [ASSERTION_TYPE]},
                    "client_assertion": {"type": "string", "description": "A JWT signed with the device key"},
                    "client_id": {"type": "string", "description": "The device's client_id (optional)"},
                    "scope": {"type": "string", "description": "Space-separated; default: all the device's"},
                },
            }
        }
    },
}
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@router.post(
    TOKEN_PATH,
    response_model=DeviceTokenResponse,
    summary="A POS device's access token, for a client assertion signed with its key (OAuth2 private_key_jwt)",
    responses={
        400: {
            "model": OAuthErrorOut,
            "description": "OAuth2 error: invalid_request, invalid_grant, unsupported_grant_type, invalid_scope",
            "x-oauth2-error": True,
        },
        401: {"model": OAuthErrorOut, "description": "OAuth2 error: invalid_client", "x-oauth2-error": True},
    },
    openapi_extra={"requestBody": FORM_BODY},
)
async def device_token(request: Request) -> Response:
    container = container_of(request)
    request.state.rate_limit = await container.rate_limiter.hit(ip=client_ip(request))
    try:
        form = _oauth_form(request.headers.get("content-type", ""), await request.body())
        issued = await container.devices.issue_token(
            grant_type=form.get("grant_type"),
            client_assertion_type=form.get("client_assertion_type"),
            client_assertion=form.get("client_assertion"),
            client_id=form.get("client_id"),
            scope=form.get("scope"),
            audiences=_token_endpoint_urls(request),
        )
    except OAuthError as error:
        body = {
            "error": error.instance_code,
            "error_description": error.detail or error.title,
            **error.to_problem(request_id_of(request)),
        }
        return JSONResponse(body, status_code=error.status, headers=NO_STORE)
    token = DeviceTokenResponse(
        access_token=issued.access_token, expires_in=issued.expires_in, scope=" ".join(issued.scope)
    )
    return JSONResponse(token.model_dump(), headers=NO_STORE)


def _oauth_form(content_type: str, body: bytes) -> dict[str, str]:
    """RFC 6749 section 3.2: a form body, each parameter at most once."""
    if content_type.split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
        raise OAuthError("Send the token request as application/x-www-form-urlencoded.")
    try:
        pairs = parse_qsl(body.decode("ascii"), keep_blank_values=True, strict_parsing=bool(body))
    except (UnicodeDecodeError, ValueError):
        raise OAuthError("The form body is not valid application/x-www-form-urlencoded.") from None
    names = [name for name, _ in pairs]
    if repeated := sorted({name for name in names if names.count(name) > 1}):
        raise OAuthError(f"{', '.join(repeated)} given more than once.")
    # RFC 6749 section 3.1: a parameter sent without a value is treated as omitted.
    return {name: value for name, value in pairs if value}


def _token_endpoint_urls(request: Request) -> set[str]:
    """What a device may name as its assertion's aud: the endpoint at paymux's public URL, or as it was called."""
    settings = container_of(request).settings
    called = f"{request.url.scheme}://{request.url.netloc}{TOKEN_PATH}"
    return {settings.public_url.rstrip("/") + TOKEN_PATH, called}
