"""The benchmarks' PostgreSQL database: created on first use, so a fresh machine needs no setup step."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from paymux.core.db import to_async_url


async def ensure_database(url: str) -> None:
    """Create the database `url` names when it is missing (connecting to the server's `postgres` database)."""
    target = to_async_url(url)
    admin = create_async_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            exists = await connection.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": target.database}
            )
            if not exists:
                await connection.execute(text(f'CREATE DATABASE "{target.database}"'))
    finally:
        await admin.dispose()
