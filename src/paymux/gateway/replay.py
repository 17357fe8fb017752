"""Remembers HMAC signatures of state-changing requests, so a captured request cannot be sent again.

The Idempotency-Key header is not signed. A signature may therefore come back only as the retry of the same
key (which the idempotency layer answers with the first response); with another key, or none, it is a replay.
Entries live twice the timestamp tolerance, after which the timestamp check refuses the request anyway.

A request's signature is claimed together with its rate limits (`RateLimiter.hit(claim=...)`): on Redis in the
same script and round trip, and only once every limit has allowed the request, so a refused request neither uses
up its signature nor counts a replay against the merchant's quota. With Redis configured the memory is shared by
every process and an unreachable Redis fails closed (503): a replay cache that forgets is worse than a short
outage. Without Redis it lives in this process (`MemoryReplayGuard`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

# Where Redis keeps a claimed signature; shared by every process and every version of paymux that claims one.
REDIS_PREFIX = "paymux:hmac-sig:"


@dataclass(frozen=True, slots=True)
class SignatureClaim:
    """A state-changing request's signature, to be claimed for `ttl_seconds` under its Idempotency-Key."""

    signature_key: str
    idempotency_key: str | None
    ttl_seconds: int


class MemoryReplayGuard:
    def __init__(self) -> None:
        self._seen: dict[str, tuple[float, str]] = {}
        self._next_purge = 0.0

    async def claim(self, signature_key: str, idempotency_key: str | None, ttl_seconds: int) -> bool:
        """True when the signature is new, or comes back with the same (non-empty) Idempotency-Key."""
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
