"""The same file for the same provider and scope is one run: a replay changes nothing and answers the earlier
report; a run that died half way is started over when its file comes again (docs/reconciliation.md, Idempotent)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update

from paymux.container import Container
from paymux.core.clock import FrozenClock
from paymux.payments.service import TenantScope
from paymux.reconciliation.models import ReconciliationException, ReconciliationMatch, ReconciliationRun
from paymux.reconciliation.schemas import RunReport
from tests.reconciliation.support import (
    Txn,
    counters,
    csv_bytes,
    exceptions_of,
    import_path,
    iso,
    matched_transactions,
    midnight,
    pay,
    refund,
    scope_of,
    table_counts,
    upload,
    uploaded,
    write_file,
)
from tests.support import ServerClient, Tenant


async def day_of_payments(
    server: ServerClient, clock: FrozenClock, tenant: Tenant
) -> tuple[list[Txn], bytes]:
    """Six transactions of one day and a file that matches four, misses one and gets one amount wrong; a
    seventh line paymux does not know."""
    start = midnight(clock.now())
    clock.set(start.replace(hour=9))
    payments = [await pay(server, clock, tenant, amount) for amount in (1000, 2000, 3000, 4000)]
    money_back = await refund(server, clock, payments[1], 500)
    forgotten = await pay(server, clock, tenant, 6000)
    body = csv_bytes(
        [
            payments[0].row(),
            payments[1].row(),
            money_back.row(),
            payments[2].row(amount="2999"),
            payments[3].row(),
            ["payment", "test_ch_UNKNOWN", "pi_UNKNOWN", "10", "JPY", "0", iso(payments[3].updated_at)],
        ]
    )
    return [*payments, money_back, forgotten], body


EXPECTED = {
    "status": "completed",
    "lines": 6,
    "matched": 4,
    "missing_in_paymux": 1,
    "missing_in_file": 1,
    "amount_mismatch": 1,
    "currency_mismatch": 0,
    "duplicates": 0,
}


async def test_the_same_upload_twice_is_one_run(
    server: ServerClient, clock: FrozenClock, container: Container, tenant: Tenant, tmp_path: Path
) -> None:
    _, body = await day_of_payments(server, clock, tenant)
    first = await upload(server, clock, body, file_name="test-2026-11-20.csv")
    assert first.status_code == 201, first.text
    report = first.json()
    assert report["replayed"] is False
    assert counters(report) == EXPECTED
    assert report["file_sha256"] == hashlib.sha256(body).hexdigest()
    assert report["file_bytes"] == len(body)
    rows = await table_counts(container)
    assert rows == {"runs": 1, "matches": 5, "exceptions": 3}
    claims = await matched_transactions(container)
    listed = await exceptions_of(server, report["id"])

    clock.advance(3600)
    again = await upload(server, clock, body, file_name="another-name.csv")
    assert again.status_code == 200, again.text
    replay = again.json()
    assert replay["replayed"] is True
    assert replay["id"] == report["id"]
    assert replay | {"replayed": False} == report  # the earlier report, word for word
    assert await table_counts(container) == rows
    assert await matched_transactions(container) == claims
    assert await exceptions_of(server, report["id"]) == listed

    # The service says the same of a file with the same bytes under another path.
    path = await write_file(tmp_path / "copy.csv", body)
    result = await import_path(container, path, scope_of(tenant), source="api")
    assert result.replayed is True
    assert result.run.id == report["id"]
    assert await table_counts(container) == rows


async def test_one_byte_more_is_another_file(
    server: ServerClient, clock: FrozenClock, container: Container, tenant: Tenant
) -> None:
    """Identity is the file's SHA-256: a trailing newline more makes a new run whose every line is a duplicate,
    since the first run claimed them."""
    _, body = await day_of_payments(server, clock, tenant)
    first = await uploaded(server, clock, body)
    second = await uploaded(server, clock, body + b"\n")
    assert second["id"] != first["id"]
    assert second["replayed"] is False
    assert counters(second) == EXPECTED | {
        "matched": 0,
        "amount_mismatch": 0,
        "missing_in_file": 0,  # still open from the first run: not reported twice
        "duplicates": 5,
    }


async def test_the_same_file_in_another_scope_is_another_run(
    server: ServerClient, clock: FrozenClock, container: Container, tenant: Tenant, tmp_path: Path
) -> None:
    _, body = await day_of_payments(server, clock, tenant)
    path = await write_file(tmp_path / "day.csv", body)
    merchant = await import_path(container, path, scope_of(tenant))
    partner = await import_path(container, path, TenantScope(client_partner_id=tenant.client_partner_id))
    everyone = await import_path(container, path, TenantScope())
    assert len({merchant.run.id, partner.run.id, everyone.run.id}) == 3
    assert [result.replayed for result in (merchant, partner, everyone)] == [False, False, False]
    # The merchant's run claimed the transactions; the wider runs find them accounted for already.
    assert counters(RunReport.of(everyone.run).model_dump()) == EXPECTED | {
        "matched": 0,
        "amount_mismatch": 0,
        "missing_in_file": 0,
        "duplicates": 5,
    }
    replay = await import_path(container, path, TenantScope(client_partner_id=tenant.client_partner_id))
    assert (replay.replayed, replay.run.id) == (True, partner.run.id)


@pytest.mark.parametrize("left", ["running", "failed"])
async def test_a_run_that_died_half_way_is_started_over(
    left: str, server: ServerClient, clock: FrozenClock, container: Container, tenant: Tenant, tmp_path: Path
) -> None:
    transactions, body = await day_of_payments(server, clock, tenant)
    path = await write_file(tmp_path / "day.csv", body)
    first = await import_path(container, path, scope_of(tenant))
    report = RunReport.of(first.run).model_dump(mode="json")
    assert counters(report) == EXPECTED
    complete = await table_counts(container)
    claims = await matched_transactions(container)
    kinds = sorted(item["kind"] for item in await exceptions_of(server, report["id"]))

    # The process died in the middle of matching: two claims and the missing_in_file exception not yet
    # written, the run still running (or marked failed by the handler).
    async with container.db.unit_of_work() as session:
        await session.execute(
            update(ReconciliationRun)
            .where(ReconciliationRun.id == report["id"])
            .values(status=left, completed_at=None, matched=0, error="boom" if left == "failed" else None)
        )
        gone = sorted(claims)[:2]
        await session.execute(delete(ReconciliationMatch).where(ReconciliationMatch.transaction_id.in_(gone)))
        await session.execute(
            delete(ReconciliationException).where(
                ReconciliationException.run_id == report["id"],
                ReconciliationException.kind == "missing_in_file",
            )
        )
    assert await table_counts(container) == complete | {
        "matches": complete["matches"] - 2,
        "exceptions": complete["exceptions"] - 1,
    }

    clock.advance(60)
    again = await import_path(container, path, scope_of(tenant))
    assert again.replayed is False
    assert again.run.id == report["id"]
    again_report = RunReport.of(again.run).model_dump(mode="json")
    assert counters(again_report) == EXPECTED
    assert again_report["error"] is None
    assert again_report["completed_at"] is not None
    assert await table_counts(container) == complete
    assert await matched_transactions(container) == claims
    assert sorted(item["kind"] for item in await exceptions_of(server, report["id"])) == kinds
    async with container.db.reading() as session:
        stored = (await session.execute(select(ReconciliationRun.status))).scalars().all()
    assert stored == ["completed"]

    # Now it is complete, the same file is a replay.
    third = await import_path(container, path, scope_of(tenant))
    assert (third.replayed, third.run.id) == (True, report["id"])
    assert {txn.id for txn in transactions[:5]} == set(claims)
