"""Bank statements in ISO 20022 camt.053: the sample conforms to the message definition (checked with the
pyiso20022 bindings), is read entry by entry (a batched entry gives a line per transaction detail), and a statement
of live payments matches them: credits are payments, a debit is a refund, by end-to-end id or remittance
information within the date window."""

from __future__ import annotations

import dataclasses
import importlib
import json
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import jinja2
import pytest
from sqlalchemy import select
from xsdata.formats.dataclass.parsers import XmlParser
from xsdata.formats.dataclass.parsers.config import ParserConfig
from xsdata.formats.dataclass.serializers import XmlSerializer

from paymux.container import Container
from paymux.core.clock import FrozenClock
from paymux.core.money import parse_decimal_string, to_decimal_string
from paymux.reconciliation.models import ReconciliationException
from paymux.reconciliation.schemas import RunReport
from tests.reconciliation.support import (
    DATA,
    Txn,
    assert_problem,
    counters,
    exceptions_of,
    import_path,
    matched_transactions,
    midnight,
    parse_time,
    pay,
    refund,
    scope_of,
    table_counts,
    upload,
    uploaded,
    write_file,
)
from tests.support import ServerClient, Tenant

SAMPLE = DATA / "camt053_sample.xml"
TEMPLATE = jinja2.Environment(
    loader=jinja2.FileSystemLoader(DATA),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
).get_template("camt053_statement.xml.j2")


# ---------------------------------------------------------------------------------------------- conformance


def document_class(version: str) -> type[Any]:
    """The pyiso20022 binding of camt.053.<version> (e.g. "001.02")."""
    module = importlib.import_module(f"pyiso20022.camt.camt_053_{version.replace('.', '_')}")
    document: type[Any] = module.Document
    return document


def missing_required(value: Any, path: str = "Document") -> list[str]:
    """Required elements the parsed message lacks (xsdata fills what it finds and leaves the rest None)."""
    if isinstance(value, list):
        return [gap for item in value for gap in missing_required(item, path)]
    if not dataclasses.is_dataclass(value) or isinstance(value, type):
        return []
    gaps = []
    for item in dataclasses.fields(value):
        name = item.metadata.get("name", item.name)
        child = getattr(value, item.name)
        if item.metadata.get("required") and (child is None or child == []):
            gaps.append(f"{path}/{name}")
        gaps += missing_required(child, f"{path}/{name}")
    return gaps


def element_names(xml: bytes) -> list[str]:
    """Every element's local name, in document order (the tests' own statements: no entities, nothing fetched)."""
    root = ET.fromstring(xml)  # noqa: S314 - XML the test itself wrote
    return [element.tag.rpartition("}")[2] for element in root.iter()]


def check_conformance(xml: bytes, version: str) -> Any:
    """Parse a statement with the message definition's bindings and fail on anything it does not define: an
    unknown element or attribute, a value that is not of its type (a code list, a date, a decimal), a required
    element left out, or elements out of the definition's order (the bindings write them back in that order)."""
    document = document_class(version)
    parser = XmlParser(
        config=ParserConfig(
            fail_on_unknown_properties=True, fail_on_unknown_attributes=True, fail_on_converter_warnings=True
        )
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parsed = parser.from_bytes(xml, document)
    assert missing_required(parsed) == []
    written = XmlSerializer().render(parsed).encode()
    assert element_names(written) == element_names(xml), "elements out of the message definition's order"
    return parsed


def test_the_sample_conforms_to_camt_053_001_02() -> None:
    data = SAMPLE.read_bytes()
    statement = check_conformance(data, "001.02").bk_to_cstmr_stmt.stmt[0]
    assert statement.acct.id.iban == "DE89370400440532013000"
    assert [balance.tp.cd_or_prtry.cd.value for balance in statement.bal] == ["PRCD", "CLBD"]
    assert len(statement.ntry) == 5
    batched = [entry for entry in statement.ntry if entry.ntry_dtls and len(entry.ntry_dtls[0].tx_dtls) > 1]
    assert len(batched) == 1
    # The statement adds up: the closing balance is the opening one plus credits less debits.
    signed = sum(
        (entry.amt.value if entry.cdt_dbt_ind.value == "CRDT" else -entry.amt.value)
        for entry in statement.ntry
    )
    assert statement.bal[0].amt.value + signed == statement.bal[1].amt.value
    assert (
        sum(detail.amt_dtls.tx_amt.amt.value for detail in batched[0].ntry_dtls[0].tx_dtls)
        == batched[0].amt.value
    )


@pytest.mark.parametrize(
    ("old", "new"),
    [
        pytest.param(b"<NtryRef>2</NtryRef>", b"<NtryRef>2</NtryRef><Memo>x</Memo>", id="unknown-element"),
        pytest.param(
            b"<CdtDbtInd>DBIT</CdtDbtInd>", b"<CdtDbtInd>DEBIT</CdtDbtInd>", id="not-in-the-code-list"
        ),
        pytest.param(b"<Dt>2026-11-19</Dt>", b"<Dt>19.11.2026</Dt>", id="not-a-date"),
        pytest.param(b"<Sts>BOOK</Sts>\n        <BookgDt>", b"<BookgDt>", id="required-element-left-out"),
        pytest.param(
            b"<CdtDbtInd>CRDT</CdtDbtInd>\n        <Sts>BOOK</Sts>",
            b"<Sts>BOOK</Sts>\n        <CdtDbtInd>CRDT</CdtDbtInd>",
            id="out-of-order",
        ),
        pytest.param(
            b'<Amt Ccy="EUR">250.50</Amt>', b'<Amt Ccy="EUR" Sign="+">250.50</Amt>', id="unknown-attribute"
        ),
    ],
)
def test_the_conformance_check_catches_a_broken_statement(old: bytes, new: bytes) -> None:
    """The check above has teeth: each of these one-place changes to the sample fails it."""
    data = SAMPLE.read_bytes()
    assert old in data
    with pytest.raises(Exception):  # noqa: B017, PT011 - xsdata's ParserError, a converter warning or our assert
        check_conformance(data.replace(old, new, 1), "001.02")


async def test_the_sample_is_read_entry_by_entry(
    container: Container, tenant: Tenant, tmp_path: Path
) -> None:
    """Nothing in paymux matches the sample: every line is missing_in_paymux, which shows how each was read."""
    copy = await write_file(tmp_path / "statement-2026-11-20.xml", SAMPLE.read_bytes())
    result = await import_path(container, copy, scope_of(tenant))
    report = RunReport.of(result.run).model_dump(mode="json")
    assert report["format"] == "camt053"
    assert (report["period_start"], report["period_end"]) == ("2026-11-20", "2026-11-20")
    assert counters(report) == {
        "status": "completed",
        "lines": 6,  # five entries, the batched one two lines
        "matched": 0,
        "missing_in_paymux": 6,
        "missing_in_file": 0,
        "amount_mismatch": 0,
        "currency_mismatch": 0,
        "duplicates": 0,
    }
    async with container.db.reading() as session:
        rows = (
            await session.execute(select(ReconciliationException).order_by(ReconciliationException.id))
        ).scalars()
        read = [
            (
                row.line_no,
                row.line_kind,
                row.provider_transaction_id,
                row.reference,
                row.file_amount,
                row.file_currency,
                row.transacted_at.isoformat() if row.transacted_at else None,
            )
            for row in rows
        ]
    midnight_20 = "2026-11-20T00:00:00+00:00"
    assert read == [
        (1, "payment", "2026112012345601", "pi_01JD4Q9V6W2N8X3Y5Z7A9B1C3D", 100000, "EUR", midnight_20),
        (2, "payment", "2026112012345602", "pi_01JD4QB7K2M4N6P8Q0R2S4T6V8", 25050, "EUR", midnight_20),
        (3, "refund", "2026112012345603", "txn_01JD4QC1D3F5G7H9J1K3M5N7P9", 4000, "EUR", midnight_20),
        (4, "payment", "2026112012345604", "pi_01JD4QD2E4G6H8J0K2M4N6P8R0", 12000, "EUR", midnight_20),
        (5, "payment", "2026112012345604", "pi_01JD4QE3F5H7J9K1M3N5P7R9S1", 18000, "EUR", midnight_20),
        (6, "refund", "2026112012345605", "Account maintenance fee November", 250, "EUR", midnight_20),
    ]


# ---------------------------------------------------------------------------------------------- live statements


@dataclass
class Detail:
    end_to_end_id: str
    amount: str
    remittance: str
    party: str = "Card Acquiring Japan K.K."


@dataclass
class Entry:
    indicator: str  # CRDT or DBIT
    booked: str
    bank_reference: str
    details: list[Detail] = field(default_factory=list)
    amount: str = ""


@dataclass
class Totals:
    count: int
    sum: str


def statement(entries: list[Entry], *, day: date, version: str = "001.02", currency: str = "JPY") -> bytes:
    """A statement of the given entries (each entry's amount the sum of its details) rendered from the template."""
    minor = {
        id(entry): sum(parse_decimal_string(detail.amount, currency) for detail in entry.details)
        for entry in entries
    }
    for entry in entries:
        entry.amount = to_decimal_string(minor[id(entry)], currency)
    credits = [minor[id(entry)] for entry in entries if entry.indicator == "CRDT"]
    debits = [minor[id(entry)] for entry in entries if entry.indicator == "DBIT"]
    opening = 5_000_000
    return TEMPLATE.render(
        version=version,
        msg_id=f"STMT{day:%Y%m%d}0001",
        created_at=f"{day + timedelta(days=1)}T05:42:17+09:00",
        sequence=day.toordinal() % 1000,
        iban="DE89370400440532013000",
        bic="COBADEFFXXX",
        currency=currency,
        opening=to_decimal_string(opening, currency),
        closing=to_decimal_string(opening + sum(credits) - sum(debits), currency),
        previous_day=(day - timedelta(days=1)).isoformat(),
        day=day.isoformat(),
        credits=Totals(len(credits), to_decimal_string(sum(credits), currency)),
        debits=Totals(len(debits), to_decimal_string(sum(debits), currency)),
        entries=entries,
    ).encode()


def credit(txn: Txn, *, end_to_end_id: str | None = None, remittance: str | None = None) -> Detail:
    return Detail(
        end_to_end_id=txn.reference if end_to_end_id is None else end_to_end_id,
        amount=to_decimal_string(txn.amount, txn.currency),
        remittance=f"Card settlement {txn.reference}" if remittance is None else remittance,
    )


async def day_of_payments(
    server: ServerClient, clock: FrozenClock, tenant: Tenant
) -> tuple[date, list[Txn], Txn, Txn]:
    day = midnight(clock.now())
    clock.set(day.replace(hour=9))
    payments = [await pay(server, clock, tenant, amount) for amount in (1000, 2500, 1200, 800, 3000)]
    money_back = await refund(server, clock, payments[1], 400)
    not_on_statement = await pay(server, clock, tenant, 9900)
    return day.date(), payments, money_back, not_on_statement


def live_entries(day: date, payments: list[Txn], money_back: Txn) -> list[Entry]:
    booked = day.isoformat()
    return [
        Entry("CRDT", booked, "BNK-0001", [credit(payments[0])]),
        Entry("CRDT", booked, "", [credit(payments[1])]),  # no bank reference: the end-to-end id stands in
        Entry(
            "DBIT",
            booked,
            "BNK-0003",
            [Detail(money_back.reference, to_decimal_string(400, "JPY"), "Refund", party="Hanako Yamada")],
        ),
        # One credit for two settlements.
        Entry("CRDT", booked, "BNK-0004", [credit(payments[2]), credit(payments[3])]),
        # No end-to-end id: the remittance information names the intent.
        Entry(
            "CRDT",
            booked,
            "BNK-0005",
            [credit(payments[4], end_to_end_id="NOTPROVIDED", remittance=payments[4].reference)],
        ),
        Entry("CRDT", booked, "BNK-0006", [Detail("pi_01JD4QZZZZZZZZZZZZZZZZZZZZ", "777", "Unknown payer")]),
    ]


@pytest.mark.parametrize("version", ["001.02", "001.08"])
async def test_a_statement_of_live_payments_matches_them(
    version: str, server: ServerClient, clock: FrozenClock, container: Container, tenant: Tenant
) -> None:
    day, payments, money_back, not_on_statement = await day_of_payments(server, clock, tenant)
    xml = statement(live_entries(day, payments, money_back), day=day, version=version)
    check_conformance(xml, version)

    report = await uploaded(
        server, clock, xml, content_type="application/xml", file_name=f"statement-{day}.xml"
    )
    assert report["format"] == "camt053"
    assert report["file_name"] == f"statement-{day}.xml"
    assert counters(report) == {
        "status": "completed",
        "lines": 7,
        "matched": 6,  # five payments (two of them in one entry) and the refund
        "missing_in_paymux": 1,
        "missing_in_file": 1,
        "amount_mismatch": 0,
        "currency_mismatch": 0,
        "duplicates": 0,
    }
    found = await exceptions_of(server, report["id"])
    assert [(item["kind"], item["line_no"], item["reference"], item["transaction_id"]) for item in found] == [
        ("missing_in_paymux", 7, "pi_01JD4QZZZZZZZZZZZZZZZZZZZZ", None),
        ("missing_in_file", None, not_on_statement.payment_intent_id, not_on_statement.id),
    ]
    assert set(await matched_transactions(container)) == {*(txn.id for txn in payments), money_back.id}
    assert found[0]["file_amount"] == 777
    assert found[0]["provider_transaction_id"] == "BNK-0006"
    assert parse_time(found[0]["transacted_at"]) == datetime.combine(day, time.min, tzinfo=UTC)

    # The statement again is the same run.
    again = await upload(server, clock, xml, content_type="application/xml")
    assert again.status_code == 200, again.text
    assert (again.json()["id"], again.json()["replayed"]) == (report["id"], True)


async def test_a_camt_053_001_06_statement_is_read_too(
    server: ServerClient, clock: FrozenClock, tenant: Tenant
) -> None:
    day, payments, money_back, _ = await day_of_payments(server, clock, tenant)
    xml = statement(live_entries(day, payments, money_back), day=day, version="001.06")
    check_conformance(xml, "001.06")  # a statement as the message definition has it
    report = await uploaded(server, clock, xml, content_type="application/xml")
    assert (report["lines"], report["matched"]) == (7, 6)


async def test_a_statement_booked_three_days_later_does_not_match_by_reference(
    server: ServerClient, clock: FrozenClock, tenant: Tenant
) -> None:
    """The bank books on its own day; end-to-end ids match only within 2 days of the settlement."""
    day, payments, _, _ = await day_of_payments(server, clock, tenant)
    late = (day + timedelta(days=3)).isoformat()
    near = (day + timedelta(days=2)).isoformat()
    xml = statement(
        [
            Entry("CRDT", near, "BNK-1", [credit(payments[0])]),
            Entry("CRDT", late, "BNK-2", [credit(payments[1])]),
        ],
        day=day,
    )
    report = await uploaded(server, clock, xml, content_type="application/xml")
    assert (report["lines"], report["matched"], report["missing_in_paymux"]) == (2, 1, 1)
    (unmatched,) = await exceptions_of(server, report["id"], kind="missing_in_paymux")
    assert (unmatched["line_no"], unmatched["reference"]) == (2, payments[1].payment_intent_id)


@pytest.mark.parametrize(
    ("old", "new", "says"),
    [
        pytest.param(b'Ccy="JPY">2500<', b'Ccy="JPY">2500.5<', "entry 2", id="decimals-for-jpy"),
        pytest.param(
            b'<Amt Ccy="JPY">1000</Amt>', b'<Amt Ccy="YEN">1000</Amt>', "entry 1", id="not-a-currency"
        ),
    ],
)
async def test_a_bad_entry_refuses_the_statement(
    old: bytes,
    new: bytes,
    says: str,
    server: ServerClient,
    clock: FrozenClock,
    container: Container,
    tenant: Tenant,
) -> None:
    day, payments, money_back, _ = await day_of_payments(server, clock, tenant)
    xml = statement(live_entries(day, payments, money_back), day=day)
    assert old in xml
    response = await upload(server, clock, xml.replace(old, new), content_type="application/xml")
    problem = assert_problem(response, 422, "invalid_settlement_file")
    assert problem["detail"].startswith(says), problem["detail"]
    assert await table_counts(container) == {"runs": 0, "matches": 0, "exceptions": 0}


async def test_external_entities_are_not_read(
    server: ServerClient, clock: FrozenClock, container: Container, tmp_path: Path
) -> None:
    """XML entities are off: an entity that points at a local file does not bring the file into the run."""
    secret = await write_file(tmp_path / "secret.txt", b"TOP-SECRET-7f3a")
    doctype = f'<!DOCTYPE Document [<!ENTITY leak SYSTEM "{secret.as_uri()}">]>\n'.encode()
    xml = SAMPLE.read_bytes().replace(b"?>\n", b"?>\n" + doctype, 1)
    xml = xml.replace(
        b"<EndToEndId>pi_01JD4Q9V6W2N8X3Y5Z7A9B1C3D</EndToEndId>", b"<EndToEndId>&leak;</EndToEndId>"
    )
    xml = xml.replace(
        b"<Ustrd>Card settlement pi_01JD4Q9V6W2N8X3Y5Z7A9B1C3D</Ustrd>", b"<Ustrd>&leak;</Ustrd>"
    )
    response = await upload(server, clock, xml, content_type="application/xml")
    assert response.status_code == 201, response.text
    assert b"TOP-SECRET" not in response.content
    found = await exceptions_of(server, response.json()["id"])
    assert b"TOP-SECRET" not in json.dumps(found).encode()
    # The entry's end-to-end id and remittance information read as absent: its reference is the entry's
    # additional information.
    assert (found[0]["line_no"], found[0]["reference"]) == (1, "SEPA Credit Transfer")
    async with container.db.reading() as session:
        stored = (await session.execute(select(ReconciliationException.reference))).scalars().all()
    assert not any("TOP-SECRET" in (reference or "") for reference in stored)
