"""Shared building blocks that every domain uses and that know no domain.

Invariants kept here: money is an integer in minor units with an ISO 4217 currency (`money`); time is read only
through an injected `Clock`; every error a caller sees is an RFC 9457 problem with a stable `code` (`errors`);
secrets at rest are sealed with envelope encryption (`crypto`).
"""
