"""The key backend registry (``scep_server.ca.keys``): backends by the configuration's ``type``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from scep_server.ca import keys
from scep_server.ca.keys import (
    KeyBackend,
    KeyContext,
    KeySpec,
    NewKey,
    Signer,
    as_ra_key,
    key_matches,
    known_types,
    open_backend,
    register,
)
from scep_server.ca.keys.local import LocalKey
from scep_server.errors import CAError, ConfigError

from .support import cached_key, self_signed


class _TokenBackend:
    """A backend a later issue might add: registered by decorator, opened by type."""

    def __init__(self, context: KeyContext) -> None:
        self.context = context

    def describe(self, name: str) -> str:
        return f"token:{name}"

    def exists(self, name: str) -> bool:
        return False

    def load(self, name: str) -> Signer:
        raise CAError(f"no {name} on the token")

    def generate(self, spec: KeySpec) -> NewKey:
        raise CAError("read-only token")

    def adopt(self, data: bytes, password: bytes | None, *, source: str, hint: str) -> NewKey:
        raise CAError("import keys with the token's tools")

    def check_at_rest(self, action: str, *, allow_unprotected: bool) -> None:
        return None


@pytest.fixture
def token_type() -> Iterator[str]:
    register("test-token")(_TokenBackend)
    try:
        yield "test-token"
    finally:
        keys._BACKENDS.pop("test-token")


def test_the_built_in_backends_are_registered() -> None:
    assert known_types() == ("file", "pkcs11")


def test_an_unknown_type_is_a_config_error_naming_the_known_types(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown CA key backend type 'hsm' \(known: file, pkcs11\)"):
        open_backend(KeyContext(tmp_path), "hsm")


def test_a_registered_backend_is_opened_by_its_type(tmp_path: Path, token_type: str) -> None:
    backend: KeyBackend = open_backend(KeyContext(tmp_path, b"pin"), token_type)
    assert isinstance(backend, _TokenBackend) and backend.context.passphrase == b"pin"
    assert backend.describe("ca.key") == "token:ca.key"
    assert known_types() == ("file", "pkcs11", "test-token")


def test_a_type_is_registered_once(token_type: str) -> None:
    with pytest.raises(ValueError, match="already registered"):
        register(token_type)(_TokenBackend)


def test_key_spec_like_follows_the_family() -> None:
    assert KeySpec.like(cached_key("P-384").public_key(), rsa_bits=2048) == KeySpec("ec", curve="secp384r1")
    assert KeySpec.like(cached_key("rsa").public_key(), rsa_bits=2048) == KeySpec("rsa", rsa_bits=2048)


def test_key_matches_compares_public_keys() -> None:
    key = LocalKey(cached_key("P-256"))
    assert key_matches(key, self_signed(cached_key("P-256")))
    assert not key_matches(key, self_signed(cached_key("rsa")))


def test_an_ra_key_is_rsa() -> None:
    assert as_ra_key(LocalKey(cached_key("rsa")), "ra.key").public_key().key_size == 2048
    with pytest.raises(CAError, match="ra.key is not an RSA key"):
        as_ra_key(LocalKey(ec.generate_private_key(ec.SECP256R1())), "ra.key")
