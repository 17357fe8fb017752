"""Object ids: a short type prefix and a ULID, so ids sort by creation time (`pi_01HXYZ...`)."""

from __future__ import annotations

from ulid import ULID


def new_id(prefix: str) -> str:
    return f"{prefix}_{ULID()}"


def has_prefix(value: str, prefix: str) -> bool:
    """True when `value` looks like an id of this type; a cheap check before a database look-up."""
    return value.startswith(f"{prefix}_") and len(value) == len(prefix) + 27
