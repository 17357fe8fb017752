"""A store's provider configs: read by every confirm, provider notification and status check, so kept for a few
seconds, as a store's payable state is (`paymux.tenants.payable`).

What is kept is the config as stored, its credentials still sealed: they are opened for each provider call, and
no secret stays in memory longer than that call. A change made through this process (a config sync, a bootstrap,
`paymux demo`) is seen at once, one made through another process within `TTL`. A store with no config at all is
not kept, so a config added elsewhere to a new store is seen at once too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import timedelta
from typing import cast

from sqlalchemy import Table, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from paymux.core.clock import Clock
from paymux.core.kept import Kept
from paymux.tenants.models import StoreProviderConfig

TTL = timedelta(seconds=5)


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """One store's config for one provider, as stored: its credentials and webhook secret sealed."""

    id: str
    store_id: int
    merchant_id: int
    client_partner_id: int
    provider_code: str
    credentials_sealed: str
    webhook_secret_sealed: str | None
    base_url: str | None
    is_active: bool
    options: Mapping[str, str]


_CONFIGS = cast(Table, StoreProviderConfig.__table__)
# The columns the dataclass names, so that a row is a config as it is.
_CONFIGS_OF_STORE = (
    select(*(_CONFIGS.c[field.name] for field in fields(ProviderConfig)))
    .where(_CONFIGS.c.store_id == bindparam("store_id"))
    .order_by(_CONFIGS.c.provider_code)
)


class KeptProviderConfigs:
    def __init__(self, clock: Clock) -> None:
        self._kept: Kept[int, tuple[ProviderConfig, ...]] = Kept(TTL, clock)

    async def of_store(self, session: AsyncSession, store_id: int) -> tuple[ProviderConfig, ...]:
        """Every config of the store, active or not, by provider code; read, when not kept, in the caller's
        session (inside its transaction, if it has one: on SQLite a second connection would wait for it)."""
        kept = self._kept.get(store_id)
        if kept is not None:
            return kept
        read_at = self._kept.generation
        connection = await session.connection()  # a Core statement: the ORM's execute adds nothing here
        rows = await connection.execute(_CONFIGS_OF_STORE, {"store_id": store_id})
        configs = tuple(ProviderConfig(**row._mapping) for row in rows)
        if configs:
            self._kept.keep(store_id, configs, read_at=read_at)
        return configs

    def forget_all(self) -> None:
        """Drop every kept config; called once a change to provider configs has committed (they are rare)."""
        self._kept.forget_all()
