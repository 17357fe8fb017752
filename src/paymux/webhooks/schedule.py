"""When a failed webhook delivery is tried again.

Up to 16 attempts over three days: the first at once, then after these delays (each stretched or shrunk by up
to 20 % at random, so receivers that fail together do not get their retries together):

    5 s, 30 s, 2 min, 5 min, 15 min, 30 min, 1 h, 2 h, 4 h, 6 h, 8 h, 12 h, 12 h, 12 h, 12 h

A receiver's `Retry-After` (seconds) pushes the next attempt later, never earlier, and at most a day. An attempt
that would fall more than three days after the first is not made: the delivery goes to the dead-letter state.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

RETRY_DELAYS: tuple[timedelta, ...] = tuple(
    timedelta(seconds=seconds)
    for seconds in (5, 30, 120, 300, 900, 1800, 3600, 7200, 14400, 21600, 28800, 43200, 43200, 43200, 43200)
)
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1
GIVE_UP_AFTER = timedelta(days=3)
JITTER = 0.2
MAX_RETRY_AFTER = timedelta(days=1)


def next_attempt_at(
    *,
    attempts_made: int,
    first_attempt_at: datetime,
    now: datetime,
    random: Callable[[], float],
    retry_after: timedelta | None = None,
) -> datetime | None:
    """When to try again after `attempts_made` failed attempts, or None when the delivery is dead."""
    if attempts_made >= MAX_ATTEMPTS:
        return None
    base = RETRY_DELAYS[attempts_made - 1]
    delay = base * (1 - JITTER + 2 * JITTER * random())
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
    when = now + delay
    if when - first_attempt_at > GIVE_UP_AFTER:
        return None
    return when
