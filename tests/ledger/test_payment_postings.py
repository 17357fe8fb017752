"""What payments post to the ledger (docs/ledger.md, "What payments post"), through the real HTTP API.

Every payment event books inside the unit of work of its state change: a payment in flight or authorised is a
pending hold (the merchant's `pending`), a success posts it (or books directly when the hold is gone), a failure
or cancellation voids it, the store's fee rule books a fee, and refunds move money through the refunds account.
Each entry is keyed by its source object and what happened to it, so nothing is ever booked twice.

The `app` fixture checks every ledger invariant (verify_ledger) when each test ends.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event, func, select
from sqlalchemy.util import await_only

from paymux.config import Settings
from paymux.container import Container
from paymux.core.clock import FrozenClock
from paymux.ledger.accounts import MerchantAccounts
from paymux.ledger.entries import EntryKind, transfer
from paymux.ledger.models import Hold, JournalEntry, Posting
from paymux.payments.models import Transaction
from paymux.providers.base import ProviderPayment, ProviderPaymentStatus, ProviderRefund, ProviderRefundStatus
from paymux.providers.notifications import body_signature
from paymux.providers.paypay.sandbox import DEFAULTS, PayPaySandbox
from paymux.providers.sandbox_kit import SandboxTiming
from paymux.tenants.schemas import ProviderConfigSync
from paymux.webhooks.models import ProviderWebhookEvent
from tests.live import serving
from tests.support import ServerClient, Tenant, bootstrap_tenant

PROBLEM_JSON = "application/problem+json"
SYNC = "/v1/sync/merchants"


# ---------------------------------------------------------------------------------------------- helpers


async def post(
    server: ServerClient, clock: FrozenClock, path: str, body: Any = None, **kwargs: Any
) -> httpx.Response:
    # The test clock is frozen: move it so two identical requests carry two signatures, not one replayed.
    clock.advance(1)
    return await server.post(path, body, **kwargs)


async def confirm(server: ServerClient, clock: FrozenClock, intent_id: str, **kwargs: Any) -> dict[str, Any]:
    response = await post(server, clock, f"/v1/payment_intents/{intent_id}/confirm", **kwargs)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def capture(server: ServerClient, clock: FrozenClock, intent_id: str, body: Any) -> dict[str, Any]:
    response = await post(server, clock, f"/v1/payment_intents/{intent_id}/capture", body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def refund(
    server: ServerClient, clock: FrozenClock, intent_id: str, amount: int | None = None
) -> dict[str, Any]:
    body = None if amount is None else {"amount": amount}
    response = await post(server, clock, f"/v1/payment_intents/{intent_id}/refund", body)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def paid(
    server: ServerClient, tenant: Tenant, clock: FrozenClock, amount: int, **fields: Any
) -> dict[str, Any]:
    """A payment through the built-in test provider that succeeded at confirm."""
    intent = await server.create_intent(tenant, amount=amount, **fields)
    confirmed = await confirm(server, clock, intent["id"])
    assert confirmed["status"] == "succeeded", confirmed
    return confirmed


async def view(server: ServerClient, intent_id: str) -> dict[str, Any]:
    response = await server.get(f"/v1/payment_intents/{intent_id}")
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def balance(server: ServerClient) -> tuple[dict[str, int], dict[str, int]]:
    """The merchant's (available, pending) per currency, from GET /v1/balances."""
    response = await server.get("/v1/balances")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "balance"
    available = {row["currency"]: row["amount"] for row in body["available"]}
    pending = {row["currency"]: row["amount"] for row in body["pending"]}
    assert len(available) == len(body["available"])
    assert len(pending) == len(body["pending"])
    return available, pending


async def btx(server: ServerClient, query: str = "") -> list[dict[str, Any]]:
    """Every balance transaction the client sees (one page of up to 100), newest first."""
    response = await server.get(f"/v1/balance_transactions?limit=100{query}")
    assert response.status_code == 200, response.text
    page = response.json()
    assert page["has_more"] is False
    rows: list[dict[str, Any]] = page["data"]
    return rows


def moves(rows: list[dict[str, Any]]) -> list[tuple[str, int, int, str]]:
    """(type, signed amount, balance_after, source) of balance transactions, as listed (newest first)."""
    return [(row["type"], row["amount"], row["balance_after"], row["source"]) for row in rows]


async def entries(container: Container, source_id: str) -> list[str]:
    """The kinds of the journal entries a source object caused, in booking order."""
    async with container.db.reading() as session:
        rows = await session.execute(
            select(JournalEntry.kind).where(JournalEntry.source_id == source_id).order_by(JournalEntry.id)
        )
        return list(rows.scalars())


async def entry_keys(container: Container, source_id: str) -> list[str]:
    async with container.db.reading() as session:
        rows = await session.execute(
            select(JournalEntry.idempotency_key)
            .where(JournalEntry.source_id == source_id)
            .order_by(JournalEntry.id)
        )
        return list(rows.scalars())


async def postings_count(container: Container) -> int:
    async with container.db.reading() as session:
        return int((await session.execute(select(func.count()).select_from(Posting))).scalar_one())


async def holds(container: Container, source_id: str) -> list[Hold]:
    async with container.db.reading() as session:
        rows = await session.execute(select(Hold).where(Hold.source_id == source_id).order_by(Hold.id))
        return list(rows.scalars())


async def account(container: Container, code: str) -> tuple[int, int, int] | None:
    """(balance, pending_out, pending_in) of a ledger account, None when it was never opened."""
    row = await container.ledger.account(code)
    return None if row is None else (row.balance, row.pending_out, row.pending_in)


def payable(tenant: Tenant, currency: str = "JPY") -> str:
    return f"m{tenant.merchant_id}:merchant_payable:{currency}"


def clearing(tenant: Tenant, channel: str = "test", currency: str = "JPY") -> str:
    return f"m{tenant.merchant_id}:provider_clearing:{channel}:{currency}"


def fees(tenant: Tenant, currency: str = "JPY") -> str:
    return f"m{tenant.merchant_id}:fees:{currency}"


def refunds(tenant: Tenant, currency: str = "JPY") -> str:
    return f"m{tenant.merchant_id}:refunds:{currency}"


async def payment_attempt(container: Container, intent_id: str) -> Transaction:
    async with container.db.reading() as session:
        rows = await session.execute(
            select(Transaction).where(
                Transaction.payment_intent_id == intent_id, Transaction.type == "payment"
            )
        )
        [attempt] = rows.scalars()
        return attempt


def succeeded(intent: dict[str, Any]) -> ProviderPayment:
    return ProviderPayment(
        status=ProviderPaymentStatus.SUCCEEDED,
        provider_transaction_id=f"test_ch_{intent['id'].removeprefix('pi_')}",
        amount=intent["amount"],
        currency=intent["currency"],
    )


def failed(intent: dict[str, Any]) -> ProviderPayment:
    return ProviderPayment(
        status=ProviderPaymentStatus.FAILED,
        provider_transaction_id=None,
        amount=intent["amount"],
        currency=intent["currency"],
        failure_code="card_declined",
        failure_message="declined after the timeout",
    )


@pytest.fixture
async def portal(
    container: Container, http: httpx.AsyncClient, tenant: Tenant, clock: FrozenClock
) -> ServerClient:
    """The partner's portal: an API client scoped to the whole partner, as config sync requires."""
    client_id, secret = await container.tenants.create_client(
        name="portal", partner_id=tenant.client_partner_id
    )
    return ServerClient(http, client_id, secret, clock)


async def set_fee_rules(
    portal: ServerClient, clock: FrozenClock, tenant: Tenant, rules: list[dict[str, Any]] | None
) -> None:
    """Sync the tenant's store S-1 with these fee rules (None: omit `fee_rules`, which keeps the stored ones)."""
    store: dict[str, Any] = {"store_id": tenant.store_id, "store_code": "S-1"}
    if rules is not None:
        store["fee_rules"] = rules
    body = {
        "client_partner_id": tenant.client_partner_id,
        "merchants": [{"merchant_id": tenant.merchant_id, "merchant_code": "M-1", "stores": [store]}],
    }
    response = await post(portal, clock, SYNC, body)
    assert response.status_code == 200, response.text
    assert response.json() == {"synced_merchants": 1, "synced_stores": 1}


# ---------------------------------------------------------------------------------------------- succeeded payments


async def test_a_succeeded_payment_is_available_and_listed_as_a_payment(
    server: ServerClient, tenant: Tenant, container: Container, clock: FrozenClock
) -> None:
    first = await paid(server, tenant, clock, 1000)
    assert await balance(server) == ({"JPY": 1000}, {"JPY": 0})
    [row] = await btx(server)
    assert row["id"].startswith("btx_")
    assert row["entry_id"].startswith("je_")
    assert {key: value for key, value in row.items() if key not in {"id", "entry_id", "created_at"}} == {
        "object": "balance_transaction",
        "merchant_id": tenant.merchant_id,
        "type": "payment",
        "amount": 1000,
        "currency": "JPY",
        "balance_after": 1000,
        "source_type": "payment_intent",
        "source": first["id"],
        "description": None,
    }
    # Booked with the state change, at the (frozen) time of the confirm.
    assert row["created_at"] == first["updated_at"]

    second = await paid(server, tenant, clock, 2500)
    assert await balance(server) == ({"JPY": 3500}, {"JPY": 0})
    assert moves(await btx(server)) == [
        ("payment", 2500, 3500, second["id"]),
        ("payment", 1000, 1000, first["id"]),
    ]

    # Double entry: clearing owes what the merchant is owed; no fee without a fee rule.
    assert await account(container, payable(tenant)) == (3500, 0, 0)
    assert await account(container, clearing(tenant)) == (3500, 0, 0)
    assert await account(container, fees(tenant)) is None
    entry_of = {row["source"]: row["entry_id"] for row in await btx(server)}
    for intent in (first, second):
        assert await entries(container, intent["id"]) == ["payment"]
        assert await entry_keys(container, intent["id"]) == [f"{intent['id']}:payment"]
        # The payment is the hold posted: the hold names the entry it became.
        [hold] = await holds(container, intent["id"])
        assert (hold.status, hold.amount, hold.posted_amount) == (
            "posted",
            intent["amount"],
            intent["amount"],
        )
        assert hold.entry_id == entry_of[intent["id"]]


@dataclass(frozen=True)
class FeeCase:
    currency: str
    percent_bps: int
    fixed_amount: int
    amount: int
    fee: int  # worked out by hand from docs/ledger.md's rounding rule


FEE_CASES = {
    # The doc's examples: 3.25 % of 100,000 yen, and 2.9 % + 30 of 1,005 cents (29.145 rounds down, + 30).
    "doc-jpy-3.25%": FeeCase("JPY", 325, 0, 100000, 3250),
    "doc-usd-2.9%+30": FeeCase("USD", 290, 30, 1005, 59),
    # Half up: 1.5 % of 1,100 is 16.5 -> 17; of 1,099 it is 16.485 -> 16.
    "half-up": FeeCase("JPY", 150, 0, 1100, 17),
    "below-half": FeeCase("JPY", 150, 0, 1099, 16),
    "half-a-yen": FeeCase("JPY", 5, 0, 1000, 1),
    "fixed-only": FeeCase("JPY", 0, 50, 1000, 50),
    # A fee never exceeds the amount it is charged on.
    "capped": FeeCase("JPY", 10000, 100, 1000, 1000),
}


@pytest.mark.parametrize("case", list(FEE_CASES.values()), ids=list(FEE_CASES))
async def test_a_store_fee_rule_books_a_fee(
    server: ServerClient,
    portal: ServerClient,
    tenant: Tenant,
    container: Container,
    clock: FrozenClock,
    case: FeeCase,
) -> None:
    rule = {"currency": case.currency, "percent_bps": case.percent_bps, "fixed_amount": case.fixed_amount}
    await set_fee_rules(portal, clock, tenant, [rule])
    intent = await paid(server, tenant, clock, case.amount, currency=case.currency)

    net = case.amount - case.fee
    assert await balance(server) == ({case.currency: net}, {case.currency: 0})
    assert moves(await btx(server)) == [
        ("fee", -case.fee, net, intent["id"]),
        ("payment", case.amount, case.amount, intent["id"]),
    ]
    [fee_row] = await btx(server, "&type=fee")
    assert (fee_row["source_type"], fee_row["currency"]) == ("payment_intent", case.currency)
    assert await entries(container, intent["id"]) == ["payment", "fee"]
    assert await entry_keys(container, intent["id"]) == [f"{intent['id']}:payment", f"{intent['id']}:fee"]
    assert await account(container, fees(tenant, case.currency)) == (case.fee, 0, 0)
    assert await account(container, payable(tenant, case.currency)) == (net, 0, 0)
    # The provider owes the whole amount: the fee is the platform's, out of the merchant's share.
    assert await account(container, clearing(tenant, "test", case.currency)) == (case.amount, 0, 0)


async def test_fee_rules_follow_config_sync_and_apply_per_currency(
    server: ServerClient, portal: ServerClient, tenant: Tenant, container: Container, clock: FrozenClock
) -> None:
    # A zero rule books nothing; a rule in another currency does not apply.
    await set_fee_rules(
        portal,
        clock,
        tenant,
        [{"currency": "JPY", "percent_bps": 0, "fixed_amount": 0}, {"currency": "USD", "percent_bps": 1000}],
    )
    free = await paid(server, tenant, clock, 1000)
    assert await entries(container, free["id"]) == ["payment"]
    dollars = await paid(server, tenant, clock, 2000, currency="USD")
    assert await entries(container, dollars["id"]) == ["payment", "fee"]
    assert await account(container, fees(tenant, "USD")) == (200, 0, 0)
    assert await account(container, fees(tenant)) is None

    # A sync that omits fee_rules keeps them; [] removes them all.
    await set_fee_rules(portal, clock, tenant, [{"currency": "JPY", "percent_bps": 200}])
    await set_fee_rules(portal, clock, tenant, None)
    charged = await paid(server, tenant, clock, 5000)
    assert await entries(container, charged["id"]) == ["payment", "fee"]
    await set_fee_rules(portal, clock, tenant, [])
    after_removal = await paid(server, tenant, clock, 5000)
    assert await entries(container, after_removal["id"]) == ["payment"]

    assert await balance(server) == ({"JPY": 1000 + 4900 + 5000, "USD": 1800}, {"JPY": 0, "USD": 0})
    assert moves(await btx(server, "&currency=JPY&type=fee")) == [("fee", -100, 5900, charged["id"])]


# ---------------------------------------------------------------------------------------------- failures


@pytest.mark.parametrize("amount", [40002, 40051, 40054, 40096])
async def test_a_declined_payment_posts_nothing(
    server: ServerClient, tenant: Tenant, container: Container, clock: FrozenClock, amount: int
) -> None:
    intent = await server.create_intent(tenant, amount=amount)
    assert (await confirm(server, clock, intent["id"]))["status"] == "failed"
    # The hold of the attempt opened the accounts; it was voided with the failure, in the same unit of work.
    assert await balance(server) == ({"JPY": 0}, {"JPY": 0})
    assert await btx(server) == []
    assert await entries(container, intent["id"]) == []
    [hold] = await holds(container, intent["id"])
    assert (hold.status, hold.amount, hold.posted_amount, hold.entry_id) == ("voided", amount, None, None)
    assert await account(container, payable(tenant)) == (0, 0, 0)
    assert await account(container, clearing(tenant)) == (0, 0, 0)


async def test_a_confirm_refused_before_the_provider_holds_nothing(
    server: ServerClient, tenant: Tenant, container: Container, clock: FrozenClock
) -> None:
    intent = await server.create_intent(tenant)
    refused = await post(
        server, clock, f"/v1/payment_intents/{intent['id']}/confirm", {"provider_name": "nosuchpay"}
    )
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"].startswith(PROBLEM_JSON)
    assert await holds(container, intent["id"]) == []
    assert await balance(server) == ({}, {})


# ---------------------------------------------------------------------------------------------- in flight


async def test_a_payment_in_flight_is_pending_then_available_when_it_succeeds(
    server: ServerClient, tenant: Tenant, container: Container, clock: FrozenClock
) -> None:
    intent = await server.create_intent(tenant, amount=40091)  # the provider's answer times out
    assert (await confirm(server, clock, intent["id"]))["status"] == "processing"
    assert await balance(server) == ({"JPY": 0}, {"JPY": 40091})
    assert await btx(server) == []
    assert await entries(container, intent["id"]) == []
    [hold] = await holds(container, intent["id"])
    assert (hold.status, hold.amount, hold.source_type) == ("pending", 40091, "payment_intent")
    assert await account(container, payable(tenant)) == (0, 0, 40091)
    assert await account(container, clearing(tenant)) == (0, 0, 40091)

    clock.advance(timedelta(seconds=6))
    assert await container.payments.check_due_payments() == 1  # the status check: the charge went through
    assert (await view(server, intent["id"]))["status"] == "succeeded"
    assert await balance(server) == ({"JPY": 40091}, {"JPY": 0})
    assert moves(await btx(server)) == [("payment", 40091, 40091, intent["id"])]
    [hold] = await holds(container, intent["id"])
    assert (hold.status, hold.posted_amount) == ("posted", 40091)
    assert await account(container, payable(tenant)) == (40091, 0, 0)
    assert await account(container, clearing(tenant)) == (40091, 0, 0)


async def test_a_payment_in_flight_that_fails_releases_its_pending_amount(
    server: ServerClient, tenant: Tenant, container: Container, clock: FrozenClock
) -> None:
    other = await paid(server, tenant, clock, 700)
    intent = await server.create_intent(tenant, amount=40091)
    await confirm(server, clock, intent["id"])
    assert await balance(server) == ({"JPY": 700}, {"JPY": 40091})
    attempt = await payment_attempt(container, intent["id"])

    settled = await container.payments.record_payment_result(intent["id"], attempt.id, failed(intent))
    assert settled.status == "failed"
    assert await balance(server) == ({"JPY": 700}, {"JPY": 0})
    assert moves(await btx(server)) == [("payment", 700, 700, other["id"])]
    assert await entries(container, intent["id"]) == []
    [hold] = await holds(container, intent["id"])
    assert (hold.status, hold.posted_amount) == ("voided", None)
    # A late "succeeded" for the settled attempt changes nothing.
    await container.payments.record_payment_result(intent["id"], attempt.id, succeeded(intent))
    assert (await view(server, intent["id"]))["status"] == "failed"
    assert await entries(container, intent["id"]) == []
    assert await balance(server) == ({"JPY": 700}, {"JPY": 0})


# ---------------------------------------------------------------------------------------------- external / manual


@pytest.mark.parametrize(("mode", "method"), [("external", "credit_card"), ("manual", "cash")])
async def test_an_authorised_external_payment_is_pending_until_captured(
    server: ServerClient, tenant: Tenant, container: Container, clock: FrozenClock, mode: str, method: str
) -> None:
    intent = await server.create_intent(
        tenant, amount=10000, processing_mode=mode, payment_method_type=method
    )
    assert (await confirm(server, clock, intent["id"]))["status"] == "requires_capture"
    assert await balance(server) == ({"JPY": 0}, {"JPY": 10000})
    assert await btx(server) == []
    # Authorised once: a second confirm is refused and holds nothing more.
    twice = await post(server, clock, f"/v1/payment_intents/{intent['id']}/confirm")
    assert twice.status_code == 409, twice.text
    assert twice.json()["code"] == "invalid_state_transition"
    assert await balance(server) == ({"JPY": 0}, {"JPY": 10000})
    assert len(await holds(container, intent["id"])) == 1
    # Taken outside paymux: the clearing account is named after the processing mode.
    assert await account(container, clearing(tenant, mode)) == (0, 0, 10000)
    assert await account(container, clearing(tenant, "test")) is None

    captured = await capture(server, clock, intent["id"], {"status": "success"})
    assert (captured["status"], captured["amount_captured"]) == ("succeeded", 10000)
    assert await balance(server) == ({"JPY": 10000}, {"JPY": 0})
    assert moves(await btx(server)) == [("payment", 10000, 10000, intent["id"])]
    assert await account(container, clearing(tenant, mode)) == (10000, 0, 0)
    [hold] = await holds(container, intent["id"])
    assert (hold.status, hold.posted_amount) == ("posted", 10000)


async def test_a_partial_capture_posts_the_captured_amount_and_releases_the_rest(
    server: ServerClient, tenant: Tenant, container: Container, clock: FrozenClock
) -> None:
    intent = await server.create_intent(tenant, amount=10000, processing_mode="external")
    await confirm(server, clock, intent["id"])
    captured = await capture(server, clock, intent["id"], {"status": "success", "amount": 6000})
    assert (captured["status"], captured["amount_captured"]) == ("succeeded", 6000)
    assert await balance(server) == ({"JPY": 6000}, {"JPY": 0})
    assert moves(await btx(server)) == [("payment", 6000, 6000, intent["id"])]
    [hold] = await holds(container, intent["id"])
    assert (hold.status, hold.amount, hold.posted_amount) == ("posted", 10000, 6000)
    assert await account(container, clearing(tenant, "external")) == (6000, 0, 0)
    assert await account(container, payable(tenant)) == (6000, 0, 0)


async def test_a_fee_is_charged_on_the_captured_amount(
    server: ServerClient, portal: ServerClient, tenant: Tenant, container: Container, clock: FrozenClock
) -> None:
    await set_fee_rules(portal, clock, tenant, [{"currency": "JPY", "percent_bps": 300, "fixed_amount": 10}])
    intent = await server.create_intent(tenant, amount=10000, processing_mode="external")
    await confirm(server, clock, intent["id"])
    await capture(server, clock, intent["id"], {"status": "success", "amount": 6000})
    # 3 % of 6,000 + 10, not of the 10,000 authorised.
    assert moves(await btx(server)) == [
        ("fee", -190, 5810, intent["id"]),
        ("payment", 6000, 6000, intent["id"]),
    ]
    assert await balance(server) == ({"JPY": 5810}, {"JPY": 0})


@pytest.mark.parametrize(
    ("terminal_status", "intent_status"),
    [("declined", "failed"), ("error", "failed"), ("cancelled", "cancelled")],
)
async def test_an_unsuccessful_capture_releases_the_authorised_amount(
    server: ServerClient,
    tenant: Tenant,
    container: Container,
    clock: FrozenClock,
    terminal_status: str,
    intent_status: str,
) -> None:
    intent = await server.create_intent(tenant, amount=5000, processing_mode="external")
    await confirm(server, clock, intent["id"])
    assert await balance(server) == ({"JPY": 0}, {"JPY": 5000})
    final = await capture(server, clock, intent["id"], {"status": terminal_status, "error_message": "no"})
    assert final["status"] == intent_status
    assert await balance(server) == ({"JPY": 0}, {"JPY": 0})
    assert await btx(server) == []
    assert await entries(container, intent["id"]) == []
    [hold] = await holds(container, intent["id"])
    assert (hold.status, hold.posted_amount) == ("voided", None)


async def test_cancelling_an_authorised_payment_releases_it(
    server: ServerClient, tenant: Tenant, container: Container, clock: FrozenClock
) -> None:
    intent = await server.create_intent(
        tenant, amount=5000, processing_mode="manual", payment_method_type="cash"
    )
    await confirm(server, clock, intent["id"])
    response = await post(
        server, clock, f"/v1/payment_intents/{intent['id']}/cancel", {"cancellation_reason": "left"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    assert await balance(server) == ({"JPY": 0}, {"JPY": 0})
    assert await entries(container, intent["id"]) == []
    assert [hold.status for hold in await holds(container, intent["id"])] == ["voided"]


async def test_a_capture_straight_from_requires_payment_method_books_directly(
    server: ServerClient, tenant: Tenant, container: Container, clock: FrozenClock
) -> None:
    intent = await server.create_intent(
        tenant, amount=2500, processing_mode="manual", payment_method_type="cash"
    )
    captured = await capture(server, clock, intent["id"], {"status": "success", "amount": 2000})
    assert captured["status"] == "succeeded"
    assert await holds(container, intent["id"]) == []  # never authorised through paymux: no hold
    assert await balance(server) == ({"JPY": 2000}, {"JPY": 0})
    assert moves(await btx(server)) == [("payment", 2000, 2000, intent["id"])]
    assert await entry_keys(container, intent["id"]) == [f"{intent['id']}:payment"]
    assert await account(container, clearing(tenant, "manual")) == (2000, 0, 0)


async def test_a_cancelled_intent_that_was_never_confirmed_posts_nothing(
    server: ServerClient, tenant: Tenant, container: Container, clock: FrozenClock
) -> None:
    intent = await server.create_intent(tenant)
    response = await post(
        server, clock, f"/v1/payment_intents/{intent['id']}/cancel", {"cancellation_reason": "x"}
    )
    assert response.status_code == 200, response.text
    assert await holds(container, intent["id"]) == []
    assert await postings_count(container) == 0
    assert await balance(server) == ({}, {})


# ---------------------------------------------------------------------------------------------- refunds


async def test_partial_and_full_refunds_are_negative_and_settle_into_clearing(
    server: ServerClient, tenant: Tenant, container: Container, clock: FrozenClock
) -> None:
    intent = await paid(server, tenant, clock, 1000)
    partial = await refund(server, clock, intent["id"], 300)
    assert partial["status"] == "succeeded"
    assert await balance(server) == ({"JPY": 700}, {"JPY": 0})
    rest = await refund(server, clock, intent["id"])
    assert (rest["status"], rest["amount"]) == ("succeeded", 700)
    assert await balance(server) == ({"JPY": 0}, {"JPY": 0})

    assert moves(await btx(server)) == [
        ("refund", -700, 0, rest["id"]),
        ("refund", -300, 700, partial["id"]),
        ("payment", 1000, 1000, intent["id"]),
    ]
    [row] = await btx(server, f"&source={partial['id']}")
    assert (row["source_type"], row["type"]) == ("refund", "refund")
    for made in (partial, rest):
        assert await entries(container, made["id"]) == ["refund", "refund_settled"]
        assert await entry_keys(container, made["id"]) == [f"{made['id']}:refund", f"{made['id']}:settled"]
    # Settled refunds leave nothing in the refunds account; the provider paid the money back out of clearing.
    assert await account(container, refunds(tenant)) == (0, 0, 0)
    assert await account(container, clearing(tenant)) == (0, 0, 0)
    assert await account(container, payable(tenant)) == (0, 0, 0)


async def test_a_refund_is_set_aside_at_once_and_settled_when_the_provider_answers(
    server: ServerClient, tenant: Tenant, container: Container, clock: FrozenClock
) -> None:
    intent = await paid(server, tenant, clock, 50000)
    pending = await refund(server, clock, intent["id"], 40091)  # the provider's answer times out
    assert pending["status"] == "pending"
    assert await balance(server) == ({"JPY": 50000 - 40091}, {"JPY": 0})
    assert moves(await btx(server, "&type=refund")) == [("refund", -40091, 50000 - 40091, pending["id"])]
    assert await entries(container, pending["id"]) == ["refund"]
    assert await account(container, refunds(tenant)) == (40091, 0, 0)
    assert await account(container, clearing(tenant)) == (50000, 0, 0)

    clock.advance(timedelta(seconds=6))
    assert await container.payments.check_due_refunds() == 1
    assert await entries(container, pending["id"]) == ["refund", "refund_settled"]
    assert await account(container, refunds(tenant)) == (0, 0, 0)
    assert await account(container, clearing(tenant)) == (50000 - 40091, 0, 0)
    # The merchant's balance moved once, when the refund was asked for; settling it is not a balance movement.
    assert await balance(server) == ({"JPY": 50000 - 40091}, {"JPY": 0})
    assert [row["type"] for row in await btx(server)] == ["refund", "payment"]

    # A replayed answer for the settled refund books nothing more.
    answer = ProviderRefund(ProviderRefundStatus.SUCCEEDED, f"test_re_{pending['id']}")
    await container.payments.record_refund_result(pending["id"], answer)
    assert await entries(container, pending["id"]) == ["refund", "refund_settled"]


async def test_a_failed_refund_restores_the_balance(
    server: ServerClient, tenant: Tenant, container: Container, clock: FrozenClock
) -> None:
    intent = await paid(server, tenant, clock, 50000)
    declined = await refund(server, clock, intent["id"], 40022)  # the processor declines it
    assert declined["status"] == "failed"
    assert await balance(server) == ({"JPY": 50000}, {"JPY": 0})
    assert moves(await btx(server)) == [
        ("refund_failure", 40022, 50000, declined["id"]),
        ("refund", -40022, 50000 - 40022, declined["id"]),
        ("payment", 50000, 50000, intent["id"]),
    ]
    assert await entry_keys(container, declined["id"]) == [
        f"{declined['id']}:refund",
        f"{declined['id']}:failed",
    ]
    assert await account(container, refunds(tenant)) == (0, 0, 0)
    assert await account(container, clearing(tenant)) == (50000, 0, 0)  # the provider paid nothing back

    # A failed refund holds nothing back: the whole amount can still be refunded.
    full = await refund(server, clock, intent["id"])
    assert (full["status"], full["amount"]) == ("succeeded", 50000)
    assert await balance(server) == ({"JPY": 0}, {"JPY": 0})
    assert await account(container, clearing(tenant)) == (0, 0, 0)


async def test_a_refund_of_an_external_payment_settles_through_its_channel(
    server: ServerClient, tenant: Tenant, container: Container, clock: FrozenClock
) -> None:
    intent = await server.create_intent(tenant, amount=1000, processing_mode="external")
    await confirm(server, clock, intent["id"])
    await capture(server, clock, intent["id"], {"status": "success", "amount": 600})
    made = await refund(server, clock, intent["id"], 250)
    assert made["status"] == "succeeded"
    assert await balance(server) == ({"JPY": 350}, {"JPY": 0})
    assert moves(await btx(server)) == [
        ("refund", -250, 350, made["id"]),
        ("payment", 600, 600, intent["id"]),
    ]
    assert await entries(container, made["id"]) == ["refund", "refund_settled"]
    assert await account(container, clearing(tenant, "external")) == (350, 0, 0)
    assert await account(container, refunds(tenant)) == (0, 0, 0)


async def test_fees_are_not_returned_on_refunds(
    server: ServerClient, portal: ServerClient, tenant: Tenant, container: Container, clock: FrozenClock
) -> None:
    await set_fee_rules(portal, clock, tenant, [{"currency": "JPY", "percent_bps": 300}])
    intent = await paid(server, tenant, clock, 10000)
    made = await refund(server, clock, intent["id"])
    assert made["amount"] == 10000
    # The merchant refunded everything and still paid the fee: its balance goes below zero (payables have no floor).
    assert await balance(server) == ({"JPY": -300}, {"JPY": 0})
    assert moves(await btx(server)) == [
        ("refund", -10000, -300, made["id"]),
        ("fee", -300, 9700, intent["id"]),
        ("payment", 10000, 10000, intent["id"]),
    ]
    assert await account(container, fees(tenant)) == (300, 0, 0)
    assert await account(container, clearing(tenant)) == (0, 0, 0)


# ---------------------------------------------------------------------------------------------- idempotency


async def test_a_replayed_confirm_books_once(
    server: ServerClient, tenant: Tenant, container: Container, clock: FrozenClock
) -> None:
    intent = await server.create_intent(tenant, amount=1200)
    path = f"/v1/payment_intents/{intent['id']}/confirm"
    first = await post(server, clock, path, idempotency_key="confirm-once")
    assert first.status_code == 200, first.text
    again = await post(server, clock, path, idempotency_key="confirm-once")
    assert again.status_code == 200, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    other_key = await post(server, clock, path, idempotency_key="confirm-twice")
    assert other_key.status_code == 409, other_key.text
    assert other_key.json()["code"] == "invalid_state_transition"

    assert await entries(container, intent["id"]) == ["payment"]
    assert len(await holds(container, intent["id"])) == 1
    assert await balance(server) == ({"JPY": 1200}, {"JPY": 0})
    assert len(await btx(server, f"&source={intent['id']}")) == 1


async def test_replayed_captures_and_refunds_book_once(
    server: ServerClient, tenant: Tenant, container: Container, clock: FrozenClock
) -> None:
    intent = await server.create_intent(tenant, amount=5000, processing_mode="external")
    await confirm(server, clock, intent["id"])
    capture_path = f"/v1/payment_intents/{intent['id']}/capture"
    refund_path = f"/v1/payment_intents/{intent['id']}/refund"
    captured = await post(server, clock, capture_path, {"status": "success"}, idempotency_key="capture-1")
    assert captured.status_code == 200, captured.text
    again = await post(server, clock, capture_path, {"status": "success"}, idempotency_key="capture-1")
    assert (again.status_code, again.headers["idempotent-replayed"]) == (200, "true")

    made = await post(server, clock, refund_path, {"amount": 1000}, idempotency_key="refund-1")
    assert made.status_code == 201, made.text
    replayed = await post(server, clock, refund_path, {"amount": 1000}, idempotency_key="refund-1")
    assert (replayed.status_code, replayed.headers["idempotent-replayed"]) == (201, "true")
    assert replayed.json()["id"] == made.json()["id"]

    assert await entries(container, intent["id"]) == ["payment"]
    assert await entries(container, made.json()["id"]) == ["refund", "refund_settled"]
    assert await balance(server) == ({"JPY": 4000}, {"JPY": 0})
    assert [row["type"] for row in await btx(server)] == ["refund", "payment"]


async def test_recording_a_provider_answer_twice_books_once(
    server: ServerClient, tenant: Tenant, container: Container, clock: FrozenClock
) -> None:
    intent = await server.create_intent(tenant, amount=40091)
    await confirm(server, clock, intent["id"])
    attempt = await payment_attempt(container, intent["id"])
    for _ in range(2):
        settled = await container.payments.record_payment_result(intent["id"], attempt.id, succeeded(intent))
        assert settled.status == "succeeded"
    # And the status check finds nothing left to do.
    clock.advance(timedelta(seconds=6))
    assert await container.payments.check_due_payments() == 0
    assert await container.payments.check_payment(intent["id"]) is not None

    assert await entries(container, intent["id"]) == ["payment"]
    assert await balance(server) == ({"JPY": 40091}, {"JPY": 0})
    assert await account(container, clearing(tenant)) == (40091, 0, 0)


async def test_a_provider_answer_for_a_payment_settled_at_confirm_books_nothing_more(
    server: ServerClient, tenant: Tenant, container: Container, clock: FrozenClock
) -> None:
    intent = await paid(server, tenant, clock, 3000)
    attempt = await payment_attempt(container, intent["id"])
    await container.payments.record_payment_result(intent["id"], attempt.id, succeeded(intent))
    assert await container.payments.check_payment(intent["id"]) is not None
    assert await entries(container, intent["id"]) == ["payment"]
    assert await balance(server) == ({"JPY": 3000}, {"JPY": 0})


async def test_concurrent_answers_for_one_attempt_book_once(
    server: ServerClient, tenant: Tenant, container: Container, clock: FrozenClock
) -> None:
    intent = await server.create_intent(tenant, amount=40091)
    await confirm(server, clock, intent["id"])
    attempt = await payment_attempt(container, intent["id"])
    results = await asyncio.gather(
        *(
            container.payments.record_payment_result(intent["id"], attempt.id, succeeded(intent))
            for _ in range(8)
        )
    )
    assert {result.status for result in results} == {"succeeded"}
    assert await entries(container, intent["id"]) == ["payment"]
    assert await balance(server) == ({"JPY": 40091}, {"JPY": 0})


@pytest.mark.postgres
async def test_concurrent_confirms_book_once(
    server: ServerClient, tenant: Tenant, container: Container, clock: FrozenClock
) -> None:
    intent = await server.create_intent(tenant, amount=1500)
    path = f"/v1/payment_intents/{intent['id']}/confirm"
    now = int(clock.now().timestamp())
    same_key = [server.post(path, timestamp=now + index, idempotency_key="same") for index in range(5)]
    own_keys = [
        server.post(path, timestamp=now + 10 + index, idempotency_key=f"own-{index}") for index in range(5)
    ]
    responses = await asyncio.gather(*same_key, *own_keys)
    assert (
        sum(
            1
            for response in responses
            if response.status_code == 200 and "idempotent-replayed" not in response.headers
        )
        == 1
    )
    for response in responses:
        assert response.status_code in {200, 409}, response.text
    assert await entries(container, intent["id"]) == ["payment"]
    assert len(await holds(container, intent["id"])) == 1
    assert await balance(server) == ({"JPY": 1500}, {"JPY": 0})


async def confirm_at_once(
    server: ServerClient, clock: FrozenClock, intents: list[dict[str, Any]]
) -> list[httpx.Response]:
    """Confirm every intent concurrently, each request signed on its own."""
    clock.advance(1)
    now = int(clock.now().timestamp())
    return list(
        await asyncio.gather(
            *(
                server.post(f"/v1/payment_intents/{intent['id']}/confirm", timestamp=now - index)
                for index, intent in enumerate(intents)
            )
        )
    )


@pytest.mark.postgres
async def test_concurrent_payments_of_one_merchant_each_leave_their_own_balance(
    server: ServerClient, tenant: Tenant, container: Container, clock: FrozenClock
) -> None:
    await paid(server, tenant, clock, 1000)  # the merchant's accounts exist
    created = [await server.create_intent(tenant, amount=1000) for _ in range(10)]
    responses = await confirm_at_once(server, clock, created)
    assert [response.status_code for response in responses] == [200] * 10, [r.text for r in responses]
    assert [response.json()["status"] for response in responses] == ["succeeded"] * 10
    rows = await btx(server)
    # The row lock serialises the bookings: each posting saw the balance the one before it left.
    assert [row["balance_after"] for row in rows] == [1000 * n for n in range(11, 0, -1)]
    assert await balance(server) == ({"JPY": 11000}, {"JPY": 0})
    assert await account(container, clearing(tenant)) == (11000, 0, 0)


@pytest.mark.postgres
async def test_a_payment_racing_the_opening_of_its_accounts_is_booked(
    server: ServerClient, tenant: Tenant, container: Container, clock: FrozenClock
) -> None:
    """Two first bookings of a merchant in a currency race to open its accounts. The interleaving is made exact:
    the other unit of work (`opener`) has opened them but not committed when the confirm's hold runs its UPDATE
    (which sees no row), and commits right after it."""
    intent = await server.create_intent(tenant, amount=1000)
    accounts = MerchantAccounts(tenant.client_partner_id, tenant.merchant_id, "JPY")
    opener = container.db.sessions()
    await opener.begin()
    await container.ledger.book(
        opener,
        transfer(
            "opener:payment",
            debit=accounts.clearing("test"),
            credit=accounts.payable,
            amount=500,
            kind=EntryKind.PAYMENT,
            source_type="test",
            source_id="opener",
        ),
    )
    opener_connection = (await opener.connection()).sync_connection
    fired: list[str] = []

    def commit_the_opener(connection: Any, cursor: Any, statement: str, *args: Any) -> None:
        if fired or connection is opener_connection or not statement.startswith("UPDATE ledger_accounts"):
            return
        fired.append(statement)
        await_only(opener.commit())

    engine = container.db.engine.sync_engine
    event.listen(engine, "after_cursor_execute", commit_the_opener)
    try:
        response = await post(server, clock, f"/v1/payment_intents/{intent['id']}/confirm")
    finally:
        event.remove(engine, "after_cursor_execute", commit_the_opener)
        await opener.close()
    assert fired, "the confirm never updated a ledger account"
    # Nothing here has a floor: no booking can lack funds. Today the confirm gets 409 insufficient_funds.
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "succeeded"
    assert await balance(server) == ({"JPY": 1500}, {"JPY": 0})


# ---------------------------------------------------------------------------------------------- expired holds


async def test_a_payment_that_succeeds_after_its_hold_expired_is_booked_directly(
    server: ServerClient, tenant: Tenant, container: Container, clock: FrozenClock, settings: Settings
) -> None:
    intent = await server.create_intent(tenant, amount=40091)
    await confirm(server, clock, intent["id"])
    assert await container.ledger.expire_holds() == 0  # not yet
    clock.advance(timedelta(seconds=settings.ledger_hold_ttl_seconds - 10))
    assert await container.ledger.expire_holds() == 0
    clock.advance(timedelta(seconds=11))
    assert await container.ledger.expire_holds() == 1
    assert await container.ledger.expire_holds() == 0
    [hold] = await holds(container, intent["id"])
    assert (hold.status, hold.entry_id) == ("expired", None)
    assert await balance(server) == ({"JPY": 0}, {"JPY": 0})
    assert await account(container, clearing(tenant)) == (0, 0, 0)

    assert await container.payments.check_due_payments() == 1  # the charge went through after all
    assert (await view(server, intent["id"]))["status"] == "succeeded"
    assert await balance(server) == ({"JPY": 40091}, {"JPY": 0})
    assert moves(await btx(server)) == [("payment", 40091, 40091, intent["id"])]
    assert await entries(container, intent["id"]) == ["payment"]
    [hold] = await holds(container, intent["id"])
    assert (hold.status, hold.entry_id, hold.posted_amount) == ("expired", None, None)
    assert await account(container, clearing(tenant)) == (40091, 0, 0)


async def test_an_external_capture_after_the_hold_expired_books_the_captured_amount(
    server: ServerClient, tenant: Tenant, container: Container, clock: FrozenClock, settings: Settings
) -> None:
    kept = await server.create_intent(tenant, amount=300, processing_mode="external")
    expiring = await server.create_intent(tenant, amount=1000, processing_mode="external")
    await confirm(server, clock, expiring["id"])
    clock.advance(timedelta(seconds=settings.ledger_hold_ttl_seconds + 1))
    await confirm(server, clock, kept["id"])  # authorised later: its hold is still pending
    assert await balance(server) == ({"JPY": 0}, {"JPY": 1300})
    assert await container.ledger.expire_holds() == 1
    assert await balance(server) == ({"JPY": 0}, {"JPY": 300})

    await capture(server, clock, expiring["id"], {"status": "success", "amount": 600})
    assert await balance(server) == ({"JPY": 600}, {"JPY": 300})
    assert [hold.status for hold in await holds(container, expiring["id"])] == ["expired"]
    await capture(server, clock, kept["id"], {"status": "declined"})
    assert await balance(server) == ({"JPY": 600}, {"JPY": 0})
    assert moves(await btx(server)) == [("payment", 600, 600, expiring["id"])]
    assert await account(container, clearing(tenant, "external")) == (600, 0, 0)


async def test_a_failure_after_the_hold_expired_posts_nothing(
    server: ServerClient, tenant: Tenant, container: Container, clock: FrozenClock, settings: Settings
) -> None:
    intent = await server.create_intent(tenant, amount=40091)
    await confirm(server, clock, intent["id"])
    clock.advance(timedelta(seconds=settings.ledger_hold_ttl_seconds + 1))
    assert await container.ledger.expire_holds() == 1
    attempt = await payment_attempt(container, intent["id"])
    settled = await container.payments.record_payment_result(intent["id"], attempt.id, failed(intent))
    assert settled.status == "failed"
    assert await entries(container, intent["id"]) == []
    assert await balance(server) == ({"JPY": 0}, {"JPY": 0})


# ---------------------------------------------------------------------------------------------- QR payments (PayPay)


@dataclass
class PayPayWorld:
    paymux: str
    sandbox: PayPaySandbox
    server: ServerClient
    sandbox_url: str
    tenant: Tenant
    http: httpx.AsyncClient
    clock: FrozenClock

    async def qr_intent(self, amount: int = 1200) -> dict[str, Any]:
        intent = await self.server.create_intent(self.tenant, amount=amount, payment_method_type="qr_mpm")
        return await confirm(self.server, self.clock, intent["id"])

    async def customer(self, intent_id: str, outcome: str) -> None:
        response = await self.http.post(
            f"{self.sandbox_url}/_sandbox/payments/{intent_id}", json={"outcome": outcome}
        )
        assert response.status_code == 200, response.text

    async def until(self, intent_id: str, status: str) -> dict[str, Any]:
        intent: dict[str, Any] = {}
        for _ in range(800):
            intent = await view(self.server, intent_id)
            if intent["status"] == status:
                return intent
            await asyncio.sleep(0.025)
        pytest.fail(f"{intent_id} never became {status}: {intent.get('status')}")

    async def notify(self, intent_id: str, state: str, order_id: str) -> httpx.Response:
        body = json.dumps(
            {
                "notification_type": "Transaction",
                "merchant_order_id": intent_id,
                "state": state,
                "order_id": order_id,
            },
            separators=(",", ":"),
        ).encode()
        signature = body_signature(DEFAULTS.webhook_secret or "", body)
        return await self.http.post(
            f"{self.paymux}/v1/webhooks/paypay", content=body, headers={"X-PayPay-Signature": signature}
        )


@pytest.fixture
async def paypay(app: FastAPI, container: Container, clock: FrozenClock) -> AsyncIterator[PayPayWorld]:
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
            config = {
                "provider_code": "paypay",
                "credentials": {
                    "api_key": DEFAULTS.api_key,
                    "api_secret": DEFAULTS.api_secret,
                    "merchant_id": DEFAULTS.merchant_id,
                },
                "base_url": sandbox_url,
                "webhook_secret": DEFAULTS.webhook_secret,
            }
            await container.tenants.configure_provider(
                tenant.store_id, ProviderConfigSync.model_validate(config)
            )
            server = ServerClient(http, tenant.client_id, tenant.client_secret, clock)
            yield PayPayWorld(paymux, sandbox, server, sandbox_url, tenant, http, clock)
            await sandbox.webhooks.drain()


async def test_a_qr_payment_awaiting_the_customer_is_pending_until_paid(
    paypay: PayPayWorld, container: Container
) -> None:
    intent = await paypay.qr_intent(1200)
    assert intent["status"] == "requires_action"
    assert await balance(paypay.server) == ({"JPY": 0}, {"JPY": 1200})
    assert await btx(paypay.server) == []
    assert await account(container, clearing(paypay.tenant, "paypay")) == (0, 0, 1200)

    await paypay.customer(intent["id"], "COMPLETED")
    await paypay.until(intent["id"], "succeeded")
    assert await balance(paypay.server) == ({"JPY": 1200}, {"JPY": 0})
    assert moves(await btx(paypay.server)) == [("payment", 1200, 1200, intent["id"])]
    assert await account(container, clearing(paypay.tenant, "paypay")) == (1200, 0, 0)

    made = await refund(paypay.server, paypay.clock, intent["id"], 200)
    assert made["status"] == "succeeded"
    assert await entries(container, made["id"]) == ["refund", "refund_settled"]
    assert await account(container, clearing(paypay.tenant, "paypay")) == (1000, 0, 0)
    assert await balance(paypay.server) == ({"JPY": 1000}, {"JPY": 0})


@pytest.mark.parametrize(
    ("outcome", "status"), [("FAILED", "failed"), ("EXPIRED", "failed"), ("CANCELED", "cancelled")]
)
async def test_a_qr_payment_the_customer_does_not_pay_releases_its_pending_amount(
    paypay: PayPayWorld, container: Container, outcome: str, status: str
) -> None:
    intent = await paypay.qr_intent(1200)
    assert await balance(paypay.server) == ({"JPY": 0}, {"JPY": 1200})
    await paypay.customer(intent["id"], outcome)
    await paypay.until(intent["id"], status)
    assert await balance(paypay.server) == ({"JPY": 0}, {"JPY": 0})
    assert await btx(paypay.server) == []
    assert await entries(container, intent["id"]) == []
    assert [hold.status for hold in await holds(container, intent["id"])] == ["voided"]


async def test_cancelling_a_qr_payment_releases_its_pending_amount(
    paypay: PayPayWorld, container: Container
) -> None:
    intent = await paypay.qr_intent(900)
    response = await post(
        paypay.server,
        paypay.clock,
        f"/v1/payment_intents/{intent['id']}/cancel",
        {"cancellation_reason": "left"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    assert await balance(paypay.server) == ({"JPY": 0}, {"JPY": 0})
    assert await entries(container, intent["id"]) == []
    assert [hold.status for hold in await holds(container, intent["id"])] == ["voided"]


async def unprocessed_notifications(container: Container) -> int:
    async with container.db.reading() as session:
        count = await session.execute(
            select(func.count())
            .select_from(ProviderWebhookEvent)
            .where(ProviderWebhookEvent.processed_at.is_(None))
        )
        return int(count.scalar_one())


async def settled_notifications(container: Container) -> None:
    for _ in range(800):
        if await unprocessed_notifications(container) == 0:
            return
        await asyncio.sleep(0.025)
    pytest.fail("provider notifications were never settled")


async def test_duplicated_provider_webhooks_book_once(paypay: PayPayWorld, container: Container) -> None:
    paypay.sandbox.webhooks.url = None  # the test delivers PayPay's notifications itself
    intent = await paypay.qr_intent(1500)
    await paypay.customer(intent["id"], "COMPLETED")
    order_id = paypay.sandbox.payments[intent["id"]].payment_id or ""
    for _ in range(3):
        response = await paypay.notify(intent["id"], "COMPLETED", order_id)
        assert (response.status_code, response.text) == (200, "OK")
    await paypay.until(intent["id"], "succeeded")
    await settled_notifications(container)
    # Another notification (not a duplicate: another key) makes paymux check again; nothing is left to book.
    response = await paypay.notify(intent["id"], "COMPLETED", f"{order_id}-again")
    assert response.status_code == 200
    await settled_notifications(container)
    assert await container.payments.check_payment(intent["id"]) is not None

    async with container.db.reading() as session:
        recorded = (
            await session.execute(select(func.count()).select_from(ProviderWebhookEvent))
        ).scalar_one()
    assert recorded == 2
    assert await entries(container, intent["id"]) == ["payment"]
    assert await balance(paypay.server) == ({"JPY": 1500}, {"JPY": 0})
    assert moves(await btx(paypay.server)) == [("payment", 1500, 1500, intent["id"])]


async def test_a_payment_reversed_by_its_cancellation_is_a_payment_and_a_full_refund(
    paypay: PayPayWorld, container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    paypay.sandbox.webhooks.url = None
    intent = await paypay.qr_intent(1000)
    await paypay.customer(intent["id"], "COMPLETED")  # paid at PayPay; paymux has not heard yet
    provider = container.providers.get("paypay")
    real_cancel = provider.cancel_payment

    async def cancel_after_a_status_check(credentials: Any, reference: Any) -> None:
        # The worker's status check lands between cancel's two units of work.
        await container.payments.check_payment(reference.payment_intent_id)
        await real_cancel(credentials, reference)

    monkeypatch.setattr(provider, "cancel_payment", cancel_after_a_status_check)
    response = await post(paypay.server, paypay.clock, f"/v1/payment_intents/{intent['id']}/cancel")
    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["amount_refunded"]) == ("succeeded", 1000)

    rows = await btx(paypay.server)
    assert [(row["type"], row["amount"], row["balance_after"]) for row in rows] == [
        ("refund", -1000, 0),
        ("payment", 1000, 1000),
    ]
    reversal = rows[0]["source"]
    assert await entries(container, reversal) == ["refund", "refund_settled"]
    assert await entries(container, intent["id"]) == ["payment"]
    assert await balance(paypay.server) == ({"JPY": 0}, {"JPY": 0})
    assert await account(container, clearing(paypay.tenant, "paypay")) == (0, 0, 0)


# ---------------------------------------------------------------------------------------------- currencies


async def test_each_currency_has_its_own_accounts(
    server: ServerClient, tenant: Tenant, container: Container, clock: FrozenClock
) -> None:
    yen = await paid(server, tenant, clock, 1000)
    dollars = await paid(server, tenant, clock, 1999, currency="USD")
    in_flight = await server.create_intent(tenant, amount=40091, currency="USD")
    await confirm(server, clock, in_flight["id"])
    assert await balance(server) == ({"JPY": 1000, "USD": 1999}, {"JPY": 0, "USD": 40091})
    assert await account(container, payable(tenant, "USD")) == (1999, 0, 40091)
    assert await account(container, clearing(tenant, "test", "USD")) == (1999, 0, 40091)
    assert await account(container, payable(tenant)) == (1000, 0, 0)
    assert moves(await btx(server, "&currency=USD")) == [("payment", 1999, 1999, dollars["id"])]
    assert moves(await btx(server, "&currency=JPY")) == [("payment", 1000, 1000, yen["id"])]
