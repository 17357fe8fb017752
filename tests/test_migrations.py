"""The migrations are the schema: they match the models on both databases and run down and up again."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from paymux import migrations
from paymux.core.db import Database
from paymux.models import Base


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True, "render_as_batch": True})
    return list(compare_metadata(context, Base.metadata))


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def test_the_migrated_schema_matches_the_models(database_url: str) -> None:
    db = Database(database_url)
    try:
        async with db.engine.connect() as connection:
            assert await connection.run_sync(_differences) == []
    finally:
        await db.dispose()


async def test_downgrade_to_nothing_and_upgrade_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cycle.db'}"
    await _in_thread(migrations.upgrade, url)
    await _in_thread(migrations.downgrade, url, "base")
    db = Database(url)
    try:
        async with db.engine.connect() as connection:
            assert await connection.run_sync(_tables) == {"alembic_version"}
        await _in_thread(migrations.upgrade, url)
        async with db.engine.connect() as connection:
            assert {table.name for table in Base.metadata.sorted_tables} <= await connection.run_sync(_tables)
    finally:
        await db.dispose()


async def _in_thread(function: Any, *args: Any) -> None:
    # Alembic runs its own event loop; keep it off the test's.
    await asyncio.to_thread(function, *args)
