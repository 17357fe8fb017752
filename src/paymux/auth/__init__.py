"""Credentials of callers: HMAC API clients and one-time payment tokens.

Invariants: an API client's HMAC secret is stored sealed (it must be recoverable to verify signatures) and is
shown once, at creation; a payment token is stored only as its SHA-256, is bound to one payment intent, expires,
and cannot change the intent again once it has confirmed it.
"""
