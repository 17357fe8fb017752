"""What every provider sandbox shares: its settings from the environment, a customer-outcome request, a
webhook sender, and the settlement file of a day. Sandboxes keep their state in memory: they stand in for a
provider's systems, not paymux's."""

from __future__ import annotations

import asyncio
import functools
import os
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Literal

import httpx
import structlog
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from paymux.providers.settlement import LineKind, SettlementBook, SettlementLine

log = structlog.get_logger(__name__)

Outcome = Literal["COMPLETED", "FAILED", "EXPIRED", "CANCELED"]


class OutcomeRequest(BaseModel):
    """`POST /<provider>/_sandbox/payments/{merchant payment id}`: what the customer did."""

    model_config = ConfigDict(extra="forbid")

    outcome: Outcome


@dataclass(frozen=True, slots=True)
class SandboxCredentials:
    api_key: str
    api_secret: str
    merchant_id: str
    webhook_secret: str | None

    @classmethod
    def from_env(
        cls, provider: str, defaults: SandboxCredentials, env: Mapping[str, str] | None = None
    ) -> SandboxCredentials:
        """PAYMUX_SANDBOX_<PROVIDER>_API_KEY, _API_SECRET, _MERCHANT_ID, _WEBHOOK_SECRET, else the demo defaults."""
        source = os.environ if env is None else env
        prefix = f"PAYMUX_SANDBOX_{provider.upper()}_"
        return cls(
            api_key=source.get(prefix + "API_KEY", defaults.api_key),
            api_secret=source.get(prefix + "API_SECRET", defaults.api_secret),
            merchant_id=source.get(prefix + "MERCHANT_ID", defaults.merchant_id),
            webhook_secret=source.get(prefix + "WEBHOOK_SECRET", defaults.webhook_secret or "") or None,
        )


@dataclass(frozen=True)
class SandboxTiming:
    """Magic-amount delays: a slow answer, and one slower than any sane client timeout."""

    slow_seconds: float = 2.0
    timeout_seconds: float = 60.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SandboxTiming:
        source = os.environ if env is None else env
        return cls(
            slow_seconds=float(source.get("PAYMUX_SANDBOX_SLOW_SECONDS", "2")),
            timeout_seconds=float(source.get("PAYMUX_SANDBOX_TIMEOUT_SECONDS", "60")),
        )


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One TLS context for every notification: loading the CA bundle anew per client cost more CPU than the
    notification itself."""
    return ssl.create_default_context()


class WebhookSender:
    """Sends a provider's notifications to paymux, retrying a few times like a provider would."""

    def __init__(self, url: str | None) -> None:
        self.url = url
        self._tasks: set[asyncio.Task[None]] = set()

    def send(self, body: bytes, headers: Mapping[str, str]) -> None:
        if self.url is None:
            return
        task = asyncio.get_running_loop().create_task(self._deliver(self.url, body, dict(headers)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, url: str, body: bytes, headers: dict[str, str]) -> None:
        async with httpx.AsyncClient(timeout=10, verify=_tls_context()) as client:
            for attempt in range(4):
                try:
                    response = await client.post(url, content=body, headers=headers)
                    if response.status_code < 300:
                        return
                    log.warning("sandbox webhook refused", url=url, status=response.status_code)
                except httpx.HTTPError as exc:
                    log.warning("sandbox webhook failed", url=url, error=str(exc))
                await asyncio.sleep(0.5 * 2**attempt)

    async def drain(self) -> None:
        """Wait for the notifications in flight (tests)."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


CONTROL_PREFIX = "/_sandbox/"

Authenticator = Callable[[Request], Awaitable[Response | None]]


def provider_path(request: Request) -> str:
    """The path as the provider sees it: without the prefix the sandbox is mounted under (`/paypay`)."""
    return request.url.path.removeprefix(request.scope.get("root_path", ""))


def sandbox_app(title: str, authenticate: Authenticator) -> FastAPI:
    """A sandbox's app: every request but the customer-playing control endpoints must pass `authenticate`,
    which answers with the provider's own refusal or None."""
    app = FastAPI(title=title, openapi_url=None, docs_url=None, redoc_url=None)

    @app.middleware("http")
    async def _authenticate(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if not provider_path(request).startswith(CONTROL_PREFIX):
            refused = await authenticate(request)
            if refused is not None:
                return refused
        return await call_next(request)

    return app


# ---------------------------------------------------------------------- settlement files

SETTLEMENT_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def settled(
    kind: LineKind,
    provider_transaction_id: str,
    reference: str,
    amount: int,
    currency: str,
    *,
    at: float | None = None,
) -> SettlementLine:
    """A line of the settlement file: what the provider settled, when (epoch seconds, now by default). The
    sandboxes charge no fee."""
    return SettlementLine(
        kind=kind,
        provider_transaction_id=provider_transaction_id,
        reference=reference,
        amount=amount,
        currency=currency,
        fee=0,
        transacted_at=datetime.fromtimestamp(time.time() if at is None else at, UTC),
    )


def settlement_day(text: str) -> date | None:
    """`YYYY-MM-DD` as a date; None for anything else (ISO 8601's other spellings of a day included)."""
    if not SETTLEMENT_DAY.fullmatch(text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def settlement_csv(book: SettlementBook, day: date) -> Response:
    """The file of a day: the header and that day's lines (UTC), `text/csv`."""
    return Response(book.csv_for(day), media_type="text/csv")


def serve_settlements(app: FastAPI | APIRouter, book: SettlementBook) -> None:
    """`GET /_sandbox/settlements/{YYYY-MM-DD}.csv`: the day's settlement file, without provider authentication
    (like every control path); `422` for a day that is not one."""

    async def settlement_file(day: str) -> Response:
        parsed = settlement_day(day)
        if parsed is None:
            return JSONResponse({"error": f"{day!r} is not a day (YYYY-MM-DD)"}, status_code=422)
        return settlement_csv(book, parsed)

    app.add_api_route(f"{CONTROL_PREFIX}settlements/{{day}}.csv", settlement_file, methods=["GET"])
