"""The audit log (docs/security.md, "Audit log").

Every audited act writes one row naming who acted (and who impersonated them), what was done to which object of
which tenant, when, from which address, and the details; the row commits with the act, so an act that fails leaves
none and a row that cannot be written undoes the act. A failed sign-in for an unknown email writes nothing. Rows
cannot be changed (both backends) or deleted (PostgreSQL). `GET /api/v1/audit_events` lists the log newest first,
each admin only its own part of it, with filters and cursor pagination.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from paymux.audit.models import AuditEvent
from paymux.container import Container
from paymux.core.clock import FrozenClock
from paymux.gateway.principal import CallerType, Principal, Role
from tests.portal import (
    LOGIN,
    PASSWORD,
    Cast,
    Portal,
    device_key_pair,
    device_token_response,
    make_user,
    register_device,
    sign_in,
    sign_in_cast,
    signed_in,
)
from tests.reconciliation.support import csv_bytes, exceptions_of, iso, uploaded
from tests.support import ServerClient, Tenant, assert_problem, bearer, bootstrap_tenant, ok

AUDIT_EVENTS = "/api/v1/audit_events"
IMPERSONATE = "/api/v1/auth/impersonate"
HTTP_IP = "203.0.113.7"  # the `http` fixture's client address
ELSEWHERE_IP = "198.51.100.9"


# ---------------------------------------------------------------------------------------------- helpers


@pytest.fixture
async def elsewhere(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client calling from another address than the `http` fixture."""
    transport = httpx.ASGITransport(app=app, client=(ELSEWHERE_IP, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://paymux.test") as client:
        yield client


async def rows(container: Container, **where: Any) -> list[AuditEvent]:
    """Audit rows, oldest first, whose columns equal `where`."""
    statement = select(AuditEvent)
    for column, value in where.items():
        statement = statement.where(getattr(AuditEvent, column) == value)
    async with container.db.reading() as session:
        return list((await session.execute(statement.order_by(AuditEvent.id))).scalars())


async def row_count(container: Container) -> int:
    async with container.db.reading() as session:
        return int((await session.execute(select(func.count()).select_from(AuditEvent))).scalar_one())


async def the_row(container: Container, action: str, object_id: str) -> AuditEvent:
    (row,) = await rows(container, action=action, object_id=object_id)
    return row


def who(row: AuditEvent) -> tuple[str, str, str | None, str | None]:
    return (row.actor_type, row.actor_id, row.actor_role, row.impersonated_by)


def what(row: AuditEvent) -> tuple[str, str, str, int | None, int | None, int | None]:
    return (row.action, row.object_type, row.object_id, row.client_partner_id, row.merchant_id, row.store_id)


def listed_ids(page: dict[str, Any]) -> list[str]:
    return [event["id"] for event in page["data"]]


def flat(pages: list[list[str]]) -> list[str]:
    return [item for page in pages for item in page]


async def every_page(portal: Portal, **filters: Any) -> list[list[str]]:
    """The audit event ids a caller lists, page by page (pages of 3)."""
    pages: list[list[str]] = []
    after: str | None = None
    while True:
        query = {"limit": 3, **filters} | ({"starting_after": after} if after else {})
        page = ok(await portal.get(AUDIT_EVENTS, **query))
        pages.append(listed_ids(page))
        if not page["has_more"]:
            return pages
        after = page["data"][-1]["id"]


async def device_access_token(
    http: httpx.AsyncClient, container: Container, clock: FrozenClock, store_id: int
) -> str:
    """A registered POS device's access token, got the way a terminal gets it (a signed client assertion)."""
    device_id, key = await register_device(
        container, store_id, ["payment:read"], serial_number="POS-1", operator="ops"
    )
    token: str = (await device_token_response(http, device_id, key, clock))["access_token"]
    return token


async def paid_intent(server: ServerClient, tenant: Tenant, clock: FrozenClock, amount: int) -> str:
    """A payment the built-in test provider has taken."""
    intent = await server.create_intent(tenant, amount=amount)
    clock.advance(1)
    confirmed = ok(await server.post(f"/v1/payment_intents/{intent['id']}/confirm", {}))
    assert confirmed["status"] == "succeeded"
    intent_id: str = intent["id"]
    return intent_id


# ---------------------------------------------------------------------------------------------- sign-in


async def test_sign_ins_failures_and_the_lockout_are_audited_with_the_callers_address(
    http: httpx.AsyncClient,
    elsewhere: httpx.AsyncClient,
    container: Container,
    tenant: Tenant,
    clock: FrozenClock,
) -> None:
    user = await make_user(container, "ada@acme.example", Role.MERCHANT_ADMIN, merchant=tenant.merchant_id)
    tenant_ids = (tenant.client_partner_id, tenant.merchant_id, None)

    # The address is the peer's: an X-Forwarded-For from an untrusted peer is not believed.
    signed = await http.post(
        LOGIN, json={"email": user.email, "password": PASSWORD}, headers={"X-Forwarded-For": "192.0.2.1"}
    )
    ok(signed)
    login = await the_row(container, "user.login", user.id)
    assert who(login) == ("user", user.id, "MERCHANT_ADMIN", None)
    assert what(login) == ("user.login", "user", user.id, *tenant_ids)
    assert (login.ip, login.details, login.occurred_at) == (HTTP_IP, {}, clock.now())

    # Five wrong passwords in a row from elsewhere: five failures, the fifth locks the account.
    for _ in range(5):
        clock.advance(1)
        wrong = await elsewhere.post(LOGIN, json={"email": user.email, "password": "not the password"})
        assert_problem(wrong, 401, "invalid_credentials")
    failures = await rows(container, action="user.login_failed")
    assert len(failures) == 5
    for failure in failures:
        # Nobody is proven by a failed sign-in: the actor is anonymous, the object the account.
        assert who(failure) == ("anonymous", "anonymous", None, None)
        assert what(failure) == ("user.login_failed", "user", user.id, *tenant_ids)
        assert (failure.ip, failure.details) == (ELSEWHERE_IP, {"reason": "wrong_password"})
    locked = await the_row(container, "user.locked", user.id)
    assert who(locked) == ("anonymous", "anonymous", None, None)
    assert what(locked) == ("user.locked", "user", user.id, *tenant_ids)
    assert (locked.ip, locked.occurred_at) == (ELSEWHERE_IP, failures[-1].occurred_at)

    # The right password on a locked account is a failure too, and says why.
    clock.advance(1)
    assert_problem(
        await http.post(LOGIN, json={"email": user.email, "password": PASSWORD}), 401, "invalid_credentials"
    )
    refused = (await rows(container, action="user.login_failed"))[-1]
    assert (refused.ip, refused.details) == (HTTP_IP, {"reason": "locked"})
    assert len(await rows(container, action="user.login")) == 1
    assert len(await rows(container, action="user.locked")) == 1

    # So is a disabled account's.
    staff = await make_user(container, "bob@acme.example", Role.STAFF, store=tenant.store_id)
    admin = await signed_in(
        http, await make_user(container, "eve@acme.example", Role.MERCHANT_ADMIN, merchant=tenant.merchant_id)
    )
    ok(await admin.patch(f"/api/v1/users/{staff.id}", {"is_active": False}))
    assert_problem(
        await http.post(LOGIN, json={"email": staff.email, "password": PASSWORD}), 401, "invalid_credentials"
    )
    (disabled,) = await rows(container, action="user.login_failed", object_id=staff.id)
    assert disabled.details == {"reason": "disabled"}


async def test_a_failed_sign_in_for_an_unknown_email_writes_no_row(
    http: httpx.AsyncClient, container: Container, tenant: Tenant
) -> None:
    user = await make_user(container, "ada@acme.example", Role.STAFF, store=tenant.store_id)
    before = await row_count(container)
    for email in ("nobody@example.com", "o'brien+guess@attacker.example"):
        assert_problem(
            await http.post(LOGIN, json={"email": email, "password": PASSWORD}), 401, "invalid_credentials"
        )
    assert await row_count(container) == before
    # The same answer for a known email is audited.
    assert_problem(
        await http.post(LOGIN, json={"email": user.email, "password": "a guess"}), 401, "invalid_credentials"
    )
    assert await row_count(container) == before + 1


# ---------------------------------------------------------------------------------------------- users


async def test_users_made_by_the_cli_and_through_the_api_and_their_changes_are_audited(
    http: httpx.AsyncClient, container: Container, tenant: Tenant, clock: FrozenClock
) -> None:
    # The CLI acts as the operator, named by its login.
    by_cli = await make_user(
        container, "cli@acme.example", Role.STAFF, store=tenant.store_id, actor=Principal.operator("ops")
    )
    created = await the_row(container, "user.created", by_cli.id)
    assert who(created) == ("operator", "cli:ops", None, None)
    assert what(created) == (
        "user.created",
        "user",
        by_cli.id,
        tenant.client_partner_id,
        tenant.merchant_id,
        tenant.store_id,
    )
    assert (created.ip, created.details) == (None, {"email": "cli@acme.example", "role": "STAFF"})

    admin = await signed_in(
        http, await make_user(container, "ada@acme.example", Role.MERCHANT_ADMIN, merchant=tenant.merchant_id)
    )
    store_2 = ok(await admin.post("/api/v1/stores", {"store_code": "S-2"}), 201)["id"]
    clock.advance(1)
    made = ok(
        await admin.post(
            "/api/v1/users",
            {"email": "Kim@Acme.example", "password": PASSWORD, "role": "STAFF", "store_id": tenant.store_id},
        ),
        201,
    )
    created = await the_row(container, "user.created", made["id"])
    assert who(created) == ("user", admin.id, "MERCHANT_ADMIN", None)
    assert what(created)[3:] == (tenant.client_partner_id, tenant.merchant_id, tenant.store_id)
    assert (created.ip, created.details, created.occurred_at) == (
        HTTP_IP,
        {"email": "kim@acme.example", "role": "STAFF"},
        clock.now(),
    )

    # Each change records what it changed, before and after, against the user's new scope.
    path = f"/api/v1/users/{made['id']}"
    ok(await admin.patch(path, {"role": "STORE_MANAGER", "store_id": tenant.store_id}))
    ok(await admin.patch(path, {"store_id": store_2}))
    ok(await admin.patch(path, {"is_active": False}))
    ok(await admin.patch(path, {"is_active": False}))  # no change: nothing to record
    updates = await rows(container, action="user.updated", object_id=made["id"])
    assert [row.details for row in updates] == [
        {"role": ["STAFF", "STORE_MANAGER"]},
        {"store_id": [tenant.store_id, store_2]},
        {"is_active": [True, False]},
    ]
    for row, store_id in zip(updates, [tenant.store_id, store_2, store_2], strict=True):
        assert who(row) == ("user", admin.id, "MERCHANT_ADMIN", None)
        assert what(row)[1:] == ("user", made["id"], tenant.client_partner_id, tenant.merchant_id, store_id)
        assert row.ip == HTTP_IP


async def test_an_impersonation_and_every_act_of_the_impersonated_session_name_both_users(
    http: httpx.AsyncClient,
    elsewhere: httpx.AsyncClient,
    container: Container,
    tenant: Tenant,
    server: ServerClient,
    clock: FrozenClock,
) -> None:
    psp = await sign_in(http, container, "psp@acme.example", Role.PSP_ADMIN, partner=tenant.client_partner_id)
    admin = await make_user(container, "ada@acme.example", Role.MERCHANT_ADMIN, merchant=tenant.merchant_id)
    staff = await make_user(container, "bob@acme.example", Role.STAFF, store=tenant.store_id)

    tokens = ok(await psp.post(IMPERSONATE, {"user_id": admin.id}))
    started = await the_row(container, "user.impersonated", admin.id)
    # The impersonator acts; the user acted as is the object.
    assert who(started) == ("user", psp.id, "PSP_ADMIN", None)
    assert what(started) == (
        "user.impersonated",
        "user",
        admin.id,
        tenant.client_partner_id,
        tenant.merchant_id,
        None,
    )
    assert (started.ip, started.details) == (HTTP_IP, {"impersonator": psp.id, "impersonated": admin.id})

    # What the impersonated session does is the user's act, done by the impersonator, from wherever it calls.
    as_admin = Portal(elsewhere, admin, tokens["access_token"])
    store = ok(await as_admin.post("/api/v1/stores", {"store_code": "S-2"}), 201)
    store_created = await the_row(container, "store.created", str(store["id"]))
    assert who(store_created) == ("user", admin.id, "MERCHANT_ADMIN", psp.id)
    assert what(store_created) == (
        "store.created",
        "store",
        str(store["id"]),
        tenant.client_partner_id,
        tenant.merchant_id,
        store["id"],
    )
    assert store_created.ip == ELSEWHERE_IP

    intent_id = await paid_intent(server, tenant, clock, 1000)
    refund = ok(await as_admin.post(f"/v1/payment_intents/{intent_id}/refund", {"amount": 400}), 201)
    refunded = await the_row(container, "payment_intent.refunded", intent_id)
    assert who(refunded) == ("user", admin.id, "MERCHANT_ADMIN", psp.id)
    assert what(refunded) == (
        "payment_intent.refunded",
        "payment_intent",
        intent_id,
        tenant.client_partner_id,
        tenant.merchant_id,
        tenant.store_id,
    )
    assert (refunded.ip, refunded.details) == (
        ELSEWHERE_IP,
        {"refund_id": refund["id"], "amount": 400, "currency": "JPY"},
    )

    # Impersonating again from the impersonated session is done by the original actor.
    ok(await as_admin.post(IMPERSONATE, {"user_id": staff.id}))
    again = await the_row(container, "user.impersonated", staff.id)
    assert who(again) == ("user", psp.id, "PSP_ADMIN", None)
    assert (again.ip, again.details) == (ELSEWHERE_IP, {"impersonator": psp.id, "impersonated": staff.id})


# ---------------------------------------------------------------------------------------------- keys, clients, devices


async def test_signing_key_rotations_by_a_system_op_and_the_cli_are_audited(
    http: httpx.AsyncClient, container: Container
) -> None:
    op = await sign_in(http, container, "op@paymux.example", Role.SYSTEM_OP)
    kid = ok(await op.post("/api/v1/signing_keys/rotate"))["kid"]
    rotated = await the_row(container, "signing_key.rotated", kid)
    assert who(rotated) == ("user", op.id, "SYSTEM_OP", None)
    # A key belongs to no tenant: only a SYSTEM_OP reads about it.
    assert what(rotated) == ("signing_key.rotated", "signing_key", kid, None, None, None)
    assert (rotated.ip, rotated.details) == (HTTP_IP, {})

    by_cli = await container.signing_keys.rotate(Principal.operator("ops"))
    assert who(await the_row(container, "signing_key.rotated", by_cli)) == ("operator", "cli:ops", None, None)
    # The first key of the installation, made by paymux itself at the first sign-in, is no one's act.
    assert len(await rows(container, action="signing_key.rotated")) == 2


async def test_api_client_changes_are_audited(
    http: httpx.AsyncClient, container: Container, tenant: Tenant
) -> None:
    admin = await sign_in(
        http, container, "ada@acme.example", Role.MERCHANT_ADMIN, merchant=tenant.merchant_id
    )
    client_id = ok(await admin.post("/api/v1/api_clients", {"name": "pos backend"}), 201)["id"]
    ok(await admin.post(f"/api/v1/api_clients/{client_id}/rotate_secret"))
    ok(await admin.post(f"/api/v1/api_clients/{client_id}/revoke"))
    ok(await admin.post(f"/api/v1/api_clients/{client_id}/revoke"))  # already revoked: nothing happens

    recorded = await rows(container, object_id=client_id)
    assert [row.action for row in recorded] == [
        "api_client.created",
        "api_client.secret_rotated",
        "api_client.revoked",
    ]
    for row in recorded:
        assert who(row) == ("user", admin.id, "MERCHANT_ADMIN", None)
        assert what(row)[1:] == ("api_client", client_id, tenant.client_partner_id, tenant.merchant_id, None)
        assert row.ip == HTTP_IP
    assert [row.details for row in recorded] == [{"name": "pos backend"}, {}, {}]

    # The CLI's clients name the operator; a partner-wide client belongs to the partner alone.
    partner_client, _ = await container.tenants.create_client(
        name="sync", partner_id=tenant.client_partner_id, actor=Principal.operator("ops")
    )
    created = await the_row(container, "api_client.created", partner_client)
    assert who(created) == ("operator", "cli:ops", None, None)
    assert what(created)[3:] == (tenant.client_partner_id, None, None)
    assert (created.ip, created.details) == (None, {"name": "sync"})


async def test_a_client_minted_by_tenant_bootstrap_is_audited(container: Container) -> None:
    # What `paymux tenants bootstrap` runs: a new merchant-scoped client with a secret shown on the terminal.
    made = await bootstrap_tenant(container, partner="initech", merchant="I-1", store="IS-1")
    created = await the_row(container, "api_client.created", made.client_id)
    assert what(created)[3:] == (made.client_partner_id, made.merchant_id, None)
    assert created.actor_type == "operator"


async def test_device_registration_and_revocation_are_audited(
    http: httpx.AsyncClient, container: Container, tenant: Tenant
) -> None:
    manager = await sign_in(http, container, "kim@acme.example", Role.STORE_MANAGER, store=tenant.store_id)
    _, jwk = device_key_pair()
    device = ok(
        await manager.post(
            "/api/v1/devices",
            {
                "store_id": tenant.store_id,
                "serial_number": "ABC123",
                "jwk": jwk,
                "scopes": ["payment:read", "payment:create"],
            },
        ),
        201,
    )
    ok(await manager.post(f"/api/v1/devices/{device['id']}/revoke"))
    ok(await manager.post(f"/api/v1/devices/{device['id']}/revoke"))  # already revoked: nothing happens

    registered, revoked = await rows(container, object_id=device["id"])
    assert [registered.action, revoked.action] == ["device.registered", "device.revoked"]
    for row in (registered, revoked):
        assert who(row) == ("user", manager.id, "STORE_MANAGER", None)
        assert what(row)[1:] == (
            "device",
            device["id"],
            tenant.client_partner_id,
            tenant.merchant_id,
            tenant.store_id,
        )
        assert row.ip == HTTP_IP
    assert registered.details == {"serial_number": "ABC123", "scopes": ["payment:create", "payment:read"]}
    assert revoked.details == {}


# ---------------------------------------------------------------------------------------------- tenants


async def test_the_tenant_tree_changed_through_the_admin_api_is_audited(
    http: httpx.AsyncClient, container: Container, tenant: Tenant
) -> None:
    op = await sign_in(http, container, "op@paymux.example", Role.SYSTEM_OP)
    psp = await sign_in(http, container, "psp@acme.example", Role.PSP_ADMIN, partner=tenant.client_partner_id)
    admin = await sign_in(
        http, container, "ada@acme.example", Role.MERCHANT_ADMIN, merchant=tenant.merchant_id
    )

    partner = ok(await op.post("/api/v1/partners", {"name": "initech"}), 201)["id"]
    merchant = ok(await psp.post("/api/v1/merchants", {"merchant_code": "M-2"}), 201)["id"]
    ok(await psp.patch(f"/api/v1/merchants/{merchant}", {"name": "Second", "is_active": False}))
    store = ok(await admin.post("/api/v1/stores", {"store_code": "S-2"}), 201)["id"]
    fees = [{"currency": "JPY", "percent_bps": 325, "fixed_amount": 0}]
    ok(await admin.patch(f"/api/v1/stores/{store}", {"name": "Annex", "fee_rules": fees}))

    acme, acme_m = tenant.client_partner_id, tenant.merchant_id
    expected = [
        (op, "SYSTEM_OP", ("partner.created", "client_partner", str(partner), partner, None, None), {}),
        (psp, "PSP_ADMIN", ("merchant.created", "merchant", str(merchant), acme, merchant, None), {}),
        (
            psp,
            "PSP_ADMIN",
            ("merchant.updated", "merchant", str(merchant), acme, merchant, None),
            {"name": [None, "Second"], "is_active": [True, False]},
        ),
        (admin, "MERCHANT_ADMIN", ("store.created", "store", str(store), acme, acme_m, store), {}),
        (
            admin,
            "MERCHANT_ADMIN",
            ("store.updated", "store", str(store), acme, acme_m, store),
            {"name": [None, "Annex"], "fee_rules": [[], fees]},
        ),
    ]
    recorded = [
        row for row in await rows(container) if row.action.split(".")[0] in ("partner", "merchant", "store")
    ]
    assert len(recorded) == len(expected)
    for row, (portal, role, subject, details) in zip(recorded, expected, strict=True):
        assert who(row) == ("user", portal.id, role, None)
        assert what(row) == subject
        assert (row.ip, row.details) == (HTTP_IP, details)


async def test_config_sync_is_audited_with_what_it_synced(
    http: httpx.AsyncClient, container: Container, tenant: Tenant, clock: FrozenClock
) -> None:
    client_id, secret = await container.tenants.create_client(
        name="portal", partner_id=tenant.client_partner_id
    )
    portal = ServerClient(http, client_id, secret, clock)
    body = {
        "client_partner_id": tenant.client_partner_id,
        "merchants": [
            {
                "merchant_id": 50,
                "merchant_code": "M-50",
                "stores": [
                    {
                        "store_id": 60,
                        "store_code": "S-60",
                        "provider_configs": [{"provider_code": "test", "credentials": {}}],
                    },
                    {"store_id": 61, "store_code": "S-61"},
                ],
            },
            {"merchant_id": tenant.merchant_id, "merchant_code": "M-1"},
        ],
    }
    ok(await portal.post("/v1/sync/merchants", body))
    synced = await the_row(container, "config.synced", str(tenant.client_partner_id))
    assert who(synced) == ("api_client", client_id, None, None)
    assert what(synced) == (
        "config.synced",
        "client_partner",
        str(tenant.client_partner_id),
        tenant.client_partner_id,
        None,
        None,
    )
    assert (synced.ip, synced.details) == (
        HTTP_IP,
        {"merchants": [50, tenant.merchant_id], "stores": [60, 61], "provider_configs": ["test"]},
    )


# ---------------------------------------------------------------------------------------------- payments, webhooks


async def test_a_refund_is_audited_with_its_amount(
    container: Container, tenant: Tenant, server: ServerClient, clock: FrozenClock
) -> None:
    intent_id = await paid_intent(server, tenant, clock, 1500)
    clock.advance(1)
    refund = ok(await server.post(f"/v1/payment_intents/{intent_id}/refund", {}), 201)
    refunded = await the_row(container, "payment_intent.refunded", intent_id)
    assert who(refunded) == ("api_client", tenant.client_id, None, None)
    assert what(refunded)[3:] == (tenant.client_partner_id, tenant.merchant_id, tenant.store_id)
    # Without an amount the refund is all that is left.
    assert (refunded.ip, refunded.details) == (
        HTTP_IP,
        {"refund_id": refund["id"], "amount": 1500, "currency": "JPY"},
    )


async def test_webhook_endpoint_changes_are_audited(
    container: Container, tenant: Tenant, server: ServerClient, clock: FrozenClock
) -> None:
    endpoint = ok(await server.post("/v1/webhook_endpoints", {"url": "http://127.0.0.1:9/hooks"}), 201)
    path = f"/v1/webhook_endpoints/{endpoint['id']}"
    clock.advance(1)
    ok(await server.request("PATCH", path, {"description": "the shop's backend", "enabled": False}))
    clock.advance(1)
    rotated = ok(await server.post(f"{path}/rotate_secret", {"expire_previous_in_hours": 1}))
    clock.advance(1)
    ok(await server.request("DELETE", path))

    recorded = await rows(container, object_id=endpoint["id"])
    assert [row.action for row in recorded] == [
        "webhook_endpoint.created",
        "webhook_endpoint.updated",
        "webhook_endpoint.secret_rotated",
        "webhook_endpoint.deleted",
    ]
    for row in recorded:
        assert who(row) == ("api_client", tenant.client_id, None, None)
        assert what(row)[1:] == (
            "webhook_endpoint",
            endpoint["id"],
            tenant.client_partner_id,
            tenant.merchant_id,
            None,
        )
        assert row.ip == HTTP_IP
    created, updated, secret_rotated, deleted = (row.details for row in recorded)
    assert created == {"url": "http://127.0.0.1:9/hooks", "events": ["*"]}
    assert updated == {"description": "the shop's backend", "enabled": False}
    assert set(secret_rotated) == {"previous_secret_expires_at"}
    assert rotated["secret"] not in json.dumps(secret_rotated)
    assert deleted == {}


async def test_resolving_a_reconciliation_exception_is_audited_with_its_reason(
    container: Container, tenant: Tenant, server: ServerClient, clock: FrozenClock
) -> None:
    unknown = ["payment", "test_ch_X", "pi_X", "5", "JPY", "0", iso(clock.now())]
    report = await uploaded(server, clock, csv_bytes([unknown]))
    (exception,) = await exceptions_of(server, report["id"])
    reason = "A test charge made at the provider's console; nothing to do."
    clock.advance(1)
    ok(await server.post(f"/v1/reconciliation_exceptions/{exception['id']}/resolve", {"reason": reason}))
    resolved = await the_row(container, "reconciliation_exception.resolved", exception["id"])
    assert who(resolved) == ("api_client", tenant.client_id, None, None)
    assert what(resolved)[1:] == (
        "reconciliation_exception",
        exception["id"],
        tenant.client_partner_id,
        tenant.merchant_id,
        None,
    )
    assert (resolved.ip, resolved.details) == (
        HTTP_IP,
        {"run_id": report["id"], "kind": exception["kind"], "reason": reason},
    )


# ---------------------------------------------------------------------------------------------- atomicity


async def test_an_act_that_fails_leaves_no_audit_row(
    http: httpx.AsyncClient,
    container: Container,
    tenant: Tenant,
    other_tenant: Tenant,
    server: ServerClient,
    clock: FrozenClock,
) -> None:
    op = await sign_in(http, container, "op@paymux.example", Role.SYSTEM_OP)
    psp = await sign_in(http, container, "psp@acme.example", Role.PSP_ADMIN, partner=tenant.client_partner_id)
    admin = await sign_in(
        http, container, "ada@acme.example", Role.MERCHANT_ADMIN, merchant=tenant.merchant_id
    )
    staff = await sign_in(http, container, "bob@acme.example", Role.STAFF, store=tenant.store_id)
    _, jwk = device_key_pair()
    device = {"store_id": tenant.store_id, "serial_number": "ABC123", "jwk": jwk, "scopes": ["payment:read"]}
    ok(await admin.post("/api/v1/devices", device), 201)
    revoked = ok(await admin.post("/api/v1/api_clients", {"name": "old"}), 201)["id"]
    ok(await admin.post(f"/api/v1/api_clients/{revoked}/revoke"))
    intent_id = await paid_intent(server, tenant, clock, 1000)
    partner_client, secret = await container.tenants.create_client(
        name="portal", partner_id=tenant.client_partner_id
    )
    portal = ServerClient(http, partner_client, secret, clock)
    before = await row_count(container)

    clock.advance(1)
    refusals = [
        (await op.post("/api/v1/partners", {"name": "acme"}), 409),
        (await psp.post("/api/v1/merchants", {"merchant_code": "M-1"}), 409),
        (await psp.patch(f"/api/v1/merchants/{other_tenant.merchant_id}", {"name": "x"}), 404),
        (await admin.post("/api/v1/stores", {"store_code": "S-1"}), 409),
        (await admin.patch(f"/api/v1/stores/{tenant.store_id}", {"is_active": None}), 422),
        (await staff.post("/api/v1/stores", {"store_code": "S-9"}), 403),
        (
            await admin.post(
                "/api/v1/users",
                {
                    "email": staff.user.email,
                    "password": PASSWORD,
                    "role": "STAFF",
                    "store_id": tenant.store_id,
                },
            ),
            409,
        ),
        (await admin.patch(f"/api/v1/users/{admin.id}", {"role": "PSP_ADMIN"}), 403),
        (
            await admin.post(
                "/api/v1/api_clients", {"name": "x", "client_partner_id": tenant.client_partner_id}
            ),
            404,
        ),
        (await admin.post(f"/api/v1/api_clients/{revoked}/rotate_secret"), 409),
        (await admin.post("/api/v1/devices", device), 409),
        (await staff.post("/api/v1/signing_keys/rotate"), 403),
        (await staff.post(IMPERSONATE, {"user_id": admin.id}), 403),
        (await server.post(f"/v1/payment_intents/{intent_id}/refund", {"amount": 1001}), 409),
        (
            await portal.post(
                "/v1/sync/merchants",
                {
                    "client_partner_id": tenant.client_partner_id,
                    "merchants": [
                        {"merchant_id": 50, "merchant_code": "M-50"},
                        # Another partner's merchant: the whole sync is refused, the first merchant included.
                        {"merchant_id": other_tenant.merchant_id, "merchant_code": "G-1"},
                    ],
                },
            ),
            409,
        ),
    ]
    for response, status in refusals:
        assert response.status_code == status, response.text
    assert await row_count(container) == before


async def test_an_audit_row_that_cannot_be_written_undoes_its_act(
    container: Container, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = Principal(
        caller_type=CallerType.USER,
        caller_id="usr_01J0000000000000000000ADMN",
        client_partner_id=tenant.client_partner_id,
        merchant_id=tenant.merchant_id,
        role=Role.MERCHANT_ADMIN,
    )
    issued = await container.client_admin.create(
        admin, name="pos", partner_id=None, merchant_id=None, store_id=None
    )
    (taken,) = await rows(container, action="api_client.created", object_id=issued.client.id)
    # The next audit row collides with an existing one, so its insert fails with the act's transaction.
    monkeypatch.setattr("paymux.audit.service.new_id", lambda prefix: taken.id)
    with pytest.raises(IntegrityError):
        await container.client_admin.revoke(admin, issued.client.id)
    monkeypatch.undo()

    assert (await container.client_admin.get(admin, issued.client.id)).revoked_at is None
    assert await container.api_clients.find_active(issued.client.id) is not None
    assert [row.id for row in await rows(container, object_id=issued.client.id)] == [taken.id]


# ---------------------------------------------------------------------------------------------- append-only


async def test_audit_rows_cannot_be_updated(container: Container, tenant: Tenant) -> None:
    await make_user(
        container, "ada@acme.example", Role.STAFF, store=tenant.store_id, actor=Principal.operator("ops")
    )
    (row,) = [row for row in await rows(container) if row.action == "user.created"]
    for statement in (
        "UPDATE audit_events SET actor_id = 'someone else' WHERE id = :id",
        "UPDATE audit_events SET details = '{}'",
    ):
        with pytest.raises(DBAPIError, match="append-only"):
            async with container.db.unit_of_work() as session:
                await session.execute(text(statement), {"id": row.id})
    (unchanged,) = [row for row in await rows(container) if row.action == "user.created"]
    assert unchanged.id == row.id
    assert (unchanged.actor_id, unchanged.details) == (
        "cli:ops",
        {"email": "ada@acme.example", "role": "STAFF"},
    )


@pytest.mark.postgres
async def test_audit_rows_cannot_be_deleted_on_postgres(container: Container, tenant: Tenant) -> None:
    await make_user(
        container, "ada@acme.example", Role.STAFF, store=tenant.store_id, actor=Principal.operator("ops")
    )
    before = [kept.id for kept in await rows(container)]
    (row,) = [row for row in await rows(container) if row.action == "user.created"]
    for statement in ("DELETE FROM audit_events WHERE id = :id", "DELETE FROM audit_events"):
        with pytest.raises(DBAPIError, match="append-only"):
            async with container.db.unit_of_work() as session:
                await session.execute(text(statement), {"id": row.id})
    assert [kept.id for kept in await rows(container)] == before


# ---------------------------------------------------------------------------------------------- listing


@pytest.fixture
async def cast(
    http: httpx.AsyncClient, container: Container, tenant: Tenant, other_tenant: Tenant, clock: FrozenClock
) -> Cast:
    """Portal users of acme and globex, signed in one second apart (each sign-in is an audit event)."""
    return await sign_in_cast(http, container, tenant, other_tenant, before_each=lambda: clock.advance(1))


async def test_each_admin_lists_the_audit_events_of_its_own_scope(
    http: httpx.AsyncClient,
    container: Container,
    cast: Cast,
    tenant: Tenant,
    other_tenant: Tenant,
    server: ServerClient,
    clock: FrozenClock,
) -> None:
    # Besides the sign-ins: an event of no tenant, one of acme's partner only, one of a globex store.
    ok(await cast.op.post("/api/v1/signing_keys/rotate"))
    await container.tenants.create_client(
        name="portal", partner_id=tenant.client_partner_id, actor=Principal.operator("ops")
    )
    clock.advance(1)
    ok(await cast.globex_admin.post("/api/v1/stores", {"store_code": "GS-2"}), 201)
    everything = await rows(container)
    newest_first = [row.id for row in reversed(everything)]

    def ids_where(keep: Any) -> list[str]:
        return [row.id for row in reversed(everything) if keep(row)]

    assert flat(await every_page(cast.op)) == newest_first
    assert flat(await every_page(cast.acme_psp)) == ids_where(
        lambda row: row.client_partner_id == tenant.client_partner_id
    )
    assert flat(await every_page(cast.acme_admin)) == ids_where(
        lambda row: row.merchant_id == tenant.merchant_id
    )
    assert flat(await every_page(cast.globex_psp)) == ids_where(
        lambda row: row.client_partner_id == other_tenant.client_partner_id
    )
    assert flat(await every_page(cast.globex_admin)) == ids_where(
        lambda row: row.merchant_id == other_tenant.merchant_id
    )
    # The partner-wide client is the PSP admin's business, not the merchant admin's; the key is neither's.
    acme_psp_actions = {
        event["action"] for event in ok(await cast.acme_psp.get(AUDIT_EVENTS, limit=100))["data"]
    }
    assert "api_client.created" in acme_psp_actions
    assert "signing_key.rotated" not in acme_psp_actions
    acme_admin_actions = {
        event["action"] for event in ok(await cast.acme_admin.get(AUDIT_EVENTS, limit=100))["data"]
    }
    # (api_client.created: the merchant's client that tenant bootstrap made.)
    assert acme_admin_actions == {"api_client.created", "user.created", "user.login"}

    # The API shows each row as stored.
    newest = ok(await cast.op.get(AUDIT_EVENTS, limit=1))
    assert newest["has_more"] is True
    (shown,) = newest["data"]
    stored = everything[-1]
    assert shown == {
        "object": "audit_event",
        "id": stored.id,
        "occurred_at": stored.occurred_at.isoformat().replace("+00:00", "Z"),
        "actor_type": "user",
        "actor_id": cast.globex_admin.id,
        "actor_role": "MERCHANT_ADMIN",
        "impersonated_by": None,
        "action": "store.created",
        "object_type": "store",
        "object_id": stored.object_id,
        "client_partner_id": other_tenant.client_partner_id,
        "merchant_id": other_tenant.merchant_id,
        "store_id": int(stored.object_id),
        "ip": HTTP_IP,
        "details": {},
    }

    # Store users, API clients, devices and payment tokens may not read the log at all.
    for portal in (cast.acme_manager, cast.acme_staff):
        assert_problem(await portal.get(AUDIT_EVENTS), 403, "operation_forbidden")
    assert_problem(await server.get(AUDIT_EVENTS), 403, "operation_forbidden")
    device = await device_access_token(http, container, clock, tenant.store_id)
    forbidden = await http.get(AUDIT_EVENTS, headers=bearer(device))
    assert forbidden.status_code == 403, forbidden.text
    payment_token = (await server.create_intent(tenant))["payment_token"]
    assert_problem(await http.get(AUDIT_EVENTS, headers=bearer(payment_token)), 403, "operation_forbidden")


async def test_audit_events_are_filtered_and_paged_newest_first(
    container: Container, cast: Cast, tenant: Tenant, clock: FrozenClock
) -> None:
    clock.advance(1)
    ok(await cast.acme_admin.post("/api/v1/stores", {"store_code": "S-2"}), 201)
    clock.advance(1)
    ok(await cast.acme_admin.post("/api/v1/api_clients", {"name": "pos"}), 201)
    op = cast.op

    everything = ok(await op.get(AUDIT_EVENTS, limit=100))
    assert everything["has_more"] is False
    events = everything["data"]
    assert [event["id"] for event in events] == sorted((event["id"] for event in events), reverse=True)
    assert [event["occurred_at"] for event in events] == sorted(
        (event["occurred_at"] for event in events), reverse=True
    )
    pages = await every_page(op)
    assert flat(pages) == [event["id"] for event in events]
    assert all(len(page) == 3 for page in pages[:-1])
    # The last page says so; a cursor past the oldest event gives an empty last page.
    last = ok(await op.get(AUDIT_EVENTS, starting_after=events[-1]["id"]))
    assert (last["data"], last["has_more"]) == ([], False)

    logins = ok(await op.get(AUDIT_EVENTS, action="user.login", limit=100))["data"]
    assert len(logins) == 7
    assert {event["action"] for event in logins} == {"user.login"}
    about_admin = ok(await op.get(AUDIT_EVENTS, object_id=cast.acme_admin.id))["data"]
    assert [event["action"] for event in about_admin] == ["user.login", "user.created"]
    by_admin = ok(await op.get(AUDIT_EVENTS, actor_id=cast.acme_admin.id))["data"]
    assert [event["action"] for event in by_admin] == ["api_client.created", "store.created", "user.login"]
    both = ok(await op.get(AUDIT_EVENTS, actor_id=cast.acme_admin.id, action="store.created"))["data"]
    assert [event["id"] for event in both] == [by_admin[1]["id"]]
    assert flat(await every_page(op, action="user.login")) == [event["id"] for event in logins]
    # Filters narrow the caller's own part of the log, never widen it.
    assert ok(await cast.acme_admin.get(AUDIT_EVENTS, object_id=cast.globex_admin.id))["data"] == []
    assert ok(await cast.acme_admin.get(AUDIT_EVENTS, action="user.login"))["data"] == [
        event for event in logins if event["merchant_id"] == tenant.merchant_id
    ]
    for bad in ({"action": "User.Login"}, {"actor_id": "a b"}, {"limit": 0}, {"object_id": "x" * 81}):
        assert_problem(await op.get(AUDIT_EVENTS, **bad), 422, "validation_error")
