"""`create_app(settings)`: the HTTP API with its routers, middleware and error handling."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel
from sqlalchemy import text

import paymux
from paymux.audit.api import router as audit_router
from paymux.auth.admin_api import router as admin_router
from paymux.auth.api import router as auth_router
from paymux.config import Settings
from paymux.container import Container
from paymux.core.clock import Clock
from paymux.core.errors import (
    PROBLEM_MEDIA_TYPE,
    ProblemDetails,
    ServiceUnavailable,
    ValidationProblem,
    install_problem_handlers,
)
from paymux.core.logging import configure_logging
from paymux.events.api import router as events_router
from paymux.gateway.middleware import EdgeMiddleware
from paymux.ledger.api import router as ledger_router
from paymux.payments.api import router as payments_router
from paymux.providers.base import PaymentProvider
from paymux.providers.sandboxes import mount_sandboxes
from paymux.reconciliation.api import router as reconciliation_router
from paymux.tenants.api import portal_router
from paymux.tenants.api import router as tenants_router
from paymux.webhooks.api import router as webhooks_router
from paymux.worker import Worker

DESCRIPTION = """\
One API in front of many payment providers.

**Servers** sign every call with HMAC-SHA256: `Authorization: HMAC-SHA256 <client_id>:<timestamp>:<signature>`,
where the signature is Base64(HMAC-SHA256(secret, `METHOD:PATH:timestamp:body`)) and PATH includes the query string.
**SDKs and WebViews** use the intent's `payment_token`: `Authorization: Bearer tok_...`.

Every POST takes an `Idempotency-Key` header (kept 24 hours per caller). Errors are RFC 9457
`application/problem+json` documents with a stable `code`.
"""


class Health(BaseModel):
    status: str
    version: str


def create_app(
    settings: Settings | None = None,
    *,
    clock: Clock | None = None,
    providers: list[PaymentProvider] | None = None,
    container: Container | None = None,
) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings.log_level, json=settings.log_json)
    container = container or Container.build(settings, clock=clock, providers=providers)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        embedded = None
        stop = asyncio.Event()
        if settings.embedded_worker:
            embedded = asyncio.create_task(Worker(container).run(stop))
        try:
            yield
        finally:
            if embedded is not None:
                stop.set()
                await embedded
            await container.close()

    app = FastAPIOffline(
        title="paymux",
        version=paymux.__version__,
        description=DESCRIPTION,
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.container = container
    install_problem_handlers(app)
    app.add_middleware(
        EdgeMiddleware,
        max_body_bytes=settings.max_body_bytes,
        upload_limits={"/v1/reconciliation_runs": settings.reconciliation_max_upload_bytes},
    )
    app.include_router(payments_router)
    app.include_router(tenants_router)
    app.include_router(portal_router)
    app.include_router(auth_router)
    app.include_router(admin_router)
    app.include_router(audit_router)
    app.include_router(events_router)
    app.include_router(ledger_router)
    app.include_router(reconciliation_router)
    app.include_router(webhooks_router)
    if settings.mount_sandboxes:
        mount_sandboxes(app, settings.sandbox_webhook_base)

    @app.get("/healthz", response_model=Health, tags=["operations"], summary="Liveness")
    async def healthz() -> Health:
        return Health(status="ok", version=paymux.__version__)

    @app.get(
        "/readyz",
        response_model=Health,
        tags=["operations"],
        summary="Readiness: the database answers",
        responses={503: {"description": "The database does not answer", "model": ProblemDetails}},
    )
    async def readyz(request: Request) -> Health:
        try:
            async with container.db.reading() as session:
                await session.execute(text("SELECT 1"))
        except Exception as exc:
            raise ServiceUnavailable("The database does not answer.") from exc
        return Health(status="ready", version=paymux.__version__)

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with every error response described as problem+json."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        openapi_version="3.1.0",
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in (ProblemDetails, ValidationProblem):
        model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, definition in model_schema.pop("$defs", {}).items():
            components.setdefault(name, definition)
        components[model.__name__] = model_schema
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            for status, response in operation.get("responses", {}).items():
                if not status.isdigit() or int(status) < 400 or response.pop("x-oauth2-error", False):
                    continue  # the token endpoint's errors are RFC 6749 JSON (with the problem members)
                model_name = "ValidationProblem" if status == "422" else "ProblemDetails"
                response["content"] = {
                    PROBLEM_MEDIA_TYPE: {"schema": {"$ref": f"#/components/schemas/{model_name}"}}
                }
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    app.openapi_schema = schema
    return schema
