"""Database access: engine from a plain URL, declarative base, and the unit of work.

`PAYMUX_DATABASE_URL` takes plain URLs (`sqlite:///var/paymux.db`, `postgresql://user@host/db`) and paymux picks
the async driver itself. A unit of work is one transaction: a service use case opens it, makes its state change,
history, events and postings, and it commits on leaving the block (or rolls back on an exception).

SQLite is the embedded default for a single process. Its transactions start with BEGIN IMMEDIATE so that two
writers queue on the busy timeout instead of failing when a reader upgrades to a writer.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from sqlalchemy import (
    JSON,
    ColumnDefault,
    DateTime,
    Dialect,
    Insert,
    MetaData,
    Select,
    Table,
    bindparam,
    event,
    insert,
    inspect,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import Insert as PostgresInsert
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import Insert as SQLiteInsert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import StaticPool
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite has no time zones: it stores naive UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("paymux stores only timezone-aware datetimes")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


#: JSON documents: JSONB on PostgreSQL, JSON text elsewhere.
JSONDocument = JSON().with_variant(JSONB(), "postgresql")


async def insert_new(session: AsyncSession, *rows: Base) -> None:
    """Insert new rows, without the ORM's unit of work, in one round trip on PostgreSQL.

    For hot paths that write rows once: the objects stay transient (the session does not track them), so a
    change made to one afterwards is not saved. Attributes never set get their column defaults. On PostgreSQL
    the rows go in one statement (each but the last a data-modifying WITH; foreign keys among them are checked
    at its end), elsewhere one cached statement each, in the order given.
    """
    await _insert_rows(await session.connection(), rows)


async def _insert_rows(connection: AsyncConnection, rows: tuple[Base, ...]) -> None:
    values = [_values_of(row) for row in rows]
    if connection.dialect.name != "postgresql" or len(rows) < 2:
        for row, parameters in zip(rows, values, strict=True):
            await connection.execute(_insert_plan(type(row))[0], parameters)
        return
    await connection.execute(_insert_together(_shape(rows, values)), _numbered(values))


async def insert_if_absent(
    session: AsyncSession, row: Base, *dependents: Base, unique: tuple[str, ...]
) -> bool:
    """Insert a new row like `insert_new`, unless a row with its values in `unique` (the columns of a unique
    constraint) exists: False then, and the transaction stays usable (no IntegrityError to roll back).

    `dependents` (its history, say) go in with it and only with it: on PostgreSQL in the same statement.
    """
    connection = await session.connection()
    dialect = connection.dialect.name
    values = [_values_of(row)]
    if dialect != "postgresql" or not dependents:
        inserted = await connection.execute(_insert_unless_conflict(type(row), unique, dialect), values[0])
        if inserted.first() is None:
            return False
        await insert_new(session, *dependents)
        return True
    values += [_values_of(dependent) for dependent in dependents]
    statement = _insert_with_dependents(_shape((row, *dependents), values), unique)
    inserted = await connection.execute(statement, _numbered(values))
    return inserted.first() is not None


Shape = tuple[tuple[type[Base], tuple[str, ...]], ...]


def _values_of(row: Base) -> dict[str, Any]:
    """The row's column values by column name. An attribute never set takes its column's Python-side default
    here (SQLAlchemy applies none inside a WITH clause), or is left out for the database's default."""
    attributes = row.__dict__
    _, columns = _insert_plan(type(row))
    values = {column: attributes[attribute] for attribute, column in columns if attribute in attributes}
    for column, default in _python_defaults(type(row)):
        if column not in values:
            values[column] = default.arg(None) if default.is_callable else default.arg
    return values


@functools.cache
def _python_defaults(model: type[Base]) -> tuple[tuple[str, ColumnDefault], ...]:
    return tuple(
        (column.key, column.default)
        for column in _table(model).columns
        if isinstance(column.default, ColumnDefault)
        and (column.default.is_scalar or column.default.is_callable)
    )


def _shape(rows: tuple[Base, ...], values: list[dict[str, Any]]) -> Shape:
    return tuple((type(row), tuple(parameters)) for row, parameters in zip(rows, values, strict=True))


def _numbered(values: list[dict[str, Any]]) -> dict[str, Any]:
    """The parameters of a statement of several rows: row i's column c bound as `ri_c`."""
    return {
        f"r{index}_{column}": value
        for index, parameters in enumerate(values)
        for column, value in parameters.items()
    }


def _bound(table: Table, index: int, columns: tuple[str, ...]) -> dict[str, Any]:
    return {column: bindparam(f"r{index}_{column}", type_=table.c[column].type) for column in columns}


def _table(model: type[Base]) -> Table:
    return cast(Table, inspect(model).local_table)


@functools.cache
def _insert_together(shape: Shape) -> Insert:
    """One INSERT per (model, columns) in `shape`, all but the last as WITH clauses of the last."""
    inserts = [
        insert(_table(model)).values(_bound(_table(model), index, columns))
        for index, (model, columns) in enumerate(shape)
    ]
    *earlier, last = inserts
    return last.add_cte(*(statement.cte(f"insert_{index}") for index, statement in enumerate(earlier)))


@functools.cache
def _insert_with_dependents(shape: Shape, unique: tuple[str, ...]) -> Select[Any]:
    """PostgreSQL: the first row inserted unless its `unique` columns are taken, each of the others inserted
    for each row that insert returned (one or none); selects the first row's primary key if it went in."""
    (model, columns), *dependents = shape
    table = _table(model)
    first = (
        postgresql_insert(table)
        .values(_bound(table, 0, columns))
        .on_conflict_do_nothing(index_elements=list(unique))
        .returning(*table.primary_key)
        .cte("inserted")
    )
    inserts = []
    for index, (dependent, dependent_columns) in enumerate(dependents, start=1):
        dependent_table = _table(dependent)
        bound = _bound(dependent_table, index, dependent_columns)
        rows = select(*(value.label(column) for column, value in bound.items())).select_from(first)
        inserts.append(insert(dependent_table).from_select(list(bound), rows).cte(f"insert_{index}"))
    return select(*first.c).add_cte(*inserts)


def conflict_insert(dialect: str) -> Callable[[Any], PostgresInsert | SQLiteInsert]:
    """The INSERT construct that takes ON CONFLICT clauses on `dialect` ("postgresql" or "sqlite")."""
    return postgresql_insert if dialect == "postgresql" else sqlite_insert


@functools.cache
def _insert_unless_conflict(model: type[Base], unique: tuple[str, ...], dialect: str) -> Insert:
    table = _table(model)
    return (
        conflict_insert(dialect)(table)
        .on_conflict_do_nothing(index_elements=list(unique))
        .returning(*table.primary_key)
    )


@functools.cache
def _insert_plan(model: type[Base]) -> tuple[Insert, tuple[tuple[str, str], ...]]:
    columns = tuple((attribute.key, attribute.columns[0].key) for attribute in inspect(model).column_attrs)
    return insert(_table(model)), columns


class DatabaseURLError(ValueError):
    pass


def to_async_url(url: str) -> URL:
    """Map a plain database URL to its async driver: sqlite -> aiosqlite, postgresql -> asyncpg."""
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise DatabaseURLError(f"not a database URL: {url!r}") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite")
    if backend in {"postgresql", "postgres"}:
        query = dict(parsed.query)
        # libpq spells it sslmode; asyncpg takes the same values as ssl.
        if "sslmode" in query:
            query["ssl"] = query.pop("sslmode")
        return parsed.set(drivername="postgresql+asyncpg", query=query)
    raise DatabaseURLError(f"unsupported database {backend!r}: paymux runs on SQLite or PostgreSQL")


def _sqlite_file(url: URL) -> Path | None:
    database = url.database
    if (
        url.get_backend_name() != "sqlite"
        or not database
        or database == ":memory:"
        or database.startswith("file:")
    ):
        return None
    return Path(database)


def ensure_sqlite_directory(url: URL) -> None:
    """SQLite creates the file but not its folder: make the folder of a file database."""
    path = _sqlite_file(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below issue BEGIN instead of the driver's implicit deferred BEGIN.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    """The engine and session factory of one database, and the unit of work over them."""

    def __init__(self, url: str, *, pool_size: int = 20, max_overflow: int = 10, echo: bool = False) -> None:
        self.url = to_async_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {"echo": echo}
        if self.is_sqlite:
            ensure_sqlite_directory(self.url)
            if _sqlite_file(self.url) is None:
                kwargs["poolclass"] = StaticPool
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs.update(pool_size=pool_size, max_overflow=max_overflow, pool_pre_ping=False)
        self.engine = create_async_engine(self.url, **kwargs)
        if self.is_sqlite:
            _configure_sqlite(self.engine)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False, autoflush=True)
        # A statement of its own needs no transaction around it on PostgreSQL (SQLite's keep theirs).
        self._autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self._read_sessions = (
            self.sessions if self.is_sqlite else async_sessionmaker(self._autocommit, expire_on_commit=False)
        )
        self._enclosing: ContextVar[AsyncSession | None] = ContextVar(
            f"enclosing_uow_{id(self)}", default=None
        )

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[AsyncSession]:
        """One transaction: commits when the block ends, rolls back when it raises.

        Inside an `enclosing_unit_of_work` it joins that one instead, and commits or rolls back with it.
        """
        enclosing = self._enclosing.get()
        if enclosing is not None:
            yield enclosing
            return
        async with self.sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def enclosing_unit_of_work(self) -> AsyncIterator[AsyncSession]:
        """A unit of work that the use cases called within it join: one transaction for a whole request.

        The idempotency layer wraps a single-transaction use case in one, so that claiming the key, the use
        case's effect and the stored response commit together. Only for use cases that do all their work in
        one transaction and start no tasks of their own (a task would share the session).
        """
        async with self.sessions() as session, session.begin():
            joined = self._enclosing.set(session)
            try:
                yield session
            finally:
                self._enclosing.reset(joined)

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncSession]:
        """A session for reads; nothing it does is committed.

        On PostgreSQL it opens no transaction: at READ COMMITTED each statement sees what is committed when it
        starts, inside a transaction or not, so BEGIN and ROLLBACK would be two round trips for nothing. SQLite
        reads keep their transaction (there it holds one snapshot).

        Inside an `enclosing_unit_of_work` it reads in that one's transaction (it sees that one's writes, and
        on SQLite a second connection would wait for that one's lock).
        """
        enclosing = self._enclosing.get()
        if enclosing is not None:
            yield enclosing
            return
        async with self._read_sessions() as session:
            yield session

    @asynccontextmanager
    async def at_once(self) -> AsyncIterator[AsyncConnection]:
        """A connection for a use case whose whole effect is one statement: on PostgreSQL that statement is its
        own transaction, with no BEGIN and COMMIT round trips around it; on SQLite the block is one transaction.

        Each statement sent on it commits by itself on PostgreSQL, so a block sends one write. Inside an
        `enclosing_unit_of_work` it runs in a savepoint of that one: it commits or rolls back with it, and a
        statement refused here (say by a unique constraint) leaves that one usable.
        """
        enclosing = self._enclosing.get()
        if enclosing is not None:
            async with enclosing.begin_nested():
                yield await enclosing.connection()
            return
        # A connection, not a session: nothing here needs the ORM's session, and these are hot paths.
        async with self.engine.begin() if self.is_sqlite else self._autocommit.connect() as connection:
            yield connection

    async def insert_at_once(self, *rows: Base) -> bool:
        """Insert new rows (as `insert_new`) in a transaction of their own; False, with nothing written, when a
        constraint refuses any of them.

        On PostgreSQL the rows are one statement, and that statement is the transaction: no BEGIN and COMMIT
        round trips around it. For a use case whose whole effect is new rows, written after its reads.
        """
        try:
            async with self.at_once() as connection:
                await _insert_rows(connection, rows)
        except IntegrityError:
            return False
        return True

    async def dispose(self) -> None:
        await self.engine.dispose()

    def __repr__(self) -> str:
        return f"Database({self.url.render_as_string(hide_password=True)!r})"
