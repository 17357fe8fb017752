"""Request and notification signatures of "aupay v1", the paymux-defined au PAY protocol.

Every request to au PAY carries

    X-AuPay-Key-Id       the merchant's key id (credentials `api_key`)
    X-AuPay-Merchant-Id  the merchant id (credentials `merchant_id`)
    X-AuPay-Timestamp    Unix seconds; au PAY accepts 120 s either way
    X-AuPay-Nonce        16-64 characters [A-Za-z0-9_-], never used twice (the sandbox remembers 10 minutes)
    X-AuPay-Signature    Base64(HMAC-SHA256(api_secret, string_to_sign))

    string_to_sign = METHOD \\n path_with_query \\n timestamp \\n nonce \\n hex(SHA-256(raw body))

`path_with_query` is the path below the base URL's host, `/v1/...`, with `?query` when there is one; the body hash
is over the exact bytes sent (the hash of zero bytes when there is no body). Notifications to paymux carry
`X-AuPay-Signature` = Base64(HMAC-SHA256(webhook secret, raw body)).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from paymux.core.crypto import constant_time_equals
from paymux.providers.notifications import body_signature, verify_body_signature

KEY_ID_HEADER = "X-AuPay-Key-Id"
MERCHANT_HEADER = "X-AuPay-Merchant-Id"
TIMESTAMP_HEADER = "X-AuPay-Timestamp"
NONCE_HEADER = "X-AuPay-Nonce"
SIGNATURE_HEADER = "X-AuPay-Signature"

TIMESTAMP_TOLERANCE_SECONDS = 120
NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}")  # used with fullmatch


def body_digest(body: bytes) -> str:
    """Hex SHA-256 of the raw body; of b"" when there is none."""
    return hashlib.sha256(body).hexdigest()


def string_to_sign(*, method: str, path: str, timestamp: int | str, nonce: str, body: bytes) -> str:
    return "\n".join((method.upper(), path, str(timestamp), nonce, body_digest(body)))


def signature(
    api_secret: str, *, method: str, path: str, timestamp: int | str, nonce: str, body: bytes
) -> str:
    message = string_to_sign(method=method, path=path, timestamp=timestamp, nonce=nonce, body=body)
    digest = hmac.new(api_secret.encode("utf-8"), message.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def request_headers(
    *,
    key_id: str,
    api_secret: str,
    merchant_id: str,
    method: str,
    path: str,
    timestamp: int,
    nonce: str,
    body: bytes,
) -> dict[str, str]:
    """The five authentication headers of one request."""
    return {
        KEY_ID_HEADER: key_id,
        MERCHANT_HEADER: merchant_id,
        TIMESTAMP_HEADER: str(timestamp),
        NONCE_HEADER: nonce,
        SIGNATURE_HEADER: signature(
            api_secret, method=method, path=path, timestamp=timestamp, nonce=nonce, body=body
        ),
    }


def verify(
    api_secret: str, presented: str, *, method: str, path: str, timestamp: str, nonce: str, body: bytes
) -> bool:
    expected = signature(api_secret, method=method, path=path, timestamp=timestamp, nonce=nonce, body=body)
    return constant_time_equals(expected, presented.strip())


# `X-AuPay-Signature` on notifications: paymux's convention, Base64(HMAC-SHA256(webhook secret, raw body)).
webhook_signature = body_signature
verify_webhook = verify_body_signature
