"""The admin API (docs/security.md, "Authorisation" and "Portal users").

Portal users manage the tenant tree (partners, merchants, stores), API clients, users and POS devices, each within
the permission matrix and its own tenant scope: a client created here signs real HMAC requests until its secret is
rotated or it is revoked; users are managed only by a wider role, never by themselves; a role change or a disabled
account closes the user's sessions; only a SYSTEM_OP rotates the token signing key. A merchant admin of one
merchant gets, for every object of another merchant, the same answer as for an id that does not exist, and never
finds another merchant's objects in a list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest

from paymux.auth.models import User
from paymux.config import Settings
from paymux.container import Container
from paymux.core.clock import FrozenClock
from paymux.gateway.principal import Principal, Role
from tests.portal import (
    PASSWORD,
    Cast,
    Portal,
    claims_of,
    device_public_jwk,
    login,
    sign_in,
    sign_in_cast,
    signed_in,
)
from tests.support import ServerClient, Tenant, assert_problem, intent_body, ok

REFRESH = "/api/v1/auth/refresh"
PARTNERS = "/api/v1/partners"
MERCHANTS = "/api/v1/merchants"
STORES = "/api/v1/stores"
USERS = "/api/v1/users"
API_CLIENTS = "/api/v1/api_clients"
DEVICES = "/api/v1/devices"
ROTATE_KEY = "/api/v1/signing_keys/rotate"
AUDIT_EVENTS = "/api/v1/audit_events"
NO_SUCH_TENANT = 987654


# ---------------------------------------------------------------------------------------------- helpers


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The suite's settings, with room for the isolation sweep: every portal request here comes from one address,
    and the sweep sends more than the default per-IP limit allows in a minute."""
    return settings.model_copy(update={"ratelimit_ip": "2000/minute"})


def assert_same_404(aimed: httpx.Response, missing: httpx.Response) -> None:
    """An object outside the caller's scope answers exactly like one that does not exist."""
    assert aimed.status_code == 404, aimed.text
    assert (aimed.status_code, aimed.json()["code"]) == (missing.status_code, missing.json()["code"])


def ids(page: dict[str, Any]) -> list[Any]:
    return [item["id"] for item in page["data"]]


async def every_page(portal: Portal, path: str, **params: Any) -> list[list[Any]]:
    """The ids of a list route, page by page (pages of 2), following starting_after until has_more is false."""
    pages: list[list[Any]] = []
    after: Any = None
    while True:
        query = {"limit": 2, **params} | ({"starting_after": after} if after is not None else {})
        page = ok(await portal.get(path, **query))
        pages.append(ids(page))
        if not page["has_more"]:
            return pages
        assert len(page["data"]) == 2
        after = page["data"][-1]["id"]


@pytest.fixture
async def cast(http: httpx.AsyncClient, container: Container, tenant: Tenant, other_tenant: Tenant) -> Cast:
    return await sign_in_cast(http, container, tenant, other_tenant)


# ---------------------------------------------------------------------------------------------- partners


async def test_a_system_op_creates_partners_and_a_psp_admin_sees_only_its_own(
    cast: Cast, tenant: Tenant, other_tenant: Tenant
) -> None:
    initech = ok(await cast.op.post(PARTNERS, {"name": "initech"}), 201)
    # Without an id the partner takes the next free one; the portal may name its own.
    assert initech["object"] == "client_partner"
    assert initech["id"] == max(tenant.client_partner_id, other_tenant.client_partner_id) + 1
    assert initech["name"] == "initech"
    umbrella = ok(await cast.op.post(PARTNERS, {"id": 500, "name": "umbrella"}), 201)
    assert umbrella["id"] == 500
    assert ok(await cast.op.get(f"{PARTNERS}/500")) == umbrella

    assert_problem(await cast.op.post(PARTNERS, {"name": "initech"}), 409, "tenant_conflict")
    assert_problem(await cast.op.post(PARTNERS, {"id": 500, "name": "umbrella 2"}), 409, "tenant_conflict")

    every = [tenant.client_partner_id, other_tenant.client_partner_id, initech["id"], 500]
    assert await every_page(cast.op, PARTNERS) == [every[:2], every[2:]]

    # A PSP admin reads its own partner only; another partner reads like one that does not exist.
    assert ids(ok(await cast.acme_psp.get(PARTNERS))) == [tenant.client_partner_id]
    assert ok(await cast.acme_psp.get(f"{PARTNERS}/{tenant.client_partner_id}"))["name"] == "acme"
    for partner_id in (other_tenant.client_partner_id, 500, NO_SUCH_TENANT):
        assert_problem(await cast.acme_psp.get(f"{PARTNERS}/{partner_id}"), 404, "partner_not_found")
    assert_problem(await cast.acme_psp.post(PARTNERS, {"name": "mine"}), 403, "operation_forbidden")

    # Partners are not a merchant user's business at all.
    for portal in (cast.acme_admin, cast.acme_manager, cast.acme_staff):
        assert_problem(await portal.get(PARTNERS), 403, "operation_forbidden")
        assert_problem(await portal.get(f"{PARTNERS}/{tenant.client_partner_id}"), 403, "operation_forbidden")
        assert_problem(await portal.post(PARTNERS, {"name": "mine"}), 403, "operation_forbidden")
    assert ids(ok(await cast.op.get(PARTNERS, limit=100))) == every


# ---------------------------------------------------------------------------------------------- merchants


async def test_merchants_are_created_read_changed_and_listed_in_scope(
    cast: Cast, tenant: Tenant, other_tenant: Tenant, server: ServerClient
) -> None:
    # A PSP admin's merchant lands in its own partner without naming it.
    second = ok(await cast.acme_psp.post(MERCHANTS, {"merchant_code": "M-2", "name": "Second"}), 201)
    assert second["object"] == "merchant"
    assert (second["client_partner_id"], second["merchant_code"], second["name"], second["is_active"]) == (
        tenant.client_partner_id,
        "M-2",
        "Second",
        True,
    )
    third = ok(
        await cast.acme_psp.post(
            MERCHANTS, {"id": 300, "client_partner_id": tenant.client_partner_id, "merchant_code": "M-3"}
        ),
        201,
    )
    assert third["id"] == 300
    assert_problem(await cast.acme_psp.post(MERCHANTS, {"merchant_code": "M-2"}), 409, "tenant_conflict")
    assert_problem(
        await cast.acme_psp.post(MERCHANTS, {"id": 300, "merchant_code": "M-9"}), 409, "tenant_conflict"
    )
    # Another partner is out of scope and reads like one that does not exist.
    assert_same_404(
        *[
            await cast.acme_psp.post(MERCHANTS, {"client_partner_id": partner_id, "merchant_code": "X"})
            for partner_id in (other_tenant.client_partner_id, NO_SUCH_TENANT)
        ]
    )
    # A SYSTEM_OP has no partner of its own to default to.
    assert_problem(await cast.op.post(MERCHANTS, {"merchant_code": "X"}), 422, "validation_error")
    globex_2 = ok(
        await cast.op.post(
            MERCHANTS, {"client_partner_id": other_tenant.client_partner_id, "merchant_code": "G-2"}
        ),
        201,
    )
    # Merchant users may read their merchant but not create or change merchants.
    assert_problem(await cast.acme_admin.post(MERCHANTS, {"merchant_code": "X"}), 403, "operation_forbidden")
    assert_problem(
        await cast.acme_admin.patch(f"{MERCHANTS}/{tenant.merchant_id}", {"name": "Mine"}),
        403,
        "operation_forbidden",
    )

    path = f"{MERCHANTS}/{second['id']}"
    assert ok(await cast.acme_psp.get(path)) == second
    renamed = ok(await cast.acme_psp.patch(path, {"name": "Second Shop"}))
    assert (renamed["name"], renamed["is_active"]) == ("Second Shop", True)
    disabled = ok(await cast.acme_psp.patch(path, {"is_active": False}))
    assert (disabled["name"], disabled["is_active"]) == ("Second Shop", False)
    assert ok(await cast.acme_psp.get(path)) == disabled
    assert_problem(await cast.acme_psp.patch(path, {"is_active": None}), 422, "validation_error")
    assert_problem(await cast.acme_psp.patch(path, {"merchant_code": "M-X"}), 422, "validation_error")

    # A disabled merchant takes no payments.
    ok(await cast.acme_psp.patch(f"{MERCHANTS}/{tenant.merchant_id}", {"is_active": False}))
    assert_problem(await server.post("/v1/payment_intents", intent_body(tenant)), 409, "store_inactive")
    ok(await cast.acme_psp.patch(f"{MERCHANTS}/{tenant.merchant_id}", {"is_active": True}))

    # Lists follow the scope and page by id.
    acme_merchants = [tenant.merchant_id, second["id"], 300]
    assert await every_page(cast.acme_psp, MERCHANTS) == [acme_merchants[:2], acme_merchants[2:]]
    assert ids(ok(await cast.acme_admin.get(MERCHANTS))) == [tenant.merchant_id]
    assert ok(await cast.acme_admin.get(f"{MERCHANTS}/{tenant.merchant_id}"))["merchant_code"] == "M-1"
    assert_problem(await cast.acme_admin.get(path), 404, "merchant_not_found")
    assert sorted(ids(ok(await cast.op.get(MERCHANTS, limit=100)))) == sorted(
        [*acme_merchants, other_tenant.merchant_id, globex_2["id"]]
    )
    # Another partner's merchant is a 404 to read and to change, just like a merchant that does not exist.
    for merchant_id in (other_tenant.merchant_id, globex_2["id"], NO_SUCH_TENANT):
        assert_problem(await cast.acme_psp.get(f"{MERCHANTS}/{merchant_id}"), 404, "merchant_not_found")
        assert_problem(
            await cast.acme_psp.patch(f"{MERCHANTS}/{merchant_id}", {"name": "Mine now"}),
            404,
            "merchant_not_found",
        )
    assert ok(await cast.op.get(f"{MERCHANTS}/{other_tenant.merchant_id}"))["name"] is None


async def test_store_users_read_their_stores_merchant_and_no_other(
    cast: Cast, tenant: Tenant, other_tenant: Tenant
) -> None:
    # docs/security.md: STORE_MANAGER and STAFF see "that store's merchant (read), that store".
    for portal in (cast.acme_manager, cast.acme_staff):
        assert ids(ok(await portal.get(MERCHANTS))) == [tenant.merchant_id]
        assert ok(await portal.get(f"{MERCHANTS}/{tenant.merchant_id}"))["id"] == tenant.merchant_id
        assert_problem(await portal.get(f"{MERCHANTS}/{other_tenant.merchant_id}"), 404, "merchant_not_found")


async def test_a_merchant_naming_a_partner_outside_the_scope_is_tenant_not_found(
    cast: Cast, other_tenant: Tenant
) -> None:
    # docs/security.md, "Scope": naming a tenant outside the scope is the same 404 tenant_not_found as naming one
    # that does not exist.
    for partner_id in (other_tenant.client_partner_id, NO_SUCH_TENANT):
        assert_problem(
            await cast.acme_psp.post(MERCHANTS, {"client_partner_id": partner_id, "merchant_code": "X"}),
            404,
            "tenant_not_found",
        )


# ---------------------------------------------------------------------------------------------- stores


async def test_stores_are_created_read_changed_and_listed_in_scope(
    cast: Cast, tenant: Tenant, other_tenant: Tenant, server: ServerClient, clock: FrozenClock
) -> None:
    fee = {"currency": "JPY", "percent_bps": 325}
    # A merchant admin's store lands in its own merchant (and partner) without naming it.
    second = ok(
        await cast.acme_admin.post(STORES, {"store_code": "S-2", "name": "Second", "fee_rules": [fee]}), 201
    )
    assert second["object"] == "store"
    assert {key: second[key] for key in ("merchant_id", "client_partner_id", "store_code", "name")} == {
        "merchant_id": tenant.merchant_id,
        "client_partner_id": tenant.client_partner_id,
        "store_code": "S-2",
        "name": "Second",
    }
    assert (second["is_active"], second["fee_rules"]) == (
        True,
        [{"currency": "JPY", "percent_bps": 325, "fixed_amount": 0}],
    )
    third = ok(
        await cast.acme_psp.post(STORES, {"id": 700, "merchant_id": tenant.merchant_id, "store_code": "S-3"}),
        201,
    )
    assert (third["id"], third["merchant_id"], third["fee_rules"]) == (700, tenant.merchant_id, [])

    assert_problem(await cast.acme_admin.post(STORES, {"store_code": "S-2"}), 409, "tenant_conflict")
    assert_problem(
        await cast.acme_admin.post(STORES, {"id": tenant.store_id, "store_code": "S-9"}),
        409,
        "tenant_conflict",
    )
    # A PSP admin has several merchants: it must say which.
    assert_problem(await cast.acme_psp.post(STORES, {"store_code": "S-4"}), 422, "validation_error")
    # Another merchant is out of scope and reads like one that does not exist.
    assert_same_404(
        *[
            await cast.acme_admin.post(STORES, {"merchant_id": merchant_id, "store_code": "X"})
            for merchant_id in (other_tenant.merchant_id, NO_SUCH_TENANT)
        ]
    )
    for portal in (cast.acme_manager, cast.acme_staff):
        assert_problem(await portal.post(STORES, {"store_code": "X"}), 403, "operation_forbidden")
        assert_problem(
            await portal.patch(f"{STORES}/{tenant.store_id}", {"name": "Mine"}), 403, "operation_forbidden"
        )

    path = f"{STORES}/{second['id']}"
    assert ok(await cast.acme_admin.get(path)) == second
    changed = ok(
        await cast.acme_admin.patch(
            path,
            {"name": "Second Shop", "fee_rules": [{"currency": "USD", "percent_bps": 0, "fixed_amount": 30}]},
        )
    )
    assert (changed["name"], changed["is_active"], changed["fee_rules"]) == (
        "Second Shop",
        True,
        [{"currency": "USD", "percent_bps": 0, "fixed_amount": 30}],
    )
    # Fields left out stay as they are; an empty list removes every fee.
    assert ok(await cast.acme_admin.patch(path, {"is_active": False}))["fee_rules"] == changed["fee_rules"]
    cleared = ok(await cast.acme_admin.patch(path, {"fee_rules": []}))
    assert (cleared["name"], cleared["is_active"], cleared["fee_rules"]) == ("Second Shop", False, [])
    assert ok(await cast.acme_admin.get(path)) == cleared
    assert_problem(await cast.acme_admin.patch(path, {"is_active": None}), 422, "validation_error")
    assert_problem(await cast.acme_admin.patch(path, {"store_code": "S-X"}), 422, "validation_error")

    # A disabled store takes no payments; enabled again, it does.
    refused = await server.post("/v1/payment_intents", intent_body(tenant, store_id=second["id"]))
    assert_problem(refused, 409, "store_inactive")
    ok(await cast.acme_admin.patch(path, {"is_active": True}))
    assert (await server.create_intent(tenant, store_id=second["id"]))["store_id"] == second["id"]
    ok(await cast.acme_admin.patch(path, {"is_active": False}))

    # Lists follow the scope and page by id; a store user sees its own store only.
    acme_stores = [tenant.store_id, second["id"], 700]
    assert await every_page(cast.acme_admin, STORES) == [acme_stores[:2], acme_stores[2:]]
    assert await every_page(cast.acme_psp, STORES, merchant_id=tenant.merchant_id) == [
        acme_stores[:2],
        acme_stores[2:],
    ]
    assert ids(ok(await cast.acme_admin.get(STORES, merchant_id=other_tenant.merchant_id))) == []
    for portal in (cast.acme_manager, cast.acme_staff):
        assert ids(ok(await portal.get(STORES))) == [tenant.store_id]
        assert ok(await portal.get(f"{STORES}/{tenant.store_id}"))["id"] == tenant.store_id
        assert_problem(await portal.get(path), 404, "store_not_found")
    assert other_tenant.store_id in ids(ok(await cast.op.get(STORES, limit=100)))
    # Another merchant's store is a 404 to read and to change, like a store that does not exist.
    for store_id in (other_tenant.store_id, NO_SUCH_TENANT):
        assert_problem(await cast.acme_admin.get(f"{STORES}/{store_id}"), 404, "store_not_found")
        assert_problem(
            await cast.acme_admin.patch(f"{STORES}/{store_id}", {"is_active": False}), 404, "store_not_found"
        )
        assert_problem(await cast.acme_psp.get(f"{STORES}/{store_id}"), 404, "store_not_found")
    assert ok(await cast.op.get(f"{STORES}/{other_tenant.store_id}"))["is_active"] is True


async def test_a_store_naming_a_merchant_outside_the_scope_is_tenant_not_found(
    cast: Cast, other_tenant: Tenant
) -> None:
    # docs/security.md, "Scope": "a MERCHANT_ADMIN makes API clients, stores, users and devices of its merchant
    # [...] Naming a tenant outside the scope is the same 404 tenant_not_found as naming one that does not exist."
    for merchant_id in (other_tenant.merchant_id, NO_SUCH_TENANT):
        assert_problem(
            await cast.acme_admin.post(STORES, {"merchant_id": merchant_id, "store_code": "X"}),
            404,
            "tenant_not_found",
        )


async def test_a_store_has_at_most_one_fee_rule_per_currency(cast: Cast, tenant: Tenant) -> None:
    # docs/ledger.md: "A store has at most one fee rule per currency".
    twice = [{"currency": "JPY", "percent_bps": 100}, {"currency": "JPY", "percent_bps": 900}]
    assert_problem(
        await cast.acme_admin.post(STORES, {"store_code": "S-2", "fee_rules": twice}), 422, "validation_error"
    )
    assert_problem(
        await cast.acme_admin.patch(f"{STORES}/{tenant.store_id}", {"fee_rules": twice}),
        422,
        "validation_error",
    )


async def test_a_fee_rule_reads_the_same_whether_set_at_creation_or_by_a_change(
    cast: Cast, tenant: Tenant
) -> None:
    rule = {"currency": "USD", "fixed_amount": 30}
    created = ok(await cast.acme_admin.post(STORES, {"store_code": "S-2", "fee_rules": [rule]}), 201)
    assert created["fee_rules"] == [{"currency": "USD", "percent_bps": 0, "fixed_amount": 30}]
    changed = ok(await cast.acme_admin.patch(f"{STORES}/{tenant.store_id}", {"fee_rules": [rule]}))
    assert changed["fee_rules"] == created["fee_rules"]


# ---------------------------------------------------------------------------------------------- API clients


async def test_an_api_client_made_through_the_admin_api_signs_until_rotated_or_revoked(
    http: httpx.AsyncClient, cast: Cast, tenant: Tenant, clock: FrozenClock
) -> None:
    created = ok(await cast.acme_admin.post(API_CLIENTS, {"name": "pos backend"}), 201)
    assert created["object"] == "api_client"
    assert created["id"].startswith("cli_")
    assert created["client_secret"].startswith("sk_")
    assert (created["name"], created["client_partner_id"], created["merchant_id"], created["store_id"]) == (
        "pos backend",
        tenant.client_partner_id,
        tenant.merchant_id,
        None,
    )
    assert created["revoked_at"] is None
    # The secret is shown once: reading the client never shows it again.
    shown = ok(await cast.acme_admin.get(f"{API_CLIENTS}/{created['id']}"))
    assert "client_secret" not in shown
    assert shown == {key: value for key, value in created.items() if key != "client_secret"}

    first = ServerClient(http, created["id"], created["client_secret"], clock)
    intent = await first.create_intent(tenant)
    assert intent["merchant_id"] == tenant.merchant_id

    rotated = ok(await cast.acme_admin.post(f"{API_CLIENTS}/{created['id']}/rotate_secret"))
    assert rotated["id"] == created["id"]
    assert rotated["client_secret"].startswith("sk_")
    assert rotated["client_secret"] != created["client_secret"]
    clock.advance(1)
    # The old secret stops verifying at once; the new one works.
    assert_problem(await first.get("/v1/payment_intents"), 401, "invalid_signature")
    second = ServerClient(http, created["id"], rotated["client_secret"], clock)
    assert ok(await second.get(f"/v1/payment_intents/{intent['id']}"))["id"] == intent["id"]

    revoked = ok(await cast.acme_admin.post(f"{API_CLIENTS}/{created['id']}/revoke"))
    assert revoked["revoked_at"] is not None
    assert "client_secret" not in revoked
    assert_problem(await second.get("/v1/payment_intents"), 401, "unknown_client")
    assert_problem(await second.post("/v1/payment_intents", intent_body(tenant)), 401, "unknown_client")
    # Revoking again changes nothing; a revoked client gets no new secret.
    assert ok(await cast.acme_admin.post(f"{API_CLIENTS}/{created['id']}/revoke")) == revoked
    assert_problem(
        await cast.acme_admin.post(f"{API_CLIENTS}/{created['id']}/rotate_secret"), 409, "api_client_revoked"
    )

    # A store-scoped client sees its store only, not the merchant's other stores.
    store_client = ok(
        await cast.acme_admin.post(API_CLIENTS, {"name": "till", "store_id": tenant.store_id}), 201
    )
    assert (store_client["merchant_id"], store_client["store_id"]) == (tenant.merchant_id, tenant.store_id)
    annex = ok(await cast.acme_admin.post(STORES, {"store_code": "S-2"}), 201)["id"]
    elsewhere = await ServerClient(http, tenant.client_id, tenant.client_secret, clock).create_intent(
        tenant, store_id=annex
    )
    till = ServerClient(http, store_client["id"], store_client["client_secret"], clock)
    assert ids(ok(await till.get("/v1/payment_intents"))) == [intent["id"]]
    assert_problem(await till.get(f"/v1/payment_intents/{elsewhere['id']}"), 404, "payment_intent_not_found")


async def test_a_client_is_made_only_within_the_admins_scope(
    http: httpx.AsyncClient, cast: Cast, tenant: Tenant, other_tenant: Tenant, clock: FrozenClock
) -> None:
    acme_partner = {"name": "x", "client_partner_id": tenant.client_partner_id}
    # A merchant admin may not make a partner-wide client, nor one of another merchant or its store.
    for body in (
        acme_partner,
        {"name": "x", "merchant_id": other_tenant.merchant_id},
        {"name": "x", "store_id": other_tenant.store_id},
        {"name": "x", "client_partner_id": other_tenant.client_partner_id},
        {"name": "x", "merchant_id": NO_SUCH_TENANT},
        {"name": "x", "store_id": NO_SUCH_TENANT},
        # Ids that do not belong together are no better.
        {"name": "x", "merchant_id": tenant.merchant_id, "store_id": other_tenant.store_id},
    ):
        assert_problem(await cast.acme_admin.post(API_CLIENTS, body), 404, "tenant_not_found")
        if body is not acme_partner:
            assert_problem(await cast.acme_psp.post(API_CLIENTS, body), 404, "tenant_not_found")
    # The PSP admin may: a partner-wide client is its own scope.
    partner_wide = ok(await cast.acme_psp.post(API_CLIENTS, acme_partner), 201)
    assert (partner_wide["client_partner_id"], partner_wide["merchant_id"], partner_wide["store_id"]) == (
        tenant.client_partner_id,
        None,
        None,
    )
    # A SYSTEM_OP has no scope of its own to default to.
    assert_problem(await cast.op.post(API_CLIENTS, {"name": "x"}), 404, "tenant_not_found")
    anywhere = ok(await cast.op.post(API_CLIENTS, {"name": "x", "store_id": other_tenant.store_id}), 201)
    assert (anywhere["client_partner_id"], anywhere["merchant_id"]) == (
        other_tenant.client_partner_id,
        other_tenant.merchant_id,
    )
    for portal in (cast.acme_manager, cast.acme_staff):
        assert_problem(await portal.post(API_CLIENTS, {"name": "x"}), 403, "operation_forbidden")
        assert_problem(await portal.get(API_CLIENTS), 403, "operation_forbidden")
        assert_problem(await portal.get(f"{API_CLIENTS}/{tenant.client_id}"), 403, "operation_forbidden")

    # An API client is no admin of API clients.
    server = ServerClient(http, tenant.client_id, tenant.client_secret, clock)
    assert_problem(await server.post(API_CLIENTS, {"name": "x"}), 403, "operation_forbidden")


async def test_api_clients_are_listed_and_read_in_scope(
    http: httpx.AsyncClient, cast: Cast, tenant: Tenant, other_tenant: Tenant, clock: FrozenClock
) -> None:
    made = [ok(await cast.acme_admin.post(API_CLIENTS, {"name": f"client {n}"}), 201)["id"] for n in range(2)]
    partner_wide = ok(await cast.acme_psp.post(API_CLIENTS, {"name": "sync"}), 201)["id"]
    # Newest first, by id.
    acme_merchant = sorted([tenant.client_id, *made], reverse=True)
    assert await every_page(cast.acme_admin, API_CLIENTS) == [acme_merchant[:2], acme_merchant[2:]]
    assert ids(ok(await cast.acme_psp.get(API_CLIENTS, limit=100))) == sorted(
        [*acme_merchant, partner_wide], reverse=True
    )
    assert set(ids(ok(await cast.op.get(API_CLIENTS, limit=100)))) == {
        *acme_merchant,
        partner_wide,
        other_tenant.client_id,
    }
    assert ids(ok(await cast.globex_admin.get(API_CLIENTS))) == [other_tenant.client_id]

    # Outside the scope a client is a 404 to read, rotate or revoke, exactly like one that does not exist,
    # and nothing happens to it.
    for client_id in (partner_wide, other_tenant.client_id, "cli_" + "0" * 26):
        assert_problem(await cast.acme_admin.get(f"{API_CLIENTS}/{client_id}"), 404, "api_client_not_found")
        for action in ("rotate_secret", "revoke"):
            assert_problem(
                await cast.acme_admin.post(f"{API_CLIENTS}/{client_id}/{action}"), 404, "api_client_not_found"
            )
    other = ServerClient(http, other_tenant.client_id, other_tenant.client_secret, clock)
    assert ok(await other.get("/v1/payment_intents"))["data"] == []
    assert ok(await cast.acme_psp.get(f"{API_CLIENTS}/{partner_wide}"))["revoked_at"] is None


# ---------------------------------------------------------------------------------------------- users


async def test_a_merchant_admin_creates_store_users_of_its_merchant_only(
    http: httpx.AsyncClient, container: Container, cast: Cast, tenant: Tenant, other_tenant: Tenant
) -> None:
    admin = cast.acme_admin

    def new_user(email: str, role: Role, **scope: int) -> dict[str, Any]:
        return {"email": email, "password": PASSWORD, "role": role, **scope}

    manager = ok(
        await admin.post(USERS, new_user("Kim@Acme.example", Role.STORE_MANAGER, store_id=tenant.store_id)),
        201,
    )
    assert manager["object"] == "user"
    assert {
        key: manager[key] for key in ("email", "role", "client_partner_id", "merchant_id", "store_id")
    } == {
        "email": "kim@acme.example",
        "role": "STORE_MANAGER",
        "client_partner_id": tenant.client_partner_id,
        "merchant_id": tenant.merchant_id,
        "store_id": tenant.store_id,
    }
    assert manager["is_active"] is True
    assert "password" not in manager
    assert "password_hash" not in manager
    staff = ok(
        await admin.post(USERS, new_user("lee@acme.example", Role.STAFF, store_id=tenant.store_id)), 201
    )
    assert ok(await admin.get(f"{USERS}/{staff['id']}")) == staff

    # The new user signs in with the password it was given, with its role and scope in the token.
    claims = claims_of((await signed_in(http, await container.users.get(manager["id"]))).access_token)
    assert (claims["sub"], claims["role"], claims["psp_id"], claims["merchant_id"], claims["store_id"]) == (
        manager["id"],
        "STORE_MANAGER",
        tenant.client_partner_id,
        tenant.merchant_id,
        tenant.store_id,
    )

    # Rank: only narrower roles.
    for role, scope in (
        (Role.MERCHANT_ADMIN, {"merchant_id": tenant.merchant_id}),
        (Role.PSP_ADMIN, {"client_partner_id": tenant.client_partner_id}),
        (Role.SYSTEM_OP, {}),
    ):
        assert_problem(
            await admin.post(USERS, new_user(f"{role.lower()}@acme.example", role, **scope)),
            403,
            "operation_forbidden",
        )
    # Scope: another merchant's store reads like a store that does not exist.
    for store_id in (other_tenant.store_id, NO_SUCH_TENANT):
        assert_problem(
            await admin.post(USERS, new_user("far@acme.example", Role.STAFF, store_id=store_id)),
            404,
            "tenant_not_found",
        )
    assert_problem(
        await admin.post(
            USERS,
            new_user(
                "far@acme.example", Role.STAFF, merchant_id=tenant.merchant_id, store_id=other_tenant.store_id
            ),
        ),
        404,
        "tenant_not_found",
    )
    # A store role needs a store; the admin's own scope (a merchant) does not fit it.
    assert_problem(
        await admin.post(USERS, new_user("nostore@acme.example", Role.STAFF)), 422, "invalid_user_scope"
    )
    assert_problem(
        await admin.post(USERS, new_user("LEE@acme.example", Role.STAFF, store_id=tenant.store_id)),
        409,
        "email_taken",
    )
    assert_problem(
        await admin.post(USERS, {**new_user("short@acme.example", Role.STAFF), "password": "too short"}),
        422,
        "validation_error",
    )

    # A store manager manages staff of its own store only; staff manage nobody.
    store_2 = ok(await admin.post(STORES, {"store_code": "S-2"}), 201)["id"]
    kim = await signed_in(http, await container.users.get(manager["id"]))
    made = ok(await kim.post(USERS, new_user("pat@acme.example", Role.STAFF)), 201)
    assert made["store_id"] == tenant.store_id
    assert_problem(
        await kim.post(USERS, new_user("sam@acme.example", Role.STAFF, store_id=store_2)),
        404,
        "tenant_not_found",
    )
    assert_problem(
        await kim.post(USERS, new_user("sam@acme.example", Role.STORE_MANAGER)), 403, "operation_forbidden"
    )
    assert_problem(
        await cast.acme_staff.post(USERS, new_user("sam@acme.example", Role.STAFF)),
        403,
        "operation_forbidden",
    )
    assert_problem(await cast.acme_staff.get(USERS), 403, "operation_forbidden")
    # The PSP admin makes merchant admins of its partner; the SYSTEM_OP makes anyone.
    psp_made = ok(
        await cast.acme_psp.post(
            USERS, new_user("boss@acme.example", Role.MERCHANT_ADMIN, merchant_id=tenant.merchant_id)
        ),
        201,
    )
    assert (psp_made["client_partner_id"], psp_made["store_id"]) == (tenant.client_partner_id, None)
    assert (
        ok(await cast.op.post(USERS, new_user("op2@paymux.example", Role.SYSTEM_OP)), 201)[
            "client_partner_id"
        ]
        is None
    )


async def test_users_are_listed_and_read_in_scope(cast: Cast, tenant: Tenant, other_tenant: Tenant) -> None:
    acme_merchant_users = sorted([cast.acme_admin.id, cast.acme_manager.id, cast.acme_staff.id], reverse=True)
    assert await every_page(cast.acme_admin, USERS) == [acme_merchant_users[:2], acme_merchant_users[2:]]
    assert ids(ok(await cast.acme_admin.get(USERS, role="STAFF"))) == [cast.acme_staff.id]
    assert ids(ok(await cast.acme_psp.get(USERS, limit=100))) == sorted(
        [*acme_merchant_users, cast.acme_psp.id], reverse=True
    )
    assert ids(ok(await cast.acme_manager.get(USERS, limit=100))) == sorted(
        [cast.acme_manager.id, cast.acme_staff.id], reverse=True
    )
    assert len(ids(ok(await cast.op.get(USERS, limit=100)))) == 7

    outsiders = (cast.globex_admin.id, cast.globex_psp.id, cast.op.id, "usr_" + "0" * 26)
    for user_id in outsiders:
        assert_problem(await cast.acme_admin.get(f"{USERS}/{user_id}"), 404, "user_not_found")
        assert_problem(
            await cast.acme_admin.patch(f"{USERS}/{user_id}", {"is_active": False}), 404, "user_not_found"
        )
    for user_id in (cast.acme_psp.id, cast.globex_admin.id):
        assert_problem(await cast.acme_manager.get(f"{USERS}/{user_id}"), 404, "user_not_found")
    assert ok(await cast.op.get(f"{USERS}/{cast.globex_admin.id}"))["is_active"] is True


async def test_a_role_change_or_disabling_closes_the_users_sessions(
    http: httpx.AsyncClient, container: Container, cast: Cast, tenant: Tenant, other_tenant: Tenant
) -> None:
    staff = cast.acme_staff
    store_2 = ok(await cast.acme_admin.post(STORES, {"store_code": "S-2"}), 201)["id"]
    promoted = ok(
        await cast.acme_admin.patch(
            f"{USERS}/{staff.id}", {"role": "STORE_MANAGER", "store_id": tenant.store_id}
        )
    )
    assert (promoted["role"], promoted["store_id"]) == ("STORE_MANAGER", tenant.store_id)
    # The old session carried the old role: it may not be renewed.
    assert_problem(
        await http.post(REFRESH, json={"refresh_token": staff.refresh_token}), 401, "invalid_refresh_token"
    )
    again = await signed_in(http, staff.user)
    assert claims_of(again.access_token)["role"] == "STORE_MANAGER"

    # Moving to another store is a scope change: the session closes again, the next one has the new store.
    moved = ok(await cast.acme_admin.patch(f"{USERS}/{staff.id}", {"store_id": store_2}))
    assert (moved["role"], moved["store_id"]) == ("STORE_MANAGER", store_2)
    assert_problem(
        await http.post(REFRESH, json={"refresh_token": again.refresh_token}), 401, "invalid_refresh_token"
    )
    claims = claims_of((await signed_in(http, staff.user)).access_token)
    assert (claims["role"], claims["store_id"]) == ("STORE_MANAGER", store_2)

    # A change that changes nothing, or is refused, leaves the session alone.
    current = await signed_in(http, staff.user)
    assert ok(await cast.acme_admin.patch(f"{USERS}/{staff.id}", {"is_active": True}))["is_active"] is True
    for store_id in (other_tenant.store_id, NO_SUCH_TENANT):
        assert_problem(
            await cast.acme_admin.patch(f"{USERS}/{staff.id}", {"store_id": store_id}),
            404,
            "tenant_not_found",
        )
    assert (await container.users.get(staff.id)).store_id == store_2
    renewed = ok(await http.post(REFRESH, json={"refresh_token": current.refresh_token}))

    # Disabled, the user can neither renew its session nor sign in, until it is enabled again.
    disabled = ok(await cast.acme_admin.patch(f"{USERS}/{staff.id}", {"is_active": False}))
    assert disabled["is_active"] is False
    assert_problem(await login(http, staff.user.email), 401, "invalid_credentials")
    assert_problem(
        await http.post(REFRESH, json={"refresh_token": renewed["refresh_token"]}),
        401,
        "invalid_refresh_token",
    )
    assert ok(await cast.acme_admin.patch(f"{USERS}/{staff.id}", {"is_active": True}))["is_active"] is True
    assert claims_of((await signed_in(http, staff.user)).access_token)["sub"] == staff.id


async def test_no_user_promotes_itself_or_manages_its_equals(
    http: httpx.AsyncClient, container: Container, cast: Cast, tenant: Tenant
) -> None:
    other_admin = await sign_in(
        http, container, "admin2@acme.example", Role.MERCHANT_ADMIN, merchant=tenant.merchant_id
    )
    for portal, change in (
        (cast.acme_admin, {"role": "PSP_ADMIN", "client_partner_id": tenant.client_partner_id}),
        (cast.acme_admin, {"role": "SYSTEM_OP"}),
        (cast.acme_admin, {"is_active": False}),
        (cast.acme_psp, {"role": "SYSTEM_OP"}),
        (cast.acme_manager, {"role": "MERCHANT_ADMIN", "merchant_id": tenant.merchant_id}),
        (cast.acme_staff, {"role": "STORE_MANAGER", "store_id": tenant.store_id}),
    ):
        response = await portal.patch(f"{USERS}/{portal.id}", change)
        assert response.status_code == 403, (portal.user.role, change, response.text)
        assert claims_of((await signed_in(http, portal.user)).access_token)["role"] == portal.user.role
    # Nor may an admin manage a user of its own rank, or raise one to it.
    assert_problem(
        await cast.acme_admin.patch(f"{USERS}/{other_admin.id}", {"is_active": False}),
        403,
        "operation_forbidden",
    )
    assert_problem(
        await cast.acme_admin.patch(
            f"{USERS}/{cast.acme_staff.id}", {"role": "MERCHANT_ADMIN", "merchant_id": tenant.merchant_id}
        ),
        403,
        "operation_forbidden",
    )
    assert_problem(
        await cast.acme_manager.patch(
            f"{USERS}/{cast.acme_staff.id}", {"role": "STORE_MANAGER", "store_id": tenant.store_id}
        ),
        403,
        "operation_forbidden",
    )
    assert (await container.users.get(cast.acme_staff.id)).role == "STAFF"
    assert (await container.users.get(other_admin.id)).is_active is True


# ---------------------------------------------------------------------------------------------- devices


async def test_devices_are_registered_listed_and_revoked_in_scope(
    cast: Cast, tenant: Tenant, other_tenant: Tenant
) -> None:
    jwk = device_public_jwk()
    body = {"store_id": tenant.store_id, "serial_number": "ABC123", "jwk": jwk, "scopes": ["payment:read"]}
    device = ok(await cast.acme_manager.post(DEVICES, body), 201)
    assert device["object"] == "device"
    assert device["id"] == device["client_id"]
    assert device["id"].startswith("dev_")
    assert (device["merchant_id"], device["store_id"], device["scopes"]) == (
        tenant.merchant_id,
        tenant.store_id,
        ["payment:read"],
    )
    assert device["jwk"] == {key: jwk[key] for key in ("kty", "crv", "x", "y")}
    assert_problem(await cast.acme_admin.post(DEVICES, body), 409, "device_exists")
    # docs/security.md: naming a tenant outside the scope is the same 404 tenant_not_found as naming none.
    for store_id in (other_tenant.store_id, NO_SUCH_TENANT):
        assert_problem(
            await cast.acme_admin.post(DEVICES, {**body, "store_id": store_id, "serial_number": "X"}),
            404,
            "tenant_not_found",
        )
    assert_problem(
        await cast.acme_staff.post(DEVICES, {**body, "serial_number": "X"}), 403, "operation_forbidden"
    )

    assert ids(ok(await cast.acme_admin.get(DEVICES))) == [device["id"]]
    assert ids(ok(await cast.acme_admin.get(DEVICES, store_id=other_tenant.store_id))) == []
    assert ids(ok(await cast.globex_admin.get(DEVICES))) == []
    assert_problem(await cast.globex_admin.get(f"{DEVICES}/{device['id']}"), 404, "device_not_found")
    assert_problem(await cast.globex_admin.post(f"{DEVICES}/{device['id']}/revoke"), 404, "device_not_found")

    revoked = ok(await cast.acme_admin.post(f"{DEVICES}/{device['id']}/revoke"))
    assert revoked["revoked_at"] is not None
    assert ok(await cast.acme_admin.get(f"{DEVICES}/{device['id']}")) == revoked
    # The serial may be registered again, with a new key.
    again = ok(await cast.acme_admin.post(DEVICES, {**body, "jwk": device_public_jwk()}), 201)
    assert again["id"] != device["id"]
    assert sorted(ids(ok(await cast.acme_admin.get(DEVICES)))) == sorted([device["id"], again["id"]])


# ---------------------------------------------------------------------------------------------- signing keys


async def test_only_a_system_op_rotates_the_signing_key(
    http: httpx.AsyncClient, cast: Cast, server: ServerClient
) -> None:
    before = jwt.get_unverified_header(cast.op.access_token)["kid"]
    for portal in (cast.acme_psp, cast.acme_admin, cast.acme_manager, cast.acme_staff):
        assert_problem(await portal.post(ROTATE_KEY), 403, "operation_forbidden")
    assert_problem(await server.post(ROTATE_KEY), 403, "operation_forbidden")
    assert (
        jwt.get_unverified_header((await signed_in(http, cast.acme_admin.user)).access_token)["kid"] == before
    )

    kid = ok(await cast.op.post(ROTATE_KEY))["kid"]
    assert kid.startswith("key_")
    assert kid != before
    fresh = await signed_in(http, cast.acme_admin.user)
    assert jwt.get_unverified_header(fresh.access_token)["kid"] == kid
    # Tokens signed with the previous key keep working until they expire; both keys are published.
    assert ok(await cast.op.get(PARTNERS))["data"]
    assert {before, kid} <= {key["kid"] for key in ok(await http.get("/.well-known/jwks.json"))["keys"]}
    assert ok(await fresh.get(MERCHANTS))["data"]


# ---------------------------------------------------------------------------------------------- isolation


NO_SUCH = {
    "merchant": str(NO_SUCH_TENANT),
    "store": str(NO_SUCH_TENANT),
    "user": "usr_" + "0" * 26,
    "client": "cli_" + "0" * 26,
    "device": "dev_" + "0" * 26,
    "endpoint": "we_" + "0" * 26,
    "intent": "pi_" + "0" * 26,
    "transaction": "txn_" + "0" * 26,
    "event": "evt_" + "0" * 26,
}


@dataclass(frozen=True)
class Probe:
    """One id-taking route, aimed at an object of the other merchant (`kind` says which)."""

    method: str
    template: str
    kind: str
    body: dict[str, Any] | None = None
    matrix_forbids: bool = False  # a merchant admin may never call it, whoever's object it names

    def path(self, object_id: str) -> str:
        return self.template.format(id=object_id)


PROBES = [
    Probe("GET", "/api/v1/merchants/{id}", "merchant"),
    Probe("PATCH", "/api/v1/merchants/{id}", "merchant", {"name": "taken over"}, matrix_forbids=True),
    Probe("GET", "/api/v1/stores/{id}", "store"),
    Probe("PATCH", "/api/v1/stores/{id}", "store", {"name": "taken over", "is_active": False}),
    Probe("GET", "/v1/stores/{id}/provider_configs", "store"),
    Probe("GET", "/api/v1/users/{id}", "user"),
    Probe("PATCH", "/api/v1/users/{id}", "user", {"is_active": False}),
    Probe("GET", "/api/v1/api_clients/{id}", "client"),
    Probe("POST", "/api/v1/api_clients/{id}/rotate_secret", "client"),
    Probe("POST", "/api/v1/api_clients/{id}/revoke", "client"),
    Probe("GET", "/api/v1/devices/{id}", "device"),
    Probe("POST", "/api/v1/devices/{id}/revoke", "device"),
    Probe("GET", "/v1/webhook_endpoints/{id}", "endpoint"),
    Probe("PATCH", "/v1/webhook_endpoints/{id}", "endpoint", {"enabled": False}),
    Probe("POST", "/v1/webhook_endpoints/{id}/rotate_secret", "endpoint"),
    Probe("GET", "/v1/webhook_endpoints/{id}/deliveries", "endpoint"),
    Probe("DELETE", "/v1/webhook_endpoints/{id}", "endpoint"),
    Probe("GET", "/v1/payment_intents/{id}", "intent"),
    Probe("GET", "/v1/payment_intents/{id}/transactions", "intent"),
    Probe("POST", "/v1/payment_intents/{id}/confirm", "intent", {}, matrix_forbids=True),
    Probe("POST", "/v1/payment_intents/{id}/cancel", "intent", {}),
    Probe("POST", "/v1/payment_intents/{id}/capture", "intent", {}),
    Probe("POST", "/v1/payment_intents/{id}/refund", "intent", {"amount": 1}),
    Probe("GET", "/v1/transactions/{id}", "transaction"),
    Probe("GET", "/v1/events/{id}", "event"),
    Probe("POST", "/v1/events/{id}/redeliver", "event", {}),
]


async def populate(
    container: Container, server: ServerClient, tenant: Tenant, admin: User, clock: FrozenClock
) -> dict[str, str]:
    """One object of each kind in a merchant, made by its own server and the operator; returns their ids."""
    device = await container.devices.register(
        Principal.operator("ops"),
        store_id=tenant.store_id,
        serial_number=f"SN-{tenant.merchant_id}",
        jwk=device_public_jwk(),
        scopes=["payment:create"],
    )
    endpoint = ok(await server.post("/v1/webhook_endpoints", {"url": "http://127.0.0.1:9/hooks"}), 201)
    intent = await server.create_intent(tenant)
    clock.advance(1)
    ok(await server.post(f"/v1/payment_intents/{intent['id']}/confirm", {}))
    transactions = ok(await server.get(f"/v1/payment_intents/{intent['id']}/transactions"))["data"]
    events = ok(await server.get("/v1/events"))["data"]
    return {
        "merchant": str(tenant.merchant_id),
        "store": str(tenant.store_id),
        "user": admin.id,
        "client": tenant.client_id,
        "device": device.id,
        "endpoint": endpoint["id"],
        "intent": intent["id"],
        "transaction": transactions[0]["id"],
        "event": events[0]["id"],
    }


VIEWS = {
    "merchant": "/api/v1/merchants/{id}",
    "store": "/api/v1/stores/{id}",
    "user": "/api/v1/users/{id}",
    "client": "/api/v1/api_clients/{id}",
    "device": "/api/v1/devices/{id}",
    "endpoint": "/v1/webhook_endpoints/{id}",
    "intent": "/v1/payment_intents/{id}",
    "event": "/v1/events/{id}",
}
LISTS = {
    "merchant": MERCHANTS,
    "store": STORES,
    "user": USERS,
    "client": API_CLIENTS,
    "device": DEVICES,
    "endpoint": "/v1/webhook_endpoints",
    "intent": "/v1/payment_intents",
    "event": "/v1/events",
}


def creations(merchant_id: int, store_id: int) -> list[tuple[str, dict[str, Any]]]:
    """A create request of each kind, placed in the given merchant or store."""
    return [
        (STORES, {"merchant_id": merchant_id, "store_code": "intruder"}),
        (USERS, {"email": "x@x.example", "password": PASSWORD, "role": "STAFF", "store_id": store_id}),
        (API_CLIENTS, {"name": "intruder", "store_id": store_id}),
        (
            DEVICES,
            {
                "store_id": store_id,
                "serial_number": "X",
                "jwk": device_public_jwk(),
                "scopes": ["payment:read"],
            },
        ),
        ("/v1/webhook_endpoints", {"url": "http://127.0.0.1:9/x", "merchant_id": merchant_id}),
        (
            "/v1/payment_intents",
            {
                "merchant_ref_id": "intruder",
                "amount": 1000,
                "currency": "JPY",
                "store_id": store_id,
                "payment_method_type": "credit_card",
                "processing_mode": "pgw_processed",
            },
        ),
    ]


async def test_a_merchant_admin_finds_nothing_of_another_merchant(
    http: httpx.AsyncClient,
    container: Container,
    cast: Cast,
    tenant: Tenant,
    other_tenant: Tenant,
    server: ServerClient,
    other_server: ServerClient,
    clock: FrozenClock,
) -> None:
    """Every id-taking route, aimed by acme's merchant admin (and its partner admin and a store manager) at
    globex's objects, answers as for an id that does not exist; lists never show globex's objects."""
    mine = await populate(container, server, tenant, cast.acme_admin.user, clock)
    theirs = await populate(container, other_server, other_tenant, cast.globex_admin.user, clock)
    their_views = {
        kind: ok(await cast.globex_admin.get(path.format(id=theirs[kind]))) for kind, path in VIEWS.items()
    }

    intruders = (cast.acme_admin, cast.acme_psp, cast.acme_manager)
    for intruder in intruders:
        for probe in PROBES:
            clock.advance(1)
            aimed = await intruder.request(probe.method, probe.path(theirs[probe.kind]), probe.body)
            missing = await intruder.request(probe.method, probe.path(NO_SUCH[probe.kind]), probe.body)
            where = (intruder.user.role, probe.method, probe.template)
            # Never a success, and never an answer that tells their object from one that does not exist.
            assert aimed.status_code in (403, 404), (where, aimed.text)
            answers = [(answer.status_code, answer.json()["code"]) for answer in (aimed, missing)]
            assert answers[0] == answers[1], (where, aimed.text, missing.text)
            if aimed.status_code == 403:
                # A refusal by the matrix alone, which names no object.
                assert aimed.json()["code"] == "operation_forbidden", (where, aimed.text)
                assert theirs[probe.kind] not in aimed.json()["detail"], where
            if intruder is cast.acme_admin:
                assert aimed.status_code == (403 if probe.matrix_forbids else 404), (where, aimed.text)

        # Naming their merchant or store when creating something answers as for a tenant that does not exist.
        for (path, aimed_body), (_, missing_body) in zip(
            creations(other_tenant.merchant_id, other_tenant.store_id),
            creations(NO_SUCH_TENANT, NO_SUCH_TENANT),
            strict=True,
        ):
            aimed, missing = await intruder.post(path, aimed_body), await intruder.post(path, missing_body)
            where = (intruder.user.role, "POST", path)
            assert aimed.status_code >= 400, (where, aimed.text)
            answers = [(answer.status_code, answer.json()["code"]) for answer in (aimed, missing)]
            assert answers[0] == answers[1], (where, aimed.text, missing.text)

    # List routes never show their objects, not even when asked for them by filter; they do show ours.
    admin = cast.acme_admin
    for kind, path in LISTS.items():
        listed = [str(item) for item in ids(ok(await admin.get(path, limit=100)))]
        assert mine[kind] in listed, (path, listed)
        assert theirs[kind] not in listed, (path, listed)
    assert ids(ok(await admin.get(STORES, merchant_id=other_tenant.merchant_id))) == []
    assert ids(ok(await admin.get(DEVICES, store_id=other_tenant.store_id))) == []
    audit = ok(await admin.get(AUDIT_EVENTS, limit=100))["data"]
    assert audit
    assert {event["merchant_id"] for event in audit} == {tenant.merchant_id}
    for kind in ("device", "endpoint", "user", "intent"):
        assert ok(await admin.get(AUDIT_EVENTS, object_id=theirs[kind]))["data"] == []
    assert ok(await admin.get(AUDIT_EVENTS, actor_id=theirs["client"]))["data"] == []
    assert ok(await admin.get(AUDIT_EVENTS, actor_id=theirs["user"]))["data"] == []

    # And every probe left their objects as they were.
    for kind, path in VIEWS.items():
        assert ok(await cast.globex_admin.get(path.format(id=theirs[kind]))) == their_views[kind], kind
    clock.advance(1)
    assert ok(await other_server.get("/v1/payment_intents"))["data"]
    assert (await signed_in(http, cast.globex_admin.user)).access_token


async def test_impersonating_another_tenants_user_reads_like_an_unknown_user(cast: Cast) -> None:
    # docs/security.md, "Tenant isolation": another tenant's object is answered exactly like one that does not
    # exist. The PSP admin may impersonate, the merchant admin may not; neither may learn which user ids exist.
    for intruder in (cast.acme_admin, cast.acme_psp):
        aimed = await intruder.post("/api/v1/auth/impersonate", {"user_id": cast.globex_admin.id})
        missing = await intruder.post("/api/v1/auth/impersonate", {"user_id": NO_SUCH["user"]})
        assert (aimed.status_code, aimed.json()["code"]) == (missing.status_code, missing.json()["code"])
