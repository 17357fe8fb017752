from __future__ import annotations

from paymux.core.errors import Conflict, Forbidden, NotFound


class InsufficientFunds(Conflict):
    """A debit would take an account below its floor. The unit of work that asked must roll back."""

    code = "insufficient_funds"
    title = "The account's available balance does not cover this amount"


class HoldNotFound(NotFound):
    code = "hold_not_found"
    title = "No such hold"


class HoldNotPending(Conflict):
    code = "hold_not_pending"
    title = "The hold was already posted, voided or expired"


class EntryNotFound(NotFound):
    code = "ledger_entry_not_found"
    title = "No such ledger entry"


class BalancesNeedMerchant(Forbidden):
    code = "balances_need_merchant_scope"
    title = "Balances belong to a merchant"
