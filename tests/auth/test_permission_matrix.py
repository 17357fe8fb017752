"""The permission matrix (docs/security.md, "Authorisation"; `paymux.gateway.permissions`).

What these tests prove:

- The matrix table in docs/security.md is `MATRIX`, cell for cell, with every operation listed once.
- The route table there names every route of the app that takes credentials, once each and under the operation
  it runs: refused there, a caller is told that operation (or the device scope it lacks). Every other route is
  one of the known public ones.
- Over HTTP, every operation answers every kind of caller as `MATRIX` says: the five portal roles (each in its
  natural scope: a SYSTEM_OP none, a PSP_ADMIN the partner, a MERCHANT_ADMIN the merchant, a STORE_MANAGER and
  a STAFF the store), an API client, a POS device holding the operation's scope, a POS device holding no
  `payment:` scope, and a payment token. A refused caller gets 403 problem+json `operation_forbidden` naming
  the operation, or `insufficient_scope` naming the scope a device lacks; an allowed caller's call, on objects it
  can see, succeeds.
- The scope rules beyond the matrix (balances, reconciliation and webhook endpoints need more than a store's
  client, config sync a client of the whole partner) refuse with codes of their own, never
  `operation_forbidden`.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, assert_never

import httpx
import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from paymux.auth.users import UserScope
from paymux.container import Container
from paymux.core.clock import FrozenClock
from paymux.gateway.auth import require_caller
from paymux.gateway.permissions import MATRIX, DeviceScope, Grant, Operation
from paymux.gateway.principal import Role
from tests.portal import (
    PASSWORD,
    device_public_jwk,
    device_token_response,
    new_user_access_token,
    register_device,
)
from tests.support import PROBLEM_JSON, ServerClient, Tenant, bearer, encode, intent_body

ROOT = Path(__file__).resolve().parents[2]
SECURITY_MD = ROOT / "docs" / "security.md"

OPERATION_FORBIDDEN = "operation_forbidden"
INSUFFICIENT_SCOPE = "insufficient_scope"
HOOK_URL = "http://127.0.0.1:9/hook"  # never called: no worker runs in these tests
NO_SUCH_ID = "x_" + "0" * 26

# Routes that take no credentials (or their own, a provider's signature), and the offline API docs.
PUBLIC_ROUTES = {
    ("POST", "/api/v1/auth/login"),
    ("POST", "/api/v1/auth/refresh"),
    ("POST", "/api/v1/auth/logout"),
    ("GET", "/.well-known/jwks.json"),
    ("POST", "/auth/device/token"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("POST", "/v1/webhooks/{}"),
    ("GET", "/v1/webhooks/{}/return"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
}


# ---------------------------------------------------------------------------------------------- the cells


class Kind(StrEnum):
    """A kind of caller: a column of the matrix (the device column twice, with and without the scope)."""

    SYSTEM_OP = "SYSTEM_OP"
    PSP_ADMIN = "PSP_ADMIN"
    MERCHANT_ADMIN = "MERCHANT_ADMIN"
    STORE_MANAGER = "STORE_MANAGER"
    STAFF = "STAFF"
    API_CLIENT = "API client"
    # A device holding exactly the operation's scope; for an operation that no scope grants, one holding every
    # `payment:` scope, so that its refusal cannot be put down to a scope it lacks.
    DEVICE_WITH_SCOPE = "device with the operation's scope"
    DEVICE_WITHOUT_PAYMENT_SCOPES = "device with only order:create"
    PAYMENT_TOKEN = "payment token"


ROLE_OF_KIND = {Kind(role.value): role for role in Role}


def refusal(operation: Operation, kind: Kind) -> str | None:
    """The matrix's answer to `kind` for `operation`: None if allowed, else the code of the 403."""
    grant = MATRIX[operation]
    if kind in ROLE_OF_KIND:
        allowed = ROLE_OF_KIND[kind] in grant.roles
    elif kind is Kind.API_CLIENT:
        allowed = grant.api_client
    elif kind is Kind.PAYMENT_TOKEN:
        allowed = grant.payment_token
    elif kind is Kind.DEVICE_WITH_SCOPE:
        allowed = grant.device_scope is not None
    else:
        return INSUFFICIENT_SCOPE if grant.device_scope is not None else OPERATION_FORBIDDEN
    return None if allowed else OPERATION_FORBIDDEN


CELLS = [(operation, kind) for operation in Operation for kind in Kind]

# What an allowed caller's representative call (see `representative_call`) answers; 200 for the others.
CREATED = {
    Operation.PAYMENT_INTENTS_CREATE,
    Operation.PAYMENT_INTENTS_REFUND,
    Operation.WEBHOOK_ENDPOINTS_MANAGE,
    Operation.RECONCILIATION_IMPORT,
    Operation.PARTNERS_MANAGE,
    Operation.API_CLIENTS_MANAGE,
    Operation.USERS_MANAGE,
    Operation.DEVICES_MANAGE,
}


# ---------------------------------------------------------------------------------------------- the docs


def section(text: str, heading: str) -> str:
    """The body of a `## heading` section, up to the next `## ` heading."""
    start = text.index(f"\n{heading}\n") + len(heading) + 2
    end = text.find("\n## ", start)
    return text[start:] if end < 0 else text[start:end]


def markdown_tables(text: str) -> list[list[list[str]]]:
    """Every table in `text`: its rows (header first, separator row left out), each a list of stripped cells."""
    tables: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", cell) for cell in cells):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables


def authorisation_table(first_columns: list[str]) -> list[list[str]]:
    """The table of the "Authorisation" section whose header starts with `first_columns`."""
    found = [
        table
        for table in markdown_tables(section(SECURITY_MD.read_text(), "## Authorisation"))
        if table[0][: len(first_columns)] == first_columns
    ]
    assert len(found) == 1, f"docs/security.md: {len(found)} tables headed {first_columns} in Authorisation"
    return found[0]


MATRIX_HEADER = [
    "operation",
    "`SYSTEM_OP`",
    "`PSP_ADMIN`",
    "`MERCHANT_ADMIN`",
    "`STORE_MANAGER`",
    "`STAFF`",
    "API client",
    "device (scope)",
    "payment token",
]


def documented_rows(table: list[list[str]]) -> list[tuple[Operation, list[str]]]:
    """A table's rows as (operation, the other cells), in order."""
    rows = []
    for row in table[1:]:
        name = row[0].strip("`")
        assert name in set(Operation), f"docs/security.md names an unknown operation {row[0]!r}"
        rows.append((Operation(name), row[1:]))
    return rows


def yes(cell: str, operation: Operation) -> bool:
    assert cell in {"yes", "-"}, f"docs/security.md, {operation}: a cell is `yes` or `-`, not {cell!r}"
    return cell == "yes"


def documented_matrix() -> list[tuple[Operation, Grant]]:
    table = authorisation_table(MATRIX_HEADER[:2])
    assert table[0] == MATRIX_HEADER
    grants = []
    for operation, cells in documented_rows(table):
        assert len(cells) == len(MATRIX_HEADER) - 1, f"docs/security.md, {operation}: {cells}"
        role_cells, api_client, device, payment_token = cells[:5], cells[5], cells[6], cells[7]
        grant = Grant(
            roles=frozenset(
                role for role, cell in zip(Role, role_cells, strict=True) if yes(cell, operation)
            ),
            api_client=yes(api_client, operation),
            payment_token=yes(payment_token, operation),
            device_scope=None if device == "-" else DeviceScope(device.strip("`")),
        )
        grants.append((operation, grant))
    return grants


def normalized(path: str) -> str:
    """A route's path with its parameters unnamed: the docs write `{id}` where the code says `{intent_id}`."""
    return re.sub(r"\{[^}]+\}", "{}", path)


def documented_routes() -> list[tuple[str, str, Operation]]:
    """(method, normalized path, operation) for every route the route table lists. A cell lists routes in
    backticks, `METHOD /path`; a method on its own (`PATCH` and `DELETE /path`) shares the path that follows."""
    table = authorisation_table(["operation", "routes"])
    assert table[0] == ["operation", "routes"]
    listed: list[tuple[str, str, Operation]] = []
    for operation, (cell,) in documented_rows(table):
        methods: list[str] = []
        for chunk in re.findall(r"`([^`]+)`", cell):
            method, _, path = chunk.partition(" ")
            assert method in {"GET", "POST", "PUT", "PATCH", "DELETE"}, f"{operation}: {chunk!r}"
            methods.append(method)
            if path:
                listed.extend((each, normalized(path), operation) for each in methods)
                methods = []
        assert not methods, f"docs/security.md, {operation}: {methods} with no path"
    return listed


# ---------------------------------------------------------------------------------------------- the app


def depends_on(dependant: Dependant, call: Callable[..., Any]) -> bool:
    return any(sub.call is call or depends_on(sub, call) for sub in dependant.dependencies)


def app_routes(app: FastAPI) -> list[tuple[str, str, bool]]:
    """(method, path, whether it takes credentials) for every route of the app, those of included routers too.
    HEAD is left out, and so is the mount serving the offline docs' static files (it has no methods)."""
    found = []
    for route in iter_route_contexts(app.routes):
        original = route.original_route
        takes_credentials = isinstance(original, APIRoute) and depends_on(original.dependant, require_caller)
        for method in sorted((route.methods or set()) - {"HEAD"}):
            assert route.path is not None
            found.append((method, route.path, takes_credentials))
    return found


# ---------------------------------------------------------------------------------------------- callers


@dataclass(frozen=True)
class Call:
    """One HTTP request, whoever sends it."""

    method: str
    path: str
    json: Any = None
    raw: bytes | None = None
    content_type: str = "application/json"
    payment_token: str | None = None  # the token of the intent the call names, for a payment-token caller

    @property
    def content(self) -> bytes:
        return self.raw if self.raw is not None else encode(self.json)


class Caller(Protocol):
    async def send(self, call: Call) -> httpx.Response: ...


async def send_with(http: httpx.AsyncClient, call: Call, authorization: str) -> httpx.Response:
    headers = {"Authorization": authorization}
    if call.content:
        headers["Content-Type"] = call.content_type
    return await http.request(call.method, call.path, content=call.content, headers=headers)


@dataclass
class BearerCaller:
    """A portal user or a POS device: `Authorization: Bearer <access token>`."""

    http: httpx.AsyncClient
    token: str

    async def send(self, call: Call) -> httpx.Response:
        return await send_with(self.http, call, f"Bearer {self.token}")


@dataclass
class PaymentTokenCaller:
    """The SDK: the payment token of the intent the call names, or of its own intent when the call names none."""

    http: httpx.AsyncClient
    own_token: str

    async def send(self, call: Call) -> httpx.Response:
        return await send_with(self.http, call, f"Bearer {call.payment_token or self.own_token}")


@dataclass
class SignedCaller:
    """An API client signing with HMAC. With the clock frozen, two signed requests of the same method, path and
    body would carry one signature and the second would be refused as a replay; so each request is signed a
    second further back than the one before (well within the 300 s tolerance), and never at the very second
    the `server` fixture signs at."""

    server: ServerClient
    clock: FrozenClock
    _age: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    async def send(self, call: Call) -> httpx.Response:
        return await self.server.request(
            call.method,
            call.path,
            raw=call.content,
            headers={"Content-Type": call.content_type} if call.content else None,
            timestamp=int(self.clock.now().timestamp()) - next(self._age),
        )


Peers = Callable[[], httpx.AsyncClient]


@pytest.fixture
async def peers(app: FastAPI) -> AsyncIterator[Peers]:
    """HTTP clients each calling from an address of its own. The per-IP limit (100 a minute, with the clock
    frozen) counts users, devices and payment tokens; an address per caller keeps the limit out of the answers."""
    clients: list[httpx.AsyncClient] = []

    def peer() -> httpx.AsyncClient:
        n = len(clients) + 1
        transport = httpx.ASGITransport(app=app, client=(f"198.51.100.{n}", 40000 + n))
        clients.append(httpx.AsyncClient(transport=transport, base_url="http://paymux.test"))
        return clients[-1]

    yield peer
    for client in clients:
        await client.aclose()


async def device_token(
    container: Container,
    http: httpx.AsyncClient,
    clock: FrozenClock,
    store_id: int,
    scopes: list[DeviceScope],
) -> tuple[str, str]:
    """A POS device of the store holding `scopes`, registered by the operator: its client_id, and the access
    token it gets for a client assertion signed with its key."""
    device_id, key = await register_device(container, store_id, [str(scope) for scope in scopes])
    granted = await device_token_response(http, device_id, key, clock)
    assert granted["scope"].split() == sorted(str(scope) for scope in scopes)
    token: str = granted["access_token"]
    return device_id, token


# ---------------------------------------------------------------------------------------------- the world


def settlement_file(clock: FrozenClock, *references: str) -> bytes:
    """A `test` provider settlement file of payments paymux never made: each line becomes an open exception."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        ["type", "provider_transaction_id", "reference", "amount", "currency", "fee", "transacted_at"]
    )
    at = clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")
    for reference in references:
        writer.writerow(["payment", f"test_ch_{reference}", f"pi_{reference}", "5", "JPY", "0", at])
    return out.getvalue().encode()


@dataclass
class World:
    """Partner acme, merchant M-1 and store S-1 (the `tenant` fixture); a caller of every kind; and an object of
    every kind the operations act on: an open intent, its event, a webhook endpoint, a reconciliation run with
    open exceptions, a STAFF user and a device."""

    tenant: Tenant
    server: ServerClient  # the merchant's API client as the `server` fixture: it makes the objects
    clock: FrozenClock
    users: dict[Role, BearerCaller]  # each in its role's natural scope
    api_client: SignedCaller  # the merchant's API client
    partner_client: SignedCaller  # an API client of the whole partner, as config sync needs
    devices: dict[
        DeviceScope | None, BearerCaller
    ]  # by the one payment scope each holds; None: holds them all
    device_ids: list[str]
    no_payment_device: BearerCaller  # holds order:create only
    token_caller: PaymentTokenCaller
    intent: dict[str, Any]  # open, with its payment_token
    event_id: str
    endpoint_id: str
    run_id: str
    exception_ids: list[str]  # open; refused callers name the first, allowed ones take one each from the end
    staff_id: str
    _serial: Iterator[int] = field(default_factory=itertools.count)

    def unique(self, prefix: str) -> str:
        return f"{prefix}-{next(self._serial)}"

    def caller(self, kind: Kind, operation: Operation) -> Caller:
        if kind in ROLE_OF_KIND:
            return self.users[ROLE_OF_KIND[kind]]
        match kind:
            case Kind.API_CLIENT:
                return self.partner_client if operation is Operation.CONFIG_SYNC else self.api_client
            case Kind.DEVICE_WITH_SCOPE:
                return self.devices[MATRIX[operation].device_scope]
            case Kind.DEVICE_WITHOUT_PAYMENT_SCOPES:
                return self.no_payment_device
            case Kind.PAYMENT_TOKEN:
                return self.token_caller
        raise AssertionError(f"no caller of kind {kind}")

    async def open_intent(self, **overrides: Any) -> dict[str, Any]:
        return await self.server.create_intent(self.tenant, **overrides)

    async def paid_intent(self) -> dict[str, Any]:
        intent = await self.open_intent()
        confirmed = await self.server.post(f"/v1/payment_intents/{intent['id']}/confirm")
        assert confirmed.status_code == 200, confirmed.text
        assert confirmed.json()["status"] == "succeeded", confirmed.text
        return intent


async def build_world(
    container: Container, server: ServerClient, tenant: Tenant, clock: FrozenClock, peers: Peers
) -> World:
    partner, merchant, store = tenant.client_partner_id, tenant.merchant_id, tenant.store_id
    natural_scope = {
        Role.SYSTEM_OP: UserScope(),
        Role.PSP_ADMIN: UserScope(partner),
        Role.MERCHANT_ADMIN: UserScope(partner, merchant),
        Role.STORE_MANAGER: UserScope(partner, merchant, store),
        Role.STAFF: UserScope(partner, merchant, store),
    }
    users = {}
    for role, scope in natural_scope.items():
        http = peers()
        users[role] = BearerCaller(http, await new_user_access_token(http, container, role, scope))
    staff = await container.users.create(
        email="target-staff@example.com", password=PASSWORD, role=Role.STAFF, scope=natural_scope[Role.STAFF]
    )
    partner_client_id, partner_secret = await container.tenants.create_client(
        name="partner-sync", partner_id=partner
    )

    # One address for the devices holding payment scopes (about forty calls), one for the device holding none.
    device_http = peers()
    payment_scopes = [scope for scope in DeviceScope if scope.startswith("payment:")]
    devices: dict[DeviceScope | None, BearerCaller] = {}
    device_ids = []
    for held in [*payment_scopes, None]:
        scopes = payment_scopes if held is None else [held]
        device_id, token = await device_token(container, device_http, clock, store, scopes)
        devices[held] = BearerCaller(device_http, token)
        device_ids.append(device_id)
    no_payment_http = peers()
    _, no_payment_token = await device_token(
        container, no_payment_http, clock, store, [DeviceScope.ORDER_CREATE]
    )

    intent = await server.create_intent(tenant)
    events = await server.get(f"/v1/events?object_id={intent['id']}")
    assert events.status_code == 200, events.text
    endpoint = await server.post("/v1/webhook_endpoints", {"url": HOOK_URL})
    assert endpoint.status_code == 201, endpoint.text
    # An exception for every caller that may resolve one, and one more that refused callers name.
    references = [f"OPEN{n}" for n in range(len(Kind) + 1)]
    run = await server.request(
        "POST",
        "/v1/reconciliation_runs?provider=test",
        raw=settlement_file(clock, *references),
        headers={"Content-Type": "text/csv"},
    )
    assert run.status_code == 201, run.text
    exceptions = await server.get(f"/v1/reconciliation_runs/{run.json()['id']}/exceptions?limit=100")
    assert exceptions.status_code == 200, exceptions.text
    exception_ids = [item["id"] for item in exceptions.json()["data"] if item["status"] == "open"]
    assert len(exception_ids) == len(references), exceptions.text

    return World(
        tenant=tenant,
        server=server,
        clock=clock,
        users=users,
        api_client=SignedCaller(server, clock),
        partner_client=SignedCaller(
            ServerClient(server.http, partner_client_id, partner_secret, clock), clock
        ),
        devices=devices,
        device_ids=device_ids,
        no_payment_device=BearerCaller(no_payment_http, no_payment_token),
        token_caller=PaymentTokenCaller(peers(), intent["payment_token"]),
        intent=intent,
        event_id=events.json()["data"][0]["id"],
        endpoint_id=endpoint.json()["id"],
        run_id=run.json()["id"],
        exception_ids=exception_ids,
        staff_id=staff.id,
    )


@pytest.fixture
async def world(
    container: Container, server: ServerClient, tenant: Tenant, clock: FrozenClock, peers: Peers
) -> World:
    return await build_world(container, server, tenant, clock, peers)


# ---------------------------------------------------------------------------------------------- the calls


async def representative_call(world: World, operation: Operation, *, allowed: bool) -> Call:
    """A call of `operation` on the tenant's objects. A caller the matrix lets through, whose call changes an
    object, gets an object of its own in the state the call needs; a refused caller is turned away before
    anything is looked up, and names the shared objects."""
    w, tenant = world, world.tenant
    body: dict[str, Any]
    match operation:
        case Operation.PAYMENT_INTENTS_CREATE:
            return Call("POST", "/v1/payment_intents", intent_body(tenant))
        case Operation.PAYMENT_INTENTS_READ:
            return Call("GET", f"/v1/payment_intents/{w.intent['id']}")
        case Operation.PAYMENT_INTENTS_CONFIRM:
            intent = await w.open_intent() if allowed else w.intent
            path = f"/v1/payment_intents/{intent['id']}/confirm"
            return Call("POST", path, payment_token=intent["payment_token"])
        case Operation.PAYMENT_INTENTS_CANCEL:
            intent = await w.open_intent() if allowed else w.intent
            path = f"/v1/payment_intents/{intent['id']}/cancel"
            body = {"cancellation_reason": "matrix probe"}
            return Call("POST", path, body, payment_token=intent["payment_token"])
        case Operation.PAYMENT_INTENTS_CAPTURE:
            intent = await w.open_intent(processing_mode="external") if allowed else w.intent
            return Call("POST", f"/v1/payment_intents/{intent['id']}/capture", {"status": "success"})
        case Operation.PAYMENT_INTENTS_REFUND:
            intent = await w.paid_intent() if allowed else w.intent
            return Call("POST", f"/v1/payment_intents/{intent['id']}/refund", {"amount": 100})
        case Operation.BALANCES_READ:
            return Call("GET", f"/v1/balances?merchant_id={tenant.merchant_id}")
        case Operation.EVENTS_READ:
            return Call("GET", f"/v1/events/{w.event_id}")
        case Operation.EVENTS_REDELIVER:
            return Call("POST", f"/v1/events/{w.event_id}/redeliver")
        case Operation.WEBHOOK_ENDPOINTS_READ:
            return Call("GET", f"/v1/webhook_endpoints/{w.endpoint_id}")
        case Operation.WEBHOOK_ENDPOINTS_MANAGE:
            body = {"url": HOOK_URL, "merchant_id": tenant.merchant_id}
            return Call("POST", "/v1/webhook_endpoints", body)
        case Operation.RECONCILIATION_READ:
            return Call("GET", f"/v1/reconciliation_runs/{w.run_id}")
        case Operation.RECONCILIATION_IMPORT:
            upload = settlement_file(w.clock, w.unique("IMPORT"))
            return Call("POST", "/v1/reconciliation_runs?provider=test", raw=upload, content_type="text/csv")
        case Operation.RECONCILIATION_RESOLVE:
            exception_id = w.exception_ids.pop() if allowed else w.exception_ids[0]
            path = f"/v1/reconciliation_exceptions/{exception_id}/resolve"
            return Call("POST", path, {"reason": "matrix probe"})
        case Operation.CONFIG_SYNC:
            body = {"client_partner_id": tenant.client_partner_id, "merchants": []}
            return Call("POST", "/v1/sync/merchants", body)
        case Operation.PROVIDER_CONFIGS_READ:
            return Call("GET", f"/v1/stores/{tenant.store_id}/provider_configs")
        case Operation.PARTNERS_READ:
            return Call("GET", f"/api/v1/partners/{tenant.client_partner_id}")
        case Operation.PARTNERS_MANAGE:
            return Call("POST", "/api/v1/partners", {"name": w.unique("partner")})
        case Operation.MERCHANTS_READ:
            return Call("GET", f"/api/v1/merchants/{tenant.merchant_id}")
        case Operation.MERCHANTS_MANAGE:
            return Call("PATCH", f"/api/v1/merchants/{tenant.merchant_id}", {"name": w.unique("merchant")})
        case Operation.STORES_READ:
            return Call("GET", f"/api/v1/stores/{tenant.store_id}")
        case Operation.STORES_MANAGE:
            return Call("PATCH", f"/api/v1/stores/{tenant.store_id}", {"name": w.unique("store")})
        case Operation.API_CLIENTS_READ:
            return Call("GET", f"/api/v1/api_clients/{tenant.client_id}")
        case Operation.API_CLIENTS_MANAGE:
            body = {"name": w.unique("client"), "merchant_id": tenant.merchant_id}
            return Call("POST", "/api/v1/api_clients", body)
        case Operation.USERS_READ:
            return Call("GET", f"/api/v1/users/{w.staff_id}")
        case Operation.USERS_MANAGE:
            email = f"{w.unique('staff')}@example.com"
            body = {"email": email, "password": PASSWORD, "role": "STAFF", "store_id": tenant.store_id}
            return Call("POST", "/api/v1/users", body)
        case Operation.USERS_IMPERSONATE:
            return Call("POST", "/api/v1/auth/impersonate", {"user_id": w.staff_id})
        case Operation.DEVICES_READ:
            return Call("GET", f"/api/v1/devices/{w.device_ids[0]}")
        case Operation.DEVICES_MANAGE:
            body = {
                "store_id": tenant.store_id,
                "serial_number": w.unique("POS"),
                "jwk": device_public_jwk(),
                "scopes": ["payment:read"],
            }
            return Call("POST", "/api/v1/devices", body)
        case Operation.AUDIT_READ:
            return Call("GET", "/api/v1/audit_events")
        case Operation.SIGNING_KEYS_ROTATE:
            return Call("POST", "/api/v1/signing_keys/rotate")
        case _ as unreachable:
            assert_never(unreachable)


def sample_call(world: World, method: str, template: str) -> Call:
    """A well-formed call of any route (validation runs before the use case, so a malformed one would never
    reach the matrix). The ids need not exist: the callers it is meant for are refused before any look-up."""
    tenant = world.tenant
    path = template.format(
        intent_id=world.intent["id"],
        store_id=tenant.store_id,
        merchant_id=tenant.merchant_id,
        partner_id=tenant.client_partner_id,
        user_id="usr_" + "0" * 26,
        client_id=NO_SUCH_ID,
        device_id=NO_SUCH_ID,
        transaction_id=NO_SUCH_ID,
        event_id=NO_SUCH_ID,
        endpoint_id=NO_SUCH_ID,
        run_id=NO_SUCH_ID,
        exception_id=NO_SUCH_ID,
    )
    if (method, template) == ("POST", "/v1/reconciliation_runs"):
        upload = settlement_file(world.clock, "ROUTE")
        return Call(method, f"{path}?provider=test", raw=upload, content_type="text/csv")
    bodies: dict[tuple[str, str], dict[str, Any]] = {
        ("POST", "/v1/payment_intents"): intent_body(tenant),
        ("POST", "/v1/sync/merchants"): {"client_partner_id": tenant.client_partner_id, "merchants": []},
        ("POST", "/v1/reconciliation_exceptions/{exception_id}/resolve"): {"reason": "route probe"},
        ("POST", "/v1/webhook_endpoints"): {"url": HOOK_URL},
        ("PATCH", "/v1/webhook_endpoints/{endpoint_id}"): {"description": "route probe"},
        ("POST", "/api/v1/partners"): {"name": "route probe"},
        ("POST", "/api/v1/merchants"): {
            "merchant_code": "PROBE",
            "client_partner_id": tenant.client_partner_id,
        },
        ("PATCH", "/api/v1/merchants/{merchant_id}"): {"name": "route probe"},
        ("POST", "/api/v1/stores"): {"store_code": "PROBE", "merchant_id": tenant.merchant_id},
        ("PATCH", "/api/v1/stores/{store_id}"): {"name": "route probe"},
        ("POST", "/api/v1/auth/impersonate"): {"user_id": world.staff_id},
        ("POST", "/api/v1/users"): {
            "email": "probe@example.com",
            "password": PASSWORD,
            "role": "STAFF",
            "store_id": tenant.store_id,
        },
        ("PATCH", "/api/v1/users/{user_id}"): {"is_active": False},
        ("POST", "/api/v1/api_clients"): {"name": "route probe"},
        ("POST", "/api/v1/devices"): {
            "store_id": tenant.store_id,
            "serial_number": "PROBE",
            "jwk": device_public_jwk(),
            "scopes": ["payment:read"],
        },
    }
    return Call(method, path, bodies.get((method, template)))


# ---------------------------------------------------------------------------------------------- checking


def refused_wrongly(cell: str, operation: Operation, code: str, response: httpx.Response) -> str | None:
    """Why `response` is not the 403 `code` refusing `operation`, or None if it is."""
    if response.status_code != 403 or not response.headers.get("content-type", "").startswith(PROBLEM_JSON):
        return f"{cell}: should be refused with 403 {code}, got {response.status_code} {response.text}"
    problem = response.json()
    # The refusal names what the caller lacked: the operation, or for a device the scope.
    named = (
        {"operation": str(operation)}
        if code == OPERATION_FORBIDDEN
        else {"required_scope": str(MATRIX[operation].device_scope)}
    )
    got = {"code": problem.get("code"), **{key: problem.get(key) for key in named}}
    if got != {"code": code, **named}:
        return f"{cell}: should be refused with {code} {named}, got {got}"
    return None


async def check_cell(world: World, operation: Operation, kind: Kind) -> str | None:
    """Call `operation` as `kind`: None if the answer is the matrix's, else what is wrong with it."""
    code = refusal(operation, kind)
    call = await representative_call(world, operation, allowed=code is None)
    response = await world.caller(kind, operation).send(call)
    cell = f"{operation} x {kind} ({call.method} {call.path})"
    if code is not None:
        return refused_wrongly(cell, operation, code, response)
    success = 201 if operation in CREATED else 200
    if response.status_code != success:
        return f"{cell}: allowed, should answer {success}, got {response.status_code} {response.text}"
    return None


async def check_cells(world: World, cells: Iterable[tuple[Operation, Kind]]) -> list[str]:
    failures = []
    for operation, kind in cells:
        failure = await check_cell(world, operation, kind)
        if failure is not None:
            failures.append(failure)
    return failures


# The callers that tell which operation a route runs: the first of them the operation refuses. A payment token
# is refused all but three operations, and the refusal names the operation; of those three, a STAFF user is
# refused confirm, and a device with no payment scope read and cancel, the refusal naming the scope each needs.
TELLING_KINDS = (Kind.PAYMENT_TOKEN, Kind.STAFF, Kind.DEVICE_WITHOUT_PAYMENT_SCOPES)


def telling_kind(operation: Operation) -> Kind:
    refused = [kind for kind in TELLING_KINDS if refusal(operation, kind) is not None]
    assert refused, f"none of {TELLING_KINDS} is refused {operation}: another caller must tell it"
    return refused[0]


# ---------------------------------------------------------------------------------------------- tests


def test_the_documented_matrix_is_the_matrix() -> None:
    documented = documented_matrix()
    operations = [operation for operation, _ in documented]
    assert len(operations) == len(set(operations)), (
        f"listed twice: {sorted(op for op in set(operations) if operations.count(op) > 1)}"
    )
    assert set(operations) == set(Operation), (
        f"not in docs/security.md: {sorted(set(Operation) - set(operations))}"
    )
    differences = [
        f"{operation}: documented {grant}, MATRIX has {MATRIX[operation]}"
        for operation, grant in documented
        if grant != MATRIX[operation]
    ]
    assert not differences, "\n".join(differences)


async def test_the_route_table_names_every_route_that_takes_credentials_with_its_operation(
    app: FastAPI, world: World
) -> None:
    routes = app_routes(app)
    with_credentials = {
        (method, normalized(path)): path for method, path, credentials in routes if credentials
    }
    without = {(method, normalized(path)) for method, path, credentials in routes if not credentials}
    listed = documented_routes()
    keys = [(method, path) for method, path, _ in listed]
    assert len(keys) == len(set(keys)), (
        f"listed twice: {sorted(key for key in set(keys) if keys.count(key) > 1)}"
    )
    assert {operation for *_, operation in listed} == set(Operation), "an operation has no route"
    assert set(keys) == set(with_credentials), (
        f"not in the route table: {sorted(set(with_credentials) - set(keys))}; "
        f"listed, but no such route takes credentials: {sorted(set(keys) - set(with_credentials))}"
    )
    assert without == PUBLIC_ROUTES, (
        f"taking no credentials but not a known public route: {sorted(without - PUBLIC_ROUTES)}; "
        f"public routes gone: {sorted(PUBLIC_ROUTES - without)}"
    )

    # Each route runs the operation it is listed under: refused there, a caller is told that operation.
    failures = []
    for method, path, operation in listed:
        kind = telling_kind(operation)
        code = refusal(operation, kind)
        assert code is not None  # the telling kind is one the operation refuses
        call = sample_call(world, method, with_credentials[(method, path)])
        response = await world.caller(kind, operation).send(call)
        failure = refused_wrongly(f"{method} {path} as {kind}", operation, code, response)
        if failure is not None:
            failures.append(failure)
    assert not failures, "\n".join(failures)


async def test_every_caller_gets_the_matrix_answer_from_every_operation(world: World) -> None:
    failures = await check_cells(world, list(CELLS))
    assert not failures, f"{len(failures)} cells answer otherwise than the matrix:\n" + "\n".join(failures)


async def test_scope_rules_refuse_allowed_callers_with_their_own_codes(
    container: Container, server: ServerClient, tenant: Tenant, clock: FrozenClock
) -> None:
    """Beyond the matrix (docs/security.md): balances, reconciliation and webhook endpoints need a merchant- or
    partner-scoped caller, config sync a client of the whole partner. The matrix lets API clients do all of it,
    so a client too narrow for the rule is refused by the rule, with its own code."""
    store_client_id, store_secret = await container.tenants.create_client(
        name="till",
        partner_id=tenant.client_partner_id,
        merchant_id=tenant.merchant_id,
        store_id=tenant.store_id,
    )
    store_client = SignedCaller(ServerClient(server.http, store_client_id, store_secret, clock), clock)
    merchant_client = SignedCaller(server, clock)
    upload = Call(
        "POST",
        "/v1/reconciliation_runs?provider=test",
        raw=settlement_file(clock, "S"),
        content_type="text/csv",
    )
    sync = Call(
        "POST", "/v1/sync/merchants", {"client_partner_id": tenant.client_partner_id, "merchants": []}
    )
    cases = [
        (store_client, Operation.BALANCES_READ, Call("GET", "/v1/balances"), "balances_need_merchant_scope"),
        (store_client, Operation.BALANCES_READ, Call("GET", "/v1/balance_transactions"), "balances_need_merchant_scope"),
        (store_client, Operation.RECONCILIATION_READ, Call("GET", "/v1/reconciliation_runs"), "reconciliation_needs_merchant_scope"),
        (store_client, Operation.RECONCILIATION_IMPORT, upload, "reconciliation_needs_merchant_scope"),
        (store_client, Operation.WEBHOOK_ENDPOINTS_READ, Call("GET", "/v1/webhook_endpoints"), "webhook_scope_forbidden"),
        (store_client, Operation.WEBHOOK_ENDPOINTS_MANAGE, Call("POST", "/v1/webhook_endpoints", {"url": HOOK_URL}), "webhook_scope_forbidden"),
        (merchant_client, Operation.CONFIG_SYNC, sync, "sync_forbidden"),
    ]  # fmt: skip
    failures = []
    for caller, operation, call, code in cases:
        assert refusal(operation, Kind.API_CLIENT) is None, f"the matrix refuses API clients {operation}"
        response = await caller.send(call)
        got = (response.status_code, response.json().get("code"))
        if got != (403, code):
            failures.append(f"{call.method} {call.path}: should be refused with 403 {code}, got {got}")
    assert not failures, "\n".join(failures)


# ---------------------------------------------------------------------------------------------- regressions


async def test_store_users_read_their_stores_merchant(
    container: Container, tenant: Tenant, peers: Peers
) -> None:
    """A store's users read their store's merchant, by the listing and by its id."""
    scope = UserScope(tenant.client_partner_id, tenant.merchant_id, tenant.store_id)
    failures = []
    for role in (Role.STORE_MANAGER, Role.STAFF):
        http = peers()
        headers = bearer(await new_user_access_token(http, container, role, scope))
        listed = await http.get("/api/v1/merchants", headers=headers)
        assert listed.status_code == 200, listed.text
        assert [merchant["id"] for merchant in listed.json()["data"]] == [tenant.merchant_id]
        # The merchant the listing shows, the detail route shows too.
        detail = await http.get(f"/api/v1/merchants/{tenant.merchant_id}", headers=headers)
        if detail.status_code != 200:
            failures.append(f"{role}: GET /api/v1/merchants/{tenant.merchant_id} answered {detail.text}")
    assert not failures, "\n".join(failures)


async def test_a_system_op_reads_a_merchants_balance_as_its_admin_does(
    container: Container, server: ServerClient, tenant: Tenant, peers: Peers
) -> None:
    intent = await server.create_intent(tenant)
    confirmed = await server.post(f"/v1/payment_intents/{intent['id']}/confirm")
    assert confirmed.json()["status"] == "succeeded", confirmed.text
    readers = {
        Role.SYSTEM_OP: UserScope(),
        Role.MERCHANT_ADMIN: UserScope(tenant.client_partner_id, tenant.merchant_id),
    }
    seen: dict[Role, list[Any]] = {}
    for role, scope in readers.items():
        http = peers()
        headers = bearer(await new_user_access_token(http, container, role, scope))
        seen[role] = []
        for path in ("/v1/balances", "/v1/balance_transactions"):
            response = await http.get(f"{path}?merchant_id={tenant.merchant_id}", headers=headers)
            assert response.status_code == 200, response.text
            seen[role].append(response.json())
    balance, movements = seen[Role.MERCHANT_ADMIN]
    assert balance["available"] == [{"amount": 1000, "currency": "JPY"}]
    assert [movement["source"] for movement in movements["data"]] == [intent["id"]]
    assert seen[Role.SYSTEM_OP] == seen[Role.MERCHANT_ADMIN]
