"""Tenant isolation (design invariant 6, OWASP API1 broken object level authorization).

A caller sees only its own partner / merchant / store scope, and another tenant's id is a 404 that looks just
like an id that does not exist. Merchant A is the `tenant` fixture (partner acme, merchant M-1, store S-1);
merchant B is `other_tenant` (partner globex). Every route that takes an id is tried by every kind of
intruder, and the victim's data must be byte-for-byte the same afterwards.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import httpx
import pytest
from sqlalchemy import select

from paymux.container import Container
from paymux.core.clock import FrozenClock
from paymux.models import Base
from tests.support import ServerClient, Tenant, bearer, encode, intent_body

NO_SUCH_INTENT = "pi_00000000000000000000000000"
NO_SUCH_TRANSACTION = "txn_00000000000000000000000000"
NO_SUCH_STORE = 987654


class Caller(Protocol):
    async def request(self, method: str, path: str, body: Any = None) -> httpx.Response: ...


class TokenClient:
    """The SDK / WebView: `Authorization: Bearer <payment_token>` of one payment intent."""

    def __init__(self, http: httpx.AsyncClient, token: str) -> None:
        self.http = http
        self.token = token

    async def request(self, method: str, path: str, body: Any = None) -> httpx.Response:
        content = encode(body)
        headers = bearer(self.token)
        if content:
            headers["Content-Type"] = "application/json"
        return await self.http.request(method, path, content=content, headers=headers)


@dataclass(frozen=True)
class Route:
    name: str
    method: str
    template: str  # {intent}, {transaction} or {store}
    body: dict[str, Any] | None
    needs: Literal["open", "external", "paid"]  # the state in which the victim's object accepts the call
    not_found: str
    ok: int
    token: bool  # the SDK's payment token may call it

    def path(self, intent_id: str, transaction_id: str, store_id: int) -> str:
        return self.template.format(intent=intent_id, transaction=transaction_id, store=store_id)

    def ids(self, intent_id: str, transaction_id: str, store_id: int) -> tuple[str, str]:
        """The id this route looks up, and a made-up one of the same kind."""
        if "{transaction}" in self.template:
            return transaction_id, NO_SUCH_TRANSACTION
        if "{store}" in self.template:
            return str(store_id), str(NO_SUCH_STORE)
        return intent_id, NO_SUCH_INTENT


ROUTES = [
    Route(
        "retrieve", "GET", "/v1/payment_intents/{intent}", None, "open", "payment_intent_not_found", 200, True
    ),
    Route(
        "confirm",
        "POST",
        "/v1/payment_intents/{intent}/confirm",
        {},
        "open",
        "payment_intent_not_found",
        200,
        True,
    ),
    Route(
        "cancel",
        "POST",
        "/v1/payment_intents/{intent}/cancel",
        {"cancellation_reason": "isolation probe"},
        "open",
        "payment_intent_not_found",
        200,
        True,
    ),
    Route(
        "capture",
        "POST",
        "/v1/payment_intents/{intent}/capture",
        {"status": "success", "approval_code": "APP-1", "card_last_4": "4242"},
        "external",
        "payment_intent_not_found",
        200,
        False,
    ),
    Route(
        "refund",
        "POST",
        "/v1/payment_intents/{intent}/refund",
        {"amount": 100, "reason": "isolation probe"},
        "paid",
        "payment_intent_not_found",
        201,
        False,
    ),
    Route(
        "transactions",
        "GET",
        "/v1/payment_intents/{intent}/transactions",
        None,
        "paid",
        "payment_intent_not_found",
        200,
        True,
    ),
    Route(
        "transaction",
        "GET",
        "/v1/transactions/{transaction}",
        None,
        "paid",
        "transaction_not_found",
        200,
        False,
    ),
    Route(
        "provider_configs",
        "GET",
        "/v1/stores/{store}/provider_configs",
        None,
        "open",
        "store_not_found",
        200,
        False,
    ),
]
TOKEN_ROUTES = [route for route in ROUTES if route.token]
SERVER_ROUTES = [route for route in ROUTES if not route.token]

IntruderKind = Literal["other-merchant", "other-partner", "other-token", "sibling-merchant", "sibling-store"]
INTRUDERS: tuple[IntruderKind, ...] = (
    "other-merchant",  # merchant G-1 of partner globex, with its merchant-scoped client
    "other-partner",  # globex's partner-scoped client
    "other-token",  # the payment token of one of G-1's intents
    "sibling-merchant",  # merchant M-2 of the same partner acme, with its merchant-scoped client
    "sibling-store",  # a store-scoped client of store S-2 of the same merchant M-1
)


# ---------------------------------------------------------------------------------------------- helpers


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status
    assert problem["code"] == code, problem
    return problem


async def footprint(container: Container, merchant_id: int) -> dict[str, list[tuple[Any, ...]]]:
    """Every stored row that belongs to a merchant: intents, history, transactions, events, tokens, configs."""
    snapshot: dict[str, list[tuple[Any, ...]]] = {}
    async with container.db.reading() as session:
        for table in Base.metadata.sorted_tables:
            if "merchant_id" not in table.c:
                continue
            rows = (await session.execute(select(table).where(table.c.merchant_id == merchant_id))).all()
            snapshot[table.name] = sorted((tuple(row) for row in rows), key=repr)
    return snapshot


@dataclass(frozen=True)
class Victim:
    intent: dict[str, Any]  # as created, with its payment_token
    transaction_id: str  # its payment transaction, when paid


async def make_victim(server: ServerClient, tenant: Tenant, needs: str, **overrides: Any) -> Victim:
    """A payment intent of `tenant` in the state where `needs` says the route would act on it."""
    if needs == "external":
        overrides.setdefault("processing_mode", "external")
    intent = await server.create_intent(tenant, **overrides)
    transaction_id = NO_SUCH_TRANSACTION
    if needs == "paid":
        confirmed = await server.http.post(
            f"/v1/payment_intents/{intent['id']}/confirm", headers=bearer(intent["payment_token"])
        )
        assert confirmed.status_code == 200, confirmed.text
        assert confirmed.json()["status"] == "succeeded"
        listed = await server.get(f"/v1/payment_intents/{intent['id']}/transactions")
        assert listed.status_code == 200, listed.text
        [payment] = listed.json()["data"]
        transaction_id = payment["id"]
    return Victim(intent=intent, transaction_id=transaction_id)


async def second_store(container: Container, tenant: Tenant) -> int:
    """Store S-2 of the tenant's merchant M-1, with the test provider."""
    result = await container.tenants.bootstrap(
        partner_name="acme", merchant_code="M-1", store_code="S-2", test_provider=True
    )
    assert (result.client_partner_id, result.merchant_id) == (tenant.client_partner_id, tenant.merchant_id)
    assert result.store_id != tenant.store_id
    return result.store_id


async def store_client(
    container: Container,
    http: httpx.AsyncClient,
    clock: FrozenClock,
    tenant: Tenant,
    store_id: int,
    name: str,
) -> ServerClient:
    client_id, secret = await container.tenants.create_client(
        name=name, partner_id=tenant.client_partner_id, merchant_id=tenant.merchant_id, store_id=store_id
    )
    return ServerClient(http, client_id, secret, clock)


@dataclass(frozen=True)
class Intruder:
    caller: Caller
    home: Tenant  # the tenant tree the intruder belongs to; `home.store_id` is a store it may use
    creator: ServerClient  # a server that creates intents in `home`


async def make_intruder(
    kind: IntruderKind,
    *,
    container: Container,
    http: httpx.AsyncClient,
    clock: FrozenClock,
    tenant: Tenant,
    other_tenant: Tenant,
) -> Intruder:
    other_server = ServerClient(http, other_tenant.client_id, other_tenant.client_secret, clock)
    if kind == "other-merchant":
        return Intruder(other_server, other_tenant, other_server)
    if kind == "other-partner":
        client_id, secret = await container.tenants.create_client(
            name="globex-portal", partner_id=other_tenant.client_partner_id
        )
        partner_client = ServerClient(http, client_id, secret, clock)
        return Intruder(partner_client, other_tenant, partner_client)
    if kind == "other-token":
        own = await other_server.create_intent(other_tenant)
        return Intruder(TokenClient(http, own["payment_token"]), other_tenant, other_server)
    if kind == "sibling-merchant":
        sibling = await container.tenants.bootstrap(
            partner_name="acme", merchant_code="M-2", store_code="MS-1", test_provider=True
        )
        assert sibling.client_partner_id == tenant.client_partner_id
        assert sibling.merchant_id != tenant.merchant_id
        home = Tenant(
            client_partner_id=sibling.client_partner_id,
            merchant_id=sibling.merchant_id,
            store_id=sibling.store_id,
            client_id=sibling.client_id,
            client_secret=sibling.client_secret,
        )
        sibling_server = ServerClient(http, sibling.client_id, sibling.client_secret, clock)
        return Intruder(sibling_server, home, sibling_server)
    s2 = await second_store(container, tenant)
    pos = await store_client(container, http, clock, tenant, s2, "pos-s2")
    home = Tenant(tenant.client_partner_id, tenant.merchant_id, s2, pos.client_id, pos.secret)
    return Intruder(pos, home, pos)


def without_request_id(problem: dict[str, Any], object_id: str) -> dict[str, Any]:
    """A problem without its request id, and with the id it names replaced by a placeholder."""
    shown = {key: value for key, value in problem.items() if key != "request_id"}
    if isinstance(shown.get("detail"), str):
        shown["detail"] = re.sub(rf"\b{re.escape(object_id)}\b", "<id>", shown["detail"])
    return shown


# ---------------------------------------------------------------------------------------------- every route with an id


@pytest.mark.parametrize(
    ("route", "intruder"),
    [
        pytest.param(route, intruder, id=f"{route.name}-by-{intruder}")
        for route in ROUTES
        for intruder in INTRUDERS
        if route.token or intruder != "other-token"
    ],
)
async def test_another_tenants_ids_are_not_found(
    route: Route,
    intruder: IntruderKind,
    container: Container,
    http: httpx.AsyncClient,
    clock: FrozenClock,
    server: ServerClient,
    tenant: Tenant,
    other_tenant: Tenant,
) -> None:
    victim = await make_victim(server, tenant, route.needs)
    caller = (
        await make_intruder(
            intruder, container=container, http=http, clock=clock, tenant=tenant, other_tenant=other_tenant
        )
    ).caller
    path = route.path(victim.intent["id"], victim.transaction_id, tenant.store_id)
    before = await footprint(container, tenant.merchant_id)

    response = await caller.request(route.method, path, route.body)

    problem = assert_problem(response, 404, route.not_found)
    assert victim.intent["merchant_ref_id"] not in response.text
    assert await footprint(container, tenant.merchant_id) == before
    # Indistinguishable from an id that does not exist at all.
    missing = await caller.request(
        route.method, route.path(NO_SUCH_INTENT, NO_SUCH_TRANSACTION, NO_SUCH_STORE), route.body
    )
    missing_problem = assert_problem(missing, 404, route.not_found)
    real_id, fake_id = route.ids(victim.intent["id"], victim.transaction_id, tenant.store_id)
    assert without_request_id(problem, real_id) == without_request_id(missing_problem, fake_id)
    # The victim's own server can make the very same call: the object was there to be acted on.
    own = await server.request(route.method, path, route.body)
    assert own.status_code == route.ok, own.text


@pytest.mark.parametrize("route", [pytest.param(route, id=route.name) for route in TOKEN_ROUTES])
async def test_payment_token_of_one_intent_does_not_reach_another_of_the_same_merchant(
    route: Route, container: Container, http: httpx.AsyncClient, server: ServerClient, tenant: Tenant
) -> None:
    holder = await make_victim(server, tenant, "open")
    victim = await make_victim(server, tenant, route.needs)
    token = TokenClient(http, holder.intent["payment_token"])
    before = await footprint(container, tenant.merchant_id)

    response = await token.request(
        route.method, route.path(victim.intent["id"], "", tenant.store_id), route.body
    )

    assert_problem(response, 404, "payment_intent_not_found")
    assert await footprint(container, tenant.merchant_id) == before  # nor was the token spent
    own = await token.request(route.method, route.path(holder.intent["id"], "", tenant.store_id), route.body)
    assert own.status_code == route.ok, own.text


@pytest.mark.parametrize(
    "route", [pytest.param(route, id=route.name) for route in SERVER_ROUTES if route.name != "transaction"]
)
async def test_payment_token_is_no_server_credential(
    route: Route, container: Container, http: httpx.AsyncClient, server: ServerClient, tenant: Tenant
) -> None:
    victim = await make_victim(server, tenant, route.needs)
    before = await footprint(container, tenant.merchant_id)

    response = await TokenClient(http, victim.intent["payment_token"]).request(
        route.method, route.path(victim.intent["id"], victim.transaction_id, tenant.store_id), route.body
    )

    # The token is a known caller: the permission matrix refuses it everything but its own intent's routes.
    assert_problem(response, 403, "operation_forbidden")
    assert await footprint(container, tenant.merchant_id) == before


async def test_payment_token_reads_only_its_own_intents_transactions(
    container: Container, http: httpx.AsyncClient, server: ServerClient, tenant: Tenant
) -> None:
    holder = await make_victim(server, tenant, "paid")
    victim = await make_victim(server, tenant, "paid")
    token = TokenClient(http, holder.intent["payment_token"])

    own = await token.request("GET", f"/v1/transactions/{holder.transaction_id}")
    assert own.status_code == 200, own.text
    assert_problem(
        await token.request("GET", f"/v1/transactions/{victim.transaction_id}"), 404, "transaction_not_found"
    )
    listed = await token.request("GET", "/v1/payment_intents")
    assert [intent["id"] for intent in listed.json()["data"]] == [holder.intent["id"]]


async def test_idempotency_keys_do_not_cross_tenants(
    container: Container,
    server: ServerClient,
    other_server: ServerClient,
    tenant: Tenant,
    other_tenant: Tenant,
) -> None:
    body = intent_body(tenant, merchant_ref_id="ORDER-42")
    mine = await server.post("/v1/payment_intents", body, idempotency_key="order-42")
    assert mine.status_code == 201, mine.text
    confirm = f"/v1/payment_intents/{mine.json()['id']}/confirm"
    confirmed = await server.post(confirm, {}, idempotency_key="confirm-42")
    assert confirmed.status_code == 200, confirmed.text
    before = await footprint(container, tenant.merchant_id)

    # B's same keys are B's own: no replay of A's responses, not even for A's own path and body.
    theirs = await other_server.post(
        "/v1/payment_intents",
        intent_body(other_tenant, merchant_ref_id="ORDER-42"),
        idempotency_key="order-42",
    )
    assert theirs.status_code == 201, theirs.text
    assert "idempotent-replayed" not in theirs.headers
    assert theirs.json()["id"] != mine.json()["id"]
    assert theirs.json()["merchant_id"] == other_tenant.merchant_id
    probe = await other_server.post(confirm, {}, idempotency_key="confirm-42")
    assert_problem(probe, 404, "payment_intent_not_found")
    assert "idempotent-replayed" not in probe.headers
    assert await footprint(container, tenant.merchant_id) == before


# ---------------------------------------------------------------------------------------------- lists


@pytest.mark.parametrize(
    "query",
    [
        "",
        "?merchant_ref_id={ref}",
        "?merchant_id={merchant_id}",
        "?store_id={store_id}",
        "?status=requires_payment_method&limit=100",
        "?starting_after=pi_ZZZZZZZZZZZZZZZZZZZZZZZZZZ",
    ],
)
@pytest.mark.parametrize("intruder", ["other-merchant", "other-partner", "sibling-merchant"])
async def test_another_tenants_list_never_shows_my_intents(
    query: str,
    intruder: IntruderKind,
    container: Container,
    http: httpx.AsyncClient,
    clock: FrozenClock,
    server: ServerClient,
    tenant: Tenant,
    other_tenant: Tenant,
) -> None:
    mine = await server.create_intent(tenant, merchant_ref_id="SHARED-REF")
    other = await make_intruder(
        intruder, container=container, http=http, clock=clock, tenant=tenant, other_tenant=other_tenant
    )
    # The intruder uses the very same merchant_ref_id: it is unique per merchant, not across merchants.
    theirs = await other.creator.create_intent(other.home, merchant_ref_id="SHARED-REF")
    path = "/v1/payment_intents" + query.format(
        ref="SHARED-REF", merchant_id=tenant.merchant_id, store_id=tenant.store_id
    )

    seen = await other.caller.request("GET", path)

    assert seen.status_code == 200, seen.text
    rows = seen.json()["data"]
    assert mine["id"] not in seen.text
    assert all(
        (row["client_partner_id"], row["merchant_id"])
        == (other.home.client_partner_id, other.home.merchant_id)
        for row in rows
    ), rows
    if "merchant_id" not in query and "store_id" not in query:
        assert [row["id"] for row in rows] == [theirs["id"]]  # the intruder's own list works
    # The same query from A finds A's intent, and only A's.
    own = await server.get(path)
    assert own.status_code == 200, own.text
    assert [row["id"] for row in own.json()["data"]] == [mine["id"]]


@pytest.mark.parametrize("intruder", ["other-merchant", "other-partner", "sibling-merchant", "sibling-store"])
async def test_creating_an_intent_for_another_tenants_store_is_not_found(
    intruder: IntruderKind,
    container: Container,
    http: httpx.AsyncClient,
    clock: FrozenClock,
    server: ServerClient,
    tenant: Tenant,
    other_tenant: Tenant,
) -> None:
    other = await make_intruder(
        intruder, container=container, http=http, clock=clock, tenant=tenant, other_tenant=other_tenant
    )
    before = await footprint(container, tenant.merchant_id)
    theirs_before = await footprint(container, other.home.merchant_id)

    response = await other.caller.request("POST", "/v1/payment_intents", intent_body(tenant))

    assert_problem(response, 404, "store_not_found")
    assert await footprint(container, tenant.merchant_id) == before
    assert await footprint(container, other.home.merchant_id) == theirs_before
    await server.create_intent(tenant)  # the store takes payments from its own merchant
    await other.creator.create_intent(other.home)  # and the intruder from its own store


# ---------------------------------------------------------------------------------------------- store scope


async def test_store_scoped_client_sees_only_its_store(
    container: Container, http: httpx.AsyncClient, clock: FrozenClock, server: ServerClient, tenant: Tenant
) -> None:
    s2 = await second_store(container, tenant)
    in_s1 = await server.create_intent(tenant)
    in_s2 = await server.create_intent(tenant, store_id=s2)
    pos = await store_client(container, http, clock, tenant, tenant.store_id, "pos-s1")

    listed = await pos.get("/v1/payment_intents?limit=100")
    assert listed.status_code == 200, listed.text
    assert [row["id"] for row in listed.json()["data"]] == [in_s1["id"]]
    filtered = await pos.get(f"/v1/payment_intents?store_id={s2}")
    assert filtered.status_code == 200, filtered.text
    assert filtered.json()["data"] == []
    by_ref = await pos.get(f"/v1/payment_intents?merchant_ref_id={in_s2['merchant_ref_id']}")
    assert by_ref.status_code == 200, by_ref.text
    assert by_ref.json()["data"] == []

    assert (await pos.get(f"/v1/payment_intents/{in_s1['id']}")).status_code == 200
    assert_problem(await pos.get(f"/v1/payment_intents/{in_s2['id']}"), 404, "payment_intent_not_found")
    assert (await pos.get(f"/v1/stores/{tenant.store_id}/provider_configs")).status_code == 200
    assert_problem(await pos.get(f"/v1/stores/{s2}/provider_configs"), 404, "store_not_found")

    # The merchant's client sees both stores.
    everything = await server.get("/v1/payment_intents?limit=100")
    assert everything.status_code == 200, everything.text
    assert {row["id"] for row in everything.json()["data"]} == {in_s1["id"], in_s2["id"]}


async def test_store_scoped_client_creates_only_for_its_store(
    container: Container, http: httpx.AsyncClient, clock: FrozenClock, server: ServerClient, tenant: Tenant
) -> None:
    s2 = await second_store(container, tenant)
    pos = await store_client(container, http, clock, tenant, tenant.store_id, "pos-s1")
    before = await footprint(container, tenant.merchant_id)

    refused = await pos.post("/v1/payment_intents", intent_body(tenant, store_id=s2))

    assert_problem(refused, 404, "store_not_found")
    assert await footprint(container, tenant.merchant_id) == before
    implied = await pos.post("/v1/payment_intents", intent_body(tenant, store_id=None))
    assert implied.status_code == 201, implied.text
    assert implied.json()["store_id"] == tenant.store_id
    named = await pos.create_intent(tenant)
    assert named["store_id"] == tenant.store_id
    # S-2 itself takes payments, from a client whose scope covers it.
    assert (await server.create_intent(tenant, store_id=s2))["store_id"] == s2


async def test_merchant_ref_conflict_does_not_disclose_another_stores_intent(
    container: Container, http: httpx.AsyncClient, clock: FrozenClock, server: ServerClient, tenant: Tenant
) -> None:
    s2 = await second_store(container, tenant)
    in_s2 = await server.create_intent(tenant, store_id=s2, merchant_ref_id="POS-TXN-7")
    pos = await store_client(container, http, clock, tenant, tenant.store_id, "pos-s1")

    response = await pos.post("/v1/payment_intents", intent_body(tenant, merchant_ref_id="POS-TXN-7"))

    # merchant_ref_id is unique per merchant, so the conflict itself is unavoidable; S-2's intent is not S-1's
    # business, though, and its id must not be handed out.
    assert_problem(response, 409, "merchant_ref_id_taken")
    assert in_s2["id"] not in response.text
