"""Envelope encryption for secrets at rest, and helpers for handling secrets.

Each sealed value gets its own random 256-bit data key (DEK). The value is encrypted with AES-256-GCM under the
DEK, the DEK is wrapped with AES key wrap (RFC 3394) under the key-encryption key (KEK), and both travel together:

    pmx1.<kek id>.<wrapped DEK>.<nonce>.<ciphertext and tag>     (base64url parts)

The caller names a context (for example `store_provider_config:2:paypay`) that is bound in as associated data,
so a sealed value copied onto another record does not open. The KEK comes from `PAYMUX_MASTER_KEY` (base64 of 32
bytes) or from a key file that is generated on first run; the KEK id lets a key ring open values sealed under a
retired KEK while sealing new ones under the current KEK.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

KEY_BYTES = 32
_FORMAT = "pmx1"


class CryptoError(Exception):
    pass


class MasterKeyError(CryptoError):
    pass


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class KeyEncryptionKey:
    """A 256-bit AES key that wraps data keys; its id is a fingerprint, never the key."""

    __slots__ = ("_key", "key_id")

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise MasterKeyError(f"a key-encryption key has {KEY_BYTES} bytes, not {len(key)}")
        self._key = key
        self.key_id = hashlib.sha256(b"paymux-kek-id:" + key).hexdigest()[:16]

    @classmethod
    def from_base64(cls, text: str) -> KeyEncryptionKey:
        try:
            raw = base64.b64decode(
                text.strip() + "=" * (-len(text.strip()) % 4), altchars=b"-_", validate=False
            )
        except (binascii.Error, ValueError) as exc:
            raise MasterKeyError("the master key is not valid base64") from exc
        return cls(raw)

    @classmethod
    def generate(cls) -> KeyEncryptionKey:
        return cls(secrets.token_bytes(KEY_BYTES))

    def to_base64(self) -> str:
        return base64.b64encode(self._key).decode("ascii")

    def wrap(self, data_key: bytes) -> bytes:
        return aes_key_wrap(self._key, data_key)

    def unwrap(self, wrapped: bytes) -> bytes:
        return aes_key_unwrap(self._key, wrapped)

    def __repr__(self) -> str:
        return f"KeyEncryptionKey(key_id={self.key_id!r})"


class EnvelopeCipher:
    """Seals and opens secrets; seals under the primary KEK, opens under any KEK of the ring."""

    def __init__(self, primary: KeyEncryptionKey, retired: Iterable[KeyEncryptionKey] = ()) -> None:
        self.primary = primary
        self._ring = {key.key_id: key for key in (primary, *retired)}

    def seal(self, plaintext: bytes, *, context: str) -> str:
        data_key = AESGCM.generate_key(bit_length=256)
        nonce = os.urandom(12)
        ciphertext = AESGCM(data_key).encrypt(nonce, plaintext, context.encode("utf-8"))
        wrapped = self.primary.wrap(data_key)
        return ".".join((_FORMAT, self.primary.key_id, _b64e(wrapped), _b64e(nonce), _b64e(ciphertext)))

    def open(self, sealed: str, *, context: str) -> bytes:
        parts = sealed.split(".")
        if len(parts) != 5 or parts[0] != _FORMAT:
            raise CryptoError("not a sealed value")
        _, key_id, wrapped, nonce, ciphertext = parts
        kek = self._ring.get(key_id)
        if kek is None:
            raise CryptoError(f"sealed under key {key_id}, which this key ring does not hold")
        try:
            data_key = kek.unwrap(_b64d(wrapped))
            return AESGCM(data_key).decrypt(_b64d(nonce), _b64d(ciphertext), context.encode("utf-8"))
        except (InvalidUnwrap, InvalidTag, ValueError) as exc:
            raise CryptoError("the sealed value does not open with this key and context") from exc

    def seal_json(self, value: Any, *, context: str) -> str:
        return self.seal(json.dumps(value, separators=(",", ":"), sort_keys=True).encode(), context=context)

    def open_json(self, sealed: str, *, context: str) -> Any:
        return json.loads(self.open(sealed, context=context))

    def seal_text(self, value: str, *, context: str) -> str:
        return self.seal(value.encode("utf-8"), context=context)

    def open_text(self, sealed: str, *, context: str) -> str:
        return self.open(sealed, context=context).decode("utf-8")

    def __repr__(self) -> str:
        return f"EnvelopeCipher(primary={self.primary.key_id!r}, keys={len(self._ring)})"


def load_key_encryption_key(master_key: str | None, key_file: Path) -> KeyEncryptionKey:
    """The KEK from `PAYMUX_MASTER_KEY`, else from the key file, generating the file (mode 0600) if missing."""
    if master_key:
        return KeyEncryptionKey.from_base64(master_key)
    if key_file.exists():
        return KeyEncryptionKey.from_base64(key_file.read_text(encoding="ascii"))
    key_file.parent.mkdir(parents=True, exist_ok=True)
    kek = KeyEncryptionKey.generate()
    try:
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # Another process created it first: use theirs, so both seal under one key.
        return KeyEncryptionKey.from_base64(key_file.read_text(encoding="ascii"))
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(kek.to_base64() + "\n")
    return kek


def mask_secret(value: str, visible: int = 4) -> str:
    """`sk_live_abcdef1234` -> `****1234`; short values are masked whole."""
    if len(value) <= visible * 2:
        return "*" * 8
    return "*" * 8 + value[-visible:]


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def constant_time_equals(left: str | bytes, right: str | bytes) -> bool:
    """Compare secrets in constant time; text is compared as UTF-8 (hmac.compare_digest refuses non-ASCII str)."""
    a = left.encode("utf-8", "replace") if isinstance(left, str) else left
    b = right.encode("utf-8", "replace") if isinstance(right, str) else right
    return hmac.compare_digest(a, b)
