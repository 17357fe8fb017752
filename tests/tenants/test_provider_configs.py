"""A store's provider configs are kept for `provider_configs.TTL` per process: a change through the same process
is seen at once, one through another process within the TTL; a store with no config is not kept; what is kept
holds the credentials sealed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import update

from paymux.config import Settings
from paymux.container import Container
from paymux.core.clock import FrozenClock
from paymux.tenants import provider_configs
from paymux.tenants.models import StoreProviderConfig
from paymux.tenants.provider_configs import ProviderConfig
from paymux.tenants.schemas import ProviderConfigSync
from tests.support import ServerClient, Tenant, bootstrap_tenant


async def config_of(container: Container, store_id: int, provider_code: str) -> ProviderConfig | None:
    async with container.db.reading() as session:
        return await container.tenants.provider_config(session, store_id, provider_code)


async def active_of(container: Container, store_id: int) -> list[ProviderConfig]:
    async with container.db.reading() as session:
        return await container.tenants.active_provider_configs(session, store_id)


@pytest.fixture
async def elsewhere(settings: Settings, clock: FrozenClock) -> AsyncIterator[Container]:
    """Another paymux process on the same database."""
    other = Container.build(settings, clock=clock)
    try:
        yield other
    finally:
        await other.close()


async def test_a_change_through_this_process_is_seen_at_once(container: Container, tenant: Tenant) -> None:
    kept = await config_of(container, tenant.store_id, "test")
    assert kept is not None
    assert kept.is_active
    await container.tenants.configure_provider(
        tenant.store_id,
        ProviderConfigSync(provider_code="test", credentials={"key": "rotated"}, is_active=False),
    )
    changed = await config_of(container, tenant.store_id, "test")
    assert changed is not None
    assert not changed.is_active
    assert container.tenants.credentials(changed).values == {"key": "rotated"}
    assert await active_of(container, tenant.store_id) == []


async def test_a_change_through_another_process_is_seen_within_the_ttl(
    container: Container, elsewhere: Container, tenant: Tenant, clock: FrozenClock
) -> None:
    assert [config.provider_code for config in await active_of(container, tenant.store_id)] == ["test"]
    await elsewhere.tenants.configure_provider(
        tenant.store_id, ProviderConfigSync(provider_code="test", credentials={}, is_active=False)
    )
    assert len(await active_of(container, tenant.store_id)) == 1  # still the kept one
    clock.advance(provider_configs.TTL)
    assert await active_of(container, tenant.store_id) == []


async def test_a_store_without_configs_is_not_kept(
    container: Container, elsewhere: Container, clock: FrozenClock
) -> None:
    bare = await bootstrap_tenant(container, partner="bare", merchant="M-9", store="S-9", test_provider=False)
    assert await config_of(container, bare.store_id, "test") is None
    await elsewhere.tenants.configure_provider(
        bare.store_id, ProviderConfigSync(provider_code="test", credentials={}, is_active=True)
    )
    assert await config_of(container, bare.store_id, "test") is not None  # no TTL to wait out


async def test_kept_configs_hold_their_credentials_sealed(container: Container, tenant: Tenant) -> None:
    await container.tenants.configure_provider(
        tenant.store_id,
        ProviderConfigSync(
            provider_code="test", credentials={"api_secret": "s3cr3t-value"}, webhook_secret="whsec-value"
        ),
    )
    kept = await config_of(container, tenant.store_id, "test")
    assert kept is not None
    assert "s3cr3t-value" not in repr(kept)
    assert "whsec-value" not in repr(kept)
    opened = container.tenants.credentials(kept)
    assert (opened.values["api_secret"], opened.webhook_secret) == ("s3cr3t-value", "whsec-value")


async def test_a_deactivated_config_stops_confirms_after_the_ttl(
    container: Container, tenant: Tenant, server: ServerClient, clock: FrozenClock
) -> None:
    kept = await server.create_intent(tenant)  # its confirm reads the configs, and keeps them
    clock.advance(1)
    assert (await server.post(f"/v1/payment_intents/{kept['id']}/confirm")).status_code == 200
    async with container.db.unit_of_work() as session:  # as another process's sync would
        await session.execute(
            update(StoreProviderConfig)
            .where(StoreProviderConfig.store_id == tenant.store_id)
            .values(is_active=False)
        )
    clock.advance(provider_configs.TTL)
    later = await server.create_intent(tenant)
    refused = await server.post(f"/v1/payment_intents/{later['id']}/confirm")
    assert refused.status_code == 409, refused.text
    assert refused.json()["code"] == "provider_not_configured"
