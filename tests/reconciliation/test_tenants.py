"""Reconciliation belongs to a merchant or a partner: a client sees, lists and resolves only its own runs, an
import matches only its tenants' transactions, and store clients get 403 reconciliation_needs_merchant_scope."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from paymux.container import Container
from paymux.core.clock import FrozenClock
from paymux.payments.service import TenantScope
from paymux.reconciliation.models import ReconciliationException
from tests.reconciliation.support import (
    RUNS,
    Txn,
    assert_problem,
    count,
    counters,
    csv_bytes,
    exceptions_of,
    import_path,
    matched_transactions,
    midnight,
    pay,
    refund,
    signed_post,
    upload,
    uploaded,
    write_file,
)
from tests.support import ServerClient, Tenant, bootstrap_tenant


async def two_merchants_day(
    server: ServerClient, other_server: ServerClient, clock: FrozenClock, tenant: Tenant, other_tenant: Tenant
) -> tuple[list[Txn], list[Txn]]:
    clock.set(midnight(clock.now()).replace(hour=9))
    mine = [await pay(server, clock, tenant, 1000), await pay(server, clock, tenant, 2000)]
    mine.append(await refund(server, clock, mine[1], 300))
    theirs = [
        await pay(other_server, clock, other_tenant, 1000),
        await pay(other_server, clock, other_tenant, 4000),
    ]
    return mine, theirs


async def test_an_import_matches_only_the_merchants_own_transactions(
    server: ServerClient,
    other_server: ServerClient,
    clock: FrozenClock,
    container: Container,
    tenant: Tenant,
    other_tenant: Tenant,
) -> None:
    mine, theirs = await two_merchants_day(server, other_server, clock, tenant, other_tenant)
    # A file with the other merchant's lines in it too, by the provider's id and by reference.
    body = csv_bytes(
        [
            mine[0].row(),
            theirs[0].row(),
            mine[2].row(),
            theirs[1].row(provider_transaction_id="PSP-77"),
        ]
    )
    report = await uploaded(server, clock, body)
    assert report["merchant_id"] == tenant.merchant_id
    assert counters(report) == {
        "status": "completed",
        "lines": 4,
        "matched": 2,
        "missing_in_paymux": 2,  # the other merchant's: paymux has none of this merchant's
        "missing_in_file": 1,  # mine[1] only, not the other merchant's 4000
        "amount_mismatch": 0,
        "currency_mismatch": 0,
        "duplicates": 0,
    }
    found = await exceptions_of(server, report["id"])
    assert [(item["kind"], item["line_no"], item["transaction_id"]) for item in found] == [
        ("missing_in_paymux", 3, None),
        ("missing_in_paymux", 5, None),
        ("missing_in_file", None, mine[1].id),
    ]
    # Nothing of the other merchant leaks into the exceptions, and none of its transactions is claimed.
    assert all(item["merchant_id"] == tenant.merchant_id for item in found)
    assert all(item["paymux_amount"] is None for item in found if item["kind"] == "missing_in_paymux")
    assert set(await matched_transactions(container)) == {mine[0].id, mine[2].id}

    # The other merchant's own file then matches its transactions: not duplicates of the first file's lines.
    theirs_report = await uploaded(other_server, clock, body)
    assert theirs_report["id"] != report["id"]
    assert theirs_report["merchant_id"] == other_tenant.merchant_id
    assert counters(theirs_report) | {"lines": None} == {
        "status": "completed",
        "lines": None,
        "matched": 2,
        "missing_in_paymux": 2,
        "missing_in_file": 0,
        "amount_mismatch": 0,
        "currency_mismatch": 0,
        "duplicates": 0,
    }


async def test_one_merchant_cannot_see_or_resolve_anothers_runs(
    server: ServerClient,
    other_server: ServerClient,
    clock: FrozenClock,
    container: Container,
    tenant: Tenant,
    other_tenant: Tenant,
) -> None:
    mine, _ = await two_merchants_day(server, other_server, clock, tenant, other_tenant)
    report = await uploaded(server, clock, csv_bytes([mine[0].row(amount="1")]))
    exceptions = await exceptions_of(server, report["id"])
    assert len(exceptions) == 3

    assert_problem(await other_server.get(f"{RUNS}/{report['id']}"), 404, "reconciliation_run_not_found")
    assert_problem(
        await other_server.get(f"{RUNS}/{report['id']}/exceptions"), 404, "reconciliation_run_not_found"
    )
    listed = await other_server.get(RUNS)
    assert listed.status_code == 200, listed.text
    assert (listed.json()["data"], listed.json()["has_more"]) == ([], False)
    for item in exceptions:
        response = await signed_post(
            other_server, clock, f"/v1/reconciliation_exceptions/{item['id']}/resolve", {"reason": "not mine"}
        )
        assert_problem(response, 404, "reconciliation_exception_not_found")
    assert await count(container, ReconciliationException.id, ReconciliationException.status == "open") == 3

    # The owner sees it all.
    own = await server.get(RUNS)
    assert [run["id"] for run in own.json()["data"]] == [report["id"]]


async def test_the_run_list_is_newest_first_paged_and_filtered(
    server: ServerClient,
    other_server: ServerClient,
    clock: FrozenClock,
    tenant: Tenant,
    other_tenant: Tenant,
) -> None:
    mine, theirs = await two_merchants_day(server, other_server, clock, tenant, other_tenant)
    runs = [(await uploaded(server, clock, csv_bytes([txn.row()])))["id"] for txn in mine]
    await uploaded(other_server, clock, csv_bytes([theirs[0].row()]))
    paypay = await uploaded(
        server,
        clock,
        csv_bytes(
            [],
            header=[
                "transactionType",
                "paymentId",
                "merchantPaymentId",
                "amount",
                "currency",
                "fee",
                "transactionAt",
            ],
        ),
        provider="paypay",
    )

    first = (await server.get(f"{RUNS}?limit=2")).json()
    assert [run["id"] for run in first["data"]] == [paypay["id"], runs[2]]
    assert first["has_more"] is True
    rest = (await server.get(f"{RUNS}?limit=2&starting_after={runs[2]}")).json()
    assert [run["id"] for run in rest["data"]] == [runs[1], runs[0]]
    assert rest["has_more"] is False
    only_test = (await server.get(f"{RUNS}?provider=test")).json()
    assert [run["id"] for run in only_test["data"]] == runs[::-1]
    assert all(run["object"] == "reconciliation_run" for run in only_test["data"])


async def test_a_partner_client_reconciles_all_its_merchants(
    http: httpx.AsyncClient, server: ServerClient, clock: FrozenClock, container: Container, tenant: Tenant
) -> None:
    second = await bootstrap_tenant(container, partner="acme", merchant="M-2", store="S-2")
    assert second.client_partner_id == tenant.client_partner_id
    second_server = ServerClient(http, second.client_id, second.client_secret, clock)
    client_id, secret = await container.tenants.create_client(
        name="finance", partner_id=tenant.client_partner_id
    )
    partner = ServerClient(http, client_id, secret, clock)

    clock.set(midnight(clock.now()).replace(hour=9))
    one = await pay(server, clock, tenant, 1000)
    two = await pay(second_server, clock, second, 2000)
    report = await uploaded(partner, clock, csv_bytes([one.row(), two.row()]))
    assert report["merchant_id"] is None
    assert (report["matched"], report["missing_in_paymux"], report["missing_in_file"]) == (2, 0, 0)
    # A merchant of the partner does not see the partner's run.
    assert_problem(await server.get(f"{RUNS}/{report['id']}"), 404, "reconciliation_run_not_found")
    assert (await server.get(RUNS)).json()["data"] == []
    # The partner sees its merchants' runs.
    own = await uploaded(server, clock, csv_bytes([one.row(amount="999")]))
    listed = (await partner.get(RUNS)).json()["data"]
    assert [run["id"] for run in listed] == [own["id"], report["id"]]
    assert (await partner.get(f"{RUNS}/{own['id']}")).status_code == 200


async def test_a_scoped_import_through_the_service(
    server: ServerClient,
    other_server: ServerClient,
    clock: FrozenClock,
    container: Container,
    tenant: Tenant,
    other_tenant: Tenant,
    tmp_path: Path,
) -> None:
    """The CLI's --merchant: the same scope rule through the service, with a merchant id alone."""
    mine, theirs = await two_merchants_day(server, other_server, clock, tenant, other_tenant)
    path = await write_file(tmp_path / "day.csv", csv_bytes([txn.row() for txn in [*mine, *theirs]]))
    result = await import_path(container, path, TenantScope(merchant_id=other_tenant.merchant_id))
    assert (
        result.run.lines,
        result.run.matched,
        result.run.missing_in_paymux,
        result.run.missing_in_file,
    ) == (
        5,
        2,
        3,
        0,
    )
    assert set(await matched_transactions(container)) == {txn.id for txn in theirs}


# ---------------------------------------------------------------------------------------------- store clients


@pytest.fixture
async def store_client(
    http: httpx.AsyncClient, container: Container, tenant: Tenant, clock: FrozenClock
) -> ServerClient:
    client_id, secret = await container.tenants.create_client(
        name="pos",
        partner_id=tenant.client_partner_id,
        merchant_id=tenant.merchant_id,
        store_id=tenant.store_id,
    )
    return ServerClient(http, client_id, secret, clock)


async def test_a_store_client_cannot_import(
    store_client: ServerClient, clock: FrozenClock, container: Container
) -> None:
    response = await upload(store_client, clock, csv_bytes([]))
    problem = assert_problem(response, 403, "reconciliation_needs_merchant_scope")
    assert "merchant" in problem["detail"]
    assert await count(container, ReconciliationException.id) == 0
    assert_problem(await store_client.get(RUNS), 403, "reconciliation_needs_merchant_scope")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        pytest.param("GET", "{RUNS}/{run}", id="get-run"),
        pytest.param("GET", "{RUNS}/{run}/exceptions", id="list-exceptions"),
        pytest.param("POST", "/v1/reconciliation_exceptions/{rex}/resolve", id="resolve"),
    ],
)
async def test_a_store_client_gets_403_on_its_merchants_runs(
    method: str,
    path: str,
    store_client: ServerClient,
    server: ServerClient,
    clock: FrozenClock,
    tenant: Tenant,
) -> None:
    clock.set(midnight(clock.now()).replace(hour=9))
    payment = await pay(server, clock, tenant, 1000)
    report = await uploaded(server, clock, csv_bytes([payment.row(amount="5")]))
    (item,) = await exceptions_of(server, report["id"])
    target = path.format(RUNS=RUNS, run=report["id"], rex=item["id"])
    clock.advance(1)
    body: dict[str, Any] | None = {"reason": "store says fine"} if method == "POST" else None
    response = await store_client.request(method, target, body)
    assert_problem(response, 403, "reconciliation_needs_merchant_scope")
