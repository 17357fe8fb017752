from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy.dialects import postgresql, sqlite

from paymux.core.db import DatabaseURLError, UTCDateTime, to_async_url


@pytest.mark.parametrize(
    ("plain", "driver"),
    [
        ("sqlite:///var/paymux.db", "sqlite+aiosqlite"),
        ("sqlite:////abs/path/paymux.db", "sqlite+aiosqlite"),
        ("postgresql://user@host/db", "postgresql+asyncpg"),
        ("postgres://user:pw@host:5433/db", "postgresql+asyncpg"),
        ("postgresql+asyncpg://user@host/db", "postgresql+asyncpg"),
    ],
)
def test_plain_urls_get_the_async_driver(plain: str, driver: str) -> None:
    assert to_async_url(plain).drivername == driver


def test_libpq_sslmode_becomes_asyncpg_ssl() -> None:
    url = to_async_url("postgresql://u@h/db?sslmode=require")
    assert dict(url.query) == {"ssl": "require"}


@pytest.mark.parametrize("url", ["mysql://u@h/db", "not a url", ""])
def test_other_databases_are_refused(url: str) -> None:
    with pytest.raises(DatabaseURLError):
        to_async_url(url)


def test_utc_datetime_stores_utc_and_reads_back_aware() -> None:
    column = UTCDateTime()
    tokyo = datetime(2026, 1, 28, 20, 0, tzinfo=timezone(timedelta(hours=9)))
    stored = column.process_bind_param(tokyo, sqlite.dialect())
    assert stored == datetime(2026, 1, 28, 11, 0, tzinfo=UTC).replace(tzinfo=None)  # naive UTC on SQLite
    assert column.process_result_value(stored, sqlite.dialect()) == datetime(2026, 1, 28, 11, 0, tzinfo=UTC)
    assert column.process_bind_param(tokyo, postgresql.dialect()) == tokyo.astimezone(UTC)


def test_utc_datetime_refuses_naive_values() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        UTCDateTime().process_bind_param(datetime(2026, 1, 1), sqlite.dialect())  # noqa: DTZ001
