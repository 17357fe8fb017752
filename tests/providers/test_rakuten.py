"""Rakuten Pay (LITE + paymux's QR extension) end to end over real sockets: paymux <-> the Rakuten Pay sandbox."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse
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
)
from paymux.providers.http import provider_client
from paymux.providers.rakuten import signing, wire
from paymux.providers.rakuten.adapter import REMAINDER_ITEM_ID, RakutenPayProvider
from paymux.providers.rakuten.sandbox import DEFAULTS, LITE_WEBHOOK_SIGNATURE, RakutenPaySandbox
from paymux.providers.sandbox_kit import SandboxTiming
from paymux.providers.testmode import BuiltinTestProvider
from paymux.tenants.schemas import ProviderConfigSync
from paymux.webhooks.models import ProviderWebhookEvent
from tests.conftest import empty_all_tables
from tests.live import serving
from tests.providers.refund_checks import check_refund_status_lookups
from tests.support import ServerClient, Tenant, bearer, bootstrap_tenant

WRONG_KEY_BODY = {
    "errors": [
        {"type": "authentication_error", "code": "invalid_api_key", "message": "Invalid API key provided."}
    ]
}

# ---------------------------------------------------------------------- signatures and mapping


def test_requests_authenticate_with_the_secret_key_and_an_empty_password() -> None:
    secret = "sandbox_private_0123456789abcdef"
    expected = "Basic " + base64.b64encode(b"sandbox_private_0123456789abcdef:").decode()
    assert signing.authorization(secret) == expected
    assert signing.parse_authorization(expected) == (secret, "")
    assert signing.parse_authorization("Basic !!!") is None
    assert signing.parse_authorization("Bearer " + expected[6:]) is None
    # As LITE's SDK: sandbox keys talk to /sandbox/v1, live and test keys to /v1.
    assert signing.api_base(secret) == "/sandbox/v1"
    assert signing.api_base("live_private_0123") == "/v1"
    assert signing.api_base("test_private_0123") == "/v1"


def test_notification_signature_is_base64_hmac_sha256_of_the_raw_body() -> None:
    secret, body = "whsec-test", b'{"object":"event","id":"evt_1"}'
    expected = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
    assert signing.notification_signature(secret, body) == expected
    assert signing.verify_notification(secret, body, expected)
    assert not signing.verify_notification(secret, body + b" ", expected)
    assert not signing.verify_notification("other", body, expected)
    assert not signing.verify_notification(secret, body, None)
    assert not signing.verify_notification(secret, body, "ÿ" + expected)  # non-ASCII: no match, no error


def charge_json(*, paid: bool, captured: bool, refunded: bool, **overrides: Any) -> dict[str, Any]:
    charge: dict[str, Any] = {
        "object": "charge",
        "id": "1250000255-20150623-0000168715",
        "livemode": False,
        "currency": "jpy",
        "amount": 5000,
        "point": 0,
        "cart_id": "cart_id1",
        "paid": paid,
        "captured": captured,
        "status": "succeeded",
        "refunded": refunded,
        "items": [],
        "created": 1433862000,
        "updated": 1433948400,
    }
    charge.update(overrides)
    return charge


@pytest.mark.parametrize(
    ("paid", "captured", "refunded", "state"),
    [
        (True, False, False, wire.ChargeState.AUTHORIZED),
        (True, True, False, wire.ChargeState.CAPTURED),
        (False, False, True, wire.ChargeState.CANCELLED),  # LITE's cancelled charge (its SDK's example)
        (True, True, True, wire.ChargeState.CANCELLED),
        (True, False, True, wire.ChargeState.CANCELLED),
        (False, True, True, wire.ChargeState.CANCELLED),
        (False, False, False, wire.ChargeState.UNPAID),
    ],
)
def test_every_charge_state_is_named(
    paid: bool, captured: bool, refunded: bool, state: wire.ChargeState
) -> None:
    charge = wire.parse_charge(charge_json(paid=paid, captured=captured, refunded=refunded))
    assert charge.state is state
    assert charge.currency == "JPY"  # LITE writes "jpy"


def test_impossible_or_unknown_states_are_protocol_errors() -> None:
    with pytest.raises(ProviderProtocolError, match="captured but not paid"):
        _ = wire.parse_charge(charge_json(paid=False, captured=True, refunded=False)).state
    with pytest.raises(ProviderProtocolError, match="unknown charge status"):
        wire.parse_charge(charge_json(paid=True, captured=True, refunded=False, status="pending"))
    with pytest.raises(ProviderProtocolError, match="amount"):
        wire.parse_charge(charge_json(paid=True, captured=True, refunded=False, amount=True))
    with pytest.raises(ProviderProtocolError, match="unknown code status"):
        wire.code_payment_status("authorized")
    assert [wire.code_payment_status(status) for status in wire.CODE_STATUSES] == [
        ProviderPaymentStatus.REQUIRES_ACTION,
        ProviderPaymentStatus.PROCESSING,
        ProviderPaymentStatus.FAILED,
        ProviderPaymentStatus.FAILED,
        ProviderPaymentStatus.CANCELLED,
    ]


async def test_notifications_name_the_cart_and_dedupe_on_the_event_id() -> None:
    async with httpx.AsyncClient() as http:
        provider = RakutenPayProvider(http, FrozenClock())
    event = {
        "object": "event",
        "id": "evt_ace3a9e65ad548a8b5c8de7965efa160",
        "livemode": False,
        "type": "charge.succeeded",
        "synchronous": False,
        "data": {"object": charge_json(paid=True, captured=False, refunded=False, cart_id="pi_1")},
        "pending_webhooks": 1,
        "created": 1433862000,
    }
    notification = provider.parse_notification(json.dumps(event).encode())
    assert notification is not None
    assert (notification.payment_intent_id, notification.dedupe_key) == ("pi_1", event["id"])
    assert notification.provider_status == "charge.succeeded"
    ping = {"object": "event", "id": "evt_0a28", "type": "ping", "data": None}
    assert provider.parse_notification(json.dumps(ping).encode()) is None


# ---------------------------------------------------------------------- the world: paymux + the sandbox


@pytest.fixture
async def app(settings: Settings, clock: FrozenClock) -> AsyncIterator[FastAPI]:
    """paymux with the Rakuten Pay adapter registered (the shared registry does not list it yet)."""
    provider_http = provider_client(settings.provider_timeout_seconds)
    application = create_app(
        settings, clock=clock, providers=[BuiltinTestProvider(), RakutenPayProvider(provider_http, clock)]
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
class RakutenWorld:
    paymux: str
    sandbox: RakutenPaySandbox
    sandbox_url: str
    server: ServerClient
    tenant: Tenant
    http: httpx.AsyncClient

    async def qr_intent(self, amount: int = 1200) -> dict[str, Any]:
        intent = await self.server.create_intent(self.tenant, amount=amount, payment_method_type="qr_mpm")
        confirmed = await self.http.post(
            f"{self.paymux}/v1/payment_intents/{intent['id']}/confirm",
            headers=bearer(intent["payment_token"]),
        )
        assert confirmed.status_code == 200, confirmed.text
        result: dict[str, Any] = confirmed.json()
        return result

    async def customer(self, intent_id: str, outcome: str) -> dict[str, Any]:
        response = await self.http.post(
            f"{self.sandbox_url}/_sandbox/payments/{intent_id}", json={"outcome": outcome}
        )
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

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

    async def webhook(self, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return await self.http.post(f"{self.paymux}/v1/webhooks/rakuten", content=body, headers=headers)


async def configure_rakuten(container: Container, tenant: Tenant, sandbox_url: str, **overrides: Any) -> None:
    config: dict[str, Any] = {
        "provider_code": "rakuten",
        "credentials": {
            "api_key": DEFAULTS.api_key,
            "api_secret": DEFAULTS.api_secret,
            "merchant_id": DEFAULTS.merchant_id,
        },
        "base_url": sandbox_url,
        "webhook_secret": DEFAULTS.webhook_secret,
    }
    config.update(overrides)
    await container.tenants.configure_provider(tenant.store_id, ProviderConfigSync.model_validate(config))


@pytest.fixture
async def world(app: FastAPI, container: Container, clock: FrozenClock) -> AsyncIterator[RakutenWorld]:
    tenant = await bootstrap_tenant(
        container, partner="rakuten", merchant="RK-M", store="RK-S", test_provider=False
    )
    async with serving(app) as paymux:
        sandbox = RakutenPaySandbox(
            DEFAULTS,
            webhook_url=f"{paymux}/v1/webhooks/rakuten",
            timing=SandboxTiming(slow_seconds=0.2, timeout_seconds=3),
        )
        async with (
            serving(sandbox.app()) as sandbox_url,
            httpx.AsyncClient(base_url=paymux, timeout=30) as http,
        ):
            await configure_rakuten(container, tenant, sandbox_url)
            server = ServerClient(http, tenant.client_id, tenant.client_secret, clock)
            yield RakutenWorld(paymux, sandbox, sandbox_url, server, tenant, http)
            await sandbox.webhooks.drain()


def event(intent_id: str, kind: str = "charge.succeeded", event_id: str = "evt_" + "a" * 32) -> bytes:
    return json.dumps(
        {
            "object": "event",
            "id": event_id,
            "livemode": False,
            "type": kind,
            "synchronous": False,
            "data": {"object": charge_json(paid=True, captured=False, refunded=False, cart_id=intent_id)},
            "pending_webhooks": 1,
            "created": 1433862000,
        },
        separators=(",", ":"),
    ).encode()


def signed(body: bytes, secret: str = DEFAULTS.webhook_secret or "") -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return {"X-Rakuten-Signature": base64.b64encode(digest).decode()}


# ---------------------------------------------------------------------- payments


async def test_a_paid_code_is_captured_and_succeeds(world: RakutenWorld) -> None:
    intent = await world.qr_intent(1200)
    assert intent["status"] == "requires_action"
    assert intent["provider_name"] == "rakuten"
    action = intent["next_action"]
    assert action["type"] == "display_qr_code"
    assert action["provider"] == "rakuten"
    assert action["qr_payload"] == action["url"]
    code = world.sandbox.payments[intent["id"]].code
    assert action["url"] == code.url
    assert action["expires_at"] is not None
    assert code.status == "pending"

    paid = await world.customer(intent["id"], "COMPLETED")
    assert paid["charge"]["paid"] is True
    assert paid["charge"]["captured"] is False  # LITE authorises; the merchant captures
    succeeded = await world.until(intent["id"], "succeeded")
    charge = world.sandbox.payments[intent["id"]].charge
    assert charge is not None
    assert charge.captured is True  # paymux captured it
    assert succeeded["provider_transaction_id"] == charge.id
    assert re.fullmatch(r"\d{10}-\d{8}-\d{10}", charge.id)
    assert succeeded["amount_captured"] == 1200
    assert succeeded["next_action"] is None
    assert [event["type"] for event in world.sandbox.events] == ["charge.succeeded", "charge.captured"]


@pytest.mark.parametrize(
    ("outcome", "status", "code", "rakuten_code"),
    [
        ("FAILED", "failed", "payment_failed", "payment_failed"),
        ("EXPIRED", "failed", "expired", "expired"),
        ("CANCELED", "cancelled", None, None),
    ],
)
async def test_customer_outcomes(
    world: RakutenWorld, outcome: str, status: str, code: str | None, rakuten_code: str | None
) -> None:
    intent = await world.qr_intent()
    await world.customer(intent["id"], outcome)
    settled = await world.until(intent["id"], status)
    assert settled["failure_code"] == code
    if rakuten_code is not None:
        assert rakuten_code in settled["failure_message"]
    assert world.sandbox.payments[intent["id"]].charge is None


async def test_magic_amount_40002_is_declined(world: RakutenWorld) -> None:
    intent = await world.qr_intent(40002)
    await world.customer(intent["id"], "COMPLETED")
    failed = await world.until(intent["id"], "failed")
    assert failed["failure_code"] == "payment_failed"
    assert "card_declined" in failed["failure_message"]
    assert world.sandbox.payments[intent["id"]].charge is None
    assert [event["type"] for event in world.sandbox.events] == ["code.failed"]


async def test_magic_amount_40003_is_refused_at_capture(world: RakutenWorld) -> None:
    intent = await world.qr_intent(40003)
    await world.customer(intent["id"], "COMPLETED")
    failed = await world.until(intent["id"], "failed")
    assert failed["failure_code"] == "payment_failed"
    assert "402 payment_error/capture_declined" in failed["failure_message"]
    charge = world.sandbox.payments[intent["id"]].charge
    assert charge is not None
    assert (charge.captured, charge.refunded) == (False, True)


async def test_magic_amount_40092_answers_slowly_but_in_time(world: RakutenWorld) -> None:
    intent = await world.qr_intent(40092)
    assert intent["status"] == "requires_action"


async def test_cancel_cancels_the_code(world: RakutenWorld) -> None:
    intent = await world.qr_intent()
    cancelled = await world.server.post(
        f"/v1/payment_intents/{intent['id']}/cancel", {"cancellation_reason": "customer left"}
    )
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert world.sandbox.payments[intent["id"]].code.status == "canceled"
    late = await world.http.post(
        f"{world.sandbox_url}/_sandbox/payments/{intent['id']}", json={"outcome": "COMPLETED"}
    )
    assert late.status_code == 409  # nobody can pay the code any more


async def test_cancel_also_cancels_a_charge_made_in_the_meantime(world: RakutenWorld) -> None:
    world.sandbox.webhooks.url = None  # paymux has not heard of the payment yet
    intent = await world.qr_intent()
    await world.customer(intent["id"], "COMPLETED")
    cancelled = await world.server.post(f"/v1/payment_intents/{intent['id']}/cancel")
    assert cancelled.json()["status"] == "cancelled", cancelled.text
    charge = world.sandbox.payments[intent["id"]].charge
    assert charge is not None
    assert (charge.refunded, charge.captured) == (True, False)  # LITE's cancel: never sold


async def test_a_cancel_never_hides_a_captured_charge(world: RakutenWorld, container: Container) -> None:
    world.sandbox.webhooks.url = None
    intent = await world.qr_intent()
    charge_id = (await world.customer(intent["id"], "COMPLETED"))["charge"]["id"]
    # A status check captured it and has not recorded the success yet, when the merchant cancels.
    async with httpx.AsyncClient(base_url=world.sandbox_url) as client:
        captured = await client.post(
            f"/sandbox/v1/charges/{charge_id}/capture",
            headers={"Authorization": signing.authorization(DEFAULTS.api_secret)},
        )
        assert captured.status_code == 200, captured.text
    refused = await world.server.post(f"/v1/payment_intents/{intent['id']}/cancel")
    assert refused.status_code == 502
    assert "already captured" in refused.json()["detail"]
    charge = world.sandbox.payments[intent["id"]].charge
    assert charge is not None
    assert charge.refunded is False  # the money was not silently given back
    await container.payments.check_payment(intent["id"])
    assert (await world.intent(intent["id"]))["status"] == "succeeded"


async def test_full_and_partial_refunds_go_through_rakuten(world: RakutenWorld) -> None:
    intent = await world.qr_intent(1000)
    await world.customer(intent["id"], "COMPLETED")
    paid = await world.until(intent["id"], "succeeded")
    partial = await world.server.post(f"/v1/payment_intents/{intent['id']}/refund", {"amount": 300})
    assert partial.status_code == 201, partial.text
    assert partial.json()["status"] == "succeeded"
    charge = world.sandbox.payments[intent["id"]].charge
    assert charge is not None
    # LITE's amount change: one item priced at what is left.
    assert charge.amount == 700
    assert charge.items == [
        {"id": REMAINDER_ITEM_ID, "name": "Remaining amount after refunds", "quantity": 1, "unit_price": 700}
    ]
    assert charge.refunded is False
    rest = await world.server.post(f"/v1/payment_intents/{intent['id']}/refund")
    assert rest.json()["status"] == "succeeded", rest.text
    assert rest.json()["amount"] == 700
    assert charge.amount_changes == [700]
    assert charge.refunded is True
    after = await world.intent(intent["id"])
    assert after["amount_refunded"] == 1000
    assert after["provider_transaction_id"] == paid["provider_transaction_id"]
    too_much = await world.server.post(f"/v1/payment_intents/{intent['id']}/refund", {"amount": 1})
    assert too_much.status_code == 409  # nothing left: paymux refuses before asking Rakuten


# ---------------------------------------------------------------------- webhooks


async def test_forged_webhooks_are_refused_and_change_nothing(world: RakutenWorld) -> None:
    intent = await world.qr_intent()
    body = event(intent["id"])
    for headers in (
        {},
        signed(body, "not-the-secret"),
        {"X-Rakuten-Signature": "garbage"},
        {"X-Lite-Webhook-Signature": LITE_WEBHOOK_SIGNATURE},  # LITE's static value proves nothing here
    ):
        refused = await world.webhook(body, headers)
        assert refused.status_code == 401
        assert refused.json()["code"] == "invalid_webhook_signature"
    # Correctly signed but false: Rakuten has no charge for the cart, and the status call is what counts.
    lying = await world.webhook(body, signed(body))
    assert lying.status_code == 200
    await asyncio.sleep(0.3)
    assert (await world.intent(intent["id"]))["status"] == "requires_action"
    assert world.sandbox.payments[intent["id"]].code.status == "pending"


async def test_a_replayed_webhook_is_acknowledged_and_recorded_once(
    world: RakutenWorld, container: Container
) -> None:
    intent = await world.qr_intent()
    body = event(intent["id"], "code.expired")
    for _ in range(3):
        response = await world.webhook(body, signed(body))
        assert response.status_code == 200
        assert response.text == "OK"
    async with container.db.reading() as session:
        count = (await session.execute(select(func.count()).select_from(ProviderWebhookEvent))).scalar_one()
    assert count == 1


async def test_the_sandbox_signs_its_events_both_ways(world: RakutenWorld) -> None:
    received: list[tuple[bytes, dict[str, str]]] = []
    receiver = FastAPI()

    @receiver.post("/hook")
    async def hook(request: Request) -> PlainTextResponse:
        received.append((await request.body(), dict(request.headers)))
        return PlainTextResponse("OK")

    async with serving(receiver) as receiver_url:
        intent = await world.qr_intent()
        world.sandbox.webhooks.url = f"{receiver_url}/hook"
        await world.customer(intent["id"], "COMPLETED")
        await world.sandbox.webhooks.drain()
    assert len(received) == 1
    body, headers = received[0]
    assert headers["x-rakuten-signature"] == signed(body)["X-Rakuten-Signature"]
    assert headers["x-lite-webhook-signature"] == LITE_WEBHOOK_SIGNATURE
    payload = json.loads(body)
    assert payload["object"] == "event"
    assert re.fullmatch(r"evt_[0-9a-f]{32}", payload["id"])
    assert payload["type"] == "charge.succeeded"
    assert payload["data"]["object"]["cart_id"] == intent["id"]
    assert payload["data"]["object"]["currency"] == "jpy"


# ---------------------------------------------------------------------- credentials, prefixes, timeouts


async def test_wrong_secret_key_gets_rakutens_401_and_fails_the_intent(
    world: RakutenWorld, container: Container
) -> None:
    await configure_rakuten(
        container,
        world.tenant,
        world.sandbox_url,
        credentials={
            "api_key": DEFAULTS.api_key,
            "api_secret": "sandbox_private_wrong",
            "merchant_id": DEFAULTS.merchant_id,
        },
    )
    intent = await world.qr_intent()
    assert intent["status"] == "failed"
    assert intent["failure_code"] == "provider_rejected"
    assert "invalid_api_key" in intent["failure_message"]
    assert intent["id"] not in world.sandbox.payments


async def test_the_sandbox_checks_basic_auth_and_the_environment(world: RakutenWorld) -> None:
    async with httpx.AsyncClient(base_url=world.sandbox_url) as client:
        good = {"Authorization": signing.authorization(DEFAULTS.api_secret)}
        listed = await client.get("/sandbox/v1/charges", headers=good)
        assert listed.status_code == 200
        assert listed.json()["object"] == "list"
        assert listed.json()["data"] == []
        for path, headers in (
            ("/sandbox/v1/charges", {"Authorization": signing.authorization("sandbox_private_wrong")}),
            ("/sandbox/v1/charges", {}),
            ("/sandbox/v1/charges", {"Authorization": "Basic " + base64.b64encode(b"x").decode()}),
            ("/v1/charges", good),  # a sandbox key is unknown to the live environment
        ):
            refused = await client.get(path, headers=headers)
            assert refused.status_code == 401
            assert refused.json() == WRONG_KEY_BODY
        missing = await client.get("/sandbox/v1/charges/nothing", headers=good)
        assert missing.status_code == 404
        assert missing.json()["errors"][0]["type"] == "invalid_request_error"


async def test_live_and_test_keys_use_v1(clock: FrozenClock) -> None:
    credentials = replace(DEFAULTS, api_secret="test_private_paymux_demo")
    sandbox = RakutenPaySandbox(credentials)
    async with serving(sandbox.app()) as sandbox_url, httpx.AsyncClient() as http:
        provider = RakutenPayProvider(http, clock)
        created = await provider.create_payment(
            ProviderCredentials({"api_secret": credentials.api_secret}, base_url=sandbox_url),
            PaymentRequest("pi_live_path", 500, "JPY", PaymentMethodType.QR_MPM),
        )
        assert created.status is ProviderPaymentStatus.REQUIRES_ACTION
        assert sandbox.payments["pi_live_path"].code.livemode is False  # a test key: not live
        refused = await http.get(
            f"{sandbox_url}/sandbox/v1/codes",
            headers={"Authorization": signing.authorization(credentials.api_secret)},
        )
        assert refused.status_code == 401


async def test_the_sandbox_works_under_its_mount_prefix(clock: FrozenClock) -> None:
    sandbox = RakutenPaySandbox(DEFAULTS)
    sandboxes = FastAPI()
    sandboxes.mount("/rakuten", sandbox.app())
    async with serving(sandboxes) as root, httpx.AsyncClient() as http:
        provider = RakutenPayProvider(http, clock)
        credentials = ProviderCredentials({"api_secret": DEFAULTS.api_secret}, base_url=f"{root}/rakuten")
        created = await provider.create_payment(
            credentials, PaymentRequest("pi_mounted", 800, "JPY", PaymentMethodType.QR_MPM)
        )
        assert created.provider_reference == sandbox.payments["pi_mounted"].code.id
        played = await http.post(
            f"{root}/rakuten/_sandbox/payments/pi_mounted", json={"outcome": "COMPLETED"}
        )
        assert played.status_code == 200, played.text
        reference = PaymentReference("pi_mounted", None, 800, "JPY", created.provider_reference)
        status = await provider.get_payment_status(credentials, reference)
        assert status.status is ProviderPaymentStatus.SUCCEEDED
        listed = await http.get(
            f"{root}/rakuten/sandbox/v1/charges",
            headers={"Authorization": signing.authorization(DEFAULTS.api_secret)},
        )
        assert listed.json()["url"] == "/sandbox/v1/charges"  # Rakuten's own path, without the prefix


async def test_the_sandbox_takes_lites_amount_change_form(world: RakutenWorld) -> None:
    intent = await world.qr_intent(5000)
    charge_id = (await world.customer(intent["id"], "COMPLETED"))["charge"]["id"]
    await world.until(intent["id"], "succeeded")
    # The Java SDK's own example: eight of one item at 500 yen.
    form = {
        "item_id_1": "itemId-001",
        "item_name_1": "item1",
        "item_quantity_1": "8",
        "item_unit_price_1": "500",
    }
    async with httpx.AsyncClient(base_url=world.sandbox_url) as client:
        auth = {"Authorization": signing.authorization(DEFAULTS.api_secret)}
        changed = await client.post(f"/sandbox/v1/charges/{charge_id}/refund", data=form, headers=auth)
        assert changed.status_code == 200, changed.text
        assert changed.json()["amount"] == 4000
        assert changed.json()["captured"] is True
        raised = await client.post(
            f"/sandbox/v1/charges/{charge_id}/refund", data={**form, "item_quantity_1": "9"}, headers=auth
        )
        assert raised.status_code == 400  # LITE only lowers an amount
        half = await client.post(
            f"/sandbox/v1/charges/{charge_id}/refund", data={"item_id_1": "x"}, headers=auth
        )
        assert half.json()["errors"][0]["code"] == "invalid_items"
        found = await client.get("/sandbox/v1/charges", params={"id": charge_id}, headers=auth)
        assert [charge["amount"] for charge in found.json()["data"]] == [4000]


async def test_a_provider_timeout_is_resolved_by_polling(
    world: RakutenWorld, container: Container, clock: FrozenClock
) -> None:
    container.payments.provider_timeout = 1.0  # the sandbox holds 40091 for 3 s
    world.sandbox.webhooks.url = None  # and its notifications are lost: only polling can find out
    intent = await world.qr_intent(40091)
    assert intent["status"] == "processing"
    assert intent["next_action"] is None
    assert await container.payments.check_due_payments() == 0  # not due yet
    clock.advance(timedelta(seconds=6))
    # paymux never saw the code id: it finds the code by cart_id, still pending, and keeps waiting
    assert await container.payments.check_due_payments() == 1
    waiting = await world.intent(intent["id"])
    assert waiting["status"] == "processing"
    await world.customer(intent["id"], "COMPLETED")  # paid through a code paymux never showed
    clock.advance(timedelta(seconds=11))
    assert await container.payments.check_due_payments() == 1
    paid = await world.intent(intent["id"])
    assert paid["status"] == "succeeded"
    charge = world.sandbox.payments[intent["id"]].charge
    assert charge is not None
    assert charge.captured is True
    assert paid["provider_transaction_id"] == charge.id


async def test_refund_status_lookups(world: RakutenWorld, container: Container) -> None:
    intent = await world.qr_intent(1000)
    await world.customer(intent["id"], "COMPLETED")
    await world.until(intent["id"], "succeeded")
    await check_refund_status_lookups(
        container, world.server, intent["id"], unknown_refund=ProviderRefundStatus.FAILED
    )
