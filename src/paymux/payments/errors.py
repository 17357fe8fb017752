from __future__ import annotations

from paymux.core.errors import Conflict, NotFound, PaymuxError, Unprocessable


class PaymentIntentNotFound(NotFound):
    code = "payment_intent_not_found"
    title = "No such payment intent"


class TransactionNotFound(NotFound):
    code = "transaction_not_found"
    title = "No such transaction"


class InvalidStateTransition(Conflict):
    code = "invalid_state_transition"
    title = "Not allowed in the payment intent's current status"


class MerchantRefTaken(Conflict):
    code = "merchant_ref_id_taken"
    title = "merchant_ref_id is already used by another payment intent of this merchant"


class StoreInactive(Conflict):
    code = "store_inactive"
    title = "The store or its merchant is not active"


class CaptureNotAllowed(Conflict):
    code = "capture_not_allowed"
    title = "Only external and manual payment intents are captured through the API"


class CaptureAmountTooLarge(Unprocessable):
    code = "capture_amount_too_large"
    title = "The captured amount exceeds the intent's amount"


class RefundExceedsCaptured(Conflict):
    code = "refund_exceeds_captured"
    title = "The refund would exceed the captured amount"


class UnknownProvider(Unprocessable):
    code = "unknown_provider"
    title = "No such provider"


class PaymentMethodNotSupported(Unprocessable):
    code = "payment_method_not_supported"
    title = "The provider does not support this payment method"


class ProviderNotConfigured(Conflict):
    code = "provider_not_configured"
    title = "The store has no active configuration for a provider of this payment"


class ProviderAmbiguous(Conflict):
    code = "provider_ambiguous"
    title = "Several providers could take this payment: name one with provider_name"


class StoreRequired(Unprocessable):
    code = "store_id_required"
    title = "store_id is required"


class CustomerCodeRequired(Unprocessable):
    code = "customer_code_required"
    title = "customer_code is required to confirm a qr_cpm payment"


class ConfirmationInProgress(Conflict):
    code = "confirmation_in_progress"
    title = "The intent's provider has not answered the first confirmation yet"


class ProviderCallFailed(PaymuxError):
    status = 502
    code = "provider_error"
    title = "The provider did not answer as expected"
