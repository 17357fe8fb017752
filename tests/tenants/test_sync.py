"""Config sync from the portal: `POST /v1/sync/merchants` (seed 004, "Multi-Tenant Configuration Sync").

Also guards design invariant 6 (a sync never reaches into another partner's tree, and is all or nothing) and
invariant 7 (provider credentials and webhook secrets are sealed at rest and only ever returned masked).

Every request goes through the real app with a real HMAC signature. The portal is an API client scoped to the
whole partner, as config sync requires.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import select, text

from paymux.container import Container
from paymux.core.clock import FrozenClock
from paymux.models import Base, Merchant, Store, StoreProviderConfig
from tests.support import ServerClient, Tenant, bearer

SYNC = "/v1/sync/merchants"
MASK = "********"

# Ids are the portal's (the source of truth); these are far from the ones the bootstrap fixtures take.
MERCHANT_ID = 1001
STORE_ID = 2001

PROVIDER_MERCHANT = "PAYPAY-MERCHANT-123"
API_KEY = "ak_live_9f8e7d6c5b4a3f2e"
API_SECRET = "as_live_7Zq4Lm1Xp8Rt6Vw3"
WEBHOOK_SECRET = "whsec_Q3n8Tz5Kd2Hv7Bx4"
CREDENTIALS: dict[str, str] = {
    "merchant_id": PROVIDER_MERCHANT,
    "api_key": API_KEY,
    "api_secret": API_SECRET,
}
SECRETS = (PROVIDER_MERCHANT, API_KEY, API_SECRET, WEBHOOK_SECRET)

M = TypeVar("M", bound=Base)


# ---------------------------------------------------------------------------------------------- request bodies


def provider_config(*, omit: tuple[str, ...] = (), **fields: Any) -> dict[str, Any]:
    """A provider config of the seed's shape; `test` is the built-in provider."""
    config: dict[str, Any] = {"provider_code": "test", "credentials": dict(CREDENTIALS), "is_active": True}
    config.update(fields)
    return {key: value for key, value in config.items() if key not in omit}


def store(
    store_id: int = STORE_ID,
    store_code: str = "STORE-001",
    configs: list[dict[str, Any]] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "store_id": store_id,
        "store_code": store_code,
        "provider_configs": [provider_config()] if configs is None else configs,
    }
    body.update(fields)
    return body


def merchant(
    merchant_id: int = MERCHANT_ID,
    merchant_code: str = "MERCHANT-ABC",
    stores: list[dict[str, Any]] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "merchant_id": merchant_id,
        "merchant_code": merchant_code,
        "stores": [store()] if stores is None else stores,
    }
    body.update(fields)
    return body


def sync_body(partner_id: int, *merchants: dict[str, Any]) -> dict[str, Any]:
    """The seed's example body (one merchant, one store, one provider config) unless merchants are given."""
    return {"client_partner_id": partner_id, "merchants": list(merchants) or [merchant()]}


# ---------------------------------------------------------------------------------------------- helpers


@pytest.fixture
async def portal(
    container: Container, http: httpx.AsyncClient, tenant: Tenant, clock: FrozenClock
) -> ServerClient:
    """svc-portal: an API client scoped to the tenant's whole partner."""
    client_id, secret = await container.tenants.create_client(
        name="portal", partner_id=tenant.client_partner_id
    )
    return ServerClient(http, client_id, secret, clock)


async def sync(client: ServerClient, clock: FrozenClock, body: dict[str, Any]) -> httpx.Response:
    # A second, identical sync is a new request with its own signature, so it is signed a second later
    # (the same signature twice is refused as a replay).
    clock.advance(1)
    return await client.post(SYNC, body)


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status
    assert problem["code"] == code, problem
    return problem


async def load(container: Container, model: type[M], ident: int) -> M | None:
    async with container.db.reading() as session:
        return await session.get(model, ident)


async def config_of(
    container: Container, store_id: int, provider_code: str = "test"
) -> StoreProviderConfig | None:
    async with container.db.reading() as session:
        statement = select(StoreProviderConfig).where(
            StoreProviderConfig.store_id == store_id, StoreProviderConfig.provider_code == provider_code
        )
        return (await session.execute(statement)).scalar_one_or_none()


async def database_snapshot(container: Container) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, exactly as stored."""
    snapshot: dict[str, list[tuple[Any, ...]]] = {}
    async with container.db.reading() as session:
        for table in Base.metadata.sorted_tables:
            rows = (await session.execute(select(table))).all()
            snapshot[table.name] = sorted((tuple(row) for row in rows), key=repr)
    return snapshot


async def tenant_tree(container: Container) -> dict[str, list[dict[str, Any]]]:
    """The tenant tree as the portal sees it: sealed columns opened, `updated_at` left out."""
    async with container.db.reading() as session:
        merchants = (await session.execute(select(Merchant).order_by(Merchant.id))).scalars().all()
        stores = (await session.execute(select(Store).order_by(Store.id))).scalars().all()
        configs = (
            (await session.execute(select(StoreProviderConfig).order_by(StoreProviderConfig.id)))
            .scalars()
            .all()
        )
    tree: dict[str, list[dict[str, Any]]] = {
        "merchants": [
            {
                "id": row.id,
                "client_partner_id": row.client_partner_id,
                "merchant_code": row.merchant_code,
                "name": row.name,
                "is_active": row.is_active,
                "created_at": row.created_at,
            }
            for row in merchants
        ],
        "stores": [
            {
                "id": row.id,
                "merchant_id": row.merchant_id,
                "client_partner_id": row.client_partner_id,
                "store_code": row.store_code,
                "name": row.name,
                "is_active": row.is_active,
                "created_at": row.created_at,
            }
            for row in stores
        ],
        "configs": [],
    }
    for config in configs:
        opened = container.tenants.credentials(config)
        tree["configs"].append(
            {
                "id": config.id,
                "store_id": config.store_id,
                "merchant_id": config.merchant_id,
                "client_partner_id": config.client_partner_id,
                "provider_code": config.provider_code,
                "credentials": dict(opened.values),
                "webhook_secret": opened.webhook_secret,
                "base_url": config.base_url,
                "is_active": config.is_active,
                "created_at": config.created_at,
            }
        )
    return tree


def intent_for(store_id: int, merchant_ref_id: str) -> dict[str, Any]:
    return {
        "merchant_ref_id": merchant_ref_id,
        "amount": 1200,
        "currency": "JPY",
        "store_id": store_id,
        "payment_method_type": "credit_card",
    }


def assert_no_secret_in(where: str, haystack: str) -> None:
    for secret in SECRETS:
        assert secret not in haystack, f"plaintext secret {secret!r} found in {where}"


# ---------------------------------------------------------------------------------------------- upserts


async def test_seed_example_upserts_merchant_store_and_provider_config(
    portal: ServerClient, clock: FrozenClock, container: Container, tenant: Tenant
) -> None:
    response = await sync(portal, clock, sync_body(tenant.client_partner_id))

    assert response.status_code == 200, response.text
    assert response.json() == {"synced_merchants": 1, "synced_stores": 1}
    synced_merchant = await load(container, Merchant, MERCHANT_ID)
    assert synced_merchant is not None
    assert (synced_merchant.client_partner_id, synced_merchant.merchant_code, synced_merchant.is_active) == (
        tenant.client_partner_id,
        "MERCHANT-ABC",
        True,
    )
    synced_store = await load(container, Store, STORE_ID)
    assert synced_store is not None
    assert (
        synced_store.merchant_id,
        synced_store.client_partner_id,
        synced_store.store_code,
        synced_store.is_active,
    ) == (MERCHANT_ID, tenant.client_partner_id, "STORE-001", True)
    config = await config_of(container, STORE_ID)
    assert config is not None
    assert (config.merchant_id, config.client_partner_id, config.is_active) == (
        MERCHANT_ID,
        tenant.client_partner_id,
        True,
    )
    assert dict(container.tenants.credentials(config).values) == CREDENTIALS


async def test_counts_cover_every_merchant_and_store_of_the_body(
    portal: ServerClient, clock: FrozenClock, container: Container, tenant: Tenant
) -> None:
    body = sync_body(
        tenant.client_partner_id,
        merchant(
            MERCHANT_ID, "MERCHANT-ABC", [store(STORE_ID, "STORE-001"), store(STORE_ID + 1, "STORE-002")]
        ),
        merchant(MERCHANT_ID + 1, "MERCHANT-DEF", [store(STORE_ID + 2, "STORE-001", configs=[])]),
        merchant(MERCHANT_ID + 2, "MERCHANT-GHI", stores=[]),
    )

    response = await sync(portal, clock, body)

    assert response.status_code == 200, response.text
    assert response.json() == {"synced_merchants": 3, "synced_stores": 3}
    tree = await tenant_tree(container)
    synced_merchants = {
        row["id"]: row["merchant_code"] for row in tree["merchants"] if row["id"] >= MERCHANT_ID
    }
    assert synced_merchants == {
        MERCHANT_ID: "MERCHANT-ABC",
        MERCHANT_ID + 1: "MERCHANT-DEF",
        MERCHANT_ID + 2: "MERCHANT-GHI",
    }
    synced_stores = {row["id"]: row["merchant_id"] for row in tree["stores"] if row["id"] >= STORE_ID}
    assert synced_stores == {STORE_ID: MERCHANT_ID, STORE_ID + 1: MERCHANT_ID, STORE_ID + 2: MERCHANT_ID + 1}
    assert sorted(row["store_id"] for row in tree["configs"] if row["store_id"] >= STORE_ID) == [
        STORE_ID,
        STORE_ID + 1,
    ]


async def test_identical_second_sync_changes_nothing(
    portal: ServerClient, clock: FrozenClock, container: Container, tenant: Tenant
) -> None:
    body = sync_body(
        tenant.client_partner_id,
        merchant(
            name="ABC Holdings",
            stores=[store(name="Ginza", configs=[provider_config(webhook_secret=WEBHOOK_SECRET)])],
        ),
    )
    first = await sync(portal, clock, body)
    assert first.status_code == 200, first.text
    after_first = await tenant_tree(container)

    second = await sync(portal, clock, body)

    assert second.status_code == 200, second.text
    assert second.json() == first.json() == {"synced_merchants": 1, "synced_stores": 1}
    assert await tenant_tree(container) == after_first


async def test_merchant_updates_apply(
    portal: ServerClient, clock: FrozenClock, container: Container, tenant: Tenant
) -> None:
    created = await sync(portal, clock, sync_body(tenant.client_partner_id))
    assert created.status_code == 200, created.text
    before = await load(container, Merchant, MERCHANT_ID)
    assert before is not None
    assert before.name is None

    updated = await sync(
        portal,
        clock,
        sync_body(
            tenant.client_partner_id,
            merchant(merchant_code="MERCHANT-XYZ", name="XYZ Trading", is_active=False),
        ),
    )

    assert updated.status_code == 200, updated.text
    assert updated.json() == {"synced_merchants": 1, "synced_stores": 1}
    after = await load(container, Merchant, MERCHANT_ID)
    assert after is not None
    assert (after.merchant_code, after.name, after.is_active) == ("MERCHANT-XYZ", "XYZ Trading", False)
    assert (after.client_partner_id, after.created_at) == (before.client_partner_id, before.created_at)
    tree = await tenant_tree(container)
    assert [row["id"] for row in tree["merchants"]] == [tenant.merchant_id, MERCHANT_ID]


async def test_store_updates_apply(
    portal: ServerClient, clock: FrozenClock, container: Container, tenant: Tenant
) -> None:
    created = await sync(portal, clock, sync_body(tenant.client_partner_id))
    assert created.status_code == 200, created.text
    before = await load(container, Store, STORE_ID)
    assert before is not None

    updated = await sync(
        portal,
        clock,
        sync_body(
            tenant.client_partner_id,
            merchant(stores=[store(store_code="STORE-009", name="Shibuya", is_active=False)]),
        ),
    )

    assert updated.status_code == 200, updated.text
    after = await load(container, Store, STORE_ID)
    assert after is not None
    assert (after.store_code, after.name, after.is_active) == ("STORE-009", "Shibuya", False)
    assert (after.merchant_id, after.client_partner_id, after.created_at) == (
        MERCHANT_ID,
        tenant.client_partner_id,
        before.created_at,
    )
    tree = await tenant_tree(container)
    assert [row["id"] for row in tree["stores"]] == [tenant.store_id, STORE_ID]


@pytest.mark.parametrize("deactivated", ["merchant", "store"])
async def test_deactivation_by_sync_stops_new_payments_and_reactivation_restores_them(
    deactivated: str, portal: ServerClient, clock: FrozenClock, tenant: Tenant
) -> None:
    def body(active: bool) -> dict[str, Any]:
        if deactivated == "merchant":
            return sync_body(tenant.client_partner_id, merchant(is_active=active))
        return sync_body(tenant.client_partner_id, merchant(stores=[store(is_active=active)]))

    assert (await sync(portal, clock, body(True))).status_code == 200
    await portal.create_intent(tenant, store_id=STORE_ID)

    off = await sync(portal, clock, body(False))
    assert off.status_code == 200, off.text
    refused = await portal.post("/v1/payment_intents", intent_for(STORE_ID, "OFF-1"))
    assert_problem(refused, 409, "store_inactive")

    on = await sync(portal, clock, body(True))
    assert on.status_code == 200, on.text
    await portal.create_intent(tenant, store_id=STORE_ID)


# ---------------------------------------------------------------------------------------------- provider configs


async def test_config_update_without_credentials_keeps_the_stored_ones(
    portal: ServerClient, clock: FrozenClock, container: Container, tenant: Tenant
) -> None:
    first = await sync(
        portal,
        clock,
        sync_body(
            tenant.client_partner_id,
            merchant(stores=[store(configs=[provider_config(webhook_secret=WEBHOOK_SECRET)])]),
        ),
    )
    assert first.status_code == 200, first.text
    stored = await config_of(container, STORE_ID)
    assert stored is not None

    update = provider_config(
        omit=("credentials",), is_active=False, base_url="https://sandbox.example.test/v2"
    )
    second = await sync(
        portal, clock, sync_body(tenant.client_partner_id, merchant(stores=[store(configs=[update])]))
    )

    assert second.status_code == 200, second.text
    kept = await config_of(container, STORE_ID)
    assert kept is not None
    assert kept.id == stored.id
    assert kept.credentials_sealed == stored.credentials_sealed
    assert kept.webhook_secret_sealed == stored.webhook_secret_sealed
    opened = container.tenants.credentials(kept)
    assert dict(opened.values) == CREDENTIALS
    assert opened.webhook_secret == WEBHOOK_SECRET
    assert (kept.is_active, kept.base_url) == (False, "https://sandbox.example.test/v2")
    listed = await portal.get(f"/v1/stores/{STORE_ID}/provider_configs")
    assert listed.status_code == 200, listed.text
    [out] = listed.json()["data"]
    assert sorted(out["credentials"]) == sorted(CREDENTIALS)
    assert out["webhook_secret"] is not None
    assert out["webhook_secret"].startswith(MASK)
    assert out["is_active"] is False


async def test_config_update_with_credentials_replaces_them(
    portal: ServerClient, clock: FrozenClock, container: Container, tenant: Tenant
) -> None:
    first = await sync(
        portal,
        clock,
        sync_body(
            tenant.client_partner_id,
            merchant(stores=[store(configs=[provider_config(webhook_secret=WEBHOOK_SECRET)])]),
        ),
    )
    assert first.status_code == 200, first.text
    rotated = {"api_key": "ak_live_rotated_5e6f7a8b9c0d"}

    second = await sync(
        portal,
        clock,
        sync_body(
            tenant.client_partner_id, merchant(stores=[store(configs=[provider_config(credentials=rotated)])])
        ),
    )

    assert second.status_code == 200, second.text
    config = await config_of(container, STORE_ID)
    assert config is not None
    opened = container.tenants.credentials(config)
    assert dict(opened.values) == rotated
    assert opened.webhook_secret == WEBHOOK_SECRET  # omitted: kept


async def test_new_config_without_credentials_is_a_conflict_and_nothing_is_written(
    portal: ServerClient, clock: FrozenClock, container: Container, tenant: Tenant
) -> None:
    before = await database_snapshot(container)
    body = sync_body(
        tenant.client_partner_id, merchant(stores=[store(configs=[provider_config(omit=("credentials",))])])
    )

    response = await sync(portal, clock, body)

    assert_problem(response, 409, "tenant_conflict")
    assert await database_snapshot(container) == before
    assert await load(container, Merchant, MERCHANT_ID) is None
    assert await load(container, Store, STORE_ID) is None


# ---------------------------------------------------------------------------------------------- secrets (invariant 7)


async def test_secrets_are_sealed_at_rest(
    portal: ServerClient, clock: FrozenClock, container: Container, tenant: Tenant
) -> None:
    body = sync_body(
        tenant.client_partner_id,
        merchant(stores=[store(configs=[provider_config(webhook_secret=WEBHOOK_SECRET)])]),
    )
    clock.advance(1)
    response = await portal.post(SYNC, body, idempotency_key="sync-secrets-1")
    assert response.status_code == 200, response.text

    async with container.db.reading() as session:
        rows = (
            await session.execute(
                text(
                    "SELECT credentials_sealed, webhook_secret_sealed FROM store_provider_configs"
                    " WHERE store_id = :store_id"
                ),
                {"store_id": STORE_ID},
            )
        ).all()
    assert len(rows) == 1
    credentials_sealed, webhook_secret_sealed = rows[0]
    for column, sealed in (
        ("credentials_sealed", credentials_sealed),
        ("webhook_secret_sealed", webhook_secret_sealed),
    ):
        assert isinstance(sealed, str)
        assert sealed.startswith("pmx1."), f"{column} is not an envelope: {sealed[:20]!r}"
        assert_no_secret_in(column, sealed)
    # Nowhere else either: not in another column, the idempotency record or an event.
    assert_no_secret_in("the database", repr(await database_snapshot(container)))


async def test_provider_configs_are_returned_masked(
    portal: ServerClient, clock: FrozenClock, tenant: Tenant
) -> None:
    credentials = {**CREDENTIALS, "terminal_pin": "4321"}
    body = sync_body(
        tenant.client_partner_id,
        merchant(
            stores=[
                store(
                    configs=[
                        provider_config(
                            credentials=credentials,
                            webhook_secret=WEBHOOK_SECRET,
                            base_url="https://sandbox.example.test",
                        )
                    ]
                )
            ]
        ),
    )
    synced = await sync(portal, clock, body)
    assert synced.status_code == 200, synced.text

    response = await portal.get(f"/v1/stores/{STORE_ID}/provider_configs")

    assert response.status_code == 200, response.text
    assert_no_secret_in("the provider_configs response", response.text)
    [config] = response.json()["data"]
    assert config["id"].startswith("pcfg_")
    assert (config["store_id"], config["merchant_id"], config["provider_code"]) == (
        STORE_ID,
        MERCHANT_ID,
        "test",
    )
    assert (config["is_active"], config["base_url"]) == (True, "https://sandbox.example.test")
    assert sorted(config["credentials"]) == sorted(credentials)
    for name, masked in config["credentials"].items():
        assert masked.startswith(MASK), (name, masked)
        assert masked != credentials[name]
    assert config["credentials"]["terminal_pin"] == MASK  # a short secret shows nothing of itself
    assert config["webhook_secret"].startswith(MASK)


async def test_provider_config_without_webhook_secret_shows_null(
    portal: ServerClient, clock: FrozenClock, tenant: Tenant
) -> None:
    synced = await sync(portal, clock, sync_body(tenant.client_partner_id))
    assert synced.status_code == 200, synced.text

    response = await portal.get(f"/v1/stores/{STORE_ID}/provider_configs")

    assert response.status_code == 200, response.text
    [config] = response.json()["data"]
    assert config["webhook_secret"] is None
    assert_no_secret_in("the provider_configs response", response.text)


# ---------------------------------------------------------------------------------------------- conflicts: all or nothing


def _other_partners_merchant_last(tenant: Tenant, other: Tenant) -> list[dict[str, Any]]:
    return [
        merchant(),  # new: created first, must be rolled back
        merchant(tenant.merchant_id, "M-1-RENAMED", stores=[]),  # existing: renamed, must be rolled back
        merchant(other.merchant_id, "G-1", stores=[]),
    ]


def _other_partners_store(tenant: Tenant, other: Tenant) -> list[dict[str, Any]]:
    return [merchant(stores=[store(STORE_ID), store(other.store_id, "GS-1")])]


def _other_merchants_store(tenant: Tenant, other: Tenant) -> list[dict[str, Any]]:
    return [merchant(stores=[store(STORE_ID), store(tenant.store_id, "S-1")])]


def _merchant_code_taken(tenant: Tenant, other: Tenant) -> list[dict[str, Any]]:
    return [merchant(merchant_code="M-1")]


def _store_code_taken(tenant: Tenant, other: Tenant) -> list[dict[str, Any]]:
    return [merchant(), merchant(tenant.merchant_id, "M-1", stores=[store(STORE_ID + 1, "S-1")])]


@pytest.mark.parametrize(
    "merchants",
    [
        pytest.param(_other_partners_merchant_last, id="merchant-of-another-partner"),
        pytest.param(_other_partners_store, id="store-of-another-partner"),
        pytest.param(_other_merchants_store, id="store-of-another-merchant"),
        pytest.param(_merchant_code_taken, id="merchant-code-taken"),
        pytest.param(_store_code_taken, id="store-code-taken"),
    ],
)
async def test_conflicting_tree_is_rejected_whole(
    merchants: Callable[[Tenant, Tenant], list[dict[str, Any]]],
    portal: ServerClient,
    clock: FrozenClock,
    container: Container,
    tenant: Tenant,
    other_tenant: Tenant,
) -> None:
    before = await database_snapshot(container)

    response = await sync(
        portal, clock, sync_body(tenant.client_partner_id, *merchants(tenant, other_tenant))
    )

    assert_problem(response, 409, "tenant_conflict")
    assert await database_snapshot(container) == before
    assert await load(container, Merchant, MERCHANT_ID) is None
    assert await load(container, Store, STORE_ID) is None
    other_merchant = await load(container, Merchant, other_tenant.merchant_id)
    assert other_merchant is not None
    assert (other_merchant.client_partner_id, other_merchant.merchant_code) == (
        other_tenant.client_partner_id,
        "G-1",
    )


# ---------------------------------------------------------------------------------------------- validation


def _duplicate_merchant_id() -> list[dict[str, Any]]:
    return [merchant(stores=[]), merchant(merchant_code="MERCHANT-DEF", stores=[])]


def _duplicate_store_id_in_a_merchant() -> list[dict[str, Any]]:
    return [merchant(stores=[store(), store(store_code="STORE-002")])]


def _duplicate_store_id_across_merchants() -> list[dict[str, Any]]:
    return [merchant(), merchant(MERCHANT_ID + 1, "MERCHANT-DEF", [store(store_code="STORE-002")])]


def _duplicate_provider_code_in_a_store() -> list[dict[str, Any]]:
    return [merchant(stores=[store(configs=[provider_config(), provider_config(is_active=False)])])]


@pytest.mark.parametrize(
    "merchants",
    [
        pytest.param(_duplicate_merchant_id, id="merchant_id"),
        pytest.param(_duplicate_store_id_in_a_merchant, id="store_id-in-a-merchant"),
        pytest.param(_duplicate_store_id_across_merchants, id="store_id-across-merchants"),
        pytest.param(_duplicate_provider_code_in_a_store, id="provider_code-in-a-store"),
    ],
)
async def test_duplicate_ids_in_one_body_are_rejected(
    merchants: Callable[[], list[dict[str, Any]]],
    portal: ServerClient,
    clock: FrozenClock,
    container: Container,
    tenant: Tenant,
) -> None:
    before = await database_snapshot(container)

    response = await sync(portal, clock, sync_body(tenant.client_partner_id, *merchants()))

    assert_problem(response, 422, "validation_error")
    assert await database_snapshot(container) == before


async def test_unknown_provider_code_is_rejected(
    portal: ServerClient, clock: FrozenClock, container: Container, tenant: Tenant
) -> None:
    before = await database_snapshot(container)
    body = sync_body(
        tenant.client_partner_id,
        merchant(stores=[store(configs=[provider_config(), provider_config(provider_code="nopay")])]),
    )

    response = await sync(portal, clock, body)

    problem = assert_problem(response, 422, "unknown_provider")
    assert "nopay" in problem["detail"]
    assert await database_snapshot(container) == before


@pytest.mark.parametrize(
    ("level", "loc"),
    [
        ("request", ["body", "colour"]),
        ("merchant", ["body", "merchants", 0, "colour"]),
        ("store", ["body", "merchants", 0, "stores", 0, "colour"]),
        ("provider_config", ["body", "merchants", 0, "stores", 0, "provider_configs", 0, "colour"]),
    ],
)
async def test_unknown_fields_are_rejected(
    level: str,
    loc: list[str | int],
    portal: ServerClient,
    clock: FrozenClock,
    container: Container,
    tenant: Tenant,
) -> None:
    body = sync_body(
        tenant.client_partner_id,
        merchant(stores=[store(configs=[provider_config(webhook_secret=WEBHOOK_SECRET)])]),
    )
    target: dict[str, Any] = {
        "request": body,
        "merchant": body["merchants"][0],
        "store": body["merchants"][0]["stores"][0],
        "provider_config": body["merchants"][0]["stores"][0]["provider_configs"][0],
    }[level]
    target["colour"] = "blue"
    before = await database_snapshot(container)

    response = await sync(portal, clock, body)

    problem = assert_problem(response, 422, "validation_error")
    assert {"loc": loc, "type": "extra_forbidden"} in [
        {"loc": issue["loc"], "type": issue["type"]} for issue in problem["errors"]
    ]
    assert_no_secret_in("the validation problem", response.text)
    assert await database_snapshot(container) == before


# ---------------------------------------------------------------------------------------------- who may sync


@pytest.mark.parametrize("scope", ["merchant", "store"])
async def test_merchant_or_store_scoped_client_may_not_sync(
    scope: str,
    server: ServerClient,
    container: Container,
    http: httpx.AsyncClient,
    clock: FrozenClock,
    tenant: Tenant,
) -> None:
    client = server
    if scope == "store":
        client_id, secret = await container.tenants.create_client(
            name="pos",
            partner_id=tenant.client_partner_id,
            merchant_id=tenant.merchant_id,
            store_id=tenant.store_id,
        )
        client = ServerClient(http, client_id, secret, clock)
    before = await database_snapshot(container)

    response = await sync(client, clock, sync_body(tenant.client_partner_id))

    assert_problem(response, 403, "sync_forbidden")
    assert await database_snapshot(container) == before


@pytest.mark.parametrize("target", ["another-partner", "no-such-partner"])
async def test_partner_client_may_not_sync_another_partner(
    target: str,
    portal: ServerClient,
    clock: FrozenClock,
    container: Container,
    other_tenant: Tenant,
) -> None:
    partner_id = other_tenant.client_partner_id if target == "another-partner" else 987654
    before = await database_snapshot(container)
    body = sync_body(
        partner_id, merchant(other_tenant.merchant_id, "G-1-TAKEN", stores=[]), merchant(stores=[])
    )

    response = await sync(portal, clock, body)

    assert_problem(response, 403, "sync_forbidden")
    assert await database_snapshot(container) == before


@pytest.mark.parametrize(
    ("authorization", "code"),
    [(None, "missing_credentials"), ("Bearer tok_not_a_server_credential", "invalid_payment_token")],
)
async def test_sync_needs_a_signed_server_call(
    authorization: str | None, code: str, http: httpx.AsyncClient, container: Container, tenant: Tenant
) -> None:
    before = await database_snapshot(container)
    headers = {} if authorization is None else {"Authorization": authorization}

    response = await http.post(SYNC, json=sync_body(tenant.client_partner_id), headers=headers)

    assert_problem(response, 401, code)
    assert await database_snapshot(container) == before


# ---------------------------------------------------------------------------------------------- synced stores at work


async def test_synced_store_takes_a_payment(
    portal: ServerClient,
    server: ServerClient,
    clock: FrozenClock,
    container: Container,
    http: httpx.AsyncClient,
    tenant: Tenant,
) -> None:
    synced = await sync(portal, clock, sync_body(tenant.client_partner_id))
    assert synced.status_code == 200, synced.text

    # The partner's client reaches every store of the partner.
    intent = await portal.create_intent(tenant, store_id=STORE_ID, amount=2500)
    assert (intent["client_partner_id"], intent["merchant_id"], intent["store_id"]) == (
        tenant.client_partner_id,
        MERCHANT_ID,
        STORE_ID,
    )
    confirmed = await http.post(
        f"/v1/payment_intents/{intent['id']}/confirm", headers=bearer(intent["payment_token"])
    )
    assert confirmed.status_code == 200, confirmed.text
    assert (confirmed.json()["status"], confirmed.json()["provider_name"]) == ("succeeded", "test")

    # A client of the new merchant reaches it too; the tenant's merchant M-1 does not.
    client_id, secret = await container.tenants.create_client(
        name="abc-server", partner_id=tenant.client_partner_id, merchant_id=MERCHANT_ID
    )
    await ServerClient(http, client_id, secret, clock).create_intent(tenant, store_id=STORE_ID)
    foreign = await server.post("/v1/payment_intents", intent_for(STORE_ID, "M1-FOREIGN"))
    assert_problem(foreign, 404, "store_not_found")


# ---------------------------------------------------------------------------------------------- no-op syncs


async def test_an_identical_sync_writes_nothing(
    container: Container, portal: ServerClient, tenant: Tenant, clock: FrozenClock
) -> None:
    body = sync_body(
        tenant.client_partner_id,
        merchant(stores=[store(configs=[provider_config(webhook_secret=WEBHOOK_SECRET)])]),
    )
    assert (await sync(portal, clock, body)).status_code == 200
    before = await database_snapshot(container)
    clock.advance(3600)  # an hour later the portal's periodic sync sends the same tree
    assert (await sync(portal, clock, body)).status_code == 200
    after = await database_snapshot(container)
    for table in ("merchants", "stores", "store_provider_configs"):
        assert after[table] == before[table], table


async def test_omitted_base_url_and_webhook_secret_are_kept_and_null_resets_them(
    container: Container, portal: ServerClient, tenant: Tenant, clock: FrozenClock
) -> None:
    sandbox = "http://127.0.0.1:9000/paypay"
    first = provider_config(base_url=sandbox, webhook_secret=WEBHOOK_SECRET)
    body = sync_body(tenant.client_partner_id, merchant(stores=[store(configs=[first])]))
    assert (await sync(portal, clock, body)).status_code == 200

    omitted = sync_body(
        tenant.client_partner_id, merchant(stores=[store(configs=[provider_config(is_active=False)])])
    )
    assert (await sync(portal, clock, omitted)).status_code == 200
    config = await config_of(container, STORE_ID)
    assert config is not None
    assert config.base_url == sandbox
    assert container.tenants.credentials(config).webhook_secret == WEBHOOK_SECRET
    assert config.is_active is False

    cleared = provider_config(base_url=None, webhook_secret=None)
    assert (
        await sync(
            portal, clock, sync_body(tenant.client_partner_id, merchant(stores=[store(configs=[cleared])]))
        )
    ).status_code == 200
    config = await config_of(container, STORE_ID)
    assert config is not None
    assert config.base_url is None
    assert container.tenants.credentials(config).webhook_secret is None
