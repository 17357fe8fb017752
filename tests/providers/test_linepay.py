"""LINE Pay v3 end to end over real sockets: paymux <-> the LINE Pay sandbox."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from paymux.container import Container
from paymux.core.clock import FrozenClock
from paymux.providers.base import ProviderRefundStatus
from paymux.providers.linepay import signing
from paymux.providers.linepay.sandbox import DEFAULTS, LinePaySandbox
from paymux.providers.sandbox_kit import SandboxTiming
from paymux.tenants.schemas import ProviderConfigSync
from paymux.webhooks.models import ProviderWebhookEvent
from tests.live import serving
from tests.providers.refund_checks import check_refund_status_lookups
from tests.support import ServerClient, Tenant, bearer, bootstrap_tenant


def test_signature_is_hmac_sha256_of_secret_path_payload_nonce() -> None:
    secret, path, body, nonce = (
        "abc123secret",
        "/v3/payments/request",
        '{"amount":100}',
        "550e8400-e29b-41d4-a716-446655440000",
    )
    expected = base64.b64encode(
        hmac.new(secret.encode(), (secret + path + body + nonce).encode(), hashlib.sha256).digest()
    ).decode()
    assert signing.signature(secret, path=path, payload=body, nonce=nonce) == expected
    assert signing.verify(secret, expected, path=path, payload=body, nonce=nonce)
    assert not signing.verify(secret, expected, path=path, payload=body + " ", nonce=nonce)


@dataclass
class LineWorld:
    paymux: str
    sandbox: LinePaySandbox
    sandbox_url: str
    server: ServerClient
    tenant: Tenant
    http: httpx.AsyncClient

    async def qr_intent(self, amount: int = 1500) -> dict[str, Any]:
        intent = await self.server.create_intent(self.tenant, amount=amount, payment_method_type="qr_mpm")
        confirmed = await self.http.post(
            f"{self.paymux}/v1/payment_intents/{intent['id']}/confirm",
            headers=bearer(intent["payment_token"]),
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

    def sandbox_payment(self, intent_id: str) -> Any:
        return self.sandbox.payments[self.sandbox.orders[intent_id]]


async def configure_linepay(container: Container, tenant: Tenant, sandbox_url: str, **overrides: Any) -> None:
    config: dict[str, Any] = {
        "provider_code": "linepay",
        "credentials": {"channel_id": DEFAULTS.api_key, "channel_secret": DEFAULTS.api_secret},
        "base_url": sandbox_url,
        "webhook_secret": DEFAULTS.webhook_secret,
    }
    config.update(overrides)
    await container.tenants.configure_provider(tenant.store_id, ProviderConfigSync.model_validate(config))


@pytest.fixture
async def world(app: FastAPI, container: Container, clock: FrozenClock) -> AsyncIterator[LineWorld]:
    tenant = await bootstrap_tenant(
        container, partner="line", merchant="L-M", store="L-S", test_provider=False
    )
    async with serving(app) as paymux:
        sandbox = LinePaySandbox(
            DEFAULTS,
            webhook_url=f"{paymux}/v1/webhooks/linepay",
            timing=SandboxTiming(slow_seconds=0.2, timeout_seconds=3),
        )
        async with (
            serving(sandbox.app()) as sandbox_url,
            httpx.AsyncClient(base_url=paymux, timeout=30) as http,
        ):
            await configure_linepay(container, tenant, sandbox_url)
            yield LineWorld(
                paymux,
                sandbox,
                sandbox_url,
                ServerClient(http, tenant.client_id, tenant.client_secret, clock),
                tenant,
                http,
            )
            await sandbox.webhooks.drain()


async def test_approved_payment_is_confirmed_and_succeeds(world: LineWorld) -> None:
    intent = await world.qr_intent(1500)
    assert intent["status"] == "requires_action"
    assert intent["next_action"]["qr_payload"].startswith("https://sandbox-web-pay.line.me/")
    assert intent["provider_transaction_id"].isdigit()
    assert len(intent["provider_transaction_id"]) == 19  # not rounded through a float anywhere

    await world.customer(intent["id"], "COMPLETED")
    paid = await world.until(intent["id"], "succeeded")
    assert paid["amount_captured"] == 1500
    assert world.sandbox_payment(intent["id"]).state == "CONFIRMED"  # paymux called Confirm


async def test_the_customers_return_checks_the_payment(world: LineWorld) -> None:
    world.sandbox.webhooks.url = None  # no notification: the browser's return is what tells paymux
    intent = await world.qr_intent()
    await world.customer(intent["id"], "COMPLETED")
    returned = await world.http.get(
        f"{world.paymux}/v1/webhooks/linepay/return", params={"orderId": intent["id"], "transactionId": "1"}
    )
    assert returned.status_code == 200, returned.text
    assert returned.json() == {"payment_intent_id": intent["id"], "status": "succeeded"}


@pytest.mark.parametrize(
    ("outcome", "status"), [("FAILED", "failed"), ("EXPIRED", "cancelled"), ("CANCELED", "cancelled")]
)
async def test_customer_outcomes(world: LineWorld, outcome: str, status: str) -> None:
    intent = await world.qr_intent()
    await world.customer(intent["id"], outcome)
    await world.until(intent["id"], status)


async def test_a_decline_at_confirm_fails_the_intent(world: LineWorld) -> None:
    intent = await world.qr_intent(40002)
    await world.customer(intent["id"], "COMPLETED")
    failed = await world.until(intent["id"], "failed")
    assert failed["failure_code"] == "payment_failed"
    assert "1142" in failed["failure_message"]


async def test_refunds_go_through_line_pay(world: LineWorld) -> None:
    intent = await world.qr_intent(1000)
    await world.customer(intent["id"], "COMPLETED")
    await world.until(intent["id"], "succeeded")
    partial = await world.server.post(f"/v1/payment_intents/{intent['id']}/refund", {"amount": 400})
    assert partial.json()["status"] == "succeeded", partial.text
    rest = await world.server.post(f"/v1/payment_intents/{intent['id']}/refund")
    assert rest.json()["amount"] == 600
    assert world.sandbox_payment(intent["id"]).refunded == 1000


async def test_a_cancelled_intent_is_never_charged(world: LineWorld) -> None:
    intent = await world.qr_intent()
    cancelled = await world.server.post(f"/v1/payment_intents/{intent['id']}/cancel")
    assert cancelled.json()["status"] == "cancelled", cancelled.text
    await world.customer(intent["id"], "COMPLETED")  # approves too late
    await world.sandbox.webhooks.drain()
    await asyncio.sleep(0.2)
    assert world.sandbox_payment(intent["id"]).state == "AUTHORIZED"  # approved, never confirmed: no charge


async def test_forged_notifications_are_refused(world: LineWorld) -> None:
    intent = await world.qr_intent()
    body = json.dumps({"transactionId": 1, "orderId": intent["id"], "event": "PAYMENT_AUTHORIZED"}).encode()
    refused = await world.http.post(
        f"{world.paymux}/v1/webhooks/linepay", content=body, headers={"X-LINE-Signature": "forged"}
    )
    assert refused.json()["code"] == "invalid_webhook_signature"


async def test_wrong_channel_secret_is_refused_by_line_pay(world: LineWorld, container: Container) -> None:
    await configure_linepay(
        container,
        world.tenant,
        world.sandbox_url,
        credentials={"channel_id": DEFAULTS.api_key, "channel_secret": "wrong"},
    )
    intent = await world.qr_intent()
    assert intent["status"] == "failed"
    assert "1106" in intent["failure_message"]


async def test_a_timeout_is_resolved_by_polling(
    world: LineWorld, container: Container, clock: FrozenClock
) -> None:
    container.payments.provider_timeout = 1.0
    world.sandbox.webhooks.url = None
    intent = await world.qr_intent(40091)
    assert intent["status"] == "processing"
    # paymux never saw the transactionId nor the payment URL: the poll looks the order up by orderId, finds no
    # payment (the customer could not have approved one) and fails the intent; nothing was charged.
    clock.advance(timedelta(seconds=6))
    assert await container.payments.check_due_payments() == 1
    failed = await world.until(intent["id"], "failed")
    assert failed["failure_code"] == "provider_timeout"
    assert world.sandbox_payment(intent["id"]).state == "RESERVED"


async def test_a_replayed_notification_is_recorded_once(world: LineWorld, container: Container) -> None:
    intent = await world.qr_intent()
    body = json.dumps({"transactionId": 1, "orderId": intent["id"], "event": "PAYMENT_AUTHORIZED"}).encode()
    signature = base64.b64encode(
        hmac.new((DEFAULTS.webhook_secret or "").encode(), body, hashlib.sha256).digest()
    ).decode()
    for _ in range(3):
        response = await world.http.post(
            f"{world.paymux}/v1/webhooks/linepay", content=body, headers={"X-LINE-Signature": signature}
        )
        assert response.status_code == 200
    async with container.db.reading() as session:
        count = (await session.execute(select(func.count()).select_from(ProviderWebhookEvent))).scalar_one()
    assert count == 1


async def test_refund_status_lookups(world: LineWorld, container: Container) -> None:
    intent = await world.qr_intent(1000)
    await world.customer(intent["id"], "COMPLETED")
    await world.until(intent["id"], "succeeded")
    await check_refund_status_lookups(
        container, world.server, intent["id"], unknown_refund=ProviderRefundStatus.FAILED
    )
