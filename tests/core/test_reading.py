"""`Database.reading` on PostgreSQL opens no transaction (at READ COMMITTED one would add nothing but BEGIN and
ROLLBACK); its autocommit does not follow a connection back into the pool."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from paymux.container import Container

pytestmark = pytest.mark.postgres


async def test_a_read_opens_no_transaction(container: Container) -> None:
    async with container.db.reading() as session:
        first = await session.scalar(text("SELECT now()"))
        await asyncio.sleep(0.01)
        second = await session.scalar(text("SELECT now()"))
    assert first is not None
    assert second is not None
    assert second > first  # each statement is its own transaction


async def test_a_read_inside_an_enclosing_unit_of_work_joins_it(container: Container) -> None:
    async with container.db.enclosing_unit_of_work() as enclosing:
        await enclosing.execute(text("CREATE TEMPORARY TABLE seen_by_the_read (n int) ON COMMIT DROP"))
        async with container.db.reading() as session:
            assert session is enclosing
            assert await session.scalar(text("SELECT count(*) FROM seen_by_the_read")) == 0


async def test_a_unit_of_work_after_a_read_is_a_transaction_again(container: Container) -> None:
    # The connections come from one pool: the autocommit of a read must not stay with a connection.
    for _ in range(3):
        async with container.db.reading() as session:
            await session.scalar(text("SELECT 1"))
    async with container.db.unit_of_work() as session:
        first = await session.scalar(text("SELECT now()"))
        await asyncio.sleep(0.01)
        second = await session.scalar(text("SELECT now()"))
    assert first == second
