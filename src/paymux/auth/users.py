"""Portal users: accounts with a role and a tenant scope, login, refresh-token rotation, logout, impersonation.

Passwords are hashed with argon2id. A login that fails for any reason (no such email, a wrong password, a locked or
disabled account) answers the same `invalid_credentials`, and takes as long: an unknown email still verifies a
dummy hash. After `max_failures` wrong passwords in a row an account is locked for `lockout`, and the IP limit of
the edge throttles guessing across accounts.

A login opens a session: an access token (a JWT, 15 minutes) and a refresh token (opaque, kept hashed). Each
refresh spends the refresh token and hands out a new one of the same family; presenting a spent one again means a
copy leaked, so the whole family is revoked and its holder must log in again.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from paymux.audit.service import AuditAction, AuditLog, AuditObject
from paymux.auth.errors import InvalidAccessToken, InvalidCredentials, InvalidRefreshToken
from paymux.auth.keys import SigningKeys
from paymux.auth.models import RefreshToken, User
from paymux.core.clock import Clock
from paymux.core.db import Database
from paymux.core.errors import Conflict, Forbidden, NotFound, Unprocessable
from paymux.core.ids import new_id
from paymux.gateway.permissions import Operation, allows, outranks, require
from paymux.gateway.principal import CallerType, Principal, Role

ISSUER = "svc-portal-users"
REFRESH_PREFIX = "rt_"

log = structlog.get_logger(__name__)


class EmailTaken(Conflict):
    code = "email_taken"
    title = "A user with this email exists"


class InvalidUserScope(Unprocessable):
    code = "invalid_user_scope"
    title = "The role and the tenant scope do not fit"


class UserNotFound(NotFound):
    code = "user_not_found"
    title = "No such user"


class ImpersonationForbidden(Forbidden):
    code = "impersonation_forbidden"
    title = "This user may not act as that one"


@dataclass(frozen=True, slots=True)
class UserScope:
    client_partner_id: int | None = None
    merchant_id: int | None = None
    store_id: int | None = None


@dataclass(frozen=True, slots=True)
class Session:
    access_token: str
    expires_in: int
    refresh_token: str


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _subject(user: User) -> AuditObject:
    return AuditObject("user", user.id, user.client_partner_id, user.merchant_id, user.store_id)


def _as_principal(user: User) -> Principal:
    """A user acting before it holds a token (signing in, starting an impersonation)."""
    return Principal(
        caller_type=CallerType.USER,
        caller_id=user.id,
        client_partner_id=user.client_partner_id,
        merchant_id=user.merchant_id,
        store_id=user.store_id,
        role=Role(user.role),
    )


def required_scope(role: Role) -> str:
    """Which tenant a role is bound to: none, a partner, a merchant or a store."""
    return {
        Role.SYSTEM_OP: "none",
        Role.PSP_ADMIN: "partner",
        Role.MERCHANT_ADMIN: "merchant",
        Role.STORE_MANAGER: "store",
        Role.STAFF: "store",
    }[role]


def check_scope_fits(role: Role, scope: UserScope) -> None:
    """Refuse a scope that is not the one the role is bound to (see `required_scope`), ids already completed."""
    needs = required_scope(role)
    given = (scope.client_partner_id is not None, scope.merchant_id is not None, scope.store_id is not None)
    fits = {
        "none": given == (False, False, False),
        "partner": given == (True, False, False),
        "merchant": given == (True, True, False),
        "store": given == (True, True, True),
    }[needs]
    if not fits:
        raise InvalidUserScope(
            f"A {role} user is bound to {'no tenant' if needs == 'none' else 'a ' + needs}."
        )


class UserService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        keys: SigningKeys,
        audit: AuditLog,
        *,
        audience: str,
        access_ttl: timedelta,
        refresh_ttl: timedelta,
        max_failures: int,
        lockout: timedelta,
        hasher: PasswordHasher | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._keys = keys
        self._audit = audit
        self._audience = audience
        self._access_ttl = access_ttl
        self._refresh_ttl = refresh_ttl
        self._max_failures = max_failures
        self._lockout = lockout
        self._hasher = hasher or PasswordHasher()
        # Made at the first unknown email: an argon2 hash costs 64 MiB and a quarter of a second.
        self._dummy: str | None = None

    @property
    def _dummy_hash(self) -> str:
        if self._dummy is None:
            self._dummy = self._hasher.hash(secrets.token_urlsafe(16))
        return self._dummy

    # ------------------------------------------------------------------ accounts

    async def create(
        self, *, email: str, password: str, role: Role, scope: UserScope, actor: Principal | None = None
    ) -> User:
        """A new user. The scope must fit the role (see `required_scope`), already resolved to full ids."""
        check_scope_fits(role, scope)
        if len(password) < 12:
            raise Unprocessable("A password has at least 12 characters.")
        now = self._clock.now()
        user = User(
            id=new_id("usr"),
            email=email.strip().lower(),
            password_hash=self._hasher.hash(password),
            role=role.value,
            client_partner_id=scope.client_partner_id,
            merchant_id=scope.merchant_id,
            store_id=scope.store_id,
            is_active=True,
            failed_logins=0,
            created_at=now,
            updated_at=now,
        )
        async with self._db.unit_of_work() as session:
            taken = await session.execute(select(User.id).where(User.email == user.email))
            if taken.first() is not None:
                raise EmailTaken(f"{user.email} already has an account.")
            session.add(user)
            self._audit.record(
                session,
                actor,
                AuditAction.USER_CREATED,
                _subject(user),
                details={"email": user.email, "role": role},
            )
        return user

    async def get(self, user_id: str) -> User:
        async with self._db.reading() as session:
            user = await session.get(User, user_id)
        if user is None:
            raise UserNotFound(f"No user {user_id}.")
        return user

    # ------------------------------------------------------------------ sessions

    async def login(self, email: str, password: str, *, ip: str | None = None) -> Session:
        """A session for the right password. Logins and failures of existing accounts are audited; an unknown
        email is only logged, so guessing fills no table with attackers' input."""
        now = self._clock.now()
        async with self._db.unit_of_work() as session:
            user = (
                await session.execute(
                    select(User).where(User.email == email.strip().lower()).with_for_update()
                )
            ).scalar_one_or_none()
            if user is None:
                self._verify(self._dummy_hash, password)  # the same work as for a real account
                log.info("login for an unknown email", ip=ip)
                raise InvalidCredentials()
            locked = user.locked_until is not None and user.locked_until > now
            if not self._verify(user.password_hash, password) or locked or not user.is_active:
                if not locked:
                    user.failed_logins += 1
                    if user.failed_logins >= self._max_failures:
                        user.locked_until = now + self._lockout
                        user.failed_logins = 0
                        self._audit.record(session, None, AuditAction.USER_LOCKED, _subject(user), ip=ip)
                user.updated_at = now
                reason = "locked" if locked else "disabled" if not user.is_active else "wrong_password"
                self._audit.record(
                    session,
                    None,
                    AuditAction.USER_LOGIN_FAILED,
                    _subject(user),
                    details={"reason": reason},
                    ip=ip,
                )
                failed = True
            else:
                user.failed_logins, user.locked_until = 0, None
                if self._hasher.check_needs_rehash(user.password_hash):
                    user.password_hash = self._hasher.hash(password)
                refresh = self._add_refresh(session, user.id, None, new_id("fam"))
                self._audit.record(
                    session, _as_principal(user), AuditAction.USER_LOGIN, _subject(user), ip=ip
                )
                failed = False
        if failed:  # raised after the unit of work, so the failure count is committed
            raise InvalidCredentials()
        return await self._session(user, None, refresh)

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    async def refresh(self, refresh_token: str) -> Session:
        now = self._clock.now()
        async with self._db.unit_of_work() as session:
            record = await session.get(RefreshToken, _hash(refresh_token), with_for_update=True)
            if record is None or record.status == "revoked" or record.expires_at <= now:
                raise InvalidRefreshToken("Log in again.")
            if record.status == "used":
                # A spent token came back: a copy is out there. Nobody keeps this session. (Its successor was
                # added in the same transaction that spent it, so this statement sees and revokes it too.)
                await session.execute(
                    update(RefreshToken)
                    .where(RefreshToken.family_id == record.family_id)
                    .values(status="revoked")
                    .execution_options(synchronize_session=False)
                )
                user, refresh = None, None
            else:
                user = await session.get(User, record.user_id)
                actor = await session.get(User, record.impersonated_by) if record.impersonated_by else user
                if user is None or not user.is_active or actor is None or not actor.is_active:
                    raise InvalidRefreshToken("Log in again.")
                record.status, record.used_at = "used", now
                refresh = self._add_refresh(session, user.id, record.impersonated_by, record.family_id)
        if user is None or refresh is None:
            raise InvalidRefreshToken(
                "This refresh token was already used; the session is closed. Log in again."
            )
        return await self._session(user, record.impersonated_by, refresh)

    async def logout(self, refresh_token: str) -> None:
        """Close the session the refresh token belongs to (its access tokens run out within minutes)."""
        async with self._db.unit_of_work() as session:
            # Locked first: a refresh of this token in flight commits its successor before the revocation runs.
            record = await session.get(RefreshToken, _hash(refresh_token), with_for_update=True)
            if record is None:
                return  # nothing to close; logging out twice is fine
            await session.execute(
                update(RefreshToken)
                .where(RefreshToken.family_id == record.family_id)
                .values(status="revoked")
                .execution_options(synchronize_session=False)
            )

    async def impersonate_as(self, principal: Principal, target_id: str) -> Session:
        """Impersonation by the caller of an access token: an impersonated session acts as its original actor."""
        if principal.impersonated_by is None:
            require(
                principal, Operation.USERS_IMPERSONATE
            )  # an impersonated session's actor is checked below
        actor = await self.get(principal.impersonated_by or principal.caller_id)
        return await self.impersonate(actor, target_id, ip=principal.ip)

    async def impersonate(self, actor: User, target_id: str, *, ip: str | None = None) -> Session:
        """A session as another user, for support: a SYSTEM_OP may act as anyone, a PSP_ADMIN as users of its
        partner below it. The tokens say who acts (`impersonated_by`)."""
        target = await self.get(target_id)
        acting = _as_principal(actor)
        if not acting.sees(
            client_partner_id=target.client_partner_id,
            merchant_id=target.merchant_id,
            store_id=target.store_id,
        ):
            # Outside the actor's scope reads as absent, so impersonation cannot probe for user ids.
            raise UserNotFound(f"No user {target_id}.")
        allowed = allows(acting, Operation.USERS_IMPERSONATE) and outranks(
            Role(actor.role), Role(target.role)
        )
        if not actor.is_active:
            raise InvalidAccessToken("This user is disabled.")
        if not allowed or target.id == actor.id or not target.is_active:
            raise ImpersonationForbidden(f"A {actor.role} may not act as this user.")
        async with self._db.unit_of_work() as session:
            refresh = self._add_refresh(session, target.id, actor.id, new_id("fam"))
            self._audit.record(
                session,
                acting,
                AuditAction.USER_IMPERSONATED,
                _subject(target),
                details={"impersonator": actor.id, "impersonated": target.id},
                ip=ip,
            )
        return await self._session(target, actor.id, refresh)

    def _add_refresh(
        self, session: AsyncSession, user_id: str, impersonated_by: str | None, family_id: str
    ) -> str:
        """A new refresh token of a family, added to the caller's unit of work; returns the token itself."""
        now = self._clock.now()
        refresh = REFRESH_PREFIX + secrets.token_urlsafe(32)
        session.add(
            RefreshToken(
                token_hash=_hash(refresh),
                family_id=family_id,
                user_id=user_id,
                impersonated_by=impersonated_by,
                status="active",
                created_at=now,
                expires_at=now + self._refresh_ttl,
            )
        )
        return refresh

    async def _session(self, user: User, impersonated_by: str | None, refresh: str) -> Session:
        """The access token for a session whose refresh token is committed."""
        now = self._clock.now()
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "sub": user.id,
            "aud": self._audience,
            "role": user.role,
            "psp_id": user.client_partner_id,
            "merchant_id": user.merchant_id,
            "store_id": user.store_id,
            "iat": int(now.timestamp()),
            "exp": int((now + self._access_ttl).timestamp()),
            "jti": new_id("jti"),
        }
        if impersonated_by is not None:
            claims["impersonated_by"] = impersonated_by
        return Session(
            access_token=await self._keys.sign(claims),
            expires_in=int(self._access_ttl.total_seconds()),
            refresh_token=refresh,
        )

    async def verify_access_token(self, token: str) -> dict[str, Any]:
        claims = await self._keys.verify(token, issuer=ISSUER, audience=self._audience, now=self._clock.now())
        role = claims.get("role")
        if not isinstance(role, str) or role not in set(Role):
            raise InvalidAccessToken("The access token names no known role.")
        return claims
