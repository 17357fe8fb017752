"""The migrations are the schema: they match the models on both databases and run down and up again."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
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


SEED_AT_0002 = [
    "INSERT INTO client_partners (id, name, created_at, updated_at) VALUES (1, 'p', '2026-01-01 00:00:00', '2026-01-01 00:00:00')",
    "INSERT INTO merchants (id, client_partner_id, merchant_code, is_active, created_at, updated_at) "
    "VALUES (1, 1, 'M', true, '2026-01-01 00:00:00', '2026-01-01 00:00:00')",
    "INSERT INTO stores (id, merchant_id, client_partner_id, store_code, is_active, created_at, updated_at) "
    "VALUES (1, 1, 1, 'S', true, '2026-01-01 00:00:00', '2026-01-01 00:00:00')",
    "INSERT INTO store_provider_configs (id, store_id, merchant_id, client_partner_id, provider_code, credentials_sealed, "
    "is_active, created_at, updated_at) VALUES ('pcfg_1', 1, 1, 1, 'test', 'x', true, '2026-01-01 00:00:00', '2026-01-01 00:00:00')",
    "INSERT INTO payment_intents (id, client_partner_id, merchant_id, store_id, merchant_ref_id, amount, currency, "
    "amount_captured, amount_refunded, payment_method_type, processing_mode, status, metadata, created_at, updated_at) "
    "VALUES ('pi_1', 1, 1, 1, 'R', 100, 'JPY', 0, 0, 'credit_card', 'pgw_processed', 'processing', '{}', "
    "'2026-01-01 00:00:00', '2026-01-01 00:00:00')",
    "INSERT INTO transactions (id, payment_intent_id, client_partner_id, merchant_id, store_id, type, status, amount, "
    "currency, created_at, updated_at) VALUES ('txn_1', 'pi_1', 1, 1, 1, 'payment', 'pending', 100, 'JPY', "
    "'2026-01-01 00:00:00', '2026-01-01 00:00:00')",
]


async def test_upgrading_a_database_with_rows_keeps_them(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'rows.db'}"
    await _in_thread(migrations.upgrade, url, "0002")
    db = Database(url)
    try:
        async with db.unit_of_work() as session:
            for statement in SEED_AT_0002:
                await session.execute(text(statement))
        await _in_thread(migrations.upgrade, url)
        async with db.reading() as session:
            options = (await session.execute(text("SELECT options FROM store_provider_configs"))).scalar_one()
            checks = (await session.execute(text("SELECT check_count FROM transactions"))).scalar_one()
        assert (options, checks) == ("{}", 0)
    finally:
        await db.dispose()
