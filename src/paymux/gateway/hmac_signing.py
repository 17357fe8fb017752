"""HMAC-SHA256 request signing of server-to-server calls (seed 003/004).

    message   = METHOD + ":" + PATH + ":" + timestamp + ":" + body
    signature = Base64(HMAC-SHA256(secret, message))
    Authorization: HMAC-SHA256 <client_id>:<timestamp>:<signature>

PATH is the request path with its query string as sent (`/v1/payment_intents?limit=2`), body the raw bytes
(empty for a GET), timestamp Unix seconds.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

SCHEME = "HMAC-SHA256"


class MalformedAuthorization(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class HmacAuthorization:
    client_id: str
    timestamp: int
    signature: str


def signing_message(method: str, path: str, timestamp: int | str, body: bytes) -> bytes:
    return f"{method.upper()}:{path}:{timestamp}:".encode() + body


def sign(secret: str, method: str, path: str, timestamp: int | str, body: bytes) -> str:
    digest = hmac.new(secret.encode("utf-8"), signing_message(method, path, timestamp, body), hashlib.sha256)
    return base64.b64encode(digest.digest()).decode("ascii")


def authorization_header(
    client_id: str, secret: str, method: str, path: str, timestamp: int, body: bytes = b""
) -> str:
    return f"{SCHEME} {client_id}:{timestamp}:{sign(secret, method, path, timestamp, body)}"


def parse_authorization(value: str) -> HmacAuthorization:
    scheme, _, credentials = value.partition(" ")
    if scheme != SCHEME or not credentials:
        raise MalformedAuthorization(f"expected '{SCHEME} <client_id>:<timestamp>:<signature>'")
    parts = credentials.strip().split(":")
    if len(parts) != 3 or not all(parts):
        raise MalformedAuthorization(f"expected '{SCHEME} <client_id>:<timestamp>:<signature>'")
    client_id, timestamp, signature = parts
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 12:
        raise MalformedAuthorization("the timestamp must be Unix seconds")
    return HmacAuthorization(client_id=client_id, timestamp=int(timestamp), signature=signature)


def verify(secret: str, method: str, path: str, auth: HmacAuthorization, body: bytes) -> bool:
    expected = sign(secret, method, path, auth.timestamp, body)
    return hmac.compare_digest(expected.encode("ascii"), auth.signature.encode("ascii", "replace"))
