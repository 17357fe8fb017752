"""`Database.reading`: a snapshot read holds one transaction; a single-statement read on PostgreSQL opens none."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from paymux.container import Container

pytestmark = pytest.mark.postgres


async def test_a_snapshot_read_is_one_transaction(container: Container) -> None:
    async with container.db.reading() as session:
        first = await session.scalar(text("SELECT now()"))
        await asyncio.sleep(0.01)
        second = await session.scalar(text("SELECT now()"))
    assert first == second  # now() is the transaction's start


async def test_a_single_statement_read_opens_no_transaction(container: Container) -> None:
    async with container.db.reading(snapshot=False) as session:
        first = await session.scalar(text("SELECT now()"))
        await asyncio.sleep(0.01)
        second = await session.scalar(text("SELECT now()"))
    assert first is not None
    assert second is not None
    assert second > first  # each statement is its own transaction


async def test_a_unit_of_work_after_a_single_statement_read_is_a_transaction_again(
    container: Container,
) -> None:
    # The connections come from one pool: the autocommit of a single read must not stay with a connection.
    for _ in range(3):
        async with container.db.reading(snapshot=False) as session:
            await session.scalar(text("SELECT 1"))
    async with container.db.unit_of_work() as session:
        first = await session.scalar(text("SELECT now()"))
        await asyncio.sleep(0.01)
        second = await session.scalar(text("SELECT now()"))
    assert first == second
