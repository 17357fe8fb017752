"""Reconciliation use cases: import a file, match it, report, and resolve what did not match.

An import reads the file twice, streaming both times so memory stays bounded whatever its size: first to hash it
(the same file again is the same run) and check every line (a bad line refuses the whole file before anything is
written), then to match it in batches, each batch one unit of work. Matching asks the payments service for the
provider's succeeded payments and refunds: by the provider's transaction id first, then by paymux's own id within
a date window. A transaction is claimed by the first line that matches it (across all runs): a second claim is a
duplicate. Finally the provider's transactions settled within the file's days that no file has accounted for are
reported missing from the file.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO

import structlog
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from paymux.audit.service import AuditAction, AuditLog, AuditObject
from paymux.core.clock import Clock
from paymux.core.db import Database, conflict_insert
from paymux.core.errors import Conflict, Forbidden, NotFound, Unprocessable
from paymux.core.ids import new_id
from paymux.core.pagination import fetch_page
from paymux.gateway.permissions import Operation, require
from paymux.gateway.principal import Principal
from paymux.payments.service import PaymentService, SettledTransaction, TenantScope
from paymux.providers.registry import ProviderRegistry
from paymux.providers.settlement import LAYOUTS, SettlementCapable, SettlementFileError, SettlementLine
from paymux.reconciliation.camt import read_camt053
from paymux.reconciliation.models import (
    ReconciliationException,
    ReconciliationMatch,
    ReconciliationRun,
    ScheduledReconciliation,
)
from paymux.tenants.service import TenantService

log = structlog.get_logger(__name__)

Progress = Callable[[str, int, int], None]  # (phase, bytes done, bytes in all)


DAILY_OPTION = "settlement_files"  # a provider config option: "daily" turns the daily run on for that store
DAILY_ATTEMPTS = 5
DAILY_RETRY_AFTER = timedelta(hours=1)


class RunStatus(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


class FileFormat(StrEnum):
    CSV = "csv"
    CAMT053 = "camt053"


class ExceptionKind(StrEnum):
    MISSING_IN_PAYMUX = "missing_in_paymux"
    MISSING_IN_FILE = "missing_in_file"
    AMOUNT_MISMATCH = "amount_mismatch"
    CURRENCY_MISMATCH = "currency_mismatch"
    DUPLICATE = "duplicate"


class ExceptionStatus(StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"


class InvalidSettlementFile(Unprocessable):
    code = "invalid_settlement_file"
    title = "The file cannot be read as a settlement file or bank statement"


class UnknownSettlementProvider(Unprocessable):
    code = "unknown_settlement_provider"
    title = "No settlement file layout for this provider"


class RunNotFound(NotFound):
    code = "reconciliation_run_not_found"
    title = "No such reconciliation run"


class ReconciliationExceptionNotFound(NotFound):
    code = "reconciliation_exception_not_found"
    title = "No such reconciliation exception"


class ExceptionAlreadyResolved(Conflict):
    code = "reconciliation_exception_resolved"
    title = "The exception is already resolved"


class ReconciliationNeedsMerchant(Forbidden):
    code = "reconciliation_needs_merchant_scope"
    title = "Reconciliation runs belong to a merchant or partner"


@dataclass(frozen=True, slots=True)
class ImportRequest:
    path: Path
    provider: str
    scope: TenantScope
    source: str  # cli, api, schedule
    created_by: str
    file_name: str | None = None


@dataclass(frozen=True, slots=True)
class ImportResult:
    run: ReconciliationRun
    replayed: bool  # the same file was imported before: nothing changed


@dataclass(frozen=True, slots=True)
class _FileFacts:
    sha256: str
    size: int
    format: FileFormat
    lines: int
    first_day: date | None
    last_day: date | None


def scope_key(scope: TenantScope) -> str:
    if scope.merchant_id is not None:
        return f"m{scope.merchant_id}"
    if scope.client_partner_id is not None:
        return f"p{scope.client_partner_id}"
    return "all"


def principal_scope(principal: Principal) -> TenantScope:
    if principal.store_id is not None:
        raise ReconciliationNeedsMerchant(
            "Reconciliation belongs to a merchant; call with a merchant client."
        )
    return TenantScope(client_partner_id=principal.client_partner_id, merchant_id=principal.merchant_id)


class ReconciliationService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        payments: PaymentService,
        audit: AuditLog,
        *,
        batch_size: int = 2000,
        date_window: timedelta = timedelta(days=2),
    ) -> None:
        self._db = db
        self._clock = clock
        self._payments = payments
        self._audit = audit
        self._batch_size = batch_size
        self._window = date_window

    # ------------------------------------------------------------------ import

    async def import_file(self, request: ImportRequest, progress: Progress | None = None) -> ImportResult:
        if request.provider not in LAYOUTS:
            raise UnknownSettlementProvider(
                f"No settlement layout for {request.provider!r}; known: {', '.join(sorted(LAYOUTS))}."
            )
        facts = self._examine(request, progress)
        run, replayed = await self._start(request, facts)
        if replayed:
            return ImportResult(run, replayed=True)
        try:
            await self._match_file(run, request, facts, progress)
            await self._missing_in_file(run, request, facts)
            run = await self._finish(run.id, facts)
        except Exception as exc:
            await self._fail(run.id, exc)
            raise
        log.info("reconciliation run completed", run=run.id, provider=run.provider, lines=run.lines)
        return ImportResult(run, replayed=False)

    async def import_bytes(
        self, body: bytes, *, provider: str, scope: TenantScope, source: str, created_by: str, file_name: str
    ) -> ImportResult:
        """Import a file held in memory (an upload, a provider's download): spooled to disk, since an import
        reads its file twice."""
        path = await asyncio.to_thread(_spool, body)
        try:
            return await self.import_file(
                ImportRequest(
                    path=path,
                    provider=provider,
                    scope=scope,
                    source=source,
                    created_by=created_by,
                    file_name=file_name,
                )
            )
        finally:
            path.unlink(missing_ok=True)

    async def import_upload(
        self, principal: Principal, body: bytes, *, provider: str, file_name: str
    ) -> ImportResult:
        """A file a caller sent: imported into the caller's scope."""
        require(principal, Operation.RECONCILIATION_IMPORT)
        return await self.import_bytes(
            body,
            provider=provider,
            scope=principal_scope(principal),
            source="api",
            created_by=principal.caller_id,
            file_name=file_name,
        )

    def _examine(self, request: ImportRequest, progress: Progress | None) -> _FileFacts:
        """First pass: hash the file and read every line, refusing the file at its first bad line."""
        digest = hashlib.sha256()
        size = request.path.stat().st_size
        with request.path.open("rb") as raw:
            head = raw.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
            raw.seek(0)
            file_format = FileFormat.CAMT053 if head.startswith(b"<") else FileFormat.CSV
            hashing = _HashingReader(raw, digest)
            count, first, last = 0, None, None
            lines = self._lines(
                io.BufferedReader(hashing), request.provider, file_format, size, "checking", progress
            )
            for _, line in lines:
                count += 1
                day = line.transacted_at.date()
                first = day if first is None or day < first else first
                last = day if last is None or day > last else last
            hashing.drain()
        return _FileFacts(digest.hexdigest(), size, file_format, count, first, last)

    def _lines(
        self,
        raw: BinaryIO,
        provider: str,
        file_format: FileFormat,
        size: int,
        phase: str,
        progress: Progress | None,
    ) -> Iterator[tuple[int, SettlementLine]]:
        try:
            if file_format is FileFormat.CAMT053:
                yield from read_camt053(raw.read())
                if progress is not None:
                    progress(phase, size, size)
                return
            text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="")
            for number, (line_no, line) in enumerate(LAYOUTS[provider].read(text), start=1):
                if progress is not None and number % self._batch_size == 0:
                    progress(phase, raw.tell(), size)
                yield line_no, line
            if progress is not None:
                progress(phase, size, size)
            text.detach()
        except SettlementFileError as exc:
            raise InvalidSettlementFile(str(exc)) from None
        except UnicodeDecodeError as exc:
            raise InvalidSettlementFile(
                f"the file is not UTF-8 text ({exc.reason} at byte {exc.start})"
            ) from None
        except csv.Error as exc:
            raise InvalidSettlementFile(f"the CSV is malformed: {exc}") from None

    async def _start(self, request: ImportRequest, facts: _FileFacts) -> tuple[ReconciliationRun, bool]:
        """The run of this file: the completed one (a replay), an unfinished one started over, or a new one."""
        key = scope_key(request.scope)
        identity = (
            ReconciliationRun.provider == request.provider,
            ReconciliationRun.scope_key == key,
            ReconciliationRun.file_sha256 == facts.sha256,
        )
        now = self._clock.now()
        async with self._db.unit_of_work() as session:
            run = (
                await session.execute(select(ReconciliationRun).where(*identity).with_for_update())
            ).scalar_one_or_none()
            if run is not None and run.status == RunStatus.COMPLETED.value:
                return run, True
            if run is not None:
                # A run that died half way: its partial results go, and it starts over.
                await session.execute(
                    delete(ReconciliationException).where(ReconciliationException.run_id == run.id)
                )
                await session.execute(delete(ReconciliationMatch).where(ReconciliationMatch.run_id == run.id))
                run.status, run.error, run.created_at = RunStatus.RUNNING.value, None, now
                return run, False
            run = ReconciliationRun(
                id=new_id("rcn"),
                provider=request.provider,
                format=facts.format.value,
                file_name=(request.file_name or request.path.name)[:255],
                file_sha256=facts.sha256,
                file_bytes=facts.size,
                scope_key=key,
                client_partner_id=request.scope.client_partner_id,
                merchant_id=request.scope.merchant_id,
                status=RunStatus.RUNNING.value,
                source=request.source,
                created_by=request.created_by[:64],
                period_start=facts.first_day,
                period_end=facts.last_day,
                lines=facts.lines,
                matched=0,
                missing_in_paymux=0,
                missing_in_file=0,
                amount_mismatch=0,
                currency_mismatch=0,
                duplicates=0,
                created_at=now,
            )
            session.add(run)
            try:
                await session.flush()
            except IntegrityError:
                pass  # the same file is being imported by someone else right now
            else:
                return run, False
        async with self._db.reading() as session:
            return (await session.execute(select(ReconciliationRun).where(*identity))).scalar_one(), True

    async def _match_file(
        self, run: ReconciliationRun, request: ImportRequest, facts: _FileFacts, progress: Progress | None
    ) -> None:
        batch: list[tuple[int, SettlementLine]] = []
        with request.path.open("rb") as raw:
            for numbered in self._lines(
                raw, request.provider, facts.format, facts.size, "matching", progress
            ):
                batch.append(numbered)
                if len(batch) >= self._batch_size:
                    await self._match_batch(run, request.scope, batch)
                    batch = []
            if batch:
                await self._match_batch(run, request.scope, batch)

    async def _match_batch(
        self, run: ReconciliationRun, scope: TenantScope, batch: list[tuple[int, SettlementLine]]
    ) -> None:
        provider = run.provider
        by_id: dict[str, list[SettledTransaction]] = {}
        for by_provider_id in await self._payments.settled_transactions(
            provider,
            scope,
            provider_transaction_ids=sorted({line.provider_transaction_id for _, line in batch}),
        ):
            if by_provider_id.provider_transaction_id is not None:
                by_id.setdefault(by_provider_id.provider_transaction_id, []).append(by_provider_id)
        by_reference: dict[str, list[SettledTransaction]] = {}
        # A line whose provider id names nothing of its kind (a refund file may carry the payment's id) is looked
        # up by its reference too.
        unknown_ids = {
            line.reference
            for _, line in batch
            if not any(found.kind == line.kind.value for found in by_id.get(line.provider_transaction_id, []))
        }
        for by_own_id in await self._payments.settled_transactions(
            provider, scope, references=sorted(unknown_ids)
        ):
            for reference in by_own_id.references:
                by_reference.setdefault(reference, []).append(by_own_id)
        # Transactions earlier files accounted for are taken: a line prefers one that is still free (two refunds
        # of one payment may carry the same provider id), and falls back to a taken one only to be a duplicate.
        taken = await self._already_claimed(
            provider, {found.id for group in (*by_id.values(), *by_reference.values()) for found in group}
        )
        candidates: dict[int, SettledTransaction | None] = {}
        for no, line in batch:
            near = [
                found
                for found in by_reference.get(line.reference, [])
                if abs(found.settled_at - line.transacted_at) <= self._window
            ]
            candidate = _pick(by_id.get(line.provider_transaction_id, []), line, taken) or _pick(
                near, line, taken
            )
            candidates[no] = candidate
            if candidate is not None:
                taken.add(candidate.id)

        now = self._clock.now()
        first_claim: dict[str, int] = {}
        for no, _ in batch:
            candidate = candidates[no]
            if candidate is not None:
                first_claim.setdefault(candidate.id, no)
        exceptions: list[dict[str, Any]] = []
        async with self._db.unit_of_work() as session:
            claimed = await self._claim(session, run, first_claim, now)
            for no, line in batch:
                match = candidates[no]
                kind: ExceptionKind | None
                if match is None:
                    kind = ExceptionKind.MISSING_IN_PAYMUX
                elif match.id not in claimed or first_claim[match.id] != no:
                    kind = ExceptionKind.DUPLICATE
                elif match.currency != line.currency:
                    kind = ExceptionKind.CURRENCY_MISMATCH
                elif match.amount != line.amount:
                    kind = ExceptionKind.AMOUNT_MISMATCH
                else:
                    kind = None
                if kind is not None:
                    exceptions.append(
                        self._exception(run, scope, kind, now, line_no=no, line=line, found=match)
                    )
            if exceptions:
                await session.execute(insert(ReconciliationException), exceptions)
            if claimed:
                # What earlier runs missed and this file accounts for is settled now.
                await session.execute(
                    update(ReconciliationException)
                    .where(
                        ReconciliationException.kind == ExceptionKind.MISSING_IN_FILE.value,
                        ReconciliationException.status == ExceptionStatus.OPEN.value,
                        ReconciliationException.transaction_id.in_(sorted(claimed)),
                    )
                    .values(
                        status=ExceptionStatus.RESOLVED.value,
                        resolution=f"matched by reconciliation run {run.id}",
                        resolved_by="paymux",
                        resolved_at=now,
                    )
                    .execution_options(synchronize_session=False)
                )

    async def _already_claimed(self, provider: str, ids: set[str]) -> set[str]:
        if not ids:
            return set()
        async with self._db.reading() as session:
            found = await session.execute(
                select(ReconciliationMatch.transaction_id).where(
                    ReconciliationMatch.provider == provider,
                    ReconciliationMatch.transaction_id.in_(sorted(ids)),
                )
            )
            return set(found.scalars())

    async def _claim(
        self, session: AsyncSession, run: ReconciliationRun, first_claim: dict[str, int], now: datetime
    ) -> set[str]:
        """Record the batch's matches; returns the transactions this batch claimed first (no earlier line has)."""
        if not first_claim:
            return set()
        insert_ = conflict_insert(session.get_bind().dialect.name)
        rows = [
            {
                "provider": run.provider,
                "transaction_id": txn,
                "run_id": run.id,
                "line_no": no,
                "created_at": now,
            }
            for txn, no in first_claim.items()
        ]
        result = await session.execute(
            insert_(ReconciliationMatch)
            .values(rows)
            .on_conflict_do_nothing()
            .returning(ReconciliationMatch.transaction_id)
        )
        return set(result.scalars())

    async def _missing_in_file(
        self, run: ReconciliationRun, request: ImportRequest, facts: _FileFacts
    ) -> None:
        """The provider's transactions settled on the file's days that no file has accounted for."""
        if facts.first_day is None or facts.last_day is None:
            return
        start = datetime.combine(facts.first_day, datetime.min.time(), tzinfo=UTC)
        end = datetime.combine(facts.last_day + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
        after: str | None = None
        while True:
            page = await self._payments.settled_between(
                run.provider, request.scope, start=start, end=end, after_id=after, limit=self._batch_size
            )
            if not page:
                return
            after = page[-1].id
            ids = [found.id for found in page]
            now = self._clock.now()
            async with self._db.unit_of_work() as session:
                accounted = set(
                    (
                        await session.execute(
                            select(ReconciliationMatch.transaction_id).where(
                                ReconciliationMatch.provider == run.provider,
                                ReconciliationMatch.transaction_id.in_(ids),
                            )
                        )
                    ).scalars()
                )
                already_open = set(
                    (
                        await session.execute(
                            select(ReconciliationException.transaction_id).where(
                                ReconciliationException.kind == ExceptionKind.MISSING_IN_FILE.value,
                                ReconciliationException.status == ExceptionStatus.OPEN.value,
                                ReconciliationException.transaction_id.in_(ids),
                            )
                        )
                    ).scalars()
                )
                rows = [
                    self._exception(run, request.scope, ExceptionKind.MISSING_IN_FILE, now, found=found)
                    for found in page
                    if found.id not in accounted and found.id not in already_open
                ]
                if rows:
                    await session.execute(insert(ReconciliationException), rows)

    @staticmethod
    def _exception(
        run: ReconciliationRun,
        scope: TenantScope,
        kind: ExceptionKind,
        now: datetime,
        *,
        line_no: int | None = None,
        line: SettlementLine | None = None,
        found: SettledTransaction | None = None,
    ) -> dict[str, Any]:
        return {
            "id": new_id("rex"),
            "run_id": run.id,
            "provider": run.provider,
            "kind": kind.value,
            "status": ExceptionStatus.OPEN.value,
            "client_partner_id": found.client_partner_id if found is not None else scope.client_partner_id,
            "merchant_id": found.merchant_id if found is not None else scope.merchant_id,
            "line_no": line_no,
            "line_kind": line.kind.value if line is not None else (found.kind if found is not None else None),
            "transaction_id": found.id if found is not None else None,
            "payment_intent_id": found.payment_intent_id if found is not None else None,
            "provider_transaction_id": (
                line.provider_transaction_id
                if line is not None
                else (found.provider_transaction_id if found else None)
            ),
            "reference": line.reference
            if line is not None
            else (found.reference if found is not None else None),
            "file_amount": line.amount if line is not None else None,
            "file_currency": line.currency if line is not None else None,
            "paymux_amount": found.amount if found is not None else None,
            "paymux_currency": found.currency if found is not None else None,
            "transacted_at": line.transacted_at
            if line is not None
            else (found.settled_at if found else None),
            "created_at": now,
        }

    async def _finish(self, run_id: str, facts: _FileFacts) -> ReconciliationRun:
        async with self._db.unit_of_work() as session:
            run = await session.get(ReconciliationRun, run_id, with_for_update=True)
            assert run is not None  # noqa: S101 - created by this import
            grouped = await session.execute(
                select(ReconciliationException.kind, func.count())
                .where(ReconciliationException.run_id == run_id)
                .group_by(ReconciliationException.kind)
            )
            counts: dict[str, int] = dict(grouped.all())
            claimed = (
                await session.execute(
                    select(func.count())
                    .select_from(ReconciliationMatch)
                    .where(ReconciliationMatch.run_id == run_id)
                )
            ).scalar_one()
            run.missing_in_paymux = counts.get(ExceptionKind.MISSING_IN_PAYMUX.value, 0)
            run.missing_in_file = counts.get(ExceptionKind.MISSING_IN_FILE.value, 0)
            run.amount_mismatch = counts.get(ExceptionKind.AMOUNT_MISMATCH.value, 0)
            run.currency_mismatch = counts.get(ExceptionKind.CURRENCY_MISMATCH.value, 0)
            run.duplicates = counts.get(ExceptionKind.DUPLICATE.value, 0)
            run.matched = claimed - run.amount_mismatch - run.currency_mismatch
            run.lines = facts.lines
            run.status = RunStatus.COMPLETED.value
            run.completed_at = self._clock.now()
            return run

    async def _fail(self, run_id: str, exc: Exception) -> None:
        async with self._db.unit_of_work() as session:
            run = await session.get(ReconciliationRun, run_id, with_for_update=True)
            if run is not None:
                run.status = RunStatus.FAILED.value
                run.error = f"{type(exc).__name__}: {exc}"[:500]

    # ------------------------------------------------------------------ the daily run (worker)

    async def run_daily(self, tenants: TenantService, providers: ProviderRegistry, day: date) -> int:
        """Fetch and reconcile `day`'s settlement file of every active store config whose provider offers one.

        Each (config, day) is claimed once across all workers; a failed fetch or import gives the claim back, so a
        later round tries again. Returns how many files it imported.
        """
        capable = {
            provider.name: provider for provider in providers if isinstance(provider, SettlementCapable)
        }
        imported = 0
        for config in await tenants.active_configs_of(sorted(capable)):
            if (config.options or {}).get(DAILY_OPTION) != "daily" or not await self._claim_day(
                config.id, day
            ):
                continue
            try:
                body = await capable[config.provider_code].fetch_settlement_file(
                    tenants.credentials(config), day
                )
                result = await self.import_bytes(
                    body,
                    provider=config.provider_code,
                    scope=TenantScope(
                        client_partner_id=config.client_partner_id, merchant_id=config.merchant_id
                    ),
                    source="schedule",
                    created_by="worker",
                    file_name=f"{config.provider_code}-{day.isoformat()}.csv",
                )
            except Exception:
                # The claim keeps its attempt count: a later round retries it after DAILY_RETRY_AFTER.
                log.exception(
                    "daily reconciliation failed; tried again later", config=config.id, day=str(day)
                )
            else:
                await self._complete_day(config.id, day, result.run.id)
                imported += 1
        return imported

    async def _claim_day(self, config_id: str, day: date) -> bool:
        """Claim (config, day) for this worker: new, or given back by a failed attempt an hour ago or more, for at
        most DAILY_ATTEMPTS attempts."""
        now = self._clock.now()
        async with self._db.unit_of_work() as session:
            insert_ = conflict_insert(session.get_bind().dialect.name)
            statement = insert_(ScheduledReconciliation).values(
                provider_config_id=config_id, day=day, attempts=1, claimed_at=now
            )
            claimed = await session.execute(
                statement.on_conflict_do_update(
                    index_elements=["provider_config_id", "day"],
                    set_={"attempts": ScheduledReconciliation.attempts + 1, "claimed_at": now},
                    where=(
                        ScheduledReconciliation.run_id.is_(None)
                        & (ScheduledReconciliation.attempts < DAILY_ATTEMPTS)
                        & (ScheduledReconciliation.claimed_at <= now - DAILY_RETRY_AFTER)
                    ),
                ).returning(ScheduledReconciliation.provider_config_id)
            )
            return claimed.scalar_one_or_none() is not None

    async def _complete_day(self, config_id: str, day: date, run_id: str) -> None:
        async with self._db.unit_of_work() as session:
            await session.execute(
                update(ScheduledReconciliation)
                .where(
                    ScheduledReconciliation.provider_config_id == config_id,
                    ScheduledReconciliation.day == day,
                )
                .values(run_id=run_id)
                .execution_options(synchronize_session=False)
            )

    # ------------------------------------------------------------------ reports and exceptions

    async def get_run(self, principal: Principal, run_id: str) -> ReconciliationRun:
        require(principal, Operation.RECONCILIATION_READ)
        principal_scope(principal)  # store clients are refused before anything is looked up
        async with self._db.reading() as session:
            run = await session.get(ReconciliationRun, run_id)
        if run is None or not _sees(principal, run):
            raise RunNotFound(f"No reconciliation run {run_id} in this client's scope.")
        return run

    async def list_runs(
        self, principal: Principal, *, provider: str | None, limit: int, starting_after: str | None
    ) -> tuple[list[ReconciliationRun], bool]:
        require(principal, Operation.RECONCILIATION_READ)
        scope = principal_scope(principal)
        statement = select(ReconciliationRun)
        if scope.client_partner_id is not None:
            statement = statement.where(ReconciliationRun.client_partner_id == scope.client_partner_id)
        if scope.merchant_id is not None:
            statement = statement.where(ReconciliationRun.merchant_id == scope.merchant_id)
        if provider is not None:
            statement = statement.where(ReconciliationRun.provider == provider)
        async with self._db.reading() as session:
            return await fetch_page(
                session, statement, ReconciliationRun.id, limit=limit, starting_after=starting_after
            )

    async def list_exceptions(
        self,
        principal: Principal,
        run_id: str,
        *,
        status: ExceptionStatus | None,
        kind: ExceptionKind | None,
        limit: int,
        starting_after: str | None,
    ) -> tuple[list[ReconciliationException], bool]:
        await self.get_run(principal, run_id)
        statement = select(ReconciliationException).where(ReconciliationException.run_id == run_id)
        if status is not None:
            statement = statement.where(ReconciliationException.status == status.value)
        if kind is not None:
            statement = statement.where(ReconciliationException.kind == kind.value)
        async with self._db.reading() as session:
            return await fetch_page(
                session,
                statement,
                ReconciliationException.id,
                limit=limit,
                starting_after=starting_after,
                newest_first=False,
            )

    async def resolve(
        self, principal: Principal, exception_id: str, *, reason: str, from_address: str | None
    ) -> ReconciliationException:
        """Close an exception with a reason; who, when and from where are kept with it, and it cannot change."""
        require(principal, Operation.RECONCILIATION_RESOLVE)
        principal_scope(principal)
        async with self._db.unit_of_work() as session:
            item = await session.get(ReconciliationException, exception_id, with_for_update=True)
            run = await session.get(ReconciliationRun, item.run_id) if item is not None else None
            if item is None or run is None or not _sees(principal, run):
                raise ReconciliationExceptionNotFound(
                    f"No reconciliation exception {exception_id} in this scope."
                )
            if item.status != ExceptionStatus.OPEN.value:
                raise ExceptionAlreadyResolved(
                    f"Resolved at {item.resolved_at} by {item.resolved_by}: {item.resolution}"
                )
            item.status = ExceptionStatus.RESOLVED.value
            item.resolution = reason
            item.resolved_by = principal.caller_id
            item.resolved_from = from_address
            item.resolved_at = self._clock.now()
            self._audit.record(
                session,
                principal,
                AuditAction.RECONCILIATION_EXCEPTION_RESOLVED,
                AuditObject("reconciliation_exception", item.id, run.client_partner_id, run.merchant_id),
                details={"run_id": run.id, "kind": item.kind, "reason": reason},
                ip=from_address,
            )
            log.info(
                "reconciliation exception resolved", exception=item.id, by=principal.caller_id, reason=reason
            )
            return item


def _spool(body: bytes) -> Path:
    with tempfile.NamedTemporaryFile(prefix="paymux-settlement-", delete=False) as spool:
        spool.write(body)
        return Path(spool.name)


def _sees(principal: Principal, run: ReconciliationRun) -> bool:
    if principal.store_id is not None:
        return False
    if principal.client_partner_id is not None and run.client_partner_id != principal.client_partner_id:
        return False
    return principal.merchant_id is None or run.merchant_id == principal.merchant_id


def _pick(
    found: list[SettledTransaction], line: SettlementLine, taken: set[str]
) -> SettledTransaction | None:
    """The candidate for a line: the same kind; a free one before a taken one; the same amount preferred."""
    same_kind = [candidate for candidate in found if candidate.kind == line.kind.value]
    ranked = sorted(
        same_kind,
        key=lambda candidate: (
            candidate.id in taken,
            (candidate.amount, candidate.currency) != (line.amount, line.currency),
            candidate.id,
        ),
    )
    return ranked[0] if ranked else None


class _HashingReader(io.RawIOBase):
    """Feeds every byte read through it to a hash, so the checking pass hashes the file too."""

    def __init__(self, raw: BinaryIO, digest: Any) -> None:
        self._raw = raw
        self._digest = digest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        self._digest.update(data)
        buffer[: len(data)] = data
        return len(data)

    def tell(self) -> int:
        return self._raw.tell()

    def drain(self) -> None:
        """Hash whatever the reader did not consume (a parser may stop early at the end of its document)."""
        while chunk := self._raw.read(1 << 20):
            self._digest.update(chunk)
