"""au PAY (KDDI / au Financial): the paymux-defined "aupay v1" protocol's signing, wire mapping, adapter and sandbox.

KDDI publishes no merchant API for au PAY; see docs/providers/aupay.md for what is paymux's and what is public.
"""
