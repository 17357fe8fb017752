"""Per-process caches of what nearly every request reads and rarely changes (API clients, whether a store takes
payments, a store's provider configs): an entry lives `ttl` on paymux's clock, so another process's change is
seen within `ttl`, and the least recently used entry makes room when `size` are kept.

A change made through this process is seen at once: its use case forgets the entries after it commits. A reader
that read the old state before that commit must not put it back afterwards, so a reader takes `generation`
before it reads, and `keep` drops what was read before the last forget.
"""

from __future__ import annotations

from collections.abc import Hashable
from datetime import timedelta
from typing import Generic, TypeVar

from cachetools import TTLCache

from paymux.core.clock import Clock

DEFAULT_SIZE = 10_000

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Kept(Generic[K, V]):
    def __init__(self, ttl: timedelta, clock: Clock, size: int = DEFAULT_SIZE) -> None:
        # The clock is paymux's, not the monotonic one cachetools uses by default, so tests can step past `ttl`.
        self._entries: TTLCache[K, V] = TTLCache(
            maxsize=size, ttl=ttl.total_seconds(), timer=lambda: clock.now().timestamp()
        )
        self._generation = 0

    @property
    def generation(self) -> int:
        """Take it before reading what will be kept, and pass it to `keep`."""
        return self._generation

    def get(self, key: K) -> V | None:
        return self._entries.get(key)

    def keep(self, key: K, value: V, *, read_at: int) -> None:
        """Keep a value read at generation `read_at`, unless something was forgotten since."""
        if read_at == self._generation:
            self._entries[key] = value

    def forget(self, key: K) -> None:
        self._entries.pop(key, None)
        self._generation += 1

    def forget_all(self) -> None:
        self._entries.clear()
        self._generation += 1
