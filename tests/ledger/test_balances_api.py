"""The balances API (docs/ledger.md, "Balances API"): `GET /v1/balances` and `GET /v1/balance_transactions`.

Balances belong to a merchant: a merchant client sees its own, a partner client names the merchant, a store client
is refused with 403 balances_need_merchant_scope, and another tenant's merchant is a 404 that looks like a
merchant that does not exist. Errors are problem+json. Every request is HMAC-signed through the real app.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from paymux.container import Container
from paymux.core.clock import FrozenClock
from tests.support import ServerClient, Tenant

PROBLEM_JSON = "application/problem+json"
BALANCES = "/v1/balances"
MOVEMENTS = "/v1/balance_transactions"
NO_SUCH_MERCHANT = 987654


# ---------------------------------------------------------------------------------------------- helpers


async def post(server: ServerClient, clock: FrozenClock, path: str, body: Any = None) -> httpx.Response:
    # The test clock is frozen: move it so two identical requests carry two signatures, not one replayed.
    clock.advance(1)
    return await server.post(path, body)


async def paid(
    server: ServerClient, tenant: Tenant, clock: FrozenClock, amount: int, currency: str = "JPY"
) -> dict[str, Any]:
    intent = await server.create_intent(tenant, amount=amount, currency=currency)
    response = await post(server, clock, f"/v1/payment_intents/{intent['id']}/confirm")
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    assert result["status"] == "succeeded", result
    return result


async def in_flight(server: ServerClient, tenant: Tenant, clock: FrozenClock, currency: str = "JPY") -> None:
    """A payment whose provider answer timed out (test provider magic amount 40091): pending."""
    intent = await server.create_intent(tenant, amount=40091, currency=currency)
    response = await post(server, clock, f"/v1/payment_intents/{intent['id']}/confirm")
    assert response.json()["status"] == "processing", response.text


async def refunded(server: ServerClient, clock: FrozenClock, intent_id: str, amount: int) -> dict[str, Any]:
    response = await post(server, clock, f"/v1/payment_intents/{intent_id}/refund", {"amount": amount})
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def get_ok(client: ServerClient, path: str) -> dict[str, Any]:
    response = await client.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    return body


async def listed(client: ServerClient, query: str = "") -> list[dict[str, Any]]:
    page = await get_ok(client, f"{MOVEMENTS}?limit=100{query}")
    assert page["has_more"] is False
    rows: list[dict[str, Any]] = page["data"]
    return rows


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    problem: dict[str, Any] = response.json()
    assert problem["code"] == code
    assert problem["status"] == status
    assert problem["type"] == f"urn:paymux:problem:{code}"
    assert problem["title"]
    assert problem["request_id"] == response.headers["x-request-id"]
    return problem


def balance_body(merchant_id: int, available: dict[str, int], pending: dict[str, int]) -> dict[str, Any]:
    return {
        "object": "balance",
        "merchant_id": merchant_id,
        "available": [{"amount": amount, "currency": currency} for currency, amount in available.items()],
        "pending": [{"amount": amount, "currency": currency} for currency, amount in pending.items()],
    }


def without_request_id(problem: dict[str, Any], merchant_id: int) -> dict[str, Any]:
    """A problem without its request id, and with the merchant id it names replaced by a placeholder."""
    shown = {key: value for key, value in problem.items() if key != "request_id"}
    if isinstance(shown.get("detail"), str):
        shown["detail"] = re.sub(rf"\b{merchant_id}\b", "<id>", shown["detail"])
    return shown


@dataclass(frozen=True)
class Partner:
    """The tenant's partner (acme): its portal client, and a second merchant M-2 with its own client."""

    portal: ServerClient
    sibling: Tenant
    sibling_server: ServerClient


@pytest.fixture
async def partner(
    container: Container, http: httpx.AsyncClient, tenant: Tenant, clock: FrozenClock
) -> Partner:
    client_id, secret = await container.tenants.create_client(
        name="portal", partner_id=tenant.client_partner_id
    )
    result = await container.tenants.bootstrap(
        partner_name="acme", merchant_code="M-2", store_code="MS-1", test_provider=True
    )
    assert result.client_partner_id == tenant.client_partner_id
    assert result.merchant_id != tenant.merchant_id
    sibling = Tenant(
        client_partner_id=result.client_partner_id,
        merchant_id=result.merchant_id,
        store_id=result.store_id,
        client_id=result.client_id,
        client_secret=result.client_secret,
    )
    return Partner(
        portal=ServerClient(http, client_id, secret, clock),
        sibling=sibling,
        sibling_server=ServerClient(http, sibling.client_id, sibling.client_secret, clock),
    )


@pytest.fixture
async def store_server(
    container: Container, http: httpx.AsyncClient, tenant: Tenant, clock: FrozenClock
) -> ServerClient:
    """A point of sale: a client scoped to the tenant's store S-1."""
    client_id, secret = await container.tenants.create_client(
        name="pos",
        partner_id=tenant.client_partner_id,
        merchant_id=tenant.merchant_id,
        store_id=tenant.store_id,
    )
    return ServerClient(http, client_id, secret, clock)


# ---------------------------------------------------------------------------------------------- GET /v1/balances


async def test_a_merchant_sees_its_own_balance(
    server: ServerClient, tenant: Tenant, clock: FrozenClock
) -> None:
    # A merchant that never took a payment has no accounts yet: nothing in any currency.
    assert await get_ok(server, BALANCES) == balance_body(tenant.merchant_id, {}, {})

    await paid(server, tenant, clock, 1000)
    await paid(server, tenant, clock, 2000)
    await in_flight(server, tenant, clock)
    expected = balance_body(tenant.merchant_id, {"JPY": 3000}, {"JPY": 40091})
    assert await get_ok(server, BALANCES) == expected
    # Naming itself is allowed and answers the same.
    assert await get_ok(server, f"{BALANCES}?merchant_id={tenant.merchant_id}") == expected


async def test_balances_are_per_currency_sorted_by_currency(
    server: ServerClient, tenant: Tenant, clock: FrozenClock
) -> None:
    await paid(server, tenant, clock, 1999, "USD")
    await paid(server, tenant, clock, 100000, "JPY")
    await paid(server, tenant, clock, 500, "EUR")
    await paid(server, tenant, clock, 1, "USD")
    await in_flight(server, tenant, clock, "USD")
    assert await get_ok(server, BALANCES) == balance_body(
        tenant.merchant_id,
        {"EUR": 500, "JPY": 100000, "USD": 2000},
        {"EUR": 0, "JPY": 0, "USD": 40091},
    )
    usd = await listed(server, "&currency=USD")
    assert [(row["type"], row["amount"], row["balance_after"]) for row in usd] == [
        ("payment", 1, 2000),
        ("payment", 1999, 1999),
    ]
    assert {row["currency"] for row in await listed(server)} == {"EUR", "JPY", "USD"}


async def test_a_merchant_client_cannot_name_another_merchant(
    server: ServerClient, tenant: Tenant, other_tenant: Tenant, partner: Partner, clock: FrozenClock
) -> None:
    await paid(partner.sibling_server, partner.sibling, clock, 700)
    for path in (BALANCES, MOVEMENTS):
        shown = []
        for merchant_id in (partner.sibling.merchant_id, other_tenant.merchant_id, NO_SUCH_MERCHANT):
            problem = assert_problem(
                await server.get(f"{path}?merchant_id={merchant_id}"), 404, "merchant_not_found"
            )
            shown.append(without_request_id(problem, merchant_id))
        # A sibling's, another tenant's and a made-up merchant look exactly alike.
        assert shown[0] == shown[1] == shown[2]


async def test_a_partner_client_must_name_the_merchant(
    server: ServerClient, tenant: Tenant, partner: Partner, clock: FrozenClock
) -> None:
    await paid(server, tenant, clock, 1000)
    await paid(partner.sibling_server, partner.sibling, clock, 250)

    problem = assert_problem(await partner.portal.get(BALANCES), 403, "balances_need_merchant_scope")
    assert "merchant_id" in problem["detail"]
    assert await get_ok(partner.portal, f"{BALANCES}?merchant_id={tenant.merchant_id}") == balance_body(
        tenant.merchant_id, {"JPY": 1000}, {"JPY": 0}
    )
    assert await get_ok(
        partner.portal, f"{BALANCES}?merchant_id={partner.sibling.merchant_id}"
    ) == balance_body(partner.sibling.merchant_id, {"JPY": 250}, {"JPY": 0})
    # Each merchant's own client sees only itself.
    assert (await get_ok(partner.sibling_server, BALANCES))["available"] == [
        {"amount": 250, "currency": "JPY"}
    ]


async def test_another_tenants_merchant_is_not_found_for_a_partner_client(
    server: ServerClient,
    tenant: Tenant,
    other_server: ServerClient,
    other_tenant: Tenant,
    partner: Partner,
    clock: FrozenClock,
) -> None:
    await paid(other_server, other_tenant, clock, 4000)
    for path in (BALANCES, MOVEMENTS):
        theirs = assert_problem(
            await partner.portal.get(f"{path}?merchant_id={other_tenant.merchant_id}"),
            404,
            "merchant_not_found",
        )
        made_up = assert_problem(
            await partner.portal.get(f"{path}?merchant_id={NO_SUCH_MERCHANT}"), 404, "merchant_not_found"
        )
        assert without_request_id(theirs, other_tenant.merchant_id) == without_request_id(
            made_up, NO_SUCH_MERCHANT
        )
        assert "4000" not in theirs.get("detail", "")


async def test_a_store_client_is_refused_balances(
    store_server: ServerClient, server: ServerClient, tenant: Tenant, clock: FrozenClock
) -> None:
    await paid(server, tenant, clock, 1000)
    for path in (BALANCES, MOVEMENTS, f"{MOVEMENTS}?type=payment&limit=5"):
        assert_problem(await store_server.get(path), 403, "balances_need_merchant_scope")


@pytest.mark.parametrize("path", [BALANCES, MOVEMENTS])
async def test_a_store_client_naming_its_merchant_is_refused_as_a_store_client(
    store_server: ServerClient, tenant: Tenant, path: str
) -> None:
    assert_problem(
        await store_server.get(f"{path}?merchant_id={tenant.merchant_id}"),
        403,
        "balances_need_merchant_scope",
    )


async def test_balances_need_a_signed_request(http: httpx.AsyncClient, server: ServerClient) -> None:
    for path in (BALANCES, MOVEMENTS):
        response = await http.get(path)
        assert response.status_code == 401, response.text
        assert response.headers["content-type"].startswith(PROBLEM_JSON)
        forged = await http.get(path, headers={"Authorization": server.authorization("GET", "/v1/other")})
        assert forged.status_code == 401, forged.text
        assert forged.headers["content-type"].startswith(PROBLEM_JSON)


@pytest.mark.parametrize(
    "query",
    [
        f"{BALANCES}?merchant_id=0",
        f"{BALANCES}?merchant_id=-1",
        f"{BALANCES}?merchant_id=abc",
        f"{BALANCES}?merchant_id={2**53}",
        f"{MOVEMENTS}?merchant_id=0",
        f"{MOVEMENTS}?currency=jpy",
        f"{MOVEMENTS}?currency=JPYY",
        f"{MOVEMENTS}?type=payout",
        f"{MOVEMENTS}?limit=0",
        f"{MOVEMENTS}?limit=101",
        f"{MOVEMENTS}?starting_after=btx%20x",
        f"{MOVEMENTS}?source=pi_{'x' * 70}",
        f"{MOVEMENTS}?source=pi%3Bdrop",
    ],
)
async def test_bad_parameters_are_a_validation_problem(server: ServerClient, query: str) -> None:
    assert_problem(await server.get(query), 422, "validation_error")


# ---------------------------------------------------------------------------------------------- GET /v1/balance_transactions


async def test_balance_transactions_page_newest_first(
    server: ServerClient, tenant: Tenant, clock: FrozenClock
) -> None:
    intents = [await paid(server, tenant, clock, 1000 + n) for n in range(8)]
    for intent in intents[:3]:
        await refunded(server, clock, intent["id"], 100)
    everything = await listed(server)
    assert len(everything) == 11
    ids = [row["id"] for row in everything]
    assert len(set(ids)) == 11
    assert ids == sorted(ids, reverse=True)
    assert [row["type"] for row in everything] == ["refund"] * 3 + ["payment"] * 8
    assert [row["source"] for row in everything[3:]] == [intent["id"] for intent in reversed(intents)]

    # The default page is 10.
    first = await get_ok(server, MOVEMENTS)
    assert (first["data"], first["has_more"]) == (everything[:10], True)

    # Walk it four at a time.
    walked: list[dict[str, Any]] = []
    cursor = ""
    pages = []
    while True:
        page = await get_ok(server, f"{MOVEMENTS}?limit=4{cursor}")
        walked += page["data"]
        pages.append((len(page["data"]), page["has_more"]))
        if not page["has_more"]:
            break
        cursor = f"&starting_after={page['data'][-1]['id']}"
    assert pages == [(4, True), (4, True), (3, False)]
    assert walked == everything

    # Boundaries: exactly all rows is not "more"; after the oldest there is nothing.
    exact = await get_ok(server, f"{MOVEMENTS}?limit=11")
    assert (len(exact["data"]), exact["has_more"]) == (11, False)
    assert await get_ok(server, f"{MOVEMENTS}?starting_after={ids[-1]}") == {"data": [], "has_more": False}

    # The cursor works with a filter too.
    refunds = await get_ok(server, f"{MOVEMENTS}?type=refund&limit=2")
    assert (refunds["data"], refunds["has_more"]) == (everything[:2], True)
    rest = await get_ok(server, f"{MOVEMENTS}?type=refund&limit=2&starting_after={refunds['data'][-1]['id']}")
    assert (rest["data"], rest["has_more"]) == (everything[2:3], False)


async def test_balance_after_chains_each_currency_to_the_available_balance(
    server: ServerClient, tenant: Tenant, clock: FrozenClock
) -> None:
    first = await paid(server, tenant, clock, 50000)
    await paid(server, tenant, clock, 3000, "USD")
    await refunded(server, clock, first["id"], 40022)  # declined: refund, then refund_failure
    await refunded(server, clock, first["id"], 1000)
    await paid(server, tenant, clock, 7, "USD")
    body = await get_ok(server, BALANCES)
    available = {row["currency"]: row["amount"] for row in body["available"]}
    assert available == {"JPY": 49000, "USD": 3007}
    for currency, total in available.items():
        oldest_first = list(reversed(await listed(server, f"&currency={currency}")))
        running = 0
        for row in oldest_first:
            running += row["amount"]
            assert row["balance_after"] == running, row
        assert running == total
    assert [row["type"] for row in await listed(server, "&currency=JPY")] == [
        "refund",
        "refund_failure",
        "refund",
        "payment",
    ]


async def test_balance_transactions_filter_by_type_currency_and_source(
    server: ServerClient, tenant: Tenant, clock: FrozenClock
) -> None:
    yen = await paid(server, tenant, clock, 1000)
    dollars = await paid(server, tenant, clock, 2000, "USD")
    refund = await refunded(server, clock, yen["id"], 400)

    payments = await listed(server, "&type=payment")
    assert [row["source"] for row in payments] == [dollars["id"], yen["id"]]
    assert [row["type"] for row in await listed(server, "&type=refund")] == ["refund"]
    assert await listed(server, "&type=fee") == []
    assert [row["source"] for row in await listed(server, "&currency=USD")] == [dollars["id"]]
    assert await listed(server, "&currency=EUR") == []
    assert [(row["type"], row["amount"]) for row in await listed(server, f"&source={yen['id']}")] == [
        ("payment", 1000)
    ]
    [by_refund] = await listed(server, f"&source={refund['id']}")
    assert (by_refund["type"], by_refund["amount"], by_refund["source_type"]) == ("refund", -400, "refund")
    assert await listed(server, f"&source={yen['id']}&currency=USD") == []
    assert await listed(server, f"&type=refund&currency=JPY&source={refund['id']}") == [by_refund]
    assert await listed(server, "&source=pi_00000000000000000000000000") == []


async def test_a_balance_transaction_is_a_posting_to_the_payable_account(
    server: ServerClient, tenant: Tenant, clock: FrozenClock
) -> None:
    intent = await paid(server, tenant, clock, 1234)
    [row] = await listed(server)
    assert set(row) == {
        "object",
        "id",
        "merchant_id",
        "type",
        "amount",
        "currency",
        "balance_after",
        "source_type",
        "source",
        "entry_id",
        "description",
        "created_at",
    }
    assert row["object"] == "balance_transaction"
    assert re.fullmatch(r"btx_[0-9A-Z]{26}", row["id"])
    assert re.fullmatch(r"je_[0-9A-Z]{26}", row["entry_id"])
    assert (row["merchant_id"], row["type"], row["amount"], row["currency"], row["balance_after"]) == (
        tenant.merchant_id,
        "payment",
        1234,
        "JPY",
        1234,
    )
    assert (row["source_type"], row["source"], row["description"]) == ("payment_intent", intent["id"], None)
    assert row["created_at"] == intent["updated_at"]
    # Only the merchant's side of each entry is a balance transaction: the clearing leg is not listed.
    assert await listed(server, f"&source={intent['id']}") == [row]


async def test_a_partner_lists_its_merchants_movements_and_filters_by_merchant(
    server: ServerClient,
    tenant: Tenant,
    other_server: ServerClient,
    other_tenant: Tenant,
    partner: Partner,
    clock: FrozenClock,
) -> None:
    mine = await paid(server, tenant, clock, 1000)
    siblings = await paid(partner.sibling_server, partner.sibling, clock, 250)
    await paid(other_server, other_tenant, clock, 9999)

    everything = await listed(partner.portal)
    assert [(row["merchant_id"], row["source"]) for row in everything] == [
        (partner.sibling.merchant_id, siblings["id"]),
        (tenant.merchant_id, mine["id"]),
    ]
    assert [row["source"] for row in await listed(partner.portal, f"&merchant_id={tenant.merchant_id}")] == [
        mine["id"]
    ]
    sibling_rows = await listed(partner.portal, f"&merchant_id={partner.sibling.merchant_id}")
    assert sibling_rows == await listed(partner.sibling_server)
    assert [row["source"] for row in sibling_rows] == [siblings["id"]]


async def test_another_tenant_never_sees_these_movements(
    server: ServerClient,
    tenant: Tenant,
    other_server: ServerClient,
    other_tenant: Tenant,
    container: Container,
    http: httpx.AsyncClient,
    clock: FrozenClock,
) -> None:
    mine = await paid(server, tenant, clock, 1000)
    refund = await refunded(server, clock, mine["id"], 100)
    theirs = await paid(other_server, other_tenant, clock, 3000)
    client_id, secret = await container.tenants.create_client(
        name="globex-portal", partner_id=other_tenant.client_partner_id
    )
    other_portal = ServerClient(http, client_id, secret, clock)

    for intruder in (other_server, other_portal):
        rows = await listed(intruder)
        assert [row["source"] for row in rows] == [theirs["id"]]
        assert await listed(intruder, f"&source={mine['id']}") == []
        assert await listed(intruder, f"&source={refund['id']}") == []
        assert await listed(intruder, "&type=refund") == []
    assert await get_ok(other_server, BALANCES) == balance_body(
        other_tenant.merchant_id, {"JPY": 3000}, {"JPY": 0}
    )
    # A cursor taken from my movements shows them nothing of mine either.
    mine_rows = await listed(server)
    assert [row["source"] for row in mine_rows] == [refund["id"], mine["id"]]
    for row in mine_rows:
        page = await get_ok(other_server, f"{MOVEMENTS}?starting_after={row['id']}&limit=100")
        assert all(item["merchant_id"] == other_tenant.merchant_id for item in page["data"])
    # And mine never shows theirs.
    assert await listed(server, f"&source={theirs['id']}") == []
    assert await get_ok(server, BALANCES) == balance_body(tenant.merchant_id, {"JPY": 900}, {"JPY": 0})
