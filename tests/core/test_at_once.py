"""`Database.at_once`: a use case whose whole effect is one statement. On PostgreSQL the statement commits by
itself, with no transaction around it; on SQLite the block is one transaction. Inside an enclosing unit of work
it runs in a savepoint of that one: it shares that one's fate, and a refused statement leaves it usable."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, update

from paymux.container import Container
from paymux.gateway.idempotency import KeyedRequest, StoredResponse
from paymux.gateway.models import IdempotencyRecord

OWNER = "api_client:at-once"


def keyed(key: str) -> KeyedRequest:
    return KeyedRequest(owner=OWNER, key=key, fingerprint="f" * 64, method="POST", path="/v1/things")


async def keys_stored(container: Container) -> int:
    async with container.db.reading() as session:
        statement = (
            select(func.count()).select_from(IdempotencyRecord).where(IdempotencyRecord.owner == OWNER)
        )
        return int((await session.execute(statement)).scalar_one())


@pytest.mark.postgres
async def test_on_postgresql_the_statement_is_its_own_transaction(container: Container) -> None:
    async with container.db.at_once() as connection:
        raw = (await connection.get_raw_connection()).driver_connection
        assert raw is not None
        assert not raw.is_in_transaction()
        await connection.execute(
            update(IdempotencyRecord).where(IdempotencyRecord.owner == "nobody").values(locked_at=None)
        )
        assert not raw.is_in_transaction()


async def test_the_write_is_committed_when_the_block_ends(container: Container) -> None:
    assert await container.idempotency.begin(keyed("k-1")) is None  # a new key: one INSERT, at once
    assert await keys_stored(container) == 1


async def test_inside_an_enclosing_unit_of_work_it_rolls_back_with_it(container: Container) -> None:
    class Abandoned(Exception):
        pass

    async def abandoned_unit() -> None:
        async with container.db.enclosing_unit_of_work() as session:
            async with container.db.at_once() as connection:
                assert connection is await session.connection()
            assert await container.idempotency.begin(keyed("k-2")) is None
            raise Abandoned

    with pytest.raises(Abandoned):
        await abandoned_unit()
    assert await keys_stored(container) == 0


async def test_a_refused_statement_inside_an_enclosing_unit_of_work_leaves_it_usable(
    container: Container,
) -> None:
    async with container.db.enclosing_unit_of_work():
        assert await container.idempotency.begin(keyed("k-3")) is None
        taken = container.idempotency.answered(keyed("k-3"), StoredResponse(201, b"{}"))
        assert await container.db.insert_at_once(taken) is False  # the key's row is there: refused
        assert await container.idempotency.begin(keyed("k-4")) is None  # and the unit goes on
    assert await keys_stored(container) == 2
