"""Settlement files: the CSV a provider produces for a day of settled payments and refunds, one layout per provider.

A layout names the provider's columns for the seven facts paymux reads from every line: what it was (payment or
refund), the provider's transaction id, the merchant's reference (paymux sends its intent id for a payment and its
refund id for a refund), the amount as a decimal in the currency's major unit, the currency, the provider's fee,
and when it happened (ISO 8601, UTC). The sandboxes write files in these layouts; reconciliation reads them.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Protocol, runtime_checkable

from paymux.core.money import MAX_AMOUNT, CurrencyError, parse_decimal_string, to_decimal_string
from paymux.providers.base import ProviderCredentials

# A NUL, or a byte that is not UTF-8 (read with errors="surrogateescape", it arrives as a lone surrogate): named at
# its exact line, where a strict decoder would fail a whole read-ahead chunk early.
_UNHOLDABLE = re.compile("[\x00\udc80-\udcff]")


class LineKind(StrEnum):
    PAYMENT = "payment"
    REFUND = "refund"


@dataclass(frozen=True, slots=True)
class SettlementLine:
    kind: LineKind
    provider_transaction_id: str
    reference: str
    amount: int
    currency: str
    fee: int
    transacted_at: datetime


class SettlementFileError(ValueError):
    """A line that cannot be read; the message names the line."""


@dataclass(frozen=True, slots=True)
class SettlementLayout:
    provider: str
    kind: str
    transaction_id: str
    reference: str
    amount: str
    currency: str
    fee: str
    transacted_at: str
    payment_value: str
    refund_value: str

    @property
    def header(self) -> list[str]:
        return [
            self.kind,
            self.transaction_id,
            self.reference,
            self.amount,
            self.currency,
            self.fee,
            self.transacted_at,
        ]

    def render(self, line: SettlementLine) -> list[str]:
        return [
            self.payment_value if line.kind is LineKind.PAYMENT else self.refund_value,
            line.provider_transaction_id,
            line.reference,
            to_decimal_string(line.amount, line.currency),
            line.currency,
            to_decimal_string(line.fee, line.currency),
            line.transacted_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        ]

    def check_header(self, header: list[str] | None) -> None:
        if any(_UNHOLDABLE.search(name) for name in header or []):
            raise SettlementFileError("line 1: not UTF-8 text")
        missing = [name for name in self.header if name not in (header or [])]
        if missing:
            raise SettlementFileError(
                f"line 1: not a {self.provider} settlement file: it lacks the column(s) {', '.join(missing)} "
                f"(expected {','.join(self.header)})"
            )

    def parse(self, row: Mapping[str, str | None], line_no: int) -> SettlementLine:
        for value in row.values():
            if isinstance(value, str) and (bad := _UNHOLDABLE.search(value)) is not None:
                what = "a NUL character" if bad.group() == "\x00" else "not UTF-8 text"
                raise SettlementFileError(f"line {line_no}: {what}")

        def text(column: str) -> str:
            value = (row.get(column) or "").strip()
            if not value:
                raise SettlementFileError(f"line {line_no}: {column} is empty")
            return value

        kinds = {self.payment_value: LineKind.PAYMENT, self.refund_value: LineKind.REFUND}
        kind = kinds.get(text(self.kind))
        if kind is None:
            raise SettlementFileError(
                f"line {line_no}: {self.kind} is {row.get(self.kind)!r}, not {self.payment_value} or {self.refund_value}"
            )
        currency = text(self.currency)
        try:
            amount = parse_decimal_string(text(self.amount), currency)
            fee = parse_decimal_string(row.get(self.fee) or "0", currency)
        except CurrencyError as exc:
            raise SettlementFileError(f"line {line_no}: {exc}") from None
        if not 0 < amount <= MAX_AMOUNT or not 0 <= fee <= MAX_AMOUNT:
            raise SettlementFileError(
                f"line {line_no}: the amount is between 1 and {MAX_AMOUNT} minor units and the fee not negative"
            )
        try:
            transacted_at = datetime.fromisoformat(text(self.transacted_at).replace("Z", "+00:00"))
        except ValueError:
            raise SettlementFileError(
                f"line {line_no}: {self.transacted_at} is not an ISO 8601 time: {row.get(self.transacted_at)!r}"
            ) from None
        if transacted_at.tzinfo is None:
            transacted_at = transacted_at.replace(tzinfo=UTC)
        try:
            transacted_at = transacted_at.astimezone(UTC)
        except OverflowError:
            raise SettlementFileError(f"line {line_no}: {self.transacted_at} is out of range") from None
        for column in (self.transaction_id, self.reference):
            if len(text(column)) > 128:
                raise SettlementFileError(f"line {line_no}: {column} is longer than 128 characters")
        return SettlementLine(
            kind=kind,
            provider_transaction_id=text(self.transaction_id),
            reference=text(self.reference),
            amount=amount,
            currency=currency,
            fee=fee,
            transacted_at=transacted_at,
        )

    def read(self, stream: io.TextIOBase) -> Iterator[tuple[int, SettlementLine]]:
        """The lines of a file, numbered as a spreadsheet numbers them (the header is line 1); a record that spans
        lines (a quoted line break) has the number of its first line, and so do the errors about it."""
        reader = csv.reader(stream)
        start = 1
        try:
            header = next(reader, None)
            self.check_header(header)
            assert header is not None  # noqa: S101 - check_header refused an empty file
            while True:
                start = reader.line_num + 1
                fields = next(reader, None)
                if fields is None:
                    return
                if not any(field.strip() for field in fields):
                    continue  # a blank line
                yield start, self.parse(dict(zip(header, fields, strict=False)), start)
        except UnicodeDecodeError as exc:
            raise SettlementFileError(f"line {reader.line_num + 1}: not UTF-8 text ({exc.reason})") from None
        except csv.Error as exc:
            raise SettlementFileError(f"line {start}: malformed CSV ({exc})") from None


@dataclass
class SettlementBook:
    """A sandbox's record of what it settled, from which it writes the file for a day."""

    layout: SettlementLayout
    lines: list[SettlementLine] = field(default_factory=list)

    def record(self, line: SettlementLine) -> None:
        self.lines.append(line)

    def csv_for(self, day: date) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(self.layout.header)
        for line in self.lines:
            if line.transacted_at.astimezone(UTC).date() == day:
                writer.writerow(self.layout.render(line))
        return out.getvalue()


@runtime_checkable
class SettlementCapable(Protocol):
    """A provider whose API hands out a settlement file per day; the worker reconciles it daily."""

    @property
    def settlement_layout(self) -> SettlementLayout: ...

    async def fetch_settlement_file(self, credentials: ProviderCredentials, day: date) -> bytes: ...


LAYOUTS: dict[str, SettlementLayout] = {
    layout.provider: layout
    for layout in (
        SettlementLayout(
            "test",
            "type",
            "provider_transaction_id",
            "reference",
            "amount",
            "currency",
            "fee",
            "transacted_at",
            "payment",
            "refund",
        ),
        SettlementLayout(
            "paypay",
            "transactionType",
            "paymentId",
            "merchantPaymentId",
            "amount",
            "currency",
            "fee",
            "transactionAt",
            "PAYMENT",
            "REFUND",
        ),
        SettlementLayout(
            "linepay",
            "transactionType",
            "transactionId",
            "orderId",
            "amount",
            "currency",
            "fee",
            "transactionDate",
            "PAYMENT",
            "REFUND",
        ),
        SettlementLayout(
            "rakuten",
            "type",
            "charge_id",
            "order_id",
            "amount",
            "currency",
            "fee",
            "created_at",
            "charge",
            "refund",
        ),
        SettlementLayout(
            "dpayment",
            "transaction_type",
            "payment_id",
            "merchant_payment_id",
            "amount",
            "currency",
            "fee",
            "transaction_at",
            "PAYMENT",
            "REFUND",
        ),
        SettlementLayout(
            "aupay",
            "type",
            "transaction_id",
            "merchant_order_id",
            "amount",
            "currency",
            "fee",
            "transacted_at",
            "PAYMENT",
            "REFUND",
        ),
    )
}
