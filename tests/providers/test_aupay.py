"""au PAY ("aupay v1", paymux-defined) end to end over real sockets: paymux <-> the au PAY sandbox, mounted at
/aupay as `paymux sandbox` mounts it, webhooks included."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from paymux.app import create_app
from paymux.config import Settings
from paymux.container import Container
from paymux.core.clock import FrozenClock, SystemClock
from paymux.providers.aupay import signing
from paymux.providers.aupay.adapter import AuPayProvider
from paymux.providers.aupay.sandbox import DEFAULTS, AuPaySandbox
from paymux.providers.base import (
    PaymentMethodType,
    PaymentReference,
    PaymentRequest,
    ProviderCredentials,
    ProviderRefundStatus,
    ProviderRejected,
)
from paymux.providers.sandbox_kit import SandboxTiming
from paymux.providers.testmode import BuiltinTestProvider
from paymux.tenants.schemas import ProviderConfigSync
from paymux.webhooks.models import ProviderWebhookEvent
from tests.conftest import empty_all_tables
from tests.live import serving
from tests.providers.refund_checks import check_refund_status_lookups
from tests.support import ServerClient, Tenant, bearer, bootstrap_tenant

CUSTOMER_CODE = "280012345678901234"
CREDENTIALS = {
    "api_key": DEFAULTS.api_key,
    "api_secret": DEFAULTS.api_secret,
    "merchant_id": DEFAULTS.merchant_id,
}


# ---------------------------------------------------------------------------------------------- signing


def test_request_signature_is_hmac_sha256_over_method_path_timestamp_nonce_and_body_hash() -> None:
    secret, body = "s3cr3t", b'{"amount":1200}'
    message = "\n".join(
        ("POST", "/v1/payment_codes?x=1", "1767225600", "n" * 16, hashlib.sha256(body).hexdigest())
    )
    expected = base64.b64encode(hmac.new(secret.encode(), message.encode(), hashlib.sha256).digest()).decode()
    signed = signing.signature(
        secret, method="post", path="/v1/payment_codes?x=1", timestamp=1767225600, nonce="n" * 16, body=body
    )
    assert signed == expected
    assert signing.verify(
        secret,
        expected,
        method="POST",
        path="/v1/payment_codes?x=1",
        timestamp="1767225600",
        nonce="n" * 16,
        body=body,
    )
    assert not signing.verify(
        secret,
        expected,
        method="POST",
        path="/v1/payment_codes",
        timestamp="1767225600",
        nonce="n" * 16,
        body=body,
    )
    # No body: the hash of zero bytes, e3b0c442... (SHA-256's well-known empty digest).
    empty = signing.string_to_sign(
        method="GET", path="/v1/charges/pi_1", timestamp=1, nonce="n" * 16, body=b""
    )
    assert empty.endswith("\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")


async def test_webhook_signature_is_base64_hmac_sha256_of_the_raw_body() -> None:
    body = b'{"id":"evt_1","type":"charge.paid","data":{}}'
    expected = base64.b64encode(hmac.new(b"whsec", body, hashlib.sha256).digest()).decode()
    assert signing.webhook_signature("whsec", body) == expected
    async with httpx.AsyncClient() as client:
        provider = AuPayProvider(client, FrozenClock(SystemClock().now()))
    assert provider.verify_notification(body, expected, "whsec")
    assert not provider.verify_notification(body + b" ", expected, "whsec")
    assert not provider.verify_notification(body, expected, "other")
    assert not provider.verify_notification(body, None, "whsec")
    assert not provider.verify_notification(body, "ünïcode", "whsec")


# ---------------------------------------------------------------------------------------------- the world


@pytest.fixture
async def app(settings: Settings, clock: FrozenClock) -> AsyncIterator[FastAPI]:
    """paymux with the au PAY adapter registered (the lead wires it into the default providers later)."""
    provider_http = httpx.AsyncClient(timeout=30)
    application = create_app(
        settings, clock=clock, providers=[BuiltinTestProvider(), AuPayProvider(provider_http, clock)]
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
        await provider_http.aclose()


@dataclass
class AuPayWorld:
    paymux: str
    sandbox: AuPaySandbox
    sandbox_url: str  # .../aupay, the base_url of the store's config
    server: ServerClient
    tenant: Tenant
    http: httpx.AsyncClient

    async def intent(self, intent_id: str) -> dict[str, Any]:
        result: dict[str, Any] = (await self.server.get(f"/v1/payment_intents/{intent_id}")).json()
        return result

    async def confirm(self, amount: int, method: str, **confirm_body: Any) -> dict[str, Any]:
        intent = await self.server.create_intent(self.tenant, amount=amount, payment_method_type=method)
        confirmed = await self.http.post(
            f"{self.paymux}/v1/payment_intents/{intent['id']}/confirm",
            headers=bearer(intent["payment_token"]),
            json=confirm_body or None,
        )
        assert confirmed.status_code == 200, confirmed.text
        result: dict[str, Any] = confirmed.json()
        return result

    async def qr_intent(self, amount: int = 1200) -> dict[str, Any]:
        return await self.confirm(amount, "qr_mpm")

    async def cpm_intent(self, amount: int = 1200) -> dict[str, Any]:
        return await self.confirm(amount, "qr_cpm", customer_code=CUSTOMER_CODE)

    async def customer(self, intent_id: str, outcome: str) -> None:
        response = await self.http.post(
            f"{self.sandbox_url}/_sandbox/payments/{intent_id}", json={"outcome": outcome}
        )
        assert response.status_code == 200, response.text

    async def until(self, intent_id: str, status: str) -> dict[str, Any]:
        for _ in range(200):
            intent = await self.intent(intent_id)
            if intent["status"] == status:
                return intent
            await asyncio.sleep(0.025)
        pytest.fail(f"{intent_id} never became {status}: {intent['status']}")

    async def webhook(self, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return await self.http.post(f"{self.paymux}/v1/webhooks/aupay", content=body, headers=headers)

    async def call_sandbox(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        signed_path: str | None = None,
        timestamp: int | None = None,
        nonce: str | None = None,
        secret: str = DEFAULTS.api_secret,
    ) -> httpx.Response:
        """A hand-made aupay v1 request, to check the sandbox's rules without the adapter."""
        raw = json.dumps(body).encode() if body is not None else b""
        headers = signing.request_headers(
            key_id=DEFAULTS.api_key,
            api_secret=secret,
            merchant_id=DEFAULTS.merchant_id,
            method=method,
            path=signed_path or path,
            timestamp=int(time.time()) if timestamp is None else timestamp,
            nonce=nonce or secrets.token_urlsafe(24),
            body=raw,
        )
        return await self.http.request(method, self.sandbox_url + path, content=raw or None, headers=headers)


async def configure_aupay(container: Container, tenant: Tenant, sandbox_url: str, **overrides: Any) -> None:
    config: dict[str, Any] = {
        "provider_code": "aupay",
        "credentials": CREDENTIALS,
        "base_url": sandbox_url,
        "webhook_secret": DEFAULTS.webhook_secret,
    }
    config.update(overrides)
    await container.tenants.configure_provider(tenant.store_id, ProviderConfigSync.model_validate(config))


@pytest.fixture
async def world(app: FastAPI, container: Container, clock: FrozenClock) -> AsyncIterator[AuPayWorld]:
    tenant = await bootstrap_tenant(
        container, partner="au", merchant="AU-M", store="AU-S", test_provider=False
    )
    async with serving(app) as paymux:
        sandbox = AuPaySandbox(
            DEFAULTS,
            webhook_url=f"{paymux}/v1/webhooks/aupay",
            timing=SandboxTiming(slow_seconds=0.2, timeout_seconds=3),
        )
        sandboxes = FastAPI()
        sandboxes.mount("/aupay", sandbox.app())  # as `paymux sandbox` serves it
        async with (
            serving(sandboxes) as sandboxes_url,
            httpx.AsyncClient(base_url=paymux, timeout=30) as http,
        ):
            sandbox_url = f"{sandboxes_url}/aupay"
            await configure_aupay(container, tenant, sandbox_url)
            server = ServerClient(http, tenant.client_id, tenant.client_secret, clock)
            yield AuPayWorld(paymux, sandbox, sandbox_url, server, tenant, http)
            await sandbox.webhooks.drain()


# ---------------------------------------------------------------------------------------------- qr_mpm


async def test_qr_payment_succeeds_through_webhook_and_status_check(world: AuPayWorld) -> None:
    intent = await world.qr_intent(1200)
    assert intent["status"] == "requires_action"
    assert intent["provider_name"] == "aupay"
    charge = world.sandbox.payments[intent["id"]]
    action = intent["next_action"]
    assert action["type"] == "display_qr_code"
    assert action["provider"] == "aupay"
    assert action["qr_payload"] == action["url"]
    assert action["qr_payload"].endswith(charge.payment_code_id)
    assert action["deeplink"].startswith("aupay-sandbox://")
    assert action["expires_at"].endswith("+00:00")
    assert charge.status == "pending"
    assert charge.kind == "payment_code"

    await world.customer(intent["id"], "COMPLETED")
    paid = await world.until(intent["id"], "succeeded")
    assert paid["provider_transaction_id"] == charge.id
    assert paid["provider_transaction_id"].startswith("ch_")
    assert paid["amount_captured"] == 1200
    assert paid["next_action"] is None
    events = (await world.server.get(f"/v1/events?object_id={intent['id']}&limit=10")).json()["data"]
    assert [event["type"] for event in reversed(events)] == [
        "payment_intent.created",
        "payment_intent.requires_action",
        "payment_intent.processing",
        "payment_intent.succeeded",
    ]


@pytest.mark.parametrize(
    ("outcome", "status", "code"),
    [
        ("FAILED", "failed", "payment_failed"),
        ("EXPIRED", "failed", "expired"),
        ("CANCELED", "cancelled", None),
    ],
)
async def test_customer_outcomes(world: AuPayWorld, outcome: str, status: str, code: str | None) -> None:
    intent = await world.qr_intent()
    await world.customer(intent["id"], outcome)
    settled = await world.until(intent["id"], status)
    assert settled["failure_code"] == code
    if code is not None:
        assert "au PAY reports the charge as" in settled["failure_message"]


async def test_magic_decline_fails_the_code_at_once(world: AuPayWorld) -> None:
    intent = await world.qr_intent(40002)
    settled = await world.until(intent["id"], "failed")  # no customer step: the notification tells paymux
    assert settled["failure_code"] == "payment_failed"
    assert "insufficient_balance" in settled["failure_message"]
    assert world.sandbox.payments[intent["id"]].status == "failed"


async def test_an_amount_over_au_pays_limit_is_refused(world: AuPayWorld) -> None:
    intent = await world.qr_intent(300_001)
    assert intent["status"] == "failed"
    assert intent["failure_code"] == "provider_rejected"
    assert "limit_exceeded" in intent["failure_message"]
    assert intent["id"] not in world.sandbox.payments


async def test_an_unknown_status_is_an_error_and_moves_nothing(
    world: AuPayWorld, container: Container
) -> None:
    intent = await world.qr_intent()
    world.sandbox.payments[intent["id"]].status = "on_hold"  # a status aupay v1 does not define
    checked = await container.payments.check_payment(intent["id"])
    assert checked is not None
    assert checked.status == "requires_action"
    world.sandbox.payments[intent["id"]].status = "paid"
    checked = await container.payments.check_payment(intent["id"])
    assert checked is not None
    assert checked.status == "succeeded"


# ---------------------------------------------------------------------------------------------- qr_cpm


async def test_customer_presented_code_is_charged_at_once(world: AuPayWorld) -> None:
    intent = await world.cpm_intent(2500)
    assert intent["status"] == "succeeded"
    charge = world.sandbox.payments[intent["id"]]
    assert charge.kind == "charge"
    assert charge.status == "paid"
    assert intent["provider_transaction_id"] == charge.id
    assert intent["amount_captured"] == 2500


async def test_customer_presented_decline(world: AuPayWorld) -> None:
    intent = await world.cpm_intent(40002)
    assert intent["status"] == "failed"
    assert intent["failure_code"] == "payment_failed"
    assert "insufficient_balance" in intent["failure_message"]
    assert world.sandbox.payments[intent["id"]].failure_code == "insufficient_balance"


async def test_the_adapter_refuses_what_it_cannot_send(world: AuPayWorld) -> None:
    provider = AuPayProvider(world.http, FrozenClock(SystemClock().now()))
    request = PaymentRequest("pi_x", 100, "JPY", PaymentMethodType.QR_CPM)
    with pytest.raises(ProviderRejected, match="customer's scanned code"):
        await provider.create_payment(ProviderCredentials(CREDENTIALS, world.sandbox_url), request)
    with pytest.raises(ProviderRejected, match="set base_url"):
        await provider.get_payment_status(
            ProviderCredentials(CREDENTIALS), PaymentReference("pi_x", None, 100, "JPY")
        )
    with pytest.raises(ProviderRejected, match="lack api_secret"):
        await provider.get_payment_status(
            ProviderCredentials({"api_key": "k", "merchant_id": "m"}, world.sandbox_url),
            PaymentReference("pi_x", None, 100, "JPY"),
        )
    with pytest.raises(ProviderRejected, match="not a valid merchant id"):
        await provider.get_payment_status(
            ProviderCredentials(CREDENTIALS, world.sandbox_url), PaymentReference("pi/../x", None, 100, "JPY")
        )
    assert world.sandbox.payments == {}


# ---------------------------------------------------------------------------------------------- cancel, refund


async def test_cancel_stops_the_code_at_au_pay(world: AuPayWorld) -> None:
    intent = await world.qr_intent()
    cancelled = await world.server.post(
        f"/v1/payment_intents/{intent['id']}/cancel", {"cancellation_reason": "customer left"}
    )
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert world.sandbox.payments[intent["id"]].status == "canceled"
    late = await world.http.post(
        f"{world.sandbox_url}/_sandbox/payments/{intent['id']}", json={"outcome": "COMPLETED"}
    )
    assert late.status_code == 409  # the code is stopped: nobody can pay it any more
    again = await world.call_sandbox("POST", f"/v1/charges/{intent['id']}/cancel")
    assert again.status_code == 200  # cancel is idempotent
    assert again.json()["status"] == "canceled"


async def test_cancel_after_the_89th_day_is_refused(world: AuPayWorld) -> None:
    intent = await world.qr_intent()
    world.sandbox.payments[intent["id"]].created_at -= 90 * 86_400
    world.sandbox.payments[intent["id"]].expires_at = None
    refused = await world.server.post(f"/v1/payment_intents/{intent['id']}/cancel")
    assert refused.status_code == 502, refused.text
    assert "period_expired" in refused.json()["detail"]
    assert (await world.intent(intent["id"]))["status"] == "requires_action"
    assert world.sandbox.payments[intent["id"]].status == "pending"


async def test_full_and_partial_refunds_go_through_au_pay(world: AuPayWorld) -> None:
    intent = await world.qr_intent(1000)
    await world.customer(intent["id"], "COMPLETED")
    await world.until(intent["id"], "succeeded")
    partial = await world.server.post(f"/v1/payment_intents/{intent['id']}/refund", {"amount": 300})
    assert partial.status_code == 201, partial.text
    assert partial.json()["status"] == "succeeded"
    rest = await world.server.post(f"/v1/payment_intents/{intent['id']}/refund")
    assert rest.json()["status"] == "succeeded"
    assert rest.json()["amount"] == 700
    charge = world.sandbox.payments[intent["id"]]
    assert [refund.amount for refund in charge.refunds] == [300, 700]
    assert [refund.merchant_refund_id for refund in charge.refunds] == [
        partial.json()["id"],
        rest.json()["id"],
    ]
    assert charge.amount_refunded == 1000
    assert charge.status == "paid"  # refunds do not change the charge's status
    assert (await world.intent(intent["id"]))["amount_refunded"] == 1000
    transactions = (await world.server.get(f"/v1/payment_intents/{intent['id']}/transactions")).json()["data"]
    refund_ids = {t["provider_transaction_id"] for t in transactions if t["type"] == "refund"}
    assert refund_ids == {refund.id for refund in charge.refunds}


async def test_a_refund_au_pay_refuses_fails(world: AuPayWorld) -> None:
    intent = await world.cpm_intent(800)
    charge = world.sandbox.payments[intent["id"]]
    assert charge.paid_at is not None
    charge.paid_at -= 91 * 86_400
    refund = await world.server.post(f"/v1/payment_intents/{intent['id']}/refund", {"amount": 100})
    assert refund.json()["status"] == "failed", refund.text
    assert "period_expired" in refund.json()["failure_message"]
    assert (await world.intent(intent["id"]))["amount_refunded"] == 0


# ---------------------------------------------------------------------------------------------- webhooks


def notification(intent_id: str, event_type: str = "charge.paid", event_id: str = "evt_1") -> bytes:
    return json.dumps(
        {
            "id": event_id,
            "type": event_type,
            "created_at": "2026-01-28T20:00:00+09:00",
            "data": {"id": "ch_forged", "merchant_order_id": intent_id, "status": "paid"},
        },
        separators=(",", ":"),
    ).encode()


def signed(body: bytes, secret: str = DEFAULTS.webhook_secret or "") -> dict[str, str]:
    return {
        "X-AuPay-Signature": base64.b64encode(
            hmac.new(secret.encode(), body, hashlib.sha256).digest()
        ).decode()
    }


async def test_forged_webhooks_are_refused_and_change_nothing(world: AuPayWorld) -> None:
    intent = await world.qr_intent()
    body = notification(intent["id"])
    for headers in ({}, signed(body, "not-the-secret"), {"X-AuPay-Signature": "garbage"}):
        refused = await world.webhook(body, headers)
        assert refused.status_code == 401
        assert refused.json()["code"] == "invalid_webhook_signature"
    assert (await world.intent(intent["id"]))["status"] == "requires_action"
    # Correctly signed but false: au PAY still says pending, and the status call is what counts.
    lying = await world.webhook(body, signed(body))
    assert lying.status_code == 200
    await asyncio.sleep(0.3)
    assert (await world.intent(intent["id"]))["status"] == "requires_action"


async def test_a_replayed_webhook_is_acknowledged_and_recorded_once(
    world: AuPayWorld, container: Container
) -> None:
    world.sandbox.webhooks.url = None  # only the notifications this test sends
    intent = await world.qr_intent()

    async def recorded() -> int:
        async with container.db.reading() as session:
            statement = select(func.count()).select_from(ProviderWebhookEvent)
            return int((await session.execute(statement)).scalar_one())

    body = notification(intent["id"], event_id="evt_replayed")
    for _ in range(3):
        response = await world.webhook(body, signed(body))
        assert response.status_code == 200
        assert response.text == "OK"
    assert await recorded() == 1
    other = notification(intent["id"], event_id="evt_another")  # the event id is the dedupe key
    assert (await world.webhook(other, signed(other))).status_code == 200
    assert await recorded() == 2


async def test_unknown_event_types_are_acknowledged_and_malformed_bodies_refused(world: AuPayWorld) -> None:
    intent = await world.qr_intent()
    future = notification(intent["id"], event_type="charge.disputed")
    assert (await world.webhook(future, signed(future))).status_code == 200
    for body in (
        b"not json",
        b'{"type":"charge.paid"}',
        json.dumps({"id": "evt_1", "type": "charge.paid", "data": {}}).encode(),
    ):
        refused = await world.webhook(body, signed(body))
        assert refused.status_code == 400, body
        assert refused.json()["code"] == "malformed_notification"


async def test_the_sandbox_notifies_refunds_and_paymux_records_them(
    world: AuPayWorld, container: Container
) -> None:
    intent = await world.cpm_intent(600)
    refund = await world.server.post(f"/v1/payment_intents/{intent['id']}/refund", {"amount": 600})
    assert refund.json()["status"] == "succeeded"
    await world.sandbox.webhooks.drain()
    async with container.db.reading() as session:
        bodies = list(
            (
                await session.execute(
                    select(ProviderWebhookEvent.body).where(
                        ProviderWebhookEvent.payment_intent_id == intent["id"]
                    )
                )
            ).scalars()
        )
    assert sorted(json.loads(body)["type"] for body in bodies) == ["charge.paid", "refund.succeeded"]


# ---------------------------------------------------------------------------------------------- auth, failures


async def test_wrong_credentials_get_au_pays_401_and_fail_the_intent(
    world: AuPayWorld, container: Container
) -> None:
    await configure_aupay(
        container, world.tenant, world.sandbox_url, credentials={**CREDENTIALS, "api_secret": "wrong"}
    )
    intent = await world.qr_intent()
    assert intent["status"] == "failed"
    assert intent["failure_code"] == "provider_rejected"
    assert "authentication_failed" in intent["failure_message"]
    assert intent["id"] not in world.sandbox.payments


async def test_the_sandbox_checks_every_part_of_the_signature(world: AuPayWorld) -> None:
    path = "/v1/charges/pi_missing"
    found = await world.call_sandbox("GET", path)
    assert found.status_code == 404  # authenticated: the order simply does not exist
    assert found.json() == {"error": {"code": "order_not_found", "message": "no charge pi_missing"}}

    nonce = secrets.token_urlsafe(24)
    assert (await world.call_sandbox("GET", path, nonce=nonce)).status_code == 404
    cases = {
        "a replayed nonce": await world.call_sandbox("GET", path, nonce=nonce),
        "a stale timestamp": await world.call_sandbox("GET", path, timestamp=int(time.time()) - 125),
        "a short nonce": await world.call_sandbox("GET", path, nonce="short"),
        "the wrong secret": await world.call_sandbox("GET", path, secret="wrong"),
        "the mount prefix signed": await world.call_sandbox("GET", path, signed_path="/aupay" + path),
        "another query": await world.call_sandbox("GET", path + "?expand=refunds", signed_path=path),
    }
    for case, response in cases.items():
        assert response.status_code == 401, case
        assert response.json()["error"]["code"] == "authentication_failed", case
    unsigned = await world.http.get(world.sandbox_url + path)
    assert unsigned.status_code == 401


async def test_the_sandbox_answers_repeats_with_the_original_and_conflicts_with_409(
    world: AuPayWorld,
) -> None:
    world.sandbox.webhooks.url = None  # these orders are not paymux's
    body = {"merchant_order_id": "order-1", "amount": 500, "currency": "JPY", "customer_code": CUSTOMER_CODE}
    first = await world.call_sandbox("POST", "/v1/charges", body)
    assert first.status_code == 201, first.text
    repeat = await world.call_sandbox("POST", "/v1/charges", body)
    assert repeat.status_code == 200
    assert repeat.json() == first.json()
    conflict = await world.call_sandbox("POST", "/v1/charges", {**body, "amount": 501})
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "duplicate_order_id"

    refund = {"merchant_refund_id": "refund-1", "amount": 200}
    made = await world.call_sandbox("POST", "/v1/charges/order-1/refunds", refund)
    assert made.status_code == 201
    assert made.json()["id"].startswith("re_")
    assert (await world.call_sandbox("POST", "/v1/charges/order-1/refunds", refund)).json() == made.json()
    other = await world.call_sandbox("POST", "/v1/charges/order-1/refunds", {**refund, "amount": 100})
    assert other.json()["error"]["code"] == "duplicate_order_id"
    too_much = await world.call_sandbox(
        "POST", "/v1/charges/order-1/refunds", {"merchant_refund_id": "refund-2", "amount": 301}
    )
    assert too_much.status_code == 422
    assert too_much.json()["error"]["code"] == "refund_amount_exceeded"
    assert world.sandbox.payments["order-1"].amount_refunded == 200

    for invalid in (
        {**body, "merchant_order_id": "x" * 41},
        {**body, "currency": "USD"},
        {**body, "amount": 0},
    ):
        refused = await world.call_sandbox("POST", "/v1/charges", invalid)
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "invalid_parameter"


async def test_a_provider_timeout_is_resolved_by_polling(
    world: AuPayWorld, container: Container, clock: FrozenClock
) -> None:
    container.payments.provider_timeout = 1.0  # the sandbox holds 40091 for 3 s
    world.sandbox.webhooks.url = None  # and its notifications are lost: only polling can find out
    intent = await world.qr_intent(40091)
    assert intent["status"] == "processing"
    assert intent["next_action"] is None
    assert await container.payments.check_due_payments() == 0  # not due yet
    clock.advance(timedelta(seconds=6))
    assert await container.payments.check_due_payments() == 1  # au PAY: pending, so it keeps waiting
    assert (await world.intent(intent["id"]))["status"] == "processing"
    await world.customer(intent["id"], "COMPLETED")  # paid through a code paymux never saw
    clock.advance(timedelta(seconds=11))
    assert await container.payments.check_due_payments() == 1
    paid = await world.intent(intent["id"])
    assert paid["status"] == "succeeded"
    assert paid["provider_transaction_id"] == world.sandbox.payments[intent["id"]].id


async def test_a_customer_presented_charge_that_timed_out_is_found_paid(
    world: AuPayWorld, container: Container, clock: FrozenClock
) -> None:
    container.payments.provider_timeout = 1.0
    world.sandbox.webhooks.url = None
    intent = await world.cpm_intent(40091)
    assert intent["status"] == "processing"
    assert world.sandbox.payments[intent["id"]].status == "paid"  # au PAY charged before it answered
    clock.advance(timedelta(seconds=6))
    assert await container.payments.check_due_payments() == 1
    assert (await world.intent(intent["id"]))["status"] == "succeeded"


async def test_a_slow_answer_still_succeeds(world: AuPayWorld) -> None:
    started = time.monotonic()
    intent = await world.qr_intent(40092)
    assert time.monotonic() - started >= 0.2
    assert intent["status"] == "requires_action"


async def test_refund_status_lookups(world: AuPayWorld, container: Container) -> None:
    intent = await world.qr_intent(1000)
    await world.customer(intent["id"], "COMPLETED")
    await world.until(intent["id"], "succeeded")
    # aupay v1 refunds are idempotent by merchant_refund_id: asking about one it never got makes it.
    await check_refund_status_lookups(
        container, world.server, intent["id"], unknown_refund=ProviderRefundStatus.SUCCEEDED
    )
