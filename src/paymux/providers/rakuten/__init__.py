"""Rakuten Pay (楽天ペイ オンライン決済 LITE版): auth and webhook signatures, wire mapping, adapter and sandbox.

LITE's own API covers the charges (status, capture, cancel, amount change); the QR flow (`/v1/codes`) and the
signed notifications are paymux-defined extensions in LITE's style: see docs/providers/rakuten.md.
"""
