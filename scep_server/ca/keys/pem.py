"""Private keys as PKCS#8 PEM: encrypted with the best available scheme when a passphrase is given."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from scep_server.ca.keys.generate import PrivateKey
from scep_server.errors import CAError


def pkcs8_pem(key: PrivateKey, passphrase: bytes | None) -> bytes:
    """``key`` as PKCS#8 PEM, encrypted when ``passphrase`` is given; an empty passphrase is refused."""
    if passphrase == b"":
        raise CAError("an empty passphrase cannot protect a key: unset it to store the key unencrypted")
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def parse_private_key(data: bytes, passphrase: bytes | None, *, source: str, hint: str) -> tuple[PrivateKey, bool]:
    """The RSA or EC key in PEM (or DER) ``data``, and whether ``data`` was encrypted.

    ``hint`` tells how to supply a missing passphrase. A passphrase given for unencrypted ``data`` is not
    needed to read it (what is stored is decided by whoever writes the key next).
    """
    password = passphrase or None
    encrypted = password is not None
    try:
        key = _load_key(data, password)
    except TypeError as exc:
        if password is None:
            raise CAError(f"the key in {source} is encrypted but no passphrase was given: {hint}") from exc
        key, encrypted = _load_key(data, None), False
    except ValueError as exc:
        raise CAError(_unreadable_key_detail(data, password, source)) from exc
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise CAError(f"the key in {source} is a {_key_kind(key)} key: a CA or RA key must be RSA or EC")
    return key, encrypted


def _load_key(data: bytes, password: bytes | None) -> object:
    if b"-----BEGIN" in data:
        return serialization.load_pem_private_key(data, password)
    return serialization.load_der_private_key(data, password)


def _unreadable_key_detail(data: bytes, password: bytes | None, source: str) -> str:
    if password is not None and b"ENCRYPTED" in data:
        return f"cannot decrypt the key in {source}: wrong passphrase"
    return f"{source} does not hold a readable PEM or DER private key"


def _key_kind(key: object) -> str:
    return type(key).__name__.removesuffix("PrivateKey").removeprefix("_") or "unknown"
