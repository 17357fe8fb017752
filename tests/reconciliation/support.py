"""Helpers for the reconciliation tests: real payments and refunds through the API with the `test` provider,
settlement files written from their transaction rows, and the reconciliation API and tables read back."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import InstrumentedAttribute

from paymux.container import Container
from paymux.core.clock import FrozenClock
from paymux.core.money import to_decimal_string
from paymux.payments.service import TenantScope
from paymux.reconciliation.models import ReconciliationException, ReconciliationMatch, ReconciliationRun
from paymux.reconciliation.service import ImportRequest, ImportResult
from tests.support import ServerClient, Tenant

PROBLEM_JSON = "application/problem+json"
DATA = Path(__file__).parent / "data"
TEST_HEADER = ["type", "provider_transaction_id", "reference", "amount", "currency", "fee", "transacted_at"]
RUNS = "/v1/reconciliation_runs"

Row = Sequence[str]


@dataclass(frozen=True)
class Txn:
    """A paymux payment or refund as GET /v1/payment_intents/{id}/transactions shows it."""

    id: str
    kind: str  # payment or refund
    payment_intent_id: str
    provider_transaction_id: str
    amount: int
    currency: str
    created_at: datetime
    updated_at: datetime

    @property
    def reference(self) -> str:
        """What paymux sent the provider: the intent id for a payment, the refund's own id for a refund."""
        return self.payment_intent_id if self.kind == "payment" else self.id

    def row(
        self,
        *,
        provider_transaction_id: str | None = None,
        reference: str | None = None,
        amount: str | None = None,
        currency: str | None = None,
        at: datetime | None = None,
        fee: str = "0",
    ) -> list[str]:
        """This transaction as a line of a `test` settlement file; any fact can be overridden."""
        return [
            self.kind,
            self.provider_transaction_id if provider_transaction_id is None else provider_transaction_id,
            self.reference if reference is None else reference,
            to_decimal_string(self.amount, self.currency) if amount is None else amount,
            self.currency if currency is None else currency,
            fee,
            iso(self.created_at if at is None else at),
        ]


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def midnight(moment: datetime) -> datetime:
    return datetime.combine(moment.astimezone(UTC).date(), time.min, tzinfo=UTC)


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def of_json(item: dict[str, Any]) -> Txn:
    return Txn(
        id=item["id"],
        kind=item["type"],
        payment_intent_id=item["payment_intent_id"],
        provider_transaction_id=item["provider_transaction_id"],
        amount=item["amount"],
        currency=item["currency"],
        created_at=parse_time(item["created_at"]),
        updated_at=parse_time(item["updated_at"]),
    )


async def signed_post(
    server: ServerClient, clock: FrozenClock, path: str, body: Any = None
) -> httpx.Response:
    # The clock is frozen: move it so that two identical requests carry two signatures, not one replayed.
    clock.advance(1)
    return await server.post(path, body)


async def transactions_of(server: ServerClient, intent_id: str) -> list[dict[str, Any]]:
    response = await server.get(f"/v1/payment_intents/{intent_id}/transactions?limit=100")
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


async def pay(
    server: ServerClient,
    clock: FrozenClock,
    tenant: Tenant,
    amount: int = 1000,
    *,
    currency: str = "JPY",
    at: datetime | None = None,
    expect: str = "succeeded",
) -> Txn:
    """A credit card payment through the `test` provider, confirmed at `at` (or now); its payment transaction."""
    if at is not None:
        clock.set(at)
    intent = await server.create_intent(tenant, amount=amount, currency=currency)
    confirmed = await signed_post(server, clock, f"/v1/payment_intents/{intent['id']}/confirm")
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["status"] == expect, confirmed.text
    payments = [item for item in await transactions_of(server, intent["id"]) if item["type"] == "payment"]
    assert len(payments) == 1, payments
    assert payments[0]["status"] == ("succeeded" if expect == "succeeded" else "failed")
    return of_json(payments[0])


async def refund(
    server: ServerClient, clock: FrozenClock, payment: Txn, amount: int, *, at: datetime | None = None
) -> Txn:
    if at is not None:
        clock.set(at)
    response = await signed_post(
        server, clock, f"/v1/payment_intents/{payment.payment_intent_id}/refund", {"amount": amount}
    )
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "succeeded", response.text
    return of_json(response.json())


def csv_bytes(
    rows: Sequence[Row | None], *, header: Row = TEST_HEADER, bom: bool = False, newline: str = "\n"
) -> bytes:
    """A settlement file; a None row is a blank line."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=newline)
    writer.writerow(header)
    for row in rows:
        if row is None:
            out.write(newline)
        else:
            writer.writerow(row)
    return ("\ufeff" if bom else "").encode() + out.getvalue().encode()


async def upload(
    server: ServerClient,
    clock: FrozenClock,
    body: bytes,
    *,
    provider: str = "test",
    content_type: str = "text/csv",
    file_name: str | None = None,
) -> httpx.Response:
    clock.advance(1)
    query = {"provider": provider} | ({"file_name": file_name} if file_name is not None else {})
    return await server.request(
        "POST", f"{RUNS}?{urlencode(query)}", raw=body, headers={"Content-Type": content_type}
    )


async def uploaded(
    server: ServerClient, clock: FrozenClock, body: bytes, *, status: int = 201, **kwargs: Any
) -> dict[str, Any]:
    """Upload a file and return the run's report; fails the test unless it answers `status`."""
    response = await upload(server, clock, body, **kwargs)
    assert response.status_code == status, response.text
    report: dict[str, Any] = response.json()
    return report


async def import_path(
    container: Container,
    path: Path,
    scope: TenantScope,
    *,
    provider: str = "test",
    source: str = "cli",
) -> ImportResult:
    return await container.reconciliation.import_file(
        ImportRequest(path=path, provider=provider, scope=scope, source=source, created_by="tests")
    )


def scope_of(tenant: Tenant) -> TenantScope:
    return TenantScope(client_partner_id=tenant.client_partner_id, merchant_id=tenant.merchant_id)


async def run_report(server: ServerClient, run_id: str) -> dict[str, Any]:
    response = await server.get(f"{RUNS}/{run_id}")
    assert response.status_code == 200, response.text
    report: dict[str, Any] = response.json()
    return report


async def exceptions_of(server: ServerClient, run_id: str, **filters: str) -> list[dict[str, Any]]:
    """Every exception of a run, page by page (pages of 3, so that paging is exercised too)."""
    found: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        query = {"limit": "3", **filters} | ({"starting_after": after} if after else {})
        response = await server.get(f"{RUNS}/{run_id}/exceptions?{urlencode(query)}")
        assert response.status_code == 200, response.text
        page = response.json()
        found += page["data"]
        if not page["has_more"]:
            return found
        after = page["data"][-1]["id"]


def counters(report: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "status",
        "lines",
        "matched",
        "missing_in_paymux",
        "missing_in_file",
        "amount_mismatch",
        "currency_mismatch",
        "duplicates",
    )
    return {key: report[key] for key in keys}


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    problem: dict[str, Any] = response.json()
    assert problem["code"] == code
    assert problem["status"] == status
    assert problem["type"] == f"urn:paymux:problem:{code}"
    return problem


async def count(container: Container, column: InstrumentedAttribute[Any], *where: Any) -> int:
    async with container.db.reading() as session:
        statement = select(func.count(column)).where(*where)
        return int((await session.execute(statement)).scalar_one())


async def table_counts(container: Container) -> dict[str, int]:
    return {
        "runs": await count(container, ReconciliationRun.id),
        "matches": await count(container, ReconciliationMatch.transaction_id),
        "exceptions": await count(container, ReconciliationException.id),
    }


async def matched_transactions(container: Container) -> dict[str, str]:
    """transaction id -> run id of every claim."""
    async with container.db.reading() as session:
        rows = await session.execute(select(ReconciliationMatch.transaction_id, ReconciliationMatch.run_id))
        return dict(rows.all())


async def write_file(path: Path, body: bytes) -> Path:
    await asyncio.to_thread(path.write_bytes, body)
    return path
