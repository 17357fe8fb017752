"""Portal users (docs/security.md, "Portal users (seed 003)").

Sign-in answers an ES256 access token with exactly seed 003's claims (plus iat, jti, aud) and an opaque refresh
token; every failure (wrong email, wrong password, a locked or a disabled account) is the same
`401 invalid_credentials`; PAYMUX_LOGIN_MAX_FAILURES wrong passwords in a row lock the account for
PAYMUX_LOGIN_LOCKOUT_SECONDS. A refresh spends its token; presenting a spent one revokes the whole family. The
merchants listing follows the user's scope, and impersonation follows the actor's rights.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, text, update

from paymux.app import create_app
from paymux.auth.models import RefreshToken, User
from paymux.auth.users import EmailTaken, InvalidUserScope, UserScope
from paymux.config import Settings
from paymux.container import Container
from paymux.core.clock import FrozenClock
from paymux.core.errors import Unprocessable
from paymux.gateway.principal import Role
from paymux.tenants.errors import MerchantNotFound, StoreNotFound, TenantConflict
from tests.conftest import empty_all_tables
from tests.portal import LOGIN, PASSWORD, claims_of, login, make_user, session_tokens
from tests.support import Tenant, assert_problem, bearer, bootstrap_tenant

REFRESH = "/api/v1/auth/refresh"
LOGOUT = "/api/v1/auth/logout"
IMPERSONATE = "/api/v1/auth/impersonate"
MERCHANTS = "/api/v1/merchants"
SEED_CLAIMS = {"iss", "sub", "role", "merchant_id", "store_id", "psp_id", "exp", "iat", "jti", "aud"}
UNKNOWN_USER = "usr_" + "0" * 26
PEER = ("198.51.100.20", 40000)
OTHER_PEER = ("198.51.100.21", 40001)


# ---------------------------------------------------------------------------------------------- helpers


async def refresh(http: httpx.AsyncClient, refresh_token: str) -> httpx.Response:
    return await http.post(REFRESH, json={"refresh_token": refresh_token})


async def merchant_ids(http: httpx.AsyncClient, access_token: str, **params: int) -> list[int]:
    response = await http.get(MERCHANTS, headers=bearer(access_token), params=params)
    assert response.status_code == 200, response.text
    return [merchant["id"] for merchant in response.json()["data"]]


async def set_active(container: Container, user_id: str, active: bool) -> None:
    async with container.db.unit_of_work() as session:
        await session.execute(update(User).where(User.id == user_id).values(is_active=active))


async def family_statuses(container: Container, family_id: str) -> Counter[str]:
    """How many tokens of a family are active, used, revoked."""
    async with container.db.reading() as session:
        rows = await session.execute(select(RefreshToken.status).where(RefreshToken.family_id == family_id))
        return Counter(status for (status,) in rows)


async def family_of(container: Container, refresh_token: str) -> str:
    digest = hashlib.sha256(refresh_token.encode()).hexdigest()
    async with container.db.reading() as session:
        record = await session.get(RefreshToken, digest)
    assert record is not None
    return record.family_id


def _client(app: FastAPI, peer: tuple[str, int] = PEER) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=peer), base_url="http://paymux.test"
    )


@asynccontextmanager
async def app_with(settings: Settings, clock: FrozenClock, **update_: Any) -> AsyncIterator[FastAPI]:
    """An app of its own settings, torn down like the `app` fixture (tables emptied, Redis flushed, closed)."""
    application = create_app(settings.model_copy(update=update_), clock=clock)
    container: Container = application.state.container
    if container.redis is not None:
        await container.redis.flushdb()
    try:
        yield application
    finally:
        await empty_all_tables(container.db)
        if container.redis is not None:
            await container.redis.flushdb()
        await container.close()


@pytest.fixture
async def user(container: Container, tenant: Tenant) -> User:
    return await make_user(container, "ada@example.com", Role.MERCHANT_ADMIN, merchant=tenant.merchant_id)


# ---------------------------------------------------------------------------------------------- login


async def test_login_answers_an_es256_token_with_exactly_the_seed_claims(
    http: httpx.AsyncClient, container: Container, tenant: Tenant, user: User, clock: FrozenClock
) -> None:
    response = await login(http, "ada@example.com")
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert (body["token_type"], body["expires_in"]) == ("Bearer", 900)
    assert body["refresh_token"].startswith("rt_")

    header = jwt.get_unverified_header(body["access_token"])
    assert header["alg"] == "ES256"
    assert header["kid"].startswith("key_")
    claims = claims_of(body["access_token"])
    assert set(claims) == SEED_CLAIMS  # no impersonated_by outside impersonation
    now = int(clock.now().timestamp())
    assert {key: value for key, value in claims.items() if key != "jti"} == {
        "iss": "svc-portal-users",
        "sub": user.id,
        "aud": "paymux",
        "role": "MERCHANT_ADMIN",
        "psp_id": tenant.client_partner_id,
        "merchant_id": tenant.merchant_id,
        "store_id": None,
        "iat": now,
        "exp": now + 900,
    }
    assert claims["jti"].startswith("jti_")

    # The signature verifies with the published key of that kid.
    jwks = (await http.get("/.well-known/jwks.json")).json()
    (jwk,) = [key for key in jwks["keys"] if key["kid"] == header["kid"]]
    public = jwt.PyJWK(jwk).key
    verified = jwt.decode(body["access_token"], public, algorithms=["ES256"], audience="paymux")
    assert verified == claims

    assert await merchant_ids(http, body["access_token"]) == [tenant.merchant_id]


async def test_each_login_is_a_session_of_its_own(http: httpx.AsyncClient, user: User) -> None:
    first, second = await session_tokens(http, user.email), await session_tokens(http, user.email)
    assert claims_of(first["access_token"])["jti"] != claims_of(second["access_token"])["jti"]
    assert first["refresh_token"] != second["refresh_token"]


async def test_email_is_case_insensitive(
    http: httpx.AsyncClient, container: Container, tenant: Tenant
) -> None:
    created = await make_user(container, "Grace.Hopper@Example.COM", Role.STAFF, store=tenant.store_id)
    assert created.email == "grace.hopper@example.com"
    for spelling in ("grace.hopper@example.com", "GRACE.HOPPER@EXAMPLE.COM", "  Grace.Hopper@example.com "):
        session = await session_tokens(http, spelling)
        assert claims_of(session["access_token"])["sub"] == created.id


async def test_every_failed_login_is_the_same_answer(
    http: httpx.AsyncClient, container: Container, tenant: Tenant
) -> None:
    await make_user(container, "wrong-pw@example.com", Role.MERCHANT_ADMIN, merchant=tenant.merchant_id)
    disabled = await make_user(
        container, "disabled@example.com", Role.MERCHANT_ADMIN, merchant=tenant.merchant_id
    )
    await make_user(container, "locked@example.com", Role.MERCHANT_ADMIN, merchant=tenant.merchant_id)
    await set_active(container, disabled.id, False)
    for _ in range(5):
        assert_problem(
            await login(http, "locked@example.com", "not the password"), 401, "invalid_credentials"
        )

    answers = {
        "wrong password": await login(http, "wrong-pw@example.com", "not the password"),
        "unknown email": await login(http, "nobody@example.com"),
        "disabled, right password": await login(http, "disabled@example.com"),
        "locked, right password": await login(http, "locked@example.com"),
    }
    bodies = {}
    for case, response in answers.items():
        body = assert_problem(response, 401, "invalid_credentials")
        assert body["request_id"] == response.headers["x-request-id"]
        bodies[case] = {key: value for key, value in body.items() if key != "request_id"}
    assert len({repr(sorted(body.items())) for body in bodies.values()}) == 1, bodies
    assert len({response.headers.get("www-authenticate") for response in answers.values()}) == 1


async def test_five_wrong_passwords_lock_the_account_for_the_lockout_period(
    http: httpx.AsyncClient, container: Container, user: User, clock: FrozenClock
) -> None:
    for attempt in range(4):
        assert_problem(await login(http, user.email, f"wrong {attempt}"), 401, "invalid_credentials")
    assert (await container.users.get(user.id)).locked_until is None
    assert_problem(await login(http, user.email, "wrong 5"), 401, "invalid_credentials")
    locked = await container.users.get(user.id)
    assert locked.locked_until == clock.now() + timedelta(seconds=900)

    # Locked: even the right password is refused, and tries while locked do not extend the lock.
    assert_problem(await login(http, user.email), 401, "invalid_credentials")
    clock.advance(899)
    for attempt in range(6):
        assert_problem(await login(http, user.email, f"still wrong {attempt}"), 401, "invalid_credentials")
    assert_problem(await login(http, user.email), 401, "invalid_credentials")
    assert (await container.users.get(user.id)).locked_until == locked.locked_until

    clock.advance(2)
    session = await session_tokens(http, user.email)
    assert claims_of(session["access_token"])["sub"] == user.id
    unlocked = await container.users.get(user.id)
    assert (unlocked.failed_logins, unlocked.locked_until) == (0, None)


async def test_a_successful_login_resets_the_failure_count(
    http: httpx.AsyncClient, container: Container, user: User
) -> None:
    for round_ in range(3):
        for attempt in range(4):
            assert_problem(
                await login(http, user.email, f"wrong {round_}.{attempt}"), 401, "invalid_credentials"
            )
        assert (await container.users.get(user.id)).failed_logins == 4
        await session_tokens(http, user.email)
        assert (await container.users.get(user.id)).failed_logins == 0
    assert (await container.users.get(user.id)).locked_until is None


async def test_lockout_follows_its_settings(settings: Settings, clock: FrozenClock) -> None:
    async with app_with(settings, clock, login_max_failures=2, login_lockout_seconds=60) as application:
        container: Container = application.state.container
        tenant = await bootstrap_tenant(container, partner="acme", merchant="M-1", store="S-1")
        user = await make_user(container, "ada@example.com", Role.MERCHANT_ADMIN, merchant=tenant.merchant_id)
        async with _client(application) as http:
            for _ in range(2):
                assert_problem(await login(http, user.email, "wrong"), 401, "invalid_credentials")
            assert_problem(await login(http, user.email), 401, "invalid_credentials")
            clock.advance(59)
            assert_problem(await login(http, user.email), 401, "invalid_credentials")
            clock.advance(1)
            await session_tokens(http, user.email)


async def test_login_refresh_and_logout_count_against_the_ip_limit(
    settings: Settings, clock: FrozenClock
) -> None:
    async with app_with(settings, clock, ratelimit_ip="4/hour") as application:
        container: Container = application.state.container
        tenant = await bootstrap_tenant(container, partner="acme", merchant="M-1", store="S-1")
        user = await make_user(container, "ada@example.com", Role.MERCHANT_ADMIN, merchant=tenant.merchant_id)
        async with _client(application) as http:
            session = await session_tokens(http, user.email)  # 1
            renewed = await refresh(http, session["refresh_token"])  # 2
            assert renewed.status_code == 200, renewed.text
            logout = await http.post(LOGOUT, json={"refresh_token": renewed.json()["refresh_token"]})  # 3
            assert logout.status_code == 204
            assert_problem(await login(http, user.email, "a guess"), 401, "invalid_credentials")  # 4

            limited = assert_problem(await login(http, user.email), 429, "rate_limited")
            assert limited["status"] == 429
            assert_problem(await refresh(http, "rt_anything"), 429, "rate_limited")
            assert_problem(await http.post(LOGOUT, json={"refresh_token": "rt_x"}), 429, "rate_limited")
            throttled = await login(http, user.email, "another guess")
            assert_problem(throttled, 429, "rate_limited")
            assert "retry-after" in throttled.headers
        # Throttled guesses never reached the password check: one failure counted, not two.
        assert (await container.users.get(user.id)).failed_logins == 1
        async with _client(application, OTHER_PEER) as elsewhere:
            await session_tokens(elsewhere, user.email)


async def test_login_input_is_validated(http: httpx.AsyncClient) -> None:
    assert_problem(
        await http.post(LOGIN, json={"email": "not-an-email", "password": "x"}), 422, "validation_error"
    )
    assert_problem(await http.post(LOGIN, json={"email": "a@example.com"}), 422, "validation_error")


# ---------------------------------------------------------------------------------------------- refresh


async def test_refresh_hands_out_new_tokens_and_spends_the_old_one(
    http: httpx.AsyncClient, container: Container, user: User, clock: FrozenClock
) -> None:
    first = await session_tokens(http, user.email)
    clock.advance(60)
    response = await refresh(http, first["refresh_token"])
    assert response.status_code == 200, response.text
    second = response.json()
    assert set(second) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert second["refresh_token"] != first["refresh_token"]
    old, new = claims_of(first["access_token"]), claims_of(second["access_token"])
    assert set(new) == SEED_CLAIMS
    assert new["jti"] != old["jti"]
    assert new["iat"] == old["iat"] + 60
    assert {key: new[key] for key in ("sub", "role", "psp_id", "merchant_id", "store_id")} == {
        key: old[key] for key in ("sub", "role", "psp_id", "merchant_id", "store_id")
    }
    assert await merchant_ids(http, second["access_token"]) == [user.merchant_id]

    family = await family_of(container, first["refresh_token"])
    assert await family_of(container, second["refresh_token"]) == family
    assert await family_statuses(container, family) == Counter(used=1, active=1)

    third = await refresh(http, second["refresh_token"])
    assert third.status_code == 200, third.text
    assert await family_statuses(container, family) == Counter(used=2, active=1)


async def test_a_spent_refresh_token_revokes_its_whole_family(
    http: httpx.AsyncClient, container: Container, user: User
) -> None:
    other_login = await session_tokens(http, user.email)
    first = await session_tokens(http, user.email)
    second = (await refresh(http, first["refresh_token"])).json()
    newest = (await refresh(http, second["refresh_token"])).json()

    body = assert_problem(await refresh(http, first["refresh_token"]), 401, "invalid_refresh_token")
    assert "already used" in body["detail"]
    family = await family_of(container, first["refresh_token"])
    assert await family_statuses(container, family) == Counter(revoked=3)
    # The newest token of the family (the one the legitimate holder or the thief has now) is dead too.
    assert_problem(await refresh(http, newest["refresh_token"]), 401, "invalid_refresh_token")
    assert_problem(await refresh(http, second["refresh_token"]), 401, "invalid_refresh_token")

    # Another login of the same user is another family: untouched.
    other_family = await family_of(container, other_login["refresh_token"])
    assert await family_statuses(container, other_family) == Counter(active=1)
    untouched = await refresh(http, other_login["refresh_token"])
    assert untouched.status_code == 200, untouched.text


async def test_an_expired_refresh_token_is_refused(
    http: httpx.AsyncClient, container: Container, user: User, clock: FrozenClock
) -> None:
    ttl = container.settings.refresh_token_ttl_seconds
    assert ttl == 30 * 24 * 3600
    early, late = await session_tokens(http, user.email), await session_tokens(http, user.email)
    clock.advance(ttl - 1)
    assert (await refresh(http, early["refresh_token"])).status_code == 200
    clock.advance(1)
    assert_problem(await refresh(http, late["refresh_token"]), 401, "invalid_refresh_token")


async def test_unknown_refresh_tokens_are_refused(http: httpx.AsyncClient, user: User) -> None:
    session = await session_tokens(http, user.email)
    assert_problem(await refresh(http, "rt_" + "x" * 43), 401, "invalid_refresh_token")
    assert_problem(await refresh(http, session["access_token"][:200]), 401, "invalid_refresh_token")
    assert_problem(await http.post(REFRESH, json={}), 422, "validation_error")


async def test_a_disabled_user_cannot_refresh(
    http: httpx.AsyncClient, container: Container, user: User
) -> None:
    session = await session_tokens(http, user.email)
    await set_active(container, user.id, False)
    assert_problem(await refresh(http, session["refresh_token"]), 401, "invalid_refresh_token")


async def test_logout_revokes_the_family_and_may_be_repeated(
    http: httpx.AsyncClient, container: Container, user: User
) -> None:
    kept = await session_tokens(http, user.email)
    first = await session_tokens(http, user.email)
    second = (await refresh(http, first["refresh_token"])).json()

    for _ in range(2):
        response = await http.post(LOGOUT, json={"refresh_token": second["refresh_token"]})
        assert response.status_code == 204
        assert response.content == b""
    family = await family_of(container, first["refresh_token"])
    assert await family_statuses(container, family) == Counter(revoked=2)
    assert_problem(await refresh(http, second["refresh_token"]), 401, "invalid_refresh_token")
    assert_problem(await refresh(http, first["refresh_token"]), 401, "invalid_refresh_token")
    # An unknown token logs out nothing, quietly; the other session lives on.
    assert (await http.post(LOGOUT, json={"refresh_token": "rt_unknown"})).status_code == 204
    assert (await refresh(http, kept["refresh_token"])).status_code == 200


async def _concurrent_refreshes(http: httpx.AsyncClient, user: User) -> list[httpx.Response]:
    session = await session_tokens(http, user.email)
    responses = await asyncio.gather(*(refresh(http, session["refresh_token"]) for _ in range(20)))
    assert Counter(response.status_code for response in responses) == {200: 1, 401: 19}
    for response in responses:
        if response.status_code == 401:
            assert_problem(response, 401, "invalid_refresh_token")
    return responses


@pytest.mark.postgres
async def test_concurrent_refreshes_of_one_token_have_one_winner_on_postgres(
    http: httpx.AsyncClient, container: Container, user: User
) -> None:
    assert not container.db.is_sqlite
    await _concurrent_refreshes(http, user)


async def test_concurrent_refreshes_of_one_token_have_one_winner(http: httpx.AsyncClient, user: User) -> None:
    """The same on whichever backend this pass runs (SQLite serialises its writers)."""
    await _concurrent_refreshes(http, user)


async def _status_of(container: Container, refresh_token: str) -> str | None:
    async with container.db.reading() as session:
        record = await session.get(RefreshToken, hashlib.sha256(refresh_token.encode()).hexdigest())
    return None if record is None else record.status


@pytest.mark.postgres
async def test_a_spent_token_presented_while_its_successor_is_issued_still_revokes_the_successor(
    http: httpx.AsyncClient, container: Container, user: User
) -> None:
    """Two holders of one refresh token (the user and a thief) refresh at the same moment: one of them presents
    a spent token, so the whole family must end, the winner's new token included.

    The interleaving is pinned with a row lock on the user: inserting a refresh token checks its foreign key to
    users (FOR KEY SHARE), which waits while this test holds the user row FOR UPDATE; spending and revoking do not
    touch users. With one transaction for spend-and-issue, the second refresh simply waits for the first and
    then revokes a family that already holds the successor.
    """
    spent = (await session_tokens(http, user.email))["refresh_token"]
    async with container.db.engine.connect() as blocker:
        transaction = await blocker.begin()
        await blocker.execute(text("SELECT id FROM users WHERE id = :id FOR UPDATE"), {"id": user.id})
        first = asyncio.create_task(refresh(http, spent))
        for _ in range(100):  # until the first refresh has spent the token (or 1 s, if spending waits too)
            if await _status_of(container, spent) == "used":
                break
            await asyncio.sleep(0.01)
        second = asyncio.create_task(refresh(http, spent))
        await asyncio.wait({second}, timeout=1)
        await transaction.rollback()
    responses = await asyncio.gather(first, second)
    assert sorted(response.status_code for response in responses) == [200, 401]
    (winner,) = [response for response in responses if response.status_code == 200]
    assert_problem(await refresh(http, winner.json()["refresh_token"]), 401, "invalid_refresh_token")


# ---------------------------------------------------------------------------------------------- accounts


async def test_a_user_is_stored_with_an_argon2id_hash_and_a_lower_cased_email(
    container: Container, tenant: Tenant
) -> None:
    created = await make_user(container, "Ops@Example.com", Role.MERCHANT_ADMIN, merchant=tenant.merchant_id)
    stored = await container.users.get(created.id)
    assert created.id.startswith("usr_")
    assert stored.email == "ops@example.com"
    assert stored.password_hash.startswith("$argon2id$")
    assert PASSWORD not in stored.password_hash
    assert (stored.client_partner_id, stored.merchant_id, stored.store_id) == (
        tenant.client_partner_id,
        tenant.merchant_id,
        None,
    )
    assert (stored.is_active, stored.failed_logins, stored.locked_until) == (True, 0, None)


async def test_passwords_have_at_least_twelve_characters(container: Container, tenant: Tenant) -> None:
    with pytest.raises(Unprocessable, match="12 characters"):
        await make_user(container, "short@example.com", Role.SYSTEM_OP, password="x" * 11)
    await make_user(container, "twelve@example.com", Role.SYSTEM_OP, password="x" * 12)
    async with container.db.reading() as session:
        emails = list((await session.execute(select(User.email).order_by(User.email))).scalars())
    assert emails == ["twelve@example.com"]


async def test_an_email_has_one_account_whatever_its_case(container: Container, tenant: Tenant) -> None:
    await make_user(container, "ada@example.com", Role.MERCHANT_ADMIN, merchant=tenant.merchant_id)
    for spelling in ("ada@example.com", "ADA@Example.com", " Ada@example.com "):
        with pytest.raises(EmailTaken) as raised:
            await make_user(container, spelling, Role.SYSTEM_OP)
        assert raised.value.status == 409
    async with container.db.reading() as session:
        assert (await session.execute(select(func.count()).select_from(User))).scalar_one() == 1


async def test_each_role_gets_the_scope_it_needs(container: Container, tenant: Tenant) -> None:
    made = {
        Role.SYSTEM_OP: await make_user(container, "op@example.com", Role.SYSTEM_OP),
        Role.PSP_ADMIN: await make_user(
            container, "psp@example.com", Role.PSP_ADMIN, partner=tenant.client_partner_id
        ),
        Role.MERCHANT_ADMIN: await make_user(
            container, "ma@example.com", Role.MERCHANT_ADMIN, merchant=tenant.merchant_id
        ),
        Role.STORE_MANAGER: await make_user(
            container, "sm@example.com", Role.STORE_MANAGER, store=tenant.store_id
        ),
        Role.STAFF: await make_user(container, "st@example.com", Role.STAFF, store=tenant.store_id),
    }
    p, m, s = tenant.client_partner_id, tenant.merchant_id, tenant.store_id
    assert {role: (u.client_partner_id, u.merchant_id, u.store_id) for role, u in made.items()} == {
        Role.SYSTEM_OP: (None, None, None),
        Role.PSP_ADMIN: (p, None, None),
        Role.MERCHANT_ADMIN: (p, m, None),
        Role.STORE_MANAGER: (p, m, s),
        Role.STAFF: (p, m, s),
    }


@pytest.mark.parametrize(
    ("role", "scope_of"),
    [
        (Role.SYSTEM_OP, "partner"),
        (Role.SYSTEM_OP, "store"),
        (Role.PSP_ADMIN, "none"),
        (Role.PSP_ADMIN, "merchant"),
        (Role.PSP_ADMIN, "store"),
        (Role.MERCHANT_ADMIN, "none"),
        (Role.MERCHANT_ADMIN, "partner"),
        (Role.MERCHANT_ADMIN, "store"),
        (Role.STORE_MANAGER, "merchant"),
        (Role.STAFF, "none"),
        (Role.STAFF, "partner"),
        (Role.STAFF, "merchant"),
    ],
)
async def test_a_scope_that_does_not_fit_the_role_is_refused(
    container: Container, tenant: Tenant, role: Role, scope_of: str
) -> None:
    p, m, s = tenant.client_partner_id, tenant.merchant_id, tenant.store_id
    scope = {
        "none": UserScope(),
        "partner": UserScope(p),
        "merchant": UserScope(p, m),
        "store": UserScope(p, m, s),
    }[scope_of]
    with pytest.raises(InvalidUserScope) as raised:
        await container.users.create(email="x@example.com", password=PASSWORD, role=role, scope=scope)
    assert raised.value.status == 422
    assert str(role) in str(raised.value)
    async with container.db.reading() as session:
        assert (await session.execute(select(func.count()).select_from(User))).scalar_one() == 0


async def test_scope_resolution_completes_and_checks_the_ids(
    container: Container, tenant: Tenant, other_tenant: Tenant
) -> None:
    resolve = container.tenants.resolve_scope
    full = (tenant.client_partner_id, tenant.merchant_id, tenant.store_id)
    assert await resolve(partner_id=None, merchant_id=None, store_id=tenant.store_id) == full
    assert await resolve(
        partner_id=tenant.client_partner_id, merchant_id=tenant.merchant_id, store_id=None
    ) == (
        *full[:2],
        None,
    )
    assert await resolve(partner_id=None, merchant_id=None, store_id=None) == (None, None, None)
    with pytest.raises(TenantConflict):
        await resolve(partner_id=None, merchant_id=other_tenant.merchant_id, store_id=tenant.store_id)
    with pytest.raises(TenantConflict):
        await resolve(
            partner_id=other_tenant.client_partner_id, merchant_id=tenant.merchant_id, store_id=None
        )
    with pytest.raises(StoreNotFound):
        await resolve(partner_id=None, merchant_id=None, store_id=999_999)
    with pytest.raises(MerchantNotFound):
        await resolve(partner_id=None, merchant_id=999_999, store_id=None)
    with pytest.raises(TenantConflict):
        await resolve(partner_id=999_999, merchant_id=None, store_id=None)


# ---------------------------------------------------------------------------------------------- merchants


@dataclass
class Tree:
    acme: Tenant  # partner acme: merchants M-1 and M-2
    acme_2: Tenant
    globex: Tenant  # partner globex: merchant G-1


@pytest.fixture
async def tree(container: Container, tenant: Tenant, other_tenant: Tenant) -> Tree:
    acme_2 = await bootstrap_tenant(container, partner="acme", merchant="M-2", store="S-2")
    assert acme_2.client_partner_id == tenant.client_partner_id
    return Tree(acme=tenant, acme_2=acme_2, globex=other_tenant)


async def test_merchants_follow_the_users_scope(
    http: httpx.AsyncClient, container: Container, tree: Tree
) -> None:
    acme, acme_2, globex = tree.acme, tree.acme_2, tree.globex
    await make_user(container, "op@example.com", Role.SYSTEM_OP)
    await make_user(container, "psp@acme.example", Role.PSP_ADMIN, partner=acme.client_partner_id)
    await make_user(container, "psp@globex.example", Role.PSP_ADMIN, partner=globex.client_partner_id)
    await make_user(container, "ma@acme.example", Role.MERCHANT_ADMIN, merchant=acme_2.merchant_id)
    await make_user(container, "sm@acme.example", Role.STORE_MANAGER, store=acme.store_id)
    await make_user(container, "staff@acme.example", Role.STAFF, store=acme.store_id)
    await make_user(container, "staff@globex.example", Role.STAFF, store=globex.store_id)

    expected = {
        "op@example.com": sorted([acme.merchant_id, acme_2.merchant_id, globex.merchant_id]),
        "psp@acme.example": sorted([acme.merchant_id, acme_2.merchant_id]),
        "psp@globex.example": [globex.merchant_id],
        "ma@acme.example": [acme_2.merchant_id],
        "sm@acme.example": [acme.merchant_id],
        "staff@acme.example": [acme.merchant_id],
        "staff@globex.example": [globex.merchant_id],
    }
    seen = {}
    for email in expected:
        token = (await session_tokens(http, email))["access_token"]
        seen[email] = await merchant_ids(http, token)
    assert seen == expected

    token = (await session_tokens(http, "ma@acme.example"))["access_token"]
    listed = (await http.get(MERCHANTS, headers=bearer(token))).json()
    assert listed["has_more"] is False
    (merchant,) = listed["data"]
    assert set(merchant) == {
        "object",
        "id",
        "client_partner_id",
        "merchant_code",
        "name",
        "is_active",
        "created_at",
    }
    assert (merchant["object"], merchant["merchant_code"], merchant["client_partner_id"]) == (
        "merchant",
        "M-2",
        acme.client_partner_id,
    )


async def test_merchants_are_paginated_by_id(
    http: httpx.AsyncClient, container: Container, tree: Tree
) -> None:
    for code in ("M-3", "M-4"):
        await bootstrap_tenant(container, partner="acme", merchant=code, store="S-1", test_provider=False)
    await make_user(container, "op@example.com", Role.SYSTEM_OP)
    await make_user(container, "psp@acme.example", Role.PSP_ADMIN, partner=tree.acme.client_partner_id)
    op = (await session_tokens(http, "op@example.com"))["access_token"]
    everything = await merchant_ids(http, op, limit=100)
    assert len(everything) == 5
    assert everything == sorted(everything)

    pages: list[list[int]] = []
    more: list[bool] = []
    params: dict[str, int] = {"limit": 2}
    while True:
        page = (await http.get(MERCHANTS, headers=bearer(op), params=params)).json()
        pages.append([merchant["id"] for merchant in page["data"]])
        more.append(page["has_more"])
        if not page["has_more"]:
            break
        params["starting_after"] = pages[-1][-1]
    assert pages == [everything[0:2], everything[2:4], everything[4:5]]
    assert more == [True, True, False]

    # A page that ends exactly at the last merchant says there is no more.
    exact = (await http.get(MERCHANTS, headers=bearer(op), params={"limit": 5})).json()
    assert (len(exact["data"]), exact["has_more"]) == (5, False)
    # Past the end: nothing.
    assert await merchant_ids(http, op, starting_after=everything[-1]) == []

    # A narrower scope pages over its own merchants only, even from another partner's id.
    psp = (await session_tokens(http, "psp@acme.example"))["access_token"]
    acme_ids = [merchant_id for merchant_id in everything if merchant_id != tree.globex.merchant_id]
    assert await merchant_ids(http, psp, limit=3) == acme_ids[:3]
    assert await merchant_ids(http, psp, starting_after=acme_ids[2]) == acme_ids[3:]

    for bad in ({"limit": 0}, {"limit": 101}, {"starting_after": 0}):
        assert_problem(await http.get(MERCHANTS, headers=bearer(op), params=bad), 422, "validation_error")


# ---------------------------------------------------------------------------------------------- impersonation


@dataclass
class Cast:
    op: User
    acme_psp: User
    acme_psp_2: User
    acme_admin: User
    acme_staff: User
    globex_psp: User
    globex_admin: User


@pytest.fixture
async def cast(container: Container, tenant: Tenant, other_tenant: Tenant) -> Cast:
    return Cast(
        op=await make_user(container, "op@example.com", Role.SYSTEM_OP),
        acme_psp=await make_user(
            container, "psp@acme.example", Role.PSP_ADMIN, partner=tenant.client_partner_id
        ),
        acme_psp_2=await make_user(
            container, "psp2@acme.example", Role.PSP_ADMIN, partner=tenant.client_partner_id
        ),
        acme_admin=await make_user(
            container, "admin@acme.example", Role.MERCHANT_ADMIN, merchant=tenant.merchant_id
        ),
        acme_staff=await make_user(container, "staff@acme.example", Role.STAFF, store=tenant.store_id),
        globex_psp=await make_user(
            container, "psp@globex.example", Role.PSP_ADMIN, partner=other_tenant.client_partner_id
        ),
        globex_admin=await make_user(
            container, "admin@globex.example", Role.MERCHANT_ADMIN, merchant=other_tenant.merchant_id
        ),
    )


async def impersonate(http: httpx.AsyncClient, access_token: str, user_id: str) -> httpx.Response:
    return await http.post(IMPERSONATE, json={"user_id": user_id}, headers=bearer(access_token))


async def access_token(http: httpx.AsyncClient, who: User) -> str:
    token: str = (await session_tokens(http, who.email))["access_token"]
    return token


async def test_a_system_op_may_act_as_any_user(
    http: httpx.AsyncClient, cast: Cast, tenant: Tenant, other_tenant: Tenant
) -> None:
    op = await access_token(http, cast.op)
    for target in (cast.acme_staff, cast.globex_psp, cast.acme_admin):
        response = await impersonate(http, op, target.id)
        assert response.status_code == 200, response.text
        session = response.json()
        assert session["refresh_token"].startswith("rt_")
        claims = claims_of(session["access_token"])
        assert set(claims) == SEED_CLAIMS | {"impersonated_by"}
        assert (claims["sub"], claims["impersonated_by"], claims["role"]) == (
            target.id,
            cast.op.id,
            target.role,
        )
        assert (claims["psp_id"], claims["merchant_id"], claims["store_id"]) == (
            target.client_partner_id,
            target.merchant_id,
            target.store_id,
        )
    # The impersonated session sees what the target sees.
    as_globex = claims_of((await impersonate(http, op, cast.globex_psp.id)).json()["access_token"])
    assert as_globex["psp_id"] == other_tenant.client_partner_id
    session = (await impersonate(http, op, cast.globex_psp.id)).json()
    assert await merchant_ids(http, session["access_token"]) == [other_tenant.merchant_id]


async def test_a_psp_admin_may_act_only_as_merchant_and_store_users_of_its_partner(
    http: httpx.AsyncClient, cast: Cast
) -> None:
    psp = await access_token(http, cast.acme_psp)
    for allowed in (cast.acme_admin, cast.acme_staff):
        response = await impersonate(http, psp, allowed.id)
        assert response.status_code == 200, response.text
        claims = claims_of(response.json()["access_token"])
        assert (claims["sub"], claims["impersonated_by"]) == (allowed.id, cast.acme_psp.id)
    for forbidden in (cast.acme_psp_2, cast.acme_psp):
        assert_problem(await impersonate(http, psp, forbidden.id), 403, "impersonation_forbidden")
    # Users outside the partner read as unknown ones, so impersonation cannot probe for user ids.
    for outside in (cast.globex_admin, cast.globex_psp, cast.op):
        assert_problem(await impersonate(http, psp, outside.id), 404, "user_not_found")


@pytest.mark.parametrize("actor", ["acme_admin", "acme_staff"])
async def test_merchant_and_store_users_may_not_impersonate(
    http: httpx.AsyncClient, cast: Cast, actor: str
) -> None:
    token = await access_token(http, getattr(cast, actor))
    # The permission matrix refuses the operation before any user is looked at.
    assert_problem(await impersonate(http, token, cast.acme_staff.id), 403, "operation_forbidden")
    assert_problem(await impersonate(http, token, cast.acme_admin.id), 403, "operation_forbidden")


async def test_impersonating_an_unknown_or_disabled_user(
    http: httpx.AsyncClient, container: Container, cast: Cast
) -> None:
    op = await access_token(http, cast.op)
    assert_problem(await impersonate(http, op, UNKNOWN_USER), 404, "user_not_found")
    assert_problem(await impersonate(http, op, "not-a-user-id"), 422, "validation_error")
    await set_active(container, cast.acme_admin.id, False)
    assert_problem(await impersonate(http, op, cast.acme_admin.id), 403, "impersonation_forbidden")


async def test_impersonation_needs_a_user_token(http: httpx.AsyncClient, cast: Cast) -> None:
    response = await http.post(IMPERSONATE, json={"user_id": cast.acme_staff.id})
    assert_problem(response, 401, "missing_credentials")
    forged = await http.post(IMPERSONATE, json={"user_id": cast.acme_staff.id}, headers=bearer("x.y.z"))
    assert_problem(forged, 401, "invalid_access_token")


async def test_refreshing_an_impersonated_session_keeps_impersonated_by(
    http: httpx.AsyncClient, cast: Cast
) -> None:
    op = await access_token(http, cast.op)
    session = (await impersonate(http, op, cast.acme_staff.id)).json()
    for _ in range(2):
        response = await refresh(http, session["refresh_token"])
        assert response.status_code == 200, response.text
        session = response.json()
        claims = claims_of(session["access_token"])
        assert set(claims) == SEED_CLAIMS | {"impersonated_by"}
        assert (claims["sub"], claims["impersonated_by"]) == (cast.acme_staff.id, cast.op.id)
    # A plain login of that user is not an impersonation, and its refresh says so too.
    plain = await session_tokens(http, cast.acme_staff.email)
    renewed = (await refresh(http, plain["refresh_token"])).json()
    assert "impersonated_by" not in claims_of(renewed["access_token"])


async def test_impersonating_from_an_impersonated_session_acts_as_the_original_actor(
    http: httpx.AsyncClient, cast: Cast
) -> None:
    psp = await access_token(http, cast.acme_psp)
    as_admin = (await impersonate(http, psp, cast.acme_admin.id)).json()["access_token"]
    # The merchant admin's own rights would not allow this; the PSP admin's do.
    response = await impersonate(http, as_admin, cast.acme_staff.id)
    assert response.status_code == 200, response.text
    claims = claims_of(response.json()["access_token"])
    assert (claims["sub"], claims["impersonated_by"]) == (cast.acme_staff.id, cast.acme_psp.id)
    # ... and the PSP admin's limits still hold.
    assert_problem(await impersonate(http, as_admin, cast.globex_admin.id), 404, "user_not_found")

    op = await access_token(http, cast.op)
    as_staff = (await impersonate(http, op, cast.acme_staff.id)).json()["access_token"]
    onward = await impersonate(http, as_staff, cast.globex_psp.id)
    assert onward.status_code == 200, onward.text
    assert claims_of(onward.json()["access_token"])["impersonated_by"] == cast.op.id


async def test_a_disabled_impersonator_cannot_start_an_impersonation(
    http: httpx.AsyncClient, container: Container, cast: Cast
) -> None:
    op = await access_token(http, cast.op)
    assert (await impersonate(http, op, cast.acme_admin.id)).status_code == 200
    await set_active(container, cast.op.id, False)
    assert_problem(await login(http, cast.op.email), 401, "invalid_credentials")
    # Its access token still lists merchants for its last minutes ("run out within 15 minutes"), but it
    # must not mint new 30-day sessions.
    response = await impersonate(http, op, cast.acme_staff.id)
    assert response.status_code in {401, 403}, response.text


async def test_disabling_the_impersonator_ends_its_impersonated_sessions(
    http: httpx.AsyncClient, container: Container, cast: Cast
) -> None:
    op = await access_token(http, cast.op)
    renewed = await refresh(http, (await impersonate(http, op, cast.acme_staff.id)).json()["refresh_token"])
    assert renewed.status_code == 200, renewed.text
    await set_active(container, cast.op.id, False)
    # The one acting is the operator: like a disabled user's own session, its impersonation must not refresh.
    assert_problem(await refresh(http, renewed.json()["refresh_token"]), 401, "invalid_refresh_token")
