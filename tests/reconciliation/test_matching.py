"""Matching a `test` settlement file against real payments and refunds: every kind of result, by the provider's
id and by reference within the 2-day window, duplicates within a file and across files, and `missing_in_file`
resolved by a later file (docs/reconciliation.md, Matching)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from paymux.container import Container
from paymux.core.clock import FrozenClock
from paymux.providers.settlement import LAYOUTS
from paymux.reconciliation.models import ReconciliationMatch
from paymux.reconciliation.schemas import RunReport
from paymux.reconciliation.service import ImportRequest, ReconciliationService
from tests.reconciliation.support import (
    Txn,
    count,
    counters,
    csv_bytes,
    exceptions_of,
    import_path,
    iso,
    matched_transactions,
    midnight,
    parse_time,
    pay,
    refund,
    run_report,
    scope_of,
    uploaded,
    write_file,
)
from tests.support import ServerClient, Tenant

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


async def import_file(
    via: str,
    body: bytes,
    *,
    server: ServerClient,
    clock: FrozenClock,
    container: Container,
    tenant: Tenant,
    path: Path,
) -> dict[str, Any]:
    """Import a file through the service (merchant scope) or the API; the run's report as the API shows it."""
    if via == "api":
        return await uploaded(server, clock, body)
    result = await import_path(container, await write_file(path, body), scope_of(tenant))
    assert result.replayed is False
    report = RunReport.of(result.run).model_dump(mode="json")
    assert report == await run_report(server, result.run.id) | {"replayed": False}
    return report


def brief(item: dict[str, Any]) -> tuple[Any, ...]:
    return (item["kind"], item["line_no"], item["transaction_id"], item["file_amount"], item["paymux_amount"])


@pytest.mark.parametrize("via", ["service", "api"])
async def test_every_kind_of_result(
    via: str,
    server: ServerClient,
    clock: FrozenClock,
    container: Container,
    tenant: Tenant,
    tmp_path: Path,
) -> None:
    day = midnight(clock.now())
    # Settled earlier: within the window of the file's day, and outside it.
    by_reference = await pay(server, clock, tenant, 1500, at=day - DAY + 20 * HOUR)
    too_old = await pay(server, clock, tenant, 1200, at=day - 3 * DAY + 8 * HOUR)
    # Settled on the file's day.
    plain = await pay(server, clock, tenant, 1000, at=day + 9 * HOUR)
    refunded = await pay(server, clock, tenant, 3000)
    first_refund = await refund(server, clock, refunded, 800)
    second_refund = await refund(server, clock, refunded, 200)
    wrong_amount = await pay(server, clock, tenant, 1000)
    wrong_currency = await pay(server, clock, tenant, 1000)
    declined = await pay(server, clock, tenant, 40002, expect="failed")
    not_in_file = await pay(server, clock, tenant, 2500, at=day + 11 * HOUR)
    assert {txn.created_at.date() for txn in (plain, first_refund, not_in_file)} == {day.date()}

    noon = day + 12 * HOUR
    rows: list[list[str] | None] = [
        plain.row(),  # 2 matched by the provider's id
        refunded.row(),  # 3
        first_refund.row(),  # 4 a refund, by the provider's id
        by_reference.row(provider_transaction_id="PSP-BATCH-7781", at=noon),  # 5 by reference, 16 h apart
        second_refund.row(provider_transaction_id="PSP-BATCH-7782", at=noon),  # 6 a refund by reference
        None,  # 7 a blank line, skipped but counted
        too_old.row(provider_transaction_id="PSP-BATCH-7783", at=noon),  # 8 76 h apart: not this payment
        [
            "payment",
            "test_ch_01JD00000000000000000000",
            "pi_01JD00000000000000000000",
            "700",
            "JPY",
            "0",
            iso(noon),
        ],
        wrong_amount.row(amount="990"),  # 10
        wrong_currency.row(amount="10.00", currency="USD"),  # 11
        plain.row(),  # 12 the same line again
        declined.row(),  # 13 a declined payment did not settle
    ]
    report = await import_file(
        via,
        csv_bytes(rows),
        server=server,
        clock=clock,
        container=container,
        tenant=tenant,
        path=tmp_path / "test-settlement.csv",
    )

    assert counters(report) == {
        "status": "completed",
        "lines": 11,
        "matched": 5,
        "missing_in_paymux": 3,
        "missing_in_file": 1,
        "amount_mismatch": 1,
        "currency_mismatch": 1,
        "duplicates": 1,
    }
    assert report["provider"] == "test"
    assert report["format"] == "csv"
    assert report["merchant_id"] == tenant.merchant_id
    assert report["period_start"] == report["period_end"] == day.date().isoformat()
    assert report["source"] == ("api" if via == "api" else "cli")
    assert report["file_name"] == ("upload" if via == "api" else "test-settlement.csv")
    assert report["error"] is None
    assert report["completed_at"] is not None

    found = await exceptions_of(server, report["id"])
    assert [brief(item) for item in found] == [
        ("missing_in_paymux", 8, None, 1200, None),
        ("missing_in_paymux", 9, None, 700, None),
        ("amount_mismatch", 10, wrong_amount.id, 990, 1000),
        ("currency_mismatch", 11, wrong_currency.id, 1000, 1000),
        ("duplicate", 12, plain.id, 1000, 1000),
        ("missing_in_paymux", 13, None, 40002, None),
        ("missing_in_file", None, not_in_file.id, None, 2500),
    ]
    assert all(item["status"] == "open" and item["run_id"] == report["id"] for item in found)
    assert all(item["merchant_id"] == tenant.merchant_id for item in found)
    by_line = {item["line_no"]: item for item in found}
    assert by_line[8]["reference"] == too_old.payment_intent_id
    assert by_line[8]["provider_transaction_id"] == "PSP-BATCH-7783"
    assert by_line[8]["payment_intent_id"] is None
    assert by_line[11]["file_currency"] == "USD"
    assert by_line[11]["paymux_currency"] == "JPY"
    assert by_line[12]["payment_intent_id"] == plain.payment_intent_id
    assert by_line[13]["provider_transaction_id"] == declined.provider_transaction_id
    missing = by_line[None]
    assert missing["line_kind"] == "payment"
    assert missing["payment_intent_id"] == not_in_file.payment_intent_id
    assert missing["provider_transaction_id"] == not_in_file.provider_transaction_id
    assert missing["reference"] == not_in_file.payment_intent_id
    assert parse_time(missing["transacted_at"]) == not_in_file.updated_at

    # Every filter of the list agrees.
    assert [
        item["line_no"] for item in await exceptions_of(server, report["id"], kind="missing_in_paymux")
    ] == [
        8,
        9,
        13,
    ]
    assert len(await exceptions_of(server, report["id"], status="open")) == 7
    assert await exceptions_of(server, report["id"], status="resolved") == []

    # What the file accounted for is claimed by this run, at the line that accounted for it.
    claims = await matched_transactions(container)
    accounted = [plain, refunded, first_refund, by_reference, second_refund, wrong_amount, wrong_currency]
    assert claims == {txn.id: report["id"] for txn in accounted}
    assert (
        await count(
            container,
            ReconciliationMatch.transaction_id,
            ReconciliationMatch.transaction_id == plain.id,
            ReconciliationMatch.line_no == 2,
        )
        == 1
    )


async def test_reference_window_is_two_days_either_side(
    server: ServerClient, clock: FrozenClock, tenant: Tenant
) -> None:
    day = midnight(clock.now())
    at_edge = await pay(server, clock, tenant, 1100, at=day + 10 * HOUR)
    past_edge = await pay(server, clock, tenant, 1200)
    before = await pay(server, clock, tenant, 1300)
    refunded = await pay(server, clock, tenant, 5000)
    late_refund = await refund(server, clock, refunded, 500)
    rows = [
        at_edge.row(provider_transaction_id="PSP-1", at=at_edge.updated_at + 2 * DAY),
        past_edge.row(
            provider_transaction_id="PSP-2", at=past_edge.updated_at + 2 * DAY + timedelta(seconds=1)
        ),
        before.row(provider_transaction_id="PSP-3", at=before.updated_at - 2 * DAY),
        late_refund.row(provider_transaction_id="PSP-4", at=late_refund.updated_at + 2 * DAY + HOUR),
        refunded.row(),
    ]
    report = await uploaded(server, clock, csv_bytes(rows))
    found = await exceptions_of(server, report["id"])
    assert [(item["kind"], item["line_no"], item["transaction_id"]) for item in found] == [
        ("missing_in_paymux", 3, None),
        ("missing_in_paymux", 5, None),
        # The file's days run from two days before to two days after: the two it did not account for.
        *sorted(
            [("missing_in_file", None, past_edge.id), ("missing_in_file", None, late_refund.id)],
            key=lambda item: str(item[2]),
        ),
    ]
    assert counters(report) | {"period": (report["period_start"], report["period_end"])} == {
        "status": "completed",
        "lines": 5,
        "matched": 3,
        "missing_in_paymux": 2,
        "missing_in_file": 2,
        "amount_mismatch": 0,
        "currency_mismatch": 0,
        "duplicates": 0,
        "period": ((day - 2 * DAY).date().isoformat(), (day + 2 * DAY).date().isoformat()),
    }


def results(found: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return sorted(
        ((item["kind"], item["line_no"], item["transaction_id"]) for item in found), key=lambda row: str(row)
    )


async def test_a_reference_finds_only_a_transaction_of_the_lines_kind(
    server: ServerClient, clock: FrozenClock, tenant: Tenant
) -> None:
    """A payment is known by its intent's id, a refund by its own id or its intent's: a refund line that names the
    intent matches the refund, a payment line that names a refund's id matches nothing."""
    day = midnight(clock.now())
    payment = await pay(server, clock, tenant, 2000, at=day + 9 * HOUR)
    money_back = await refund(server, clock, payment, 2000)
    rows = [
        ["refund", "PSP-9", payment.payment_intent_id, "2000", "JPY", "0", iso(money_back.updated_at)],
        ["payment", "PSP-10", money_back.id, "2000", "JPY", "0", iso(payment.updated_at)],
    ]
    report = await uploaded(server, clock, csv_bytes(rows))
    assert (report["matched"], report["missing_in_paymux"], report["missing_in_file"]) == (1, 1, 1)
    assert results(await exceptions_of(server, report["id"])) == results(
        [
            {"kind": "missing_in_paymux", "line_no": 3, "transaction_id": None},
            {"kind": "missing_in_file", "line_no": None, "transaction_id": payment.id},
        ]
    )


async def test_partial_refunds_named_by_their_intent_each_match_one_refund(
    server: ServerClient, clock: FrozenClock, container: Container, tenant: Tenant
) -> None:
    """Providers that key refunds by the original order name three refunds of one payment alike: each line takes
    a refund no line has accounted for yet, the one of its amount first, in this file and the next."""
    day = midnight(clock.now())
    payment = await pay(server, clock, tenant, 3000, at=day + 9 * HOUR)
    refunds = [await refund(server, clock, payment, amount) for amount in (300, 300, 500)]
    intent = payment.payment_intent_id

    def line(amount: str, n: int) -> list[str]:
        return ["refund", f"PSP-R{n}", intent, amount, "JPY", "0", iso(refunds[0].updated_at)]

    first = await uploaded(server, clock, csv_bytes([payment.row(), line("500", 1), line("300", 2)]))
    assert (first["matched"], first["duplicates"], first["missing_in_file"]) == (3, 0, 1)
    claims = await matched_transactions(container)
    assert {refunds[2].id, payment.id} < set(claims)
    assert len({refunds[0].id, refunds[1].id} & set(claims)) == 1

    # The next file's line takes the refund still free; a further one finds them all taken: a duplicate.
    later = await uploaded(server, clock, csv_bytes([line("300", 3), line("300", 4)]))
    assert (later["matched"], later["duplicates"], later["missing_in_paymux"]) == (1, 1, 0)
    assert set(await matched_transactions(container)) == {payment.id, *(txn.id for txn in refunds)}
    (missing,) = await exceptions_of(server, first["id"], kind="missing_in_file")
    assert missing["status"] == "resolved"


async def test_a_refund_line_with_the_payments_provider_id_is_matched_by_reference(
    server: ServerClient, clock: FrozenClock, tenant: Tenant
) -> None:
    day = midnight(clock.now())
    payment = await pay(server, clock, tenant, 3000, at=day + 9 * HOUR)
    money_back = await refund(server, clock, payment, 700)
    rows = [payment.row(), money_back.row(provider_transaction_id=payment.provider_transaction_id)]
    report = await uploaded(server, clock, csv_bytes(rows))
    assert await exceptions_of(server, report["id"]) == []
    assert (report["matched"], report["missing_in_paymux"], report["missing_in_file"]) == (2, 0, 0)


async def test_a_line_in_a_second_file_is_a_duplicate_and_resolves_missing_in_file(
    server: ServerClient, clock: FrozenClock, container: Container, tenant: Tenant
) -> None:
    day = midnight(clock.now())
    first = await pay(server, clock, tenant, 1000, at=day + 9 * HOUR)
    short = await pay(server, clock, tenant, 1500)
    forgotten = await pay(server, clock, tenant, 2500)
    earlier = await uploaded(server, clock, csv_bytes([first.row(), short.row(amount="1400")]))
    assert counters(earlier) | {"id": None} == {
        "id": None,
        "status": "completed",
        "lines": 2,
        "matched": 1,
        "missing_in_paymux": 0,
        "missing_in_file": 1,
        "amount_mismatch": 1,
        "currency_mismatch": 0,
        "duplicates": 0,
    }
    (missing,) = await exceptions_of(server, earlier["id"], kind="missing_in_file")
    assert missing["transaction_id"] == forgotten.id

    # A corrected file: both lines again (each a duplicate now, whatever its amount) and the forgotten payment.
    later = await uploaded(server, clock, csv_bytes([first.row(), short.row(), forgotten.row()]))
    assert later["id"] != earlier["id"]
    assert counters(later) == {
        "status": "completed",
        "lines": 3,
        "matched": 1,
        "missing_in_paymux": 0,
        "missing_in_file": 0,
        "amount_mismatch": 0,
        "currency_mismatch": 0,
        "duplicates": 2,
    }
    found = await exceptions_of(server, later["id"])
    assert [(item["kind"], item["line_no"], item["transaction_id"]) for item in found] == [
        ("duplicate", 2, first.id),
        ("duplicate", 3, short.id),
    ]
    assert (await matched_transactions(container)) == {
        first.id: earlier["id"],
        short.id: earlier["id"],
        forgotten.id: later["id"],
    }

    # The earlier run's missing_in_file is resolved by the later run; its report stays as it was.
    (resolved,) = await exceptions_of(server, earlier["id"], kind="missing_in_file")
    assert resolved["id"] == missing["id"]
    assert resolved["status"] == "resolved"
    assert resolved["resolution"] == f"matched by reconciliation run {later['id']}"
    assert resolved["resolved_by"] == "paymux"
    assert resolved["resolved_at"] is not None
    assert await exceptions_of(server, earlier["id"], kind="missing_in_file", status="open") == []
    assert counters(await run_report(server, earlier["id"])) == counters(earlier)


async def test_a_payment_settled_before_midnight_is_matched_by_the_next_days_file(
    server: ServerClient, clock: FrozenClock, tenant: Tenant
) -> None:
    day = midnight(clock.now())
    morning = await pay(server, clock, tenant, 1000, at=day + 9 * HOUR)
    late = await pay(server, clock, tenant, 3300, at=day + DAY - timedelta(seconds=30))
    assert late.updated_at.date() == day.date()
    next_morning = await pay(server, clock, tenant, 1800, at=day + DAY + 8 * HOUR)

    today = await uploaded(server, clock, csv_bytes([morning.row()]))
    (missing,) = await exceptions_of(server, today["id"])
    assert (missing["kind"], missing["transaction_id"], missing["status"]) == (
        "missing_in_file",
        late.id,
        "open",
    )

    # The provider books it a minute after midnight: it is in the next day's file.
    tomorrow = await uploaded(
        server, clock, csv_bytes([late.row(at=day + DAY + timedelta(seconds=40)), next_morning.row()])
    )
    assert counters(tomorrow)["matched"] == 2
    assert counters(tomorrow)["missing_in_file"] == 0
    assert await exceptions_of(server, tomorrow["id"]) == []
    (resolved,) = await exceptions_of(server, today["id"])
    assert resolved["status"] == "resolved"
    assert tomorrow["id"] in resolved["resolution"]


async def test_a_duplicate_in_a_later_batch_of_the_same_file(
    server: ServerClient, clock: FrozenClock, container: Container, tenant: Tenant, tmp_path: Path
) -> None:
    """Batches are units of work of their own: a line claimed in batch 1 makes the same line in batch 3 a
    duplicate. The service is built as the container builds it, with batches of 2 lines."""
    service = ReconciliationService(container.db, clock, container.payments, container.audit, batch_size=2)
    day = midnight(clock.now())
    one = await pay(server, clock, tenant, 1000, at=day + 9 * HOUR)
    two = await pay(server, clock, tenant, 2000)
    three = await pay(server, clock, tenant, 3000)
    path = await write_file(
        tmp_path / "batches.csv",
        csv_bytes([one.row(), two.row(), three.row(), None, two.row(), one.row(amount="1")]),
    )
    result = await service.import_file(
        ImportRequest(path=path, provider="test", scope=scope_of(tenant), source="cli", created_by="tests")
    )
    report = RunReport.of(result.run).model_dump(mode="json")
    assert counters(report) == {
        "status": "completed",
        "lines": 5,
        "matched": 3,
        "missing_in_paymux": 0,
        "missing_in_file": 0,
        "amount_mismatch": 0,
        "currency_mismatch": 0,
        "duplicates": 2,
    }
    found = await exceptions_of(server, report["id"])
    assert [(item["kind"], item["line_no"], item["transaction_id"]) for item in found] == [
        ("duplicate", 6, two.id),
        ("duplicate", 7, one.id),
    ]


async def test_a_bom_crlf_file_with_extra_columns_in_another_order(
    server: ServerClient, clock: FrozenClock, tenant: Tenant
) -> None:
    """UTF-8 with a byte-order mark, CRLF line ends, columns in any order plus extra ones, an offset-less time
    (UTC) and an offset one: all as the docs allow."""
    day = midnight(clock.now())
    payment = await pay(server, clock, tenant, 1050, currency="USD", at=day + 9 * HOUR)
    other = await pay(server, clock, tenant, 2000)
    header = [
        "settlement_id",
        "currency",
        "amount",
        "type",
        "reference",
        "provider_transaction_id",
        "fee",
        "transacted_at",
        "memo",
    ]
    rows = [
        [
            "S-1",
            "USD",
            "10.50",
            "payment",
            payment.reference,
            payment.provider_transaction_id,
            "0.31",
            payment.updated_at.strftime("%Y-%m-%dT%H:%M:%S"),
            "résumé, café",
        ],
        [
            "S-2",
            "JPY",
            "2000",
            "payment",
            other.reference,
            other.provider_transaction_id,
            "60",
            (other.updated_at + timedelta(hours=9)).strftime("%Y-%m-%dT%H:%M:%S+09:00"),
            "",
        ],
    ]
    report = await uploaded(server, clock, csv_bytes(rows, header=header, bom=True, newline="\r\n"))
    assert counters(report) == {
        "status": "completed",
        "lines": 2,
        "matched": 2,
        "missing_in_paymux": 0,
        "missing_in_file": 0,
        "amount_mismatch": 0,
        "currency_mismatch": 0,
        "duplicates": 0,
    }
    assert await exceptions_of(server, report["id"]) == []


async def test_a_file_of_only_a_header_is_a_run_of_no_lines(server: ServerClient, clock: FrozenClock) -> None:
    report = await uploaded(server, clock, csv_bytes([]), file_name="empty-2026-11-20.csv")
    assert counters(report) == {
        "status": "completed",
        "lines": 0,
        "matched": 0,
        "missing_in_paymux": 0,
        "missing_in_file": 0,
        "amount_mismatch": 0,
        "currency_mismatch": 0,
        "duplicates": 0,
    }
    assert (report["period_start"], report["period_end"]) == (None, None)
    assert report["file_name"] == "empty-2026-11-20.csv"
    assert report["file_bytes"] == len(csv_bytes([]))


def test_txn_row_writes_the_test_layout() -> None:
    """The helper itself: a line as the `test` layout has it (guards the other tests' files)."""
    when = datetime(2026, 11, 21, 9, 30, tzinfo=UTC)
    txn = Txn("txn_1", "refund", "pi_1", "test_re_txn_1", 1050, "USD", when, when)
    assert txn.row() == ["refund", "test_re_txn_1", "txn_1", "10.50", "USD", "0", "2026-11-21T09:30:00Z"]
    assert LAYOUTS["test"].header == csv_bytes([]).decode().strip().split(",")


DOCS = Path(__file__).parents[2] / "docs" / "reconciliation.md"


def fenced_after(marker: str) -> str:
    """The first fenced block after `marker` in docs/reconciliation.md."""
    text = DOCS.read_text(encoding="utf-8")
    after = text[text.index(marker) :]
    start = after.index("```")
    body_start = after.index("\n", start) + 1
    return after[body_start : after.index("```", body_start)]


async def test_the_documented_example_file_and_report(
    server: ServerClient, clock: FrozenClock, tenant: Tenant
) -> None:
    example = fenced_after("An example (`test` layout):").encode()
    report = await uploaded(server, clock, example)
    # A valid file: its two lines are read (paymux has neither transaction).
    assert (report["lines"], report["missing_in_paymux"]) == (2, 2)
    kinds = [item["line_kind"] for item in await exceptions_of(server, report["id"])]
    assert kinds == ["payment", "refund"]
    # The report the docs show has the API's keys, no more, no fewer.
    shown = json.loads(fenced_after("`409 reconciliation_exception_resolved`."))
    assert set(shown) == set(report)
