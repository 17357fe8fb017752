"""The error hierarchy and its one rendering: RFC 9457 problem+json with a stable `code`.

Domains raise subclasses of `PaymuxError`; nothing else decides an HTTP status. Each problem body carries
`type` (a URN built from the code), `title`, `status`, `detail`, `code` and the `request_id` of the call, plus
any extra members the error adds (for example `current_status` on an invalid state transition).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_PREFIX = "urn:paymux:problem:"

log = structlog.get_logger(__name__)


class PaymuxError(Exception):
    """Base of every error a caller may see. Subclasses set `status`, `code` and `title`."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"
    title: ClassVar[str] = "Bad request"

    def __init__(
        self,
        detail: str | None = None,
        *,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.instance_code = code or self.code
        self.headers = dict(headers or {})
        self.extra = extra

    def to_problem(self, request_id: str | None = None) -> dict[str, Any]:
        return problem_body(
            status=self.status,
            code=self.instance_code,
            title=self.title,
            detail=self.detail,
            request_id=request_id,
            extra=self.extra,
        )


class BadRequest(PaymuxError):
    status = 400
    code = "bad_request"
    title = "Bad request"


class Unauthorized(PaymuxError):
    status = 401
    code = "unauthorized"
    title = "Authentication failed"


class Forbidden(PaymuxError):
    status = 403
    code = "forbidden"
    title = "Not allowed"


class NotFound(PaymuxError):
    status = 404
    code = "not_found"
    title = "Not found"


class Conflict(PaymuxError):
    status = 409
    code = "conflict"
    title = "Conflict with the current state"


class PayloadTooLarge(PaymuxError):
    status = 413
    code = "payload_too_large"
    title = "Request body too large"


class Unprocessable(PaymuxError):
    status = 422
    code = "validation_error"
    title = "The request is not valid"


class TooManyRequests(PaymuxError):
    status = 429
    code = "rate_limited"
    title = "Too many requests"


class ServiceUnavailable(PaymuxError):
    status = 503
    code = "service_unavailable"
    title = "Service temporarily unavailable"


class ProblemDetails(BaseModel):
    """An RFC 9457 problem document as paymux sends it."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="URN naming the problem kind: urn:paymux:problem:<code>")
    title: str
    status: int
    detail: str | None = None
    code: str = Field(description="Stable machine-readable error code")
    request_id: str | None = None


class ValidationIssue(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationProblem(ProblemDetails):
    errors: list[ValidationIssue] = Field(default_factory=list)


def problem_body(
    *,
    status: int,
    code: str,
    title: str,
    detail: str | None,
    request_id: str | None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_PREFIX + code,
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        "request_id": request_id,
    }
    if extra:
        body.update(extra)
    return body


def problem_response(body: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        dict(body), status_code=int(body["status"]), media_type=PROBLEM_MEDIA_TYPE, headers=headers
    )


def request_id_of(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """Error responses to declare on a route, so the OpenAPI document lists every error it can give."""
    descriptions = {
        400: "Malformed request",
        401: "Missing or invalid credentials",
        403: "Credentials valid but not allowed here",
        404: "No such object in the caller's scope",
        409: "Conflicts with the object's current state or a concurrent request",
        413: "Request body larger than the limit",
        422: "The request failed validation",
        429: "Rate limit exceeded",
        503: "A dependency is unavailable; retry later",
    }
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        # The content is filled in (as problem+json) when the OpenAPI document is built.
        responses[status] = {"description": descriptions.get(status, "Error")}
    return responses


def _validation_issues(errors: Sequence[Any]) -> list[dict[str, Any]]:
    issues = []
    for error in errors:
        loc = [part if isinstance(part, int) else str(part) for part in error.get("loc", ())]
        issues.append({"loc": loc, "msg": str(error.get("msg", "")), "type": str(error.get("type", ""))})
    return issues


_HTTP_CODES = {
    400: ("bad_request", "Bad request"),
    401: ("unauthorized", "Authentication failed"),
    403: ("forbidden", "Not allowed"),
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    406: ("not_acceptable", "Not acceptable"),
    413: ("payload_too_large", "Request body too large"),
    415: ("unsupported_media_type", "Unsupported media type"),
}


def install_problem_handlers(app: FastAPI) -> None:
    """Render every error, ours and the framework's, as problem+json with a stable code."""

    @app.exception_handler(PaymuxError)
    async def _paymux_error(request: Request, exc: PaymuxError) -> JSONResponse:
        return problem_response(exc.to_problem(request_id_of(request)), headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        issues = _validation_issues(exc.errors())
        first = issues[0] if issues else None
        detail = (
            f"{'.'.join(map(str, first['loc']))}: {first['msg']}" if first else "The request is not valid"
        )
        body = problem_body(
            status=422,
            code="validation_error",
            title="The request is not valid",
            detail=detail,
            request_id=request_id_of(request),
            extra={"errors": issues},
        )
        return problem_response(body)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code, title = _HTTP_CODES.get(exc.status_code, ("http_error", "HTTP error"))
        detail = exc.detail if isinstance(exc.detail, str) and exc.detail.lower() != title.lower() else None
        body = problem_body(
            status=exc.status_code, code=code, title=title, detail=detail, request_id=request_id_of(request)
        )
        return problem_response(body, headers=getattr(exc, "headers", None))

    @app.exception_handler(DBAPIError)
    async def _database_error(request: Request, exc: DBAPIError) -> JSONResponse:
        if not exc.connection_invalidated:
            return await _unexpected(request, exc)
        # A pooled connection found dead (the database restarted or failed over): the pool has been told, and a
        # retry gets a fresh connection. paymux does not ping each connection before use, which would cost a
        # round trip per transaction; this answer is the price, and idempotency keys make the retry safe.
        log.warning("database connection lost; the request may be retried", path=request.url.path)
        body = problem_body(
            status=503,
            code="service_unavailable",
            title="Service temporarily unavailable",
            detail="The database connection was lost; retry the request (with the same Idempotency-Key).",
            request_id=request_id_of(request),
        )
        return problem_response(body, headers={"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # The trace goes to the log with the request id; the caller gets the id and nothing of the internals.
        log.exception("unhandled error", path=request.url.path)
        body = problem_body(
            status=500,
            code="internal_error",
            title="Internal server error",
            detail="Something went wrong on our side; the request id identifies it in the logs.",
            request_id=request_id_of(request),
        )
        return problem_response(body)
