"""The HMAC replay guard (paymux.gateway.replay): a state-changing signature is accepted once, except as the
retry of the same Idempotency-Key; entries expire after their TTL; a shared Redis that cannot be reached fails
closed (reliability 2(c): HMAC nonce caches fail closed). Signatures are claimed through the rate limiter's call,
as paymux claims them, in this process or in Redis's script with the request's limits.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace

import httpx
import pytest
import redis.asyncio as aioredis

from paymux.app import create_app
from paymux.auth.errors import SignatureReplayed
from paymux.config import Settings
from paymux.container import Container
from paymux.core.clock import FrozenClock
from paymux.core.errors import ServiceUnavailable, TooManyRequests
from paymux.gateway import replay
from paymux.gateway.ratelimit import RateLimiter, RateLimits
from paymux.gateway.replay import MemoryReplayGuard, SignatureClaim
from tests.conftest import empty_all_tables
from tests.support import ServerClient, bootstrap_tenant, intent_body

REDIS_URL = os.environ.get("PAYMUX_TEST_REDIS_URL")
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"
TTL = 600


class SteppedMonotonic:
    """Stands in for the `time` module inside paymux.gateway.replay, so the in-process guard's TTL can be
    crossed without sleeping. Only the time source is replaced; the guard's own code runs as is."""

    def __init__(self) -> None:
        self.now = 10_000.0

    def monotonic(self) -> float:
        return self.now


def limits(**tighter: str) -> RateLimits:
    return RateLimits(
        **{"merchant": "100/hour", "store": "100/hour", "ip": "100/hour", "global_": "100/hour", **tighter}
    )


class Guard:
    """A signature claimed as paymux claims one: through `RateLimiter.hit`, here with no limit to count."""

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter

    async def claim(self, signature_key: str, idempotency_key: str | None, ttl_seconds: int) -> bool:
        try:
            await self.limiter.hit(
                count_global=False, claim=SignatureClaim(signature_key, idempotency_key, ttl_seconds)
            )
        except SignatureReplayed:
            return False
        return True


@pytest.fixture
async def redis_client() -> AsyncIterator[aioredis.Redis]:
    assert REDIS_URL is not None
    client = aioredis.from_url(REDIS_URL)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def prefix() -> str:
    return f"paymux-test-replay:{uuid.uuid4().hex}:"


@pytest.fixture
async def redis_guard(redis_client: aioredis.Redis, prefix: str) -> AsyncIterator[Guard]:
    try:
        yield Guard(RateLimiter(limits(), redis=redis_client, replay_prefix=prefix))
    finally:
        keys = [key async for key in redis_client.scan_iter(match=f"{prefix}*")]
        if keys:
            await redis_client.delete(*keys)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def guard(request: pytest.FixtureRequest) -> Guard:
    if request.param == "memory":
        return Guard(RateLimiter(limits(), redis=None))
    result: Guard = request.getfixturevalue("redis_guard")
    return result


# ---------------------------------------------------------------------------------------------- both guards


async def test_a_new_signature_is_fresh(guard: Guard) -> None:
    assert await guard.claim("sig-a", None, TTL) is True
    assert await guard.claim("sig-b", "key-1", TTL) is True


async def test_a_repeat_without_a_key_is_a_replay(guard: Guard) -> None:
    assert await guard.claim("sig", None, TTL) is True
    assert await guard.claim("sig", None, TTL) is False
    assert await guard.claim("sig", None, TTL) is False


async def test_a_repeat_with_the_same_key_is_allowed(guard: Guard) -> None:
    assert await guard.claim("sig", "key-1", TTL) is True
    assert await guard.claim("sig", "key-1", TTL) is True
    assert await guard.claim("sig", "key-1", TTL) is True


async def test_a_repeat_with_another_key_or_none_is_a_replay(guard: Guard) -> None:
    assert await guard.claim("sig", "key-1", TTL) is True
    assert await guard.claim("sig", "key-2", TTL) is False
    assert await guard.claim("sig", None, TTL) is False
    assert await guard.claim("sig", "", TTL) is False
    # ...and the refused attempts did not take the signature over from its key
    assert await guard.claim("sig", "key-1", TTL) is True
    assert await guard.claim("sig", "key-2", TTL) is False


async def test_a_first_use_without_a_key_cannot_be_repeated_with_one(guard: Guard) -> None:
    assert await guard.claim("sig", None, TTL) is True
    assert await guard.claim("sig", "key-1", TTL) is False


async def test_an_empty_key_counts_as_no_key(guard: Guard) -> None:
    assert await guard.claim("sig", "", TTL) is True
    assert await guard.claim("sig", "", TTL) is False
    assert await guard.claim("sig", None, TTL) is False


async def test_signatures_are_independent(guard: Guard) -> None:
    assert await guard.claim("sig-1", None, TTL) is True
    assert await guard.claim("sig-2", None, TTL) is True
    assert await guard.claim("sig-1", None, TTL) is False
    assert await guard.claim("sig-2", None, TTL) is False


async def test_concurrent_claims_of_one_signature_admit_one(guard: Guard) -> None:
    results = await asyncio.gather(*(guard.claim("sig", None, TTL) for _ in range(20)))
    assert results.count(True) == 1


# ---------------------------------------------------------------------------------------------- expiry


async def test_memory_entries_expire_after_their_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = SteppedMonotonic()
    monkeypatch.setattr(replay, "time", SimpleNamespace(monotonic=clock.monotonic))
    guard = MemoryReplayGuard()
    assert await guard.claim("sig", "key-1", TTL) is True
    clock.now += TTL - 0.5
    assert await guard.claim("sig", None, TTL) is False
    assert await guard.claim("sig", "key-2", TTL) is False
    clock.now += 1.0  # TTL + 0.5 s after the first use
    assert await guard.claim("sig", "key-2", TTL) is True
    # the expired entry was replaced: the new one is bound to key-2 and lives a full TTL again
    assert await guard.claim("sig", "key-1", TTL) is False
    clock.now += TTL - 0.5
    assert await guard.claim("sig", None, TTL) is False
    clock.now += 1.0
    assert await guard.claim("sig", None, TTL) is True


async def test_memory_guard_forgets_expired_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = SteppedMonotonic()
    monkeypatch.setattr(replay, "time", SimpleNamespace(monotonic=clock.monotonic))
    guard = MemoryReplayGuard()
    for index in range(100):
        assert await guard.claim(f"sig-{index}", None, 10)
    assert repr(guard) == "MemoryReplayGuard(entries=100)"
    clock.now += 60
    assert await guard.claim("sig-new", None, 10)
    assert repr(guard) == "MemoryReplayGuard(entries=1)"


@pytest.mark.redis
async def test_redis_entries_carry_their_ttl_and_expire(
    redis_guard: Guard, redis_client: aioredis.Redis, prefix: str
) -> None:
    assert await redis_guard.claim("sig-long", "key-1", TTL) is True
    remaining = await redis_client.ttl(f"{prefix}sig-long")
    assert 0 < remaining <= TTL

    assert await redis_guard.claim("sig", "key-1", 1) is True
    assert await redis_guard.claim("sig", None, 1) is False
    await asyncio.sleep(1.1)  # the one sleep of the suite: Redis expires keys on its own clock
    assert await redis_guard.claim("sig", None, 1) is True
    assert await redis_guard.claim("sig", None, 1) is False


@pytest.mark.redis
async def test_redis_guard_is_shared_between_processes(redis_client: aioredis.Redis, prefix: str) -> None:
    first_process = Guard(RateLimiter(limits(), redis=redis_client, replay_prefix=prefix))
    other_client = aioredis.from_url(REDIS_URL or "")
    try:
        second_process = Guard(RateLimiter(limits(), redis=other_client, replay_prefix=prefix))
        assert await first_process.claim("sig", "key-1", TTL) is True
        assert await second_process.claim("sig", "key-2", TTL) is False
        assert await second_process.claim("sig", "key-1", TTL) is True
    finally:
        keys = [key async for key in redis_client.scan_iter(match=f"{prefix}*")]
        if keys:
            await redis_client.delete(*keys)
        await other_client.aclose()


# ---------------------------------------------------------------------------------------------- fail closed


async def test_unreachable_redis_fails_closed() -> None:
    # Built the way the Container builds its client, pointed at a port nothing listens on.
    client = aioredis.from_url(UNREACHABLE_REDIS, socket_timeout=0.5)
    for enabled in (True, False):
        guard = Guard(RateLimiter(limits(), redis=client, enabled=enabled))
        for key in (None, "key-1"):
            with pytest.raises(ServiceUnavailable) as raised:
                await guard.claim("sig", key, TTL)
            assert raised.value.status == 503
            assert raised.value.instance_code == "service_unavailable"
            assert raised.value.headers == {"Retry-After": "1"}
    try:
        # The quotas of a request that claims nothing fail open.
        assert await RateLimiter(limits(), redis=client).hit(merchant_id=1) is None
    finally:
        await client.aclose()


async def test_signed_posts_get_503_when_the_replay_cache_is_unreachable(
    settings: Settings, clock: FrozenClock
) -> None:
    application = create_app(settings.model_copy(update={"redis_url": UNREACHABLE_REDIS}), clock=clock)
    container: Container = application.state.container
    assert "RedisCounters" in repr(container.rate_limiter)
    transport = httpx.ASGITransport(app=application, client=("198.51.100.9", 1234))
    try:
        tenant = await bootstrap_tenant(container, partner="acme", merchant="M-1", store="S-1")
        async with httpx.AsyncClient(transport=transport, base_url="http://paymux.test") as http:
            server = ServerClient(http, tenant.client_id, tenant.client_secret, clock)
            created = await server.post("/v1/payment_intents", intent_body(tenant))
            assert created.status_code == 503, created.text
            assert created.headers["content-type"].startswith("application/problem+json")
            assert created.json()["code"] == "service_unavailable"
            assert created.headers["retry-after"] == "1"

            # Reads need no replay check, and rate limits fail open: the API still answers them.
            listed = await server.get("/v1/payment_intents")
            assert listed.status_code == 200, listed.text
            assert listed.json()["data"] == []
    finally:
        await empty_all_tables(container.db)
        await container.close()


# ---------------------------------------------------------------------------------------------- with rate limits


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def limiter_of(
    request: pytest.FixtureRequest, prefix: str
) -> AsyncIterator[Callable[..., Awaitable[RateLimiter]]]:
    """Builds limiters on this parameter's storage; their counters and claims are removed afterwards."""
    client = aioredis.from_url(REDIS_URL or "") if request.param == "redis" else None
    built: list[RateLimiter] = []

    async def build(**tighter: str) -> RateLimiter:
        limiter = RateLimiter(limits(**tighter), redis=client, replay_prefix=prefix)
        await limiter.reset()
        built.append(limiter)
        return limiter

    try:
        yield build
    finally:
        for limiter in built:
            await limiter.reset()
        if client is not None:
            keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
            if keys:
                await client.delete(*keys)
            await client.aclose()


async def test_a_replay_counts_against_no_limit(limiter_of: Callable[..., Awaitable[RateLimiter]]) -> None:
    limiter = await limiter_of(merchant="5/hour")
    first = await limiter.hit(merchant_id=7, claim=SignatureClaim("sig", None, TTL))
    assert first is not None
    assert (first.limit, first.remaining) == (5, 4)
    for key in (None, "key-1"):
        with pytest.raises(SignatureReplayed):
            await limiter.hit(merchant_id=7, claim=SignatureClaim("sig", key, TTL))
    after = await limiter.hit(merchant_id=7)
    assert after is not None
    assert after.remaining == 3  # the two replays took nothing


async def test_a_refused_request_leaves_its_signature_unused(
    limiter_of: Callable[..., Awaitable[RateLimiter]],
) -> None:
    limiter = await limiter_of(merchant="2/hour")
    await limiter.hit(merchant_id=7)
    await limiter.hit(merchant_id=7)
    with pytest.raises(TooManyRequests):
        await limiter.hit(merchant_id=7, claim=SignatureClaim("sig", None, TTL))
    # The refused request never happened: its signature is still fresh, here for a merchant with quota left.
    await limiter.hit(merchant_id=8, claim=SignatureClaim("sig", None, TTL))
    with pytest.raises(SignatureReplayed):
        await limiter.hit(merchant_id=8, claim=SignatureClaim("sig", None, TTL))


async def test_disabled_limits_still_refuse_replays(
    limiter_of: Callable[..., Awaitable[RateLimiter]],
) -> None:
    limiter = await limiter_of(merchant="1/hour")
    limiter.enabled = False
    for _ in range(3):
        assert await limiter.hit(merchant_id=7) is None
    assert await limiter.hit(merchant_id=7, claim=SignatureClaim("sig", "key-1", TTL)) is None
    assert await limiter.hit(merchant_id=7, claim=SignatureClaim("sig", "key-1", TTL)) is None
    with pytest.raises(SignatureReplayed):
        await limiter.hit(merchant_id=7, claim=SignatureClaim("sig", "key-2", TTL))
