"""The per-process caches: entries live their TTL on paymux's clock, and a read that raced a forget is not kept."""

from __future__ import annotations

from datetime import timedelta

from paymux.core.clock import FrozenClock
from paymux.core.kept import Kept


def test_an_entry_lives_its_ttl_on_paymuxs_clock() -> None:
    clock = FrozenClock()
    kept: Kept[str, int] = Kept(timedelta(seconds=5), clock)
    kept.keep("a", 1, read_at=kept.generation)
    clock.advance(timedelta(seconds=4.9))
    assert kept.get("a") == 1
    clock.advance(timedelta(seconds=0.2))
    assert kept.get("a") is None


def test_a_value_read_before_a_forget_is_not_kept() -> None:
    kept: Kept[str, str] = Kept(timedelta(seconds=5), FrozenClock())
    read_at = kept.generation  # a reader starts reading the old state
    kept.forget("a")  # meanwhile a change commits and forgets it
    kept.keep("a", "old", read_at=read_at)
    assert kept.get("a") is None
    kept.keep("a", "new", read_at=kept.generation)
    assert kept.get("a") == "new"


def test_forget_all_drops_every_entry_and_any_read_in_flight() -> None:
    kept: Kept[int, str] = Kept(timedelta(seconds=5), FrozenClock())
    kept.keep(1, "one", read_at=kept.generation)
    read_at = kept.generation
    kept.forget_all()
    kept.keep(2, "two", read_at=read_at)
    assert (kept.get(1), kept.get(2)) == (None, None)


def test_the_least_recently_used_entry_makes_room() -> None:
    kept: Kept[int, int] = Kept(timedelta(seconds=5), FrozenClock(), size=2)
    for key in (1, 2):
        kept.keep(key, key, read_at=kept.generation)
    assert kept.get(1) == 1  # 2 is now the least recently used
    kept.keep(3, 3, read_at=kept.generation)
    assert (kept.get(1), kept.get(2), kept.get(3)) == (1, None, 3)
