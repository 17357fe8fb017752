"""d払い (dpay v1, paymux-defined) over real sockets: the signature, the sandbox's rules, and paymux <-> sandbox end
to end, webhooks included."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from paymux.app import create_app
from paymux.config import Settings
from paymux.container import Container
from paymux.core.clock import FrozenClock
from paymux.providers.base import (
    PaymentMethodType,
    PaymentReference,
    PaymentRequest,
    ProviderCredentials,
    ProviderPaymentStatus,
    ProviderProtocolError,
    ProviderRefundStatus,
    ProviderRejected,
    RefundRequest,
    WebhookNotUnderstood,
)
from paymux.providers.dpayment import signing
from paymux.providers.dpayment.adapter import CONTENT_TYPE, DPaymentProvider
from paymux.providers.dpayment.sandbox import DEFAULTS, JST, DPaymentSandbox, cancel_deadline
from paymux.providers.sandbox_kit import SandboxTiming
from paymux.providers.testmode import BuiltinTestProvider
from paymux.tenants.schemas import ProviderConfigSync
from paymux.webhooks.models import ProviderWebhookEvent
from tests.conftest import empty_all_tables
from tests.live import serving
from tests.providers.refund_checks import check_refund_status_lookups
from tests.support import ServerClient, Tenant, bearer, bootstrap_tenant

WEBHOOK_SECRET = DEFAULTS.webhook_secret or ""
CREDENTIALS = {
    "api_key": DEFAULTS.api_key,
    "api_secret": DEFAULTS.api_secret,
    "merchant_id": DEFAULTS.merchant_id,
}
TIMING = SandboxTiming(slow_seconds=0.2, timeout_seconds=3)


# ---------------------------------------------------------------------- signatures


def test_request_signature_matches_an_independent_computation() -> None:
    secret, body = "s3cr3t", b'{"merchantPaymentId":"pi_1","amount":{"amount":100,"currency":"JPY"}}'
    header = signing.authorization(
        "key-1",
        secret,
        method="post",
        path="/v1/codes",
        content_type=CONTENT_TYPE,
        body=body,
        nonce="abcdef12",
        epoch=1700000000,
    )
    hashed = base64.b64encode(hashlib.sha256(body).digest()).decode()
    message = f"/v1/codes\nPOST\nabcdef12\n1700000000\napplication/json;charset=UTF-8\n{hashed}"
    mac = base64.b64encode(hmac.new(secret.encode(), message.encode(), hashlib.sha256).digest()).decode()
    assert header == f"hmac DPAY-Auth:key-1:{mac}:abcdef12:1700000000:{hashed}"

    auth = signing.parse(header)
    assert signing.verify(secret, auth, method="POST", path="/v1/codes", content_type=CONTENT_TYPE, body=body)
    assert not signing.verify(
        secret, auth, method="POST", path="/v1/codes", content_type=CONTENT_TYPE, body=body + b" "
    )
    assert not signing.verify(
        secret, auth, method="POST", path="/v1/codez", content_type=CONTENT_TYPE, body=body
    )
    assert not signing.verify(
        secret, auth, method="POST", path="/v1/codes", content_type="application/json", body=body
    )
    assert not signing.verify(
        "other", auth, method="POST", path="/v1/codes", content_type=CONTENT_TYPE, body=body
    )


def test_a_request_without_body_signs_an_empty_content_type_and_hash() -> None:
    header = signing.authorization(
        "key-1",
        "s3cr3t",
        method="GET",
        path="/v1/payments/pi_1?x=1",
        content_type="ignored/without-body",
        body=b"",
        nonce="n0nce123",
        epoch="1700000000",
    )
    message = "/v1/payments/pi_1?x=1\nGET\nn0nce123\n1700000000\n\nempty"
    mac = base64.b64encode(hmac.new(b"s3cr3t", message.encode(), hashlib.sha256).digest()).decode()
    assert header == f"hmac DPAY-Auth:key-1:{mac}:n0nce123:1700000000:empty"


@pytest.mark.parametrize(
    "header",
    [
        "",
        "hmac OPA-Auth:a:b:c:d:e",
        "hmac DPAY-Auth:a:b:c:d",
        "hmac DPAY-Auth:a::c:d:e",
        "hmac DPAY-Auth:a:b:c:d:e:f",
    ],
)
def test_malformed_authorization_headers(header: str) -> None:
    with pytest.raises(signing.MalformedDPayAuthorization):
        signing.parse(header)


async def test_notification_signature_is_base64_hmac_sha256_of_the_raw_body() -> None:
    async with httpx.AsyncClient() as http:
        provider = DPaymentProvider(http, FrozenClock())
    body = b'{"notificationId":"n-1"}'
    expected = base64.b64encode(hmac.new(b"whsec", body, hashlib.sha256).digest()).decode()
    assert signing.notification_signature("whsec", body) == expected
    assert provider.verify_notification(body, expected, "whsec")
    assert provider.verify_notification(body, f" {expected}\n", "whsec")
    assert not provider.verify_notification(body + b" ", expected, "whsec")
    assert not provider.verify_notification(body, expected, "other")
    assert not provider.verify_notification(body, None, "whsec")
    assert not provider.verify_notification(body, "é" * 44, "whsec")  # a non-ASCII header is just wrong


async def test_notifications_are_parsed_by_their_id() -> None:
    async with httpx.AsyncClient() as http:
        provider = DPaymentProvider(http, FrozenClock())
    parsed = provider.parse_notification(
        json.dumps(
            {
                "notificationId": "ntf-1",
                "notificationType": "PAYMENT_COMPLETED",
                "merchantPaymentId": "pi_1",
                "status": "COMPLETED",
            }
        ).encode()
    )
    assert parsed is not None
    assert (parsed.payment_intent_id, parsed.dedupe_key, parsed.provider_status) == (
        "pi_1",
        "ntf-1",
        "COMPLETED",
    )
    for body in (
        b"not json",
        b"[]",
        b'{"merchantPaymentId":"pi_1","notificationId":"n"}',
        b'{"notificationType":"PAYMENT_COMPLETED","merchantPaymentId":"pi_1"}',
        b'{"notificationType":"PAYMENT_COMPLETED","notificationId":"n"}',
    ):
        with pytest.raises(WebhookNotUnderstood):
            provider.parse_notification(body)


def test_the_cancel_window_ends_at_2359_jst_the_next_day() -> None:
    def jst(year: int, month: int, day: int, hour: int, minute: int, second: int = 0) -> int:
        return int(datetime(year, month, day, hour, minute, second, tzinfo=JST).timestamp())

    assert cancel_deadline(jst(2026, 1, 28, 0, 10)) == jst(2026, 1, 29, 23, 59, 59)
    assert cancel_deadline(jst(2026, 1, 28, 23, 30)) == jst(2026, 1, 29, 23, 59, 59)
    assert cancel_deadline(jst(2026, 1, 31, 12, 0)) == jst(2026, 2, 1, 23, 59, 59)


# ---------------------------------------------------------------------- the sandbox, spoken to directly


@dataclass
class Direct:
    sandbox: DPaymentSandbox
    url: str
    provider: DPaymentProvider
    credentials: ProviderCredentials
    http: httpx.AsyncClient

    def request(self, amount: int = 1000, intent_id: str = "pi_direct_1", **overrides: Any) -> PaymentRequest:
        fields: dict[str, Any] = {
            "payment_intent_id": intent_id,
            "amount": amount,
            "currency": "JPY",
            "payment_method_type": PaymentMethodType.QR_MPM,
        }
        fields.update(overrides)
        return PaymentRequest(**fields)

    def reference(self, intent_id: str = "pi_direct_1", code_id: str | None = None) -> PaymentReference:
        payment = self.sandbox.payments[intent_id]
        return PaymentReference(intent_id, payment.payment_id, payment.amount, "JPY", code_id)

    async def customer(self, intent_id: str, outcome: str) -> httpx.Response:
        return await self.http.post(f"{self.url}/_sandbox/payments/{intent_id}", json={"outcome": outcome})

    async def raw(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        *,
        signed_path: str | None = None,
        signed_body: bytes | None = None,
        api_key: str = DEFAULTS.api_key,
        secret: str = DEFAULTS.api_secret,
        merchant: str | None = DEFAULTS.merchant_id,
        nonce: str | None = None,
        epoch: int | None = None,
    ) -> httpx.Response:
        headers = {
            "Authorization": signing.authorization(
                api_key,
                secret,
                method=method,
                path=signed_path if signed_path is not None else path,
                content_type=CONTENT_TYPE if body else None,
                body=signed_body if signed_body is not None else body,
                nonce=nonce or f"n{time.monotonic_ns()}"[:32],
                epoch=epoch if epoch is not None else int(time.time()),
            )
        }
        if merchant is not None:
            headers["X-DPAY-MERCHANT-ID"] = merchant
        if body:
            headers["Content-Type"] = CONTENT_TYPE
        return await self.http.request(method, self.url + path, content=body or None, headers=headers)


@pytest.fixture
async def direct(clock: FrozenClock) -> AsyncIterator[Direct]:
    sandbox = DPaymentSandbox(DEFAULTS, timing=TIMING)
    async with serving(sandbox.app()) as url, httpx.AsyncClient(timeout=10) as http:
        credentials = ProviderCredentials(values=CREDENTIALS, base_url=url, webhook_secret=WEBHOOK_SECRET)
        yield Direct(sandbox, url, DPaymentProvider(http, clock), credentials, http)


def result_code(response: httpx.Response) -> str:
    code: str = response.json()["resultInfo"]["code"]
    return code


async def test_the_sandbox_accepts_a_correct_signature(direct: Direct) -> None:
    answer = await direct.raw("GET", "/v1/payments/nobody")
    assert answer.status_code == 404
    assert result_code(answer) == "ORDER_NOT_FOUND"  # past the authentication
    with_query = await direct.raw("GET", "/v1/payments/nobody?lang=ja")
    assert result_code(with_query) == "ORDER_NOT_FOUND"


async def test_the_sandbox_refuses_what_the_protocol_refuses(direct: Direct) -> None:
    body = b'{"merchantPaymentId":"pi_x","amount":{"amount":100,"currency":"JPY"}}'
    refusals = {
        "wrong secret": await direct.raw("POST", "/v1/codes", body, secret="wrong"),
        "wrong api key": await direct.raw("POST", "/v1/codes", body, api_key="other-key"),
        "tampered body": await direct.raw("POST", "/v1/codes", body, signed_body=body.replace(b"100", b"1")),
        "query left out": await direct.raw("GET", "/v1/payments/x?a=1", signed_path="/v1/payments/x"),
        # Computed at the point of use, with a margin: a busy machine must not walk the clock into the window.
        "epoch too old": await direct.raw("GET", "/v1/payments/x", epoch=int(time.time()) - 125),
        "epoch too new": await direct.raw("GET", "/v1/payments/x", epoch=int(time.time()) + 125),
        "short nonce": await direct.raw("GET", "/v1/payments/x", nonce="abc1234"),
        "nonce with punctuation": await direct.raw("GET", "/v1/payments/x", nonce="abc-12345"),
        "no merchant": await direct.raw("GET", "/v1/payments/x", merchant=None),
        "other merchant": await direct.raw("GET", "/v1/payments/x", merchant="someone-else"),
        "no header": await direct.http.get(f"{direct.url}/v1/payments/x"),
    }
    for reason, response in refusals.items():
        assert response.status_code == 401, reason
        assert response.json()["resultInfo"]["code"] == "UNAUTHORIZED", reason
        assert response.json()["data"] is None, reason
    assert direct.sandbox.payments == {}


async def test_a_nonce_is_good_once_within_ten_minutes(direct: Direct) -> None:
    first = await direct.raw("GET", "/v1/payments/x", nonce="reused0001")
    again = await direct.raw("GET", "/v1/payments/x", nonce="reused0001")
    assert result_code(first) == "ORDER_NOT_FOUND"
    assert again.status_code == 401
    assert again.json()["resultInfo"]["message"] == "The nonce was used before"
    # A forged request does not spend a nonce its owner has yet to use.
    forged = await direct.raw("GET", "/v1/payments/x", nonce="fresh00001", secret="wrong")
    assert forged.status_code == 401
    assert result_code(await direct.raw("GET", "/v1/payments/x", nonce="fresh00001")) == "ORDER_NOT_FOUND"


async def test_under_a_mount_prefix_the_provider_path_is_signed(direct: Direct, clock: FrozenClock) -> None:
    parent = FastAPI()
    sandbox = DPaymentSandbox(DEFAULTS)
    parent.mount("/dpayment", sandbox.app())
    async with serving(parent) as url:
        credentials = ProviderCredentials(values=CREDENTIALS, base_url=f"{url}/dpayment")
        created = await direct.provider.create_payment(credentials, direct.request(1500))
        assert created.status is ProviderPaymentStatus.REQUIRES_ACTION
        assert "pi_direct_1" in sandbox.payments
        status = await direct.provider.get_payment_status(
            credentials, PaymentReference("pi_direct_1", None, 1500, "JPY", created.provider_reference)
        )
        assert status.status is ProviderPaymentStatus.REQUIRES_ACTION


async def test_without_base_url_there_is_nowhere_to_send(direct: Direct) -> None:
    credentials = ProviderCredentials(values=CREDENTIALS, base_url=None)
    with pytest.raises(ProviderRejected, match="set base_url: docomo's API address comes with the merchant"):
        await direct.provider.create_payment(credentials, direct.request())
    missing = ProviderCredentials(values={"api_key": "k", "api_secret": "s"}, base_url=direct.url)
    with pytest.raises(ProviderRejected, match="lack merchant_id"):
        await direct.provider.create_payment(missing, direct.request())
    assert direct.sandbox.payments == {}


async def test_amounts_and_ids_are_validated(direct: Direct) -> None:
    for amount in (0, 10_000_000):
        with pytest.raises(ProviderRejected) as refused:
            await direct.provider.create_payment(direct.credentials, direct.request(amount))
        assert refused.value.provider_code == "INVALID_PARAMS"
    with pytest.raises(ProviderRejected) as refused:
        await direct.provider.create_payment(direct.credentials, direct.request(intent_id="pi/../x"))
    assert refused.value.provider_code == "INVALID_PARAMS"
    smallest = await direct.provider.create_payment(direct.credentials, direct.request(1))
    assert smallest.amount == 1
    assert direct.sandbox.payments["pi_direct_1"].amount == 1


async def test_a_repeated_post_returns_the_first_answer(direct: Direct) -> None:
    first = await direct.provider.create_payment(direct.credentials, direct.request(1200))
    again = await direct.provider.create_payment(direct.credentials, direct.request(1200))
    assert again.provider_reference == first.provider_reference
    assert len(direct.sandbox.codes) == 1
    with pytest.raises(ProviderRejected) as conflict:
        await direct.provider.create_payment(direct.credentials, direct.request(1300))
    assert conflict.value.provider_code == "DUPLICATE_MERCHANT_PAYMENT_ID"
    with pytest.raises(ProviderRejected) as other_flow:
        await direct.provider.create_payment(
            direct.credentials,
            direct.request(1200, payment_method_type=PaymentMethodType.QR_CPM, customer_code="123456789012"),
        )
    assert other_flow.value.provider_code == "DUPLICATE_MERCHANT_PAYMENT_ID"
    body = json.dumps(
        {
            "merchantPaymentId": "pi_direct_1",
            "amount": {"amount": 1200, "currency": "JPY"},
            "orderDescription": "pi_direct_1",
        },
        separators=(",", ":"),
    ).encode()
    replayed = await direct.raw("POST", "/v1/codes", body)
    assert replayed.status_code == 200  # the original was 201
    assert replayed.json()["data"]["codeId"] == first.provider_reference


async def test_a_customer_presented_code_needs_the_code(direct: Direct) -> None:
    with pytest.raises(ProviderRejected, match="scanned code"):
        await direct.provider.create_payment(
            direct.credentials, direct.request(payment_method_type=PaymentMethodType.QR_CPM)
        )
    assert direct.sandbox.payments == {}


async def test_an_unknown_status_is_a_protocol_error(direct: Direct) -> None:
    await direct.provider.create_payment(direct.credentials, direct.request())
    direct.sandbox.payments["pi_direct_1"].status = "ON_HOLD"
    with pytest.raises(ProviderProtocolError, match="ON_HOLD"):
        await direct.provider.get_payment_status(direct.credentials, direct.reference())


async def test_a_completed_payment_is_reversed_until_the_next_day(direct: Direct) -> None:
    created = await direct.provider.create_payment(direct.credentials, direct.request(intent_id="pi_a"))
    assert (await direct.customer("pi_a", "COMPLETED")).status_code == 200
    await direct.provider.cancel_payment(
        direct.credentials, direct.reference("pi_a", created.provider_reference)
    )
    assert direct.sandbox.payments["pi_a"].status == "CANCELED"
    # Repeating the cancel is harmless (the code is gone, the payment already CANCELED).
    await direct.provider.cancel_payment(
        direct.credentials, direct.reference("pi_a", created.provider_reference)
    )
    assert direct.sandbox.payments["pi_a"].status == "CANCELED"
    with pytest.raises(ProviderRejected) as refused:
        await direct.provider.refund_payment(
            direct.credentials, RefundRequest("txn_1", direct.reference("pi_a"), 100)
        )
    assert refused.value.provider_code == "ALREADY_CANCELED"

    late = await direct.provider.create_payment(direct.credentials, direct.request(intent_id="pi_b"))
    await direct.customer("pi_b", "COMPLETED")
    payment = direct.sandbox.payments["pi_b"]
    assert payment.accepted_at is not None
    payment.accepted_at -= 2 * 86_400 + 1
    with pytest.raises(ProviderRejected) as expired:
        await direct.provider.cancel_payment(
            direct.credentials, direct.reference("pi_b", late.provider_reference)
        )
    assert expired.value.provider_code == "CANCEL_PERIOD_EXPIRED"
    assert payment.status == "COMPLETED"


async def test_refund_rules(direct: Direct) -> None:
    await direct.provider.create_payment(direct.credentials, direct.request(1000))
    with pytest.raises(ProviderRejected) as unpaid:
        await direct.provider.refund_payment(
            direct.credentials, RefundRequest("txn_0", direct.reference(), 100)
        )
    assert unpaid.value.provider_code == "INVALID_PARAMS"
    await direct.customer("pi_direct_1", "COMPLETED")
    refund = await direct.provider.refund_payment(
        direct.credentials, RefundRequest("txn_1", direct.reference(), 600, reason="返品")
    )
    assert refund.status is ProviderRefundStatus.SUCCEEDED
    assert refund.provider_refund_id == direct.sandbox.refunds["txn_1"].refund_id
    assert direct.sandbox.refunds["txn_1"].reason == "返品"
    again = await direct.provider.refund_payment(
        direct.credentials, RefundRequest("txn_1", direct.reference(), 600, reason="返品")
    )
    assert again.provider_refund_id == refund.provider_refund_id  # the same refund, not a second one
    with pytest.raises(ProviderRejected) as exceeded:
        await direct.provider.refund_payment(
            direct.credentials, RefundRequest("txn_2", direct.reference(), 401)
        )
    assert exceeded.value.provider_code == "REFUND_AMOUNT_EXCEEDED"
    looked_up = await direct.raw("GET", "/v1/refunds/txn_1")
    assert looked_up.json()["data"]["status"] == "REFUNDED"
    assert looked_up.json()["data"]["amount"] == {"amount": 600, "currency": "JPY"}

    payment = direct.sandbox.payments["pi_direct_1"]
    assert payment.accepted_at is not None
    payment.accepted_at -= 179 * 86_400 + 1
    with pytest.raises(ProviderRejected) as too_late:
        await direct.provider.refund_payment(
            direct.credentials, RefundRequest("txn_3", direct.reference(), 400)
        )
    assert too_late.value.provider_code == "REFUND_PERIOD_EXPIRED"
    assert [refund.amount for refund in payment.refunds] == [600]


async def test_codes_expire_unpaid(direct: Direct) -> None:
    await direct.provider.create_payment(direct.credentials, direct.request())
    direct.sandbox.payments["pi_direct_1"].expires_at = int(time.time()) - 1
    status = await direct.provider.get_payment_status(direct.credentials, direct.reference())
    assert status.status is ProviderPaymentStatus.FAILED
    assert status.failure_code == "expired"
    assert (await direct.customer("pi_direct_1", "COMPLETED")).status_code == 409


# ---------------------------------------------------------------------- paymux end to end


@dataclass
class DPayWorld:
    paymux: str
    sandbox: DPaymentSandbox
    sandbox_url: str
    server: ServerClient
    tenant: Tenant
    http: httpx.AsyncClient
    container: Container

    async def intent_for(self, amount: int, method: str = "qr_mpm", **confirm: Any) -> dict[str, Any]:
        intent = await self.server.create_intent(self.tenant, amount=amount, payment_method_type=method)
        confirmed = await self.http.post(
            f"{self.paymux}/v1/payment_intents/{intent['id']}/confirm",
            headers=bearer(intent["payment_token"]),
            json=confirm or None,
        )
        assert confirmed.status_code == 200, confirmed.text
        result: dict[str, Any] = confirmed.json()
        return result

    async def customer(self, intent_id: str, outcome: str) -> None:
        response = await self.http.post(
            f"{self.sandbox_url}/_sandbox/payments/{intent_id}", json={"outcome": outcome}
        )
        assert response.status_code == 200, response.text

    async def intent(self, intent_id: str) -> dict[str, Any]:
        result: dict[str, Any] = (await self.server.get(f"/v1/payment_intents/{intent_id}")).json()
        return result

    async def until(self, intent_id: str, status: str) -> dict[str, Any]:
        for _ in range(200):
            intent = await self.intent(intent_id)
            if intent["status"] == status:
                return intent
            await asyncio.sleep(0.025)
        pytest.fail(f"{intent_id} never became {status}: {intent['status']}")

    async def webhook_events(self) -> list[ProviderWebhookEvent]:
        async with self.container.db.reading() as session:
            return list((await session.execute(select(ProviderWebhookEvent))).scalars())


async def configure_dpayment(
    container: Container, tenant: Tenant, sandbox_url: str | None, **overrides: Any
) -> None:
    config: dict[str, Any] = {
        "provider_code": "dpayment",
        "credentials": dict(CREDENTIALS),
        "base_url": sandbox_url,
        "webhook_secret": WEBHOOK_SECRET,
    }
    config.update(overrides)
    await container.tenants.configure_provider(tenant.store_id, ProviderConfigSync.model_validate(config))


@pytest.fixture
async def dpay_app(settings: Settings, clock: FrozenClock) -> AsyncIterator[FastAPI]:
    """paymux with the d払い adapter registered (the shared registry does not list it yet)."""
    async with httpx.AsyncClient(timeout=30) as provider_http:
        application = create_app(
            settings, clock=clock, providers=[BuiltinTestProvider(), DPaymentProvider(provider_http, clock)]
        )
        container: Container = application.state.container
        if container.redis is not None:
            await container.redis.flushdb()
        try:
            yield application
        finally:
            await empty_all_tables(container.db)
            if container.redis is not None:
                await container.redis.flushdb()
            await container.close()


@pytest.fixture
async def world(dpay_app: FastAPI, clock: FrozenClock) -> AsyncIterator[DPayWorld]:
    container: Container = dpay_app.state.container
    tenant = await bootstrap_tenant(
        container, partner="docomo", merchant="D-M", store="D-S", test_provider=False
    )
    async with serving(dpay_app) as paymux:
        sandbox = DPaymentSandbox(DEFAULTS, webhook_url=f"{paymux}/v1/webhooks/dpayment", timing=TIMING)
        async with (
            serving(sandbox.app()) as sandbox_url,
            httpx.AsyncClient(base_url=paymux, timeout=30) as http,
        ):
            await configure_dpayment(container, tenant, sandbox_url)
            server = ServerClient(http, tenant.client_id, tenant.client_secret, clock)
            yield DPayWorld(paymux, sandbox, sandbox_url, server, tenant, http, container)
            await sandbox.webhooks.drain()


async def test_qr_payment_succeeds_through_webhook_and_status_check(world: DPayWorld) -> None:
    intent = await world.intent_for(1200)
    assert intent["status"] == "requires_action"
    assert intent["provider_name"] == "dpayment"
    action = intent["next_action"]
    code_id = world.sandbox.payments[intent["id"]].code_id
    assert action["type"] == "display_qr_code"
    assert action["provider"] == "dpayment"
    assert action["qr_payload"] == action["url"] == f"https://qr.sandbox.dpayment.paymux.invalid/c/{code_id}"
    assert action["deeplink"] == f"dpayment-sandbox://pay?codeId={code_id}"
    expires = datetime.fromisoformat(action["expires_at"])
    assert expires.timestamp() == world.sandbox.payments[intent["id"]].expires_at

    await world.customer(intent["id"], "COMPLETED")
    paid = await world.until(intent["id"], "succeeded")
    assert paid["provider_transaction_id"] == world.sandbox.payments[intent["id"]].payment_id
    assert paid["amount_captured"] == 1200
    assert paid["next_action"] is None
    events = (await world.server.get(f"/v1/events?object_id={intent['id']}&limit=10")).json()["data"]
    assert [event["type"] for event in reversed(events)] == [
        "payment_intent.created",
        "payment_intent.requires_action",
        "payment_intent.processing",
        "payment_intent.succeeded",
    ]
    await world.sandbox.webhooks.drain()
    recorded = await world.webhook_events()
    assert len(recorded) == 1
    notification = json.loads(recorded[0].body)
    assert notification["notificationType"] == "PAYMENT_COMPLETED"
    assert recorded[0].dedupe_key == notification["notificationId"]


@pytest.mark.parametrize(
    ("outcome", "status", "code"),
    [
        ("FAILED", "failed", "payment_failed"),
        ("EXPIRED", "failed", "expired"),
        ("CANCELED", "cancelled", None),
    ],
)
async def test_customer_outcomes(world: DPayWorld, outcome: str, status: str, code: str | None) -> None:
    intent = await world.intent_for(1000)
    await world.customer(intent["id"], outcome)
    settled = await world.until(intent["id"], status)
    assert settled["failure_code"] == code
    if code is not None:
        assert outcome in settled["failure_message"]


async def test_magic_decline_amount_on_a_shown_code(world: DPayWorld) -> None:
    intent = await world.intent_for(40002)
    settled = await world.until(intent["id"], "failed")
    assert settled["failure_code"] == "payment_failed"
    assert "INSUFFICIENT_BALANCE" in settled["failure_message"]


async def test_a_slow_answer_is_still_an_answer(world: DPayWorld) -> None:
    intent = await world.intent_for(40092)
    assert intent["status"] == "requires_action"


async def test_customer_presented_code_is_charged_at_once(world: DPayWorld) -> None:
    intent = await world.intent_for(2500, "qr_cpm", customer_code="901234567890123456")
    assert intent["status"] == "succeeded"
    payment = world.sandbox.payments[intent["id"]]
    assert payment.user_authorization_code == "901234567890123456"
    assert payment.status == "COMPLETED"
    assert intent["provider_transaction_id"] == payment.payment_id
    assert intent["amount_captured"] == 2500


async def test_customer_presented_decline(world: DPayWorld) -> None:
    intent = await world.intent_for(40002, "qr_cpm", customer_code="901234567890123456")
    assert intent["status"] == "failed"
    assert intent["failure_code"] == "payment_failed"
    assert "INSUFFICIENT_BALANCE" in intent["failure_message"]
    assert world.sandbox.payments[intent["id"]].status == "FAILED"


async def test_cancel_deletes_the_code_at_d_payment(world: DPayWorld) -> None:
    intent = await world.intent_for(1000)
    cancelled = await world.server.post(
        f"/v1/payment_intents/{intent['id']}/cancel", {"cancellation_reason": "customer left"}
    )
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    payment = world.sandbox.payments[intent["id"]]
    assert payment.status == "CANCELED"
    assert payment.code_id not in world.sandbox.codes
    late = await world.http.post(
        f"{world.sandbox_url}/_sandbox/payments/{intent['id']}", json={"outcome": "COMPLETED"}
    )
    assert late.status_code == 409  # the code is gone: nobody can pay it any more


async def test_full_and_partial_refunds_go_through_d_payment(world: DPayWorld) -> None:
    intent = await world.intent_for(1000)
    await world.customer(intent["id"], "COMPLETED")
    await world.until(intent["id"], "succeeded")
    partial = await world.server.post(f"/v1/payment_intents/{intent['id']}/refund", {"amount": 300})
    assert partial.status_code == 201, partial.text
    assert partial.json()["status"] == "succeeded"
    rest = await world.server.post(f"/v1/payment_intents/{intent['id']}/refund")
    assert rest.json()["status"] == "succeeded"
    assert rest.json()["amount"] == 700
    payment = world.sandbox.payments[intent["id"]]
    assert [(refund.merchant_refund_id, refund.amount) for refund in payment.refunds] == [
        (partial.json()["id"], 300),
        (rest.json()["id"], 700),
    ]
    assert (await world.intent(intent["id"]))["amount_refunded"] == 1000
    nothing_left = await world.server.post(f"/v1/payment_intents/{intent['id']}/refund", {"amount": 1})
    assert nothing_left.json()["code"] == "refund_exceeds_captured"  # paymux knows: d払い is not asked
    assert len(payment.refunds) == 2


def notification(intent_id: str, notification_type: str = "PAYMENT_COMPLETED", nid: str = "ntf-1") -> bytes:
    return json.dumps(
        {
            "notificationId": nid,
            "notificationType": notification_type,
            "merchantId": DEFAULTS.merchant_id,
            "merchantPaymentId": intent_id,
            "paymentId": "DP1",
            "status": "COMPLETED",
            "amount": {"amount": 1000, "currency": "JPY"},
            "occurredAt": int(time.time()),
        },
        separators=(",", ":"),
    ).encode()


def signed(body: bytes, secret: str = WEBHOOK_SECRET) -> dict[str, str]:
    return {"X-DPayment-Signature": signing.notification_signature(secret, body)}


async def test_forged_webhooks_are_refused_and_change_nothing(world: DPayWorld) -> None:
    intent = await world.intent_for(1000)
    body = notification(intent["id"])
    for headers in ({}, signed(body, "not-the-secret"), {"X-DPayment-Signature": "garbage"}):
        refused = await world.http.post(f"{world.paymux}/v1/webhooks/dpayment", content=body, headers=headers)
        assert refused.status_code == 401
        assert refused.json()["code"] == "invalid_webhook_signature"
    assert await world.webhook_events() == []
    # Correctly signed but false: d払い still says CREATED, and the status call is what counts.
    lying = await world.http.post(f"{world.paymux}/v1/webhooks/dpayment", content=body, headers=signed(body))
    assert lying.status_code == 200
    await asyncio.sleep(0.3)
    assert (await world.intent(intent["id"]))["status"] == "requires_action"


async def test_a_replayed_webhook_is_acknowledged_and_recorded_once(world: DPayWorld) -> None:
    intent = await world.intent_for(1000)
    body = notification(intent["id"], nid="ntf-replayed")
    for _ in range(3):
        response = await world.http.post(
            f"{world.paymux}/v1/webhooks/dpayment", content=body, headers=signed(body)
        )
        assert response.status_code == 200
    async with world.container.db.reading() as session:
        count = (await session.execute(select(func.count()).select_from(ProviderWebhookEvent))).scalar_one()
    assert count == 1
    other = notification(intent["id"], nid="ntf-other")
    response = await world.http.post(
        f"{world.paymux}/v1/webhooks/dpayment", content=other, headers=signed(other)
    )
    assert response.status_code == 200
    assert sorted(event.dedupe_key for event in await world.webhook_events()) == ["ntf-other", "ntf-replayed"]


async def test_wrong_credentials_get_the_providers_401_and_fail_the_intent(world: DPayWorld) -> None:
    await configure_dpayment(
        world.container,
        world.tenant,
        world.sandbox_url,
        credentials={**CREDENTIALS, "api_secret": "wrong"},
    )
    intent = await world.intent_for(1000)
    assert intent["status"] == "failed"
    assert intent["failure_code"] == "provider_rejected"
    assert "UNAUTHORIZED" in intent["failure_message"]
    assert world.sandbox.payments == {}


async def test_a_store_without_base_url_fails_with_a_clear_message(world: DPayWorld) -> None:
    await configure_dpayment(world.container, world.tenant, None)
    intent = await world.intent_for(1000)
    assert intent["status"] == "failed"
    assert intent["failure_code"] == "provider_rejected"
    assert "set base_url" in intent["failure_message"]


async def test_a_provider_timeout_is_resolved_by_polling(world: DPayWorld, clock: FrozenClock) -> None:
    world.container.payments.provider_timeout = 1.0  # the sandbox holds 40091 for 3 s
    world.sandbox.webhooks.url = None  # and its notifications are lost: only polling can find out
    intent = await world.intent_for(40091)
    assert intent["status"] == "processing"
    assert intent["next_action"] is None
    assert await world.container.payments.check_due_payments() == 0  # not due yet
    clock.advance(timedelta(seconds=6))
    assert await world.container.payments.check_due_payments() == 1  # CREATED: it keeps waiting
    assert (await world.intent(intent["id"]))["status"] == "processing"
    await world.customer(intent["id"], "COMPLETED")  # paid through a code paymux never saw
    clock.advance(timedelta(seconds=11))
    assert await world.container.payments.check_due_payments() == 1
    paid = await world.intent(intent["id"])
    assert paid["status"] == "succeeded"
    assert paid["provider_transaction_id"] == world.sandbox.payments[intent["id"]].payment_id


async def test_an_unknown_status_leaves_the_intent_where_it_is(world: DPayWorld, clock: FrozenClock) -> None:
    world.sandbox.webhooks.url = None
    intent = await world.intent_for(1000)
    world.sandbox.payments[intent["id"]].status = "ON_HOLD"
    clock.advance(timedelta(seconds=6))
    assert await world.container.payments.check_due_payments() == 1
    assert (await world.intent(intent["id"]))["status"] == "requires_action"
    world.sandbox.payments[intent["id"]].status = "COMPLETED"  # d払い makes up its mind
    clock.advance(timedelta(seconds=11))
    assert await world.container.payments.check_due_payments() == 1
    assert (await world.intent(intent["id"]))["status"] == "succeeded"


async def test_refund_status_lookups(world: DPayWorld) -> None:
    intent = await world.intent_for(1000)
    await world.customer(intent["id"], "COMPLETED")
    await world.until(intent["id"], "succeeded")
    await check_refund_status_lookups(
        world.container, world.server, intent["id"], unknown_refund=ProviderRefundStatus.FAILED
    )
