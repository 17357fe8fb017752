"""LedgerService against the real database (docs/ledger.md): booking, idempotency, batches, floors, holds,
reversals, fee rounding and the append-only triggers."""

from __future__ import annotations

from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import event, func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from paymux.container import Container
from paymux.core.clock import FrozenClock
from paymux.core.money import MAX_AMOUNT
from paymux.ledger.accounts import AccountKind, AccountSpec, MerchantAccounts, Side
from paymux.ledger.entries import EntryDraft, EntryKind, Leg, UnbalancedEntry, transfer
from paymux.ledger.errors import EntryNotFound, HoldNotPending, InsufficientFunds
from paymux.ledger.fees import FeeRule
from paymux.ledger.models import Hold, JournalEntry, LedgerAccount, Posting
from paymux.ledger.service import AccountMismatch, HoldDraft
from paymux.ledger.verify import verify_ledger
from tests.conftest import ON_POSTGRES
from tests.ledger.support import (
    AccountState,
    balance,
    count,
    empty_ledger,
    entry,
    fund,
    funding,
    hold_row,
    move,
    next_key,
    postings,
    state,
    wallet,
)

MERCHANT = MerchantAccounts(client_partner_id=7, merchant_id=42, currency="JPY")
CLEARING = MERCHANT.clearing("testpay")


def draft(*legs: Leg, key: str | None = None, kind: EntryKind = EntryKind.ADJUSTMENT) -> EntryDraft:
    key = key or next_key("entry")
    return EntryDraft(idempotency_key=key, kind=kind, source_type="test", source_id=key, legs=legs)


async def open_wallet(container: Container, name: str, amount: int = 0, *, floor: int = 0) -> AccountSpec:
    spec = wallet(name, floor=floor)
    await container.ledger.open_account(spec)
    if amount:
        await fund(container.ledger, spec, amount)
    return spec


# ---------------------------------------------------------------------------------------------- booking


async def test_booking_moves_each_balance_in_its_accounts_normal_side(container: Container) -> None:
    db, ledger = container.db, container.ledger
    # A payment: the provider owes it (debit-normal clearing goes up), paymux owes the merchant (credit-normal).
    payment = await ledger.transfer(
        transfer(
            "pi_1:payment",
            debit=CLEARING,
            credit=MERCHANT.payable,
            amount=10_000,
            kind=EntryKind.PAYMENT,
            source_type="payment_intent",
            source_id="pi_1",
        )
    )
    # A fee: a debit to the merchant's payable lowers it, a credit to the fees account raises it.
    async with db.unit_of_work() as session:
        await ledger.book(session, move(MERCHANT.payable, MERCHANT.fees, 325, kind=EntryKind.FEE))
    # A refund settled: credit to the debit-normal clearing account lowers it.
    await ledger.transfer(move(MERCHANT.refunds, CLEARING, 1_000))

    assert await balance(db, CLEARING.code) == 10_000 - 1_000
    assert await balance(db, MERCHANT.payable.code) == 10_000 - 325
    assert await balance(db, MERCHANT.fees.code) == 325
    assert await balance(db, MERCHANT.refunds.code) == -1_000  # no floor: may go below zero
    assert await postings(db, payment) == [
        (CLEARING.code, "debit", 10_000, "JPY", 10_000),
        (MERCHANT.payable.code, "credit", 10_000, "JPY", 10_000),
    ]
    booked = await entry(db, payment)
    assert (booked.kind, booked.source_type, booked.source_id) == ("payment", "payment_intent", "pi_1")
    assert (booked.merchant_id, booked.client_partner_id) == (42, 7)
    assert (await verify_ledger(db)).ok


async def test_an_account_is_opened_by_its_first_posting_with_its_kind_and_normal_side(
    container: Container,
) -> None:
    db, ledger = container.db, container.ledger
    specs = [CLEARING, MERCHANT.payable]
    for spec in specs:
        assert await ledger.account(spec.code) is None
    await ledger.transfer(move(CLEARING, MERCHANT.payable, 500))
    for spec in specs:
        account = await ledger.account(spec.code)
        assert account is not None
        assert account.id.startswith("la_")
        assert (account.kind, account.normal_side, account.currency) == (
            spec.kind.value,
            "debit" if spec.kind is AccountKind.PROVIDER_CLEARING else "credit",
            "JPY",
        )
        assert (account.merchant_id, account.client_partner_id, account.floor) == (42, 7, None)
        assert (account.balance, account.pending_out, account.pending_in) == (500, 0, 0)
    assert await count(db, LedgerAccount) == 2


async def test_each_posting_records_the_balance_it_left(container: Container) -> None:
    db, ledger = container.db, container.ledger
    alice = await open_wallet(container, "alice")
    bank = funding()
    ids = [
        await ledger.transfer(move(bank, alice, 1_000)),
        await ledger.transfer(move(alice, bank, 300)),
        await ledger.transfer(move(bank, alice, 50)),
    ]
    assert [await postings(db, entry_id) for entry_id in ids] == [
        [(bank.code, "debit", 1_000, "USD", 1_000), (alice.code, "credit", 1_000, "USD", 1_000)],
        [(alice.code, "debit", 300, "USD", 700), (bank.code, "credit", 300, "USD", 700)],
        [(bank.code, "debit", 50, "USD", 750), (alice.code, "credit", 50, "USD", 750)],
    ]


async def test_a_multi_currency_entry_balances_in_each_currency(container: Container) -> None:
    db, ledger = container.db, container.ledger
    usd, jpy = wallet("fx", "USD", floor=None), wallet("fx", "JPY", floor=None)
    desk_usd = AccountSpec("fxdesk:USD", AccountKind.SUSPENSE, "USD")
    desk_jpy = AccountSpec("fxdesk:JPY", AccountKind.SUSPENSE, "JPY")
    exchange = draft(
        Leg(usd, Side.DEBIT, 100),
        Leg(desk_usd, Side.CREDIT, 100),
        Leg(desk_jpy, Side.DEBIT, 15_000),
        Leg(jpy, Side.CREDIT, 15_000),
    )
    entry_id = await ledger.transfer(exchange)
    assert [(code, currency, after) for code, _, _, currency, after in await postings(db, entry_id)] == [
        (usd.code, "USD", -100),
        (desk_usd.code, "USD", -100),
        (desk_jpy.code, "JPY", 15_000),
        (jpy.code, "JPY", 15_000),
    ]


# ---------------------------------------------------------------------------------------------- drafts

USD_A = wallet("a", floor=None)
USD_B = wallet("b", floor=None)
EUR_C = wallet("c", "EUR", floor=None)


@pytest.mark.parametrize(
    "legs",
    [
        pytest.param(lambda: (Leg(USD_A, Side.DEBIT, 100), Leg(USD_B, Side.CREDIT, 99)), id="unbalanced"),
        pytest.param(lambda: (Leg(USD_A, Side.DEBIT, 100),), id="one-leg"),
        pytest.param(lambda: (), id="no-leg"),
        pytest.param(lambda: (Leg(USD_A, Side.DEBIT, 100), Leg(USD_B, Side.DEBIT, 100)), id="two-debits"),
        pytest.param(
            lambda: (Leg(USD_A, Side.DEBIT, 100), Leg(EUR_C, Side.CREDIT, 100)), id="mixed-currency"
        ),
        pytest.param(
            lambda: (
                Leg(USD_A, Side.DEBIT, 100),
                Leg(EUR_C, Side.CREDIT, 100),
                Leg(EUR_C, Side.DEBIT, 100),
                Leg(USD_B, Side.CREDIT, 99),
            ),
            id="one-currency-of-two-unbalanced",
        ),
        pytest.param(lambda: (Leg(USD_A, Side.DEBIT, 0), Leg(USD_B, Side.CREDIT, 0)), id="zero"),
        pytest.param(lambda: (Leg(USD_A, Side.DEBIT, -5), Leg(USD_B, Side.CREDIT, -5)), id="negative"),
        pytest.param(lambda: (Leg(USD_A, Side.DEBIT, 1.5), Leg(USD_B, Side.CREDIT, 1.5)), id="float"),  # type: ignore[arg-type]
        pytest.param(lambda: (Leg(USD_A, Side.DEBIT, True), Leg(USD_B, Side.CREDIT, True)), id="bool"),
        pytest.param(
            lambda: (Leg(USD_A, Side.DEBIT, MAX_AMOUNT + 1), Leg(USD_B, Side.CREDIT, MAX_AMOUNT + 1)),
            id="too-large",
        ),
    ],
)
def test_a_draft_that_does_not_balance_is_refused(legs: Any) -> None:
    with pytest.raises(UnbalancedEntry):
        draft(*legs())


def test_transfer_refuses_two_currencies_and_a_non_positive_amount() -> None:
    with pytest.raises(UnbalancedEntry, match="one currency"):
        transfer(
            "x", debit=USD_A, credit=EUR_C, amount=1, kind=EntryKind.TRANSFER, source_type="t", source_id="x"
        )
    with pytest.raises(UnbalancedEntry, match="positive"):
        move(USD_A, USD_B, 0)
    assert len(draft(Leg(USD_A, Side.DEBIT, MAX_AMOUNT), Leg(USD_B, Side.CREDIT, MAX_AMOUNT)).legs) == 2


async def test_a_draft_refused_by_the_booking_code_books_nothing(container: Container) -> None:
    """UnbalancedEntry is raised before the database is touched: a caller's unit of work rolls back clean."""
    with pytest.raises(UnbalancedEntry):
        async with container.db.unit_of_work() as session:
            await container.ledger.book(session, draft(Leg(USD_A, Side.DEBIT, 5), Leg(USD_B, Side.CREDIT, 4)))
    assert await count(container.db, LedgerAccount) == 0


# ---------------------------------------------------------------------------------------------- idempotency


async def test_the_same_idempotency_key_books_once(container: Container) -> None:
    db, ledger = container.db, container.ledger
    alice = await open_wallet(container, "alice")
    first = move(funding(), alice, 700, key="topup-1")
    entry_id = await ledger.transfer(first)
    async with db.unit_of_work() as session:
        assert await ledger.book(session, first) == entry_id
    # The key names the entry for good: even a different draft under the same key returns the first entry.
    assert await ledger.transfer(move(funding(), alice, 5, key="topup-1")) == entry_id
    assert await balance(db, alice.code) == 700
    assert (await count(db, JournalEntry), await count(db, Posting)) == (1, 2)


async def test_book_many_books_only_the_keys_it_has_not_seen(container: Container) -> None:
    db, ledger = container.db, container.ledger
    alice = await open_wallet(container, "alice")
    seen = move(funding(), alice, 100, key="seen")
    seen_id = await ledger.transfer(seen)
    fresh = move(funding(), alice, 10, key="fresh")
    async with db.unit_of_work() as session:
        ids = await ledger.book_many(session, [seen, fresh])
    assert ids[0] == seen_id
    assert ids[1] != seen_id
    assert await balance(db, alice.code) == 110
    assert await count(db, JournalEntry) == 2


async def test_a_batch_names_each_key_once(container: Container) -> None:
    twice = move(funding(), USD_A, 1, key="twice")
    with pytest.raises(ValueError, match="each idempotency key once"):
        async with container.db.unit_of_work() as session:
            await container.ledger.book_many(session, [twice, twice])
    assert await count(container.db, JournalEntry) == 0


# ---------------------------------------------------------------------------------------------- batches


async def test_a_batch_updates_each_account_once_in_code_order(container: Container) -> None:
    """On PostgreSQL, accounts known to exist are locked in code order and changed by one statement; elsewhere
    (and for accounts not yet seen) one UPDATE per account, in code order."""
    db, ledger = container.db, container.ledger
    alice, bob = await open_wallet(container, "alice", 1_000), await open_wallet(container, "bob", 1_000)
    bank = funding()
    batch = [
        move(alice, bob, 100),
        move(bob, alice, 30),
        move(bank, bob, 5),
        move(alice, bank, 200),
    ]
    updates: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "UPDATE LEDGER_ACCOUNTS" in statement.upper():
            updates.append((statement, parameters))

    event.listen(db.engine.sync_engine, "before_cursor_execute", record)
    try:
        async with db.unit_of_work() as session:
            ids = await ledger.book_many(session, batch)
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", record)

    accounts = {alice.code, bob.code, bank.code}
    if ON_POSTGRES:
        [(statement, params)] = updates
        assert "ORDER BY ledger_accounts.code FOR UPDATE" in statement
        # The accounts' codes go as one array, in the order the rows are locked.
        [codes] = [
            value for value in _values(params) if isinstance(value, list) and accounts.issuperset(value)
        ]
    else:
        assert len(updates) == 3, updates
        codes = [next(value for value in _values(params) if value in accounts) for _, params in updates]
    assert codes == sorted(accounts)
    assert await balance(db, alice.code) == 1_000 - 100 + 30 - 200
    assert await balance(db, bob.code) == 1_000 + 100 - 30 + 5
    # balance_after walks the batch in order.
    assert [[after for *_, after in await postings(db, entry_id)] for entry_id in ids] == [
        [900, 1_100],
        [1_070, 930],
        [2_005, 1_075],
        [730, 1_805],
    ]


def _values(parameters: Any) -> list[Any]:
    if isinstance(parameters, dict):
        return list(parameters.values())
    return list(parameters)


async def test_a_batch_may_not_breach_a_floor_on_the_way(container: Container) -> None:
    """The net of the batch leaves alice at 50, but the first entry takes her to -50 before the second arrives."""
    db, ledger = container.db, container.ledger
    alice = await open_wallet(container, "alice", 100)
    shop = wallet("shop", floor=None)
    before = await count(db, JournalEntry)
    spend_first = [move(alice, shop, 150), move(funding(), alice, 100)]
    with pytest.raises(InsufficientFunds) as refused:
        async with db.unit_of_work() as session:
            await ledger.book_many(session, spend_first)
    assert refused.value.extra == {"account": alice.code}
    assert await state(db, alice.code) == AccountState(100, 0, 0)
    assert await state(db, shop.code) is None
    assert await count(db, JournalEntry) == before

    async with db.unit_of_work() as session:
        await ledger.book_many(session, [move(funding(), alice, 100), move(alice, shop, 150)])
    assert await balance(db, alice.code) == 50
    assert await balance(db, shop.code) == 150


async def test_one_entry_may_not_breach_a_floor_between_its_own_legs(container: Container) -> None:
    db, ledger = container.db, container.ledger
    alice = await open_wallet(container, "alice", 100)
    shop = wallet("shop", floor=None)
    # Debit 150 then credit 100 back: the net is -50 ... but the first leg takes the wallet to -50.
    there_and_back = draft(
        Leg(alice, Side.DEBIT, 150),
        Leg(shop, Side.CREDIT, 150),
        Leg(shop, Side.DEBIT, 100),
        Leg(alice, Side.CREDIT, 100),
    )
    with pytest.raises(InsufficientFunds):
        await ledger.transfer(there_and_back)
    assert await state(db, alice.code) == AccountState(100, 0, 0)


# ---------------------------------------------------------------------------------------------- floors


async def test_a_floored_account_refuses_an_overdraft_and_changes_nothing(container: Container) -> None:
    db, ledger = container.db, container.ledger
    alice = await open_wallet(container, "alice", 100)
    shop = wallet("shop", floor=None)
    with pytest.raises(InsufficientFunds) as refused:
        await ledger.transfer(move(alice, shop, 101, key="too-much"))
    assert refused.value.code == "insufficient_funds"
    assert refused.value.status == 409
    assert refused.value.extra == {"account": alice.code}
    assert await state(db, alice.code) == AccountState(100, 0, 0)
    assert await state(db, shop.code) is None  # its lazy opening rolled back too
    async with db.reading() as session:
        assert (
            await session.execute(select(JournalEntry.id).where(JournalEntry.idempotency_key == "too-much"))
        ).first() is None
    # Exactly the available balance is fine, and then nothing more.
    await ledger.transfer(move(alice, shop, 100))
    assert await balance(db, alice.code) == 0
    with pytest.raises(InsufficientFunds):
        await ledger.transfer(move(alice, shop, 1))


async def test_an_overdraft_rolls_back_everything_else_in_its_unit_of_work(container: Container) -> None:
    db, ledger = container.db, container.ledger
    alice = await open_wallet(container, "alice", 100)
    bob = await open_wallet(container, "bob")

    async def pay_twice() -> None:
        async with db.unit_of_work() as session:
            await ledger.book(session, move(alice, bob, 60))
            await ledger.book(session, move(alice, bob, 60))

    with pytest.raises(InsufficientFunds):
        await pay_twice()
    assert await state(db, alice.code) == AccountState(100, 0, 0)
    assert await state(db, bob.code) == AccountState(0, 0, 0)
    assert await count(db, JournalEntry) == 1  # the funding


async def test_the_floor_is_the_accounts_own_value(container: Container) -> None:
    db, ledger = container.db, container.ledger
    overdraft = await open_wallet(container, "credit-line", 200, floor=-500)
    shop = wallet("shop", floor=None)
    await ledger.transfer(move(overdraft, shop, 700))
    assert await balance(db, overdraft.code) == -500
    with pytest.raises(InsufficientFunds):
        await ledger.transfer(move(overdraft, shop, 1))
    # A spec naming the account without a floor does not lift the floor stored on the account.
    with pytest.raises(InsufficientFunds):
        await ledger.transfer(move(wallet("credit-line", floor=None), shop, 1))
    assert await balance(db, overdraft.code) == -500


async def test_a_floored_account_opened_by_a_debit_is_refused(container: Container) -> None:
    db, ledger = container.db, container.ledger
    fresh = wallet("fresh")  # floor 0, never opened
    with pytest.raises(InsufficientFunds):
        await ledger.transfer(move(fresh, funding(), 1))
    assert await state(db, fresh.code) is None
    await ledger.transfer(move(funding(), fresh, 1))
    account = await ledger.account(fresh.code)
    assert account is not None
    assert (account.kind, account.normal_side, account.floor, account.balance) == ("wallet", "credit", 0, 1)


async def test_open_account_sets_the_floor_once(container: Container) -> None:
    ledger = container.ledger
    spec = wallet("alice", floor=0)
    await ledger.open_account(spec)
    await ledger.open_account(wallet("alice", floor=-1_000))  # already open: nothing changes
    account = await ledger.account(spec.code)
    assert account is not None
    assert (account.floor, account.balance) == (0, 0)


@pytest.mark.parametrize("floor", [1, 100])
def test_a_floor_is_zero_or_an_overdraft_limit_never_above_zero(floor: int) -> None:
    """docs/ledger.md: accounts open at 0, so a floor above 0 would make an account invalid from birth."""
    with pytest.raises(ValueError, match="never above 0"):
        wallet("minimum", floor=floor)
    assert wallet("ok", floor=0).floor == 0
    assert wallet("overdraft", floor=-1).floor == -1


async def test_the_floor_check_constraint_backs_the_code_up(container: Container) -> None:
    db = container.db
    alice = await open_wallet(container, "alice", 100)
    with pytest.raises(IntegrityError):
        async with db.unit_of_work() as session:
            await session.execute(
                text("UPDATE ledger_accounts SET balance = -1 WHERE code = :code"), {"code": alice.code}
            )
    assert await balance(db, alice.code) == 100


# ---------------------------------------------------------------------------------------------- holds


def hold_draft(
    container: Container,
    debit: AccountSpec,
    credit: AccountSpec,
    amount: int,
    *,
    ttl: timedelta = timedelta(hours=1),
    key: str | None = None,
) -> HoldDraft:
    key = key or next_key("hold")
    return HoldDraft(
        idempotency_key=key,
        debit=debit,
        credit=credit,
        amount=amount,
        source_type="test",
        source_id=f"src-{key}",
        expires_at=container.clock.now() + ttl,
    )


async def place(container: Container, draft_: HoldDraft) -> Hold:
    async with container.db.unit_of_work() as session:
        return await container.ledger.hold(session, draft_)


async def test_a_hold_reserves_pending_out_and_pending_in(container: Container) -> None:
    db, ledger = container.db, container.ledger
    alice = await open_wallet(container, "alice", 1_000)
    shop = wallet("shop", floor=None)
    placed = await place(container, hold_draft(container, alice, shop, 400, key="h1"))
    assert placed.id.startswith("hld_")
    assert (placed.status, placed.amount, placed.currency, placed.posted_amount) == (
        "pending",
        400,
        "USD",
        None,
    )
    assert await state(db, alice.code) == AccountState(1_000, 400, 0)
    assert await state(db, shop.code) == AccountState(0, 0, 400)
    # The pending debit already lowers what is available.
    with pytest.raises(InsufficientFunds):
        await ledger.transfer(move(alice, shop, 601))
    await ledger.transfer(move(alice, shop, 600))
    assert await state(db, alice.code) == AccountState(400, 400, 0)
    # The same key returns the first hold and reserves nothing more.
    again = await place(container, hold_draft(container, alice, shop, 999, key="h1"))
    assert again.id == placed.id
    assert await state(db, alice.code) == AccountState(400, 400, 0)
    assert (await verify_ledger(db)).pending_holds == 1


async def test_a_payment_hold_raises_both_accounts_pending_in(container: Container) -> None:
    """A hold debiting a debit-normal account will raise it: pending_in on both sides (docs: in flight)."""
    db = container.db
    await place(container, hold_draft(container, CLEARING, MERCHANT.payable, 5_000))
    assert await state(db, CLEARING.code) == AccountState(0, 0, 5_000)
    assert await state(db, MERCHANT.payable.code) == AccountState(0, 0, 5_000)


async def test_a_hold_that_would_breach_the_floor_is_refused(container: Container) -> None:
    db = container.db
    alice = await open_wallet(container, "alice", 100)
    shop = wallet("shop", floor=None)
    await place(container, hold_draft(container, alice, shop, 70))
    with pytest.raises(InsufficientFunds):
        await place(container, hold_draft(container, alice, shop, 31, key="too-big"))
    assert await state(db, alice.code) == AccountState(100, 70, 0)
    assert await state(db, shop.code) == AccountState(0, 0, 70)
    async with db.reading() as session:
        assert (await session.execute(select(Hold).where(Hold.idempotency_key == "too-big"))).first() is None
    await place(container, hold_draft(container, alice, shop, 30))
    assert await state(db, alice.code) == AccountState(100, 100, 0)


async def test_posting_a_hold_in_full(container: Container) -> None:
    db, ledger = container.db, container.ledger
    alice = await open_wallet(container, "alice", 1_000)
    shop = wallet("shop", floor=None)
    placed = await place(container, hold_draft(container, alice, shop, 400, key="order-9"))
    async with db.unit_of_work() as session:
        found = await ledger.pending_hold(session, placed.source_id)
        assert found is not None
        assert found.id == placed.id
        entry_id = await ledger.post_hold(session, found, kind=EntryKind.PAYMENT, description="order 9")
    assert await state(db, alice.code) == AccountState(600, 0, 0)
    assert await state(db, shop.code) == AccountState(400, 0, 0)
    posted = await hold_row(db, placed.id)
    assert (posted.status, posted.posted_amount, posted.entry_id) == ("posted", 400, entry_id)
    booked = await entry(db, entry_id)
    assert (booked.idempotency_key, booked.kind, booked.source_id, booked.description) == (
        "order-9:posted",
        "payment",
        placed.source_id,
        "order 9",
    )
    assert await postings(db, entry_id) == [
        (alice.code, "debit", 400, "USD", 600),
        (shop.code, "credit", 400, "USD", 400),
    ]
    async with db.unit_of_work() as session:
        assert await ledger.pending_hold(session, placed.source_id) is None


async def test_posting_a_hold_changes_each_account_in_one_update(container: Container) -> None:
    """The release of the reservation and the posting go in the same guarded UPDATE of each account (on
    PostgreSQL one statement for both accounts, which the hold already opened)."""
    db, ledger = container.db, container.ledger
    alice = await open_wallet(container, "alice", 1_000)
    shop = wallet("shop", floor=None)
    placed = await place(container, hold_draft(container, alice, shop, 400))
    updates: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "UPDATE LEDGER_ACCOUNTS" in statement.upper():
            updates.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", record)
    try:
        async with db.unit_of_work() as session:
            found = await ledger.pending_hold(session, placed.source_id)
            assert found is not None
            await ledger.post_hold(session, found, kind=EntryKind.PAYMENT, amount=300)
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", record)
    assert len(updates) == (1 if ON_POSTGRES else 2)
    assert await state(db, alice.code) == AccountState(700, 0, 0)
    assert await state(db, shop.code) == AccountState(300, 0, 0)


async def test_posting_part_of_a_hold_releases_the_rest(container: Container) -> None:
    db, ledger = container.db, container.ledger
    alice = await open_wallet(container, "alice", 1_000)
    shop = wallet("shop", floor=None)
    placed = await place(container, hold_draft(container, alice, shop, 400))
    async with db.unit_of_work() as session:
        found = await ledger.pending_hold(session, placed.source_id)
        assert found is not None
        entry_id = await ledger.post_hold(session, found, kind=EntryKind.PAYMENT, amount=250, key="capture-1")
    assert await state(db, alice.code) == AccountState(750, 0, 0)
    assert await state(db, shop.code) == AccountState(250, 0, 0)
    posted = await hold_row(db, placed.id)
    assert (posted.status, posted.amount, posted.posted_amount) == ("posted", 400, 250)
    assert (await entry(db, entry_id)).idempotency_key == "capture-1"
    # What was released is available again.
    await ledger.transfer(move(alice, shop, 750))
    assert await balance(db, alice.code) == 0


async def test_posting_a_hold_under_a_key_already_booked_releases_it_without_booking_again(
    container: Container,
) -> None:
    """A payment booked directly while its hold was pending (say, a replayed answer): posting the hold under the
    same key returns that entry, moves no money twice, and still releases the reservation."""
    db, ledger = container.db, container.ledger
    alice = await open_wallet(container, "alice", 1_000)
    shop = wallet("shop", floor=None)
    placed = await place(container, hold_draft(container, alice, shop, 400))
    direct = await ledger.transfer(move(alice, shop, 300, key="pi_9:payment"))
    assert await state(db, alice.code) == AccountState(700, 400, 0)
    async with db.unit_of_work() as session:
        found = await ledger.pending_hold(session, placed.source_id)
        assert found is not None
        entry_id = await ledger.post_hold(
            session, found, kind=EntryKind.PAYMENT, amount=300, key="pi_9:payment"
        )
    assert entry_id == direct
    assert await state(db, alice.code) == AccountState(700, 0, 0)
    assert await state(db, shop.code) == AccountState(300, 0, 0)
    posted = await hold_row(db, placed.id)
    assert (posted.status, posted.entry_id) == ("posted", direct)
    assert await count(db, JournalEntry) == 2  # the top-up and the payment


@pytest.mark.parametrize("amount", [0, -1, 401])
async def test_a_hold_posts_between_one_and_its_amount(container: Container, amount: int) -> None:
    db, ledger = container.db, container.ledger
    alice = await open_wallet(container, "alice", 1_000)
    placed = await place(container, hold_draft(container, alice, wallet("shop", floor=None), 400))

    async def post() -> None:
        async with db.unit_of_work() as session:
            found = await ledger.pending_hold(session, placed.source_id)
            assert found is not None
            await ledger.post_hold(session, found, kind=EntryKind.PAYMENT, amount=amount)

    with pytest.raises(ValueError, match="posts between 1 and 400"):
        await post()
    assert (await hold_row(db, placed.id)).status == "pending"
    assert await state(db, alice.code) == AccountState(1_000, 400, 0)


async def test_voiding_a_hold_releases_it_without_moving_money(container: Container) -> None:
    db, ledger = container.db, container.ledger
    alice = await open_wallet(container, "alice", 1_000)
    shop = wallet("shop", floor=None)
    placed = await place(container, hold_draft(container, alice, shop, 400))
    entries = await count(db, JournalEntry)
    async with db.unit_of_work() as session:
        found = await ledger.pending_hold(session, placed.source_id)
        assert found is not None
        await ledger.void_hold(session, found)
    assert await state(db, alice.code) == AccountState(1_000, 0, 0)
    assert await state(db, shop.code) == AccountState(0, 0, 0)
    assert (await hold_row(db, placed.id)).status == "voided"
    assert await count(db, JournalEntry) == entries


async def test_expired_holds_are_released_once_their_time_is_up(
    container: Container, clock: FrozenClock
) -> None:
    db, ledger = container.db, container.ledger
    alice = await open_wallet(container, "alice", 1_000)
    shop = wallet("shop", floor=None)
    soon = await place(container, hold_draft(container, alice, shop, 100, ttl=timedelta(minutes=10)))
    later = await place(container, hold_draft(container, alice, shop, 200, ttl=timedelta(hours=2)))
    assert await ledger.expire_holds() == 0
    clock.advance(timedelta(minutes=10))  # expires_at <= now: due
    assert await ledger.expire_holds() == 1
    assert (await hold_row(db, soon.id)).status == "expired"
    assert (await hold_row(db, later.id)).status == "pending"
    assert await state(db, alice.code) == AccountState(1_000, 200, 0)
    assert await state(db, shop.code) == AccountState(0, 0, 200)
    assert await ledger.expire_holds() == 0
    clock.advance(timedelta(hours=3))
    assert await ledger.expire_holds() == 1
    assert await state(db, alice.code) == AccountState(1_000, 0, 0)
    assert await state(db, shop.code) == AccountState(0, 0, 0)


async def test_expire_holds_takes_at_most_its_limit(container: Container, clock: FrozenClock) -> None:
    alice = await open_wallet(container, "alice", 1_000)
    for _ in range(3):
        await place(container, hold_draft(container, alice, funding(), 10, ttl=timedelta(seconds=1)))
    clock.advance(timedelta(seconds=5))
    assert await container.ledger.expire_holds(limit=2) == 2
    assert await container.ledger.expire_holds(limit=2) == 1
    assert await state(container.db, alice.code) == AccountState(1_000, 0, 0)


@pytest.mark.parametrize("how", ["posted", "voided", "expired"])
async def test_a_hold_that_is_no_longer_pending_cannot_be_posted_or_voided(
    container: Container, clock: FrozenClock, how: str
) -> None:
    db, ledger = container.db, container.ledger
    alice = await open_wallet(container, "alice", 1_000)
    shop = wallet("shop", floor=None)
    placed = await place(container, hold_draft(container, alice, shop, 400, ttl=timedelta(minutes=1)))
    if how == "expired":
        clock.advance(timedelta(minutes=2))
        assert await ledger.expire_holds() == 1
    else:
        async with db.unit_of_work() as session:
            found = await ledger.pending_hold(session, placed.source_id)
            assert found is not None
            if how == "posted":
                await ledger.post_hold(session, found, kind=EntryKind.PAYMENT)
            else:
                await ledger.void_hold(session, found)
    before = (await state(db, alice.code), await state(db, shop.code), await count(db, JournalEntry))

    async def act_on_it(act: str) -> None:
        async with db.unit_of_work() as session:
            stored = await session.get(Hold, placed.id)
            assert stored is not None
            assert stored.status == how
            if act == "post":
                await ledger.post_hold(session, stored, kind=EntryKind.PAYMENT)
            else:
                await ledger.void_hold(session, stored)

    for act in ("post", "void"):
        with pytest.raises(HoldNotPending) as refused:
            await act_on_it(act)
        assert refused.value.code == "hold_not_pending"
    assert (await state(db, alice.code), await state(db, shop.code), await count(db, JournalEntry)) == before
    assert (await hold_row(db, placed.id)).status == how


async def test_a_hold_moves_money_within_one_currency(container: Container) -> None:
    with pytest.raises(ValueError, match="one currency"):
        await place(container, hold_draft(container, wallet("a"), wallet("b", "EUR"), 1))
    assert await count(container.db, LedgerAccount) == 0


# ---------------------------------------------------------------------------------------------- reversals


async def test_reverse_books_the_mirror_image(container: Container) -> None:
    db, ledger = container.db, container.ledger
    alice = await open_wallet(container, "alice", 1_000)
    shop = wallet("shop", floor=None)
    spend = draft(
        Leg(alice, Side.DEBIT, 300),
        Leg(shop, Side.CREDIT, 290),
        Leg(AccountSpec("fees:USD", AccountKind.FEES, "USD"), Side.CREDIT, 10),
        kind=EntryKind.PAYMENT,
    )
    original = await ledger.transfer(spend)
    async with db.unit_of_work() as session:
        reversal = await ledger.reverse(session, original, description="refunded in full")
    assert reversal != original
    assert await postings(db, reversal) == [
        (alice.code, "credit", 300, "USD", 1_000),
        (shop.code, "debit", 290, "USD", 0),
        ("fees:USD", "debit", 10, "USD", 0),
    ]
    booked = await entry(db, reversal)
    assert (booked.kind, booked.source_type, booked.source_id, booked.reverses_entry_id) == (
        "reversal",
        "ledger_entry",
        original,
        original,
    )
    assert (booked.idempotency_key, booked.description) == (f"reversal:{original}", "refunded in full")
    assert await balance(db, alice.code) == 1_000


async def test_an_entry_is_reversed_at_most_once(container: Container) -> None:
    db, ledger = container.db, container.ledger
    alice = await open_wallet(container, "alice", 1_000)
    shop = wallet("shop", floor=None)
    original = await ledger.transfer(move(alice, shop, 300))
    async with db.unit_of_work() as session:
        first = await ledger.reverse(session, original)
    async with db.unit_of_work() as session:
        second = await ledger.reverse(session, original)
    assert second == first
    async with db.reading() as session:
        reversals = (
            await session.execute(
                select(func.count())
                .select_from(JournalEntry)
                .where(JournalEntry.reverses_entry_id == original)
            )
        ).scalar_one()
    assert reversals == 1
    assert await balance(db, alice.code) == 1_000
    assert await balance(db, shop.code) == 0
    # Reversing the reversal books the original movement again, once.
    async with db.unit_of_work() as session:
        again = await ledger.reverse(session, first)
    assert again not in {original, first}
    assert await balance(db, alice.code) == 700


async def test_a_reversal_respects_the_floor(container: Container) -> None:
    """Top up 100, spend it: reversing the top-up would take the wallet to -100."""
    db, ledger = container.db, container.ledger
    alice = await open_wallet(container, "alice")
    topup = await fund(ledger, alice, 100)
    await ledger.transfer(move(alice, wallet("shop", floor=None), 100))
    with pytest.raises(InsufficientFunds):
        async with db.unit_of_work() as session:
            await ledger.reverse(session, topup)
    assert await balance(db, alice.code) == 0
    async with db.reading() as session:
        assert (
            await session.execute(select(JournalEntry).where(JournalEntry.reverses_entry_id == topup))
        ).first() is None


async def test_reversing_an_unknown_entry_is_not_found(container: Container) -> None:
    with pytest.raises(EntryNotFound):
        async with container.db.unit_of_work() as session:
            await container.ledger.reverse(session, "je_01JD000000000000000000000")


# ---------------------------------------------------------------------------------------------- fees


@pytest.mark.parametrize(
    ("percent_bps", "fixed", "amount", "fee"),
    [
        (290, 30, 1_005, 59),  # docs/ledger.md: 29.145 rounds to 29, plus 30
        (325, 0, 10_000, 325),  # docs/ledger.md's JPY rule
        (325, 0, 1_000, 33),  # 32.5: half rounds up
        (100, 0, 150, 2),  # 1.5 -> 2
        (100, 0, 149, 1),  # 1.49 -> 1
        (250, 0, 19, 0),  # 0.475 -> 0
        (250, 0, 20, 1),  # 0.5 -> 1
        (5_000, 0, 1, 1),  # 0.5 -> 1
        (0, 30, 1_000, 30),
        (0, 0, 1_000, 0),
        (0, 30, 20, 20),  # capped at the amount
        (10_000, 1, 100, 100),  # 100 % plus 1: capped
        (290, 30, 0, 0),
    ],
)
def test_fee_rounding(percent_bps: int, fixed: int, amount: int, fee: int) -> None:
    assert FeeRule("USD", percent_bps=percent_bps, fixed_amount=fixed).fee_for(amount) == fee


@given(
    amount=st.integers(min_value=0, max_value=MAX_AMOUNT),
    percent_bps=st.integers(min_value=0, max_value=10_000),
    fixed=st.integers(min_value=0, max_value=10_000),
)
def test_fee_is_the_half_up_percentage_plus_fixed_capped_at_the_amount(
    amount: int, percent_bps: int, fixed: int
) -> None:
    exact = Decimal(amount) * Decimal(percent_bps) / Decimal(10_000)
    expected = min(int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP)) + fixed, amount)
    assert FeeRule("JPY", percent_bps, fixed).fee_for(amount) == expected


@pytest.mark.parametrize(("percent_bps", "fixed"), [(-1, 0), (10_001, 0), (0, -1)])
def test_a_fee_rule_is_a_percentage_and_a_non_negative_fixed_part(percent_bps: int, fixed: int) -> None:
    with pytest.raises(ValueError, match=r"percent_bps|fixed_amount"):
        FeeRule("USD", percent_bps, fixed)


# ---------------------------------------------------------------------------------------------- append-only


async def _one_entry(container: Container) -> str:
    alice = await open_wallet(container, "alice")
    return await fund(container.ledger, alice, 100)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger_postings SET amount = amount + 1 WHERE entry_id = :id",
        "UPDATE ledger_postings SET balance_after = 0 WHERE entry_id = :id",
        "UPDATE ledger_entries SET description = 'edited' WHERE id = :id",
        "UPDATE ledger_entries SET kind = 'adjustment' WHERE id = :id",
    ],
)
async def test_entries_and_postings_refuse_an_update(container: Container, statement: str) -> None:
    db = container.db
    entry_id = await _one_entry(container)
    before = await postings(db, entry_id)
    with pytest.raises(DBAPIError, match="append-only"):
        async with db.unit_of_work() as session:
            await session.execute(text(statement), {"id": entry_id})
    assert await postings(db, entry_id) == before
    assert (await entry(db, entry_id)).description is None


@pytest.mark.postgres
@pytest.mark.parametrize(
    "statement",
    ["DELETE FROM ledger_postings WHERE entry_id = :id", "DELETE FROM ledger_entries WHERE id = :id"],
)
async def test_entries_and_postings_refuse_a_delete_on_postgres(container: Container, statement: str) -> None:
    db = container.db
    entry_id = await _one_entry(container)
    with pytest.raises(DBAPIError, match="append-only"):
        async with db.unit_of_work() as session:
            await session.execute(text(statement), {"id": entry_id})
    assert len(await postings(db, entry_id)) == 2


INSERT_ENTRY = text(
    "INSERT INTO ledger_entries (id, idempotency_key, kind, source_type, source_id, created_at)"
    " VALUES (:id, :id, 'adjustment', 'test', :id, now())"
)
INSERT_POSTING = text(
    "INSERT INTO ledger_postings (id, entry_id, account_id, account_kind, direction, amount, currency,"
    " balance_after, created_at) VALUES (:id, :entry, :account, 'wallet', :direction, :amount, 'USD', 0, now())"
)


@pytest.mark.postgres
async def test_an_unbalanced_entry_written_by_raw_sql_cannot_commit_on_postgres(container: Container) -> None:
    db, ledger = container.db, container.ledger
    alice = await open_wallet(container, "alice", 100)
    account = await ledger.account(alice.code)
    assert account is not None

    async def write_one_sided_entry() -> None:
        async with db.unit_of_work() as session:
            await session.execute(INSERT_ENTRY, {"id": "je_rogue"})
            await session.execute(
                INSERT_POSTING,
                {
                    "id": "btx_rogue1",
                    "entry": "je_rogue",
                    "account": account.id,
                    "direction": "credit",
                    "amount": 5,
                },
            )
            # The check is deferred: inside the transaction the insert succeeds ...
            inserted = text("SELECT count(*) FROM ledger_postings WHERE entry_id = 'je_rogue'")
            assert (await session.execute(inserted)).scalar_one() == 1
        # ... and the commit refuses it.

    with pytest.raises(IntegrityError, match="does not balance"):
        await write_one_sided_entry()
    async with db.reading() as session:
        assert (
            await session.execute(text("SELECT count(*) FROM ledger_entries WHERE id = 'je_rogue'"))
        ).scalar_one() == 0

    # The same trigger lets a balanced entry through, whatever code wrote it.
    async with db.unit_of_work() as session:
        await session.execute(INSERT_ENTRY, {"id": "je_even"})
        for posting_id, direction in (("btx_even1", "debit"), ("btx_even2", "credit")):
            await session.execute(
                INSERT_POSTING,
                {
                    "id": posting_id,
                    "entry": "je_even",
                    "account": account.id,
                    "direction": direction,
                    "amount": 5,
                },
            )
    assert len(await postings(db, "je_even")) == 2
    assert (await verify_ledger(db)).ok


# ---------------------------------------------------------------------------------------------- bugs


@pytest.mark.parametrize("mismatch", ["currency", "kind"])
async def test_a_spec_that_does_not_match_its_account_is_refused(container: Container, mismatch: str) -> None:
    db, ledger = container.db, container.ledger
    alice = await open_wallet(container, "alice", 100)  # a USD wallet, credit-normal
    if mismatch == "currency":
        alias = AccountSpec(alice.code, AccountKind.WALLET, "EUR", floor=0)
        booking = move(funding("EUR"), alias, 10)
    else:
        alias = AccountSpec(alice.code, AccountKind.FUNDING, "USD")  # debit-normal
        booking = move(alias, funding(), 10)
    try:
        with pytest.raises(AccountMismatch, match=alice.code):
            await ledger.transfer(booking)
        report = await verify_ledger(db)
        assert report.ok, report.violations
    finally:
        await empty_ledger(db)  # so that the suite's ledger check at teardown passes either way


async def _hold_to_itself(container: Container) -> tuple[AccountSpec, Hold]:
    alice = await open_wallet(container, "alice", 100)
    placed = await place(container, hold_draft(container, alice, alice, 40))
    assert await state(container.db, alice.code) == AccountState(100, 40, 40)
    return alice, placed


async def test_voiding_a_hold_from_an_account_to_itself_releases_all_of_it(container: Container) -> None:
    db, ledger = container.db, container.ledger
    alice, placed = await _hold_to_itself(container)
    async with db.unit_of_work() as session:
        found = await ledger.pending_hold(session, placed.source_id)
        assert found is not None
        await ledger.void_hold(session, found)
    assert await state(db, alice.code) == AccountState(100, 0, 0)


async def test_posting_a_hold_from_an_account_to_itself_releases_all_of_it(container: Container) -> None:
    db, ledger = container.db, container.ledger
    alice, placed = await _hold_to_itself(container)
    try:
        async with db.unit_of_work() as session:
            found = await ledger.pending_hold(session, placed.source_id)
            assert found is not None
            await ledger.post_hold(session, found, kind=EntryKind.TRANSFER)
        assert await state(db, alice.code) == AccountState(100, 0, 0)
        report = await verify_ledger(db)
        assert report.ok, report.violations
    finally:
        await empty_ledger(db)  # so that the suite's ledger check at teardown passes either way
