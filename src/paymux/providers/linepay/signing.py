"""LINE Pay v3 request signatures (developers-pay.line.me, "API Authentication").

    POST: X-LINE-Authorization = Base64(HMAC-SHA256(channelSecret, channelSecret + apiPath + body + nonce))
    GET:  X-LINE-Authorization = Base64(HMAC-SHA256(channelSecret, channelSecret + apiPath + query + nonce))

with X-LINE-ChannelId and X-LINE-Authorization-Nonce (a UUID) beside it; `query` is the query string without "?".
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from paymux.core.crypto import constant_time_equals


def signature(channel_secret: str, *, path: str, payload: str, nonce: str) -> str:
    """`payload` is the raw body of a POST, or the query string (without "?") of a GET."""
    message = (channel_secret + path + payload + nonce).encode("utf-8")
    return base64.b64encode(
        hmac.new(channel_secret.encode("utf-8"), message, hashlib.sha256).digest()
    ).decode()


def verify(channel_secret: str, presented: str, *, path: str, payload: str, nonce: str) -> bool:
    return constant_time_equals(signature(channel_secret, path=path, payload=payload, nonce=nonce), presented)
