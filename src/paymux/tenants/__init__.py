"""Tenants: client partners -> merchants -> stores -> provider configs.

Invariants: ids of partners, merchants and stores are the ones the portal (the source of truth) assigns, and a
config sync never moves a merchant or store to another partner or merchant. Provider credentials are sealed
with envelope encryption and leave this package only decrypted for a provider call, or masked.
"""
