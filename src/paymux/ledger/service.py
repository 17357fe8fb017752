"""Ledger use cases. Booking and holds run inside the caller's unit of work, so a payment's state change and its
postings commit together; the read side and the standalone transfer open their own.

Concurrency: an account's balance changes only through one conditional UPDATE per account and booking, which
takes the row lock and checks the floor against the row as it is when the lock is granted (PostgreSQL re-reads a
row that another transaction changed meanwhile). Accounts are locked in code order (on PostgreSQL, all of a
booking's in one statement once they exist: `_move_all`), so two bookings that touch the same accounts cannot
deadlock. A CHECK constraint on the table backs the floor up. The lock lasts until commit,
so a booking sends the unit of work's other changes first and callers book last: a merchant's accounts are
touched by each of its payments, and the time one holds them bounds how many the merchant takes per second.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy import (
    BigInteger,
    BindParameter,
    Row,
    String,
    Table,
    Update,
    bindparam,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from paymux.core.clock import Clock
from paymux.core.db import Database, UTCDateTime, conflict_insert
from paymux.core.ids import new_id
from paymux.gateway.permissions import Operation, require
from paymux.gateway.principal import Principal
from paymux.ledger.accounts import AccountKind, AccountSpec, Side
from paymux.ledger.entries import EntryDraft, EntryKind, Leg
from paymux.ledger.errors import (
    BalancesNeedMerchant,
    EntryNotFound,
    HoldNotFound,
    HoldNotPending,
    InsufficientFunds,
)
from paymux.ledger.models import Hold, JournalEntry, LedgerAccount, Posting

MAX_KNOWN_ACCOUNTS = 100_000
ACCOUNTS: Table = LedgerAccount.__table__  # type: ignore[assignment]  # declared tables are Tables
ENTRIES: Table = JournalEntry.__table__  # type: ignore[assignment]
POSTINGS: Table = Posting.__table__  # type: ignore[assignment]
# An account's id and what its spec is made of (code, kind, currency, owner, floor), read without an ORM object.
_SPEC_COLUMNS = (
    ACCOUNTS.c.id,
    ACCOUNTS.c.code,
    ACCOUNTS.c.kind,
    ACCOUNTS.c.currency,
    ACCOUNTS.c.merchant_id,
    ACCOUNTS.c.client_partner_id,
    ACCOUNTS.c.floor,
)


class AccountMismatch(ValueError):
    """A posting names an existing account with another currency or kind: a bug in the caller."""


class HoldStatus(StrEnum):
    PENDING = "pending"
    POSTED = "posted"
    VOIDED = "voided"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class HoldDraft:
    """Reserve `amount` to move from `debit` to `credit` later; the key names the hold for good."""

    idempotency_key: str
    debit: AccountSpec
    credit: AccountSpec
    amount: int
    source_type: str
    source_id: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class _Moved:
    """An account as one booking left it."""

    id: str
    balance: int
    pending_out: int
    floor: int | None


@dataclass(frozen=True, slots=True)
class CurrencyBalance:
    currency: str
    available: int
    pending: int


class LedgerService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock
        # Codes of accounts this process has seen exist (accounts are never deleted): see `_move_all`.
        self._existing: set[str] = set()

    # ------------------------------------------------------------------ booking (inside a unit of work)

    async def book(self, session: AsyncSession, draft: EntryDraft) -> str:
        """Book one entry; returns its id. The same idempotency key books once and returns the first entry."""
        return (await self.book_many(session, [draft]))[0]

    async def book_many(self, session: AsyncSession, drafts: Sequence[EntryDraft]) -> list[str]:
        """Book entries together: each account is updated once for the whole batch, in code order."""
        return await self._book(session, drafts, {})

    async def _book(
        self, session: AsyncSession, drafts: Sequence[EntryDraft], pending: Mapping[str, Mapping[str, int]]
    ) -> list[str]:
        """Book `drafts`, and change the pending sums of accounts by `pending` in the same account updates."""
        keys = [draft.idempotency_key for draft in drafts]
        if len(set(keys)) != len(keys):
            raise ValueError("a batch names each idempotency key once")
        ids: dict[str, str] = dict(
            (
                await session.execute(
                    select(JournalEntry.idempotency_key, JournalEntry.id).where(
                        JournalEntry.idempotency_key.in_(keys)
                    )
                )
            ).all()
        )
        fresh = [draft for draft in drafts if draft.idempotency_key not in ids]
        if fresh:
            ids.update(await self._insert(session, fresh, pending))
        elif pending:  # all booked before: only the pending sums (a hold's release) still change
            specs = await self._specs_by_code(session, list(pending))
            await self._move_all(session, [(specs[code], change) for code, change in pending.items()])
        return [ids[key] for key in keys]

    async def _insert(
        self, session: AsyncSession, drafts: Sequence[EntryDraft], pending: Mapping[str, Mapping[str, int]]
    ) -> dict[str, str]:
        await _flush_before_locking(session)
        now = self._clock.now()
        deltas: dict[str, int] = defaultdict(int)
        specs: dict[str, AccountSpec] = {}
        for draft in drafts:
            for leg in draft.legs:
                deltas[leg.account.code] += leg.balance_delta
                specs[leg.account.code] = leg.account
        moved = await self._move_all(
            session, [(specs[code], {"balance": deltas[code], **pending.get(code, {})}) for code in deltas]
        )
        # Walk the legs in order from each account's balance before the batch: every intermediate balance must
        # respect the floor too, and each posting records the balance it left.
        running = {code: account.balance - deltas[code] for code, account in moved.items()}
        entries: list[dict[str, Any]] = []
        postings: list[dict[str, Any]] = []
        ids: dict[str, str] = {}
        for draft in drafts:
            entry_id = ids[draft.idempotency_key] = new_id("je")
            entries.append(
                {
                    "id": entry_id,
                    "idempotency_key": draft.idempotency_key,
                    "kind": draft.kind.value,
                    "client_partner_id": draft.client_partner_id,
                    "merchant_id": draft.merchant_id,
                    "source_type": draft.source_type,
                    "source_id": draft.source_id,
                    "reverses_entry_id": draft.reverses_entry_id,
                    "description": draft.description,
                    "created_at": now,
                }
            )
            for leg in draft.legs:
                code = leg.account.code
                account = moved[code]
                running[code] += leg.balance_delta
                if account.floor is not None and running[code] - account.pending_out < account.floor:
                    raise InsufficientFunds(
                        f"Account {code} cannot go below {account.floor} {leg.account.currency}.",
                        account=code,
                    )
                postings.append(
                    {
                        "id": new_id("btx"),
                        "entry_id": entry_id,
                        "account_id": account.id,
                        "account_kind": leg.account.kind.value,
                        "client_partner_id": leg.account.client_partner_id,
                        "merchant_id": leg.account.merchant_id,
                        "direction": leg.side.value,
                        "amount": leg.amount,
                        "currency": leg.account.currency,
                        "balance_after": running[code],
                        "created_at": now,
                    }
                )
        # The tables, not the mapped classes: the rows are complete, and the ORM's bulk path would only add work.
        await session.execute(insert(ENTRIES), entries)
        await session.execute(insert(POSTINGS), postings)
        return ids

    async def _move_all(
        self, session: AsyncSession, changes: Sequence[tuple[AccountSpec, Mapping[str, int]]]
    ) -> dict[str, _Moved]:
        """`_move` for several accounts, locked in code order; on PostgreSQL in one statement.

        Each account's change is guarded by its floor as in `_move`. The one statement locks the rows first, in
        code order (a materialised `SELECT ... ORDER BY code FOR UPDATE`), then changes them together, so a
        busy account waits for one round trip where it waited for one per account. It is used only when every
        account is known to exist: opening one may wait for another transaction that opens it too, and that
        wait must come in code order like the locks, which the account-by-account path keeps. An account the
        statement did not change (refused by its floor, or another currency or kind) goes through `_move`,
        which raises.
        """
        ordered = sorted(_merged(changes).items())
        one_by_one = (
            len(ordered) < 2
            or session.get_bind().dialect.name != "postgresql"
            or not self._existing.issuperset(code for code, _ in ordered)
        )
        if one_by_one:
            moved = {code: await self._move(session, spec, **change) for code, (spec, change) in ordered}
        else:
            specs = [spec for _, (spec, _) in ordered]
            sums = [change for _, (_, change) in ordered]
            parameters = {
                "codes": [spec.code for spec in specs],
                "currencies": [spec.currency for spec in specs],
                "kinds": [spec.kind.value for spec in specs],
                "balances": [change.get("balance", 0) for change in sums],
                "pending_outs": [change.get("pending_out", 0) for change in sums],
                "pending_ins": [change.get("pending_in", 0) for change in sums],
                "now": self._clock.now(),
            }
            moved = {row.code: _moved(row) for row in await session.execute(_MOVE_ALL, parameters)}
            for code, (spec, change) in ordered:
                if code not in moved:
                    moved[code] = await self._move(session, spec, **change)
        if len(self._existing) > MAX_KNOWN_ACCOUNTS:
            self._existing.clear()
        self._existing.update(moved)
        return moved

    async def _move(
        self,
        session: AsyncSession,
        spec: AccountSpec,
        *,
        balance: int = 0,
        pending_out: int = 0,
        pending_in: int = 0,
    ) -> _Moved:
        """Change an account's balance and pending sums in one guarded UPDATE, opening the account if it is new.

        The guard is the floor: the available balance (balance - pending_out) after the change must not fall
        below it. When the guard fails nothing is changed and InsufficientFunds is raised.
        """
        statement = (
            update(ACCOUNTS)
            .where(
                ACCOUNTS.c.code == spec.code,
                ACCOUNTS.c.currency == spec.currency,
                ACCOUNTS.c.kind == spec.kind.value,
            )
            .values(
                balance=ACCOUNTS.c.balance + balance,
                pending_out=ACCOUNTS.c.pending_out + pending_out,
                pending_in=ACCOUNTS.c.pending_in + pending_in,
                updated_at=self._clock.now(),
            )
            .returning(ACCOUNTS.c.id, ACCOUNTS.c.balance, ACCOUNTS.c.pending_out, ACCOUNTS.c.floor)
        )
        if balance - pending_out < 0:
            statement = statement.where(
                or_(
                    ACCOUNTS.c.floor.is_(None),
                    ACCOUNTS.c.balance + balance - ACCOUNTS.c.pending_out - pending_out >= ACCOUNTS.c.floor,
                )
            )
        row = (await session.execute(statement)).one_or_none()
        if row is None:
            # Either the account is new, or the floor refused. Opening it first (a no-op when it exists, a wait
            # when another transaction is opening it) and updating again tells them apart: under READ COMMITTED
            # the first UPDATE may not have seen an account whose opening committed after it began.
            await self._open(session, spec)
            row = (await session.execute(statement)).one_or_none()
            if row is None:
                await self._refuse_mismatch(session, spec)
                raise InsufficientFunds(
                    f"Account {spec.code} does not have {pending_out - balance} {spec.currency} available.",
                    account=spec.code,
                )
        return _moved(row)

    @staticmethod
    async def _refuse_mismatch(session: AsyncSession, spec: AccountSpec) -> None:
        """An account code names one account for good: a spec with another currency or kind is a bug."""
        found = (
            await session.execute(
                select(ACCOUNTS.c.currency, ACCOUNTS.c.kind).where(ACCOUNTS.c.code == spec.code)
            )
        ).one_or_none()
        if found is not None and (found.currency, found.kind) != (spec.currency, spec.kind.value):
            raise AccountMismatch(
                f"account {spec.code} is a {found.currency} {found.kind} account, not {spec.currency} {spec.kind}"
            )

    async def _open(self, session: AsyncSession, spec: AccountSpec) -> None:
        now = self._clock.now()
        await session.execute(
            conflict_insert(session.get_bind().dialect.name)(ACCOUNTS)
            .values(
                id=new_id("la"),
                code=spec.code,
                kind=spec.kind.value,
                client_partner_id=spec.client_partner_id,
                merchant_id=spec.merchant_id,
                currency=spec.currency,
                normal_side=spec.normal_side.value,
                floor=spec.floor,
                balance=0,
                pending_out=0,
                pending_in=0,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing()
        )

    async def open_account(self, spec: AccountSpec) -> None:
        """Open an account ahead of its first posting (wallets do, to set their floor)."""
        async with self._db.unit_of_work() as session:
            await self._open(session, spec)

    # ------------------------------------------------------------------ holds (inside a unit of work)

    async def hold(self, session: AsyncSession, draft: HoldDraft) -> Hold:
        """Reserve money for a later posting; the same key returns the first hold."""
        existing = (
            await session.execute(select(Hold).where(Hold.idempotency_key == draft.idempotency_key))
        ).scalar_one_or_none()
        if existing is not None:
            return existing
        if draft.debit.currency != draft.credit.currency:
            raise ValueError("a hold moves money within one currency")
        await _flush_before_locking(session)
        moved = await self._move_all(
            session,
            [
                (spec, _reservation(spec, side, draft.amount))
                for spec, side in _sides(draft.debit, draft.credit)
            ],
        )
        now = self._clock.now()
        hold = Hold(
            id=new_id("hld"),
            idempotency_key=draft.idempotency_key,
            client_partner_id=draft.credit.client_partner_id or draft.debit.client_partner_id,
            merchant_id=draft.credit.merchant_id or draft.debit.merchant_id,
            debit_account_id=moved[draft.debit.code].id,
            credit_account_id=moved[draft.credit.code].id,
            amount=draft.amount,
            currency=draft.debit.currency,
            status=HoldStatus.PENDING.value,
            source_type=draft.source_type,
            source_id=draft.source_id,
            expires_at=draft.expires_at,
            created_at=now,
            updated_at=now,
        )
        session.add(hold)
        await session.flush()  # with the accounts still locked: before the caller's other work, not at commit
        return hold

    async def pending_hold(self, session: AsyncSession, source_id: str) -> Hold | None:
        """The pending hold of a source object, locked for the caller's unit of work."""
        statement = (
            select(Hold)
            .where(Hold.source_id == source_id, Hold.status == HoldStatus.PENDING.value)
            .order_by(Hold.id)
            .limit(1)
            .with_for_update()
        )
        return (await session.execute(statement)).scalar_one_or_none()

    async def post_hold(
        self,
        session: AsyncSession,
        hold: Hold,
        *,
        kind: EntryKind,
        amount: int | None = None,
        key: str | None = None,
        description: str | None = None,
        with_entries: Sequence[EntryDraft] = (),
    ) -> str:
        """Turn a pending hold into an entry for `amount` (all of it by default); the rest is released. The entry's
        idempotency key is `key`, or the hold's own key with `:posted`. `with_entries` are booked in the same
        account updates (a payment's fee), so the accounts are still locked in one order."""
        if hold.status != HoldStatus.PENDING.value:
            raise HoldNotPending(f"Hold {hold.id} is {hold.status}.")
        amount = hold.amount if amount is None else amount
        if not 0 < amount <= hold.amount:
            raise ValueError(f"a hold of {hold.amount} posts between 1 and {hold.amount}, not {amount}")
        debit, credit = await self._hold_accounts(session, hold)
        # The release of the reservation and the posting change each account in one update.
        release: dict[str, dict[str, int]] = {}
        for spec, side in ((debit, Side.DEBIT), (credit, Side.CREDIT)):
            for name, value in _released(spec, side, hold.amount).items():
                sums = release.setdefault(spec.code, {})
                sums[name] = sums.get(name, 0) + value  # a hold from an account to itself releases both sides
        [entry_id, *_] = await self._book(
            session,
            [
                EntryDraft(
                    idempotency_key=key or f"{hold.idempotency_key}:posted",
                    kind=kind,
                    source_type=hold.source_type,
                    source_id=hold.source_id,
                    legs=(Leg(debit, Side.DEBIT, amount), Leg(credit, Side.CREDIT, amount)),
                    merchant_id=hold.merchant_id,
                    client_partner_id=hold.client_partner_id,
                    description=description,
                ),
                *with_entries,
            ],
            release,
        )
        hold.status = HoldStatus.POSTED.value
        hold.posted_amount = amount
        hold.entry_id = entry_id
        hold.updated_at = self._clock.now()
        await session.flush()
        return entry_id

    async def void_hold(
        self, session: AsyncSession, hold: Hold, *, status: HoldStatus = HoldStatus.VOIDED
    ) -> None:
        """Release a pending hold without moving money (voided by its owner, or expired)."""
        if hold.status != HoldStatus.PENDING.value:
            raise HoldNotPending(f"Hold {hold.id} is {hold.status}.")
        await self._release(session, hold)
        hold.status = status.value
        hold.updated_at = self._clock.now()

    async def _release(self, session: AsyncSession, hold: Hold) -> None:
        debit, credit = await self._hold_accounts(session, hold)
        await _flush_before_locking(session)
        await self._move_all(
            session, [(spec, _released(spec, side, hold.amount)) for spec, side in _sides(debit, credit)]
        )

    async def _hold_accounts(self, session: AsyncSession, hold: Hold) -> tuple[AccountSpec, AccountSpec]:
        rows = {
            account.id: account
            for account in await session.execute(
                select(*_SPEC_COLUMNS).where(
                    ACCOUNTS.c.id.in_([hold.debit_account_id, hold.credit_account_id])
                )
            )
        }
        return _spec_of(rows[hold.debit_account_id]), _spec_of(rows[hold.credit_account_id])

    @staticmethod
    async def _specs_by_code(session: AsyncSession, codes: list[str]) -> dict[str, AccountSpec]:
        accounts = await session.execute(select(*_SPEC_COLUMNS).where(ACCOUNTS.c.code.in_(codes)))
        return {account.code: _spec_of(account) for account in accounts}

    async def expire_holds(self, limit: int = 100) -> int:
        """Release pending holds whose time is up (the worker runs this); returns how many it expired."""
        async with self._db.unit_of_work() as session:
            holds = list(
                (
                    await session.execute(
                        select(Hold)
                        .where(Hold.status == HoldStatus.PENDING.value, Hold.expires_at <= self._clock.now())
                        .order_by(Hold.expires_at)
                        .limit(limit)
                        .with_for_update(skip_locked=True)
                    )
                ).scalars()
            )
            for hold in holds:
                await self.void_hold(session, hold, status=HoldStatus.EXPIRED)
            return len(holds)

    # ------------------------------------------------------------------ reversals

    async def reverse(self, session: AsyncSession, entry_id: str, *, description: str | None = None) -> str:
        """Book the mirror image of an entry (debits become credits); an entry is reversed at most once."""
        entry = await session.get(JournalEntry, entry_id)
        if entry is None:
            raise EntryNotFound(f"No ledger entry {entry_id}.")
        legs = [
            Leg(_spec_of(account), Side(posting.direction).opposite, posting.amount)
            for posting, account in (
                await session.execute(
                    select(Posting, LedgerAccount)
                    .join(LedgerAccount, LedgerAccount.id == Posting.account_id)
                    .where(Posting.entry_id == entry_id)
                    .order_by(Posting.id)
                )
            ).all()
        ]
        return await self.book(
            session,
            EntryDraft(
                idempotency_key=f"reversal:{entry_id}",
                kind=EntryKind.REVERSAL,
                source_type="ledger_entry",
                source_id=entry_id,
                legs=tuple(legs),
                merchant_id=entry.merchant_id,
                client_partner_id=entry.client_partner_id,
                description=description,
                reverses_entry_id=entry_id,
            ),
        )

    # ------------------------------------------------------------------ standalone use cases

    async def transfer(self, draft: EntryDraft) -> str:
        """Book one entry in its own unit of work. A concurrent booking of the same key returns the winner's id."""
        try:
            async with self._db.unit_of_work() as session:
                return await self.book(session, draft)
        except (IntegrityError, InsufficientFunds):
            # A concurrent booking of the same key may have won (and spent the funds this one wanted).
            async with self._db.reading() as session:
                found = (
                    await session.execute(
                        select(JournalEntry.id).where(JournalEntry.idempotency_key == draft.idempotency_key)
                    )
                ).scalar_one_or_none()
            if found is None:
                raise
            return found

    async def account(self, code: str) -> LedgerAccount | None:
        async with self._db.reading() as session:
            return (
                await session.execute(select(LedgerAccount).where(LedgerAccount.code == code))
            ).scalar_one_or_none()

    async def get_hold(self, hold_id: str) -> Hold:
        async with self._db.reading() as session:
            hold = await session.get(Hold, hold_id)
        if hold is None:
            raise HoldNotFound(f"No hold {hold_id}.")
        return hold

    # ------------------------------------------------------------------ read side (API)

    async def balances(
        self, principal: Principal, merchant_id: int | None
    ) -> tuple[int, list[CurrencyBalance]]:
        """A merchant's payable balance per currency: available (posted, less pending debits) and pending."""
        require(principal, Operation.BALANCES_READ)
        merchant = _merchant_in_scope(principal, merchant_id)
        async with self._db.reading() as session:
            accounts = (
                await session.execute(
                    principal.scope(
                        select(LedgerAccount).where(
                            LedgerAccount.merchant_id == merchant,
                            LedgerAccount.kind == AccountKind.MERCHANT_PAYABLE.value,
                        ),
                        LedgerAccount,
                    ).order_by(LedgerAccount.currency)
                )
            ).scalars()
            return merchant, [
                CurrencyBalance(account.currency, account.balance - account.pending_out, account.pending_in)
                for account in accounts
            ]

    async def balance_transactions(
        self,
        principal: Principal,
        *,
        merchant_id: int | None,
        currency: str | None,
        kind: str | None,
        source_id: str | None,
        limit: int,
        starting_after: str | None,
    ) -> tuple[list[Row[Posting, JournalEntry]], bool]:
        """Postings to merchant payable accounts, newest first, each with the entry that explains it."""
        require(principal, Operation.BALANCES_READ)
        if principal.store_id is not None:
            raise BalancesNeedMerchant(
                "Balance transactions belong to a merchant; call with a merchant client."
            )
        statement = (
            select(Posting, JournalEntry)
            .join(JournalEntry, JournalEntry.id == Posting.entry_id)
            .where(Posting.account_kind == AccountKind.MERCHANT_PAYABLE.value)
        )
        if principal.client_partner_id is not None:  # None: a SYSTEM_OP, who sees every partner
            statement = statement.where(Posting.client_partner_id == principal.client_partner_id)
        merchant = principal.merchant_id or merchant_id
        if merchant is not None:
            statement = statement.where(Posting.merchant_id == merchant)
        if currency is not None:
            statement = statement.where(Posting.currency == currency)
        if kind is not None:
            statement = statement.where(JournalEntry.kind == kind)
        if source_id is not None:
            statement = statement.where(JournalEntry.source_id == source_id)
        if starting_after is not None:
            statement = statement.where(Posting.id < starting_after)
        async with self._db.reading() as session:
            rows = list((await session.execute(statement.order_by(Posting.id.desc()).limit(limit + 1))).all())
        return rows[:limit], len(rows) > limit


async def _flush_before_locking(session: AsyncSession) -> None:
    """Send the unit of work's pending changes before the account rows are locked: a busy account (a merchant's
    payable, a provider's clearing) is locked until commit, so every round trip left after its UPDATE makes the
    next payment of that merchant wait longer."""
    await session.flush()


def _merchant_in_scope(principal: Principal, merchant_id: int | None) -> int:
    if principal.store_id is not None:
        raise BalancesNeedMerchant("Balances belong to a merchant; call with a merchant or partner client.")
    if principal.merchant_id is not None:
        return principal.merchant_id
    if merchant_id is None:
        raise BalancesNeedMerchant("A partner client names the merchant: ?merchant_id=...")
    return merchant_id


def _moved(row: Row[Any]) -> _Moved:
    return _Moved(id=row.id, balance=row.balance, pending_out=row.pending_out, floor=row.floor)


def _sides(debit: AccountSpec, credit: AccountSpec) -> list[tuple[AccountSpec, Side]]:
    return [(debit, Side.DEBIT), (credit, Side.CREDIT)]


def _merged(
    changes: Sequence[tuple[AccountSpec, Mapping[str, int]]],
) -> dict[str, tuple[AccountSpec, dict[str, int]]]:
    """The changes by account code, two changes of one account (a hold from an account to itself) summed."""
    merged: dict[str, tuple[AccountSpec, dict[str, int]]] = {}
    for spec, change in changes:
        _, sums = merged.setdefault(spec.code, (spec, {}))
        for name, value in change.items():
            sums[name] = sums.get(name, 0) + value
    return merged


def _build_move_all() -> Update:
    """PostgreSQL: lock the accounts named in the arrays `codes`, `currencies` and `kinds` in code order, then
    apply each one's change (`balances`, `pending_outs`, `pending_ins`) where its floor allows it; returns the
    accounts changed. One statement text whatever the number of accounts, so it is compiled and prepared once."""

    def array_of(name: str, item: type[String] | type[BigInteger]) -> BindParameter[Any]:
        return bindparam(name, type_=ARRAY(item))

    rows = (
        func.unnest(
            array_of("codes", String),
            array_of("currencies", String),
            array_of("kinds", String),
            array_of("balances", BigInteger),
            array_of("pending_outs", BigInteger),
            array_of("pending_ins", BigInteger),
        )
        .table_valued(
            "code", "currency", "kind", "d_balance", "d_pending_out", "d_pending_in", name="change_rows"
        )
        .render_derived()
    )
    changes = select(rows).cte("changes")
    locked = (
        select(ACCOUNTS.c.id)
        .join(
            changes,
            (ACCOUNTS.c.code == changes.c.code)
            & (ACCOUNTS.c.currency == changes.c.currency)
            & (ACCOUNTS.c.kind == changes.c.kind),
        )
        .order_by(ACCOUNTS.c.code)
        .with_for_update(of=ACCOUNTS)
        .cte("locked")
        .prefix_with("MATERIALIZED")  # all locks taken, in order, before the first change
    )
    available_after = (
        ACCOUNTS.c.balance + changes.c.d_balance - ACCOUNTS.c.pending_out - changes.c.d_pending_out
    )
    return (
        update(ACCOUNTS)
        .where(
            ACCOUNTS.c.id == locked.c.id,
            ACCOUNTS.c.code == changes.c.code,
            or_(
                changes.c.d_balance - changes.c.d_pending_out >= 0,
                ACCOUNTS.c.floor.is_(None),
                available_after >= ACCOUNTS.c.floor,
            ),
        )
        .values(
            balance=ACCOUNTS.c.balance + changes.c.d_balance,
            pending_out=ACCOUNTS.c.pending_out + changes.c.d_pending_out,
            pending_in=ACCOUNTS.c.pending_in + changes.c.d_pending_in,
            updated_at=bindparam("now", type_=UTCDateTime()),
        )
        .returning(
            ACCOUNTS.c.code, ACCOUNTS.c.id, ACCOUNTS.c.balance, ACCOUNTS.c.pending_out, ACCOUNTS.c.floor
        )
    )


_MOVE_ALL = _build_move_all()


def _reservation(spec: AccountSpec, side: Side, amount: int) -> dict[str, int]:
    """What a pending hold does to one of its accounts: it will lower the balance (pending_out) when the hold's
    side is opposite the account's normal side, and raise it (pending_in) otherwise."""
    return {"pending_in": amount} if side is spec.normal_side else {"pending_out": amount}


def _released(spec: AccountSpec, side: Side, amount: int) -> dict[str, int]:
    return {name: -value for name, value in _reservation(spec, side, amount).items()}


class _AccountRow(Protocol):
    """An account's spec columns: a LedgerAccount, or a row of `_SPEC_COLUMNS`."""

    code: str
    kind: str
    currency: str
    merchant_id: int | None
    client_partner_id: int | None
    floor: int | None


def _spec_of(account: _AccountRow) -> AccountSpec:
    return AccountSpec(
        code=account.code,
        kind=AccountKind(account.kind),
        currency=account.currency,
        merchant_id=account.merchant_id,
        client_partner_id=account.client_partner_id,
        floor=account.floor,
    )
