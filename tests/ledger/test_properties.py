"""A Hypothesis state machine drives LedgerService against the real database of this pass (SQLite, or PostgreSQL
in the PostgreSQL pass) and checks it against a model after every step.

Rules: top-ups, transfers between floored wallets (same wallet included), payment-like entries with a fee, a
two-currency exchange, batches, holds posted in full or in part, voided or expired, reversals and replays of an
idempotency key. The model predicts each outcome (booked, or refused with InsufficientFunds) from the floors, and
after each step `verify_ledger` must pass, every account must hold the model's balance and pending sums, debits
must equal credits per currency and each account's postings must chain their `balance_after`.

A failure prints the Hypothesis seed and a `@reproduce_failure` blob (print_blob=True).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from pydantic import SecretStr
from sqlalchemy import case, func, select

from paymux.config import Settings
from paymux.container import Container
from paymux.core.clock import FrozenClock
from paymux.ledger.accounts import AccountKind, AccountSpec, MerchantAccounts, Side
from paymux.ledger.entries import EntryDraft, EntryKind, Leg
from paymux.ledger.errors import InsufficientFunds
from paymux.ledger.fees import FeeRule
from paymux.ledger.models import LedgerAccount, Posting
from paymux.ledger.service import HoldDraft
from paymux.ledger.verify import verify_ledger
from tests.ledger.support import empty_ledger, funding, move, normal_side, wallet

T = TypeVar("T")

MASTER_KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="  # base64 of bytes 0..31, as in tests/conftest.py

CURRENCIES = ("USD", "JPY")
WALLETS = tuple(wallet(f"w{index}", currency) for currency in CURRENCIES for index in range(3))
FLOORS = {spec.code: 0 for spec in WALLETS}
FUNDING = {currency: funding(currency) for currency in CURRENCIES}
MERCHANTS = {currency: MerchantAccounts(1, 1, currency) for currency in CURRENCIES}
FX_DESK = {
    currency: AccountSpec(f"fxdesk:{currency}", AccountKind.SUSPENSE, currency) for currency in CURRENCIES
}
#: Same-currency wallet pairs, a wallet with itself included (its intermediate balance is checked too).
PAIRS = tuple((a, b) for a in WALLETS for b in WALLETS if a.currency == b.currency)
#: Holds between wallets (a wallet with itself included) and from funding into a wallet.
HOLD_PAIRS = PAIRS + tuple((FUNDING[spec.currency], spec) for spec in WALLETS)
FEES = (FeeRule("X", 0, 0), FeeRule("X", 290, 30), FeeRule("X", 325, 0), FeeRule("X", 10_000, 0))

amounts = st.integers(min_value=1, max_value=3_000)
LegSpec = tuple[AccountSpec, Side, int]


class Harness:
    """One event loop and one Container (FrozenClock) for every example of a run."""

    def __init__(self, database_url: str, key_file: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.clock = FrozenClock(datetime(2026, 11, 21, 12, 0, tzinfo=UTC))
        self.container = Container.build(
            Settings(
                database_url=database_url,
                master_key=SecretStr(MASTER_KEY),
                master_key_file=key_file,
                log_level="WARNING",
            ),
            clock=self.clock,
        )

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    def close(self) -> None:
        try:
            self.run(empty_ledger(self.container.db))
            self.run(self.container.close())
        finally:
            self.loop.close()


@dataclass
class Expected:
    balance: int = 0
    pending_out: int = 0
    pending_in: int = 0


@dataclass(frozen=True)
class OpenHold:
    source_id: str
    debit: AccountSpec
    credit: AccountSpec
    amount: int
    expires_at: datetime


@dataclass
class Booked:
    entry_id: str
    legs: tuple[LegSpec, ...]
    draft: EntryDraft | None = None  # set for entries booked from a draft, to replay its key
    reversal: str | None = None


def delta(spec: AccountSpec, side: Side, amount: int) -> int:
    return amount if side is normal_side(spec) else -amount


def legs_of(drafts: Sequence[EntryDraft]) -> tuple[LegSpec, ...]:
    return tuple((leg.account, leg.side, leg.amount) for draft in drafts for leg in draft.legs)


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self, harness: Harness) -> None:
        super().__init__()
        self.harness = harness
        self.db = harness.container.db
        self.ledger = harness.container.ledger
        self.keys = itertools.count(1)
        self.accounts: dict[str, Expected] = {}
        self.holds: dict[str, OpenHold] = {}
        self.entries: list[Booked] = []
        harness.run(empty_ledger(self.db))
        for spec in WALLETS:
            harness.run(self.ledger.open_account(spec))
            self.accounts[spec.code] = Expected()

    # ------------------------------------------------------------------------------------ the model

    def key(self, what: str) -> str:
        return f"{what}-{next(self.keys)}"

    def account(self, spec: AccountSpec) -> Expected:
        return self.accounts.get(spec.code) or Expected()

    def feasible(self, legs: Sequence[LegSpec]) -> bool:
        """Walk the legs in order from the balances before them: no floored account may dip below its floor."""
        running: dict[str, int] = {}
        for spec, side, amount in legs:
            running.setdefault(spec.code, self.account(spec).balance)
            running[spec.code] += delta(spec, side, amount)
            floor = FLOORS.get(spec.code)
            if floor is not None and running[spec.code] - self.account(spec).pending_out < floor:
                return False
        return True

    def apply(self, legs: Sequence[LegSpec]) -> None:
        for spec, side, amount in legs:
            self.accounts.setdefault(spec.code, Expected()).balance += delta(spec, side, amount)

    def reserve(self, hold: OpenHold, sign: int) -> None:
        for spec, side in ((hold.debit, Side.DEBIT), (hold.credit, Side.CREDIT)):
            expected = self.accounts.setdefault(spec.code, Expected())
            if side is normal_side(spec):
                expected.pending_in += sign * hold.amount
            else:
                expected.pending_out += sign * hold.amount

    def book(self, drafts: Sequence[EntryDraft], *, replayable: bool = True) -> None:
        """Book a draft (or a batch) and check the outcome the model predicts."""
        legs = legs_of(drafts)
        expected = self.feasible(legs)

        async def booking() -> list[str]:
            if len(drafts) == 1:
                return [await self.ledger.transfer(drafts[0])]
            async with self.db.unit_of_work() as session:
                return await self.ledger.book_many(session, drafts)

        try:
            ids = self.harness.run(booking())
        except InsufficientFunds:
            assert not expected, f"refused, but the model says {legs} fits"
            return
        assert expected, f"booked, but {legs} breaches a floor"
        assert len(set(ids)) == len(drafts)
        self.apply(legs)
        for entry_id, draft in zip(ids, drafts, strict=True):
            self.entries.append(Booked(entry_id, legs_of([draft]), draft if replayable else None))

    # ------------------------------------------------------------------------------------ rules

    @rule(target_wallet=st.sampled_from(WALLETS), amount=st.integers(min_value=1, max_value=10_000))
    def top_up(self, target_wallet: AccountSpec, amount: int) -> None:
        self.book([move(FUNDING[target_wallet.currency], target_wallet, amount, key=self.key("topup"))])

    @rule(pair=st.sampled_from(PAIRS), amount=amounts)
    def transfer(self, pair: tuple[AccountSpec, AccountSpec], amount: int) -> None:
        self.book([move(pair[0], pair[1], amount, key=self.key("transfer"))])

    @rule(payer=st.sampled_from(WALLETS), amount=amounts, fee_rule=st.sampled_from(FEES))
    def pay_a_merchant(self, payer: AccountSpec, amount: int, fee_rule: FeeRule) -> None:
        """A payment-like entry: the wallet pays, the merchant gets the amount less the fee, the platform the fee."""
        merchant = MERCHANTS[payer.currency]
        fee = fee_rule.fee_for(amount)
        legs = [Leg(payer, Side.DEBIT, amount)]
        if amount - fee:
            legs.append(Leg(merchant.payable, Side.CREDIT, amount - fee))
        if fee:
            legs.append(Leg(merchant.fees, Side.CREDIT, fee))
        key = self.key("payment")
        draft = EntryDraft(key, EntryKind.PAYMENT, "payment_intent", key, tuple(legs), merchant_id=1)
        self.book([draft])

    @rule(usd=st.sampled_from(WALLETS[:3]), jpy=st.sampled_from(WALLETS[3:]), sold=amounts, bought=amounts)
    def exchange(self, usd: AccountSpec, jpy: AccountSpec, sold: int, bought: int) -> None:
        """One entry in two currencies, balanced in each."""
        key = self.key("fx")
        legs = (
            Leg(usd, Side.DEBIT, sold),
            Leg(FX_DESK["USD"], Side.CREDIT, sold),
            Leg(FX_DESK["JPY"], Side.DEBIT, bought),
            Leg(jpy, Side.CREDIT, bought),
        )
        self.book([EntryDraft(key, EntryKind.TRANSFER, "test", key, legs)])

    @rule(first=st.sampled_from(PAIRS), second=st.sampled_from(PAIRS), amount1=amounts, amount2=amounts)
    def batch(
        self,
        first: tuple[AccountSpec, AccountSpec],
        second: tuple[AccountSpec, AccountSpec],
        amount1: int,
        amount2: int,
    ) -> None:
        self.book(
            [
                move(first[0], first[1], amount1, key=self.key("batch")),
                move(second[0], second[1], amount2, key=self.key("batch")),
            ]
        )

    @rule(
        pair=st.sampled_from(HOLD_PAIRS),
        amount=st.integers(min_value=1, max_value=1_000),
        ttl=st.integers(min_value=1, max_value=3_600),
    )
    def hold(self, pair: tuple[AccountSpec, AccountSpec], amount: int, ttl: int) -> None:
        debit, credit = pair
        key = self.key("hold")
        draft = HoldDraft(
            key, debit, credit, amount, "test", key, self.harness.clock.now() + timedelta(seconds=ttl)
        )
        expected = self.feasible([(debit, Side.DEBIT, amount)])

        async def place() -> str:
            async with self.db.unit_of_work() as session:
                return (await self.ledger.hold(session, draft)).id

        try:
            hold_id = self.harness.run(place())
        except InsufficientFunds:
            assert not expected
            return
        assert expected
        self.holds[hold_id] = OpenHold(key, debit, credit, amount, draft.expires_at)
        self.reserve(self.holds[hold_id], +1)

    @precondition(lambda self: bool(self.holds))
    @rule(data=st.data())
    def post(self, data: st.DataObject) -> None:
        hold_id = data.draw(st.sampled_from(sorted(self.holds)), label="hold")
        hold = self.holds[hold_id]
        amount = data.draw(
            st.one_of(st.none(), st.integers(min_value=1, max_value=hold.amount)), label="amount"
        )

        async def post() -> str:
            async with self.db.unit_of_work() as session:
                found = await self.ledger.pending_hold(session, hold.source_id)
                assert found is not None
                assert found.id == hold_id
                return await self.ledger.post_hold(session, found, kind=EntryKind.TRANSFER, amount=amount)

        entry_id = self.harness.run(post())  # a hold's reservation always covers its posting
        del self.holds[hold_id]
        self.reserve(hold, -1)
        posted = amount or hold.amount
        legs = ((hold.debit, Side.DEBIT, posted), (hold.credit, Side.CREDIT, posted))
        assert self.feasible(legs)
        self.apply(legs)
        self.entries.append(Booked(entry_id, legs))

    @precondition(lambda self: bool(self.holds))
    @rule(data=st.data())
    def void(self, data: st.DataObject) -> None:
        hold_id = data.draw(st.sampled_from(sorted(self.holds)), label="hold")
        hold = self.holds.pop(hold_id)

        async def void() -> None:
            async with self.db.unit_of_work() as session:
                found = await self.ledger.pending_hold(session, hold.source_id)
                assert found is not None
                await self.ledger.void_hold(session, found)

        self.harness.run(void())
        self.reserve(hold, -1)

    @rule(seconds=st.sampled_from([0, 1, 600, 1_800, 3_600]))
    def time_passes_and_holds_expire(self, seconds: int) -> None:
        self.harness.clock.advance(seconds)
        now = self.harness.clock.now()
        due = [hold_id for hold_id, hold in self.holds.items() if hold.expires_at <= now]
        assert self.harness.run(self.ledger.expire_holds(limit=1_000)) == len(due)
        for hold_id in due:
            self.reserve(self.holds.pop(hold_id), -1)

    @precondition(lambda self: bool(self.entries))
    @rule(data=st.data())
    def reverse(self, data: st.DataObject) -> None:
        booked = data.draw(st.sampled_from(self.entries), label="entry")
        mirror = tuple((spec, side.opposite, amount) for spec, side, amount in booked.legs)
        expected = booked.reversal is not None or self.feasible(mirror)

        async def reverse() -> str:
            async with self.db.unit_of_work() as session:
                return await self.ledger.reverse(session, booked.entry_id)

        try:
            reversal = self.harness.run(reverse())
        except InsufficientFunds:
            assert not expected
            return
        assert expected
        if booked.reversal is not None:
            assert reversal == booked.reversal  # booked once: the second call returns the first reversal
            return
        booked.reversal = reversal
        self.apply(mirror)
        self.entries.append(Booked(reversal, mirror))

    @precondition(lambda self: any(booked.draft is not None for booked in self.entries))
    @rule(data=st.data())
    def replay(self, data: st.DataObject) -> None:
        booked = data.draw(st.sampled_from([b for b in self.entries if b.draft is not None]), label="entry")
        assert booked.draft is not None
        assert self.harness.run(self.ledger.transfer(booked.draft)) == booked.entry_id

    # ------------------------------------------------------------------------------------ invariants

    @invariant()
    def the_ledger_verifies(self) -> None:
        report = self.harness.run(verify_ledger(self.db))
        assert report.violations == []
        assert report.entries == len(self.entries)
        assert report.pending_holds == len(self.holds)

    @invariant()
    def every_account_matches_the_model(self) -> None:
        async def read() -> dict[str, Expected]:
            async with self.db.reading() as session:
                rows = await session.execute(
                    select(
                        LedgerAccount.code,
                        LedgerAccount.balance,
                        LedgerAccount.pending_out,
                        LedgerAccount.pending_in,
                    )
                )
                return {code: Expected(*sums) for code, *sums in rows}

        assert self.harness.run(read()) == self.accounts

    @invariant()
    def debits_equal_credits_in_each_currency(self) -> None:
        async def totals() -> list[tuple[str, int, int]]:
            debits = func.sum(case((Posting.direction == "debit", Posting.amount), else_=0))
            credits = func.sum(case((Posting.direction == "credit", Posting.amount), else_=0))
            async with self.db.reading() as session:
                rows = await session.execute(
                    select(Posting.currency, debits, credits).group_by(Posting.currency)
                )
                return [(currency, int(d), int(c)) for currency, d, c in rows]

        for currency, debited, credited in self.harness.run(totals()):
            assert debited == credited, f"{currency}: debits {debited} != credits {credited}"

    @invariant()
    def postings_chain_their_balance_after(self) -> None:
        async def chains() -> dict[str, list[tuple[str, int, int, str]]]:
            async with self.db.reading() as session:
                rows = await session.execute(
                    select(
                        LedgerAccount.code,
                        Posting.direction,
                        Posting.amount,
                        Posting.balance_after,
                        LedgerAccount.normal_side,
                    )
                    .join(LedgerAccount, LedgerAccount.id == Posting.account_id)
                    .order_by(Posting.id)
                )
                found: dict[str, list[tuple[str, int, int, str]]] = defaultdict(list)
                for code, direction, amount, after, side in rows:
                    found[code].append((direction, amount, after, side))
                return found

        for code, chain in self.harness.run(chains()).items():
            running = 0
            for direction, amount, after, side in chain:
                running += amount if direction == side else -amount
                assert after == running, f"{code}: balance_after {after}, expected {running}"
            assert running == self.accounts[code].balance


def test_the_ledger_keeps_its_invariants_under_random_operations(database_url: str, tmp_path: Path) -> None:
    harness = Harness(database_url, tmp_path / "master.key")
    try:

        class OnThisDatabase(LedgerMachine):
            def __init__(self) -> None:
                super().__init__(harness)

        run_state_machine_as_test(
            OnThisDatabase,
            settings=settings(
                max_examples=20,
                stateful_step_count=30,
                deadline=None,
                print_blob=True,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
    finally:
        harness.close()
