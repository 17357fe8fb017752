from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Date, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from paymux.core.db import Base, UTCDateTime


class ReconciliationRun(Base):
    """One imported file and its report. The same file for the same provider and scope is one run."""

    __tablename__ = "reconciliation_runs"
    __table_args__ = (UniqueConstraint("provider", "scope_key", "file_sha256"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    provider: Mapped[str] = mapped_column(String(32))
    format: Mapped[str] = mapped_column(String(16))
    file_name: Mapped[str | None] = mapped_column(String(255))
    file_sha256: Mapped[str] = mapped_column(String(64))
    file_bytes: Mapped[int] = mapped_column(BigInteger)
    scope_key: Mapped[str] = mapped_column(String(40))  # "all", "p<partner>" or "m<merchant>"
    client_partner_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    merchant_id: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(16))  # cli, api, schedule
    created_by: Mapped[str] = mapped_column(String(64))
    period_start: Mapped[date | None] = mapped_column(Date)
    period_end: Mapped[date | None] = mapped_column(Date)
    lines: Mapped[int] = mapped_column(BigInteger, default=0)
    matched: Mapped[int] = mapped_column(BigInteger, default=0)
    missing_in_paymux: Mapped[int] = mapped_column(BigInteger, default=0)
    missing_in_file: Mapped[int] = mapped_column(BigInteger, default=0)
    amount_mismatch: Mapped[int] = mapped_column(BigInteger, default=0)
    currency_mismatch: Mapped[int] = mapped_column(BigInteger, default=0)
    duplicates: Mapped[int] = mapped_column(BigInteger, default=0)
    error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ReconciliationMatch(Base):
    """A paymux transaction some file has accounted for; a second line claiming it is a duplicate."""

    __tablename__ = "reconciliation_matches"

    provider: Mapped[str] = mapped_column(String(32), primary_key=True)
    transaction_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(40), index=True)
    line_no: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ReconciliationException(Base):
    """Something a run could not match. It stays open until it is matched by a later file or resolved, with a
    reason, by someone (recorded with when and from where)."""

    __tablename__ = "reconciliation_exceptions"
    __table_args__ = (
        Index("ix_reconciliation_exceptions_run_id_id", "run_id", "id"),
        Index("ix_reconciliation_exceptions_transaction_id", "transaction_id", "status"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(40))
    provider: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(24))
    status: Mapped[str] = mapped_column(String(16))
    client_partner_id: Mapped[int | None] = mapped_column(BigInteger)
    merchant_id: Mapped[int | None] = mapped_column(BigInteger)
    line_no: Mapped[int | None] = mapped_column(BigInteger)
    line_kind: Mapped[str | None] = mapped_column(String(16))
    transaction_id: Mapped[str | None] = mapped_column(String(40))
    payment_intent_id: Mapped[str | None] = mapped_column(String(40))
    provider_transaction_id: Mapped[str | None] = mapped_column(String(128))
    reference: Mapped[str | None] = mapped_column(String(128))
    file_amount: Mapped[int | None] = mapped_column(BigInteger)
    file_currency: Mapped[str | None] = mapped_column(String(3))
    paymux_amount: Mapped[int | None] = mapped_column(BigInteger)
    paymux_currency: Mapped[str | None] = mapped_column(String(3))
    transacted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolution: Mapped[str | None] = mapped_column(String(500))
    resolved_by: Mapped[str | None] = mapped_column(String(64))
    resolved_from: Mapped[str | None] = mapped_column(String(64))
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ScheduledReconciliation(Base):
    """The daily job's claim on one store provider config and day, so that many workers run it once."""

    __tablename__ = "reconciliation_schedule"

    provider_config_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    run_id: Mapped[str | None] = mapped_column(String(40))
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime)
