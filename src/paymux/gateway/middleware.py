"""The outermost layer of every HTTP request: request id, body size limit, rate-limit headers, access log."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping

import structlog
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from paymux.core.errors import problem_body
from paymux.core.ids import new_id
from paymux.gateway.ratelimit import LimitState

log = structlog.get_logger("paymux.access")

REQUEST_ID_HEADER = b"x-request-id"


def _valid_request_id(value: bytes) -> bool:
    return 0 < len(value) <= 128 and all(0x21 <= byte <= 0x7E for byte in value)


class EdgeMiddleware:
    def __init__(
        self, app: ASGIApp, *, max_body_bytes: int, upload_limits: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        # Paths that take files (a settlement file upload) have a limit of their own, for POST only.
        self.upload_limits = dict(upload_limits or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope.get("headers") or [])
        incoming = headers.get(REQUEST_ID_HEADER, b"")
        request_id = incoming.decode() if _valid_request_id(incoming) else new_id("req")
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        structlog.contextvars.bind_contextvars(request_id=request_id)
        status_holder = [500]
        response_started = [False]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                response_started[0] = True
                status_holder[0] = message["status"]
                extra = [(b"x-request-id", request_id.encode())]
                limit: LimitState | None = state.get("rate_limit")
                if limit is not None:
                    present = {name.lower() for name, _ in message.get("headers", [])}
                    extra += [
                        (name.lower().encode(), value.encode())
                        for name, value in limit.headers().items()
                        if name.lower().encode() not in present
                    ]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        limit = self.max_body_bytes
        if scope["method"] == "POST":
            limit = self.upload_limits.get(scope["path"], limit)
        try:
            declared = headers.get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                await self._problem(
                    send_with_headers,
                    413,
                    "payload_too_large",
                    "Request body too large",
                    f"Request bodies are limited to {limit} bytes.",
                    request_id,
                )
                return
            await self.app(scope, self._limited(receive, limit), send_with_headers)
        except Exception:
            # Rendered here rather than by Starlette's outermost error middleware, so the 500 carries the
            # X-Request-Id header like every other answer.
            log.exception("unhandled error", path=scope["path"])
            status_holder[0] = 500
            if not response_started[0]:
                await self._problem(
                    send_with_headers,
                    500,
                    "internal_error",
                    "Internal server error",
                    "Something went wrong on our side; the request id identifies it in the logs.",
                    request_id,
                )
        finally:
            log.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                status=status_holder[0],
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
            )
            structlog.contextvars.unbind_contextvars("request_id")

    @staticmethod
    def _limited(receive: Receive, limit: int) -> Receive:
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # An HTTPException, because FastAPI's body parser turns any other exception into a 400.
                    raise HTTPException(413, f"Request bodies are limited to {limit} bytes.")
            return message

        return limited_receive

    @staticmethod
    async def _problem(send: Send, status: int, code: str, title: str, detail: str, request_id: str) -> None:
        body = json.dumps(
            problem_body(status=status, code=code, title=title, detail=detail, request_id=request_id)
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/problem+json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
