"""``ca verify`` (scep_server/ca/verify.py): findings on good and broken CA directories."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from scep_server.ca.authority import (
    CA_CERT,
    CA_KEY,
    CHAIN,
    RA_CERT,
    RA_KEY,
    CertificateAuthority,
    import_ca,
    init_ca,
    load_ca,
    rotate_ra,
)
from scep_server.ca.certfiles import certificates_pem
from scep_server.ca.keys.generate import PrivateKey
from scep_server.ca.responder import OCSP_CERT, OCSP_KEY, DelegatedResponder
from scep_server.ca.verify import Finding, Level, passed, verify_authority
from scep_server.config import CAConfig, KeyType, ProfileConfig, ServerConfig
from tests.support import pki

from .support import NOW, POLICY

CA = CAConfig(key_type=KeyType.EC, curve="P-256")
PASSPHRASE = b"at rest"


def server_config(ca: CAConfig = CA, *, profile_days: int = 365, dev: bool = False) -> ServerConfig:
    return ServerConfig(ca=ca, profiles=(ProfileConfig(validity_days=profile_days),), dev=dev)


def verify(ca_dir: Path, config: ServerConfig | None = None, passphrase: bytes | None = PASSPHRASE,
           now: datetime = NOW) -> list[Finding]:
    return verify_authority(ca_dir, config or server_config(), passphrase, now=now)


def about(findings: list[Finding], subject: str) -> list[Finding]:
    return [finding for finding in findings if finding.subject == subject]


def levels(findings: list[Finding]) -> set[Level]:
    return {finding.level for finding in findings}


def only_failure(findings: list[Finding]) -> Finding:
    assert len(findings) == 1 and findings[0].level is Level.FAIL, findings
    return findings[0]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ca_dir = tmp_path_factory.mktemp("pristine") / "ca"
    init_ca(ca_dir, CA, PASSPHRASE, now=NOW)
    return ca_dir


@pytest.fixture
def ca_dir(pristine: Path, tmp_path: Path) -> Path:
    """A copy of a fresh CA directory (keys encrypted with PASSPHRASE), for a test to break."""
    return Path(shutil.copytree(pristine, tmp_path / "ca"))


@pytest.fixture(scope="module")
def foreign(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another CA, with the same names and the same passphrase."""
    ca_dir = tmp_path_factory.mktemp("foreign") / "ca"
    init_ca(ca_dir, CA, PASSPHRASE, now=NOW)
    return ca_dir


# --- a good CA -------------------------------------------------------------------------------------


def test_a_fresh_ca_is_all_ok(ca_dir: Path) -> None:
    findings = verify(ca_dir)
    assert levels(findings) == {Level.OK}
    subjects = {finding.subject for finding in findings}
    assert {"CA key", "CA certificate", "chain", "RA key", "RA certificate", "OCSP responder",
            "keys at rest"} <= subjects
    assert "belongs to the certificate" in about(findings, "RA key")[0].detail
    assert passed(findings, strict=True)


def test_a_loaded_ca_with_an_ocsp_responder(ca_dir: Path) -> None:
    ca = load_ca(ca_dir, CA, PASSPHRASE)
    DelegatedResponder(ca_dir, ca, PASSPHRASE, POLICY, now=lambda: NOW).current()
    responder = about(verify(ca_dir), "OCSP responder")
    assert levels(responder) == {Level.OK} and len(responder) == 4
    assert any("id-kp-OCSPSigning" in finding.detail for finding in responder)


def test_a_rotated_ra_is_listed_while_it_decrypts(ca_dir: Path) -> None:
    old = load_ca(ca_dir, CA, PASSPHRASE)
    rotate_ra(ca_dir, old, CA, PASSPHRASE, now=NOW)
    findings = verify(ca_dir)
    previous = about(findings, f"previous RA {old.ra_cert.serial_number:x}")
    assert levels(previous) == {Level.OK} and len(previous) == 3
    grace_end = NOW + timedelta(days=CA.ra_grace_days)
    assert f"decrypts until {grace_end:%Y-%m-%d %H:%M:%S} UTC" in previous[-1].detail
    after_grace = verify(ca_dir, now=grace_end + timedelta(seconds=1))
    assert not [finding for finding in after_grace if finding.subject.startswith("previous RA")]


# --- a directory that does not load: one failure ---------------------------------------------------


def test_a_missing_directory_is_one_failure(tmp_path: Path) -> None:
    failure = only_failure(verify(tmp_path / "nothing-here"))
    assert failure.subject == "CA directory" and "missing ca.key, ca.pem" in failure.detail


def test_a_wrong_passphrase_is_one_failure(ca_dir: Path) -> None:
    assert "wrong passphrase" in only_failure(verify(ca_dir, passphrase=b"not it")).detail


def test_another_cas_certificate_fails_the_key_check(ca_dir: Path, foreign: Path) -> None:
    shutil.copy(foreign / CA_CERT, ca_dir / CA_CERT)
    assert "does not belong to the certificate" in only_failure(verify(ca_dir)).detail


def test_an_ra_issued_by_another_ca_fails(ca_dir: Path, foreign: Path) -> None:
    for name in (RA_CERT, RA_KEY):
        shutil.copy(foreign / name, ca_dir / name)
    assert "was not issued by the CA" in only_failure(verify(ca_dir)).detail


def test_an_ra_key_of_another_ra_fails(ca_dir: Path, foreign: Path) -> None:
    shutil.copy(foreign / RA_KEY, ca_dir / RA_KEY)
    assert "does not belong to the certificate" in only_failure(verify(ca_dir)).detail


# --- the CA certificate ----------------------------------------------------------------------------


def test_an_expired_ca_fails(tmp_path: Path) -> None:
    init_ca(tmp_path / "ca", CA, None, now=NOW - timedelta(days=CA.validity_days + 1))
    findings = verify(tmp_path / "ca", server_config(dev=True), None)
    [validity] = [f for f in about(findings, "CA certificate") if f.level is Level.FAIL]
    assert validity.detail.startswith("expired on")
    assert not passed(findings)


def test_a_ca_that_ends_before_the_longest_profile_is_a_warning(tmp_path: Path) -> None:
    init_ca(tmp_path / "ca", CAConfig(key_type=KeyType.EC, validity_days=200), None, now=NOW)
    long_profile = about(verify(tmp_path / "ca", server_config(profile_days=365, dev=True), None), "CA certificate")
    assert Level.WARNING in levels(long_profile)
    assert any("certificates issued from now on end with it" in f.detail for f in long_profile)
    short_profile = about(verify(tmp_path / "ca", server_config(profile_days=30, dev=True), None), "CA certificate")
    assert levels(short_profile) == {Level.OK}
    within_90_days = verify(tmp_path / "ca", server_config(profile_days=30, dev=True), None, NOW + timedelta(days=120))
    assert Level.WARNING in levels(about(within_90_days, "CA certificate"))


@pytest.mark.parametrize(
    ("profile", "level", "says"),
    [
        ({"ca": False}, Level.FAIL, "basicConstraints cA is not TRUE"),
        ({"ca": True, "usage": pki.key_usage("digital_signature", "crl_sign")}, Level.FAIL, "lacks keyCertSign"),
        ({"ca": True, "usage": pki.key_usage("key_cert_sign")}, Level.WARNING, "lacks cRLSign"),
    ],
)
def test_a_ca_certificate_that_may_not_act_as_a_ca(
    ca_dir: Path, profile: dict[str, Any], level: Level, says: str
) -> None:
    # The same key under the same name: the RA still verifies, only the CA's extensions change.
    ca = load_ca(ca_dir, CA, PASSPHRASE)
    key = _decrypted_ca_key(ca_dir)
    reissued = pki.self_signed(ca.ca_cert.subject, key, not_before=NOW - timedelta(days=1),
                               not_after=NOW + timedelta(days=3650), **profile)
    (ca_dir / CA_CERT).write_bytes(certificates_pem([reissued]))
    findings = about(verify(ca_dir), "CA certificate")
    assert [(f.level, says in f.detail) for f in findings if f.level is not Level.OK] == [(level, True)]


def _decrypted_ca_key(ca_dir: Path) -> PrivateKey:
    key = serialization.load_pem_private_key((ca_dir / CA_KEY).read_bytes(), PASSPHRASE)
    assert isinstance(key, PrivateKey)
    return key


# --- the RA ----------------------------------------------------------------------------------------


def test_an_expired_ra_fails(tmp_path: Path) -> None:
    init_ca(tmp_path / "ca", CA, PASSPHRASE, now=NOW - timedelta(days=CA.ra_validity_days + 1))
    findings = verify(tmp_path / "ca")
    ra = about(findings, "RA certificate")
    assert [f.detail.split(" on ")[0] for f in ra if f.level is Level.FAIL] == ["expired"]
    assert levels(about(findings, "CA certificate")) == {Level.OK}


def test_an_ra_due_for_renewal_is_a_warning(ca_dir: Path) -> None:
    ra_end = load_ca(ca_dir, CA, PASSPHRASE).ra_cert.not_valid_after_utc
    findings = verify(ca_dir, now=ra_end - timedelta(days=CA.ra_renew_days - 1))
    [warning] = [f for f in findings if f.level is not Level.OK]
    assert warning.subject == "RA certificate" and "ca rotate-ra" in warning.detail
    assert passed(findings) and not passed(findings, strict=True)


def test_a_previous_ra_whose_certificate_expired_is_a_warning(tmp_path: Path) -> None:
    config = CAConfig(key_type=KeyType.EC, ra_validity_days=20, ra_grace_days=30, ra_renew_days=5)
    first = init_ca(tmp_path / "ca", config, None, now=NOW)
    rotate_ra(tmp_path / "ca", first, config, None, now=NOW + timedelta(days=15))
    findings = verify(tmp_path / "ca", server_config(config, dev=True), None, NOW + timedelta(days=25))
    [warning] = [f for f in findings if f.level is not Level.OK]
    assert warning.subject == f"previous RA {first.ra_cert.serial_number:x}"
    assert "its certificate expired" in warning.detail


# --- the chain -------------------------------------------------------------------------------------


def _hierarchy(root_days: int = 3650) -> tuple[pki.CA, pki.CA, pki.CA]:
    start = NOW - timedelta(days=30)
    root = pki.CA.root("CN=Verify Root", key=pki.shared_key(pki.KeyType.P256, 0), not_before=start,
                       not_after=NOW + timedelta(days=root_days))
    middle = root.child("CN=Verify Intermediate", key=pki.shared_key(pki.KeyType.P256, 1), not_before=start,
                        not_after=NOW + timedelta(days=3000))
    issuing = middle.child("CN=Verify Issuing CA", key=pki.shared_key(pki.KeyType.P256, 2), not_before=start,
                           not_after=NOW + timedelta(days=3000))
    return root, middle, issuing


def _import(tmp_path: Path, issuing: pki.CA, chain: list[pki.CA]) -> Path:
    import_ca(tmp_path / "ca", CA, cert_pem=issuing.cert_pem(), key_pem=pki.private_pem(issuing.key),
              key_password=None, chain_pem=b"".join(c.cert_pem() for c in chain) or None, passphrase=PASSPHRASE,
              now=NOW)
    return tmp_path / "ca"


def test_a_full_chain_is_ok(tmp_path: Path) -> None:
    root, middle, issuing = _hierarchy()
    findings = verify(_import(tmp_path, issuing, [root, middle]))
    assert levels(findings) == {Level.OK}
    assert about(findings, "chain certificate 1")[0].detail == "CN=Verify Intermediate issued CN=Verify Issuing CA"
    assert about(findings, "chain certificate 2")[0].detail == "CN=Verify Root issued CN=Verify Intermediate"
    assert "self-signed root CN=Verify Root" in about(findings, "chain")[0].detail


def test_a_chain_without_its_root_is_a_warning(tmp_path: Path) -> None:
    _, middle, issuing = _hierarchy()
    [warning] = [f for f in verify(_import(tmp_path, issuing, [middle])) if f.level is not Level.OK]
    assert warning.subject == "chain" and warning.detail.startswith("incomplete: CN=Verify Intermediate")


def test_a_subordinate_ca_without_a_chain_is_a_warning(tmp_path: Path) -> None:
    _, _, issuing = _hierarchy()
    [warning] = [f for f in verify(_import(tmp_path, issuing, [])) if f.level is not Level.OK]
    assert warning.subject == "chain" and "CN=Verify Intermediate is not in the chain file" in warning.detail


def test_an_expired_chain_certificate_fails(tmp_path: Path) -> None:
    root, middle, issuing = _hierarchy(root_days=100)
    findings = verify(_import(tmp_path, issuing, [root, middle]), now=NOW + timedelta(days=200))
    failures = [f for f in findings if f.level is Level.FAIL]
    assert [(f.subject, f.detail.split(" on ")[0]) for f in failures] == [("chain certificate 2", "expired")]


def test_a_chain_out_of_order_is_one_failure(tmp_path: Path) -> None:
    root, middle, issuing = _hierarchy()
    ca_dir = _import(tmp_path, issuing, [root, middle])
    (ca_dir / CHAIN).write_bytes(root.cert_pem() + middle.cert_pem())
    assert "chain.pem is out of order" in only_failure(verify(ca_dir)).detail


def test_an_unrelated_chain_is_one_failure(ca_dir: Path) -> None:
    (ca_dir / CHAIN).write_bytes(pki.CA.root("CN=Unrelated Root").cert_pem())
    assert "chain.pem is out of order" in only_failure(verify(ca_dir)).detail


# --- the OCSP responder ----------------------------------------------------------------------------


def _write_responder(ca_dir: Path, signer: CertificateAuthority, *, ekus: list[x509.ObjectIdentifier]) -> None:
    key = pki.shared_key(pki.KeyType.P256, 3)
    builder = pki.certificate_builder("CN=Responder", key.public_key(), signer.ca_cert.subject, ekus=ekus,
                                      not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=30))
    (ca_dir / OCSP_CERT).write_bytes(certificates_pem([signer.ca_key.sign_certificate(builder)]))
    (ca_dir / OCSP_KEY).write_bytes(pki.private_pem(key, PASSPHRASE))


def test_a_responder_without_ocsp_signing_fails(ca_dir: Path) -> None:
    _write_responder(ca_dir, load_ca(ca_dir, CA, PASSPHRASE), ekus=[ExtendedKeyUsageOID.CLIENT_AUTH])
    [failure] = [f for f in verify(ca_dir) if f.level is not Level.OK]
    assert failure.level is Level.FAIL and failure.subject == "OCSP responder"
    assert "id-kp-OCSPSigning" in failure.detail


def test_a_foreign_responder_is_a_warning_the_server_mends(ca_dir: Path, foreign: Path) -> None:
    _write_responder(ca_dir, load_ca(foreign, CA, PASSPHRASE), ekus=[ExtendedKeyUsageOID.OCSP_SIGNING])
    findings = verify(ca_dir)
    [warning] = [f for f in findings if f.level is not Level.OK]
    assert warning.level is Level.WARNING and warning.subject == "OCSP responder"
    assert "not issued by the CA" in warning.detail and "the server replaces it" in warning.detail


def test_a_responder_without_its_key_is_a_warning(ca_dir: Path) -> None:
    _write_responder(ca_dir, load_ca(ca_dir, CA, PASSPHRASE), ekus=[ExtendedKeyUsageOID.OCSP_SIGNING])
    (ca_dir / OCSP_KEY).unlink()
    [warning] = [f for f in verify(ca_dir) if f.level is not Level.OK]
    assert warning.level is Level.WARNING and "does not exist" in warning.detail


# --- keys at rest ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "level"),
    [
        (server_config(), Level.WARNING),
        (server_config(dev=True), Level.OK),
        (server_config(CAConfig(key_type=KeyType.EC, allow_unencrypted_keys=True)), Level.OK),
    ],
)
def test_unencrypted_keys(tmp_path: Path, config: ServerConfig, level: Level) -> None:
    init_ca(tmp_path / "ca", CA, None, now=NOW)
    assert about(verify(tmp_path / "ca", config, None), "keys at rest")[0].level is level


def test_passed() -> None:
    ok, warning, failure = (Finding(level, "x", "y") for level in Level)
    assert passed([ok, warning]) and not passed([ok, warning], strict=True)
    assert not passed([ok, failure]) and passed([ok], strict=True) and passed([])
