"""API clients through the admin API: create, list, rotate the HMAC secret, revoke.

A new client's scope lies within the admin's. Rotation replaces the secret at once (the old one stops verifying);
to switch servers over without a gap, create a second client, move the servers to it, then revoke the first.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from paymux.audit.service import AuditAction, AuditLog, AuditObject
from paymux.auth.models import ApiClient
from paymux.auth.service import ApiClientService, IssuedClient
from paymux.core.clock import Clock
from paymux.core.db import Database
from paymux.core.errors import Conflict, NotFound
from paymux.core.pagination import fetch_page
from paymux.gateway.permissions import Operation, require
from paymux.gateway.principal import Principal
from paymux.tenants.errors import TenantNotInScope
from paymux.tenants.service import TenantService


class ApiClientNotFound(NotFound):
    code = "api_client_not_found"
    title = "No such API client"


class ApiClientRevoked(Conflict):
    code = "api_client_revoked"
    title = "The API client is revoked"


def _subject(client: ApiClient) -> AuditObject:
    return AuditObject("api_client", client.id, client.client_partner_id, client.merchant_id, client.store_id)


class ApiClientAdmin:
    def __init__(
        self, db: Database, clock: Clock, clients: ApiClientService, tenants: TenantService, audit: AuditLog
    ) -> None:
        self._db = db
        self._clock = clock
        self._clients = clients
        self._tenants = tenants
        self._audit = audit

    async def list_clients(
        self, principal: Principal, *, limit: int, starting_after: str | None
    ) -> tuple[list[ApiClient], bool]:
        require(principal, Operation.API_CLIENTS_READ)
        statement = principal.scope(select(ApiClient), ApiClient)
        async with self._db.reading() as session:
            return await fetch_page(
                session, statement, ApiClient.id, limit=limit, starting_after=starting_after
            )

    async def get(self, principal: Principal, client_id: str) -> ApiClient:
        require(principal, Operation.API_CLIENTS_READ)
        async with self._db.reading() as session:
            client = (
                await session.execute(
                    principal.scope(select(ApiClient).where(ApiClient.id == client_id), ApiClient)
                )
            ).scalar_one_or_none()
        if client is None:
            raise ApiClientNotFound(f"No API client {client_id} in your scope.")
        return client

    async def create(
        self,
        principal: Principal,
        *,
        name: str,
        partner_id: int | None,
        merchant_id: int | None,
        store_id: int | None,
    ) -> IssuedClient:
        """A client scoped to a partner, a merchant or a store (the narrowest id given; the admin's own scope
        when none is); its secret is shown here only."""
        require(principal, Operation.API_CLIENTS_MANAGE)
        if partner_id is None and merchant_id is None and store_id is None:
            partner_id, merchant_id, store_id = (
                principal.client_partner_id,
                principal.merchant_id,
                principal.store_id,
            )
        partner_id, merchant_id, store_id = await self._tenants.resolve_within(
            principal, partner_id=partner_id, merchant_id=merchant_id, store_id=store_id
        )
        if partner_id is None:  # a SYSTEM_OP named no tenant: API clients belong to one
            raise TenantNotInScope("Name the partner, merchant or store the client belongs to.")
        return await self._tenants.issue_client(
            name=name, partner_id=partner_id, merchant_id=merchant_id, store_id=store_id, actor=principal
        )

    async def rotate_secret(self, principal: Principal, client_id: str) -> IssuedClient:
        require(principal, Operation.API_CLIENTS_MANAGE)
        async with self._db.unit_of_work() as session:
            client = await self._locked(session, principal, client_id)
            if client.revoked_at is not None:
                raise ApiClientRevoked(f"API client {client_id} is revoked; create a new one.")
            secret = self._clients.reseal(client)
            self._audit.record(session, principal, AuditAction.API_CLIENT_SECRET_ROTATED, _subject(client))
        self._clients.forget(client_id)  # after the commit, so no request caches the old secret again
        return IssuedClient(client=client, secret=secret)

    async def revoke(self, principal: Principal, client_id: str) -> ApiClient:
        """The client's signatures stop verifying with its next request."""
        require(principal, Operation.API_CLIENTS_MANAGE)
        async with self._db.unit_of_work() as session:
            client = await self._locked(session, principal, client_id)
            if client.revoked_at is None:
                client.revoked_at = self._clock.now()
                self._audit.record(session, principal, AuditAction.API_CLIENT_REVOKED, _subject(client))
        self._clients.forget(client_id)  # after the commit, so no request caches the old row again
        return client

    @staticmethod
    async def _locked(session: AsyncSession, principal: Principal, client_id: str) -> ApiClient:
        client = (
            await session.execute(
                principal.scope(
                    select(ApiClient).where(ApiClient.id == client_id), ApiClient
                ).with_for_update()
            )
        ).scalar_one_or_none()
        if client is None:
            raise ApiClientNotFound(f"No API client {client_id} in your scope.")
        return client
