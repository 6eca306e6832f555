from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from scep_server.ca.keys.file import (
    PrivateKey,
    generate_private_key,
    key_matches,
    load_certificates,
    load_private_key,
    parse_private_key,
    save_certificate,
    save_certificates,
    save_private_key,
)
from scep_server.errors import CAError

_KEYS: dict[str, PrivateKey] = {}


def cached_key(kind: str) -> PrivateKey:
    if kind not in _KEYS:
        _KEYS[kind] = (
            generate_private_key("rsa", key_size=2048) if kind == "rsa" else generate_private_key("ec", curve=kind)
        )
    return _KEYS[kind]


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


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


@pytest.fixture
def umask_zero() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.parametrize(
    ("key_type", "size", "curve", "expected"),
    [
        ("rsa", 2048, "P-256", (rsa.RSAPrivateKey, 2048)),
        ("rsa", 3072, "P-256", (rsa.RSAPrivateKey, 3072)),
        ("ec", 2048, "P-256", (ec.EllipticCurvePrivateKey, 256)),
        ("ec", 2048, "P-384", (ec.EllipticCurvePrivateKey, 384)),
    ],
)
def test_generate_private_key(key_type: str, size: int, curve: str, expected: tuple[type, int]) -> None:
    key = generate_private_key(key_type, key_size=size, curve=curve)
    assert isinstance(key, expected[0])
    assert key.key_size == expected[1]


@pytest.mark.parametrize(("key_type", "curve"), [("dsa", "P-256"), ("ec", "secp256k1")])
def test_generate_private_key_rejects_unknown(key_type: str, curve: str) -> None:
    with pytest.raises(ValueError):
        generate_private_key(key_type, curve=curve)


@pytest.mark.parametrize("kind", ["rsa", "P-256", "P-384"])
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


@pytest.mark.usefixtures("umask_zero")
def test_key_file_is_0600_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    path.write_bytes(b"old")
    path.chmod(0o666)
    save_private_key(path, cached_key("P-256"), None)
    assert mode(path) == 0o600


def test_key_file_is_never_visible_with_wider_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    real_replace = os.replace

    def spy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        seen.append(mode(Path(src)))
        assert Path(src).read_bytes().startswith(b"-----BEGIN")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    save_private_key(tmp_path / "k.key", cached_key("P-256"), None)
    assert seen == [0o600]


def test_empty_passphrase_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CAError, match="empty passphrase"):
        save_private_key(tmp_path / "k.key", cached_key("P-256"), b"")


def test_load_missing_key(tmp_path: Path) -> None:
    with pytest.raises(CAError, match="does not exist"):
        load_private_key(tmp_path / "nope.key", None)


def test_load_encrypted_key_without_passphrase_names_the_variable(tmp_path: Path) -> None:
    save_private_key(tmp_path / "k.key", cached_key("P-256"), b"secret")
    with pytest.raises(CAError, match="SCEP_CA_PASSPHRASE") as info:
        load_private_key(tmp_path / "k.key", None)
    assert "secret" not in str(info.value)


def test_load_encrypted_key_with_wrong_passphrase(tmp_path: Path) -> None:
    save_private_key(tmp_path / "k.key", cached_key("rsa"), b"secret")
    with pytest.raises(CAError, match="wrong passphrase") as info:
        load_private_key(tmp_path / "k.key", b"guess")
    assert "guess" not in str(info.value)


def test_finding10_passphrase_for_an_unencrypted_key_encrypts_it(tmp_path: Path) -> None:
    save_private_key(tmp_path / "k.key", cached_key("P-256"), None)
    assert key_matches(load_private_key(tmp_path / "k.key", b"now-set"), self_signed(cached_key("P-256")))
    assert b"ENCRYPTED" in (tmp_path / "k.key").read_bytes() and mode(tmp_path / "k.key") == 0o600
    with pytest.raises(CAError, match="SCEP_CA_PASSPHRASE"):
        load_private_key(tmp_path / "k.key", None)
    assert key_matches(load_private_key(tmp_path / "k.key", b"now-set"), self_signed(cached_key("P-256")))


def test_load_garbage_key(tmp_path: Path) -> None:
    (tmp_path / "k.key").write_bytes(b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    with pytest.raises(CAError, match="readable"):
        load_private_key(tmp_path / "k.key", None)


def test_load_unsupported_key_type(tmp_path: Path) -> None:
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / "k.key").write_bytes(pem)
    with pytest.raises(CAError, match="Ed25519 key: a CA or RA key must be RSA or EC"):
        load_private_key(tmp_path / "k.key", None)


def test_parse_private_key_der_and_custom_hint() -> None:
    key = cached_key("P-256")
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    with pytest.raises(CAError, match="give the password"):
        parse_private_key(der, None, source="the key", hint="give the password")
    assert key_matches(parse_private_key(der, b"pw", source="the key", hint=""), self_signed(key))


def test_certificates_round_trip(tmp_path: Path) -> None:
    first, second = self_signed(cached_key("P-256"), "a"), self_signed(cached_key("rsa"), "b")
    save_certificate(tmp_path / "one.pem", first)
    save_certificates(tmp_path / "two.pem", [first, second])
    assert load_certificates(tmp_path / "one.pem") == [first]
    assert load_certificates(tmp_path / "two.pem") == [first, second]
    assert mode(tmp_path / "one.pem") == 0o600  # like every file under data_dir


def test_load_certificates_errors(tmp_path: Path) -> None:
    with pytest.raises(CAError, match="does not exist"):
        load_certificates(tmp_path / "missing.pem")
    (tmp_path / "bad.pem").write_bytes(b"not a certificate")
    with pytest.raises(CAError, match="readable PEM or DER certificates"):
        load_certificates(tmp_path / "bad.pem")


def test_write_failure_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "dir-in-the-way"
    target.mkdir()
    (target / "x").write_bytes(b"")
    with pytest.raises(CAError, match="cannot write"):
        save_certificate(target, self_signed(cached_key("P-256")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir-in-the-way"]
