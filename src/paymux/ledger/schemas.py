from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from paymux.core.pagination import Page
from paymux.ledger.models import JournalEntry, Posting
from paymux.ledger.service import CurrencyBalance


class MoneyAmount(BaseModel):
    amount: int = Field(description="In the currency's minor unit")
    currency: str


class BalanceOut(BaseModel):
    """What paymux owes a merchant, per currency."""

    object: Literal["balance"] = "balance"
    merchant_id: int
    available: list[MoneyAmount] = Field(
        description="Posted to the merchant, less what pending debits have reserved"
    )
    pending: list[MoneyAmount] = Field(
        description="Payments in flight or authorised and not yet captured: the merchant's once they succeed"
    )

    @classmethod
    def of(cls, merchant_id: int, balances: list[CurrencyBalance]) -> BalanceOut:
        return cls(
            merchant_id=merchant_id,
            available=[MoneyAmount(amount=row.available, currency=row.currency) for row in balances],
            pending=[MoneyAmount(amount=row.pending, currency=row.currency) for row in balances],
        )


class BalanceTransactionOut(BaseModel):
    """One movement of a merchant's balance: a posting to its payable account."""

    object: Literal["balance_transaction"] = "balance_transaction"
    id: str = Field(examples=["btx_01JD4Q9V6W2N8X3Y5Z7A9B1C3D"])
    merchant_id: int
    type: str = Field(
        description="payment, fee, refund, refund_failure, adjustment, reversal, ...", examples=["payment"]
    )
    amount: int = Field(description="Signed, in the minor unit: positive adds to the merchant's balance")
    currency: str
    balance_after: int = Field(description="The merchant's posted balance in this currency right after it")
    source_type: str = Field(examples=["payment_intent"])
    source: str = Field(
        description="Id of the object that caused it", examples=["pi_01JD4Q9V6W2N8X3Y5Z7A9B1C3D"]
    )
    entry_id: str = Field(description="The journal entry this posting belongs to")
    description: str | None
    created_at: datetime

    @classmethod
    def of(cls, posting: Posting, entry: JournalEntry) -> BalanceTransactionOut:
        # Payable accounts are credit-normal: a credit raises what the merchant is owed.
        signed = posting.amount if posting.direction == "credit" else -posting.amount
        return cls(
            id=posting.id,
            merchant_id=posting.merchant_id or 0,
            type=entry.kind,
            amount=signed,
            currency=posting.currency,
            balance_after=posting.balance_after,
            source_type=entry.source_type,
            source=entry.source_id,
            entry_id=entry.id,
            description=entry.description,
            created_at=posting.created_at,
        )


class BalanceTransactionList(Page[BalanceTransactionOut]):
    pass
