"""Imports every table, so `Base.metadata` is complete for migrations and tests."""

from paymux.audit.models import AuditEvent
from paymux.auth.models import ApiClient, Device, PaymentToken, RefreshToken, SigningKey, SpentAssertion, User
from paymux.core.db import Base
from paymux.events.models import Event
from paymux.gateway.models import IdempotencyRecord
from paymux.ledger.models import Hold, JournalEntry, LedgerAccount, Posting
from paymux.payments.models import PaymentIntent, PaymentIntentStatusChange, Transaction
from paymux.reconciliation.models import (
    ReconciliationException,
    ReconciliationMatch,
    ReconciliationRun,
    ScheduledReconciliation,
)
from paymux.tenants.models import ClientPartner, Merchant, Store, StoreProviderConfig
from paymux.webhooks.models import ProviderWebhookEvent, WebhookAttempt, WebhookDelivery, WebhookEndpoint

__all__ = [
    "ApiClient",
    "AuditEvent",
    "Base",
    "ClientPartner",
    "Device",
    "Event",
    "Hold",
    "IdempotencyRecord",
    "JournalEntry",
    "LedgerAccount",
    "Merchant",
    "PaymentIntent",
    "PaymentIntentStatusChange",
    "PaymentToken",
    "Posting",
    "ProviderWebhookEvent",
    "ReconciliationException",
    "ReconciliationMatch",
    "ReconciliationRun",
    "RefreshToken",
    "ScheduledReconciliation",
    "SigningKey",
    "SpentAssertion",
    "Store",
    "StoreProviderConfig",
    "Transaction",
    "User",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
]
