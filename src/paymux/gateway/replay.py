"""Remembers HMAC signatures of state-changing requests, so a captured request cannot be sent again.

The Idempotency-Key header is not signed. A signature may therefore come back only as the retry of the same
key (which the idempotency layer answers with the first response); with another key, or none, it is a replay.
Entries live twice the timestamp tolerance, after which the timestamp check refuses the request anyway.

With Redis configured the memory is shared by every process and an unreachable Redis fails closed (503):
a replay cache that forgets is worse than a short outage. Without Redis it lives in this process.
"""

from __future__ import annotations

import time
from typing import Protocol

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from paymux.core.errors import ServiceUnavailable

log = structlog.get_logger(__name__)


class ReplayGuard(Protocol):
    async def claim(self, signature_key: str, idempotency_key: str | None, ttl_seconds: int) -> bool:
        """True when the signature is new, or comes back with the same (non-empty) Idempotency-Key."""
        ...


class MemoryReplayGuard:
    def __init__(self) -> None:
        self._seen: dict[str, tuple[float, str]] = {}
        self._next_purge = 0.0

    async def claim(self, signature_key: str, idempotency_key: str | None, ttl_seconds: int) -> bool:
        now = time.monotonic()
        if now >= self._next_purge:
            self._seen = {key: entry for key, entry in self._seen.items() if entry[0] > now}
            self._next_purge = now + 30
        entry = self._seen.get(signature_key)
        if entry is None or entry[0] <= now:
            self._seen[signature_key] = (now + ttl_seconds, idempotency_key or "")
            return True
        return bool(idempotency_key) and entry[1] == idempotency_key

    def __repr__(self) -> str:
        return f"MemoryReplayGuard(entries={len(self._seen)})"


class RedisReplayGuard:
    def __init__(self, client: aioredis.Redis, prefix: str = "paymux:hmac-sig:") -> None:
        self._redis = client
        self._prefix = prefix

    async def claim(self, signature_key: str, idempotency_key: str | None, ttl_seconds: int) -> bool:
        key = self._prefix + signature_key
        value = idempotency_key or ""
        try:
            if await self._redis.set(key, value, nx=True, ex=ttl_seconds):
                return True
            seen = await self._redis.get(key)
        except RedisError as exc:
            log.error("replay guard unavailable", error=str(exc))
            raise ServiceUnavailable(
                "Request signatures cannot be checked right now; retry shortly.", headers={"Retry-After": "1"}
            ) from exc
        if seen is None:  # expired between SET and GET: treat as new
            return True
        seen_text = seen.decode() if isinstance(seen, bytes) else str(seen)
        return bool(value) and seen_text == value

    def __repr__(self) -> str:
        return f"RedisReplayGuard(prefix={self._prefix!r})"
