"""`verify_ledger` and `paymux ledger verify` (docs/ledger.md): clean on a healthy ledger, and each invariant
reported when raw SQL corrupts the database the way a bug or a hand edit would.

The suite checks the ledger again after every test, so each test that corrupts it repairs it before it ends (and
empties the ledger tables in a `finally`, should an assertion fail first).
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from paymux.container import Container
from paymux.core.clock import FrozenClock
from paymux.core.db import Database
from paymux.ledger.accounts import AccountSpec
from paymux.ledger.entries import EntryKind
from paymux.ledger.service import HoldDraft, LedgerService
from paymux.ledger.verify import LedgerReport, Violation, verify_ledger
from tests.conftest import CLI_ON_SQLITE_ONLY
from tests.ledger.support import empty_ledger, fund, move, next_key, wallet

SHOP = wallet("shop", floor=None)


async def healthy_ledger(ledger: LedgerService, db: Database, clock: FrozenClock) -> dict[str, Any]:
    """Top-ups, a payment, a posted, a voided and a pending hold, and a reversal; returns what was made."""
    alice, bob = wallet("alice"), wallet("bob")
    for spec in (alice, bob):
        await ledger.open_account(spec)
    await fund(ledger, alice, 1_000)
    await fund(ledger, bob, 500)
    payment = await ledger.transfer(move(alice, SHOP, 100, kind=EntryKind.PAYMENT))
    async with db.unit_of_work() as session:
        await ledger.reverse(session, payment)
    holds = []
    for amount in (200, 50, 70):
        key = next_key("hold")
        async with db.unit_of_work() as session:
            hold = await ledger.hold(
                session,
                HoldDraft(key, alice, SHOP, amount, "test", key, clock.now() + timedelta(hours=1)),
            )
        holds.append(hold.source_id)
    async with db.unit_of_work() as session:
        first = await ledger.pending_hold(session, holds[0])
        assert first is not None
        await ledger.post_hold(session, first, kind=EntryKind.PAYMENT, amount=150)
    async with db.unit_of_work() as session:
        second = await ledger.pending_hold(session, holds[1])
        assert second is not None
        await ledger.void_hold(session, second)
    return {"alice": alice, "bob": bob, "payment": payment, "pending_hold": holds[2]}


@pytest.fixture
async def corruptible(container: Container) -> AsyncIterator[Container]:
    """The test's container; should the test fail before its repair, the ledger is emptied so that the suite's
    own check at teardown reports the failure once, not twice."""
    yield container
    if not (await verify_ledger(container.db)).ok:
        await empty_ledger(container.db)


async def account_id(db: Database, spec: AccountSpec) -> str:
    async with db.reading() as session:
        found = (
            await session.execute(
                text("SELECT id FROM ledger_accounts WHERE code = :code"), {"code": spec.code}
            )
        ).scalar_one()
    return str(found)


def checks(report: LedgerReport) -> list[tuple[str, str]]:
    return sorted((violation.check, violation.subject) for violation in report.violations)


INSERT_ENTRY = (
    "INSERT INTO ledger_entries (id, idempotency_key, kind, source_type, source_id, created_at)"
    " VALUES (:id, :id, 'adjustment', 'test', :id, :now)"
)
INSERT_POSTING = (
    "INSERT INTO ledger_postings (id, entry_id, account_id, account_kind, direction, amount, currency,"
    " balance_after, created_at) VALUES (:id, :entry, :account, 'wallet', :direction, :amount, :currency, 0, :now)"
)


async def insert_entry(session: AsyncSession, entry_id: str, now: Any) -> None:
    await session.execute(text(INSERT_ENTRY), {"id": entry_id, "now": now})


async def insert_posting(
    session: AsyncSession,
    posting_id: str,
    entry_id: str,
    account: str,
    direction: str,
    amount: int,
    now: Any,
    currency: str = "USD",
) -> None:
    await session.execute(
        text(INSERT_POSTING),
        {
            "id": posting_id,
            "entry": entry_id,
            "account": account,
            "direction": direction,
            "amount": amount,
            "currency": currency,
            "now": now,
        },
    )


async def shift(db: Database, spec: AccountSpec, column: str, by: int) -> None:
    """Move one of an account's running sums by raw SQL (accounts are not append-only)."""
    async with db.unit_of_work() as session:
        await session.execute(
            text(f"UPDATE ledger_accounts SET {column} = {column} + :by WHERE code = :code"),  # noqa: S608
            {"by": by, "code": spec.code},
        )


# ---------------------------------------------------------------------------------------------- healthy


async def test_an_empty_ledger_verifies(container: Container) -> None:
    report = await verify_ledger(container.db)
    assert report == LedgerReport(accounts=0, entries=0, postings=0, pending_holds=0, violations=[])
    assert report.ok


async def test_a_healthy_ledger_verifies_with_its_counts(container: Container, clock: FrozenClock) -> None:
    await healthy_ledger(container.ledger, container.db, clock)
    report = await verify_ledger(container.db)
    assert report.violations == []
    assert report.ok
    # alice, bob, shop, funding; 2 top-ups + payment + reversal + the posted hold; 2 postings each; 1 pending.
    assert (report.accounts, report.entries, report.postings, report.pending_holds) == (4, 5, 10, 1)


# ---------------------------------------------------------------------------------------------- violations


async def test_an_account_balance_that_is_not_the_sum_of_its_postings(
    corruptible: Container, clock: FrozenClock
) -> None:
    db = corruptible.db
    await healthy_ledger(corruptible.ledger, db, clock)
    await shift(db, SHOP, "balance", 7)
    report = await verify_ledger(db)
    assert report.violations == [
        Violation("account_balance", SHOP.code, "balance 157 but its postings sum to 150"),
    ]
    assert not report.ok
    await shift(db, SHOP, "balance", -7)
    assert (await verify_ledger(db)).ok


async def test_pending_sums_that_are_not_those_of_the_pending_holds(
    corruptible: Container, clock: FrozenClock
) -> None:
    db = corruptible.db
    made = await healthy_ledger(corruptible.ledger, db, clock)
    alice = made["alice"]
    await shift(db, SHOP, "pending_in", 3)
    assert (await verify_ledger(db)).violations == [
        Violation(
            "account_pending", SHOP.code, "pending_out 0 / pending_in 73 but its pending holds give 0 / 70"
        ),
    ]
    await shift(db, SHOP, "pending_in", -3)

    # A hold closed behind the ledger's back leaves both its accounts' pending sums unexplained.
    async with db.unit_of_work() as session:
        await session.execute(
            text("UPDATE ledger_holds SET status = 'voided' WHERE source_id = :source"),
            {"source": made["pending_hold"]},
        )
    report = await verify_ledger(db)
    assert sorted(report.violations, key=lambda v: v.subject) == [
        Violation(
            "account_pending", alice.code, "pending_out 70 / pending_in 0 but its pending holds give 0 / 0"
        ),
        Violation(
            "account_pending", SHOP.code, "pending_out 0 / pending_in 70 but its pending holds give 0 / 0"
        ),
    ]
    assert report.pending_holds == 0
    async with db.unit_of_work() as session:
        await session.execute(
            text("UPDATE ledger_holds SET status = 'pending' WHERE source_id = :source"),
            {"source": made["pending_hold"]},
        )
    assert (await verify_ledger(db)).ok


async def test_an_available_balance_below_the_floor(corruptible: Container, clock: FrozenClock) -> None:
    """The CHECK constraint refuses this corruption, so the test lifts it for the time of the corruption: on
    SQLite for its one connection, on PostgreSQL by dropping and re-adding the constraint."""
    db = corruptible.db
    made = await healthy_ledger(corruptible.ledger, db, clock)
    bob = made["bob"]  # balance 500, floor 0
    add_back = (
        "ALTER TABLE ledger_accounts ADD CONSTRAINT ck_ledger_accounts_floor"
        " CHECK (floor IS NULL OR balance - pending_out >= floor)"
    )
    try:
        async with db.unit_of_work() as session:
            if db.is_sqlite:
                await session.execute(text("PRAGMA ignore_check_constraints = ON"))
            else:
                await session.execute(
                    text("ALTER TABLE ledger_accounts DROP CONSTRAINT ck_ledger_accounts_floor")
                )
            await session.execute(
                text("UPDATE ledger_accounts SET floor = 501 WHERE code = :c"), {"c": bob.code}
            )
            if db.is_sqlite:
                await session.execute(text("PRAGMA ignore_check_constraints = OFF"))
        assert (await verify_ledger(db)).violations == [
            Violation("account_floor", bob.code, "available 500 is below the floor 501"),
        ]
    finally:
        async with db.unit_of_work() as session:
            await session.execute(
                text("UPDATE ledger_accounts SET floor = 0 WHERE code = :c"), {"c": bob.code}
            )
            if not db.is_sqlite:
                await session.execute(text(add_back))
    assert (await verify_ledger(db)).ok
    # The constraint is back in force.
    with pytest.raises(IntegrityError, match="ck_ledger_accounts_floor"):
        await overdraw(db, bob)
    assert (await verify_ledger(db)).ok


async def overdraw(db: Database, spec: AccountSpec) -> None:
    async with db.unit_of_work() as session:
        await session.execute(
            text("UPDATE ledger_accounts SET balance = -1 WHERE code = :c"), {"c": spec.code}
        )


async def test_an_entry_with_fewer_than_two_postings(corruptible: Container, clock: FrozenClock) -> None:
    """An entry with no posting is not unbalanced, so PostgreSQL's deferred trigger lets it through too."""
    db = corruptible.db
    made = await healthy_ledger(corruptible.ledger, db, clock)
    async with db.unit_of_work() as session:
        await insert_entry(session, "je_empty", clock.now())
    assert (await verify_ledger(db)).violations == [Violation("entry_postings", "je_empty", "0 posting(s)")]
    # Repaired the append-only way: two postings that cancel out on one account.
    alice = await account_id(db, made["alice"])
    async with db.unit_of_work() as session:
        await insert_posting(session, "btx_fix1", "je_empty", alice, "debit", 1, clock.now())
        await insert_posting(session, "btx_fix2", "je_empty", alice, "credit", 1, clock.now())
    assert (await verify_ledger(db)).ok


async def test_an_entry_that_does_not_balance_on_sqlite(corruptible: Container, clock: FrozenClock) -> None:
    db = corruptible.db
    if not db.is_sqlite:
        pytest.skip("PostgreSQL's deferred trigger refuses to commit an unbalanced entry (see test_service)")
    made = await healthy_ledger(corruptible.ledger, db, clock)
    alice = made["alice"]
    # A third posting on the payment, and alice's balance moved with it so that only the entry is wrong.
    alice_id = await account_id(db, alice)
    async with db.unit_of_work() as session:
        await insert_posting(session, "btx_rogue", made["payment"], alice_id, "credit", 5, clock.now())
        await session.execute(
            text("UPDATE ledger_accounts SET balance = balance + 5 WHERE code = :c"), {"c": alice.code}
        )
    assert (await verify_ledger(db)).violations == [
        Violation("entry_balances", made["payment"], "debits minus credits in USD is -5"),
    ]
    # An entry of one posting breaks both entry rules (and alice's balance, which is left as it is here).
    async with db.unit_of_work() as session:
        await insert_entry(session, "je_single", clock.now())
        await insert_posting(session, "btx_single", "je_single", alice_id, "debit", 9, clock.now())
    assert checks(await verify_ledger(db)) == sorted(
        [
            ("entry_balances", made["payment"]),
            ("entry_balances", "je_single"),
            ("entry_postings", "je_single"),
            ("account_balance", alice.code),
        ]
    )
    # SQLite has no DELETE trigger (its test databases are emptied with DELETE): the repair deletes.
    async with db.unit_of_work() as session:
        await session.execute(text("DELETE FROM ledger_postings WHERE id IN ('btx_rogue', 'btx_single')"))
        await session.execute(text("DELETE FROM ledger_entries WHERE id = 'je_single'"))
        await session.execute(
            text("UPDATE ledger_accounts SET balance = balance - 5 WHERE code = :c"), {"c": alice.code}
        )
    assert (await verify_ledger(db)).ok


async def test_a_posting_in_another_currency_than_its_account(
    corruptible: Container, clock: FrozenClock
) -> None:
    """A balanced EUR entry posted to two USD accounts: PostgreSQL's trigger balances per currency and lets it
    through; only verify sees it."""
    db = corruptible.db
    made = await healthy_ledger(corruptible.ledger, db, clock)
    alice, bob = made["alice"], made["bob"]
    try:
        alice_id, bob_id = await account_id(db, alice), await account_id(db, bob)
        async with db.unit_of_work() as session:
            await insert_entry(session, "je_eur", clock.now())
            await insert_posting(session, "btx_eur1", "je_eur", alice_id, "debit", 10, clock.now(), "EUR")
            await insert_posting(session, "btx_eur2", "je_eur", bob_id, "credit", 10, clock.now(), "EUR")
            for spec, by in ((alice, -10), (bob, 10)):
                await session.execute(
                    text("UPDATE ledger_accounts SET balance = balance + :by WHERE code = :c"),
                    {"by": by, "c": spec.code},
                )
        assert sorted((await verify_ledger(db)).violations, key=lambda v: v.subject) == [
            Violation("posting_currency", "btx_eur1", "EUR posted to a USD account"),
            Violation("posting_currency", "btx_eur2", "EUR posted to a USD account"),
        ]
    finally:
        # Nothing appended can move a posting to another currency: start the ledger over.
        await empty_ledger(db)
    assert (await verify_ledger(db)).ok


async def test_every_violation_is_reported_at_once(corruptible: Container, clock: FrozenClock) -> None:
    db = corruptible.db
    made = await healthy_ledger(corruptible.ledger, db, clock)
    try:
        await shift(db, SHOP, "balance", 1)
        await shift(db, made["bob"], "balance", 2)
        await shift(db, made["bob"], "pending_out", 3)
        async with db.unit_of_work() as session:
            await insert_entry(session, "je_empty", clock.now())
        report = await verify_ledger(db)
        assert checks(report) == sorted(
            [
                ("account_balance", SHOP.code),
                ("account_balance", made["bob"].code),
                ("account_pending", made["bob"].code),
                ("entry_postings", "je_empty"),
            ]
        )
        assert (report.accounts, report.entries) == (4, 6)
    finally:
        await empty_ledger(db)


# ---------------------------------------------------------------------------------------------- the CLI


def paymux(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    executable = Path(sys.executable).with_name("paymux")
    command = [str(executable)] if executable.exists() else [sys.executable, "-m", "paymux"]
    return subprocess.run(
        [*command, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


async def _book_healthy(url: str) -> None:
    db = Database(url)
    try:
        clock = FrozenClock()
        await healthy_ledger(LedgerService(db, clock), db, clock)
    finally:
        await db.dispose()


@pytest.mark.slow  # five runs of the `paymux` command, a couple of seconds each
@CLI_ON_SQLITE_ONLY
def test_the_cli_verifies_a_database_and_exits_1_on_a_violation(tmp_path: Path) -> None:
    path = tmp_path / "cli.db"
    env = {
        **os.environ,
        "PAYMUX_DATABASE_URL": f"sqlite:///{path}",
        "PAYMUX_MASTER_KEY_FILE": str(tmp_path / "master.key"),
    }
    migrated = paymux(env, "migrate")
    assert migrated.returncode == 0, migrated.stderr

    asyncio.run(_book_healthy(f"sqlite:///{path}"))
    clean = paymux(env, "ledger", "verify", "--json")
    assert clean.returncode == 0, clean.stderr
    assert json.loads(clean.stdout) == {
        "ok": True,
        "accounts": 4,
        "entries": 5,
        "postings": 10,
        "pending_holds": 1,
        "violations": [],
    }
    plain = paymux(env, "ledger", "verify")
    assert plain.returncode == 0, plain.stderr
    assert "ledger ok" in plain.stderr
    assert "4 accounts, 5 entries, 10 postings, 1 pending holds" in plain.stderr

    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE ledger_accounts SET balance = balance + 7 WHERE code = ?", (SHOP.code,))
    connection.close()
    broken = paymux(env, "ledger", "verify", "--json")
    assert broken.returncode == 1, broken.stderr
    report = json.loads(broken.stdout)
    assert report["ok"] is False
    assert report["violations"] == [
        {
            "check": "account_balance",
            "subject": SHOP.code,
            "detail": "balance 157 but its postings sum to 150",
        }
    ]
    plain = paymux(env, "ledger", "verify")
    assert plain.returncode == 1
    assert "account_balance" in plain.stderr
    assert SHOP.code in plain.stderr
    assert "1 violation(s)" in plain.stderr
