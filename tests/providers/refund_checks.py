"""One check every adapter's `get_refund_status` must pass, run by each provider's test module."""

from __future__ import annotations

from paymux.container import Container
from paymux.core.ids import new_id
from paymux.payments.models import PaymentIntent
from paymux.providers.base import (
    PaymentReference,
    ProviderCredentials,
    ProviderRefundStatus,
    RefundRequest,
)
from tests.support import ServerClient


async def check_refund_status_lookups(
    container: Container, server: ServerClient, intent_id: str, *, unknown_refund: ProviderRefundStatus
) -> None:
    """A refund the provider made reads back as succeeded; one it never received reads as `unknown_refund`
    (failed, or made now by providers whose refunds are idempotent by merchant refund id)."""
    made = (await server.post(f"/v1/payment_intents/{intent_id}/refund", {"amount": 300})).json()
    assert made["status"] == "succeeded", made
    async with container.db.reading() as session:
        intent = await session.get(PaymentIntent, intent_id)
    assert intent is not None
    provider_name = intent.provider_name
    assert provider_name is not None
    provider = container.providers.get(provider_name)
    config = await _config(container, intent.store_id, provider_name)
    reference = PaymentReference(
        intent.id, intent.provider_transaction_id, intent.amount, intent.currency, intent.provider_reference
    )
    again = await provider.get_refund_status(
        config, RefundRequest(refund_id=made["id"], payment=reference, amount=300, previously_refunded=0)
    )
    assert again.status is ProviderRefundStatus.SUCCEEDED
    never = await provider.get_refund_status(
        config, RefundRequest(refund_id=new_id("txn"), payment=reference, amount=200, previously_refunded=300)
    )
    assert never.status is unknown_refund


async def _config(container: Container, store_id: int, provider_name: str) -> ProviderCredentials:
    async with container.db.reading() as session:
        config = await container.tenants.provider_config(session, store_id, provider_name)
    assert config is not None
    return container.tenants.credentials(config)
