from __future__ import annotations

from paymux.core.errors import Conflict, Forbidden, NotFound, Unprocessable


class StoreNotFound(NotFound):
    code = "store_not_found"
    title = "No such store"


class TenantConflict(Conflict):
    code = "tenant_conflict"
    title = "The tenant tree conflicts with what paymux already holds"


class SyncForbidden(Forbidden):
    code = "sync_forbidden"
    title = "This client may not sync that partner"


class UnknownProviderCode(Unprocessable):
    code = "unknown_provider"
    title = "No such provider"


class MerchantNotFound(NotFound):
    code = "merchant_not_found"
    title = "No such merchant"


class TenantNotInScope(NotFound):
    """A partner, merchant or store an admin named that is not in its scope, or does not exist: the same answer,
    so an admin cannot probe other tenants' ids."""

    code = "tenant_not_found"
    title = "No such tenant in your scope"
