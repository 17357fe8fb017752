"""Per-process caches of what nearly every request reads and rarely changes (API clients, whether a store takes
payments, a store's provider configs): an entry lives `ttl` on paymux's clock, so another process's change is
seen within `ttl`, and the least recently used entry makes room when `size` are kept."""

from __future__ import annotations

from collections.abc import Hashable
from datetime import timedelta
from typing import TypeVar

from cachetools import TTLCache

from paymux.core.clock import Clock

DEFAULT_SIZE = 10_000

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def kept_for(ttl: timedelta, clock: Clock, size: int = DEFAULT_SIZE) -> TTLCache[K, V]:
    # The clock is paymux's, not the monotonic one cachetools uses by default, so tests can step past `ttl`.
    return TTLCache(maxsize=size, ttl=ttl.total_seconds(), timer=lambda: clock.now().timestamp())
