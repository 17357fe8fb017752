"""Portal users through the admin API: an admin lists, creates and changes the users below it.

Besides the permission matrix, two rules bound what an admin may do to a user: the user's role must be narrower
than the admin's own (a SYSTEM_OP may manage anyone), and the user's tenant scope must lie within the admin's.
Disabling a user closes its sessions.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update

from paymux.audit.service import AuditAction, AuditLog, AuditObject
from paymux.auth.models import RefreshToken, User
from paymux.auth.users import UserNotFound, UserScope, UserService, check_scope_fits
from paymux.core.clock import Clock
from paymux.core.db import Database
from paymux.core.pagination import fetch_page
from paymux.gateway.permissions import Operation, OperationForbidden, outranks, require
from paymux.gateway.principal import CallerType, Principal, Role
from paymux.tenants.service import TenantService


@dataclass(frozen=True, slots=True)
class UserChange:
    role: Role | None = None
    client_partner_id: int | None = None
    merchant_id: int | None = None
    store_id: int | None = None
    is_active: bool | None = None


class UserAdmin:
    def __init__(
        self, db: Database, clock: Clock, users: UserService, tenants: TenantService, audit: AuditLog
    ) -> None:
        self._db = db
        self._clock = clock
        self._users = users
        self._tenants = tenants
        self._audit = audit

    async def list_users(
        self, principal: Principal, *, role: Role | None, limit: int, starting_after: str | None
    ) -> tuple[list[User], bool]:
        require(principal, Operation.USERS_READ)
        statement = principal.scope(select(User), User)
        if role is not None:
            statement = statement.where(User.role == role.value)
        async with self._db.reading() as session:
            return await fetch_page(session, statement, User.id, limit=limit, starting_after=starting_after)

    async def get(self, principal: Principal, user_id: str) -> User:
        require(principal, Operation.USERS_READ)
        async with self._db.reading() as session:
            user = (
                await session.execute(principal.scope(select(User).where(User.id == user_id), User))
            ).scalar_one_or_none()
        if user is None:
            raise UserNotFound(f"No user {user_id} in your scope.")
        return user

    async def create(
        self,
        principal: Principal,
        *,
        email: str,
        password: str,
        role: Role,
        partner_id: int | None,
        merchant_id: int | None,
        store_id: int | None,
    ) -> User:
        require(principal, Operation.USERS_MANAGE)
        self._check_rank(principal, role)
        scope = await self._scope(principal, role, partner_id, merchant_id, store_id)
        return await self._users.create(
            email=email, password=password, role=role, scope=scope, actor=principal
        )

    async def update(self, principal: Principal, user_id: str, change: UserChange) -> User:
        """Change a user's role and scope together, or enable or disable it."""
        require(principal, Operation.USERS_MANAGE)
        current = await self.get(principal, user_id)
        self._check_rank(principal, Role(current.role))
        role = change.role or Role(current.role)
        self._check_rank(principal, role)
        moved = change.role is not None or any(
            value is not None for value in (change.client_partner_id, change.merchant_id, change.store_id)
        )
        scope = (
            await self._scope(principal, role, change.client_partner_id, change.merchant_id, change.store_id)
            if moved
            else None
        )
        async with self._db.unit_of_work() as session:
            user = await session.get(User, user_id, with_for_update=True)
            if user is None:
                raise UserNotFound(f"No user {user_id} in your scope.")
            details: dict[str, object] = {}
            if scope is not None:
                before = {"role": user.role, **_scope_of(user)}
                user.role = role.value
                user.client_partner_id, user.merchant_id, user.store_id = (
                    scope.client_partner_id,
                    scope.merchant_id,
                    scope.store_id,
                )
                after = {"role": user.role, **_scope_of(user)}
                details.update(
                    {key: [before[key], after[key]] for key in before if before[key] != after[key]}
                )
            if change.is_active is not None and change.is_active != user.is_active:
                user.is_active = change.is_active
                details["is_active"] = [not change.is_active, change.is_active]
            if details:
                user.updated_at = self._clock.now()
                # New role, new scope or disabled: the old sessions carried the old claims.
                await session.execute(
                    update(RefreshToken)
                    .where(RefreshToken.user_id == user.id, RefreshToken.status == "active")
                    .values(status="revoked")
                    .execution_options(synchronize_session=False)
                )
                self._audit.record(
                    session,
                    principal,
                    AuditAction.USER_UPDATED,
                    AuditObject("user", user.id, user.client_partner_id, user.merchant_id, user.store_id),
                    details=details,
                )
            return user

    @staticmethod
    def _check_rank(principal: Principal, role: Role) -> None:
        if principal.caller_type is CallerType.OPERATOR:
            return
        if principal.role is None or not outranks(principal.role, role):
            raise OperationForbidden(f"A {principal.role} may not manage {role} users.")

    async def _scope(
        self,
        principal: Principal,
        role: Role,
        partner_id: int | None,
        merchant_id: int | None,
        store_id: int | None,
    ) -> UserScope:
        """The new user's scope, completed from its narrowest id and defaulted to the admin's own."""
        if partner_id is None and merchant_id is None and store_id is None and role is not Role.SYSTEM_OP:
            partner_id, merchant_id, store_id = (
                principal.client_partner_id,
                principal.merchant_id,
                principal.store_id,
            )
        partner_id, merchant_id, store_id = await self._tenants.resolve_within(
            principal, partner_id=partner_id, merchant_id=merchant_id, store_id=store_id
        )
        scope = UserScope(client_partner_id=partner_id, merchant_id=merchant_id, store_id=store_id)
        check_scope_fits(role, scope)
        return scope


def _scope_of(user: User) -> dict[str, object]:
    return {
        "client_partner_id": user.client_partner_id,
        "merchant_id": user.merchant_id,
        "store_id": user.store_id,
    }
