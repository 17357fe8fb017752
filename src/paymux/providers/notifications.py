"""The signature paymux expects on provider notifications (the seed's webhook table): the provider's header carries
Base64(HMAC-SHA256(the store's webhook secret, the raw body)). Adapters verify it; sandboxes sign with it."""

from __future__ import annotations

import base64
import hashlib
import hmac

from paymux.core.crypto import constant_time_equals


def body_signature(webhook_secret: str, body: bytes) -> str:
    digest = hmac.new(webhook_secret.encode("utf-8"), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def verify_body_signature(webhook_secret: str, body: bytes, presented: str | None) -> bool:
    """Constant time; a missing or non-ASCII header simply does not match."""
    if not presented:
        return False
    return constant_time_equals(body_signature(webhook_secret, body), presented.strip())
