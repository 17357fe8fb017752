"""One `Principal` for every caller kind, and the tenant scope it may see."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import Select

S = TypeVar("S", bound=Select[Any])


class CallerType(StrEnum):
    API_CLIENT = "api_client"
    PAYMENT_TOKEN = "payment_token"  # noqa: S105 - a caller kind, not a secret
    USER = "user"
    DEVICE = "device"
    OPERATOR = "operator"  # the `paymux` CLI on a host that holds the master key


class Role(StrEnum):
    """A portal user's role (seed 003), from the widest to the narrowest."""

    SYSTEM_OP = "SYSTEM_OP"
    PSP_ADMIN = "PSP_ADMIN"
    MERCHANT_ADMIN = "MERCHANT_ADMIN"
    STORE_MANAGER = "STORE_MANAGER"
    STAFF = "STAFF"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling and what part of the tenant tree they may see.

    A partner-scoped caller sees every merchant of its partner; a merchant-scoped caller one merchant; a
    store-scoped caller one store; a payment-token caller one payment intent.
    """

    caller_type: CallerType
    caller_id: str
    client_partner_id: int | None  # None only for a SYSTEM_OP user, who sees every partner
    merchant_id: int | None = None
    store_id: int | None = None
    payment_intent_id: str | None = None
    payment_token_hash: str | None = field(default=None, repr=False)
    role: Role | None = None  # a user's role
    impersonated_by: str | None = None  # the user acting as this one
    scopes: frozenset[str] = frozenset()  # a device token's OAuth2 scopes
    ip: str | None = None  # where the call came from, for the audit log

    @classmethod
    def operator(cls, name: str) -> Principal:
        """The local operator running the CLI: sees every tenant, like a SYSTEM_OP."""
        return cls(caller_type=CallerType.OPERATOR, caller_id=f"cli:{name}", client_partner_id=None)

    @property
    def idempotency_owner(self) -> str:
        """Whose Idempotency-Keys these are: the API client, or the one intent of a payment token."""
        if self.caller_type is CallerType.PAYMENT_TOKEN:
            return f"token:{self.payment_intent_id}"
        return self.caller_id

    def sees(
        self, *, client_partner_id: int | None, merchant_id: int | None, store_id: int | None = None
    ) -> bool:
        """Whether an object of this partner, merchant and store (None: not bound that narrowly) lies within the
        caller's scope: what it may read, and what an admin may create or change."""
        return (
            self.client_partner_id in (None, client_partner_id)
            and self.merchant_id in (None, merchant_id)
            and self.store_id in (None, store_id)
        )

    def scope(self, statement: S, model: Any) -> S:
        """Restrict a query over a table with client_partner_id/merchant_id/store_id columns to this scope."""
        if self.client_partner_id is not None:
            statement = statement.where(model.client_partner_id == self.client_partner_id)
        if self.merchant_id is not None:
            statement = statement.where(model.merchant_id == self.merchant_id)
        if self.store_id is not None:
            statement = statement.where(model.store_id == self.store_id)
        return statement
