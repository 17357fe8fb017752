"""Concurrency on PostgreSQL (docs/ledger.md, Concurrency): the guarded UPDATE keeps every floored account at or
above its floor whatever the interleaving, across connections and across processes, and holds cannot write-skew.

A poller on its own connection reads the wallet row while the debits run: it must never see a negative balance,
and since only debits run, never see the balance go up.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from paymux.container import Container
from paymux.core.clock import FrozenClock
from paymux.core.db import Database
from paymux.ledger.accounts import AccountSpec
from paymux.ledger.entries import EntryKind
from paymux.ledger.errors import InsufficientFunds
from paymux.ledger.models import Hold, JournalEntry, LedgerAccount
from paymux.ledger.service import HoldDraft, LedgerService
from tests.ledger.support import AccountState, balance, count, fund, move, next_key, state, wallet

pytestmark = pytest.mark.postgres

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
SINK = wallet("merchant", floor=None)


@asynccontextmanager
async def poller(url: str, code: str) -> AsyncIterator[list[tuple[int, int]]]:
    """Reads (balance, pending_out) of one account in a loop on its own connection until the block ends."""
    readings: list[tuple[int, int]] = []
    stop = asyncio.Event()
    db = Database(url, pool_size=1, max_overflow=0)

    async def poll() -> None:
        statement = select(LedgerAccount.balance, LedgerAccount.pending_out).where(LedgerAccount.code == code)
        while True:
            async with db.reading() as session:
                row = (await session.execute(statement)).one()
            readings.append((row.balance, row.pending_out))
            if stop.is_set():
                return
            await asyncio.sleep(0.001)

    task = asyncio.create_task(poll())
    try:
        yield readings
    finally:
        stop.set()
        await task
        await db.dispose()


def assert_never_overdrawn_and_only_down(readings: list[tuple[int, int]], final: int) -> None:
    assert len(readings) >= 5, readings  # the poller did run alongside the debits
    balances = [balance for balance, _ in readings]
    assert min(balances) >= 0, balances
    assert all(later <= earlier for earlier, later in itertools.pairwise(balances)), balances
    assert balances[-1] == final


async def funded_wallet(container: Container, name: str, amount: int) -> AccountSpec:
    spec = wallet(name)
    await container.ledger.open_account(spec)
    await fund(container.ledger, spec, amount)
    return spec


async def debit_outcome(ledger: LedgerService, source: AccountSpec, amount: int, key: str) -> bool:
    try:
        await ledger.transfer(move(source, SINK, amount, key=key))
    except InsufficientFunds:
        return False
    return True


async def entries_with_prefix(db: Database, prefix: str) -> int:
    async with db.reading() as session:
        found = await session.execute(
            select(func.count())
            .select_from(JournalEntry)
            .where(JournalEntry.idempotency_key.like(f"{prefix}%"))
        )
        return int(found.scalar_one())


# ---------------------------------------------------------------------------------------------- debits


@pytest.mark.slow
async def test_500_concurrent_debits_from_20_connections_never_overdraw(
    container: Container, clock: FrozenClock, database_url: str
) -> None:
    hot = await funded_wallet(container, "hot", 10_000)
    db = Database(database_url, pool_size=20, max_overflow=0)
    ledger = LedgerService(db, clock)
    try:
        async with poller(database_url, hot.code) as readings:
            outcomes = await asyncio.gather(
                *(debit_outcome(ledger, hot, 50, f"pool-debit-{index}") for index in range(500))
            )
    finally:
        await db.dispose()
    assert (outcomes.count(True), outcomes.count(False)) == (200, 300)
    assert await state(container.db, hot.code) == AccountState(0, 0, 0)
    assert await balance(container.db, SINK.code) == 10_000
    assert await entries_with_prefix(container.db, "pool-debit-") == 200
    assert_never_overdrawn_and_only_down(readings, final=0)


@pytest.mark.slow
async def test_500_debits_from_4_processes_never_overdraw(container: Container, database_url: str) -> None:
    hot = await funded_wallet(container, "hot", 10_000)
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.ledger.debit_worker",
            database_url,
            "hot",
            "merchant",
            f"process-{number}",
            "125",
            "50",
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for number in range(4)
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None
            ready = await asyncio.wait_for(worker.stdout.readline(), timeout=60)
            assert ready == b"ready\n", ready
        async with poller(database_url, hot.code) as readings:
            results = await asyncio.wait_for(
                asyncio.gather(*(worker.communicate(b"go\n") for worker in workers)), timeout=240
            )
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()
    counts = []
    for worker, (stdout, stderr) in zip(workers, results, strict=True):
        assert worker.returncode == 0, stderr.decode()
        counts.append(json.loads(stdout))
    assert sum(result["ok"] for result in counts) == 200, counts
    assert sum(result["insufficient"] for result in counts) == 300, counts
    assert await state(container.db, hot.code) == AccountState(0, 0, 0)
    assert await balance(container.db, SINK.code) == 10_000
    assert await entries_with_prefix(container.db, "process-") == 200
    assert_never_overdrawn_and_only_down(readings, final=0)


async def test_concurrent_first_postings_open_an_account_once(container: Container) -> None:
    fresh = wallet("fresh")
    await asyncio.gather(*(fund(container.ledger, fresh, 10) for _ in range(20)))
    assert await state(container.db, fresh.code) == AccountState(200, 0, 0)
    async with container.db.reading() as session:
        opened = await session.execute(
            select(func.count()).select_from(LedgerAccount).where(LedgerAccount.code == fresh.code)
        )
        assert opened.scalar_one() == 1


async def test_concurrent_first_debits_of_an_overdraft_account_open_it_once(container: Container) -> None:
    """An account with an overdraft limit, never opened: concurrent first debits each open it or find it opened,
    and the limit still holds (a debit is refused only by the floor, never because another one opened it)."""
    line = wallet("credit-line", floor=-500)
    outcomes = await asyncio.gather(
        *(debit_outcome(container.ledger, line, 10, next_key("overdraft")) for _ in range(60))
    )
    assert (outcomes.count(True), outcomes.count(False)) == (50, 10)
    assert await state(container.db, line.code) == AccountState(-500, 0, 0)


async def test_concurrent_bookings_of_one_key_book_once(container: Container) -> None:
    hot = await funded_wallet(container, "hot", 1_000)
    draft = move(hot, SINK, 50, key="pay-once")
    ids = await asyncio.gather(*(container.ledger.transfer(draft) for _ in range(20)))
    assert len(set(ids)) == 1
    assert await balance(container.db, hot.code) == 950
    assert await entries_with_prefix(container.db, "pay-once") == 1


# ---------------------------------------------------------------------------------------------- holds


def hold_draft(clock: FrozenClock, source: AccountSpec, amount: int) -> HoldDraft:
    key = next_key("race-hold")
    return HoldDraft(key, source, SINK, amount, "test", key, clock.now() + timedelta(hours=1))


async def place(container: Container, draft: HoldDraft) -> str:
    async with container.db.unit_of_work() as session:
        return (await container.ledger.hold(session, draft)).id


async def wait_for_a_lock_wait(db: Database) -> None:
    """Until some session of this database waits for a row lock (the one the test holds)."""
    waiting = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    for _ in range(1_000):
        async with db.reading() as session:
            if (await session.execute(waiting)).scalar_one() > 0:
                return
        await asyncio.sleep(0.01)
    raise AssertionError("the second transaction never waited for the first one's lock")


async def race(
    container: Container, first: Callable[[AsyncSession], Awaitable[object]], second: Awaitable[T]
) -> T:
    """Run `first(session)` in an open unit of work, start `second` while it is still open, let `second` block on
    the row lock, then commit the first and return what the second did (or raise what it raised)."""
    async with container.db.unit_of_work() as session:
        await first(session)
        task = asyncio.ensure_future(second)
        await wait_for_a_lock_wait(container.db)
    return await task


async def test_two_racing_holds_cannot_both_take_the_same_funds(
    container: Container, clock: FrozenClock
) -> None:
    """Write skew: each hold alone fits in 100, both do not; the second sees the first's pending_out."""
    hot = await funded_wallet(container, "hot", 100)
    first, second = hold_draft(clock, hot, 60), hold_draft(clock, hot, 60)
    with pytest.raises(InsufficientFunds):
        await race(container, lambda session: container.ledger.hold(session, first), place(container, second))
    assert await state(container.db, hot.code) == AccountState(100, 60, 0)
    async with container.db.reading() as session:
        keys = (await session.execute(select(Hold.idempotency_key))).scalars().all()
    assert keys == [first.idempotency_key]


async def test_a_hold_racing_a_debit_cannot_overdraw(container: Container, clock: FrozenClock) -> None:
    hot = await funded_wallet(container, "hot", 100)
    debit = move(hot, SINK, 60)
    with pytest.raises(InsufficientFunds):
        await race(
            container,
            lambda session: container.ledger.book(session, debit),
            place(container, hold_draft(clock, hot, 60)),
        )
    assert await state(container.db, hot.code) == AccountState(40, 0, 0)


async def test_many_racing_holds_and_debits_never_overdraw(
    container: Container, clock: FrozenClock, database_url: str
) -> None:
    hot = await funded_wallet(container, "hot", 1_200)

    async def hold_outcome() -> bool:
        try:
            await place(container, hold_draft(clock, hot, 60))
        except InsufficientFunds:
            return False
        return True

    async with poller(database_url, hot.code) as readings:
        outcomes = await asyncio.gather(
            *(hold_outcome() for _ in range(25)),
            *(debit_outcome(container.ledger, hot, 60, next_key("race-debit")) for _ in range(25)),
        )
    assert outcomes.count(True) == 20  # 1,200 / 60
    held = outcomes[:25].count(True)
    assert await state(container.db, hot.code) == AccountState(1_200 - 60 * (20 - held), 60 * held, 0)
    assert await count(container.db, Hold) == held
    assert all(balance - pending_out >= 0 for balance, pending_out in readings), readings


async def test_expiry_skips_a_hold_that_is_being_posted(container: Container, clock: FrozenClock) -> None:
    """expire_holds locks with SKIP LOCKED: a hold its payment has locked is neither waited for nor expired."""
    db, ledger = container.db, container.ledger
    hot = await funded_wallet(container, "hot", 100)
    draft = hold_draft(clock, hot, 60)
    hold_id = await place(container, draft)
    clock.advance(timedelta(hours=2))
    async with db.unit_of_work() as session:
        found = await ledger.pending_hold(session, draft.source_id)
        assert found is not None
        assert await asyncio.wait_for(ledger.expire_holds(), timeout=10) == 0
        await ledger.post_hold(session, found, kind=EntryKind.PAYMENT)
    assert await ledger.expire_holds() == 0
    assert (await ledger.get_hold(hold_id)).status == "posted"
    assert await state(db, hot.code) == AccountState(40, 0, 0)


async def test_concurrent_expiry_runs_expire_each_hold_once(container: Container, clock: FrozenClock) -> None:
    db, ledger = container.db, container.ledger
    hot = await funded_wallet(container, "hot", 1_000)
    for _ in range(10):
        await place(container, hold_draft(clock, hot, 10))
    assert await state(db, hot.code) == AccountState(1_000, 100, 0)
    clock.advance(timedelta(hours=2))
    expired = await asyncio.gather(*(ledger.expire_holds(limit=3) for _ in range(5)))
    assert sum(expired) == 10, expired
    assert await ledger.expire_holds() == 0
    assert await state(db, hot.code) == AccountState(1_000, 0, 0)
    assert await state(db, SINK.code) == AccountState(0, 0, 0)


# ---------------------------------------------------------------------------------------------- idempotency


async def test_a_replay_racing_the_first_booking_returns_its_entry(container: Container) -> None:
    """The replay's UPDATE waits for the first booking's lock; once it commits, the replay's insert hits the
    unique key and `transfer` answers with the first entry."""
    hot = await funded_wallet(container, "hot", 100)
    draft = move(hot, SINK, 50, key="replayed")
    booked: list[str] = []

    async def first(session: AsyncSession) -> None:
        booked.append(await container.ledger.book(session, draft))

    assert await race(container, first, container.ledger.transfer(draft)) == booked[0]
    assert await balance(container.db, hot.code) == 50


async def test_a_replay_racing_a_booking_that_spent_the_funds_returns_its_entry(container: Container) -> None:
    hot = await funded_wallet(container, "hot", 50)
    draft = move(hot, SINK, 50, key="replayed")
    booked: list[str] = []

    async def first(session: AsyncSession) -> None:
        booked.append(await container.ledger.book(session, draft))

    assert await race(container, first, container.ledger.transfer(draft)) == booked[0]
    assert await balance(container.db, hot.code) == 0


# ---------------------------------------------------------------------------------------------- batches


async def test_batches_over_shared_accounts_in_any_order_do_not_deadlock(
    container: Container, clock: FrozenClock, database_url: str
) -> None:
    """Each batch locks its accounts in one statement, in code order, whatever order its entries name them in:
    batches over the same accounts queue and none deadlocks (PostgreSQL would abort one with a deadlock error)."""
    wallets = [await funded_wallet(container, f"shared-{index}", 10_000) for index in range(4)]
    db = Database(database_url, pool_size=16, max_overflow=0)
    ledger = LedgerService(db, clock)
    # The accounts seen once, so that every batch takes the one-statement path.
    await ledger.transfer(move(wallets[0], wallets[1], 1))
    await ledger.transfer(move(wallets[2], wallets[3], 1))
    pairs = list(itertools.permutations(wallets, 2))

    async def batch(index: int) -> None:
        rotated = pairs[index % len(pairs) :] + pairs[: index % len(pairs)]
        drafts = [
            move(debit, credit, 10, key=f"batch-{index}-{n}") for n, (debit, credit) in enumerate(rotated)
        ]
        async with db.unit_of_work() as session:
            await ledger.book_many(session, drafts)

    try:
        await asyncio.gather(*(batch(index) for index in range(48)))
    finally:
        await db.dispose()
    # Every wallet paid and received the same: each ends where it started (but for the two warm-up cents).
    balances = [await balance(container.db, spec.code) for spec in wallets]
    assert balances == [9_999, 10_001, 9_999, 10_001]
    assert await entries_with_prefix(container.db, "batch-") == 48 * len(pairs)
