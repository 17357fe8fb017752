"""What a caller asks the ledger to book: an entry draft, checked to balance before it reaches the database."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from enum import StrEnum

from paymux.core.money import MAX_AMOUNT
from paymux.ledger.accounts import AccountSpec, Side


class EntryKind(StrEnum):
    PAYMENT = "payment"
    FEE = "fee"
    REFUND = "refund"
    REFUND_SETTLED = "refund_settled"
    REFUND_FAILURE = "refund_failure"
    TRANSFER = "transfer"
    ADJUSTMENT = "adjustment"
    REVERSAL = "reversal"


class UnbalancedEntry(ValueError):
    """A draft whose debits and credits differ in some currency: a bug in the caller, never booked."""


@dataclass(frozen=True, slots=True)
class Leg:
    account: AccountSpec
    side: Side
    amount: int

    def __post_init__(self) -> None:
        if type(self.amount) is not int or not 0 < self.amount <= MAX_AMOUNT:
            raise UnbalancedEntry(f"a posting amount is a positive integer, not {self.amount!r}")

    @property
    def balance_delta(self) -> int:
        """How this leg moves its account's balance (which is kept in the account's normal side)."""
        return self.amount if self.side is self.account.normal_side else -self.amount


@dataclass(frozen=True, slots=True)
class EntryDraft:
    """An entry to book. `idempotency_key` names it for good: booking the same key again returns the first entry.

    The key is built from the source object and what happened to it (`pi_...:captured`), so a replayed event or a
    retried use case can never book twice.
    """

    idempotency_key: str
    kind: EntryKind
    source_type: str
    source_id: str
    legs: tuple[Leg, ...]
    merchant_id: int | None = None
    client_partner_id: int | None = None
    description: str | None = None
    reverses_entry_id: str | None = field(default=None)

    def __post_init__(self) -> None:
        if len(self.legs) < 2:
            raise UnbalancedEntry("an entry has at least two postings")
        totals: dict[str, int] = defaultdict(int)
        for leg in self.legs:
            totals[leg.account.currency] += leg.amount if leg.side is Side.DEBIT else -leg.amount
        unbalanced = {currency: total for currency, total in totals.items() if total != 0}
        if unbalanced:
            raise UnbalancedEntry(f"entry {self.idempotency_key} does not balance: {unbalanced}")


def transfer(
    key: str,
    *,
    debit: AccountSpec,
    credit: AccountSpec,
    amount: int,
    kind: EntryKind,
    source_type: str,
    source_id: str,
    description: str | None = None,
) -> EntryDraft:
    """The simplest entry: one amount from one account to another, in their shared currency."""
    if debit.currency != credit.currency:
        raise UnbalancedEntry("a transfer moves money within one currency")
    return EntryDraft(
        idempotency_key=key,
        kind=kind,
        source_type=source_type,
        source_id=source_id,
        legs=(Leg(debit, Side.DEBIT, amount), Leg(credit, Side.CREDIT, amount)),
        merchant_id=debit.merchant_id if debit.merchant_id is not None else credit.merchant_id,
        client_partner_id=(
            debit.client_partner_id if debit.client_partner_id is not None else credit.client_partner_id
        ),
        description=description,
    )
