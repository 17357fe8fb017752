"""Ledger postings per second on PostgreSQL: single entries, batches of 100, and one hot account.

Each workload runs N concurrent asyncio tasks (16 by default) in this process for --duration seconds, every unit
of work its own transaction through LedgerService (one process, one event loop, a pool of N + 2 connections):

- single:      `LedgerService.transfer`, one entry (two postings) per unit of work; each task books over its own
               100 account pairs (provider clearing -> merchant payable of 100 merchants), so no two tasks share
               an account;
- batched:     `book_many` of 100 entries in one unit of work, one entry on each of the task's 100 pairs (200
               accounts updated once each);
- hot single:  like single, but every entry credits the same account (`m0:fees:JPY`), so every unit of work
               queues for that account's row lock;
- hot batched: like batched, every entry crediting that same account (its row is updated once per batch).

The baseline, measured in the same run, through the same engine and with the same concurrency, is one row inserted
per transaction into a scratch table: one durable commit (fsync of the WAL), the least any unit of work costs. It
runs first and last; ratios are to the mean of the two. Accounts are opened before the clock starts; the first
tenth of each window (at most 1 s) is a warm-up, and the units that finish in the rest of it are counted. Besides
rates and latencies, each workload reports the SQL statements, the CPU of this process and (for a server on this
machine) the CPU of the PostgreSQL backends per unit of work: those move far less with a noisy machine than the
rates do. After the run `verify_ledger` checks every ledger invariant and the script fails if any is broken.

    .venv/bin/python bench/ledger_postings.py [--duration 10] [--concurrency 16] [--database-url URL] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from database import ensure_database
from machine import machine
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from paymux import migrations
from paymux.config import Settings
from paymux.container import Container
from paymux.core.ids import new_id
from paymux.ledger.accounts import AccountSpec, MerchantAccounts
from paymux.ledger.entries import EntryDraft, EntryKind, transfer
from paymux.ledger.verify import verify_ledger

MASTER_KEY = base64.b64encode(bytes(range(32))).decode()
RESULTS = Path(__file__).parent / "results"
PAIRS_PER_TASK = 100
BATCH = 100
HOT = MerchantAccounts(client_partner_id=1, merchant_id=0, currency="JPY").fees
LEDGER_TABLES = "ledger_postings, ledger_holds, ledger_entries, ledger_accounts"
SCRATCH = "bench_commit_baseline"


# ---------------------------------------------------------------------------------------------- machine and setup


def machine_of(url: str) -> dict[str, Any]:
    return {**machine(), "database": make_url(url).render_as_string(hide_password=True)}


async def prepare(engine: AsyncEngine) -> str:
    """Empty the ledger and the scratch table; answer the server's version."""
    async with engine.begin() as connection:
        await connection.execute(text(f"TRUNCATE {LEDGER_TABLES} CASCADE"))
        await connection.execute(
            text(
                f"CREATE TABLE IF NOT EXISTS {SCRATCH} (id bigserial PRIMARY KEY, task integer NOT NULL, "
                "n bigint NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"
            )
        )
        await connection.execute(text(f"TRUNCATE {SCRATCH}"))
        return str(await connection.scalar(text("SHOW server_version")))


# ---------------------------------------------------------------------------------------------- workloads


def pair(task: int, index: int) -> tuple[AccountSpec, AccountSpec]:
    """The task's index-th account pair: a merchant's provider clearing account and its payable."""
    accounts = MerchantAccounts(
        client_partner_id=1, merchant_id=1 + task * PAIRS_PER_TASK + index, currency="JPY"
    )
    return accounts.clearing("test"), accounts.payable


def draft(run: str, task: int, n: int, index: int, *, hot: bool) -> EntryDraft:
    """`run` names the workload too: every entry of the benchmark has its own idempotency key."""
    debit, credit = pair(task, index)
    return transfer(
        f"bench:{run}:{task}:{n}:{index}",
        debit=debit,
        credit=HOT if hot else credit,
        amount=100 + index,
        kind=EntryKind.TRANSFER,
        source_type="bench",
        source_id=f"{run}:{task}:{n}",
    )


@dataclass
class Measured:
    name: str
    entries_per_unit: int
    units: int = 0
    seconds: float = 0.0
    all_units: int = 0
    statements_per_unit: float = 0.0
    client_cpu_ms_per_unit: float = 0.0
    server_cpu_ms_per_unit: float | None = None
    latencies: list[float] = field(default_factory=list)

    @property
    def units_per_second(self) -> float:
        return self.units / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile of the unit-of-work latency, in milliseconds."""
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))] * 1000


class Meter:
    """What the units of a workload cost: SQL statements sent (an executemany counts once), CPU time of this
    process, and CPU time of the PostgreSQL backends serving this database (read from /proc, so only when the
    server runs on this machine; None otherwise)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.statements = 0
        self._ticks = os.sysconf("SC_CLK_TCK")
        event.listen(engine.sync_engine, "before_cursor_execute", self._seen)

    def _seen(self, *_: Any) -> None:
        self.statements += 1

    async def backend_cpu(self) -> dict[int, float]:
        async with self.engine.connect() as connection:
            pids = (
                await connection.execute(
                    text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
                )
            ).scalars()
            return {pid: cpu for pid in pids if (cpu := self._cpu_seconds(pid)) is not None}

    def _cpu_seconds(self, pid: int) -> float | None:
        """utime + stime of a local process, from /proc."""
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / self._ticks


async def measure(
    name: str,
    entries_per_unit: int,
    concurrency: int,
    duration: float,
    meter: Meter,
    unit: Callable[[int, int], Awaitable[None]],
) -> Measured:
    """Run `unit(task, n)` in `concurrency` tasks for `duration` seconds. After a warm-up (the first tenth, at most
    1 s), the units that finish inside the window count: throughput is how many per second of window, latency is
    theirs. No unit starts after the window; those still running then finish uncounted."""
    result = Measured(name, entries_per_unit)
    server_before = await meter.backend_cpu()
    statements_before, cpu_before = meter.statements, time.process_time()
    started = time.perf_counter()
    counted_from = started + min(1.0, duration / 10)
    deadline = started + duration
    all_units = 0

    async def loop(task: int) -> None:
        nonlocal all_units
        n = 0
        while (begun := time.perf_counter()) < deadline:
            await unit(task, n)
            n += 1
            all_units += 1
            done = time.perf_counter()
            if counted_from <= done <= deadline:
                result.units += 1
                result.latencies.append(done - begun)

    await asyncio.gather(*(loop(task) for task in range(concurrency)))
    cpu_after, server_after = time.process_time(), await meter.backend_cpu()
    result.seconds = deadline - counted_from
    result.all_units = max(1, all_units)
    result.statements_per_unit = (meter.statements - statements_before) / result.all_units
    result.client_cpu_ms_per_unit = (cpu_after - cpu_before) * 1000 / result.all_units
    if server_after:
        server = sum(seconds - server_before.get(pid, 0.0) for pid, seconds in server_after.items())
        result.server_cpu_ms_per_unit = server * 1000 / result.all_units
    return result


async def open_accounts(container: Container, run: str, concurrency: int) -> None:
    """Book one entry on every pair (and one on the hot account) so that every account exists before timing."""

    async def task_accounts(task: int) -> None:
        async with container.db.unit_of_work() as session:
            await container.ledger.book_many(
                session, [draft(f"{run}:open", task, -1, index, hot=False) for index in range(PAIRS_PER_TASK)]
            )

    await asyncio.gather(*(task_accounts(task) for task in range(concurrency)))
    await container.ledger.transfer(draft(f"{run}:open", 0, -1, 0, hot=True))


async def bench(url: str, concurrency: int, duration: float) -> dict[str, Any]:
    settings = Settings(  # type: ignore[call-arg]
        database_url=url, master_key=MASTER_KEY, database_pool_size=concurrency + 2
    )
    container = Container.build(settings)
    engine = container.db.engine
    ledger = container.ledger
    run = new_id("run")[4:]
    try:
        server_version = await prepare(engine)
        await open_accounts(container, run, concurrency)
        meter = Meter(engine)
        insert_one = text("INSERT INTO bench_commit_baseline (task, n) VALUES (:task, :n)")

        async def commit_one(task: int, n: int) -> None:
            async with engine.begin() as connection:
                await connection.execute(insert_one, {"task": task, "n": n})

        def single(hot: bool) -> Callable[[int, int], Awaitable[None]]:
            tag = f"{run}:{'hot-' if hot else ''}single"

            async def unit(task: int, n: int) -> None:
                await ledger.transfer(draft(tag, task, n, n % PAIRS_PER_TASK, hot=hot))

            return unit

        def batched(hot: bool) -> Callable[[int, int], Awaitable[None]]:
            tag = f"{run}:{'hot-' if hot else ''}batched"

            async def unit(task: int, n: int) -> None:
                drafts = [draft(tag, task, n, index, hot=hot) for index in range(BATCH)]
                async with container.db.unit_of_work() as session:
                    await ledger.book_many(session, drafts)

            return unit

        plan: list[tuple[str, int, Callable[[int, int], Awaitable[None]]]] = [
            ("baseline: 1-row commit", 0, commit_one),
            ("single", 1, single(False)),
            ("batched (100)", BATCH, batched(False)),
            ("hot single", 1, single(True)),
            ("hot batched (100)", BATCH, batched(True)),
            ("baseline: 1-row commit (again)", 0, commit_one),
        ]
        measured: list[Measured] = []
        for name, entries, unit in plan:
            print(f"  {name} ...", file=sys.stderr, flush=True)
            measured.append(await measure(name, entries, concurrency, duration, meter, unit))
        report = await verify_ledger(container.db)
    finally:
        await container.close()
    if not report.ok:
        for violation in report.violations[:20]:
            print(f"VIOLATION {violation.check} {violation.subject}: {violation.detail}", file=sys.stderr)
        raise SystemExit(f"verify_ledger found {len(report.violations)} violation(s): the ledger is broken")
    baselines = [m for m in measured if m.entries_per_unit == 0]
    baseline = sum(m.units_per_second for m in baselines) / len(baselines)
    rows: list[dict[str, Any]] = []
    for m in measured:
        entries_per_second = m.units_per_second * m.entries_per_unit
        rows.append(
            {
                "workload": m.name,
                "entries_per_unit": m.entries_per_unit,
                "units": m.units,
                "seconds": round(m.seconds, 2),
                "units_per_second": round(m.units_per_second, 1),
                "entries_per_second": round(entries_per_second, 1),
                "postings_per_second": round(entries_per_second * 2, 1),
                "p50_ms": round(m.percentile(0.50), 2),
                "p99_ms": round(m.percentile(0.99), 2),
                "units_vs_baseline": round(m.units_per_second / baseline, 3),
                "entries_vs_baseline": round(entries_per_second / baseline, 3)
                if m.entries_per_unit
                else None,
                "statements_per_unit": round(m.statements_per_unit, 1),
                "client_cpu_ms_per_unit": round(m.client_cpu_ms_per_unit, 2),
                "server_cpu_ms_per_unit": (
                    None if m.server_cpu_ms_per_unit is None else round(m.server_cpu_ms_per_unit, 2)
                ),
            }
        )
    return {
        "benchmark": "ledger_postings",
        "machine": {**machine_of(url), "postgresql": server_version},
        "concurrency": concurrency,
        "duration_seconds": duration,
        "pairs_per_task": PAIRS_PER_TASK,
        "batch": BATCH,
        "baseline_commits_per_second": round(baseline, 1),
        "verify_ledger": {
            "ok": report.ok,
            "accounts": report.accounts,
            "entries": report.entries,
            "postings": report.postings,
        },
        "results": rows,
    }


def print_table(out: dict[str, Any]) -> None:
    header = (
        f"{'workload':<31} {'units/s':>9} {'entries/s':>10} {'postings/s':>11} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'units/s vs base':>15} {'entries/s vs base':>17} {'stmts/unit':>10} {'cpu ms/unit':>11} "
        f"{'pg cpu ms/unit':>14}"
    )
    print(header)
    print("-" * len(header))
    for row in out["results"]:
        entries = "" if row["entries_per_unit"] == 0 else f"{row['entries_per_second']:>10.0f}"
        postings = "" if row["entries_per_unit"] == 0 else f"{row['postings_per_second']:>11.0f}"
        versus = "" if row["entries_vs_baseline"] is None else f"{row['entries_vs_baseline']:>16.2f}x"
        server = "" if row["server_cpu_ms_per_unit"] is None else f"{row['server_cpu_ms_per_unit']:.2f}"
        print(
            f"{row['workload']:<31} {row['units_per_second']:>9.0f} {entries:>10} {postings:>11} "
            f"{row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f} {row['units_vs_baseline']:>14.2f}x {versus:>17} "
            f"{row['statements_per_unit']:>10.1f} {row['client_cpu_ms_per_unit']:>11.2f} {server:>14}"
        )
    verified = out["verify_ledger"]
    print(
        f"verify_ledger: ok ({verified['accounts']} accounts, {verified['entries']} entries, "
        f"{verified['postings']} postings)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("PAYMUX_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1/paymux_bench"),
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per workload (default 10)")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent tasks (default 16)")
    parser.add_argument("--quick", action="store_true", help="5 seconds per workload")
    args = parser.parse_args()
    if make_url(args.database_url).get_backend_name() not in {"postgresql", "postgres"}:
        parser.error("this benchmark runs on PostgreSQL")
    duration = 5.0 if args.quick else args.duration

    asyncio.run(ensure_database(args.database_url))
    migrations.upgrade(args.database_url)
    out = asyncio.run(bench(args.database_url, args.concurrency, duration))
    print_table(out)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "ledger_postings.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
