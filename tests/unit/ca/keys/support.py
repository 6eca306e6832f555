"""Keys the key-backend tests share: generated once per kind, they are slow to make."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cache

from cryptography import x509

from scep_server.ca.keys.generate import PrivateKey, generate_private_key
from tests.support import pki

KINDS = ("rsa", "P-256", "P-384")


@cache
def cached_key(kind: str) -> PrivateKey:
    return generate_private_key("rsa", key_size=2048) if kind == "rsa" else generate_private_key("ec", curve=kind)


def self_signed(key: PrivateKey, cn: str = "test") -> x509.Certificate:
    now = datetime.now(UTC)
    return pki.self_signed(cn, key, not_before=now, not_after=now + timedelta(days=1))
