"""The tenant tree through the admin API: partners, merchants and stores, created and changed by portal users.

Config sync (seed 004) stays the portal's bulk path; these are the one-object-at-a-time operations an operator or
an admin does by hand. Each runs behind the permission matrix and in the caller's scope, and is audited.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from paymux.audit.service import AuditAction, AuditLog, AuditObject
from paymux.core.clock import Clock
from paymux.core.db import Database
from paymux.core.errors import NotFound, Unprocessable
from paymux.core.pagination import fetch_page
from paymux.gateway.permissions import Operation, require
from paymux.gateway.principal import Principal
from paymux.tenants.errors import MerchantNotFound, StoreNotFound, TenantConflict, TenantNotInScope
from paymux.tenants.models import ClientPartner, Merchant, Store
from paymux.tenants.payable import PayableStores
from paymux.tenants.schemas import (
    MerchantCreate,
    MerchantUpdate,
    PartnerCreate,
    StoreCreate,
    StoreUpdate,
)
from paymux.tenants.service import TenantService

Row = TypeVar("Row", ClientPartner, Merchant, Store)


class PartnerNotFound(NotFound):
    code = "partner_not_found"
    title = "No such client partner"


def _subject(row: ClientPartner | Merchant | Store) -> AuditObject:
    if isinstance(row, ClientPartner):
        return AuditObject("client_partner", str(row.id), row.id)
    if isinstance(row, Merchant):
        return AuditObject("merchant", str(row.id), row.client_partner_id, row.id)
    return AuditObject("store", str(row.id), row.client_partner_id, row.merchant_id, row.id)


class TenantAdmin:
    def __init__(self, db: Database, clock: Clock, audit: AuditLog, payable_stores: PayableStores) -> None:
        self._db = db
        self._clock = clock
        self._audit = audit
        self._payable_stores = payable_stores

    # ------------------------------------------------------------------ partners

    async def list_partners(
        self, principal: Principal, *, limit: int, starting_after: int | None
    ) -> tuple[list[ClientPartner], bool]:
        require(principal, Operation.PARTNERS_READ)
        statement = select(ClientPartner)
        if principal.client_partner_id is not None:
            statement = statement.where(ClientPartner.id == principal.client_partner_id)
        async with self._db.reading() as session:
            return await fetch_page(
                session,
                statement,
                ClientPartner.id,
                limit=limit,
                starting_after=starting_after,
                newest_first=False,
            )

    async def get_partner(self, principal: Principal, partner_id: int) -> ClientPartner:
        require(principal, Operation.PARTNERS_READ)
        async with self._db.reading() as session:
            partner = await session.get(ClientPartner, partner_id)
        if partner is None or principal.client_partner_id not in (None, partner.id):
            raise PartnerNotFound(f"No client partner {partner_id} in your scope.")
        return partner

    async def create_partner(self, principal: Principal, request: PartnerCreate) -> ClientPartner:
        require(principal, Operation.PARTNERS_MANAGE)
        now = self._clock.now()

        async def create(session: AsyncSession) -> ClientPartner:
            taken = await session.execute(select(ClientPartner.id).where(ClientPartner.name == request.name))
            if taken.first() is not None:
                raise TenantConflict(f"A client partner is named {request.name!r}.")
            partner = ClientPartner(
                id=request.id or await TenantService.next_id(session, ClientPartner),
                name=request.name,
                created_at=now,
                updated_at=now,
            )
            return partner

        return await self._create(principal, create, AuditAction.PARTNER_CREATED)

    # ------------------------------------------------------------------ merchants

    async def get_merchant(self, principal: Principal, merchant_id: int) -> Merchant:
        require(principal, Operation.MERCHANTS_READ)
        async with self._db.reading() as session:
            return await self._merchant(session, principal, merchant_id)

    @staticmethod
    async def _merchant(
        session: AsyncSession, principal: Principal, merchant_id: int, *, lock: bool = False
    ) -> Merchant:
        merchant = await session.get(Merchant, merchant_id, with_for_update=lock)
        # A store's users read their store's merchant too: only the partner and merchant ids are compared.
        if (
            merchant is None
            or principal.client_partner_id not in (None, merchant.client_partner_id)
            or principal.merchant_id not in (None, merchant.id)
        ):
            raise MerchantNotFound(f"No merchant {merchant_id} in your scope.")
        return merchant

    async def create_merchant(self, principal: Principal, request: MerchantCreate) -> Merchant:
        require(principal, Operation.MERCHANTS_MANAGE)
        partner_id = request.client_partner_id or principal.client_partner_id
        if partner_id is None:
            raise Unprocessable("Name the client_partner_id the merchant belongs to.")
        now = self._clock.now()

        async def create(session: AsyncSession) -> Merchant:
            partner = await session.get(ClientPartner, partner_id)
            if partner is None or principal.client_partner_id not in (None, partner.id):
                raise TenantNotInScope(f"No client partner {partner_id} in your scope.")
            return Merchant(
                id=request.id or await TenantService.next_id(session, Merchant),
                client_partner_id=partner.id,
                merchant_code=request.merchant_code,
                name=request.name,
                is_active=True,
                created_at=now,
                updated_at=now,
            )

        return await self._create(principal, create, AuditAction.MERCHANT_CREATED)

    async def update_merchant(
        self, principal: Principal, merchant_id: int, request: MerchantUpdate
    ) -> Merchant:
        require(principal, Operation.MERCHANTS_MANAGE)
        async with self._db.unit_of_work() as session:
            merchant = await self._merchant(session, principal, merchant_id, lock=True)
            if changes := self._apply(merchant, request.model_dump(exclude_unset=True)):
                self._audit.record(
                    session, principal, AuditAction.MERCHANT_UPDATED, _subject(merchant), details=changes
                )
        self._payable_stores.forget_all()  # after the commit, so no create caches the old state again
        return merchant

    # ------------------------------------------------------------------ stores

    async def list_stores(
        self, principal: Principal, *, merchant_id: int | None, limit: int, starting_after: int | None
    ) -> tuple[list[Store], bool]:
        require(principal, Operation.STORES_READ)
        statement = select(Store)
        if principal.client_partner_id is not None:
            statement = statement.where(Store.client_partner_id == principal.client_partner_id)
        if principal.merchant_id is not None:
            statement = statement.where(Store.merchant_id == principal.merchant_id)
        if principal.store_id is not None:
            statement = statement.where(Store.id == principal.store_id)
        if merchant_id is not None:
            statement = statement.where(Store.merchant_id == merchant_id)
        async with self._db.reading() as session:
            return await fetch_page(
                session, statement, Store.id, limit=limit, starting_after=starting_after, newest_first=False
            )

    async def get_store(self, principal: Principal, store_id: int) -> Store:
        require(principal, Operation.STORES_READ)
        async with self._db.reading() as session:
            return await self._store(session, principal, store_id)

    @staticmethod
    async def _store(
        session: AsyncSession, principal: Principal, store_id: int, *, lock: bool = False
    ) -> Store:
        store = await session.get(Store, store_id, with_for_update=lock)
        if store is None or not principal.sees(
            client_partner_id=store.client_partner_id, merchant_id=store.merchant_id, store_id=store.id
        ):
            raise StoreNotFound(f"No store {store_id} in your scope.")
        return store

    async def create_store(self, principal: Principal, request: StoreCreate) -> Store:
        require(principal, Operation.STORES_MANAGE)
        merchant_id = request.merchant_id or principal.merchant_id
        if merchant_id is None:
            raise Unprocessable("Name the merchant_id the store belongs to.")
        now = self._clock.now()

        async def create(session: AsyncSession) -> Store:
            try:
                merchant = await self._merchant(session, principal, merchant_id)
            except MerchantNotFound:
                raise TenantNotInScope(f"No merchant {merchant_id} in your scope.") from None
            return Store(
                id=request.id or await TenantService.next_id(session, Store),
                merchant_id=merchant.id,
                client_partner_id=merchant.client_partner_id,
                store_code=request.store_code,
                name=request.name,
                is_active=True,
                fee_rules=[rule.model_dump(mode="json") for rule in request.fee_rules],
                created_at=now,
                updated_at=now,
            )

        return await self._create(principal, create, AuditAction.STORE_CREATED)

    async def update_store(self, principal: Principal, store_id: int, request: StoreUpdate) -> Store:
        require(principal, Operation.STORES_MANAGE)
        wanted = request.model_dump(mode="json", exclude_unset=True)
        if "fee_rules" in wanted:
            if request.fee_rules is None:
                raise Unprocessable("fee_rules is a list; [] removes every fee.")
            # Whole rules, defaults included: exclude_unset would drop a rule's defaulted fields too.
            wanted["fee_rules"] = [rule.model_dump(mode="json") for rule in request.fee_rules]
        async with self._db.unit_of_work() as session:
            store = await self._store(session, principal, store_id, lock=True)
            if changes := self._apply(store, wanted):
                self._audit.record(
                    session, principal, AuditAction.STORE_UPDATED, _subject(store), details=changes
                )
        self._payable_stores.forget_all()  # after the commit, so no create caches the old state again
        return store

    # ------------------------------------------------------------------ shared

    def _apply(self, row: Merchant | Store, wanted: dict[str, Any]) -> dict[str, Any]:
        """Set what differs; returns {field: [before, after]} of what changed."""
        changes: dict[str, Any] = {}
        for name, value in wanted.items():
            if name == "is_active" and value is None:
                raise Unprocessable("is_active is true or false.")
            if getattr(row, name) != value:
                changes[name] = [getattr(row, name), value]
                setattr(row, name, value)
        if changes:
            row.updated_at = self._clock.now()
        return changes

    async def _create(
        self, principal: Principal, build: Callable[[AsyncSession], Awaitable[Row]], action: AuditAction
    ) -> Row:
        """Insert what `build` makes and audit it; an id or code taken meanwhile is a 409, not a 500."""
        try:
            async with self._db.unit_of_work() as session:
                row: Row = await build(session)
                session.add(row)
                await session.flush()
                self._audit.record(session, principal, action, _subject(row))
        except IntegrityError:
            raise TenantConflict("That id or code is taken.") from None
        return row
