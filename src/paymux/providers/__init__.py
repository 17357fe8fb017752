"""Payment providers behind one adapter protocol (`base.PaymentProvider`).

Invariants: a provider module knows its wire protocol and nothing of paymux's tables; it maps every provider
status it can receive to a `ProviderPaymentStatus` and treats any other as an error, never as "pending"; an
answer whose outcome is unknown (timeout, dropped connection) is `ProviderTimeout`, which leaves the payment for a
later status check instead of guessing.
"""
