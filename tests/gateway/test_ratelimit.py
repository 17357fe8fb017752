"""Rate limits of seed 004: per merchant, per store, per client IP and global, from PAYMUX_RATELIMIT_* settings.

Exhausted: 429 problem `rate_limited` with X-RateLimit-Remaining: 0, X-RateLimit-Reset and Retry-After. Allowed:
X-RateLimit-Limit/Remaining/Reset of the tightest limit. The IP limit applies to payment-token callers and
unauthenticated requests, not to signed (HMAC) servers.

The counters are sliding windows aligned to the clock (limits' SlidingWindowCounter), where the previous window's
count decays once a boundary passes. The low limits below use an hour window, so that no boundary falls inside a
test and exact counts hold; the windows run on the real time, which the FrozenClock does not move.
"""

from __future__ import annotations

import gc
import math
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from fastapi import FastAPI
from pydantic import ValidationError
from sqlalchemy import func, select

from paymux.app import create_app
from paymux.config import Settings
from paymux.container import Container
from paymux.core.clock import FrozenClock
from paymux.core.errors import TooManyRequests
from paymux.gateway.ratelimit import LimitState, RateLimiter, RateLimits
from paymux.payments.models import PaymentIntent
from tests.conftest import empty_all_tables
from tests.support import ServerClient, Tenant, bearer, bootstrap_tenant, intent_body

PROBLEM_JSON = "application/problem+json"
INTENTS = "/v1/payment_intents"
PEER = ("198.51.100.9", 1234)
OTHER_PEER = ("198.51.100.77", 4321)
REDIS_URL = os.environ.get("PAYMUX_TEST_REDIS_URL")
HOUR = 3600


@dataclass
class Deployment:
    app: FastAPI
    container: Container
    http: httpx.AsyncClient
    tenant: Tenant
    clock: FrozenClock

    def server(self) -> ServerClient:
        return ServerClient(self.http, self.tenant.client_id, self.tenant.client_secret, self.clock)


def _client(app: FastAPI, peer: tuple[str, int] = PEER) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=peer), base_url="http://paymux.test"
    )


@asynccontextmanager
async def deployed(
    settings: Settings, clock: FrozenClock, *, tenant: Tenant | None = None, **update: Any
) -> AsyncIterator[Deployment]:
    """An app of its own settings, torn down like the `app` fixture: tables emptied, Redis flushed, closed."""
    application = create_app(settings.model_copy(update=update), clock=clock)
    container: Container = application.state.container
    if container.redis is not None:
        await container.redis.flushdb()
    try:
        if tenant is None:
            tenant = await bootstrap_tenant(container, partner="acme", merchant="M-1", store="S-1")
        async with _client(application) as http:
            yield Deployment(application, container, http, tenant, clock)
    finally:
        await empty_all_tables(container.db)
        if container.redis is not None:
            await container.redis.flushdb()
        await container.close()


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    return body


def assert_allowed(response: httpx.Response, status: int, limit: int, remaining: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["x-ratelimit-limit"] == str(limit)
    assert response.headers["x-ratelimit-remaining"] == str(remaining)
    reset = int(response.headers["x-ratelimit-reset"])
    assert math.floor(time.time()) - 1 <= reset <= math.ceil(time.time()) + HOUR


def assert_limited(response: httpx.Response, kind: str, limit: int, window: int = HOUR) -> None:
    body = assert_problem(response, 429, "rate_limited")
    assert body["limit"] == kind
    assert response.headers["x-ratelimit-remaining"] == "0"
    assert response.headers["x-ratelimit-limit"] == str(limit)
    now = time.time()
    reset = int(response.headers["x-ratelimit-reset"])
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= window
    assert now - 1 <= reset <= now + window + 1
    # Both say when the window frees up: an absolute time and a delay.
    assert abs((reset - now) - retry_after) <= 2


async def stored_with_ref(container: Container, merchant_ref_id: str) -> int:
    async with container.db.reading() as session:
        count = await session.execute(
            select(func.count())
            .select_from(PaymentIntent)
            .where(PaymentIntent.merchant_ref_id == merchant_ref_id)
        )
        return int(count.scalar_one())


# ---------------------------------------------------------------------------------------------- headers


async def test_default_limits_and_headers_on_success(server: ServerClient, tenant: Tenant) -> None:
    # Seed 004: 1,000 per merchant, 500 per store, 100 per IP, 10,000 global. A merchant-scoped server counts
    # against its merchant and the global limit; the merchant's is the tighter one.
    first = await server.get(INTENTS)
    assert_allowed(first, 200, limit=1000, remaining=999)
    intent = await server.create_intent(tenant)

    sdk = await server.http.get(f"{INTENTS}/{intent['id']}", headers=bearer(intent["payment_token"]))
    assert_allowed(sdk, 200, limit=100, remaining=99)  # the SDK's IP is its tightest limit


async def test_remaining_counts_down_per_request(settings: Settings, clock: FrozenClock) -> None:
    async with deployed(settings, clock, ratelimit_merchant="5/hour") as env:
        server = env.server()
        for remaining in (4, 3, 2):
            assert_allowed(await server.get(INTENTS), 200, limit=5, remaining=remaining)
        created = await server.post(INTENTS, intent_body(env.tenant))
        assert_allowed(created, 201, limit=5, remaining=1)


async def test_errors_after_authentication_carry_the_headers(settings: Settings, clock: FrozenClock) -> None:
    async with deployed(settings, clock, ratelimit_merchant="5/hour") as env:
        server = env.server()
        missing = await server.get(f"{INTENTS}/pi_doesnotexist")
        assert_problem(missing, 404, "payment_intent_not_found")
        assert missing.headers["x-ratelimit-remaining"] == "4"


# ---------------------------------------------------------------------------------------------- merchant


async def test_exhausted_merchant_limit_is_429_with_headers(settings: Settings, clock: FrozenClock) -> None:
    async with deployed(settings, clock, ratelimit_merchant="3/hour") as env:
        server = env.server()
        for remaining in (2, 1, 0):
            assert_allowed(await server.get(INTENTS), 200, limit=3, remaining=remaining)

        limited = await server.get(INTENTS)
        assert_limited(limited, "merchant", limit=3)

        body = intent_body(env.tenant)
        refused = await server.post(INTENTS, body, idempotency_key="after-the-limit")
        assert_limited(refused, "merchant", limit=3)
        assert await stored_with_ref(env.container, body["merchant_ref_id"]) == 0

        # Another merchant has a counter of its own.
        other = await bootstrap_tenant(env.container, partner="globex", merchant="G-1", store="GS-1")
        other_server = ServerClient(env.http, other.client_id, other.client_secret, clock)
        assert_allowed(await other_server.get(INTENTS), 200, limit=3, remaining=2)


async def test_payment_token_callers_count_against_their_merchant(
    settings: Settings, clock: FrozenClock
) -> None:
    async with deployed(settings, clock, ratelimit_merchant="3/hour") as env:
        server = env.server()
        intent = (await server.post(INTENTS, intent_body(env.tenant))).json()  # 1
        sdk_path = f"{INTENTS}/{intent['id']}"
        assert (await env.http.get(sdk_path, headers=bearer(intent["payment_token"]))).status_code == 200  # 2
        assert (await server.get(INTENTS)).status_code == 200  # 3
        limited = await env.http.get(sdk_path, headers=bearer(intent["payment_token"]))
        assert_limited(limited, "merchant", limit=3)
        assert_limited(await server.get(INTENTS), "merchant", limit=3)


# ---------------------------------------------------------------------------------------------- store


async def test_store_limit_for_a_store_scoped_client(settings: Settings, clock: FrozenClock) -> None:
    async with deployed(settings, clock, ratelimit_store="2/hour") as env:
        tenant = env.tenant
        client_id, secret = await env.container.tenants.create_client(
            name="pos",
            partner_id=tenant.client_partner_id,
            merchant_id=tenant.merchant_id,
            store_id=tenant.store_id,
        )
        pos = ServerClient(env.http, client_id, secret, clock)
        assert_allowed(await pos.get(INTENTS), 200, limit=2, remaining=1)
        created = await pos.post(INTENTS, intent_body(tenant, store_id=None))
        assert_allowed(created, 201, limit=2, remaining=0)
        assert created.json()["store_id"] == tenant.store_id

        body = intent_body(tenant, store_id=None)
        limited = await pos.post(INTENTS, body)
        assert_limited(limited, "store", limit=2)
        assert await stored_with_ref(env.container, body["merchant_ref_id"]) == 0

        # The merchant-scoped server is not bound to the store; its merchant limit is far from spent.
        merchant_server = env.server()
        unbound = await merchant_server.get(INTENTS)
        assert unbound.status_code == 200, unbound.text
        assert unbound.headers["x-ratelimit-limit"] == "1000"

        # Another store's client has a store counter of its own.
        second = await bootstrap_tenant(env.container, partner="acme", merchant="M-1", store="S-2")
        assert second.store_id != tenant.store_id
        client_2, secret_2 = await env.container.tenants.create_client(
            name="pos-2", partner_id=second.client_partner_id, store_id=second.store_id
        )
        pos_2 = ServerClient(env.http, client_2, secret_2, clock)
        assert_allowed(await pos_2.get(INTENTS), 200, limit=2, remaining=1)


# ---------------------------------------------------------------------------------------------- IP


async def test_ip_limit_hits_payment_token_callers_but_not_signed_servers(
    settings: Settings, clock: FrozenClock
) -> None:
    async with deployed(settings, clock, ratelimit_ip="3/hour") as env:
        server = env.server()
        intent = await server.create_intent(env.tenant)
        sdk_path = f"{INTENTS}/{intent['id']}"
        token = bearer(intent["payment_token"])

        for remaining in (2, 1, 0):
            assert_allowed(await env.http.get(sdk_path, headers=token), 200, limit=3, remaining=remaining)
        assert_limited(await env.http.get(sdk_path, headers=token), "ip", limit=3)
        confirm = await env.http.post(f"{sdk_path}/confirm", headers=token)
        assert_limited(confirm, "ip", limit=3)

        # The signed server on the same address is not counted by IP at all.
        for _ in range(6):
            response = await server.get(sdk_path)
            assert response.status_code == 200, response.text
            assert response.headers["x-ratelimit-limit"] == "1000"
        assert (await server.get(sdk_path)).json()["status"] == "requires_payment_method"

        # A browser on another address has its own count.
        async with _client(env.app, OTHER_PEER) as elsewhere:
            assert_allowed(await elsewhere.get(sdk_path, headers=token), 200, limit=3, remaining=2)


async def test_unauthenticated_requests_count_against_the_ip(settings: Settings, clock: FrozenClock) -> None:
    async with deployed(settings, clock, ratelimit_ip="2/hour") as env:
        for _ in range(2):
            assert_problem(await env.http.get(INTENTS), 401, "missing_credentials")
        assert_limited(await env.http.get(INTENTS), "ip", limit=2)
        assert_limited(await env.http.get(f"{INTENTS}/pi_x", headers=bearer("tok_garbage")), "ip", limit=2)
        assert (await env.server().get(INTENTS)).status_code == 200


async def test_forwarded_for_from_an_untrusted_peer_does_not_reset_the_ip_count(
    settings: Settings, clock: FrozenClock
) -> None:
    async with deployed(settings, clock, ratelimit_ip="2/hour") as env:
        for hop in ("10.0.0.1", "10.0.0.2"):
            response = await env.http.get(INTENTS, headers={"X-Forwarded-For": hop})
            assert_problem(response, 401, "missing_credentials")
        spoofed = await env.http.get(INTENTS, headers={"X-Forwarded-For": "10.0.0.3"})
        assert_limited(spoofed, "ip", limit=2)


async def test_forwarded_for_from_a_trusted_proxy_names_the_client(
    settings: Settings, clock: FrozenClock
) -> None:
    async with deployed(settings, clock, ratelimit_ip="1/hour", trusted_proxies=[PEER[0]]) as env:
        for client_ip in ("192.0.2.10", "192.0.2.11"):
            response = await env.http.get(INTENTS, headers={"X-Forwarded-For": f"6.6.6.6, {client_ip}"})
            assert_problem(response, 401, "missing_credentials")
        again = await env.http.get(INTENTS, headers={"X-Forwarded-For": "6.6.6.6, 192.0.2.10"})
        assert_limited(again, "ip", limit=1)


async def test_failed_signatures_count_against_the_ip(settings: Settings, clock: FrozenClock) -> None:
    async with deployed(settings, clock, ratelimit_ip="3/hour") as env:
        forger = ServerClient(env.http, env.tenant.client_id, "sk_guessed-secret", clock)
        statuses = [(await forger.get(INTENTS)).status_code for _ in range(5)]
        # Unauthenticated callers, and bearers of unknown tokens, get 429 after 3; signature guessers too.
        assert statuses == [401, 401, 401, 429, 429]


# ---------------------------------------------------------------------------------------------- all or none


@asynccontextmanager
async def limiter(**limits: str) -> AsyncIterator[RateLimiter]:
    """A limiter on this pass's counters: Redis in the PostgreSQL pass, this process's memory otherwise."""
    configured = RateLimits(
        **{"merchant": "100/hour", "store": "100/hour", "ip": "100/hour", "global_": "100/hour", **limits}
    )
    client = aioredis.from_url(REDIS_URL) if REDIS_URL else None
    rate_limiter = RateLimiter(configured, redis=client)
    try:
        await rate_limiter.reset()
        yield rate_limiter
    finally:
        await rate_limiter.reset()
        if client is not None:
            await client.aclose()


def assert_window(state: LimitState | None, limit: int, remaining: int) -> None:
    assert state is not None
    assert (state.limit, state.remaining) == (limit, remaining)


async def test_a_refused_request_counts_against_none_of_its_limits() -> None:
    async with limiter(merchant="2/hour", global_="5/hour") as rate_limiter:
        for remaining in (1, 0):
            state = await rate_limiter.hit(merchant_id=7)
            assert_window(state, 2, remaining)
        for _ in range(3):
            with pytest.raises(TooManyRequests) as refused:
                await rate_limiter.hit(merchant_id=7)
            assert refused.value.headers["X-RateLimit-Remaining"] == "0"
        # The three refusals used none of the global quota: 3 of its 5 are left for this request.
        assert_window(await rate_limiter.hit(ip="192.0.2.9"), 5, 2)


async def test_the_tightest_limit_is_reported_and_each_counts_once() -> None:
    async with limiter(merchant="10/hour", store="3/hour", global_="50/hour") as rate_limiter:
        state = await rate_limiter.hit(merchant_id=1, store_id=11)
        assert_window(state, 3, 2)
        state = await rate_limiter.hit(merchant_id=1)
        assert_window(state, 10, 8)
        state = await rate_limiter.hit(ip="192.0.2.1", count_global=False)
        assert_window(state, 100, 99)
        state = await rate_limiter.hit(merchant_id=2)
        assert_window(state, 10, 9)
        assert state is not None
        assert state.reset_at > time.time()


# ---------------------------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    "value", ["lots", "", "100", "100/fortnight", "per minute", "100 / minute / 2", "x/minute"]
)
@pytest.mark.parametrize(
    "field", ["ratelimit_merchant", "ratelimit_store", "ratelimit_ip", "ratelimit_global"]
)
def test_settings_refuse_malformed_limits(field: str, value: str) -> None:
    given: dict[str, Any] = {field: value}
    with pytest.raises(ValidationError) as raised:
        Settings(**given)
    assert raised.value.errors()[0]["loc"] == (field,)


@pytest.mark.parametrize("value", ["100/minute", "10/second", "2000/hour", "5 per minute", "1/day"])
def test_settings_accept_limit_strings(value: str) -> None:
    assert Settings(ratelimit_merchant=value).ratelimit_merchant == value


def test_settings_read_the_limits_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYMUX_RATELIMIT_MERCHANT", "7/minute")
    monkeypatch.setenv("PAYMUX_RATELIMIT_STORE", "6/minute")
    monkeypatch.setenv("PAYMUX_RATELIMIT_IP", "5/minute")
    monkeypatch.setenv("PAYMUX_RATELIMIT_GLOBAL", "70/minute")
    monkeypatch.setenv("PAYMUX_RATELIMIT_ENABLED", "false")
    loaded = Settings()
    assert (
        loaded.ratelimit_merchant,
        loaded.ratelimit_store,
        loaded.ratelimit_ip,
        loaded.ratelimit_global,
    ) == (
        "7/minute",
        "6/minute",
        "5/minute",
        "70/minute",
    )
    assert loaded.ratelimit_enabled is False


def test_settings_refuse_a_malformed_limit_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYMUX_RATELIMIT_IP", "a hundred/minute")
    with pytest.raises(ValidationError) as raised:
        Settings()
    assert raised.value.errors()[0]["loc"] == ("ratelimit_ip",)


def test_settings_defaults_are_the_seed_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MERCHANT", "STORE", "IP", "GLOBAL"):
        monkeypatch.delenv(f"PAYMUX_RATELIMIT_{name}", raising=False)
    defaults = Settings()
    assert (defaults.ratelimit_merchant, defaults.ratelimit_store, defaults.ratelimit_ip) == (
        "1000/minute",
        "500/minute",
        "100/minute",
    )
    assert defaults.ratelimit_global == "10000/minute"


async def test_a_limit_from_the_environment_reaches_the_app(
    settings: Settings, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYMUX_RATELIMIT_MERCHANT", "2/hour")
    from_env = Settings(
        database_url=settings.database_url,
        redis_url=settings.redis_url,
        master_key=settings.master_key,
        master_key_file=settings.master_key_file,
        log_level="WARNING",
    )
    assert from_env.ratelimit_merchant == "2/hour"
    async with deployed(from_env, clock) as env:
        server = env.server()
        assert_allowed(await server.get(INTENTS), 200, limit=2, remaining=1)
        assert_allowed(await server.get(INTENTS), 200, limit=2, remaining=0)
        assert_limited(await server.get(INTENTS), "merchant", limit=2)


async def test_disabled_limits_send_no_headers(settings: Settings, clock: FrozenClock) -> None:
    async with deployed(settings, clock, ratelimit_enabled=False, ratelimit_merchant="1/hour") as env:
        server = env.server()
        for _ in range(3):
            response = await server.get(INTENTS)
            assert response.status_code == 200, response.text
            assert "x-ratelimit-limit" not in response.headers


# ---------------------------------------------------------------------------------------------- shared counters


@pytest.mark.redis
async def test_two_app_instances_on_one_redis_share_the_merchant_counter(
    settings: Settings, clock: FrozenClock
) -> None:
    shared: dict[str, Any] = {"redis_url": REDIS_URL, "ratelimit_merchant": "3/hour"}
    async with (
        deployed(settings, clock, **shared) as first,
        deployed(settings, clock, tenant=first.tenant, **shared) as second,
    ):
        assert first.container is not second.container
        one, two = first.server(), second.server()
        assert_allowed(await one.get(INTENTS), 200, limit=3, remaining=2)
        assert_allowed(await two.get(INTENTS), 200, limit=3, remaining=1)
        assert_allowed(await one.get(INTENTS), 200, limit=3, remaining=0)
        assert_limited(await two.get(INTENTS), "merchant", limit=3)
        assert_limited(await one.get(INTENTS), "merchant", limit=3)


async def test_rate_limits_fail_open_when_redis_is_unreachable(
    settings: Settings, clock: FrozenClock
) -> None:
    application = create_app(
        settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0", "ratelimit_merchant": "1/hour"}),
        clock=clock,
    )
    container: Container = application.state.container
    try:
        tenant = await bootstrap_tenant(container, partner="acme", merchant="M-1", store="S-1")
        async with _client(application) as http:
            server = ServerClient(http, tenant.client_id, tenant.client_secret, clock)
            for _ in range(3):
                response = await server.get(INTENTS)
                assert response.status_code == 200, response.text
                assert "x-ratelimit-remaining" not in response.headers
    finally:
        await empty_all_tables(container.db)
        await container.close()


@pytest.mark.redis
async def test_closing_a_container_closes_the_rate_limiters_redis_connections(settings: Settings) -> None:
    """The limiter shares the container's Redis pool: nothing is left open for the garbage collector to find."""
    unraisable: list[str] = []
    previous = sys.unraisablehook
    sys.unraisablehook = lambda report: unraisable.append(str(report.exc_value))
    try:
        container = Container.build(settings.model_copy(update={"redis_url": REDIS_URL}))
        await container.rate_limiter.hit(ip="203.0.113.9")
        await container.close()
        del container
        gc.collect()
    finally:
        sys.unraisablehook = previous
    assert unraisable == []
