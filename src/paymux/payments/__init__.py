"""Payments: the PaymentIntent, its state machine, and the transactions (payments, captures, refunds) under it.

Invariants: only `state.transition` changes a status, and it writes the history row and the outbox event in the
same unit of work; terminal states (succeeded, failed, cancelled) are final; the refunded total never exceeds
the captured total; `merchant_ref_id` is unique per merchant; a provider is never called inside an open
transaction (the attempt is committed first, the result recorded in a second unit of work).
"""
