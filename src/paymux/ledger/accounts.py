"""The chart of accounts: which accounts exist, which side is their normal side, and their stable codes.

Every account a payment touches belongs to one merchant, so a payment's entries never span two merchants (the
sharding rule of the design) and no single row is hot across merchants. Provider clearing is kept per merchant,
provider and currency: the sum over merchants is the provider's clearing position.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Side(StrEnum):
    DEBIT = "debit"
    CREDIT = "credit"

    @property
    def opposite(self) -> Side:
        return Side.CREDIT if self is Side.DEBIT else Side.DEBIT


class AccountKind(StrEnum):
    MERCHANT_PAYABLE = "merchant_payable"  # what paymux owes the merchant (credit-normal)
    PROVIDER_CLEARING = "provider_clearing"  # what a provider owes for the merchant's payments (debit-normal)
    FEES = "fees"  # the platform's fee income from the merchant (credit-normal)
    REFUNDS = "refunds"  # refunds sent to a provider and not yet confirmed (credit-normal)
    SUSPENSE = "suspense"  # money seen but not yet explained, e.g. by reconciliation (debit-normal)
    WALLET = "wallet"  # a prepaid customer's stored value (credit-normal, floor 0)
    FUNDING = "funding"  # where stored value comes from: a bank or top-up source (debit-normal)

    @property
    def normal_side(self) -> Side:
        return Side.DEBIT if self in _DEBIT_NORMAL else Side.CREDIT


_DEBIT_NORMAL = frozenset({AccountKind.PROVIDER_CLEARING, AccountKind.SUSPENSE, AccountKind.FUNDING})


@dataclass(frozen=True, slots=True)
class AccountSpec:
    """Names an account; the ledger opens it the first time a posting needs it."""

    code: str
    kind: AccountKind
    currency: str
    merchant_id: int | None = None
    client_partner_id: int | None = None
    floor: int | None = None

    def __post_init__(self) -> None:
        # An account opens at 0, so a floor above 0 (a minimum balance) would make it invalid from birth.
        if self.floor is not None and self.floor > 0:
            raise ValueError("a floor is 0 (no overdraft) or below (an overdraft limit), never above 0")

    @property
    def normal_side(self) -> Side:
        return self.kind.normal_side


@dataclass(frozen=True, slots=True)
class MerchantAccounts:
    """The accounts of one merchant in one currency."""

    client_partner_id: int
    merchant_id: int
    currency: str

    def _spec(self, kind: AccountKind, suffix: str = "") -> AccountSpec:
        return AccountSpec(
            code=f"m{self.merchant_id}:{kind.value}{suffix}:{self.currency}",
            kind=kind,
            currency=self.currency,
            merchant_id=self.merchant_id,
            client_partner_id=self.client_partner_id,
        )

    @property
    def payable(self) -> AccountSpec:
        return self._spec(AccountKind.MERCHANT_PAYABLE)

    @property
    def fees(self) -> AccountSpec:
        return self._spec(AccountKind.FEES)

    @property
    def refunds(self) -> AccountSpec:
        return self._spec(AccountKind.REFUNDS)

    @property
    def suspense(self) -> AccountSpec:
        return self._spec(AccountKind.SUSPENSE)

    def clearing(self, provider: str) -> AccountSpec:
        return self._spec(AccountKind.PROVIDER_CLEARING, f":{provider}")
