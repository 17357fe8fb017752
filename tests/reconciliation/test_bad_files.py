"""A file that cannot be read is refused whole, naming the line, before anything is written: 422
invalid_settlement_file, no run, no exception, no claim. An unknown provider is 422 unknown_settlement_provider and
an upload over PAYMUX_RECONCILIATION_MAX_UPLOAD_BYTES is 413 (docs/reconciliation.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from paymux.app import create_app
from paymux.config import Settings
from paymux.container import Container
from paymux.core.clock import FrozenClock
from paymux.reconciliation.service import ImportRequest, InvalidSettlementFile, UnknownSettlementProvider
from tests.conftest import empty_all_tables
from tests.reconciliation.support import (
    RUNS,
    TEST_HEADER,
    assert_problem,
    midnight,
    pay,
    scope_of,
    table_counts,
    upload,
    uploaded,
    write_file,
)
from tests.support import ServerClient, Tenant, bootstrap_tenant, encode, intent_body

HEADER = ",".join(TEST_HEADER).encode() + b"\n"
GOOD = b"payment,test_ch_01JD4Q9V6W2N8X3Y5Z7A9B1C3D,pi_01JD4Q9V6W2N8X3Y5Z7A9B1C3D,1000,JPY,0,2026-11-21T09:30:00Z\n"
NOTHING = {"runs": 0, "matches": 0, "exceptions": 0}


def line(
    amount: str = "1000", *, kind: str = "payment", currency: str = "JPY", at: str = "2026-11-21T09:30:00Z"
) -> bytes:
    return f"{kind},test_ch_X,pi_X,{amount},{currency},0,{at}\n".encode()


PAIN_001 = b"""<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pain.001.001.03">
  <CstmrCdtTrfInitn><GrpHdr><MsgId>PAY-1</MsgId><CreDtTm>2026-11-21T09:00:00</CreDtTm><NbOfTxs>1</NbOfTxs>
  <InitgPty><Nm>paymux</Nm></InitgPty></GrpHdr></CstmrCdtTrfInitn>
</Document>
"""

CAMT_052 = b"""<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.052.001.02">
  <BkToCstmrAcctRpt><GrpHdr><MsgId>RPT-1</MsgId><CreDtTm>2026-11-21T09:00:00</CreDtTm></GrpHdr>
    <Rpt><Id>RPT-1-1</Id><CreDtTm>2026-11-21T09:00:00</CreDtTm>
      <Acct><Id><IBAN>DE89370400440532013000</IBAN></Id></Acct>
      <Ntry><Amt Ccy="EUR">10.00</Amt><CdtDbtInd>CRDT</CdtDbtInd><Sts>BOOK</Sts>
        <BookgDt><Dt>2026-11-21</Dt></BookgDt><AcctSvcrRef>REF-1</AcctSvcrRef>
        <BkTxCd><Prtry><Cd>NTRF</Cd></Prtry></BkTxCd><AddtlNtryInf>pi_1</AddtlNtryInf></Ntry>
    </Rpt>
  </BkToCstmrAcctRpt>
</Document>
"""

BAD_FILES = [
    pytest.param(
        b"type,provider_transaction_id,amount,currency\npayment,test_ch_1,1000,JPY\n",
        ["line 1", "reference, fee, transacted_at"],
        id="missing-columns",
    ),
    pytest.param(
        b"transactionType,paymentId,merchantPaymentId,amount,currency,fee,transactionAt\n"
        b"PAYMENT,p1,pi_1,1000,JPY,0,2026-11-21T09:30:00Z\n",
        ["line 1", "not a test settlement file"],
        id="another-providers-layout",
    ),
    pytest.param(b"", ["line 1"], id="empty-file"),
    pytest.param(HEADER + GOOD + line(kind="chargeback"), ["line 3", "chargeback"], id="bad-kind"),
    pytest.param(HEADER + GOOD + GOOD + line("1000.5"), ["line 4", "1000.5", "JPY"], id="decimals-for-jpy"),
    pytest.param(HEADER + line("10.505", currency="USD"), ["line 2", "10.505"], id="three-decimals-for-usd"),
    pytest.param(HEADER + line("-1000"), ["line 2"], id="negative-amount"),
    pytest.param(HEADER + line("0"), ["line 2"], id="zero-amount"),
    pytest.param(HEADER + line("1,000"), ["line 2"], id="thousands-separator"),
    pytest.param(HEADER + line(currency="YEN"), ["line 2", "YEN"], id="not-a-currency"),
    pytest.param(HEADER + GOOD + line(at="21/11/2026 09:30"), ["line 3", "transacted_at"], id="bad-time"),
    pytest.param(
        HEADER + b"payment,test_ch_1,,1000,JPY,0,2026-11-21T09:30:00Z\n",
        ["line 2", "reference"],
        id="empty-reference",
    ),
    pytest.param(
        HEADER + b"payment,test_ch_" + b"1" * 130 + b",pi_1,1000,JPY,0,2026-11-21T09:30:00Z\n",
        ["line 2", "128"],
        id="id-too-long",
    ),
    pytest.param(
        HEADER + GOOD + b'payment,"test_ch_2,pi_2,1000,JPY,0,2026-11-21T09:30:00Z\n',
        ["line 3"],
        id="malformed-csv-unterminated-quote",
    ),
    pytest.param(
        HEADER + GOOD + b"payment,test_ch_\xff\xfe,pi_2,1000,JPY,0,2026-11-21T09:30:00Z\n",
        ["UTF-8"],
        id="not-utf-8",
    ),
    pytest.param(b"\xff\xfe" + "type,amount\n".encode("utf-16-le"), ["UTF-8"], id="utf-16"),
    pytest.param(PAIN_001, ["camt.053"], id="xml-pain-001"),
    pytest.param(CAMT_052, ["camt.053"], id="xml-camt-052"),
    pytest.param(b"<?xml version='1.0'?>\n<Document><BkToCstmrStmt>", ["camt.053"], id="xml-unclosed"),
    pytest.param(b"<html><body>Settlement</body></html>", ["camt.053"], id="xml-html"),
]


@pytest.mark.parametrize(("body", "says"), BAD_FILES)
async def test_a_bad_upload_is_refused_and_nothing_is_written(
    body: bytes,
    says: list[str],
    server: ServerClient,
    clock: FrozenClock,
    container: Container,
    tenant: Tenant,
) -> None:
    await pay(server, clock, tenant, 1000)  # a transaction of today that a run would report missing_in_file
    response = await upload(
        server, clock, body, content_type="application/xml" if body.startswith(b"<") else "text/csv"
    )
    problem = assert_problem(response, 422, "invalid_settlement_file")
    for words in says:
        assert words in problem["detail"], problem["detail"]
    assert await table_counts(container) == NOTHING


@pytest.mark.parametrize(("body", "says"), BAD_FILES[:6])
async def test_the_service_refuses_the_same_files(
    body: bytes, says: list[str], container: Container, tenant: Tenant, tmp_path: Path
) -> None:
    path = await write_file(tmp_path / "bad.csv", body)
    with pytest.raises(InvalidSettlementFile) as refused:
        await container.reconciliation.import_file(
            ImportRequest(
                path=path, provider="test", scope=scope_of(tenant), source="cli", created_by="tests"
            )
        )
    assert all(words in str(refused.value.detail) for words in says), refused.value.detail
    assert await table_counts(container) == NOTHING


async def test_a_bad_line_after_more_than_a_batch_refuses_the_whole_file(
    server: ServerClient, clock: FrozenClock, container: Container, tenant: Tenant
) -> None:
    """Lines are matched in batches of 2,000, each its own unit of work; the check comes first, so a bad line at
    2,603 leaves no trace of the first batch."""
    clock.set(midnight(clock.now()).replace(hour=9))
    payment = await pay(server, clock, tenant, 1000)
    good = ",".join(payment.row()).encode() + b"\n"
    unknown = b"".join(line(at=payment.row()[6]).replace(b"_X", f"_{n}".encode()) for n in range(2600))
    body = HEADER + good + unknown + line("12.5")
    response = await upload(server, clock, body)
    problem = assert_problem(response, 422, "invalid_settlement_file")
    assert problem["detail"].startswith("line 2603:"), problem["detail"]
    assert await table_counts(container) == NOTHING
    # The same file without its bad line goes through: the payment matched, the rest unknown.
    report = await uploaded(server, clock, HEADER + good + unknown)
    assert (report["lines"], report["matched"], report["missing_in_paymux"]) == (2601, 1, 2600)


async def test_a_bad_byte_deep_in_a_file_is_reported_at_its_line(
    server: ServerClient, clock: FrozenClock, container: Container
) -> None:
    body = HEADER + GOOD * 20_000 + b"payment,test_ch_1,pi_1,10\xff00,JPY,0,2026-11-21T09:30:00Z\n"
    response = await upload(server, clock, body)
    problem = assert_problem(response, 422, "invalid_settlement_file")
    assert await table_counts(container) == NOTHING
    offset = body.index(b"\xff")
    assert "line 20002" in problem["detail"] or str(offset) in problem["detail"], problem["detail"]


async def test_a_field_over_the_csv_limit_is_reported_at_its_line(
    server: ServerClient, clock: FrozenClock, container: Container
) -> None:
    body = (
        HEADER
        + GOOD
        + GOOD
        + b"payment,test_ch_1,pi_1,1000,JPY,0,2026-11-21T09:30:00Z,"
        + b"x" * 140_000
        + b"\n"
    )
    response = await upload(server, clock, body)
    problem = assert_problem(response, 422, "invalid_settlement_file")
    assert await table_counts(container) == NOTHING
    assert "line 4" in problem["detail"], problem["detail"]


async def test_an_unterminated_quote_is_reported_where_it_opens(
    server: ServerClient, clock: FrozenClock, container: Container
) -> None:
    body = HEADER + GOOD + b'payment,"test_ch_2,pi_2,1000,JPY,0,2026-11-21T09:30:00Z\n' + GOOD * 5
    response = await upload(server, clock, body)
    problem = assert_problem(response, 422, "invalid_settlement_file")
    assert problem["detail"].startswith("line 3:"), problem["detail"]


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(line("100000000000000000000"), id="amount-beyond-bigint"),
        pytest.param(line(at="0001-01-01T00:00:00+01:00"), id="time-out-of-range"),
        pytest.param(b"payment,test_ch_\x00,pi_\x00,1000,JPY,0,2026-11-21T09:30:00Z\n", id="nul-character"),
    ],
)
async def test_a_line_paymux_cannot_hold_is_a_bad_line(
    bad: bytes, container: Container, tenant: Tenant, tmp_path: Path
) -> None:
    """Through the service, so that the failure is the import's own and not an HTTP 500's logging."""
    path = await write_file(tmp_path / "bad.csv", HEADER + GOOD + bad)
    with pytest.raises(InvalidSettlementFile) as refused:
        await container.reconciliation.import_file(
            ImportRequest(
                path=path, provider="test", scope=scope_of(tenant), source="cli", created_by="tests"
            )
        )
    assert str(refused.value.detail).startswith("line 3:"), refused.value.detail
    assert await table_counts(container) == NOTHING


# ---------------------------------------------------------------------------------------------- provider


@pytest.mark.parametrize("provider", ["stripe", "testing", "paypay2"])
async def test_an_unknown_provider(
    provider: str,
    server: ServerClient,
    clock: FrozenClock,
    container: Container,
    tenant: Tenant,
    tmp_path: Path,
) -> None:
    response = await upload(server, clock, HEADER + GOOD, provider=provider)
    problem = assert_problem(response, 422, "unknown_settlement_provider")
    assert provider in problem["detail"]
    path = await write_file(tmp_path / "file.csv", HEADER + GOOD)
    with pytest.raises(UnknownSettlementProvider):
        await container.reconciliation.import_file(
            ImportRequest(
                path=path, provider=provider, scope=scope_of(tenant), source="cli", created_by="tests"
            )
        )
    assert await table_counts(container) == NOTHING


@pytest.mark.parametrize(
    "query", ["", "?provider=", "?provider=Test", "?provider=a%00", "?provider=test&file_name=%0A"]
)
async def test_a_malformed_query(
    query: str, server: ServerClient, clock: FrozenClock, container: Container
) -> None:
    clock.advance(1)
    response = await server.request(
        "POST", f"{RUNS}{query}", raw=HEADER + GOOD, headers={"Content-Type": "text/csv"}
    )
    assert_problem(response, 422, "validation_error")
    assert await table_counts(container) == NOTHING


# ---------------------------------------------------------------------------------------------- size


@pytest.fixture
async def small_limits(
    settings: Settings, clock: FrozenClock
) -> AsyncIterator[tuple[ServerClient, Container, Tenant]]:
    """An app whose uploads stop at 8 KiB and other bodies at 2 KiB, torn down like the `app` fixture."""
    update = {"reconciliation_max_upload_bytes": 8192, "max_body_bytes": 2048}
    application = create_app(settings.model_copy(update=update), clock=clock)
    container: Container = application.state.container
    if container.redis is not None:
        await container.redis.flushdb()
    try:
        tenant = await bootstrap_tenant(container, partner="acme", merchant="M-1", store="S-1")
        transport = httpx.ASGITransport(app=application, client=("203.0.113.7", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://paymux.test") as http:
            yield ServerClient(http, tenant.client_id, tenant.client_secret, clock), container, tenant
    finally:
        await empty_all_tables(container.db)
        if container.redis is not None:
            await container.redis.flushdb()
        await container.close()


def padded(size: int) -> bytes:
    """A valid file of exactly `size` bytes: one line, then blank lines (skipped)."""
    body = HEADER + GOOD
    return body + b"\n" * (size - len(body))


async def test_an_upload_up_to_the_limit_is_taken(
    small_limits: tuple[ServerClient, Container, Tenant], clock: FrozenClock
) -> None:
    server, _, _ = small_limits
    report = await uploaded(server, clock, padded(8192))
    assert (report["file_bytes"], report["lines"]) == (8192, 1)
    # More than other requests may carry: the upload limit is the path's own.
    assert report["file_bytes"] > 2048


async def test_an_upload_over_the_limit_is_413(
    small_limits: tuple[ServerClient, Container, Tenant], clock: FrozenClock
) -> None:
    server, container, _ = small_limits
    response = await upload(server, clock, padded(8193))
    problem = assert_problem(response, 413, "payload_too_large")
    assert "8192" in problem["detail"]
    assert await table_counts(container) == NOTHING


async def test_a_streamed_upload_over_the_limit_is_413(
    small_limits: tuple[ServerClient, Container, Tenant], clock: FrozenClock
) -> None:
    """Without a Content-Length (chunked), the body is counted as it arrives."""
    server, container, _ = small_limits
    body = padded(20_000)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    clock.advance(1)
    path = f"{RUNS}?provider=test"
    headers = {"Authorization": server.authorization("POST", path, body), "Content-Type": "text/csv"}
    response = await server.http.post(path, content=chunks(), headers=headers)
    assert "content-length" not in response.request.headers
    assert_problem(response, 413, "payload_too_large")
    assert await table_counts(container) == NOTHING


async def test_other_requests_keep_their_own_limit(
    small_limits: tuple[ServerClient, Container, Tenant], clock: FrozenClock
) -> None:
    server, _, tenant = small_limits
    body = intent_body(tenant, metadata={f"note_{n}": "x" * 400 for n in range(6)})
    assert 2048 < len(encode(body)) < 8192
    response = await server.post("/v1/payment_intents", body)
    assert_problem(response, 413, "payload_too_large")
