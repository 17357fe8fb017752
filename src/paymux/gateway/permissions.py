"""The permission matrix: which caller may run which operation.

Every service use case starts with `require(principal, Operation.X)`. The matrix answers by caller kind: a portal
user by role, a POS device by the OAuth2 scope its token carries, an API client and a payment token by kind, and
the local operator (the CLI) may do everything. It says nothing about tenants: *which* objects a caller may touch
is its scope (`Principal.scope`), applied to every query, and an object outside it is a 404.

docs/security.md prints this table; a test keeps the two equal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from paymux.core.errors import Forbidden
from paymux.gateway.principal import CallerType, Principal, Role


class Operation(StrEnum):
    PAYMENT_INTENTS_CREATE = "payment_intents.create"
    PAYMENT_INTENTS_READ = "payment_intents.read"
    PAYMENT_INTENTS_CONFIRM = "payment_intents.confirm"
    PAYMENT_INTENTS_CANCEL = "payment_intents.cancel"
    PAYMENT_INTENTS_CAPTURE = "payment_intents.capture"
    PAYMENT_INTENTS_REFUND = "payment_intents.refund"
    BALANCES_READ = "balances.read"
    EVENTS_READ = "events.read"
    EVENTS_REDELIVER = "events.redeliver"
    WEBHOOK_ENDPOINTS_READ = "webhook_endpoints.read"
    WEBHOOK_ENDPOINTS_MANAGE = "webhook_endpoints.manage"
    RECONCILIATION_READ = "reconciliation.read"
    RECONCILIATION_IMPORT = "reconciliation.import"
    RECONCILIATION_RESOLVE = "reconciliation.resolve"
    CONFIG_SYNC = "config.sync"
    PROVIDER_CONFIGS_READ = "provider_configs.read"
    PARTNERS_READ = "partners.read"
    PARTNERS_MANAGE = "partners.manage"
    MERCHANTS_READ = "merchants.read"
    MERCHANTS_MANAGE = "merchants.manage"
    STORES_READ = "stores.read"
    STORES_MANAGE = "stores.manage"
    API_CLIENTS_READ = "api_clients.read"
    API_CLIENTS_MANAGE = "api_clients.manage"
    USERS_READ = "users.read"
    USERS_MANAGE = "users.manage"
    USERS_IMPERSONATE = "users.impersonate"
    DEVICES_READ = "devices.read"
    DEVICES_MANAGE = "devices.manage"
    AUDIT_READ = "audit.read"
    SIGNING_KEYS_ROTATE = "signing_keys.rotate"


class DeviceScope(StrEnum):
    """The OAuth2 scopes a POS device may hold. `order:create` and `bill:create` are carried in the token for
    the order and bill services behind the same gateway (seed 003); paymux itself checks the `payment:` ones."""

    ORDER_CREATE = "order:create"
    BILL_CREATE = "bill:create"
    PAYMENT_CREATE = "payment:create"
    PAYMENT_READ = "payment:read"
    PAYMENT_CANCEL = "payment:cancel"
    PAYMENT_REFUND = "payment:refund"


@dataclass(frozen=True, slots=True)
class Grant:
    roles: frozenset[Role] = field(default_factory=frozenset)
    api_client: bool = False
    payment_token: bool = False
    device_scope: DeviceScope | None = None


SO, PA, MA, SM, ST = Role
EVERY_ROLE = frozenset(Role)
ADMINS = frozenset({SO, PA, MA})


def _grant(
    *roles: Role, api_client: bool = False, payment_token: bool = False, device: DeviceScope | None = None
) -> Grant:
    return Grant(frozenset(roles), api_client=api_client, payment_token=payment_token, device_scope=device)


MATRIX: dict[Operation, Grant] = {
    Operation.PAYMENT_INTENTS_CREATE: _grant(MA, SM, ST, api_client=True, device=DeviceScope.PAYMENT_CREATE),
    Operation.PAYMENT_INTENTS_READ: _grant(
        *EVERY_ROLE, api_client=True, payment_token=True, device=DeviceScope.PAYMENT_READ
    ),
    Operation.PAYMENT_INTENTS_CONFIRM: _grant(
        api_client=True, payment_token=True, device=DeviceScope.PAYMENT_CREATE
    ),
    Operation.PAYMENT_INTENTS_CANCEL: _grant(
        MA, SM, ST, api_client=True, payment_token=True, device=DeviceScope.PAYMENT_CANCEL
    ),
    Operation.PAYMENT_INTENTS_CAPTURE: _grant(MA, SM, api_client=True),
    Operation.PAYMENT_INTENTS_REFUND: _grant(PA, MA, SM, api_client=True, device=DeviceScope.PAYMENT_REFUND),
    Operation.BALANCES_READ: _grant(*ADMINS, api_client=True),
    Operation.EVENTS_READ: _grant(*ADMINS, api_client=True),
    Operation.EVENTS_REDELIVER: _grant(*ADMINS, api_client=True),
    Operation.WEBHOOK_ENDPOINTS_READ: _grant(*ADMINS, api_client=True),
    Operation.WEBHOOK_ENDPOINTS_MANAGE: _grant(*ADMINS, api_client=True),
    Operation.RECONCILIATION_READ: _grant(*ADMINS, api_client=True),
    Operation.RECONCILIATION_IMPORT: _grant(*ADMINS, api_client=True),
    Operation.RECONCILIATION_RESOLVE: _grant(*ADMINS, api_client=True),
    Operation.CONFIG_SYNC: _grant(api_client=True),
    Operation.PROVIDER_CONFIGS_READ: _grant(SO, PA, MA, SM, api_client=True),
    Operation.PARTNERS_READ: _grant(SO, PA),
    Operation.PARTNERS_MANAGE: _grant(SO),
    Operation.MERCHANTS_READ: _grant(*EVERY_ROLE),
    Operation.MERCHANTS_MANAGE: _grant(SO, PA),
    Operation.STORES_READ: _grant(*EVERY_ROLE),
    Operation.STORES_MANAGE: _grant(*ADMINS),
    Operation.API_CLIENTS_READ: _grant(*ADMINS),
    Operation.API_CLIENTS_MANAGE: _grant(*ADMINS),
    Operation.USERS_READ: _grant(SO, PA, MA, SM),
    Operation.USERS_MANAGE: _grant(SO, PA, MA, SM),
    Operation.USERS_IMPERSONATE: _grant(SO, PA),
    Operation.DEVICES_READ: _grant(SO, PA, MA, SM),
    Operation.DEVICES_MANAGE: _grant(SO, PA, MA, SM),
    Operation.AUDIT_READ: _grant(*ADMINS),
    Operation.SIGNING_KEYS_ROTATE: _grant(SO),
}


class OperationForbidden(Forbidden):
    code = "operation_forbidden"
    title = "This caller may not do this"


class InsufficientScope(Forbidden):
    code = "insufficient_scope"
    title = "The device token lacks a scope this needs"


def allows(principal: Principal, operation: Operation) -> bool:
    grant = MATRIX[operation]
    match principal.caller_type:
        case CallerType.OPERATOR:
            return True
        case CallerType.USER:
            return principal.role in grant.roles
        case CallerType.API_CLIENT:
            return grant.api_client
        case CallerType.PAYMENT_TOKEN:
            return grant.payment_token
        case CallerType.DEVICE:
            return grant.device_scope is not None and grant.device_scope in principal.scopes
    return False  # pragma: no cover - every caller type is matched above


def require(principal: Principal, operation: Operation) -> None:
    """Refuse (403) an operation the caller's kind, role or scopes do not allow."""
    if allows(principal, operation):
        return
    grant = MATRIX[operation]
    if principal.caller_type is CallerType.DEVICE and grant.device_scope is not None:
        raise InsufficientScope(
            f"{operation} needs the {grant.device_scope} scope; this device token has "
            f"{' '.join(sorted(principal.scopes)) or 'none'}.",
            required_scope=str(grant.device_scope),
        )
    who = {
        CallerType.USER: f"a {principal.role} user",
        CallerType.API_CLIENT: "an API client",
        CallerType.PAYMENT_TOKEN: "a payment token",
        CallerType.DEVICE: "a POS device",
    }.get(principal.caller_type, str(principal.caller_type))
    raise OperationForbidden(f"{operation} is not allowed for {who}.", operation=str(operation))


def outranks(actor: Role, subject: Role) -> bool:
    """Whether `actor` may create or change a user of role `subject`: a SYSTEM_OP any, others only narrower ones."""
    order = list(Role)
    return actor is Role.SYSTEM_OP or order.index(subject) > order.index(actor)
