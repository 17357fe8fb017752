"""Bank statements in ISO 20022 camt.053, read with pycamt (any camt.053.001.NN namespace; entities and network
access off). A statement is parsed whole: banks send one per account and day, far smaller than a provider's file.

Each entry (or each transaction detail of a batched entry) becomes a line: a credit is money in (a payment), a
debit money out (a refund). The bank's reference (AcctSvcrRef) is the transaction id, the end-to-end id (or the
remittance information) the reference, the booking date the time.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, date, datetime

from pycamt.parser import Camt053Parser

from paymux.core.money import CurrencyError, parse_decimal_string
from paymux.providers.settlement import LineKind, SettlementFileError, SettlementLine

NOT_PROVIDED = "NOTPROVIDED"
CAMT053_NAMESPACE = re.compile(r"^\{urn:iso:std:iso:20022:tech:xsd:camt\.053\.001\.\d{2}\}Document$")


def read_camt053(data: bytes) -> Iterator[tuple[int, SettlementLine]]:
    try:
        parser = Camt053Parser(data)
        entries = parser.get_transactions()
    except Exception as exc:  # lxml and pycamt raise many kinds; all mean "not a statement we can read"
        raise SettlementFileError(f"not a readable camt.053 statement: {exc}") from None
    # pycamt names only some versions; the statement's namespace says which it is, and pycamt reads any of them.
    if not CAMT053_NAMESPACE.search(str(parser.tree.tag)):
        raise SettlementFileError("not a camt.053 statement (its namespace is not camt.053.001.NN)")
    for number, entry in enumerate(entries, start=1):
        yield number, _line(entry, number)


def _line(entry: dict[str, str | None], number: int) -> SettlementLine:
    currency = entry.get("Currency") or ""
    try:
        amount = parse_decimal_string(entry.get("Amount") or "", currency)
    except CurrencyError as exc:
        raise SettlementFileError(f"entry {number}: {exc}") from None
    indicator = entry.get("CreditDebitIndicator")
    if indicator not in {"CRDT", "DBIT"}:
        raise SettlementFileError(f"entry {number}: CdtDbtInd is {indicator!r}, not CRDT or DBIT")
    end_to_end = entry.get("EndToEndId")
    reference = (
        end_to_end
        if end_to_end and end_to_end != NOT_PROVIDED
        else (entry.get("RemittanceInformation") or entry.get("AdditionalEntryInformation") or "")
    )
    transaction_id = entry.get("TransactionID") or end_to_end or ""
    if not transaction_id or not reference:
        raise SettlementFileError(f"entry {number}: neither a bank reference nor an end-to-end id")
    return SettlementLine(
        kind=LineKind.PAYMENT if indicator == "CRDT" else LineKind.REFUND,
        provider_transaction_id=transaction_id[:128],
        reference=reference.strip()[:128],
        amount=amount,
        currency=currency,
        fee=0,
        transacted_at=_booked(entry.get("BookingDate") or entry.get("ValueDate"), number),
    )


def _booked(value: str | None, number: int) -> datetime:
    if not value:
        raise SettlementFileError(f"entry {number}: no booking date")
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), datetime.min.time(), tzinfo=UTC)
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise SettlementFileError(f"entry {number}: {value!r} is not a date") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
