"""Closing an exception with a reason: who, when and from where are kept, and it cannot change
(POST /v1/reconciliation_exceptions/{id}/resolve)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from paymux.container import Container
from paymux.core.clock import FrozenClock
from paymux.reconciliation.models import ReconciliationException
from tests.reconciliation.support import (
    assert_problem,
    csv_bytes,
    exceptions_of,
    midnight,
    parse_time,
    pay,
    run_report,
    signed_post,
    uploaded,
)
from tests.support import ServerClient, Tenant


async def open_exceptions(server: ServerClient, clock: FrozenClock, tenant: Tenant) -> list[dict[str, Any]]:
    """A run with an amount mismatch (line 2), a line paymux does not know (line 3) and a payment missing from
    the file."""
    clock.set(midnight(clock.now()).replace(hour=10))
    short = await pay(server, clock, tenant, 1000)
    await pay(server, clock, tenant, 2000)
    unknown = ["payment", "test_ch_X", "pi_X", "5", "JPY", "0", short.row()[6]]
    report = await uploaded(server, clock, csv_bytes([short.row(amount="900"), unknown]))
    found = await exceptions_of(server, report["id"])
    assert [item["kind"] for item in found] == ["amount_mismatch", "missing_in_paymux", "missing_in_file"]
    return found


def resolve_path(exception_id: str) -> str:
    return f"/v1/reconciliation_exceptions/{exception_id}/resolve"


async def stored(container: Container, exception_id: str) -> ReconciliationException:
    async with container.db.reading() as session:
        item = (
            await session.execute(
                select(ReconciliationException).where(ReconciliationException.id == exception_id)
            )
        ).scalar_one()
        return item


async def test_a_resolution_records_who_when_where_and_why(
    server: ServerClient, clock: FrozenClock, container: Container, tenant: Tenant
) -> None:
    mismatch, unknown, missing = await open_exceptions(server, clock, tenant)
    reason = "The provider charged 900 after a coupon; confirmed with PayPay support, ticket 4711."
    response = await signed_post(server, clock, resolve_path(mismatch["id"]), {"reason": reason})
    assert response.status_code == 200, response.text
    resolved = response.json()
    assert resolved["object"] == "reconciliation_exception"
    assert resolved["id"] == mismatch["id"]
    assert resolved["status"] == "resolved"
    assert resolved["resolution"] == reason
    assert resolved["resolved_by"] == tenant.client_id
    assert parse_time(resolved["resolved_at"]) == clock.now()
    # Nothing else about it changed.
    unchanged = {"status", "resolution", "resolved_by", "resolved_at"}
    assert {k: v for k, v in resolved.items() if k not in unchanged} == {
        k: v for k, v in mismatch.items() if k not in unchanged
    }
    row = await stored(container, mismatch["id"])
    assert row.resolved_from == "203.0.113.7"  # the address the request came from

    # The list shows it resolved; the others stay open.
    listed = {item["id"]: item for item in await exceptions_of(server, mismatch["run_id"])}
    assert listed[mismatch["id"]] == resolved
    assert [item["id"] for item in await exceptions_of(server, mismatch["run_id"], status="open")] == [
        unknown["id"],
        missing["id"],
    ]
    # A run's counters are its report: resolving does not rewrite it.
    assert (await run_report(server, mismatch["run_id"]))["amount_mismatch"] == 1


async def test_a_resolution_cannot_change(
    server: ServerClient, clock: FrozenClock, container: Container, tenant: Tenant
) -> None:
    _, unknown, _ = await open_exceptions(server, clock, tenant)
    first = await signed_post(server, clock, resolve_path(unknown["id"]), {"reason": "a test charge, voided"})
    assert first.status_code == 200, first.text
    resolved_at = first.json()["resolved_at"]

    clock.advance(3600)
    second = await signed_post(
        server, clock, resolve_path(unknown["id"]), {"reason": "something else entirely"}
    )
    problem = assert_problem(second, 409, "reconciliation_exception_resolved")
    assert "a test charge, voided" in problem["detail"]
    row = await stored(container, unknown["id"])
    assert row.resolution == "a test charge, voided"
    assert row.resolved_at is not None
    assert row.resolved_at.isoformat().replace("+00:00", "Z") == resolved_at.replace("+00:00", "Z")


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"reason": "ok"}, id="too-short"),
        pytest.param({"reason": ""}, id="empty"),
        pytest.param({"reason": "x" * 501}, id="too-long"),
        pytest.param({}, id="no-reason"),
        pytest.param({"reason": "checked by hand", "status": "open"}, id="extra-field"),
        pytest.param({"reason": "bad\x00byte"}, id="nul"),
    ],
)
async def test_a_resolution_needs_a_reason(
    body: dict[str, Any], server: ServerClient, clock: FrozenClock, container: Container, tenant: Tenant
) -> None:
    mismatch, _, _ = await open_exceptions(server, clock, tenant)
    response = await signed_post(server, clock, resolve_path(mismatch["id"]), body)
    assert_problem(response, 422, "validation_error")
    row = await stored(container, mismatch["id"])
    assert (row.status, row.resolution, row.resolved_by, row.resolved_at) == ("open", None, None, None)


async def test_a_blank_reason_is_no_reason(
    server: ServerClient, clock: FrozenClock, container: Container, tenant: Tenant
) -> None:
    mismatch, _, _ = await open_exceptions(server, clock, tenant)
    response = await signed_post(server, clock, resolve_path(mismatch["id"]), {"reason": "    "})
    assert_problem(response, 422, "validation_error")
    assert (await stored(container, mismatch["id"])).status == "open"


async def test_an_exception_resolved_by_a_later_file_cannot_be_resolved_again(
    server: ServerClient, clock: FrozenClock, tenant: Tenant
) -> None:
    clock.set(midnight(clock.now()).replace(hour=10))
    first = await pay(server, clock, tenant, 1000)
    forgotten = await pay(server, clock, tenant, 2000)
    earlier = await uploaded(server, clock, csv_bytes([first.row()]))
    (missing,) = await exceptions_of(server, earlier["id"])
    later = await uploaded(server, clock, csv_bytes([forgotten.row()]))
    response = await signed_post(server, clock, resolve_path(missing["id"]), {"reason": "found it myself"})
    problem = assert_problem(response, 409, "reconciliation_exception_resolved")
    assert later["id"] in problem["detail"]


async def test_an_unknown_exception_is_not_found(server: ServerClient, clock: FrozenClock) -> None:
    response = await signed_post(
        server, clock, resolve_path("rex_01JD4Q9V6W2N8X3Y5Z7A9B1C3D"), {"reason": "no such thing"}
    )
    assert_problem(response, 404, "reconciliation_exception_not_found")
