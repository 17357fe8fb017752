"""The ledger's tables: accounts with their running balances, journal entries, postings and holds.

Entries and postings are append-only (PostgreSQL and SQLite triggers refuse an UPDATE); a mistake is undone by a
reversing entry. An account's balance is kept on its row, changed only together with the postings that explain it,
and a CHECK constraint keeps it at or above the account's floor whatever the code above it does.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from paymux.core.db import Base, UTCDateTime


class LedgerAccount(Base):
    """One account in one currency. `balance` is in the account's normal side: credits minus debits for a
    credit-normal account (what paymux owes: a merchant's payable, a wallet), debits minus credits for a
    debit-normal one (what is owed to paymux: a provider's clearing account).

    `pending_out` is the sum of pending holds that will lower the balance when posted, `pending_in` of those that
    will raise it; the available balance is `balance - pending_out`, and that is what the floor guards.
    """

    __tablename__ = "ledger_accounts"
    __table_args__ = (
        CheckConstraint("floor IS NULL OR balance - pending_out >= floor", name="floor"),
        CheckConstraint("pending_out >= 0 AND pending_in >= 0", name="pending_not_negative"),
        CheckConstraint("normal_side IN ('debit', 'credit')", name="normal_side"),
        Index("ix_ledger_accounts_merchant_id_kind", "merchant_id", "kind"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    code: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    client_partner_id: Mapped[int | None] = mapped_column(BigInteger)
    merchant_id: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    normal_side: Mapped[str] = mapped_column(String(6))
    floor: Mapped[int | None] = mapped_column(BigInteger)
    balance: Mapped[int] = mapped_column(BigInteger, default=0)
    pending_out: Mapped[int] = mapped_column(BigInteger, default=0)
    pending_in: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class JournalEntry(Base):
    """A set of postings that balance per currency, booked once per idempotency key."""

    __tablename__ = "ledger_entries"
    __table_args__ = (Index("ix_ledger_entries_source", "source_id", "source_type"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    client_partner_id: Mapped[int | None] = mapped_column(BigInteger)
    merchant_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    source_type: Mapped[str] = mapped_column(String(32))
    source_id: Mapped[str] = mapped_column(String(64))
    reverses_entry_id: Mapped[str | None] = mapped_column(String(40), unique=True)
    description: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Posting(Base):
    """One leg of an entry: a positive amount debited or credited to one account, and the balance it left."""

    __tablename__ = "ledger_postings"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("direction IN ('debit', 'credit')", name="direction"),
        Index("ix_ledger_postings_account_id_id", "account_id", "id"),
        Index("ix_ledger_postings_merchant_id_id", "merchant_id", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    entry_id: Mapped[str] = mapped_column(String(40), ForeignKey("ledger_entries.id"), index=True)
    account_id: Mapped[str] = mapped_column(String(40), ForeignKey("ledger_accounts.id"))
    account_kind: Mapped[str] = mapped_column(String(32))
    client_partner_id: Mapped[int | None] = mapped_column(BigInteger)
    merchant_id: Mapped[int | None] = mapped_column(BigInteger)
    direction: Mapped[str] = mapped_column(String(6))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    balance_after: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Hold(Base):
    """A two-phase transfer: reserved now (pending), then posted (in full or in part) or voided, or expired."""

    __tablename__ = "ledger_holds"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("posted_amount IS NULL OR posted_amount <= amount", name="posted_within_amount"),
        Index("ix_ledger_holds_source", "source_id", "status"),
        Index("ix_ledger_holds_status_expires_at", "status", "expires_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    client_partner_id: Mapped[int | None] = mapped_column(BigInteger)
    merchant_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    debit_account_id: Mapped[str] = mapped_column(String(40), ForeignKey("ledger_accounts.id"))
    credit_account_id: Mapped[str] = mapped_column(String(40), ForeignKey("ledger_accounts.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16))
    posted_amount: Mapped[int | None] = mapped_column(BigInteger)
    entry_id: Mapped[str | None] = mapped_column(String(40), ForeignKey("ledger_entries.id"))
    source_type: Mapped[str] = mapped_column(String(32))
    source_id: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
