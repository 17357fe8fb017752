"""Settlement files: each provider's sandbox writes the day's payments and refunds in its provider's layout, and
every line names the paymux transaction it settles, by the provider's id and by the id paymux sent.

The layouts are read as reconciliation reads them (`LAYOUTS[name].read`); payments and refunds go through paymux
and the sandboxes over real sockets, each sandbox mounted under `/<provider>` as `paymux sandbox` serves it.
"""

from __future__ import annotations

import asyncio
import io
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Protocol

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from paymux.container import Container
from paymux.core.clock import FrozenClock
from paymux.payments.models import Transaction
from paymux.providers.aupay.sandbox import DEFAULTS as AUPAY
from paymux.providers.aupay.sandbox import AuPaySandbox
from paymux.providers.base import ProviderCredentials, ProviderRejected, ProviderUnavailable
from paymux.providers.dpayment.sandbox import DEFAULTS as DPAYMENT
from paymux.providers.dpayment.sandbox import DPaymentSandbox
from paymux.providers.linepay.sandbox import DEFAULTS as LINEPAY
from paymux.providers.linepay.sandbox import LinePaySandbox
from paymux.providers.paypay import signing as paypay_signing
from paymux.providers.paypay.sandbox import DEFAULTS as PAYPAY
from paymux.providers.paypay.sandbox import PayPaySandbox
from paymux.providers.rakuten.sandbox import DEFAULTS as RAKUTEN
from paymux.providers.rakuten.sandbox import RakutenPaySandbox
from paymux.providers.sandbox_kit import SandboxCredentials, SandboxTiming, WebhookSender
from paymux.providers.settlement import (
    LAYOUTS,
    LineKind,
    SettlementBook,
    SettlementCapable,
    SettlementFileError,
    SettlementLayout,
    SettlementLine,
)
from paymux.tenants.schemas import ProviderConfigSync
from tests.live import serving
from tests.support import ServerClient, Tenant, bearer, bootstrap_tenant

PROVIDERS = ("paypay", "linepay", "rakuten", "dpayment", "aupay")
CUSTOMER_CODE = "280012345678901234"  # a customer-presented code both d払い and au PAY take
TIMING = SandboxTiming(slow_seconds=0.2, timeout_seconds=3)
Row = tuple[LineKind, str, str, int, str]  # kind, provider transaction id, reference, amount, currency

# ---------------------------------------------------------------------- reading a file


def paypay_row(**overrides: str) -> dict[str, str]:
    row = {
        "transactionType": "PAYMENT",
        "paymentId": "04123456789012345678",
        "merchantPaymentId": "pi_01",
        "amount": "1200",
        "currency": "JPY",
        "fee": "0",
        "transactionAt": "2026-01-28T10:00:00Z",
    }
    row.update(overrides)
    return row


def test_every_layout_reads_back_what_it_renders() -> None:
    at = datetime(2026, 1, 28, 10, 0, 0, tzinfo=UTC)
    lines = [
        SettlementLine(LineKind.PAYMENT, "tx-1", "pi_1", 1200, "JPY", 0, at),
        SettlementLine(LineKind.REFUND, "tx-2", "txn_1", 300, "JPY", 0, at),
        SettlementLine(LineKind.PAYMENT, "tx-3", "pi_2", 1050, "USD", 32, at),
    ]
    for layout in LAYOUTS.values():
        book = SettlementBook(layout)
        for line in lines:
            book.record(line)
        text = book.csv_for(at.date())
        assert text.splitlines()[0] == ",".join(layout.header)
        assert [line for _, line in layout.read(io.StringIO(text))] == lines
        assert [number for number, _ in layout.read(io.StringIO(text))] == [2, 3, 4]
        assert "10.50,USD,0.32," in text  # the major unit, as the file's amounts are
        assert book.csv_for(date(2026, 1, 27)) == ",".join(layout.header) + "\n"


def test_a_kind_that_is_neither_payment_nor_refund_is_refused() -> None:
    layout = LAYOUTS["paypay"]
    with pytest.raises(
        SettlementFileError, match=r"line 7: transactionType is 'CHARGE', not PAYMENT or REFUND"
    ):
        layout.parse(paypay_row(transactionType="CHARGE"), 7)
    with pytest.raises(SettlementFileError, match="not PAYMENT or REFUND"):
        layout.parse(paypay_row(transactionType="payment"), 2)  # PayPay's values are upper case
    with pytest.raises(SettlementFileError, match="line 2: transactionType is empty"):
        layout.parse(paypay_row(transactionType=" "), 2)


def test_more_decimals_than_jpy_has_are_refused() -> None:
    layout = LAYOUTS["paypay"]
    with pytest.raises(SettlementFileError, match=r"line 3: '1200.5' has more than 0 decimal places"):
        layout.parse(paypay_row(amount="1200.5"), 3)
    with pytest.raises(SettlementFileError, match="more than 0 decimal places"):
        layout.parse(paypay_row(fee="0.1"), 3)
    with pytest.raises(SettlementFileError, match="not a decimal amount"):
        layout.parse(paypay_row(amount="1,200"), 3)
    with pytest.raises(SettlementFileError, match="the amount is between 1 and 999999999999 minor units"):
        layout.parse(paypay_row(amount="-300"), 3)  # a refund is a REFUND line, not a negative payment
    assert layout.parse(paypay_row(amount="1200.00"), 3).amount == 1200  # zeros are not more precision


def test_a_header_without_a_column_is_refused() -> None:
    layout = LAYOUTS["dpayment"]
    header = [column for column in layout.header if column != "merchant_payment_id"]
    text = ",".join(header) + "\nPAYMENT,DP1,1200,JPY,0,2026-01-28T10:00:00Z\n"
    with pytest.raises(
        SettlementFileError, match=r"line 1: not a dpayment settlement file: .*merchant_payment_id"
    ):
        list(layout.read(io.StringIO(text)))
    paypay_file = ",".join(LAYOUTS["paypay"].header) + "\n"
    with pytest.raises(SettlementFileError, match="not a aupay settlement file"):
        list(LAYOUTS["aupay"].read(io.StringIO(paypay_file)))  # another provider's file
    with pytest.raises(SettlementFileError, match="line 1"):
        list(layout.read(io.StringIO("")))


def test_a_time_without_an_offset_is_read_as_utc() -> None:
    """The module reads a naive time as UTC (it does not refuse it); this pins that reading."""
    layout = LAYOUTS["paypay"]
    naive = layout.parse(paypay_row(transactionAt="2026-01-28T10:00:00"), 2)
    assert naive.transacted_at == datetime(2026, 1, 28, 10, 0, 0, tzinfo=UTC)
    jst = layout.parse(paypay_row(transactionAt="2026-01-28T19:00:00+09:00"), 2)
    assert jst.transacted_at == naive.transacted_at
    assert jst.transacted_at.tzinfo is UTC


def test_a_time_that_is_not_iso_8601_is_refused() -> None:
    layout = LAYOUTS["paypay"]
    for value in ("28/01/2026 10:00", "1769594400", "2026-01-28T25:00:00Z"):
        with pytest.raises(SettlementFileError, match="line 4: transactionAt is not an ISO 8601 time"):
            layout.parse(paypay_row(transactionAt=value), 4)


def test_ids_must_be_there_and_fit() -> None:
    layout = LAYOUTS["paypay"]
    with pytest.raises(SettlementFileError, match="line 2: paymentId is empty"):
        layout.parse(paypay_row(paymentId=""), 2)
    with pytest.raises(SettlementFileError, match="merchantPaymentId is longer than 128 characters"):
        layout.parse(paypay_row(merchantPaymentId="x" * 129), 2)
    with pytest.raises(SettlementFileError, match="not an ISO 4217 currency code"):
        layout.parse(paypay_row(currency="YEN"), 2)


def test_blank_lines_are_skipped_and_lines_keep_their_numbers() -> None:
    layout = LAYOUTS["aupay"]
    text = (
        ",".join(layout.header)
        + "\nPAYMENT,ch_1,pi_1,1200,JPY,0,2026-01-28T10:00:00Z\n,,,,,,\n"
        + "REFUND,re_1,txn_1,200,JPY,,2026-01-28T11:00:00Z\n"
    )
    read = list(layout.read(io.StringIO(text)))
    assert [(number, line.kind, line.fee) for number, line in read] == [
        (2, LineKind.PAYMENT, 0),
        (4, LineKind.REFUND, 0),  # an empty fee is no fee
    ]


# ---------------------------------------------------------------------- the sandboxes, end to end


class Sandbox(Protocol):
    webhooks: WebhookSender
    settlements: SettlementBook

    def app(self) -> FastAPI: ...


@dataclass(frozen=True)
class Spec:
    name: str
    make: Callable[[str], Sandbox]  # the webhook URL -> a sandbox
    defaults: SandboxCredentials
    credentials: dict[str, str]
    # Whether the provider takes paymux's refund id (else a refund's line carries the payment's merchant id).
    refunds_carry_merchant_id: bool
    qr_cpm: bool = False


def _triple(defaults: SandboxCredentials) -> dict[str, str]:
    return {
        "api_key": defaults.api_key,
        "api_secret": defaults.api_secret,
        "merchant_id": defaults.merchant_id,
    }


SPECS = {
    spec.name: spec
    for spec in (
        Spec(
            "paypay",
            lambda url: PayPaySandbox(PAYPAY, webhook_url=url, timing=TIMING),
            PAYPAY,
            _triple(PAYPAY),
            refunds_carry_merchant_id=True,
        ),
        Spec(
            "linepay",
            lambda url: LinePaySandbox(LINEPAY, webhook_url=url, timing=TIMING),
            LINEPAY,
            {"channel_id": LINEPAY.api_key, "channel_secret": LINEPAY.api_secret},
            refunds_carry_merchant_id=False,  # a LINE Pay refund is asked for by transactionId and amount only
        ),
        Spec(
            "rakuten",
            lambda url: RakutenPaySandbox(RAKUTEN, webhook_url=url, timing=TIMING),
            RAKUTEN,
            _triple(RAKUTEN),
            refunds_carry_merchant_id=False,  # a LITE refund is a change to the charge
        ),
        Spec(
            "dpayment",
            lambda url: DPaymentSandbox(DPAYMENT, webhook_url=url, timing=TIMING),
            DPAYMENT,
            _triple(DPAYMENT),
            refunds_carry_merchant_id=True,
            qr_cpm=True,
        ),
        Spec(
            "aupay",
            lambda url: AuPaySandbox(AUPAY, webhook_url=url, timing=TIMING),
            AUPAY,
            _triple(AUPAY),
            refunds_carry_merchant_id=True,
            qr_cpm=True,
        ),
    )
}


@dataclass
class World:
    spec: Spec
    paymux: str
    sandbox: Sandbox
    sandbox_url: str  # .../<provider>, the store's base_url
    server: ServerClient
    tenant: Tenant
    http: httpx.AsyncClient
    container: Container

    @property
    def layout(self) -> SettlementLayout:
        return LAYOUTS[self.spec.name]

    async def confirm(self, amount: int, method: str = "qr_mpm", **body: Any) -> dict[str, Any]:
        intent = await self.server.create_intent(self.tenant, amount=amount, payment_method_type=method)
        confirmed = await self.http.post(
            f"{self.paymux}/v1/payment_intents/{intent['id']}/confirm",
            headers=bearer(intent["payment_token"]),
            json=body or None,
        )
        assert confirmed.status_code == 200, confirmed.text
        result: dict[str, Any] = confirmed.json()
        return result

    async def customer(self, intent_id: str, outcome: str) -> None:
        response = await self.http.post(
            f"{self.sandbox_url}/_sandbox/payments/{intent_id}", json={"outcome": outcome}
        )
        assert response.status_code == 200, response.text

    async def until(self, intent_id: str, status: str) -> dict[str, Any]:
        for _ in range(200):
            intent: dict[str, Any] = (await self.server.get(f"/v1/payment_intents/{intent_id}")).json()
            if intent["status"] == status:
                return intent
            await asyncio.sleep(0.025)
        pytest.fail(f"{intent_id} never became {status}: {intent['status']}")

    async def paid(self, amount: int) -> str:
        intent = await self.confirm(amount)
        # The customer can only approve a payment the provider took; anything else is told here, with its reason.
        assert intent["status"] == "requires_action", intent
        await self.customer(intent["id"], "COMPLETED")
        await self.until(intent["id"], "succeeded")
        return str(intent["id"])

    async def refund(self, intent_id: str, amount: int | None = None) -> dict[str, Any]:
        response = await self.server.post(
            f"/v1/payment_intents/{intent_id}/refund", {"amount": amount} if amount else None
        )
        assert response.status_code == 201, response.text
        refund: dict[str, Any] = response.json()
        assert refund["status"] == "succeeded", refund
        return refund

    async def download(self, day: str) -> httpx.Response:
        """The control path, without any provider authentication."""
        return await self.http.get(f"{self.sandbox_url}/_sandbox/settlements/{day}.csv")

    async def file(self, day: date) -> str:
        response = await self.download(day.isoformat())
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].split(";")[0] == "text/csv"
        return response.text

    async def lines(self, days: set[date]) -> list[SettlementLine]:
        lines: list[SettlementLine] = []
        for day in sorted(days):
            lines.extend(line for _, line in self.layout.read(io.StringIO(await self.file(day))))
        return lines

    async def transactions(self, intent_ids: list[str]) -> list[Transaction]:
        async with self.container.db.reading() as session:
            return list(
                (
                    await session.execute(
                        select(Transaction).where(Transaction.payment_intent_id.in_(intent_ids))
                    )
                ).scalars()
            )

    async def credentials(self) -> ProviderCredentials:
        async with self.container.db.reading() as session:
            config = await self.container.tenants.provider_config(
                session, self.tenant.store_id, self.spec.name
            )
        assert config is not None
        return self.container.tenants.credentials(config)


async def configure(container: Container, tenant: Tenant, spec: Spec, base_url: str) -> None:
    config = {
        "provider_code": spec.name,
        "credentials": spec.credentials,
        "base_url": base_url,
        "webhook_secret": spec.defaults.webhook_secret,
    }
    await container.tenants.configure_provider(tenant.store_id, ProviderConfigSync.model_validate(config))


@pytest.fixture
async def world(
    request: pytest.FixtureRequest, app: FastAPI, container: Container, clock: FrozenClock
) -> AsyncIterator[World]:
    spec = SPECS[request.param]
    tenant = await bootstrap_tenant(
        container, partner=f"settle-{spec.name}", merchant="ST-M", store="ST-S", test_provider=False
    )
    async with serving(app) as paymux:
        sandbox = spec.make(f"{paymux}/v1/webhooks/{spec.name}")
        sandboxes = FastAPI()
        sandboxes.mount(f"/{spec.name}", sandbox.app())  # as `paymux sandbox` serves it
        async with (
            serving(sandboxes) as root,
            httpx.AsyncClient(base_url=paymux, timeout=30) as http,
        ):
            sandbox_url = f"{root}/{spec.name}"
            await configure(container, tenant, spec, sandbox_url)
            server = ServerClient(http, tenant.client_id, tenant.client_secret, clock)
            yield World(spec, paymux, sandbox, sandbox_url, server, tenant, http, container)
            await sandbox.webhooks.drain()


def every_provider(names: tuple[str, ...] = PROVIDERS) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("world", names, indirect=True)


def today() -> date:
    return datetime.now(UTC).date()


@every_provider()
async def test_the_days_file_names_every_payment_and_refund_as_paymux_recorded_it(world: World) -> None:
    started = datetime.now(UTC).replace(microsecond=0)
    days = {today()}
    refunded = await world.paid(1000)
    partial = await world.refund(refunded, 300)
    rest = await world.refund(refunded)
    assert rest["amount"] == 700
    kept = await world.paid(1500)
    declined = await world.confirm(800)
    await world.customer(declined["id"], "FAILED")
    await world.until(declined["id"], "failed")
    intents = [refunded, kept, declined["id"]]
    if world.spec.qr_cpm:
        scanned = await world.confirm(1200, "qr_cpm", customer_code=CUSTOMER_CODE)
        assert scanned["status"] == "succeeded", scanned
        await world.refund(scanned["id"], 200)
        intents.append(scanned["id"])
    days.add(today())
    ended = datetime.now(UTC)

    settled = [t for t in await world.transactions(intents) if t.status == "succeeded"]
    assert {t.id for t in settled if t.type == "refund"} >= {partial["id"], rest["id"]}
    expected: list[Row] = []
    for transaction in settled:
        assert transaction.provider_transaction_id is not None, transaction.id
        if transaction.type == "payment":
            kind, reference = LineKind.PAYMENT, transaction.payment_intent_id
        else:
            assert transaction.type == "refund"
            kind = LineKind.REFUND
            reference = (
                transaction.id if world.spec.refunds_carry_merchant_id else transaction.payment_intent_id
            )
        expected.append(
            (kind, transaction.provider_transaction_id, reference, transaction.amount, transaction.currency)
        )

    lines = await world.lines(days)
    got: list[Row] = [
        (line.kind, line.provider_transaction_id, line.reference, line.amount, line.currency)
        for line in lines
    ]
    assert sorted(got) == sorted(expected)
    assert len(got) == (6 if world.spec.qr_cpm else 4)  # 2 (+1) payments, 2 (+1) refunds; the decline: none
    assert all(line.fee == 0 for line in lines)
    assert all(started <= line.transacted_at <= ended for line in lines)
    assert not any(line.reference == declined["id"] for line in lines)


@every_provider()
async def test_a_day_without_settlements_is_a_header_only_file(world: World) -> None:
    header = ",".join(world.layout.header) + "\n"
    assert await world.file(today()) == header  # nothing settled yet
    await world.paid(1000)
    empty = await world.file(date(2001, 1, 1))
    assert empty == header
    assert list(world.layout.read(io.StringIO(empty))) == []


@every_provider()
async def test_a_day_that_is_not_one_is_refused(world: World) -> None:
    for day in (
        "2026-02-30",
        "2026-13-01",
        "20260128",
        "2026-W05-3",
        "2026-1-28",
        "yesterday",
        "2026-01-28x",
    ):
        response = await world.download(day)
        assert response.status_code == 422, (day, response.text)
    missing = await world.http.get(f"{world.sandbox_url}/_sandbox/settlements/2026-01-28")  # not a .csv
    assert missing.status_code == 404


@every_provider(("paypay", "dpayment", "aupay"))
async def test_a_payment_reversed_by_a_cancel_is_settled_and_given_back(world: World) -> None:
    world.sandbox.webhooks.url = None  # paymux does not hear of the payment before it cancels
    days = {today()}
    intent = await world.confirm(1000)
    await world.customer(intent["id"], "COMPLETED")
    cancelled = await world.server.post(f"/v1/payment_intents/{intent['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    lines = await world.lines(days | {today()})
    assert [(line.kind, line.reference, line.amount) for line in lines] == [
        (LineKind.PAYMENT, intent["id"], 1000),
        (LineKind.REFUND, intent["id"], 1000),  # the money went back: the day nets to nothing
    ]
    assert lines[0].provider_transaction_id == lines[1].provider_transaction_id


# ---------------------------------------------------------------------- PayPay's signed API and the adapter


def opa_headers(
    path: str, *, secret: str = PAYPAY.api_secret, merchant: str = PAYPAY.merchant_id
) -> dict[str, str]:
    return {
        "Authorization": paypay_signing.authorization(
            PAYPAY.api_key,
            secret,
            method="GET",
            path=path,
            content_type=None,
            body=b"",
            nonce=secrets.token_hex(4),
            epoch=int(time.time()),
        ),
        "X-ASSUME-MERCHANT": merchant,
    }


@every_provider(("paypay",))
async def test_paypay_serves_the_file_on_its_signed_api(world: World) -> None:
    intent = await world.paid(1000)
    await world.refund(intent, 400)
    day = today().isoformat()
    control = await world.file(today())
    path = f"/v2/settlements/{day}"
    url = world.sandbox_url + path  # signed over PayPay's path, without the /paypay mount

    signed = await world.http.get(url, headers=opa_headers(path))
    assert signed.status_code == 200, signed.text
    assert signed.headers["content-type"].split(";")[0] == "text/csv"
    assert signed.text == control
    assert len(list(LAYOUTS["paypay"].read(io.StringIO(signed.text)))) == 2

    refusals = [
        {},
        opa_headers(path, secret="not-the-secret"),
        opa_headers(f"/v2/settlements/{date(2001, 1, 1).isoformat()}"),  # signed for another day
        opa_headers(path, merchant="someone-else"),
    ]
    for headers in refusals:
        refused = await world.http.get(url, headers=headers)
        assert refused.status_code == 401, headers
        assert refused.json()["resultInfo"]["code"] == "UNAUTHORIZED"
        assert refused.json()["data"] is None

    bad_path = "/v2/settlements/2026-02-30"
    bad = await world.http.get(world.sandbox_url + bad_path, headers=opa_headers(bad_path))
    assert bad.status_code == 400
    assert bad.json()["resultInfo"]["code"] == "INVALID_PARAMS"


@every_provider(("paypay",))
async def test_paypay_adapter_fetches_the_file_it_settled(world: World) -> None:
    provider = world.container.providers.get("paypay")
    assert isinstance(provider, SettlementCapable)
    assert provider.settlement_layout == LAYOUTS["paypay"]
    intent = await world.paid(2500)
    refund = await world.refund(intent, 500)
    credentials = await world.credentials()

    fetched = await provider.fetch_settlement_file(credentials, today())
    assert fetched == (await world.download(today().isoformat())).content
    lines = [line for _, line in provider.settlement_layout.read(io.StringIO(fetched.decode()))]
    assert [(line.kind, line.reference, line.amount) for line in lines] == [
        (LineKind.PAYMENT, intent, 2500),
        (LineKind.REFUND, refund["id"], 500),
    ]
    assert (
        await provider.fetch_settlement_file(credentials, date(2001, 1, 1))
        == (",".join(LAYOUTS["paypay"].header) + "\n").encode()
    )

    wrong = ProviderCredentials(
        {**credentials.values, "api_secret": "not-the-secret"}, base_url=credentials.base_url
    )
    with pytest.raises(ProviderRejected, match="UNAUTHORIZED") as refused:
        await provider.fetch_settlement_file(wrong, today())
    assert refused.value.provider_code == "UNAUTHORIZED"

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with pytest.raises(ProviderUnavailable):
        await provider.fetch_settlement_file(
            ProviderCredentials(credentials.values, base_url=closed), today()
        )
