"""Importing a 1,000,000-line settlement file: time and peak memory, on SQLite and on PostgreSQL.

The file is in the `test` layout, one UTC day of lines. 10,000 of its transactions really exist: the script
inserts them (a partner, merchant and store, then payment intents and their succeeded payment transactions) with
SQLAlchemy Core into a fresh database, so every batch of the import exercises the matching path. Per hundred of
those transactions: 96 lines match by the provider's id, 1 by reference only (the file carries another provider
id), 1 has another amount, 1 comes twice (a duplicate) and 1 is absent from the file (missing in file). Every
other line is missing in paymux.

Each measurement runs in a fresh subprocess (started through `sh`, so that Linux does not hand it this process's
RSS high-water mark), so its peak RSS (`ru_maxrss`) is its own. tracemalloc slows Python down several times, so
its peak comes from a second import of the same file into the same seeded database, not from the timed one. Each
step also reports its CPU time, and on a local PostgreSQL that of the server backends it used. Baselines, measured
in the same run against the same database, each in a fresh subprocess:

- csv:    reading the same file with `csv.reader` alone (no parsing of the values, no database);
- insert: the same number of rows as the file has lines, shaped like reconciliation exceptions (same columns and
          indexes), inserted in batches of 2,000, one unit of work per batch, through paymux's `Database`.

    .venv/bin/python bench/reconcile_import.py [--lines 1000000] [--quick] [--database-url URL] [--backends ...]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import csv
import json
import os
import random
import resource
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from database import ensure_database
from machine import machine
from sqlalchemy import Column, Index, MetaData, Table, insert, text
from sqlalchemy.ext.asyncio import create_async_engine

from paymux import migrations
from paymux.config import Settings
from paymux.container import Container
from paymux.core.db import Database, to_async_url
from paymux.core.ids import new_id
from paymux.payments.models import PaymentIntent, Transaction
from paymux.payments.service import TenantScope
from paymux.providers.settlement import LAYOUTS
from paymux.reconciliation.models import ReconciliationException
from paymux.reconciliation.service import ImportRequest
from paymux.tenants.models import ClientPartner, Merchant, Store

MASTER_KEY = base64.b64encode(bytes(range(32))).decode()
RESULTS = Path(__file__).parent / "results"
BATCH = 2000
DAY = datetime(2026, 11, 20, tzinfo=UTC)
PARTNER, MERCHANT, STORE = 1, 1, 1


# ---------------------------------------------------------------------------------------------- the file


def real_transactions(count: int) -> list[dict[str, Any]]:
    """The transactions that exist in paymux, settled through the day."""
    rng = random.Random(20261120)
    return [
        {
            "intent": new_id("pi"),
            "transaction": new_id("txn"),
            "provider_id": f"test_ch_{new_id('x')[2:]}",
            "amount": rng.randrange(100, 50_000),
            "settled_at": DAY + timedelta(seconds=rng.randrange(86_400)),
        }
        for _ in range(count)
    ]


def file_lines(total: int, real: list[dict[str, Any]]) -> Iterator[list[str]]:
    """Rows of the file: the real transactions' lines spread evenly among lines missing in paymux."""
    rng = random.Random(7)

    def row(provider_id: str, reference: str, amount: int, at: datetime) -> list[str]:
        return ["payment", provider_id, reference, str(amount), "JPY", "0", at.strftime("%Y-%m-%dT%H:%M:%SZ")]

    known: list[list[str]] = []
    for number, found in enumerate(real):
        variant = number % 100
        if variant == 99:
            continue  # missing in the file
        line = row(found["provider_id"], found["intent"], found["amount"], found["settled_at"])
        if variant == 98:
            line[1] = f"test_ch_UNKNOWN{number:011d}"  # matched by reference
        elif variant == 97:
            line[3] = str(found["amount"] + 1)  # amount mismatch
        known.append(line)
        if variant == 96:
            known.append(list(line))  # a duplicate
    stride = max(1, total // max(1, len(known)))
    pending = iter(known)
    for number in range(total):
        if number % stride == 0 and (line := next(pending, None)) is not None:
            yield line
        else:
            at = DAY + timedelta(seconds=rng.randrange(86_400))
            yield row(
                f"test_ch_MISSING{number:011d}", f"pi_MISSING{number:016d}", rng.randrange(100, 50_000), at
            )


def expected_counts(lines: int, real: int) -> dict[str, int]:
    hundreds = real // 100
    return {
        "lines": lines,
        "matched": 98 * hundreds,
        "amount_mismatch": hundreds,
        "duplicates": hundreds,
        "missing_in_file": hundreds,
        "missing_in_paymux": lines - 100 * hundreds,
        "currency_mismatch": 0,
    }


def write_file(path: Path, lines: int, real: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(LAYOUTS["test"].header)
        written = 0
        for row in file_lines(lines, real):
            writer.writerow(row)
            written += 1
    assert written == lines, (written, lines)


# ---------------------------------------------------------------------------------------------- databases


async def fresh_postgres(url: str) -> str:
    """An empty paymux schema in the benchmark database (created when missing); answers the server version."""
    await ensure_database(url)
    engine = create_async_engine(to_async_url(url))
    try:
        async with engine.begin() as connection:
            await connection.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            await connection.execute(text("CREATE SCHEMA public"))
            return str(await connection.scalar(text("SHOW server_version")))
    finally:
        await engine.dispose()


async def seed(url: str, real: list[dict[str, Any]]) -> None:
    """The minimum rows for `real` to be succeeded payments of the `test` provider: partner, merchant, store,
    intents and transactions."""
    db = Database(url)
    now = datetime.now(UTC)
    try:
        async with db.unit_of_work() as session:
            stamps = {"created_at": now, "updated_at": now}
            await session.execute(insert(ClientPartner), [{"id": PARTNER, "name": "bench", **stamps}])
            await session.execute(
                insert(Merchant),
                [
                    {
                        "id": MERCHANT,
                        "client_partner_id": PARTNER,
                        "merchant_code": "B-1",
                        "name": "bench",
                        "is_active": True,
                        **stamps,
                    }
                ],
            )
            await session.execute(
                insert(Store),
                [
                    {
                        "id": STORE,
                        "merchant_id": MERCHANT,
                        "client_partner_id": PARTNER,
                        "store_code": "BS-1",
                        "name": "bench",
                        "is_active": True,
                        "fee_rules": [],
                        **stamps,
                    }
                ],
            )
        owner = {"client_partner_id": PARTNER, "merchant_id": MERCHANT, "store_id": STORE}
        for start in range(0, len(real), BATCH):
            chunk = real[start : start + BATCH]
            async with db.unit_of_work() as session:
                await session.execute(
                    insert(PaymentIntent.__table__),
                    [
                        {
                            "id": found["intent"],
                            **owner,
                            "merchant_ref_id": f"BENCH-{start + number}",
                            "amount": found["amount"],
                            "currency": "JPY",
                            "amount_captured": found["amount"],
                            "amount_refunded": 0,
                            "payment_method_type": "qr_mpm",
                            "processing_mode": "pgw_processed",
                            "status": "succeeded",
                            "provider_name": "test",
                            "provider_transaction_id": found["provider_id"],
                            "metadata": {},
                            "created_at": found["settled_at"],
                            "updated_at": found["settled_at"],
                        }
                        for number, found in enumerate(chunk)
                    ],
                )
                await session.execute(
                    insert(Transaction.__table__),
                    [
                        {
                            "id": found["transaction"],
                            "payment_intent_id": found["intent"],
                            **owner,
                            "type": "payment",
                            "status": "succeeded",
                            "amount": found["amount"],
                            "currency": "JPY",
                            "provider_name": "test",
                            "provider_transaction_id": found["provider_id"],
                            "check_count": 0,
                            "created_at": found["settled_at"],
                            "updated_at": found["settled_at"],
                        }
                        for found in chunk
                    ],
                )
    finally:
        await db.dispose()


async def clear_runs(url: str) -> None:
    """Forget every reconciliation run, so the same file imports again from scratch (PostgreSQL)."""
    engine = create_async_engine(to_async_url(url))
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text("TRUNCATE reconciliation_exceptions, reconciliation_matches, reconciliation_runs")
            )
            await connection.execute(text("ANALYZE"))
    finally:
        await engine.dispose()


# ---------------------------------------------------------------------------------------------- the children


def status_kib(field: str) -> int:
    """A memory figure of this process from /proc/self/status (VmRSS now, VmHWM its peak), in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def child_csv(path: Path) -> dict[str, Any]:
    rows = 0
    started = time.perf_counter()
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        next(reader)
        for _ in reader:
            rows += 1
    return {"rows": rows, "seconds": time.perf_counter() - started}


def scratch_table() -> Table:
    """A table shaped like reconciliation_exceptions: the same columns, primary key and indexes."""
    table = Table(
        "bench_insert_baseline",
        MetaData(),
        *(
            Column(column.name, column.type, primary_key=column.primary_key, nullable=column.nullable)
            for column in ReconciliationException.__table__.columns
        ),
    )
    Index("ix_bench_insert_baseline_run_id_id", table.c.run_id, table.c.id)
    Index("ix_bench_insert_baseline_transaction_id", table.c.transaction_id, table.c.status)
    return table


async def server_cpu_seconds(db: Database) -> float | None:
    """CPU time of the PostgreSQL backends now connected to this database (all opened by this process), from
    /proc: only for a server on this machine. None on SQLite, which runs inside this process."""
    if db.is_sqlite:
        return None
    async with db.engine.connect() as connection:
        pids = list(
            (
                await connection.execute(
                    text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
                )
            ).scalars()
        )
    return cpu_seconds_of(pids)


def cpu_seconds_of(pids: list[int]) -> float | None:
    """utime + stime of local processes, from /proc; None when one cannot be read."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


async def child_insert(url: str, rows: int) -> dict[str, Any]:
    db = Database(url)
    table = scratch_table()
    try:
        async with db.engine.begin() as connection:
            await connection.run_sync(lambda sync: table.drop(sync, checkfirst=True))
            await connection.run_sync(lambda sync: table.create(sync))
        run_id = new_id("rcn")
        started = time.perf_counter()
        for start in range(0, rows, BATCH):
            now = datetime.now(UTC)
            batch = [
                {
                    "id": new_id("rex"),
                    "run_id": run_id,
                    "provider": "test",
                    "kind": "missing_in_paymux",
                    "status": "open",
                    "client_partner_id": PARTNER,
                    "merchant_id": MERCHANT,
                    "line_no": number + 2,
                    "line_kind": "payment",
                    "transaction_id": None,
                    "payment_intent_id": None,
                    "provider_transaction_id": f"test_ch_MISSING{number:011d}",
                    "reference": f"pi_MISSING{number:016d}",
                    "file_amount": 1000 + number % 40_000,
                    "file_currency": "JPY",
                    "paymux_amount": None,
                    "paymux_currency": None,
                    "transacted_at": DAY,
                    "created_at": now,
                }
                for number in range(start, min(start + BATCH, rows))
            ]
            async with db.unit_of_work() as session:
                await session.execute(insert(table), batch)
        seconds = time.perf_counter() - started
        server_cpu = await server_cpu_seconds(db)
        async with db.engine.begin() as connection:
            await connection.run_sync(lambda sync: table.drop(sync))
        return {"rows": rows, "seconds": seconds, "server_cpu_seconds": server_cpu}
    finally:
        await db.dispose()


async def child_import(url: str, path: Path) -> dict[str, Any]:
    container = Container.build(Settings(database_url=url, master_key=MASTER_KEY))  # type: ignore[call-arg]
    phases: dict[str, float] = {}

    def progress(phase: str, done: int, size: int) -> None:
        phases.setdefault(phase, time.perf_counter())

    try:
        started = time.perf_counter()
        result = await container.reconciliation.import_file(
            ImportRequest(
                path=path,
                provider="test",
                scope=TenantScope(client_partner_id=PARTNER, merchant_id=MERCHANT),
                source="cli",
                created_by="bench",
            ),
            progress,
        )
        seconds = time.perf_counter() - started
        server_cpu = await server_cpu_seconds(container.db)
    finally:
        await container.close()
    run = result.run
    matching = phases.get("matching", started)
    return {
        "rows": run.lines,
        "seconds": seconds,
        "checking_seconds": matching - started,
        "server_cpu_seconds": server_cpu,
        "replayed": result.replayed,
        "status": run.status,
        "counts": {
            "lines": run.lines,
            "matched": run.matched,
            "amount_mismatch": run.amount_mismatch,
            "duplicates": run.duplicates,
            "missing_in_file": run.missing_in_file,
            "missing_in_paymux": run.missing_in_paymux,
            "currency_mismatch": run.currency_mismatch,
        },
    }


def child(kind: str, url: str, path: Path, rows: int, trace: bool, out: Path) -> None:
    start_rss = status_kib("VmRSS")
    start = resource.getrusage(resource.RUSAGE_SELF)
    if trace:
        tracemalloc.start()
    if kind == "csv":
        result = child_csv(path)
    elif kind == "insert":
        result = asyncio.run(child_insert(url, rows))
    else:
        result = asyncio.run(child_import(url, path))
    if trace:
        result["tracemalloc_peak_bytes"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu_seconds"] = usage.ru_utime + usage.ru_stime - start.ru_utime - start.ru_stime
    result["start_rss_kib"] = start_rss
    result["peak_rss_kib"] = usage.ru_maxrss  # KiB on Linux
    result["vm_hwm_kib"] = status_kib("VmHWM")
    out.write_text(json.dumps(result))


def spawn(kind: str, url: str, path: Path, rows: int, *, trace: bool, scratch: Path) -> dict[str, Any]:
    out = scratch / f"{kind}-{'traced' if trace else 'timed'}.json"
    out.unlink(missing_ok=True)
    command = [sys.executable, __file__, "--child", kind, "--database-url", url, "--file", str(path)]
    command += ["--lines", str(rows), "--out", str(out)] + (["--trace"] if trace else [])
    env = {**os.environ, "PAYMUX_LOG_LEVEL": "WARNING"}
    # Linux hands a child the parent's RSS high-water mark: a process forked from this one (itself over 100 MiB)
    # reports at least that as ru_maxrss, whatever it does. A shell in between, which forks the child rather than
    # exec'ing it, leaves the child its own figure (VmHWM, checked below, is the child's own either way).
    subprocess.run(
        ["/bin/sh", "-c", f"{shlex.join(command)}; exit $?"], check=True, env=env, stdout=subprocess.DEVNULL
    )
    result = dict(json.loads(out.read_text()))
    if abs(result["peak_rss_kib"] - result["vm_hwm_kib"]) > 0.1 * result["vm_hwm_kib"]:
        print(
            f"warning: {kind}: ru_maxrss {result['peak_rss_kib']} KiB but VmHWM {result['vm_hwm_kib']} KiB",
            file=sys.stderr,
        )
    return result


# ---------------------------------------------------------------------------------------------- the run


def run_backend(
    backend: str, url: str, file: Path, lines: int, real: list[dict[str, Any]], scratch: Path
) -> dict[str, Any]:
    print(f"[{backend}] seeding {len(real)} transactions", file=sys.stderr, flush=True)
    info: dict[str, Any] = {"backend": backend}
    if backend == "postgresql":
        info["server_version"] = asyncio.run(fresh_postgres(url))
        migrations.upgrade(url)
        asyncio.run(seed(url, real))
        asyncio.run(clear_runs(url))  # and ANALYZE, as autovacuum would have by now
        db_url = baseline_url = url

        def reset() -> None:
            asyncio.run(clear_runs(url))

    else:
        seeded = scratch / "seeded.db"
        migrations.upgrade(f"sqlite:///{seeded}")
        asyncio.run(seed(f"sqlite:///{seeded}", real))
        live = scratch / "paymux.db"

        def reset() -> None:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{live}{suffix}").unlink(missing_ok=True)
            shutil.copyfile(seeded, live)
            if Path(f"{seeded}-wal").exists():
                shutil.copyfile(f"{seeded}-wal", f"{live}-wal")

        reset()
        db_url = f"sqlite:///{live}"
        info["sqlite_version"] = sqlite3.sqlite_version
        # The insert baseline writes to its own file next to it, with the same settings.
        baseline_url = f"sqlite:///{scratch / 'baseline.db'}"
    steps: dict[str, dict[str, Any]] = {}
    for name, kind, trace in (
        ("csv", "csv", False),
        ("csv traced", "csv", True),
        ("insert", "insert", False),
        ("import", "import", False),
        ("import traced", "import", True),
    ):
        if name == "import traced":
            reset()
        target = baseline_url if kind == "insert" else db_url
        print(f"[{backend}] {name}", file=sys.stderr, flush=True)
        steps[name] = spawn(kind, target, file, lines, trace=trace, scratch=scratch)
        if kind == "import":
            counts = steps[name]["counts"]
            expected = expected_counts(lines, len(real))
            if steps[name]["status"] != "completed" or steps[name]["replayed"] or counts != expected:
                raise SystemExit(f"[{backend}] {name}: unexpected report {steps[name]} (expected {expected})")
    info["steps"] = steps
    return info


def summarise(backend: dict[str, Any]) -> list[dict[str, Any]]:
    steps = backend["steps"]
    csv_rate = steps["csv"]["rows"] / steps["csv"]["seconds"]
    insert_rate = steps["insert"]["rows"] / steps["insert"]["seconds"]
    rows = []
    for name, label, traced in (
        ("csv", "baseline: csv.reader", "csv traced"),
        ("insert", "baseline: insert 2,000/txn", None),
        ("import", "import_file", "import traced"),
    ):
        step = steps[name]
        rate = step["rows"] / step["seconds"]
        rows.append(
            {
                "backend": backend["backend"],
                "step": label,
                "rows": step["rows"],
                "seconds": round(step["seconds"], 1),
                "checking_seconds": round(step["checking_seconds"], 1)
                if "checking_seconds" in step
                else None,
                "lines_per_second": round(rate),
                "cpu_seconds": round(step["cpu_seconds"], 1),
                "server_cpu_seconds": (
                    round(step["server_cpu_seconds"], 1)
                    if step.get("server_cpu_seconds") is not None
                    else None
                ),
                "start_rss_mib": round(step["start_rss_kib"] / 1024, 1),
                "peak_rss_mib": round(step["peak_rss_kib"] / 1024, 1),
                "traced_peak_rss_mib": round(steps[traced]["peak_rss_kib"] / 1024, 1) if traced else None,
                "tracemalloc_peak_mib": (
                    round(steps[traced]["tracemalloc_peak_bytes"] / 1_048_576, 1) if traced else None
                ),
                "vs_csv": round(rate / csv_rate, 4),
                "vs_insert": round(rate / insert_rate, 3),
            }
        )
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    header = (
        f"{'backend':<10} {'step':<27} {'rows':>9} {'seconds':>8} {'cpu s':>7} {'pg cpu s':>8} {'lines/s':>9} "
        f"{'start RSS MiB':>13} "
        f"{'peak RSS MiB':>12} "
        f"{'tracemalloc MiB':>15} {'vs csv':>7} {'vs insert':>9}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        traced = "" if row["tracemalloc_peak_mib"] is None else f"{row['tracemalloc_peak_mib']:.1f}"
        server = "" if row["server_cpu_seconds"] is None else f"{row['server_cpu_seconds']:.1f}"
        print(
            f"{row['backend']:<10} {row['step']:<27} {row['rows']:>9} {row['seconds']:>8.1f} {row['cpu_seconds']:>7.1f} "
            f"{server:>8} "
            f"{row['lines_per_second']:>9} {row['start_rss_mib']:>13.1f} {row['peak_rss_mib']:>12.1f} {traced:>15} "
            f"{row['vs_csv']:>6.3f}x {row['vs_insert']:>8.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("PAYMUX_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1/paymux_bench"),
        help="the PostgreSQL database to use (its public schema is dropped and made anew)",
    )
    parser.add_argument("--lines", type=int, default=1_000_000, help="lines in the file (default 1,000,000)")
    parser.add_argument("--quick", action="store_true", help="100,000 lines")
    parser.add_argument(
        "--backends", nargs="+", choices=["sqlite", "postgresql"], default=["sqlite", "postgresql"]
    )
    parser.add_argument("--child", choices=["csv", "insert", "import"], help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.database_url, args.file, args.lines, args.trace, args.out)
        return

    lines = 100_000 if args.quick else args.lines
    real_count = min(10_000, lines // 10 // 100 * 100)
    scratch = Path(tempfile.mkdtemp(prefix="paymux-reconcile-bench-"))
    try:
        real = real_transactions(real_count)
        file = scratch / "settlement-test-2026-11-20.csv"
        started = time.perf_counter()
        write_file(file, lines, real)
        print(
            f"wrote {lines} lines ({file.stat().st_size / 1_048_576:.1f} MiB) in {time.perf_counter() - started:.1f} s",
            file=sys.stderr,
        )
        backends = [
            run_backend(backend, args.database_url, file, lines, real, scratch) for backend in args.backends
        ]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    rows = [row for backend in backends for row in summarise(backend)]
    print_table(rows)
    out = {
        "benchmark": "reconcile_import",
        "machine": machine(),
        "lines": lines,
        "real_transactions": real_count,
        "expected": expected_counts(lines, real_count),
        "backends": backends,
        "results": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "reconcile_import.json"
    path.write_text(json.dumps(out, indent=2, default=str))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
