"""Cursor pagination: `limit` (1-100) and `starting_after` (an object id), newest first, `{data, has_more}`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel

from paymux.core.inputs import ID_PATTERN

T = TypeVar("T")

Limit = Annotated[int, Query(ge=1, le=100, description="How many objects to return, 1 to 100.")]
StartingAfter = Annotated[
    str | None,
    Query(
        pattern=ID_PATTERN,
        description="An object id from the previous page; the page starts after it (older objects).",
    ),
]


class Page(BaseModel, Generic[T]):
    data: list[T]
    has_more: bool


def split_page(rows: Sequence[T], limit: int) -> tuple[list[T], bool]:
    """Rows were fetched with `limit + 1`: the extra row only tells whether there is a next page."""
    return list(rows[:limit]), len(rows) > limit
