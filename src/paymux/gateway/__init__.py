"""The edge of the API: who is calling (one `Principal` for every caller kind), how often (rate limits), and
whether this exact request was seen before (HMAC replay guard, Idempotency-Key).

Invariants: an HMAC signature is accepted once for a state-changing request, except as the retry of the same
Idempotency-Key; the same Idempotency-Key with the same request replays the first response and never repeats
the effect; a key reused with another request is refused.
"""
