"""Checks every ledger invariant against the database as it is: `paymux ledger verify` and the test suite run it.

Each check is one set-based query, so it reads the whole ledger once whatever its size and reports every
violation, not just the first.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, case, func, literal, or_, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from paymux.core.db import Database
from paymux.ledger.models import Hold, JournalEntry, LedgerAccount, Posting

_SIGNED = case((Posting.direction == "debit", Posting.amount), else_=-Posting.amount)


@dataclass(frozen=True, slots=True)
class Violation:
    check: str
    subject: str
    detail: str


@dataclass(frozen=True, slots=True)
class LedgerReport:
    accounts: int
    entries: int
    postings: int
    pending_holds: int
    violations: list[Violation]

    @property
    def ok(self) -> bool:
        return not self.violations


async def verify_ledger(db: Database) -> LedgerReport:
    async with db.reading() as session:
        violations = [
            *await _unbalanced_entries(session),
            *await _short_entries(session),
            *await _currency_mismatches(session),
            *await _balances_off(session),
            *await _pending_off(session),
            *await _floors_breached(session),
        ]
        counts = (
            await session.execute(
                select(
                    select(func.count()).select_from(LedgerAccount).scalar_subquery(),
                    select(func.count()).select_from(JournalEntry).scalar_subquery(),
                    select(func.count()).select_from(Posting).scalar_subquery(),
                    select(func.count()).select_from(Hold).where(Hold.status == "pending").scalar_subquery(),
                )
            )
        ).one()
    return LedgerReport(*counts, violations=violations)


async def _unbalanced_entries(session: AsyncSession) -> list[Violation]:
    """Every entry's debits equal its credits in each currency."""
    net = func.sum(_SIGNED)
    rows = await session.execute(
        select(Posting.entry_id, Posting.currency, net)
        .group_by(Posting.entry_id, Posting.currency)
        .having(net != 0)
    )
    return [
        Violation("entry_balances", entry_id, f"debits minus credits in {currency} is {total}")
        for entry_id, currency, total in rows
    ]


async def _short_entries(session: AsyncSession) -> list[Violation]:
    """An entry has at least two postings."""
    count = func.count(Posting.id)
    rows = await session.execute(
        select(JournalEntry.id, count)
        .outerjoin(Posting, Posting.entry_id == JournalEntry.id)
        .group_by(JournalEntry.id)
        .having(count < 2)
    )
    return [Violation("entry_postings", entry_id, f"{n} posting(s)") for entry_id, n in rows]


async def _currency_mismatches(session: AsyncSession) -> list[Violation]:
    """A posting is in its account's currency."""
    rows = await session.execute(
        select(Posting.id, Posting.currency, LedgerAccount.currency)
        .join(LedgerAccount, LedgerAccount.id == Posting.account_id)
        .where(Posting.currency != LedgerAccount.currency)
    )
    return [
        Violation("posting_currency", posting_id, f"{currency} posted to a {account_currency} account")
        for posting_id, currency, account_currency in rows
    ]


async def _balances_off(session: AsyncSession) -> list[Violation]:
    """Each account's balance is the sum of its postings, in its normal side."""
    in_normal_side = case(
        (Posting.direction == LedgerAccount.normal_side, Posting.amount), else_=-Posting.amount
    )
    total = func.coalesce(func.sum(in_normal_side), 0)
    rows = await session.execute(
        select(LedgerAccount.code, LedgerAccount.balance, total)
        .outerjoin(Posting, Posting.account_id == LedgerAccount.id)
        .group_by(LedgerAccount.id, LedgerAccount.code, LedgerAccount.balance)
        .having(LedgerAccount.balance != total)
    )
    return [
        Violation("account_balance", code, f"balance {balance} but its postings sum to {summed}")
        for code, balance, summed in rows
    ]


async def _pending_off(session: AsyncSession) -> list[Violation]:
    """Each account's pending sums equal its pending holds: a hold lowers the account on the side opposite the
    account's normal side (pending_out) and raises it otherwise (pending_in)."""
    pending = Hold.status == "pending"
    debit_leg = select(
        Hold.debit_account_id.label("account_id"), literal("debit").label("side"), Hold.amount.label("amount")
    ).where(pending)
    credit_leg = select(
        Hold.credit_account_id.label("account_id"),
        literal("credit").label("side"),
        Hold.amount.label("amount"),
    ).where(pending)
    legs = union_all(debit_leg, credit_leg).subquery()
    out = func.coalesce(func.sum(case((legs.c.side != LedgerAccount.normal_side, legs.c.amount), else_=0)), 0)
    in_ = func.coalesce(func.sum(case((legs.c.side == LedgerAccount.normal_side, legs.c.amount), else_=0)), 0)
    rows = await session.execute(
        select(LedgerAccount.code, LedgerAccount.pending_out, LedgerAccount.pending_in, out, in_)
        .outerjoin(legs, legs.c.account_id == LedgerAccount.id)
        .group_by(LedgerAccount.id, LedgerAccount.code, LedgerAccount.pending_out, LedgerAccount.pending_in)
        .having(or_(LedgerAccount.pending_out != out, LedgerAccount.pending_in != in_))
    )
    return [
        Violation(
            "account_pending",
            code,
            f"pending_out {pending_out} / pending_in {pending_in} but its pending holds give {held_out} / {held_in}",
        )
        for code, pending_out, pending_in, held_out, held_in in rows
    ]


async def _floors_breached(session: AsyncSession) -> list[Violation]:
    """No account's available balance is below its floor."""
    rows = await session.execute(
        select(
            LedgerAccount.code, LedgerAccount.balance, LedgerAccount.pending_out, LedgerAccount.floor
        ).where(
            and_(
                LedgerAccount.floor.is_not(None),
                LedgerAccount.balance - LedgerAccount.pending_out < LedgerAccount.floor,
            )
        )
    )
    return [
        Violation("account_floor", code, f"available {balance - pending_out} is below the floor {floor}")
        for code, balance, pending_out, floor in rows
    ]
