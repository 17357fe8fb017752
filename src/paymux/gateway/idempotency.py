"""Idempotency-Key on every POST: the same key and request give the first response again, never a second effect.

Keys belong to their caller (an API client, or the one intent of a payment token) and live 24 hours. The key is
claimed in its own short transaction before the use case runs, so concurrent duplicates meet on the primary
key: one runs, the others get `409 idempotency_request_in_progress` (or the replay, once the first finished).
Results are saved when the use case ran: its success or its 4xx problem. Requests that fail validation save
nothing, and a 5xx releases the key, so both are safe to retry. A key whose request never finished (the process
died) can be taken over by a retry after `idempotency_lock_seconds`; the use cases are guarded by the state
machine and unique constraints, so a takeover cannot repeat an effect.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from fastapi import Request, Response
from pydantic import BaseModel
from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from paymux.core.clock import Clock
from paymux.core.crypto import EnvelopeCipher
from paymux.core.db import Database
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
        self._db = db
        self._clock = clock
        self._cipher = cipher
        self._ttl = ttl
        self._lock_timeout = lock_timeout

    async def begin(
        self, owner: str, key: str, request_fingerprint: str, method: str, path: str
    ) -> StoredResponse | None:
        """Claim the key for this request, or return the response it already has."""
        now = self._clock.now()
        values = {
            "owner": owner,
            "key": key,
            "fingerprint": request_fingerprint,
            "method": method,
            "path": path[:2048],
            "locked_at": now,
            "created_at": now,
            "expires_at": now + self._ttl,
        }
        insert = pg_insert if not self._db.is_sqlite else sqlite_insert
        statement = (
            insert(IdempotencyRecord)
            .values(**values)
            .on_conflict_do_nothing()
            .returning(IdempotencyRecord.key)
        )
        async with self._db.unit_of_work() as session:
            if (await session.execute(statement)).scalar_one_or_none() is not None:
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
                return None
            if record.fingerprint != request_fingerprint:
                raise IdempotencyKeyReused(
                    f"The Idempotency-Key {key!r} was first used with {record.method} {record.path} and another body."
                )
            if record.response_status is not None and record.response_body is not None:
                body = self._cipher.open(record.response_body, context=self._context(owner, key))
                return StoredResponse(record.response_status, body)
            if record.locked_at is not None and now - record.locked_at < self._lock_timeout:
                raise IdempotencyInProgress("Retry once the first request with this key has finished.")
            record.locked_at = now  # the first attempt died without an answer: this retry takes it over
            return None

    async def complete(self, owner: str, key: str, response: StoredResponse) -> None:
        sealed = self._cipher.seal(response.body, context=self._context(owner, key))
        async with self._db.unit_of_work() as session:
            # One statement: this is on the path of every POST that carries a key.
            await session.execute(
                update(IdempotencyRecord)
                .where(IdempotencyRecord.owner == owner, IdempotencyRecord.key == key)
                .values(response_status=response.status, response_body=sealed, locked_at=None)
                .execution_options(synchronize_session=False)
            )

    @staticmethod
    def _context(owner: str, key: str) -> str:
        return f"idempotency:{owner}:{key}"

    async def release(self, owner: str, key: str) -> None:
        async with self._db.unit_of_work() as session:
            await session.execute(
                delete(IdempotencyRecord).where(
                    IdempotencyRecord.owner == owner,
                    IdempotencyRecord.key == key,
                    IdempotencyRecord.response_status.is_(None),
                )
            )

    async def purge_expired(self) -> int:
        async with self._db.unit_of_work() as session:
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

    async def run(self, action: Callable[[], Awaitable[BaseModel]], *, status_code: int = 200) -> Response:
        key = self._request.headers.get(HEADER)
        if key is None:
            return Response(
                _json_bytes(await action()), status_code=status_code, media_type="application/json"
            )
        if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable() or not key.isascii():
            raise InvalidIdempotencyKey(f"An {HEADER} is 1 to {MAX_KEY_LENGTH} printable ASCII characters.")
        principal: Principal = self._request.state.principal
        owner = principal.idempotency_owner
        body = await self._request.body()
        path = request_path(self._request)
        stored = await self._store.begin(
            owner, key, fingerprint(self._request.method, path, body), self._request.method, path
        )
        if stored is not None:
            media_type = PROBLEM_MEDIA_TYPE if stored.status >= 400 else "application/json"
            return Response(
                stored.body, status_code=stored.status, media_type=media_type, headers={REPLAY_HEADER: "true"}
            )
        try:
            result = await action()
        except PaymuxError as exc:
            if exc.status >= 500:
                await self._store.release(owner, key)
                raise
            # The same bytes the error handler sends, so a replay is identical to the first answer.
            problem = json.dumps(
                exc.to_problem(request_id_of(self._request)), separators=(",", ":"), ensure_ascii=False
            ).encode("utf-8")
            await self._store.complete(owner, key, StoredResponse(exc.status, problem))
            raise
        except BaseException:
            await self._store.release(owner, key)
            raise
        payload = _json_bytes(result)
        await self._store.complete(owner, key, StoredResponse(status_code, payload))
        return Response(payload, status_code=status_code, media_type="application/json")
