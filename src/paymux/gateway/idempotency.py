"""Idempotency-Key on every POST: the same key and request give the first response again, never a second effect.

Keys belong to their caller (an API client, or the one intent of a payment token) and live 24 hours. Results are
saved when the use case ran: its success or its 4xx problem. Requests that fail validation save nothing, and a
5xx leaves the key free, so both are safe to retry.

A use case that does all its work in one transaction (create a PaymentIntent) runs `atomic`:
the claim of the key, the effect and the stored response are that one transaction. A concurrent duplicate waits
on the key's primary key until the first commits, then gets its replay; a process that dies mid-request leaves
nothing behind. Whose whole effect is new rows it can also run `drafted`: built first, without writing, then
its rows and the key with its stored answer inserted at once (one statement on PostgreSQL, which is then its own
transaction: no BEGIN, claim, stored-answer UPDATE or COMMIT around it). If a unique constraint refuses them
(the key is taken, or a value the use case needs free), nothing was written and the atomic run follows: it
replays, or says what was taken.

A use case that calls a provider commits its attempt before the call, so its key is claimed in a short
transaction of its own: concurrent duplicates meet on the primary key, one runs and the others get
`409 idempotency_request_in_progress` (or the replay, once the first finished). A key whose request never
finished (the process died) can be taken over by a retry after `idempotency_lock_seconds`; those use cases are
guarded by the state machine and unique constraints, so a takeover cannot repeat an effect.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from fastapi import Request, Response
from pydantic import BaseModel
from sqlalchemy import Table, bindparam, delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from paymux.core.clock import Clock
from paymux.core.crypto import EnvelopeCipher
from paymux.core.db import Base, Database, conflict_insert
from paymux.core.errors import (
    PROBLEM_MEDIA_TYPE,
    BadRequest,
    Conflict,
    PaymuxError,
    Unprocessable,
    request_id_of,
)
from paymux.gateway.models import IdempotencyRecord
from paymux.gateway.principal import Principal

HEADER = "Idempotency-Key"
REPLAY_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255


class IdempotencyKeyReused(Unprocessable):
    code = "idempotency_key_reused"
    title = "Idempotency-Key reused with a different request"


class IdempotencyInProgress(Conflict):
    code = "idempotency_request_in_progress"
    title = "A request with this Idempotency-Key is still in progress"


class InvalidIdempotencyKey(BadRequest):
    code = "invalid_idempotency_key"
    title = "Invalid Idempotency-Key"


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status: int
    body: bytes


_TABLE = cast(Table, IdempotencyRecord.__table__)
_SAVE = (
    update(_TABLE)
    .where(_TABLE.c.owner == bindparam("owner_"), _TABLE.c.key == bindparam("key_"))
    .values(
        response_status=bindparam("response_status"), response_body=bindparam("response_body"), locked_at=None
    )
)


def fingerprint(method: str, path: str, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


class IdempotencyStore:
    """Keys and their responses. Responses are sealed at rest: a create's answer holds a live payment token."""

    def __init__(
        self, db: Database, clock: Clock, cipher: EnvelopeCipher, *, ttl: timedelta, lock_timeout: timedelta
    ) -> None:
        self.database = db
        self._clock = clock
        self._cipher = cipher
        self._ttl = ttl
        self._lock_timeout = lock_timeout
        # Built once: the claim and the save are on the path of every POST that carries a key.
        self._insert = (
            conflict_insert(db.engine.dialect.name)(_TABLE).on_conflict_do_nothing().returning(_TABLE.c.key)
        )

    async def begin(self, request: KeyedRequest) -> StoredResponse | None:
        """Claim the key for this request in a transaction of its own, or return the response it already has.

        A new key, the usual case, is one INSERT that commits by itself; only a key seen before takes the
        transaction that locks its row and decides (replay, conflict, in progress, or take over)."""
        async with self.database.at_once() as connection:
            if (await connection.execute(self._insert, self._claim_values(request))).scalar_one_or_none():
                return None
        async with self.database.unit_of_work() as session:
            return await self.claim(session, request)

    async def claim(self, session: AsyncSession, request: KeyedRequest) -> StoredResponse | None:
        """Claim the key within the caller's transaction, or return the response it already has."""
        now = self._clock.now()
        owner, key = request.owner, request.key
        values = self._claim_values(request)
        connection = await session.connection()
        if (await connection.execute(self._insert, values)).scalar_one_or_none() is not None:
            return None
        record = (
            await session.execute(
                select(IdempotencyRecord)
                .where(IdempotencyRecord.owner == owner, IdempotencyRecord.key == key)
                .with_for_update()
            )
        ).scalar_one()
        if record.expires_at <= now:
            for name, value in values.items():
                setattr(record, name, value)
            record.response_status = None
            record.response_body = None
            await session.flush()  # now: the response is saved with a Core statement, which does not flush
            return None
        if record.fingerprint != request.fingerprint:
            raise IdempotencyKeyReused(
                f"The Idempotency-Key {key!r} was first used with {record.method} {record.path} and another body."
            )
        if record.response_status is not None and record.response_body is not None:
            body = self._cipher.open(record.response_body, context=self._context(owner, key))
            return StoredResponse(record.response_status, body)
        if record.locked_at is not None and now - record.locked_at < self._lock_timeout:
            raise IdempotencyInProgress("Retry once the first request with this key has finished.")
        record.locked_at = now  # the first attempt died without an answer: this retry takes it over
        await session.flush()
        return None

    async def complete(self, owner: str, key: str, response: StoredResponse) -> None:
        """Store the response of a claimed key: one UPDATE, committed by itself."""
        async with self.database.at_once() as connection:
            await self._save(connection, owner, key, response)

    async def save(self, session: AsyncSession, owner: str, key: str, response: StoredResponse) -> None:
        """Store the response of a claimed key, in the caller's transaction."""
        await self._save(await session.connection(), owner, key, response)

    async def _save(
        self, connection: AsyncConnection, owner: str, key: str, response: StoredResponse
    ) -> None:
        sealed = self._cipher.seal(response.body, context=self._context(owner, key))
        await connection.execute(
            _SAVE, {"owner_": owner, "key_": key, "response_status": response.status, "response_body": sealed}
        )

    async def record_outcome(self, request: KeyedRequest, response: StoredResponse) -> None:
        """Store the answer of an atomic request whose transaction rolled back (a 4xx), unless the key was taken
        meanwhile: a duplicate that waited on it ran after the rollback, and its answer is the one kept."""
        async with self.database.at_once() as connection:
            await connection.execute(self._insert, self._answered_values(request, response))

    def answered(self, request: KeyedRequest, response: StoredResponse) -> IdempotencyRecord:
        """A new key with its answer already stored, for a use case that writes its rows and the key together."""
        return IdempotencyRecord(**self._answered_values(request, response))

    def _answered_values(self, request: KeyedRequest, response: StoredResponse) -> dict[str, Any]:
        return {
            **self._claim_values(request),
            "locked_at": None,
            "response_status": response.status,
            "response_body": self._cipher.seal(
                response.body, context=self._context(request.owner, request.key)
            ),
        }

    def _claim_values(self, request: KeyedRequest) -> dict[str, Any]:
        now = self._clock.now()
        return {
            "owner": request.owner,
            "key": request.key,
            "fingerprint": request.fingerprint,
            "method": request.method,
            "path": request.path[:2048],
            "locked_at": now,
            "created_at": now,
            "expires_at": now + self._ttl,
        }

    @staticmethod
    def _context(owner: str, key: str) -> str:
        return f"idempotency:{owner}:{key}"

    async def release(self, owner: str, key: str) -> None:
        async with self.database.at_once() as connection:
            await connection.execute(
                delete(_TABLE).where(
                    _TABLE.c.owner == owner, _TABLE.c.key == key, _TABLE.c.response_status.is_(None)
                )
            )

    async def purge_expired(self) -> int:
        async with self.database.unit_of_work() as session:
            result = await session.execute(
                delete(IdempotencyRecord).where(IdempotencyRecord.expires_at <= self._clock.now())
            )
            return int(getattr(result, "rowcount", 0) or 0)


def request_path(request: Request) -> str:
    """The path and query string exactly as the client sent them."""
    raw = request.scope.get("raw_path") or request.scope["path"].encode()
    path = raw.split(b"?", 1)[0].decode("latin-1")
    query = request.scope.get("query_string", b"")
    return f"{path}?{query.decode('latin-1')}" if query else path


def _json_bytes(model: BaseModel) -> bytes:
    return model.model_dump_json().encode("utf-8")


class IdempotentCall:
    """Runs one POST use case under the caller's Idempotency-Key, if it sent one."""

    def __init__(self, request: Request, store: IdempotencyStore) -> None:
        self._request = request
        self._store = store

    async def run(
        self,
        action: Callable[[], Awaitable[BaseModel]],
        *,
        status_code: int = 200,
        atomic: bool = False,
        drafted: Callable[[], Awaitable[Drafted]] | None = None,
    ) -> Response:
        """Run `action` under the request's key. `atomic`: the action does all its work in one unit of work,
        which the claim and the stored response join. `drafted`: the use case built but not written, whose rows
        and stored response then go in at once (see the module's docstring)."""
        request = await self._keyed_request()
        if drafted is not None:
            response = await self._run_drafted(request, drafted, status_code)
            if response is not None:
                return response
        if request is None:
            return _json_response(_json_bytes(await action()), status_code)
        if atomic:
            return await self._run_atomic(request, action, status_code)
        return await self._run_claimed(request, action, status_code)

    async def _keyed_request(self) -> KeyedRequest | None:
        key = self._request.headers.get(HEADER)
        if key is None:
            return None
        if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable() or not key.isascii():
            raise InvalidIdempotencyKey(f"An {HEADER} is 1 to {MAX_KEY_LENGTH} printable ASCII characters.")
        principal: Principal = self._request.state.principal
        path = request_path(self._request)
        return KeyedRequest(
            principal.idempotency_owner,
            key,
            fingerprint(self._request.method, path, await self._request.body()),
            self._request.method,
            path,
        )

    async def _run_drafted(
        self, request: KeyedRequest | None, drafted: Callable[[], Awaitable[Drafted]], status_code: int
    ) -> Response | None:
        """The new rows and the key's stored answer in one insert; None when that did not happen (the use case
        refused, or a unique constraint refused the rows: the key is taken, or a value the use case needs free),
        and the caller runs the use case the ordinary way, which replays or says why."""
        try:
            draft = await drafted()
        except PaymuxError as exc:
            if exc.status >= 500:
                raise
            return None  # its refusal is answered, and stored under the key, by the ordinary run
        payload = _json_bytes(draft.answer)
        rows = list(draft.rows)
        if request is not None:
            rows.append(self._store.answered(request, StoredResponse(status_code, payload)))
        if not await self._store.database.insert_at_once(*rows):
            return None
        return _json_response(payload, status_code)

    async def _run_atomic(
        self, request: KeyedRequest, action: Callable[[], Awaitable[BaseModel]], status_code: int
    ) -> Response:
        store = self._store
        try:
            async with store.database.enclosing_unit_of_work() as session:
                stored = await store.claim(session, request)
                if stored is not None:
                    return _replay(stored)
                payload = _json_bytes(await action())
                await store.save(session, request.owner, request.key, StoredResponse(status_code, payload))
        except PaymuxError as exc:
            if exc.status >= 500 or isinstance(exc, _KEY_ERRORS):
                raise
            # The effect rolled back with the claim; the answer is stored on its own.
            await store.record_outcome(request, StoredResponse(exc.status, self._problem(exc)))
            raise
        return _json_response(payload, status_code)

    async def _run_claimed(
        self, request: KeyedRequest, action: Callable[[], Awaitable[BaseModel]], status_code: int
    ) -> Response:
        store = self._store
        stored = await store.begin(request)
        if stored is not None:
            return _replay(stored)
        try:
            result = await action()
        except PaymuxError as exc:
            if exc.status >= 500:
                await store.release(request.owner, request.key)
                raise
            await store.complete(request.owner, request.key, StoredResponse(exc.status, self._problem(exc)))
            raise
        except BaseException:
            await store.release(request.owner, request.key)
            raise
        payload = _json_bytes(result)
        await store.complete(request.owner, request.key, StoredResponse(status_code, payload))
        return _json_response(payload, status_code)

    def _problem(self, exc: PaymuxError) -> bytes:
        # The same bytes the error handler sends, so a replay is identical to the first answer.
        return json.dumps(
            exc.to_problem(request_id_of(self._request)), separators=(",", ":"), ensure_ascii=False
        ).encode("utf-8")


@dataclass(frozen=True, slots=True)
class Drafted:
    """A use case checked and built, not yet written: its answer, and the new rows that are its whole effect."""

    answer: BaseModel
    rows: Sequence[Base]


@dataclass(frozen=True, slots=True)
class KeyedRequest:
    """A request under an Idempotency-Key: whose key, and what the request was (its fingerprint covers the
    body)."""

    owner: str
    key: str
    fingerprint: str
    method: str
    path: str


# Answers about the key itself, not the use case: never stored.
_KEY_ERRORS = (IdempotencyKeyReused, IdempotencyInProgress)


def _json_response(payload: bytes, status_code: int) -> Response:
    return Response(payload, status_code=status_code, media_type="application/json")


def _replay(stored: StoredResponse) -> Response:
    media_type = PROBLEM_MEDIA_TYPE if stored.status >= 400 else "application/json"
    return Response(
        stored.body, status_code=stored.status, media_type=media_type, headers={REPLAY_HEADER: "true"}
    )
