"""Test set-up shared by the whole suite.

The suite runs twice in `make test`: on SQLite with in-process limits (the embedded default), and with
PAYMUX_TEST_BACKEND=postgres on the PostgreSQL of PAYMUX_TEST_DATABASE_URL and the Redis of
PAYMUX_TEST_REDIS_URL (production). The schema is built by the real migrations; tables are emptied after
each test.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from paymux import migrations
from paymux.app import create_app
from paymux.config import Settings
from paymux.container import Container
from paymux.core.clock import FrozenClock, SystemClock
from paymux.core.db import Database, to_async_url
from paymux.ledger.verify import verify_ledger
from paymux.models import Base
from tests.support import ServerClient, Tenant, bootstrap_tenant

BACKEND = os.environ.get("PAYMUX_TEST_BACKEND", "sqlite")
POSTGRES_URL = os.environ.get("PAYMUX_TEST_DATABASE_URL")
REDIS_URL = os.environ.get("PAYMUX_TEST_REDIS_URL")
ON_POSTGRES = BACKEND == "postgres"
TEST_MASTER_KEY = base64.b64encode(bytes(range(32))).decode()

# A test that runs `paymux` on a SQLite file of its own does the same in both passes: the SQLite pass runs it.
CLI_ON_SQLITE_ONLY = pytest.mark.skipif(
    ON_POSTGRES, reason="the CLI runs on its own SQLite file: the SQLite pass covers it"
)

if ON_POSTGRES and not POSTGRES_URL:
    raise pytest.UsageError("PAYMUX_TEST_BACKEND=postgres needs PAYMUX_TEST_DATABASE_URL")


def pytest_report_header() -> str:
    if ON_POSTGRES:
        return f"paymux backend: PostgreSQL {POSTGRES_URL}, Redis {REDIS_URL or '(in-process)'}"
    return "paymux backend: SQLite, in-process limits"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    skip_pg = pytest.mark.skip(
        reason="needs PostgreSQL: runs in the PostgreSQL pass of `make test` (set PAYMUX_TEST_DATABASE_URL)"
    )
    skip_redis = pytest.mark.skip(reason="needs Redis: set PAYMUX_TEST_REDIS_URL")
    for item in items:
        if "postgres" in item.keywords and not ON_POSTGRES:
            item.add_marker(skip_pg)
        if "redis" in item.keywords and not REDIS_URL:
            item.add_marker(skip_redis)


async def _reset_postgres(url: str) -> None:
    engine = create_async_engine(to_async_url(url))
    async with engine.begin() as connection:
        await connection.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        await connection.execute(text("CREATE SCHEMA public"))
    await engine.dispose()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A freshly migrated database for this test session."""
    if ON_POSTGRES:
        assert POSTGRES_URL is not None
        asyncio.run(_reset_postgres(POSTGRES_URL))
        url = POSTGRES_URL
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'paymux.db'}"
    migrations.upgrade(url)
    return url


async def empty_all_tables(db: Database) -> None:
    tables = [table.name for table in reversed(Base.metadata.sorted_tables)]
    async with db.unit_of_work() as session:
        if db.is_sqlite:
            for name in tables:
                await session.execute(text(f'DELETE FROM "{name}"'))  # noqa: S608 - table names from metadata
        else:
            await session.execute(text(f"TRUNCATE {', '.join(tables)} CASCADE"))


@pytest.fixture
def clock() -> FrozenClock:
    """A frozen clock started at the real time, so HMAC timestamps and rate-limit windows line up."""
    return FrozenClock(SystemClock().now())


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=REDIS_URL if ON_POSTGRES else None,
        master_key=TEST_MASTER_KEY,  # type: ignore[arg-type]
        master_key_file=tmp_path / "master.key",
        log_level="WARNING",
        webhooks_allow_private=True,  # test receivers listen on loopback
        # Cheap argon2 parameters: the suite signs in hundreds of times; the algorithm and code path are the same.
        password_hash_time_cost=1,
        password_hash_memory_kib=8192,
    )


@pytest.fixture
async def app(settings: Settings, clock: FrozenClock) -> AsyncIterator[FastAPI]:
    application = create_app(settings, clock=clock)
    container: Container = application.state.container
    if container.redis is not None:
        await container.redis.flushdb()
    try:
        yield application
    finally:
        report = await verify_ledger(container.db)
        await empty_all_tables(container.db)
        if container.redis is not None:
            await container.redis.flushdb()
        await container.close()
        assert report.ok, f"the test left the ledger inconsistent: {report.violations}"


@pytest.fixture
def container(app: FastAPI) -> Container:
    result: Container = app.state.container
    return result


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://paymux.test") as client:
        yield client


@pytest.fixture
async def tenant(container: Container) -> Tenant:
    """Partner 'acme' with merchant M-1 and store S-1, a test provider config and a merchant-scoped client."""
    return await bootstrap_tenant(container, partner="acme", merchant="M-1", store="S-1")


@pytest.fixture
async def other_tenant(container: Container) -> Tenant:
    """A second, unrelated partner and merchant, for isolation tests."""
    return await bootstrap_tenant(container, partner="globex", merchant="G-1", store="GS-1")


@pytest.fixture
def server(http: httpx.AsyncClient, tenant: Tenant, clock: FrozenClock) -> ServerClient:
    """The merchant's server, signing with HMAC."""
    return ServerClient(http, tenant.client_id, tenant.client_secret, clock)


@pytest.fixture
def other_server(http: httpx.AsyncClient, other_tenant: Tenant, clock: FrozenClock) -> ServerClient:
    return ServerClient(http, other_tenant.client_id, other_tenant.client_secret, clock)
