"""Rate limits of seed 004: per merchant, per store, per client IP and global, as sliding window counters.

Signed servers (HMAC) count against their merchant (and store, when the client is store-scoped) and the global
limit; every other caller (payment tokens in browsers and WebViews, unauthenticated requests) also counts
against its IP. On Redis the counters are shared by every process; without Redis they live in this process.
If Redis fails, quotas fail open (with an error in the log), as a payment should not fail for a counter.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, cast

import structlog
from limits import RateLimitItem, parse
from limits.aio.storage import Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string
from redis.asyncio import ConnectionPool

from paymux.core.errors import TooManyRequests

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


class RateLimiter:
    def __init__(
        self,
        limits: RateLimits,
        *,
        redis_url: str | None,
        enabled: bool = True,
        connection_pool: ConnectionPool | None = None,
    ) -> None:
        self.enabled = enabled
        self._items: dict[str, RateLimitItem] = {
            "merchant": parse(limits.merchant),
            "store": parse(limits.store),
            "ip": parse(limits.ip),
            "global": parse(limits.global_),
        }
        uri = f"async+{redis_url}" if redis_url else "async+memory://"
        options: dict[str, Any] = (
            {"implementation": "redispy", "key_prefix": "paymux-limits"} if redis_url else {}
        )
        if redis_url and connection_pool is not None:
            # The process's one Redis pool: closing the container closes the limiter's connections too.
            options["connection_pool"] = connection_pool
        self._storage = cast(Storage, storage_from_string(uri, **options))
        self._limiter = SlidingWindowCounterRateLimiter(self._storage)

    async def hit(
        self,
        *,
        ip: str | None = None,
        merchant_id: int | None = None,
        store_id: int | None = None,
        count_global: bool = True,
    ) -> LimitState | None:
        """Count one request against each applicable limit; raises `TooManyRequests` when one is exhausted.

        A request counted in two steps (its IP before its credentials are checked, its merchant after) passes
        `count_global=False` on the second step, so it counts once against the global limit.
        """
        if not self.enabled:
            return None
        keys: list[tuple[str, str]] = [("global", "all")] if count_global else []
        if merchant_id is not None:
            keys.append(("merchant", str(merchant_id)))
        if store_id is not None:
            keys.append(("store", str(store_id)))
        if ip is not None:
            keys.append(("ip", ip))
        tightest: LimitState | None = None
        try:
            for kind, identifier in keys:
                item = self._items[kind]
                allowed = await self._limiter.hit(item, kind, identifier)
                stats = await self._limiter.get_window_stats(item, kind, identifier)
                state = LimitState(
                    limit=item.amount, remaining=max(stats.remaining, 0), reset_at=stats.reset_time
                )
                if not allowed:
                    retry_after = max(1, math.ceil(state.reset_at - time.time()))
                    raise TooManyRequests(
                        f"The {kind} rate limit of {item} is exhausted; retry after {retry_after} s.",
                        headers={
                            **state.headers(),
                            "X-RateLimit-Remaining": "0",
                            "Retry-After": str(retry_after),
                        },
                        limit=kind,
                    )
                if tightest is None or state.remaining < tightest.remaining:
                    tightest = state
        except TooManyRequests:
            raise
        except Exception as exc:  # fail open: the storage broke, not the caller
            log.error("rate limit storage unavailable; allowing the request", error=str(exc))
            return None
        return tightest

    async def reset(self) -> None:
        await self._storage.reset()

    def __repr__(self) -> str:
        return f"RateLimiter(enabled={self.enabled}, storage={type(self._storage).__name__})"
