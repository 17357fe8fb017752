"""The `hmac DPAY-Auth` request signature of dpay v1 (defined by paymux, see docs/providers/dpayment.md).

    body_hash     = Base64(SHA-256(body))                     "empty" when there is no body
    content_type  = the request's raw Content-Type, or ""    when there is no body
    signature     = Base64(HMAC-SHA256(api_secret,
                        path_with_query \\n METHOD \\n nonce \\n epoch \\n content_type \\n body_hash))
    Authorization: hmac DPAY-Auth:<api_key>:<signature>:<nonce>:<epoch>:<body_hash>
    X-DPAY-MERCHANT-ID: <merchant_id>

`path_with_query` is the provider's own path (no host, no mount prefix) followed by `?query` when there is one;
`epoch` is Unix seconds; `nonce` is 8-32 letters or digits, never used twice within ten minutes. The raw body bytes
and the raw Content-Type are signed: nothing is re-serialised.

Notifications to paymux carry `X-DPayment-Signature` = Base64(HMAC-SHA256(webhook secret, raw body)), the
convention all paymux sandboxes share.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass

from paymux.core.crypto import constant_time_equals
from paymux.providers.notifications import body_signature, verify_body_signature

EMPTY = "empty"
PREFIX = "hmac DPAY-Auth:"
NONCE = re.compile(r"^[A-Za-z0-9]{8,32}$")


class MalformedDPayAuthorization(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class DPayAuthorization:
    api_key: str
    signature: str
    nonce: str
    epoch: str
    body_hash: str


def body_hash(body: bytes) -> str:
    if not body:
        return EMPTY
    return base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")


def signed_content_type(content_type: str | None, body: bytes) -> str:
    """The Content-Type as signed: the raw header value, or "" for a request without a body."""
    return (content_type or "") if body else ""


def signature(
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
    """The Authorization header value; `path` includes the query string, if any."""
    hashed = body_hash(body)
    mac = signature(
        api_secret,
        path=path,
        method=method,
        nonce=nonce,
        epoch=str(epoch),
        content_type=signed_content_type(content_type, body),
        hashed=hashed,
    )
    return f"{PREFIX}{api_key}:{mac}:{nonce}:{epoch}:{hashed}"


def parse(header: str) -> DPayAuthorization:
    if not header.startswith(PREFIX):
        raise MalformedDPayAuthorization(
            "expected 'hmac DPAY-Auth:<api_key>:<signature>:<nonce>:<epoch>:<body_hash>'"
        )
    parts = header[len(PREFIX) :].split(":")
    if len(parts) != 5 or not all(parts):
        raise MalformedDPayAuthorization("expected five ':'-separated fields after 'hmac DPAY-Auth:'")
    return DPayAuthorization(*parts)


def verify(
    api_secret: str,
    auth: DPayAuthorization,
    *,
    method: str,
    path: str,
    content_type: str | None,
    body: bytes,
) -> bool:
    """Whether `auth` signs this request: the body hash matches the body, and the signature everything."""
    hashed = body_hash(body)
    if not same(hashed, auth.body_hash):
        return False
    expected = signature(
        api_secret,
        path=path,
        method=method,
        nonce=auth.nonce,
        epoch=auth.epoch,
        content_type=signed_content_type(content_type, body),
        hashed=hashed,
    )
    return same(expected, auth.signature)


# `X-DPayment-Signature`: Base64(HMAC-SHA256(webhook secret, raw body)), paymux's convention for notifications.
notification_signature = body_signature
verify_notification = verify_body_signature


# Constant-time, and safe on non-ASCII header text.
same = constant_time_equals
