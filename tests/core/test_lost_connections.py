"""A pooled PostgreSQL connection that died (a database restart, a failover) costs one request a 503 with
Retry-After, never a 500, and the retry succeeds on a fresh connection: paymux does not ping connections before
each use (a round trip per transaction), so this is how it recovers."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from paymux.container import Container
from paymux.core.db import to_async_url
from tests.conftest import POSTGRES_URL
from tests.support import ServerClient, Tenant, assert_problem

pytestmark = pytest.mark.postgres


async def test_a_dead_pooled_connection_is_a_503_and_the_retry_succeeds(
    server: ServerClient, tenant: Tenant, container: Container
) -> None:
    assert (await server.get("/v1/payment_intents")).status_code == 200  # a connection is now in the pool
    # Kill every connection of the app's pool from outside, as a database restart would.
    assert POSTGRES_URL is not None
    admin = create_async_engine(to_async_url(POSTGRES_URL))
    async with admin.connect() as connection:
        await connection.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    await admin.dispose()

    lost = await server.get("/v1/payment_intents")
    assert_problem(lost, 503, "service_unavailable")
    assert lost.headers["retry-after"] == "1"
    assert (await server.get("/v1/payment_intents")).status_code == 200
