from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from scep_server.ca.keys.pem import parse_private_key, pkcs8_pem
from scep_server.errors import CAError

from .support import cached_key


@pytest.mark.parametrize("passphrase", [None, b"pw"])
def test_pem_round_trip(passphrase: bytes | None) -> None:
    key = cached_key("P-256")
    pem = pkcs8_pem(key, passphrase)
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----" if passphrase else b"-----BEGIN PRIVATE KEY-----")
    parsed, encrypted = parse_private_key(pem, passphrase, source="k", hint="")
    assert encrypted is bool(passphrase)
    assert parsed.private_numbers() == key.private_numbers()


def test_empty_passphrase_is_refused() -> None:
    with pytest.raises(CAError, match="empty passphrase"):
        pkcs8_pem(cached_key("P-256"), b"")


def test_der_with_a_custom_hint() -> None:
    key = cached_key("P-256")
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")
    )
    with pytest.raises(CAError, match="give the password"):
        parse_private_key(der, None, source="the key", hint="give the password")
    parsed, encrypted = parse_private_key(der, b"pw", source="the key", hint="")
    assert encrypted and parsed.public_key() == key.public_key()


def test_a_passphrase_is_not_needed_for_a_plain_key() -> None:
    _, encrypted = parse_private_key(pkcs8_pem(cached_key("rsa"), None), b"unneeded", source="k", hint="")
    assert not encrypted


def test_wrong_passphrase_and_garbage() -> None:
    pem = pkcs8_pem(cached_key("rsa"), b"secret")
    with pytest.raises(CAError, match="wrong passphrase") as info:
        parse_private_key(pem, b"guess", source="k", hint="")
    assert "guess" not in str(info.value)
    with pytest.raises(CAError, match="readable"):
        parse_private_key(b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n", None, source="k", hint="")


def test_only_rsa_and_ec_keys() -> None:
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(CAError, match="Ed25519 key: a CA or RA key must be RSA or EC"):
        parse_private_key(pem, None, source="the key", hint="")
