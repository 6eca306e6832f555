"""The delegated OCSP responder (scep_server/ca/responder.py): its certificate, when it is renewed, and its
key and certificate files on disk, shared by every process."""

from __future__ import annotations

import shutil
import stat
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from scep_server.ca.authority import CertificateAuthority, init_ca, key_backend
from scep_server.ca.responder import (
    OCSP_CERT,
    OCSP_KEY,
    DelegatedResponder,
    ResponderIdentity,
    ResponderPolicy,
    issue_responder_certificate,
    new_responder_key,
    responder_policy,
)
from scep_server.errors import ConfigError
from scep_server.pki.names import parse_name
from tests.support.clocks import FakeClock

from .support import NOW, OCSP_CA_KINDS, POLICY, responder_key


@pytest.fixture(scope="module", params=list(OCSP_CA_KINDS))
def ca(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return init_ca(tmp_path_factory.mktemp("ca") / "ca", OCSP_CA_KINDS[request.param], None, now=NOW)


@pytest.fixture(scope="module")
def rsa_ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return init_ca(tmp_path_factory.mktemp("ca") / "ca", OCSP_CA_KINDS["rsa2048"], None, now=NOW)


# --- the responder certificate ---------------------------------------------------------------------


def test_responder_certificate_profile(ca: CertificateAuthority) -> None:
    key = responder_key(ca)
    cert = issue_responder_certificate(ca, key, POLICY, NOW)
    assert cert.issuer == ca.ca_cert.subject and cert.subject == POLICY.subject
    assert cert.not_valid_after_utc == NOW + POLICY.validity and cert.not_valid_before_utc < NOW
    extensions = cert.extensions
    eku = extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert list(eku.value) == [ExtendedKeyUsageOID.OCSP_SIGNING]
    assert extensions.get_extension_for_class(x509.OCSPNoCheck)
    usage = extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and not usage.value.key_cert_sign
    constraints = extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and not constraints.value.ca
    aki = extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ca.ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    cert.verify_directly_issued_by(ca.ca_cert)


def test_responder_key_follows_the_ca_key_family(ca: CertificateAuthority) -> None:
    key, ca_key = responder_key(ca).public_key(), ca.ca_key.public_key()
    if isinstance(ca_key, ec.EllipticCurvePublicKey):
        assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == ca_key.curve.name
    else:
        assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 2048


def test_responder_certificate_never_outlives_the_ca(rsa_ca: CertificateAuthority) -> None:
    late = rsa_ca.ca_cert.not_valid_after_utc - timedelta(days=3)
    key = responder_key(rsa_ca)
    cert = issue_responder_certificate(rsa_ca, key, POLICY, late)
    assert cert.not_valid_after_utc == rsa_ca.ca_cert.not_valid_after_utc
    identity = ResponderIdentity(cert, key)
    # Ending with the CA, it is kept to the end: a new one could not last longer.
    assert not identity.renewal_due(rsa_ca.ca_cert, rsa_ca.ca_cert.not_valid_after_utc - timedelta(minutes=1))
    assert identity.renewal_due(rsa_ca.ca_cert, rsa_ca.ca_cert.not_valid_after_utc)


@pytest.mark.parametrize(
    ("elapsed", "due"),
    [
        (timedelta(0), False),
        (timedelta(days=19), False),
        (timedelta(days=21), True),
        (timedelta(days=31), True),
        (-timedelta(hours=2), True),
    ],
)
def test_renewal_is_due_when_a_third_of_the_life_is_left(
    rsa_ca: CertificateAuthority, elapsed: timedelta, due: bool
) -> None:
    key = responder_key(rsa_ca)
    identity = ResponderIdentity(issue_responder_certificate(rsa_ca, key, POLICY, NOW), key)
    assert identity.renewal_due(rsa_ca.ca_cert, NOW + elapsed) is due


def test_responder_policy_from_configuration() -> None:
    assert responder_policy("cn = OCSP, o = Example", 7) == ResponderPolicy(
        parse_name("CN=OCSP,O=Example"), timedelta(days=7)
    )
    with pytest.raises(ConfigError, match="ca.ocsp_subject"):
        responder_policy("not a name", 7)
    with pytest.raises(ConfigError, match="ca.ocsp_validity_days"):
        responder_policy("CN=OCSP", 0)


# --- the responder files ---------------------------------------------------------------------------


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    return tmp_path / "ca"


@pytest.fixture
def fresh_ca(ca_dir: Path) -> CertificateAuthority:
    return init_ca(ca_dir, OCSP_CA_KINDS["p256"], None, now=NOW)


def test_responder_is_created_once_with_a_private_key_file(ca_dir: Path, fresh_ca: CertificateAuthority) -> None:
    clock = FakeClock(NOW)
    first = DelegatedResponder(ca_dir, fresh_ca, None, POLICY, now=clock).current()
    assert stat.S_IMODE((ca_dir / OCSP_KEY).stat().st_mode) == 0o600
    assert stat.S_IMODE((ca_dir / OCSP_CERT).stat().st_mode) == 0o600
    key_bytes = (ca_dir / OCSP_KEY).read_bytes()
    again = DelegatedResponder(ca_dir, fresh_ca, None, POLICY, now=clock).current()
    assert again.cert == first.cert and (ca_dir / OCSP_KEY).read_bytes() == key_bytes


def test_responder_is_renewed_and_other_processes_adopt_the_renewal(
    ca_dir: Path, fresh_ca: CertificateAuthority
) -> None:
    clock = FakeClock(NOW)
    one = DelegatedResponder(ca_dir, fresh_ca, None, POLICY, now=clock)
    two = DelegatedResponder(ca_dir, fresh_ca, None, POLICY, now=clock)
    original = one.current()
    assert two.current().cert == original.cert
    clock.now = NOW + timedelta(days=19)
    assert one.current() is original
    clock.now = NOW + timedelta(days=21)
    renewed = one.current()
    assert renewed.cert.serial_number != original.cert.serial_number
    assert renewed.cert.not_valid_after_utc == clock.now + POLICY.validity
    assert two.current().cert == renewed.cert  # loaded from disk, not issued a third time
    assert stat.S_IMODE((ca_dir / OCSP_KEY).stat().st_mode) == 0o600


def test_concurrent_first_use_creates_one_responder(ca_dir: Path, fresh_ca: CertificateAuthority) -> None:
    responders = [DelegatedResponder(ca_dir, fresh_ca, None, POLICY, now=FakeClock(NOW)) for _ in range(6)]
    results: list[ResponderIdentity] = []
    threads = [threading.Thread(target=lambda r=r: results.append(r.current())) for r in responders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({identity.cert.serial_number for identity in results}) == 1


@pytest.mark.parametrize("damage", ["mismatched pair", "other CA", "garbage key", "two certificates"])
def test_unusable_responder_files_are_replaced(
    ca_dir: Path, fresh_ca: CertificateAuthority, tmp_path: Path, damage: str
) -> None:
    original = DelegatedResponder(ca_dir, fresh_ca, None, POLICY, now=FakeClock(NOW)).current()
    cert_pem = (ca_dir / OCSP_CERT).read_bytes()
    if damage == "mismatched pair":
        new_responder_key(key_backend(tmp_path, None), fresh_ca).stage(OCSP_KEY).commit()
        shutil.copy(tmp_path / OCSP_KEY, ca_dir / OCSP_KEY)
    elif damage == "other CA":
        stranger = init_ca(tmp_path / "stranger", OCSP_CA_KINDS["p256"], None, now=NOW)
        DelegatedResponder(tmp_path / "stranger", stranger, None, POLICY, now=FakeClock(NOW)).current()
        shutil.copy(tmp_path / "stranger" / OCSP_KEY, ca_dir / OCSP_KEY)
        shutil.copy(tmp_path / "stranger" / OCSP_CERT, ca_dir / OCSP_CERT)
    elif damage == "garbage key":
        (ca_dir / OCSP_KEY).write_bytes(b"garbage")
    else:
        (ca_dir / OCSP_CERT).write_bytes(cert_pem + cert_pem)
    replaced = DelegatedResponder(ca_dir, fresh_ca, None, POLICY, now=FakeClock(NOW)).current()
    assert replaced.cert.serial_number != original.cert.serial_number
    replaced.cert.verify_directly_issued_by(fresh_ca.ca_cert)


def test_responder_key_is_encrypted_with_the_ca_passphrase(ca_dir: Path, fresh_ca: CertificateAuthority) -> None:
    created = DelegatedResponder(ca_dir, fresh_ca, b"correct horse", POLICY, now=FakeClock(NOW)).current()
    assert b"ENCRYPTED" in (ca_dir / OCSP_KEY).read_bytes()
    loaded = DelegatedResponder(ca_dir, fresh_ca, b"correct horse", POLICY, now=FakeClock(NOW)).current()
    assert loaded.cert == created.cert
