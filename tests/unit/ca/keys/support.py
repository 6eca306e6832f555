"""Keys the key-backend tests share: generated once per kind, they are slow to make."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cache

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from scep_server.ca.keys.generate import PrivateKey, generate_private_key

KINDS = ("rsa", "P-256", "P-384")


@cache
def cached_key(kind: str) -> PrivateKey:
    return generate_private_key("rsa", key_size=2048) if kind == "rsa" else generate_private_key("ec", curve=kind)


def self_signed(key: PrivateKey, cn: str = "test") -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, cn)])
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
