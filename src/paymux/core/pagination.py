"""Cursor pagination: `limit` (1-100) and `starting_after` (an object id), newest first, `{data, has_more}`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel
from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

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


async def fetch_page(
    session: AsyncSession,
    statement: Select[T],
    key: InstrumentedAttribute[Any],
    *,
    limit: int,
    starting_after: Any | None,
    newest_first: bool = True,
) -> tuple[list[T], bool]:
    """One page of `statement`'s objects ordered by `key` (an id column), after the cursor `starting_after`."""
    if starting_after is not None:
        statement = statement.where(key < starting_after if newest_first else key > starting_after)
    ordered = statement.order_by(key.desc() if newest_first else key).limit(limit + 1)
    return split_page(list((await session.execute(ordered)).scalars()), limit)
