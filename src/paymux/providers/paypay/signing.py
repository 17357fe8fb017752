"""PayPay's `hmac OPA-Auth` request signature (https://www.paypay.ne.jp/opa/doc/v1.0/api_authorization.html).

    body_hash     = Base64(MD5(content_type + body))          "empty" when there is no body
    content_type  = the request's Content-Type, or "empty" when there is no body
    mac           = Base64(HMAC-SHA256(api_secret, path \\n METHOD \\n nonce \\n epoch \\n content_type \\n body_hash))
    Authorization: hmac OPA-Auth:<api_key>:<mac>:<nonce>:<epoch>:<body_hash>

`path` is the URL path without host or query string; `epoch` is Unix seconds and must be within two minutes of
PayPay's clock. The raw body bytes and the raw Content-Type are hashed: nothing is re-serialised.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

from paymux.core.crypto import constant_time_equals

EMPTY = "empty"
PREFIX = "hmac OPA-Auth:"


class MalformedPayPayAuthorization(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class OpaAuthorization:
    api_key: str
    mac: str
    nonce: str
    epoch: str
    body_hash: str


def body_hash(content_type: str | None, body: bytes) -> tuple[str, str]:
    """(content type as signed, body hash); both "empty" for a request without a body."""
    if not body:
        return EMPTY, EMPTY
    content = content_type or ""
    digest = hashlib.md5(content.encode("utf-8") + body, usedforsecurity=False).digest()
    return content, base64.b64encode(digest).decode("ascii")


def mac(
    api_secret: str, *, path: str, method: str, nonce: str, epoch: str, content_type: str, hashed: str
) -> str:
    message = "\n".join((path, method.upper(), nonce, epoch, content_type, hashed))
    digest = hmac.new(api_secret.encode("utf-8"), message.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def authorization(
    api_key: str,
    api_secret: str,
    *,
    method: str,
    path: str,
    content_type: str | None,
    body: bytes,
    nonce: str,
    epoch: int | str,
) -> str:
    signed_type, hashed = body_hash(content_type, body)
    signature = mac(
        api_secret,
        path=path,
        method=method,
        nonce=nonce,
        epoch=str(epoch),
        content_type=signed_type,
        hashed=hashed,
    )
    return f"{PREFIX}{api_key}:{signature}:{nonce}:{epoch}:{hashed}"


def parse(header: str) -> OpaAuthorization:
    if not header.startswith(PREFIX):
        raise MalformedPayPayAuthorization(
            "expected 'hmac OPA-Auth:<api_key>:<mac>:<nonce>:<epoch>:<body_hash>'"
        )
    parts = header[len(PREFIX) :].split(":")
    if len(parts) != 5 or not all(parts):
        raise MalformedPayPayAuthorization("expected five ':'-separated fields after 'hmac OPA-Auth:'")
    return OpaAuthorization(*parts)


def verify(
    api_secret: str, auth: OpaAuthorization, *, method: str, path: str, content_type: str | None, body: bytes
) -> bool:
    signed_type, hashed = body_hash(content_type, body)
    if not constant_time_equals(hashed, auth.body_hash):
        return False
    expected = mac(
        api_secret,
        path=path,
        method=method,
        nonce=auth.nonce,
        epoch=auth.epoch,
        content_type=signed_type,
        hashed=hashed,
    )
    return constant_time_equals(expected, auth.mac)
