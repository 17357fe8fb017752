"""Rate limits of seed 004: per merchant, per store, per client IP and global, as sliding window counters.

Signed servers (HMAC) count against their merchant (and store, when the client is store-scoped) and the global
limit; every other caller (payment tokens in browsers and WebViews, unauthenticated requests) also counts
against its IP. On Redis the counters are shared by every process; without Redis they live in this process.
If Redis fails, quotas fail open (with an error in the log), as a payment should not fail for a counter.

A request is counted against all its limits at once, or against none: one that a limit refuses does not use
up the others. The counters are `limits`' sliding window counter (the previous window's count, weighted by how
much of it still overlaps, plus the current one). In process they are `limits`' own; on Redis one script checks
and counts every limit of a request in one round trip, where `limits` takes two per limit.

A signed state-changing request's signature is claimed by the same call (see `paymux.gateway.replay`), after its
limits allow it and before they count it: a replay counts against nothing. Unlike the quotas, the claim fails
closed: when Redis cannot be reached such a request gets 503.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis
import structlog
from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from paymux.auth.errors import SignatureReplayed
from paymux.core.errors import ServiceUnavailable, TooManyRequests
from paymux.gateway.replay import REDIS_PREFIX, MemoryReplayGuard, SignatureClaim

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class LimitState:
    """The most constraining limit a request counted against."""

    limit: int
    remaining: int
    reset_at: float  # Unix time when the window frees up

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(math.ceil(self.reset_at)),
        }


@dataclass(frozen=True, slots=True)
class RateLimits:
    merchant: str
    store: str
    ip: str
    global_: str


@dataclass(frozen=True, slots=True)
class Counted:
    """One limit's answer for one request: whether it allows it, and its window after the request."""

    kind: str
    item: RateLimitItem
    allowed: bool
    state: LimitState


@dataclass(frozen=True, slots=True)
class Tally:
    """What the counters answered for one request: each limit's answer, and whether its signature was fresh
    (always true for a request without a claim, or one that a limit refused before the claim was made)."""

    counted: list[Counted]
    fresh: bool


class Counters(Protocol):
    async def count(
        self, limits: Sequence[tuple[str, str, RateLimitItem]], claim: SignatureClaim | None = None
    ) -> Tally:
        """Check (kind, identifier, item) limits; if all allow the request, claim its signature, and if that is
        fresh, count the request against all of them."""
        ...

    async def reset(self) -> None: ...


class RateLimiter:
    def __init__(
        self,
        limits: RateLimits,
        *,
        redis: aioredis.Redis | None,
        enabled: bool = True,
        replay_prefix: str = REDIS_PREFIX,
    ) -> None:
        self.enabled = enabled
        self._items: dict[str, RateLimitItem] = {
            "merchant": parse(limits.merchant),
            "store": parse(limits.store),
            "ip": parse(limits.ip),
            "global": parse(limits.global_),
        }
        self._counters: Counters = (
            RedisCounters(redis, replay_prefix) if redis is not None else MemoryCounters(MemoryReplayGuard())
        )

    async def hit(
        self,
        *,
        ip: str | None = None,
        merchant_id: int | None = None,
        store_id: int | None = None,
        count_global: bool = True,
        claim: SignatureClaim | None = None,
    ) -> LimitState | None:
        """Count one request against each applicable limit; raises `TooManyRequests` when one is exhausted.

        A request counted in two steps (its IP before its credentials are checked, its merchant after) passes
        `count_global=False` on the second step, so it counts once against the global limit. With `claim`, the
        request's signature is claimed too, even when limits are disabled: `SignatureReplayed` when it was used
        before, `ServiceUnavailable` when that cannot be known.
        """
        keys: list[tuple[str, str]] = []
        if self.enabled:
            keys = [("global", "all")] if count_global else []
            if merchant_id is not None:
                keys.append(("merchant", str(merchant_id)))
            if store_id is not None:
                keys.append(("store", str(store_id)))
            if ip is not None:
                keys.append(("ip", ip))
        if not keys and claim is None:
            return None
        try:
            tally = await self._counters.count(
                [(kind, name, self._items[kind]) for kind, name in keys], claim
            )
        except Exception as exc:
            if claim is not None:
                log.error("replay guard unavailable", error=str(exc))
                raise ServiceUnavailable(
                    "Request signatures cannot be checked right now; retry shortly.",
                    headers={"Retry-After": "1"},
                ) from exc
            log.error("rate limit storage unavailable; allowing the request", error=str(exc))  # fail open
            return None
        refused = next((answer for answer in tally.counted if not answer.allowed), None)
        if refused is not None:
            state = refused.state
            retry_after = max(1, math.ceil(state.reset_at - time.time()))
            raise TooManyRequests(
                f"The {refused.kind} rate limit of {refused.item} is exhausted; retry after {retry_after} s.",
                headers={**state.headers(), "X-RateLimit-Remaining": "0", "Retry-After": str(retry_after)},
                limit=refused.kind,
            )
        if not tally.fresh:
            raise SignatureReplayed(
                "Sign each request anew; only a retry with the same Idempotency-Key may repeat one."
            )
        return min(
            (answer.state for answer in tally.counted), key=lambda state: state.remaining, default=None
        )

    async def reset(self) -> None:
        await self._counters.reset()

    def __repr__(self) -> str:
        return f"RateLimiter(enabled={self.enabled}, counters={type(self._counters).__name__})"


def window_state(
    item: RateLimitItem, previous_count: int, previous_ttl: float, current_count: int, current_ttl: float
) -> LimitState:
    """A window's remaining requests and reset time, computed as `limits` computes its window stats."""
    expiry = item.get_expiry()
    weighted = previous_count * previous_ttl / expiry + current_count
    now = time.time()
    reset_in = math.inf
    if previous_count:
        reset_in = previous_ttl % (expiry / previous_count)
    if current_count:
        # A window counted from this very moment has exactly twice its length to live (Redis freezes the clock
        # in a script): it rolls over in one full window, not at once.
        reset_in = min(reset_in, current_ttl % expiry or expiry)
    return LimitState(
        limit=item.amount,
        remaining=max(0, item.amount - math.floor(weighted)),
        reset_at=now if math.isinf(reset_in) else now + reset_in,
    )


class MemoryCounters:
    """This process's counters: `limits`' sliding window counter in memory, and this process's replay guard."""

    def __init__(self, replay: MemoryReplayGuard) -> None:
        self._storage = MemoryStorage()
        self._limiter = SlidingWindowCounterRateLimiter(self._storage)
        self._replay = replay

    async def count(
        self, limits: Sequence[tuple[str, str, RateLimitItem]], claim: SignatureClaim | None = None
    ) -> Tally:
        allowed = [await self._limiter.test(item, kind, name) for kind, name, item in limits]
        fresh = True
        if all(allowed) and claim is not None:
            fresh = await self._replay.claim(claim.signature_key, claim.idempotency_key, claim.ttl_seconds)
        if all(allowed) and fresh:
            for kind, name, item in limits:
                await self._limiter.hit(item, kind, name)
        answers = []
        for (kind, name, item), fits in zip(limits, allowed, strict=True):
            stats = await self._limiter.get_window_stats(item, kind, name)
            state = LimitState(
                limit=item.amount, remaining=max(stats.remaining, 0), reset_at=stats.reset_time
            )
            answers.append(Counted(kind, item, fits, state))
        return Tally(answers, fresh)

    async def reset(self) -> None:
        await self._storage.reset()


# KEYS: the previous and the current window of each limit, in pairs, then the signature's key when the request
# claims one (an odd number of keys). ARGV: for each limit its amount and its window in seconds, then the claim's
# Idempotency-Key ('' for none) and its TTL in seconds. The windows roll as `limits`' acquire_sliding_window.lua
# rolls them. The signature is claimed only if every limit allows the request, and the request is counted only
# if the signature was fresh. Returns {replayed (0/1), per limit {allowed (0/1), previous count, previous TTL (ms),
# current count, current TTL (ms)}}, the windows as they stand after the request.
_COUNT_SCRIPT = """
local limits = math.floor(#KEYS / 2)
local results = {}
local all_allowed = true
for i = 1, limits do
    local previous_key, current_key = KEYS[2 * i - 1], KEYS[2 * i]
    local limit = tonumber(ARGV[2 * i - 1])
    local expiry = tonumber(ARGV[2 * i]) * 1000
    local current_ttl = tonumber(redis.call('pttl', current_key))
    if current_ttl > 0 and current_ttl < expiry then
        redis.call('rename', current_key, previous_key)
        redis.call('set', current_key, 0, 'PX', current_ttl + expiry)
    end
    local previous_count = tonumber(redis.call('get', previous_key)) or 0
    local previous_ttl = math.max(tonumber(redis.call('pttl', previous_key)) or 0, 0)
    local current_count = tonumber(redis.call('get', current_key)) or 0
    current_ttl = math.max(tonumber(redis.call('pttl', current_key)) or 0, 0)
    local allowed = math.floor(previous_count * previous_ttl / expiry) + current_count + 1 <= limit
    all_allowed = all_allowed and allowed
    results[i] = {allowed and 1 or 0, previous_count, previous_ttl, current_count, current_ttl}
end
local replayed = 0
if all_allowed and #KEYS % 2 == 1 then
    -- A signature is fresh when it is new, or comes back with the (non-empty) Idempotency-Key it was first used
    -- with; a refused one leaves the first use's entry as it was.
    local signature_key, idempotency_key = KEYS[#KEYS], ARGV[2 * limits + 1]
    if not redis.call('set', signature_key, idempotency_key, 'NX', 'EX', tonumber(ARGV[2 * limits + 2])) then
        if idempotency_key == '' or redis.call('get', signature_key) ~= idempotency_key then
            replayed = 1
        end
    end
end
if all_allowed and replayed == 0 then
    for i = 1, limits do
        local current_key = KEYS[2 * i]
        local expiry = tonumber(ARGV[2 * i]) * 1000
        if redis.call('exists', current_key) == 1 then
            results[i][4] = redis.call('incrby', current_key, 1)
        else
            redis.call('set', current_key, 1, 'PX', expiry * 2)
            results[i][4] = 1
            results[i][5] = redis.call('pttl', current_key)
        end
    end
end
return {replayed, results}
"""


class RedisCounters:
    """Counters shared by every process: all of a request's limits checked and counted, and its signature claimed,
    in one round trip."""

    PREFIX = "paymux-limits:"

    def __init__(self, client: aioredis.Redis, replay_prefix: str = REDIS_PREFIX) -> None:
        self._redis = client
        self._script = client.register_script(_COUNT_SCRIPT)
        self._replay_prefix = replay_prefix

    async def count(
        self, limits: Sequence[tuple[str, str, RateLimitItem]], claim: SignatureClaim | None = None
    ) -> Tally:
        keys: list[str] = []
        arguments: list[int | str] = []
        for kind, name, item in limits:
            # One hash tag per limit keeps its two windows on one node of a Redis Cluster.
            window = f"{self.PREFIX}{{{item.key_for(kind, name)}}}"
            keys += [f"{window}:previous", f"{window}:current"]
            arguments += [item.amount, item.get_expiry()]
        if claim is not None:
            keys.append(self._replay_prefix + claim.signature_key)
            arguments += [claim.idempotency_key or "", claim.ttl_seconds]
        replayed, rows = await self._script(keys=keys, args=arguments)
        answers = []
        for (kind, _, item), row in zip(limits, rows, strict=True):
            allowed, previous_count, previous_ttl, current_count, current_ttl = (int(value) for value in row)
            state = window_state(item, previous_count, previous_ttl / 1000, current_count, current_ttl / 1000)
            answers.append(Counted(kind, item, bool(allowed), state))
        return Tally(answers, fresh=not replayed)

    async def reset(self) -> None:
        async for key in self._redis.scan_iter(match=f"{self.PREFIX}*"):
            await self._redis.delete(key)
