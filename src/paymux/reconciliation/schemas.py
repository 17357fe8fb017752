from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints

from paymux.core.inputs import InputModel
from paymux.core.pagination import Page
from paymux.reconciliation.models import ReconciliationException, ReconciliationRun


class RunReport(BaseModel):
    """A reconciliation run: one imported file and how it matched paymux's transactions."""

    object: Literal["reconciliation_run"] = "reconciliation_run"
    id: str = Field(examples=["rcn_01JD4Q9V6W2N8X3Y5Z7A9B1C3D"])
    provider: str
    format: str = Field(description="csv (a provider's settlement file) or camt053 (a bank statement)")
    status: str = Field(description="running, completed or failed")
    file_name: str | None
    file_sha256: str
    file_bytes: int
    source: str = Field(description="cli, api or schedule")
    merchant_id: int | None
    period_start: date | None = Field(description="First day of the file's lines (UTC)")
    period_end: date | None = Field(description="Last day of the file's lines (UTC)")
    lines: int
    matched: int
    missing_in_paymux: int = Field(description="Lines paymux has no transaction for")
    missing_in_file: int = Field(
        description="paymux transactions of the file's days that no file accounts for"
    )
    amount_mismatch: int
    currency_mismatch: int
    duplicates: int = Field(description="Lines for a transaction an earlier line (of any file) accounted for")
    error: str | None
    created_at: datetime
    completed_at: datetime | None
    replayed: bool = Field(
        default=False, description="True when this file was imported before: the earlier run, nothing changed"
    )

    @classmethod
    def of(cls, run: ReconciliationRun, *, replayed: bool = False) -> RunReport:
        return cls(
            id=run.id,
            provider=run.provider,
            format=run.format,
            status=run.status,
            file_name=run.file_name,
            file_sha256=run.file_sha256,
            file_bytes=run.file_bytes,
            source=run.source,
            merchant_id=run.merchant_id,
            period_start=run.period_start,
            period_end=run.period_end,
            lines=run.lines,
            matched=run.matched,
            missing_in_paymux=run.missing_in_paymux,
            missing_in_file=run.missing_in_file,
            amount_mismatch=run.amount_mismatch,
            currency_mismatch=run.currency_mismatch,
            duplicates=run.duplicates,
            error=run.error,
            created_at=run.created_at,
            completed_at=run.completed_at,
            replayed=replayed,
        )


class RunList(Page[RunReport]):
    pass


class ExceptionOut(BaseModel):
    object: Literal["reconciliation_exception"] = "reconciliation_exception"
    id: str = Field(examples=["rex_01JD4Q9V6W2N8X3Y5Z7A9B1C3D"])
    run_id: str
    provider: str
    kind: str = Field(
        description="missing_in_paymux, missing_in_file, amount_mismatch, currency_mismatch or duplicate"
    )
    status: str = Field(description="open or resolved")
    merchant_id: int | None
    line_no: int | None = Field(description="The file's line (CSV, header = 1) or entry (camt.053)")
    line_kind: str | None = Field(description="payment or refund")
    transaction_id: str | None
    payment_intent_id: str | None
    provider_transaction_id: str | None
    reference: str | None
    file_amount: int | None
    file_currency: str | None
    paymux_amount: int | None
    paymux_currency: str | None
    transacted_at: datetime | None
    resolution: str | None
    resolved_by: str | None
    resolved_at: datetime | None
    created_at: datetime

    @classmethod
    def of(cls, item: ReconciliationException) -> ExceptionOut:
        return cls(
            id=item.id,
            run_id=item.run_id,
            provider=item.provider,
            kind=item.kind,
            status=item.status,
            merchant_id=item.merchant_id,
            line_no=item.line_no,
            line_kind=item.line_kind,
            transaction_id=item.transaction_id,
            payment_intent_id=item.payment_intent_id,
            provider_transaction_id=item.provider_transaction_id,
            reference=item.reference,
            file_amount=item.file_amount,
            file_currency=item.file_currency,
            paymux_amount=item.paymux_amount,
            paymux_currency=item.paymux_currency,
            transacted_at=item.transacted_at,
            resolution=item.resolution,
            resolved_by=item.resolved_by,
            resolved_at=item.resolved_at,
            created_at=item.created_at,
        )


class ExceptionList(Page[ExceptionOut]):
    pass


class ResolveRequest(InputModel):
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=500)] = Field(
        description="Why the exception is closed (kept for audit)"
    )
