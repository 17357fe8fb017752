"""The built-in `test` provider: a card processor's test mode, in process, decided by magic amounts.

It talks to nothing, so it is deterministic and keeps no state: the outcome of a payment follows from its amount
(in minor units, whatever the currency), and so does the answer of a later status check.

| amount | create_payment | get_payment_status afterwards |
|---|---|---|
| 40002 | failed, `card_declined` | failed |
| 40051 | failed, `insufficient_funds` | failed |
| 40054 | failed, `expired_card` | failed |
| 40091 | raises `ProviderTimeout` (outcome unknown) | succeeded: the charge went through |
| 40096 | raises `ProviderUnavailable` (never reached the processor) | failed |
| any other | succeeded | succeeded |

Refunds succeed, except a refund of exactly 40022, which the processor declines (`refund_declined`), and one of
exactly 40091, whose answer times out (a later refund status check finds it succeeded).
"""

from __future__ import annotations

from paymux.providers.base import (
    PaymentMethodType,
    PaymentReference,
    PaymentRequest,
    ProviderCredentials,
    ProviderPayment,
    ProviderPaymentStatus,
    ProviderRefund,
    ProviderRefundStatus,
    ProviderTimeout,
    ProviderUnavailable,
    RefundRequest,
)

DECLINES: dict[int, tuple[str, str]] = {
    40002: ("card_declined", "The card was declined."),
    40051: ("insufficient_funds", "The card has insufficient funds."),
    40054: ("expired_card", "The card has expired."),
}
TIMEOUT_AMOUNT = 40091
UNAVAILABLE_AMOUNT = 40096
REFUND_DECLINE_AMOUNT = 40022


class BuiltinTestProvider:
    name = "test"
    payment_methods = frozenset({PaymentMethodType.CREDIT_CARD})

    async def create_payment(
        self, credentials: ProviderCredentials, request: PaymentRequest
    ) -> ProviderPayment:
        if request.amount == TIMEOUT_AMOUNT:
            raise ProviderTimeout("test provider: simulated timeout (magic amount 40091)")
        if request.amount == UNAVAILABLE_AMOUNT:
            raise ProviderUnavailable("test provider: simulated outage (magic amount 40096)")
        return self._outcome(request.payment_intent_id, request.amount, request.currency)

    async def get_payment_status(
        self, credentials: ProviderCredentials, reference: PaymentReference
    ) -> ProviderPayment:
        if reference.amount == UNAVAILABLE_AMOUNT:
            return ProviderPayment(
                status=ProviderPaymentStatus.FAILED,
                provider_transaction_id=reference.provider_transaction_id,
                amount=reference.amount,
                currency=reference.currency,
                failure_code="provider_unavailable",
                failure_message="The payment never reached the processor.",
            )
        return self._outcome(reference.payment_intent_id, reference.amount, reference.currency)

    async def cancel_payment(self, credentials: ProviderCredentials, reference: PaymentReference) -> None:
        return None

    async def refund_payment(
        self, credentials: ProviderCredentials, request: RefundRequest
    ) -> ProviderRefund:
        if request.amount == TIMEOUT_AMOUNT:
            raise ProviderTimeout("test provider: simulated refund timeout (magic amount 40091)")
        return await self.get_refund_status(credentials, request)

    async def get_refund_status(
        self, credentials: ProviderCredentials, request: RefundRequest
    ) -> ProviderRefund:
        if request.amount == REFUND_DECLINE_AMOUNT:
            return ProviderRefund(
                status=ProviderRefundStatus.FAILED,
                provider_refund_id=None,
                failure_code="refund_declined",
                failure_message="The processor declined the refund.",
            )
        return ProviderRefund(
            status=ProviderRefundStatus.SUCCEEDED, provider_refund_id=f"test_re_{request.refund_id}"
        )

    @staticmethod
    def _outcome(payment_intent_id: str, amount: int, currency: str) -> ProviderPayment:
        # The transaction id derives from the intent, so a status check finds "the same" payment again.
        transaction_id = f"test_ch_{payment_intent_id.removeprefix('pi_')}"
        decline = DECLINES.get(amount)
        if decline is not None:
            code, message = decline
            return ProviderPayment(
                status=ProviderPaymentStatus.FAILED,
                provider_transaction_id=transaction_id,
                amount=amount,
                currency=currency,
                failure_code=code,
                failure_message=message,
            )
        return ProviderPayment(
            status=ProviderPaymentStatus.SUCCEEDED,
            provider_transaction_id=transaction_id,
            amount=amount,
            currency=currency,
        )

    def __repr__(self) -> str:
        return "BuiltinTestProvider()"
