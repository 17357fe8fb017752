"""Tenant tree upkeep: config sync from the portal, bootstrap from the CLI, and provider config look-ups."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from paymux.audit.service import AuditAction, AuditLog, AuditObject
from paymux.auth.service import ApiClientService, IssuedClient
from paymux.core.clock import Clock
from paymux.core.crypto import EnvelopeCipher, mask_secret
from paymux.core.db import Database
from paymux.core.errors import Conflict, NotFound
from paymux.core.ids import new_id
from paymux.core.pagination import fetch_page
from paymux.gateway.permissions import Operation, require
from paymux.gateway.principal import CallerType, Principal
from paymux.ledger.fees import FeeRule
from paymux.providers.base import ProviderCredentials
from paymux.providers.registry import ProviderRegistry
from paymux.tenants.errors import (
    MerchantNotFound,
    StoreNotFound,
    SyncForbidden,
    TenantConflict,
    TenantNotInScope,
    UnknownProviderCode,
)
from paymux.tenants.models import ClientPartner, Merchant, Store, StoreProviderConfig
from paymux.tenants.payable import PayableStore, PayableStores
from paymux.tenants.provider_configs import KeptProviderConfigs, ProviderConfig
from paymux.tenants.schemas import (
    MerchantSync,
    MerchantSyncRequest,
    MerchantSyncResult,
    ProviderConfigOut,
    ProviderConfigSync,
    StoreSync,
)


def _assign(row: object, **values: object) -> bool:
    """Set the attributes that differ; True when anything changed."""
    changed = False
    for name, value in values.items():
        if getattr(row, name, None) != value:
            setattr(row, name, value)
            changed = True
    return changed


@dataclass(frozen=True, slots=True)
class BootstrapResult:
    client_partner_id: int
    merchant_id: int
    store_id: int
    client_id: str
    client_secret: str


# Bootstrap and single provider configs are operator tools (the CLI, the demo); without a named operator they
# are recorded as paymux's own.
OPERATOR = Principal.operator("paymux")


class TenantService:
    def __init__(
        self,
        db: Database,
        cipher: EnvelopeCipher,
        clock: Clock,
        providers: ProviderRegistry,
        api_clients: ApiClientService,
        audit: AuditLog,
        payable_stores: PayableStores,
    ) -> None:
        self._db = db
        self._audit = audit
        self._cipher = cipher
        self._clock = clock
        self._providers = providers
        self._api_clients = api_clients
        self._payable_stores = payable_stores
        self._provider_configs = KeptProviderConfigs(clock)

    # ------------------------------------------------------------------ config sync (seed 004)

    async def sync(self, principal: Principal, request: MerchantSyncRequest) -> MerchantSyncResult:
        """Upsert merchants, stores and provider configs of one partner, all or nothing."""
        require(principal, Operation.CONFIG_SYNC)
        if principal.caller_type is not CallerType.API_CLIENT or principal.merchant_id is not None:
            raise SyncForbidden("Config sync needs an API client scoped to the whole partner.")
        if principal.client_partner_id != request.client_partner_id:
            raise SyncForbidden(f"This client may not sync client_partner_id {request.client_partner_id}.")
        requested_codes = {
            config.provider_code
            for merchant_sync in request.merchants
            for store_sync in merchant_sync.stores
            for config in store_sync.provider_configs
        }
        if unknown := sorted(code for code in requested_codes if code not in self._providers):
            raise UnknownProviderCode(
                f"Unknown provider_code {', '.join(unknown)}; known: {', '.join(self._providers.names())}."
            )
        async with self._db.unit_of_work() as session:
            partner = await session.get(ClientPartner, request.client_partner_id)
            if partner is None:
                raise SyncForbidden(f"client_partner_id {request.client_partner_id} does not exist.")
            for merchant_sync in request.merchants:
                merchant = await self._upsert_merchant(session, request.client_partner_id, merchant_sync)
                for store_sync in merchant_sync.stores:
                    store = await self._upsert_store(session, merchant, store_sync)
                    for config_sync in store_sync.provider_configs:
                        await self._upsert_provider_config(session, store, config_sync)
            self._audit.record(
                session,
                principal,
                AuditAction.CONFIG_SYNCED,
                AuditObject("client_partner", str(partner.id), partner.id),
                details={
                    "merchants": [merchant_sync.merchant_id for merchant_sync in request.merchants],
                    "stores": [store.store_id for merchant in request.merchants for store in merchant.stores],
                    "provider_configs": sorted(requested_codes),
                },
            )
        self._forget_kept()
        return MerchantSyncResult(
            synced_merchants=len(request.merchants),
            synced_stores=sum(len(merchant.stores) for merchant in request.merchants),
        )

    async def _upsert_merchant(self, session: AsyncSession, partner_id: int, sync: MerchantSync) -> Merchant:
        now = self._clock.now()
        merchant = await session.get(Merchant, sync.merchant_id, with_for_update=True)
        if merchant is not None and merchant.client_partner_id != partner_id:
            raise TenantConflict(f"merchant_id {sync.merchant_id} cannot be synced by this partner.")
        same_code = (
            await session.execute(
                select(Merchant.id).where(
                    Merchant.client_partner_id == partner_id,
                    Merchant.merchant_code == sync.merchant_code,
                    Merchant.id != sync.merchant_id,
                )
            )
        ).scalar_one_or_none()
        if same_code is not None:
            raise TenantConflict(f"merchant_code {sync.merchant_code!r} is already merchant_id {same_code}.")
        if merchant is None:
            merchant = Merchant(id=sync.merchant_id, client_partner_id=partner_id, created_at=now)
            session.add(merchant)
        if _assign(merchant, merchant_code=sync.merchant_code, name=sync.name, is_active=sync.is_active):
            merchant.updated_at = now
        await session.flush()
        return merchant

    async def _upsert_store(self, session: AsyncSession, merchant: Merchant, sync: StoreSync) -> Store:
        now = self._clock.now()
        store = await session.get(Store, sync.store_id, with_for_update=True)
        if store is not None and store.merchant_id != merchant.id:
            raise TenantConflict(f"store_id {sync.store_id} belongs to another merchant.")
        same_code = (
            await session.execute(
                select(Store.id).where(
                    Store.merchant_id == merchant.id,
                    Store.store_code == sync.store_code,
                    Store.id != sync.store_id,
                )
            )
        ).scalar_one_or_none()
        if same_code is not None:
            raise TenantConflict(f"store_code {sync.store_code!r} is already store_id {same_code}.")
        if store is None:
            store = Store(
                id=sync.store_id,
                merchant_id=merchant.id,
                client_partner_id=merchant.client_partner_id,
                created_at=now,
            )
            session.add(store)
        if _assign(store, store_code=sync.store_code, name=sync.name, is_active=sync.is_active):
            store.updated_at = now
        if sync.fee_rules is not None and _assign(
            store, fee_rules=[rule.model_dump(mode="json") for rule in sync.fee_rules]
        ):
            store.updated_at = now
        await session.flush()
        return store

    async def _upsert_provider_config(
        self, session: AsyncSession, store: Store, sync: ProviderConfigSync
    ) -> StoreProviderConfig:
        now = self._clock.now()
        config = (
            await session.execute(
                select(StoreProviderConfig)
                .where(
                    StoreProviderConfig.store_id == store.id,
                    StoreProviderConfig.provider_code == sync.provider_code,
                )
                .with_for_update()
            )
        ).scalar_one_or_none()
        if config is None:
            if sync.credentials is None:
                raise TenantConflict(
                    f"store {store.id} has no {sync.provider_code} config yet: send its credentials."
                )
            config = StoreProviderConfig(
                id=new_id("pcfg"),
                options={},
                store_id=store.id,
                merchant_id=store.merchant_id,
                client_partner_id=store.client_partner_id,
                provider_code=sync.provider_code,
                created_at=now,
            )
            session.add(config)
        # Only what differs is written, so a repeated sync changes nothing (and `updated_at` means "changed").
        changed = False
        stored = self.credentials(config) if config.credentials_sealed is not None else None
        if sync.credentials is not None and (stored is None or dict(stored.values) != sync.credentials):
            config.credentials_sealed = self._cipher.seal_json(
                sync.credentials, context=self._context(store.id, sync.provider_code, "credentials")
            )
            changed = True
        # Omitted: keep. null: remove (webhook_secret) or back to the provider's production URL (base_url).
        if "webhook_secret" in sync.model_fields_set and sync.webhook_secret != (
            stored.webhook_secret if stored else None
        ):
            config.webhook_secret_sealed = (
                None
                if sync.webhook_secret is None
                else self._cipher.seal_text(
                    sync.webhook_secret, context=self._context(store.id, sync.provider_code, "webhook_secret")
                )
            )
            changed = True
        if "base_url" in sync.model_fields_set:
            changed |= _assign(config, base_url=sync.base_url)
        if sync.options is not None:
            changed |= _assign(config, options=dict(sync.options))
        changed |= _assign(config, is_active=sync.is_active)
        if changed:
            config.updated_at = now
        await session.flush()
        return config

    def _forget_kept(self) -> None:
        """After a commit that may change stores or provider configs, so no reader keeps the old state again."""
        self._payable_stores.forget_all()
        self._provider_configs.forget_all()

    @staticmethod
    def _context(store_id: int, provider_code: str, part: str) -> str:
        return f"store_provider_config:{store_id}:{provider_code}:{part}"

    # ------------------------------------------------------------------ look-ups for other domains

    async def store_in_scope(self, session: AsyncSession, principal: Principal, store_id: int) -> Store:
        store = await session.get(Store, store_id)
        if store is None or not principal.sees(
            client_partner_id=store.client_partner_id, merchant_id=store.merchant_id, store_id=store.id
        ):
            raise StoreNotFound(f"No store {store_id} in this client's scope.")
        return store

    async def payable_store(self, principal: Principal, store_id: int) -> PayableStore:
        """A store in the caller's scope, with whether it and its merchant take payments (see `PayableStores`:
        kept briefly, as every PaymentIntent create asks this)."""
        store = await self._payable_stores.get(store_id)
        if store is None or not principal.sees(
            client_partner_id=store.client_partner_id, merchant_id=store.merchant_id, store_id=store.id
        ):
            raise StoreNotFound(f"No store {store_id} in this client's scope.")
        return store

    async def fee_rule(self, session: AsyncSession, store_id: int, currency: str) -> FeeRule | None:
        """The store's fee rule for a currency; None when it charges no fee in that currency."""
        connection = await session.connection()  # one column, as Core: the Store object is not needed
        rules = await connection.scalar(select(Store.fee_rules).where(Store.id == store_id))
        for rule in rules or []:
            if rule.get("currency") == currency:
                return FeeRule(
                    currency=currency,
                    percent_bps=int(str(rule.get("percent_bps", 0))),
                    fixed_amount=int(str(rule.get("fixed_amount", 0))),
                )
        return None

    async def list_merchants(
        self, principal: Principal, *, limit: int, starting_after: int | None
    ) -> tuple[list[Merchant], bool]:
        """The merchants a caller's scope covers, by id."""
        require(principal, Operation.MERCHANTS_READ)
        statement = select(Merchant)
        if principal.client_partner_id is not None:
            statement = statement.where(Merchant.client_partner_id == principal.client_partner_id)
        if principal.merchant_id is not None:
            statement = statement.where(Merchant.id == principal.merchant_id)
        async with self._db.reading() as session:
            return await fetch_page(
                session,
                statement,
                Merchant.id,
                limit=limit,
                starting_after=starting_after,
                newest_first=False,
            )

    async def resolve_scope(
        self, *, partner_id: int | None, merchant_id: int | None, store_id: int | None
    ) -> tuple[int | None, int | None, int | None]:
        """Complete a tenant scope from its narrowest id (a store names its merchant and partner), checking that
        the ids given belong together."""
        async with self._db.reading() as session:
            if store_id is not None:
                store = await session.get(Store, store_id)
                if store is None:
                    raise StoreNotFound(f"No store {store_id}.")
                if merchant_id not in (None, store.merchant_id):
                    raise TenantConflict(f"Store {store_id} belongs to merchant {store.merchant_id}.")
                merchant_id = store.merchant_id
            if merchant_id is not None:
                merchant = await session.get(Merchant, merchant_id)
                if merchant is None:
                    raise MerchantNotFound(f"No merchant {merchant_id}.")
                if partner_id not in (None, merchant.client_partner_id):
                    raise TenantConflict(
                        f"Merchant {merchant_id} belongs to partner {merchant.client_partner_id}."
                    )
                partner_id = merchant.client_partner_id
            if partner_id is not None and await session.get(ClientPartner, partner_id) is None:
                raise TenantConflict(f"No client partner {partner_id}.")
        return partner_id, merchant_id, store_id

    async def resolve_within(
        self, principal: Principal, *, partner_id: int | None, merchant_id: int | None, store_id: int | None
    ) -> tuple[int | None, int | None, int | None]:
        """`resolve_scope` for an object an admin creates: it must lie within the admin's scope, and ids outside
        it read as absent ones (404 tenant_not_found), so an admin cannot probe other tenants' ids."""
        try:
            resolved = await self.resolve_scope(
                partner_id=partner_id, merchant_id=merchant_id, store_id=store_id
            )
        except (NotFound, Conflict):
            raise TenantNotInScope("No such partner, merchant or store in your scope.") from None
        partner, merchant, store = resolved
        if not principal.sees(client_partner_id=partner, merchant_id=merchant, store_id=store):
            raise TenantNotInScope("No such partner, merchant or store in your scope.")
        return resolved

    async def merchant_in_scope(self, principal: Principal, merchant_id: int) -> Merchant:
        async with self._db.reading() as session:
            merchant = await session.get(Merchant, merchant_id)
        if merchant is None or not principal.sees(
            client_partner_id=merchant.client_partner_id, merchant_id=merchant.id
        ):
            raise MerchantNotFound(f"No merchant {merchant_id} in this client's scope.")
        return merchant

    async def active_provider_configs(self, session: AsyncSession, store_id: int) -> list[ProviderConfig]:
        """The store's active provider configs, by provider code (kept for a few seconds: see provider_configs)."""
        return [
            config for config in await self._provider_configs.of_store(session, store_id) if config.is_active
        ]

    async def active_configs_of(self, provider_codes: Sequence[str]) -> list[StoreProviderConfig]:
        """Every active store config of these providers (back-office jobs such as the daily reconciliation)."""
        if not provider_codes:
            return []
        async with self._db.reading() as session:
            statement = select(StoreProviderConfig).where(
                StoreProviderConfig.provider_code.in_(provider_codes), StoreProviderConfig.is_active.is_(True)
            )
            return list((await session.execute(statement.order_by(StoreProviderConfig.id))).scalars())

    async def provider_config(
        self, session: AsyncSession, store_id: int, provider_code: str
    ) -> ProviderConfig | None:
        """A store's config for one provider, active or not (a payment started under it still needs it)."""
        configs = await self._provider_configs.of_store(session, store_id)
        return next((config for config in configs if config.provider_code == provider_code), None)

    def credentials(self, config: StoreProviderConfig | ProviderConfig) -> ProviderCredentials:
        """Decrypt a config's credentials for one provider call."""
        values = self._cipher.open_json(
            config.credentials_sealed,
            context=self._context(config.store_id, config.provider_code, "credentials"),
        )
        webhook_secret = None
        if config.webhook_secret_sealed is not None:
            webhook_secret = self._cipher.open_text(
                config.webhook_secret_sealed,
                context=self._context(config.store_id, config.provider_code, "webhook_secret"),
            )
        return ProviderCredentials(values=values, base_url=config.base_url, webhook_secret=webhook_secret)

    async def provider_configs(self, principal: Principal, store_id: int) -> list[ProviderConfigOut]:
        require(principal, Operation.PROVIDER_CONFIGS_READ)
        async with self._db.reading() as session:
            await self.store_in_scope(session, principal, store_id)
            configs = (
                await session.execute(
                    select(StoreProviderConfig)
                    .where(StoreProviderConfig.store_id == store_id)
                    .order_by(StoreProviderConfig.provider_code)
                )
            ).scalars()
            return [self._masked(config) for config in configs]

    def _masked(self, config: StoreProviderConfig) -> ProviderConfigOut:
        credentials = self.credentials(config)
        return ProviderConfigOut(
            id=config.id,
            store_id=config.store_id,
            merchant_id=config.merchant_id,
            provider_code=config.provider_code,
            is_active=config.is_active,
            base_url=config.base_url,
            options=dict(config.options or {}),
            credentials={name: mask_secret(value) for name, value in sorted(credentials.values.items())},
            webhook_secret=mask_secret(credentials.webhook_secret) if credentials.webhook_secret else None,
            updated_at=config.updated_at,
        )

    async def configure_provider(
        self, store_id: int, config: ProviderConfigSync, *, actor: Principal | None = None
    ) -> None:
        """Set one provider config of a store (the CLI and the demo; the portal uses sync)."""
        if config.provider_code not in self._providers:
            raise UnknownProviderCode(f"Unknown provider_code {config.provider_code!r}.")
        async with self._db.unit_of_work() as session:
            store = await session.get(Store, store_id)
            if store is None:
                raise StoreNotFound(f"No store {store_id}.")
            await self._upsert_provider_config(session, store, config)
            self._audit.record(
                session,
                actor or OPERATOR,
                AuditAction.PROVIDER_CONFIG_SET,
                AuditObject("store", str(store.id), store.client_partner_id, store.merchant_id, store.id),
                details={"provider_code": config.provider_code, "is_active": config.is_active},
            )
        self._forget_kept()

    # ------------------------------------------------------------------ bootstrap (CLI)

    async def bootstrap(
        self,
        *,
        partner_name: str,
        merchant_code: str,
        store_code: str,
        client_name: str = "bootstrap",
        test_provider: bool = False,
        reuse_client: bool = False,
        actor: Principal | None = None,
    ) -> BootstrapResult:
        """Create what does not exist of partner -> merchant -> store, and a new merchant-scoped API client.

        With `reuse_client`, an existing client of that name is returned (with its secret) instead.
        """
        now = self._clock.now()
        async with self._db.unit_of_work() as session:
            partner = (
                await session.execute(select(ClientPartner).where(ClientPartner.name == partner_name))
            ).scalar_one_or_none()
            if partner is None:
                partner = ClientPartner(
                    id=await self.next_id(session, ClientPartner),
                    name=partner_name,
                    created_at=now,
                    updated_at=now,
                )
                session.add(partner)
                await session.flush()
            merchant = (
                await session.execute(
                    select(Merchant).where(
                        Merchant.client_partner_id == partner.id, Merchant.merchant_code == merchant_code
                    )
                )
            ).scalar_one_or_none()
            if merchant is None:
                merchant = Merchant(
                    id=await self.next_id(session, Merchant),
                    client_partner_id=partner.id,
                    merchant_code=merchant_code,
                    is_active=True,
                    created_at=now,
                    updated_at=now,
                )
                session.add(merchant)
                await session.flush()
            store = (
                await session.execute(
                    select(Store).where(Store.merchant_id == merchant.id, Store.store_code == store_code)
                )
            ).scalar_one_or_none()
            if store is None:
                store = Store(
                    id=await self.next_id(session, Store),
                    merchant_id=merchant.id,
                    client_partner_id=partner.id,
                    store_code=store_code,
                    is_active=True,
                    created_at=now,
                    updated_at=now,
                )
                session.add(store)
                await session.flush()
            if test_provider:
                await self._upsert_provider_config(
                    session, store, ProviderConfigSync(provider_code="test", credentials={}, is_active=True)
                )
            existing = (
                await self._api_clients.find_by_name(session, client_name, merchant.id)
                if reuse_client
                else None
            )
            if existing is not None:
                client_id, secret = existing.id, self._api_clients.reveal_secret(existing)
            else:
                issued = await self._api_clients.create(
                    session, name=client_name, client_partner_id=partner.id, merchant_id=merchant.id
                )
                client_id, secret = issued.client.id, issued.secret
                self._audit.record(
                    session,
                    actor or OPERATOR,
                    AuditAction.API_CLIENT_CREATED,
                    AuditObject("api_client", client_id, partner.id, merchant.id),
                    details={"name": client_name},
                )
            result = BootstrapResult(
                client_partner_id=partner.id,
                merchant_id=merchant.id,
                store_id=store.id,
                client_id=client_id,
                client_secret=secret,
            )
        self._forget_kept()
        return result

    async def create_client(
        self,
        *,
        name: str,
        partner_id: int,
        merchant_id: int | None = None,
        store_id: int | None = None,
        actor: Principal | None = None,
    ) -> tuple[str, str]:
        """An API client scoped to a partner, a merchant or a store, the narrowest id completing the scope;
        returns (client_id, secret)."""
        partner, merchant, store = await self.resolve_scope(
            partner_id=partner_id, merchant_id=merchant_id, store_id=store_id
        )
        assert partner is not None  # noqa: S101 - resolve_scope keeps the partner id it was given
        issued = await self.issue_client(
            name=name, partner_id=partner, merchant_id=merchant, store_id=store, actor=actor
        )
        return issued.client.id, issued.secret

    async def issue_client(
        self,
        *,
        name: str,
        partner_id: int,
        merchant_id: int | None,
        store_id: int | None,
        actor: Principal | None,
    ) -> IssuedClient:
        """A new API client for a scope already resolved, audited; its secret is returned here only."""
        async with self._db.unit_of_work() as session:
            issued = await self._api_clients.create(
                session, name=name, client_partner_id=partner_id, merchant_id=merchant_id, store_id=store_id
            )
            self._audit.record(
                session,
                actor or OPERATOR,
                AuditAction.API_CLIENT_CREATED,
                AuditObject("api_client", issued.client.id, partner_id, merchant_id, store_id),
                details={"name": name},
            )
        return issued

    @staticmethod
    async def next_id(
        session: AsyncSession, model: type[ClientPartner] | type[Merchant] | type[Store]
    ) -> int:
        # Ids of the tenant tree are normally the portal's; bootstrap takes the next free one. The CLI runs
        # one bootstrap at a time, and a concurrent one fails on the primary key rather than merging.
        highest = (await session.execute(select(func.max(model.id)))).scalar_one_or_none()
        return int(highest or 0) + 1
