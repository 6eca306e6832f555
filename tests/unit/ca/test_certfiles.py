from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from scep_server.ca import certfiles
from scep_server.ca.certfiles import (
    load_certificates,
    load_single_certificate,
    replace_pair,
    save_certificate,
    save_certificates,
)
from scep_server.ca.keys import KeyContext, KeySpec, Signer, key_matches, open_backend
from scep_server.errors import CAError
from scep_server.files import StagedFile
from tests.support.pki import certificate_builder

from .keys.support import cached_key, self_signed


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _builder_for(key: Signer) -> x509.CertificateBuilder:
    now = datetime.now(UTC)
    validity = {"not_before": now, "not_after": now + timedelta(days=1)}
    return certificate_builder("responder", key.public_key(), ca=None, **validity)


def test_certificates_round_trip(tmp_path: Path) -> None:
    first, second = self_signed(cached_key("P-256"), "a"), self_signed(cached_key("rsa"), "b")
    save_certificate(tmp_path / "one.pem", first)
    save_certificates(tmp_path / "two.pem", [first, second])
    assert load_certificates(tmp_path / "one.pem") == [first]
    assert load_certificates(tmp_path / "two.pem") == [first, second]
    assert load_single_certificate(tmp_path / "one.pem") == first
    assert mode(tmp_path / "one.pem") == 0o600  # like every file under data_dir
    with pytest.raises(CAError, match="must hold exactly one certificate, not 2"):
        load_single_certificate(tmp_path / "two.pem")


def test_load_certificates_errors(tmp_path: Path) -> None:
    with pytest.raises(CAError, match="does not exist"):
        load_certificates(tmp_path / "missing.pem")
    (tmp_path / "bad.pem").write_bytes(b"not a certificate")
    with pytest.raises(CAError, match="readable PEM or DER certificates"):
        load_certificates(tmp_path / "bad.pem")


def test_replace_pair_puts_key_and_certificate_in_place(tmp_path: Path) -> None:
    keys = open_backend(KeyContext(tmp_path, b"pw"))
    key = keys.generate(KeySpec("ec"))
    cert = key.sign_certificate(_builder_for(key))
    replace_pair(key, "ocsp.key", tmp_path / "ocsp.pem", cert)
    assert key_matches(keys.load("ocsp.key"), load_single_certificate(tmp_path / "ocsp.pem"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ocsp.key", "ocsp.pem"]


def test_a_failed_certificate_write_leaves_the_old_pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = open_backend(KeyContext(tmp_path, None))
    old = keys.generate(KeySpec("ec"))
    replace_pair(old, "ocsp.key", tmp_path / "ocsp.pem", old.sign_certificate(_builder_for(old)))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def disk_full(path: Path, data: bytes, file_mode: int) -> StagedFile:
        raise CAError("disk full")

    monkeypatch.setattr(certfiles, "stage", disk_full)
    new = keys.generate(KeySpec("ec"))
    with pytest.raises(CAError, match="disk full"):
        replace_pair(new, "ocsp.key", tmp_path / "ocsp.pem", new.sign_certificate(_builder_for(new)))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
