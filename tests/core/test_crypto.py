from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from paymux.core.crypto import (
    CryptoError,
    EnvelopeCipher,
    KeyEncryptionKey,
    MasterKeyError,
    constant_time_equals,
    load_key_encryption_key,
    mask_secret,
)


@pytest.fixture
def cipher() -> EnvelopeCipher:
    return EnvelopeCipher(KeyEncryptionKey.generate())


def test_seal_and_open_round_trip(cipher: EnvelopeCipher) -> None:
    sealed = cipher.seal(b"api_secret=s3cr3t", context="store_provider_config:2:paypay:credentials")
    assert b"s3cr3t" not in sealed.encode()
    assert cipher.open(sealed, context="store_provider_config:2:paypay:credentials") == b"api_secret=s3cr3t"


def test_every_seal_uses_a_fresh_data_key_and_nonce(cipher: EnvelopeCipher) -> None:
    first = cipher.seal(b"same", context="c")
    second = cipher.seal(b"same", context="c")
    assert first != second
    assert first.split(".")[2] != second.split(".")[2]  # wrapped data keys differ


def test_a_value_does_not_open_under_another_context(cipher: EnvelopeCipher) -> None:
    sealed = cipher.seal(b"secret", context="api_client:cli_A")
    with pytest.raises(CryptoError):
        cipher.open(sealed, context="api_client:cli_B")


@pytest.mark.parametrize("part", [2, 3, 4])
def test_tampering_with_any_part_is_detected(cipher: EnvelopeCipher, part: int) -> None:
    parts = cipher.seal(b"secret", context="c").split(".")
    raw = bytearray(base64.urlsafe_b64decode(parts[part] + "=" * (-len(parts[part]) % 4)))
    raw[0] ^= 0x01
    parts[part] = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    with pytest.raises(CryptoError):
        cipher.open(".".join(parts), context="c")


def test_another_key_cannot_open_and_names_the_missing_key(cipher: EnvelopeCipher) -> None:
    sealed = cipher.seal(b"secret", context="c")
    stranger = EnvelopeCipher(KeyEncryptionKey.generate())
    with pytest.raises(CryptoError, match="does not hold"):
        stranger.open(sealed, context="c")


def test_a_key_ring_opens_values_sealed_under_a_retired_key() -> None:
    old, new = KeyEncryptionKey.generate(), KeyEncryptionKey.generate()
    sealed_before_rotation = EnvelopeCipher(old).seal(b"secret", context="c")
    rotated = EnvelopeCipher(new, retired=[old])
    assert rotated.open(sealed_before_rotation, context="c") == b"secret"
    assert rotated.seal(b"x", context="c").split(".")[1] == new.key_id


def test_json_and_text_helpers(cipher: EnvelopeCipher) -> None:
    assert cipher.open_json(cipher.seal_json({"b": "2", "a": "1"}, context="c"), context="c") == {
        "a": "1",
        "b": "2",
    }
    assert cipher.open_text(cipher.seal_text("héllo", context="c"), context="c") == "héllo"


def test_not_a_sealed_value(cipher: EnvelopeCipher) -> None:
    with pytest.raises(CryptoError, match="not a sealed value"):
        cipher.open("plaintext", context="c")


def test_master_key_from_the_environment_value() -> None:
    raw = bytes(range(32))
    kek = load_key_encryption_key(base64.b64encode(raw).decode(), Path("/nonexistent/never/read"))
    assert kek.key_id == KeyEncryptionKey(raw).key_id


@pytest.mark.parametrize("value", ["c2hvcnQ=", "not base64 !!!"])
def test_a_master_key_that_is_not_32_bytes_is_refused(value: str) -> None:
    with pytest.raises(MasterKeyError):
        load_key_encryption_key(value, Path("/nonexistent"))


def test_key_file_is_generated_private_on_first_run_and_reused(tmp_path: Path) -> None:
    key_file = tmp_path / "var" / "master.key"
    first = load_key_encryption_key(None, key_file)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    second = load_key_encryption_key(None, key_file)
    assert first.key_id == second.key_id


def test_repr_never_shows_key_material() -> None:
    kek = KeyEncryptionKey(bytes(range(32)))
    assert kek.to_base64() not in repr(kek)
    assert kek.to_base64() not in repr(EnvelopeCipher(kek))


def test_mask_secret_keeps_only_the_last_four() -> None:
    assert mask_secret("sk_live_abcdef1234") == "********1234"
    assert mask_secret("short") == "********"


def test_constant_time_equals() -> None:
    assert constant_time_equals("abc", b"abc")
    assert not constant_time_equals("abc", "abd")
