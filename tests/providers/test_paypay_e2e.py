"""PayPay end to end over real sockets: paymux <-> the PayPay sandbox, webhooks included."""

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
from paymux.providers.paypay.sandbox import DEFAULTS, PayPaySandbox
from paymux.providers.sandbox_kit import SandboxTiming
from paymux.tenants.schemas import ProviderConfigSync
from paymux.webhooks.models import ProviderWebhookEvent
from tests.live import serving
from tests.providers.refund_checks import check_refund_status_lookups
from tests.support import ServerClient, Tenant, bearer, bootstrap_tenant


@dataclass
class PayPayWorld:
    paymux: str
    sandbox: PayPaySandbox
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
        result["payment_token"] = intent["payment_token"]
        return result

    async def customer(self, intent_id: str, outcome: str) -> None:
        response = await self.http.post(
            f"{self.sandbox_url}/_sandbox/payments/{intent_id}", json={"outcome": outcome}
        )
        assert response.status_code == 200, response.text

    async def intent(self, intent_id: str) -> dict[str, Any]:
        response = await self.server.get(f"/v1/payment_intents/{intent_id}")
        result: dict[str, Any] = response.json()
        return result

    async def until(self, intent_id: str, status: str) -> dict[str, Any]:
        for _ in range(200):
            intent = await self.intent(intent_id)
            if intent["status"] == status:
                return intent
            await asyncio.sleep(0.025)
        pytest.fail(f"{intent_id} never became {status}: {intent['status']}")


async def configure_paypay(container: Container, tenant: Tenant, sandbox_url: str, **overrides: Any) -> None:
    config: dict[str, Any] = {
        "provider_code": "paypay",
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
async def world(app: FastAPI, container: Container, clock: FrozenClock) -> AsyncIterator[PayPayWorld]:
    tenant = await bootstrap_tenant(
        container, partner="qr", merchant="QR-M", store="QR-S", test_provider=False
    )
    async with serving(app) as paymux:
        sandbox = PayPaySandbox(
            DEFAULTS,
            webhook_url=f"{paymux}/v1/webhooks/paypay",
            timing=SandboxTiming(slow_seconds=0.2, timeout_seconds=3),
        )
        async with (
            serving(sandbox.app()) as sandbox_url,
            httpx.AsyncClient(base_url=paymux, timeout=30) as http,
        ):
            await configure_paypay(container, tenant, sandbox_url)
            server = ServerClient(http, tenant.client_id, tenant.client_secret, clock)
            yield PayPayWorld(paymux, sandbox, sandbox_url, server, tenant, http)
            await sandbox.webhooks.drain()


async def test_qr_payment_succeeds_through_webhook_and_status_check(world: PayPayWorld) -> None:
    intent = await world.qr_intent(1200)
    assert intent["status"] == "requires_action"
    assert intent["provider_name"] == "paypay"
    action = intent["next_action"]
    assert action["type"] == "display_qr_code"
    assert action["qr_payload"].startswith("https://qr-stg.sandbox.paypay.ne.jp/")
    assert action["deeplink"].startswith("paypay://")
    assert world.sandbox.payments[intent["id"]].status == "CREATED"

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


@pytest.mark.parametrize(
    ("outcome", "status", "code"),
    [
        ("FAILED", "failed", "payment_failed"),
        ("EXPIRED", "failed", "expired"),
        ("CANCELED", "cancelled", None),
    ],
)
async def test_customer_outcomes(world: PayPayWorld, outcome: str, status: str, code: str | None) -> None:
    intent = await world.qr_intent()
    await world.customer(intent["id"], outcome)
    settled = await world.until(intent["id"], status)
    assert settled["failure_code"] == code
    if code is not None:
        assert settled["failure_message"]


async def test_magic_decline_amount(world: PayPayWorld) -> None:
    intent = await world.qr_intent(40002)
    settled = await world.until(intent["id"], "failed")
    assert settled["failure_code"] == "payment_failed"


async def test_cancel_deletes_the_code_at_paypay(world: PayPayWorld) -> None:
    intent = await world.qr_intent()
    cancelled = await world.http.post(
        f"{world.paymux}/v1/payment_intents/{intent['id']}/cancel", headers=bearer(intent["payment_token"])
    )
    assert cancelled.status_code == 401  # the token was spent by confirm: the server cancels
    cancelled = await world.server.post(
        f"/v1/payment_intents/{intent['id']}/cancel", {"cancellation_reason": "customer left"}
    )
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert world.sandbox.payments[intent["id"]].status == "CANCELED"
    late = await world.http.post(
        f"{world.sandbox_url}/_sandbox/payments/{intent['id']}", json={"outcome": "COMPLETED"}
    )
    assert late.status_code == 409  # the code is gone: nobody can pay it any more


async def test_full_and_partial_refunds_go_through_paypay(world: PayPayWorld) -> None:
    intent = await world.qr_intent(1000)
    await world.customer(intent["id"], "COMPLETED")
    await world.until(intent["id"], "succeeded")
    partial = await world.server.post(f"/v1/payment_intents/{intent['id']}/refund", {"amount": 300})
    assert partial.status_code == 201, partial.text
    assert partial.json()["status"] == "succeeded"
    rest = await world.server.post(f"/v1/payment_intents/{intent['id']}/refund")
    assert rest.json()["status"] == "succeeded"
    assert rest.json()["amount"] == 700
    sandbox_payment = world.sandbox.payments[intent["id"]]
    assert [refund["amount"]["amount"] for refund in sandbox_payment.refunds] == [300, 700]
    assert sandbox_payment.status == "REFUNDED"
    assert (await world.intent(intent["id"]))["amount_refunded"] == 1000


def paypay_notification(intent_id: str, state: str, order_id: str = "1") -> bytes:
    return json.dumps(
        {
            "notification_type": "Transaction",
            "merchant_order_id": intent_id,
            "state": state,
            "order_id": order_id,
        },
        separators=(",", ":"),
    ).encode()


def signed(body: bytes, secret: str = DEFAULTS.webhook_secret or "") -> dict[str, str]:
    return {
        "X-PayPay-Signature": base64.b64encode(
            hmac.new(secret.encode(), body, hashlib.sha256).digest()
        ).decode()
    }


async def test_forged_webhooks_are_refused_and_change_nothing(
    world: PayPayWorld, container: Container
) -> None:
    intent = await world.qr_intent()
    body = paypay_notification(intent["id"], "COMPLETED")
    for headers in ({}, signed(body, "not-the-secret"), {"X-PayPay-Signature": "garbage"}):
        refused = await world.http.post(f"{world.paymux}/v1/webhooks/paypay", content=body, headers=headers)
        assert refused.status_code == 401
        assert refused.json()["code"] == "invalid_webhook_signature"
    # Correctly signed but false: PayPay still says CREATED, and the status call is what counts.
    lying = await world.http.post(f"{world.paymux}/v1/webhooks/paypay", content=body, headers=signed(body))
    assert lying.status_code == 200
    await asyncio.sleep(0.3)
    assert (await world.intent(intent["id"]))["status"] == "requires_action"


async def test_a_replayed_webhook_is_acknowledged_and_recorded_once(
    world: PayPayWorld, container: Container
) -> None:
    intent = await world.qr_intent()
    body = paypay_notification(intent["id"], "CREATED")
    for _ in range(3):
        response = await world.http.post(
            f"{world.paymux}/v1/webhooks/paypay", content=body, headers=signed(body)
        )
        assert response.status_code == 200
        assert response.text == "OK"
    async with container.db.reading() as session:
        count = (await session.execute(select(func.count()).select_from(ProviderWebhookEvent))).scalar_one()
    assert count == 1


async def test_unsigned_notifications_only_where_the_store_accepts_them(
    world: PayPayWorld, container: Container
) -> None:
    await configure_paypay(container, world.tenant, world.sandbox_url, webhook_secret=None)
    intent = await world.qr_intent()
    body = paypay_notification(intent["id"], "COMPLETED")
    refused = await world.http.post(f"{world.paymux}/v1/webhooks/paypay", content=body)
    assert refused.json()["code"] == "invalid_webhook_signature"
    await configure_paypay(
        container,
        world.tenant,
        world.sandbox_url,
        webhook_secret=None,
        options={"unsigned_webhooks": "accept"},
    )
    await world.customer(intent["id"], "COMPLETED")  # PayPay's own, unsigned notification
    await world.until(intent["id"], "succeeded")


async def test_a_provider_timeout_is_resolved_by_polling(
    world: PayPayWorld, container: Container, clock: FrozenClock
) -> None:
    container.payments.provider_timeout = 1.0  # the sandbox holds 40091 for 3 s
    world.sandbox.webhooks.url = None  # and its notifications are lost: only polling can find out
    intent = await world.qr_intent(40091)
    assert intent["status"] == "processing"
    assert intent["next_action"] is None
    assert await container.payments.check_due_payments() == 0  # not due yet
    clock.advance(timedelta(seconds=6))
    assert await container.payments.check_due_payments() == 1  # PayPay: CREATED, so it keeps waiting
    assert (await world.intent(intent["id"]))["status"] == "processing"
    await world.customer(intent["id"], "COMPLETED")  # paid through a code paymux never saw
    clock.advance(timedelta(seconds=11))
    assert await container.payments.check_due_payments() == 1
    assert (await world.intent(intent["id"]))["status"] == "succeeded"


async def test_a_second_confirm_while_paypay_has_not_answered_the_first_is_refused(
    world: PayPayWorld, clock: FrozenClock
) -> None:
    world.sandbox.timing = SandboxTiming(slow_seconds=2, timeout_seconds=3)
    intent = await world.server.create_intent(world.tenant, amount=40092, payment_method_type="qr_mpm")
    path = f"/v1/payment_intents/{intent['id']}/confirm"
    first = asyncio.create_task(world.server.post(path))
    for _ in range(400):  # until PayPay has the first request, and holds its answer
        if intent["id"] in world.sandbox.payments:
            break
        await asyncio.sleep(0.005)
    clock.advance(timedelta(seconds=1))  # a request signed anew, not a replay of the first
    second = await world.server.post(path)
    assert second.status_code == 409, second.text
    assert second.json()["code"] == "confirmation_in_progress"
    answered = await first
    assert answered.status_code == 200, answered.text
    assert answered.json()["status"] == "requires_action"
    assert len(world.sandbox.payments) == 1  # PayPay was asked once


async def test_wrong_credentials_get_paypays_401_and_fail_the_intent(
    world: PayPayWorld, container: Container
) -> None:
    await configure_paypay(
        container,
        world.tenant,
        world.sandbox_url,
        credentials={"api_key": DEFAULTS.api_key, "api_secret": "wrong", "merchant_id": DEFAULTS.merchant_id},
    )
    intent = await world.qr_intent()
    assert intent["status"] == "failed"
    assert intent["failure_code"] == "provider_rejected"
    assert "UNAUTHORIZED" in intent["failure_message"]


async def test_a_signature_header_with_non_ascii_text_is_a_401_not_a_crash(world: PayPayWorld) -> None:
    intent = await world.qr_intent()
    body = paypay_notification(intent["id"], "COMPLETED")
    refused = await world.http.post(
        f"{world.paymux}/v1/webhooks/paypay",
        content=body,
        headers={"X-PayPay-Signature": "é".encode("latin-1")},
    )
    assert refused.status_code == 401
    assert refused.json()["code"] == "invalid_webhook_signature"


async def test_a_payment_that_completes_during_its_cancellation_is_recorded_as_reversed(
    world: PayPayWorld, container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.sandbox.webhooks.url = None
    intent = await world.qr_intent(1000)
    await world.customer(intent["id"], "COMPLETED")  # paid at PayPay; paymux has not heard yet
    provider = container.providers.get("paypay")
    real_cancel = provider.cancel_payment

    async def cancel_after_a_status_check(credentials: Any, reference: Any) -> None:
        # The interleaving under test: the worker's status check lands between cancel's two units of work.
        await container.payments.check_payment(reference.payment_intent_id)
        await real_cancel(credentials, reference)

    monkeypatch.setattr(provider, "cancel_payment", cancel_after_a_status_check)
    response = await world.server.post(f"/v1/payment_intents/{intent['id']}/cancel")
    assert response.status_code == 200, response.text
    settled = response.json()
    assert (settled["status"], settled["amount_captured"], settled["amount_refunded"]) == (
        "succeeded",
        1000,
        1000,
    )
    assert world.sandbox.payments[intent["id"]].status == "CANCELED"  # PayPay gave the money back
    transactions = (await world.server.get(f"/v1/payment_intents/{intent['id']}/transactions")).json()["data"]
    refunds = [t for t in transactions if t["type"] == "refund"]
    assert [(t["status"], t["amount"]) for t in refunds] == [("succeeded", 1000)]
    events = (await world.server.get("/v1/events?type=refund.succeeded&limit=5")).json()["data"]
    assert [event["data"]["payment_intent_id"] for event in events] == [intent["id"]]


async def test_a_refund_whose_answer_times_out_is_settled_by_the_refund_check(
    world: PayPayWorld, container: Container, clock: FrozenClock
) -> None:
    intent = await world.qr_intent(50000)
    await world.customer(intent["id"], "COMPLETED")
    await world.until(intent["id"], "succeeded")
    container.payments.provider_timeout = 1.0  # the sandbox answers a 40091 refund after 3 s
    refund = (await world.server.post(f"/v1/payment_intents/{intent['id']}/refund", {"amount": 40091})).json()
    assert refund["status"] == "pending"
    assert [r["merchantRefundId"] for r in world.sandbox.payments[intent["id"]].refunds] == [refund["id"]]
    clock.advance(timedelta(seconds=6))
    assert await container.payments.check_due_refunds() == 1  # GET /v2/refunds/{merchantRefundId}
    assert (await world.server.get(f"/v1/transactions/{refund['id']}")).json()["status"] == "succeeded"
    assert (await world.intent(intent["id"]))["amount_refunded"] == 40091


async def test_refund_status_lookups(world: PayPayWorld, container: Container) -> None:
    intent = await world.qr_intent(1000)
    await world.customer(intent["id"], "COMPLETED")
    await world.until(intent["id"], "succeeded")
    await check_refund_status_lookups(
        container, world.server, intent["id"], unknown_refund=ProviderRefundStatus.FAILED
    )
