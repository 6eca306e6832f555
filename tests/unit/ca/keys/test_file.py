"""The ``file`` backend: keys as PKCS#8 PEM files, encrypted at rest with the CA passphrase."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from scep_server.ca.keys import KeyBackend, KeyContext, KeySpec, as_ra_key, key_matches, open_backend
from scep_server.ca.keys.file import FileBackend, load_private_key
from scep_server.ca.keys.generate import PrivateKey
from scep_server.ca.keys.local import LocalKey
from scep_server.errors import CAError, ConfigError

from .support import KINDS, cached_key, self_signed


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def backend(directory: Path, passphrase: bytes | None = b"pw") -> KeyBackend:
    return open_backend(KeyContext(directory, passphrase), "file")


def save_private_key(path: Path, key: PrivateKey, passphrase: bytes | None) -> None:
    FileBackend(KeyContext(path.parent, passphrase)).stage(path.name, key).commit()


# --- the backend ---------------------------------------------------------------------------------


def test_file_is_the_default_backend(tmp_path: Path) -> None:
    assert isinstance(open_backend(KeyContext(tmp_path)), FileBackend)


@pytest.mark.parametrize("spec", [KeySpec("rsa", rsa_bits=2048), KeySpec("ec", curve="P-384")])
def test_a_generated_key_is_stored_encrypted_and_loads_back(tmp_path: Path, spec: KeySpec) -> None:
    keys = backend(tmp_path)
    key = keys.generate(spec)
    assert not keys.exists("ca.key")
    key.stage("ca.key").commit()
    data = (tmp_path / "ca.key").read_bytes()
    assert data.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----") and mode(tmp_path / "ca.key") == 0o600
    assert keys.exists("ca.key") and keys.describe("ca.key") == str(tmp_path / "ca.key")
    loaded = keys.load("ca.key")
    assert loaded.public_key() == key.public_key()
    signature = loaded.sign(b"data", hashes.SHA256())
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        public.verify(signature, b"data", padding.PKCS1v15(), hashes.SHA256())
    else:
        public.verify(signature, b"data", ec.ECDSA(hashes.SHA256()))


def test_the_ra_key_decrypts_after_a_round_trip(tmp_path: Path) -> None:
    keys = backend(tmp_path)
    keys.generate(KeySpec("rsa", rsa_bits=2048)).stage("ra.key").commit()
    ra = as_ra_key(keys.load("ra.key"), keys.describe("ra.key"))
    wrapped = ra.public_key().encrypt(b"content key", padding.PKCS1v15())
    assert ra.decrypt(wrapped, padding.PKCS1v15()) == b"content key"


def test_an_ec_key_is_no_ra_key(tmp_path: Path) -> None:
    keys = backend(tmp_path)
    keys.generate(KeySpec("ec")).stage("ra.key").commit()
    with pytest.raises(CAError, match=r"ra\.key is not an RSA key: SCEP clients only encrypt to RSA"):
        as_ra_key(keys.load("ra.key"), keys.describe("ra.key"))


def test_a_discarded_key_is_not_stored(tmp_path: Path) -> None:
    keys = backend(tmp_path)
    keys.generate(KeySpec("ec")).stage("ocsp.key").discard()
    assert not keys.exists("ocsp.key") and list(tmp_path.iterdir()) == []


def test_an_adopted_key_is_stored_with_the_ca_passphrase(tmp_path: Path) -> None:
    key = cached_key("P-256")
    given = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"import")
    )
    keys = backend(tmp_path, b"ca-passphrase")
    keys.adopt(given, b"import", source="the CA key", hint="").stage("ca.key").commit()
    with pytest.raises(CAError, match="wrong passphrase"):
        load_private_key(tmp_path / "ca.key", b"import")
    assert key_matches(keys.load("ca.key"), self_signed(key))


def test_adopting_needs_the_key_password(tmp_path: Path) -> None:
    given = cached_key("rsa").private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"x")
    )
    with pytest.raises(CAError, match="give the key's password"):
        backend(tmp_path).adopt(given, None, source="the CA key", hint="give the key's password")


def test_loading_a_missing_key(tmp_path: Path) -> None:
    with pytest.raises(CAError, match="does not exist"):
        backend(tmp_path).load("ca.key")


@pytest.mark.parametrize(("passphrase", "allowed", "refused"), [
    (None, False, True), (None, True, False), (b"pw", False, False), (b"pw", True, False),
])
def test_unencrypted_keys_are_refused_unless_allowed(
    tmp_path: Path, passphrase: bytes | None, allowed: bool, refused: bool
) -> None:
    keys = backend(tmp_path, passphrase)
    if refused:
        with pytest.raises(ConfigError, match="serve keeps the CA and RA keys encrypted at rest"):
            keys.check_at_rest("serve", allow_unprotected=allowed)
    else:
        keys.check_at_rest("serve", allow_unprotected=allowed)


def test_an_unencrypted_key_is_written_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="scep_server.ca.keys.file"):
        backend(tmp_path, None).generate(KeySpec("ec")).stage("ocsp.key").commit()
    assert f"{tmp_path / 'ocsp.key'} unencrypted" in caplog.text
    assert (tmp_path / "ocsp.key").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")


def test_the_passphrase_never_shows(tmp_path: Path) -> None:
    keys = backend(tmp_path, b"very-secret")
    key = keys.generate(KeySpec("ec"))
    assert "very-secret" not in repr(KeyContext(tmp_path, b"very-secret")) and "very-secret" not in repr(key)


# --- the PEM files -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("passphrase", [None, b"correct horse"])
def test_private_key_round_trip(tmp_path: Path, kind: str, passphrase: bytes | None) -> None:
    key = cached_key(kind)
    path = tmp_path / "k.key"
    save_private_key(path, key, passphrase)
    data = path.read_bytes()
    assert mode(path) == 0o600
    if passphrase:
        assert data.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    else:
        assert data.startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = load_private_key(path, passphrase)
    assert type(loaded) is type(key)
    assert loaded.private_numbers() == key.private_numbers()
    assert [p.name for p in tmp_path.iterdir()] == ["k.key"]


def test_empty_passphrase_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CAError, match="empty passphrase"):
        save_private_key(tmp_path / "k.key", cached_key("P-256"), b"")


def test_load_encrypted_key_without_passphrase_names_the_variable(tmp_path: Path) -> None:
    save_private_key(tmp_path / "k.key", cached_key("P-256"), b"secret")
    with pytest.raises(CAError, match="SCEP_CA_PASSPHRASE") as info:
        load_private_key(tmp_path / "k.key", None)
    assert "secret" not in str(info.value)


def test_finding10_passphrase_for_an_unencrypted_key_encrypts_it(tmp_path: Path) -> None:
    save_private_key(tmp_path / "k.key", cached_key("P-256"), None)
    cert = self_signed(cached_key("P-256"))
    assert key_matches(LocalKey(load_private_key(tmp_path / "k.key", b"now-set")), cert)
    assert b"ENCRYPTED" in (tmp_path / "k.key").read_bytes() and mode(tmp_path / "k.key") == 0o600
    with pytest.raises(CAError, match="SCEP_CA_PASSPHRASE"):
        load_private_key(tmp_path / "k.key", None)
    assert key_matches(LocalKey(load_private_key(tmp_path / "k.key", b"now-set")), cert)
