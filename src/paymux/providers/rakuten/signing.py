"""Rakuten Pay LITE authentication and the notification signatures.

Requests (LITE's API, https://lite.checkout.rakuten.co.jp/manual/api, and its Java SDK `rpayonline-lite-java`):

    Authorization: Basic Base64("<secret key>:")          the secret key as user name, an empty password

No request is signed. The secret key also chooses the environment: `sandbox_private_...` keys talk to
`/sandbox/v1`, every other key (`live_private_...`, `test_private_...`) to `/v1`.

Notifications: LITE sends `X-Lite-Webhook-Signature: <the static signature from the dashboard>` (its SDK compares
it for equality; nothing is computed over the body). paymux verifies a signature it defines in addition:

    X-Rakuten-Signature: Base64(HMAC-SHA256(webhook secret, raw body))
"""

from __future__ import annotations

import base64
import binascii

from paymux.providers.notifications import body_signature, verify_body_signature

SANDBOX_KEY_PREFIX = "sandbox_private_"
LIVE_API_BASE = "/v1"
SANDBOX_API_BASE = "/sandbox/v1"
SIGNATURE_HEADER = "X-Rakuten-Signature"  # paymux-defined: HMAC-SHA256 over the body
LITE_SIGNATURE_HEADER = "X-Lite-Webhook-Signature"  # LITE's own: a static shared value


def api_base(secret_key: str) -> str:
    """The path prefix a secret key belongs to, as LITE's SDK chooses it."""
    return SANDBOX_API_BASE if secret_key.startswith(SANDBOX_KEY_PREFIX) else LIVE_API_BASE


def authorization(secret_key: str) -> str:
    return "Basic " + base64.b64encode(f"{secret_key}:".encode()).decode("ascii")


def parse_authorization(header: str | None) -> tuple[str, str] | None:
    """(user, password) of a Basic header; None when it is not one."""
    if not header or not header.startswith("Basic "):
        return None
    try:
        decoded = base64.b64decode(header[len("Basic ") :].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, colon, password = decoded.partition(":")
    return (user, password) if colon else None


# `X-Rakuten-Signature`: paymux's convention, Base64(HMAC-SHA256(webhook secret, raw body)).
notification_signature = body_signature
verify_notification = verify_body_signature
