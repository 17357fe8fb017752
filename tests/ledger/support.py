"""Helpers shared by the ledger tests: account specs, one-line bookings and raw reads of the ledger tables."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from paymux.core.db import Database
from paymux.ledger.accounts import AccountKind, AccountSpec, Side
from paymux.ledger.entries import EntryDraft, EntryKind, transfer
from paymux.ledger.models import Hold, JournalEntry, LedgerAccount, Posting
from paymux.ledger.service import LedgerService

LEDGER_TABLES = ("ledger_postings", "ledger_holds", "ledger_entries", "ledger_accounts")

_keys = itertools.count(1)


def next_key(prefix: str = "k") -> str:
    return f"{prefix}-{next(_keys)}"


def wallet(name: str, currency: str = "USD", *, floor: int | None = 0) -> AccountSpec:
    return AccountSpec(
        code=f"wallet:{name}:{currency}", kind=AccountKind.WALLET, currency=currency, floor=floor
    )


def funding(currency: str = "USD", name: str = "bank") -> AccountSpec:
    return AccountSpec(code=f"funding:{name}:{currency}", kind=AccountKind.FUNDING, currency=currency)


def move(
    debit: AccountSpec,
    credit: AccountSpec,
    amount: int,
    *,
    key: str | None = None,
    kind: EntryKind = EntryKind.TRANSFER,
) -> EntryDraft:
    key = key or next_key("transfer")
    return transfer(
        key, debit=debit, credit=credit, amount=amount, kind=kind, source_type="test", source_id=key
    )


@dataclass(frozen=True)
class AccountState:
    balance: int
    pending_out: int
    pending_in: int


async def state(db: Database, code: str) -> AccountState | None:
    async with db.reading() as session:
        row = (
            await session.execute(
                select(LedgerAccount.balance, LedgerAccount.pending_out, LedgerAccount.pending_in).where(
                    LedgerAccount.code == code
                )
            )
        ).one_or_none()
    return None if row is None else AccountState(*row)


async def balance(db: Database, code: str) -> int:
    found = await state(db, code)
    assert found is not None, f"no account {code}"
    return found.balance


async def postings(db: Database, entry_id: str) -> list[tuple[str, str, int, str, int]]:
    """(account code, direction, amount, currency, balance_after) of an entry's postings, in booking order."""
    async with db.reading() as session:
        rows = await session.execute(
            select(
                LedgerAccount.code, Posting.direction, Posting.amount, Posting.currency, Posting.balance_after
            )
            .join(LedgerAccount, LedgerAccount.id == Posting.account_id)
            .where(Posting.entry_id == entry_id)
            .order_by(Posting.id)
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


async def entry(db: Database, entry_id: str) -> JournalEntry:
    async with db.reading() as session:
        found = await session.get(JournalEntry, entry_id)
    assert found is not None
    return found


async def hold_row(db: Database, hold_id: str) -> Hold:
    async with db.reading() as session:
        found = await session.get(Hold, hold_id)
    assert found is not None
    return found


async def count(db: Database, model: type[JournalEntry | Posting | LedgerAccount | Hold]) -> int:
    async with db.reading() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


async def fund(ledger: LedgerService, account: AccountSpec, amount: int) -> str:
    """Credit a wallet from its currency's funding account."""
    return await ledger.transfer(move(funding(account.currency), account, amount, key=next_key("fund")))


async def empty_ledger(db: Database) -> None:
    """Empty the ledger tables (SQLite allows DELETE; PostgreSQL's triggers refuse it, TRUNCATE fires none)."""
    async with db.unit_of_work() as session:
        await empty_ledger_in(session, sqlite=db.is_sqlite)


async def empty_ledger_in(session: AsyncSession, *, sqlite: bool) -> None:
    if sqlite:
        for table in LEDGER_TABLES:
            await session.execute(text(f"DELETE FROM {table}"))  # noqa: S608 - fixed table names
    else:
        await session.execute(text(f"TRUNCATE {', '.join(LEDGER_TABLES)}"))


def normal_side(spec: AccountSpec) -> Side:
    """The normal side written out independently of AccountKind.normal_side (docs/ledger.md's table)."""
    debit_normal = {"provider_clearing", "suspense", "funding"}
    return Side.DEBIT if spec.kind.value in debit_normal else Side.CREDIT
