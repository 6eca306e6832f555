"""The device's CSR is exactly what the emulator's validateRequest compares with the challenge."""

from __future__ import annotations

import base64
from dataclasses import replace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from scep_server.emulator import Code
from scep_server.emulator.codes import Rejection
from scep_server.emulator.csrcheck import challenge_password, check_proof_of_possession, compare, load_csr
from scep_server.pki.csr import csr_signature_valid
from scep_server.scep.types import FailInfo, PKIStatus
from scep_server.simulator.device import CertificateRequest, Enrollment, build_csr, self_signed_signer
from scep_server.simulator.matrix import ROWS, DeviceIdentity, Row


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _emulator_view(csr: x509.CertificateSigningRequest) -> x509.CertificateSigningRequest:
    """The CSR as validateRequest receives it: base64 DER, parsed by the emulator."""
    return load_csr(base64.b64encode(csr.public_bytes(serialization.Encoding.DER)).decode())


@pytest.mark.parametrize("row", [r for r in ROWS if r.key_size == 2048], ids=lambda r: r.name)
def test_csr_matches_the_challenge_of_every_row(key: rsa.RSAPrivateKey, row: Row) -> None:
    spec = row.challenge_spec(DeviceIdentity.random(), row.hashes[0])
    csr = _emulator_view(build_csr(key, CertificateRequest.from_spec(spec), "the-challenge"))
    check_proof_of_possession(csr)
    compare(csr, spec)
    assert challenge_password(csr) == "the-challenge"


def test_sha1_csr_is_signed_with_sha1_and_verifies(key: rsa.RSAPrivateKey) -> None:
    request = CertificateRequest(x509.Name.from_rfc4514_string("CN=old-windows"), hash="sha1")
    csr = build_csr(key, request, None)
    assert csr.signature_hash_algorithm is not None and csr.signature_hash_algorithm.name == "sha1"
    assert csr_signature_valid(csr)


def test_a_tampered_request_is_what_the_emulator_refuses(key: rsa.RSAPrivateKey) -> None:
    spec = Row("x").challenge_spec(DeviceIdentity.random(), "sha256")
    request = replace(CertificateRequest.from_spec(spec), extended_key_usage=("1.3.6.1.5.5.7.3.1",))
    with pytest.raises(Rejection) as refused:
        compare(_emulator_view(build_csr(key, request, "c")), spec)
    assert refused.value.code is Code.ENHANCED_KEY_USAGE_MISMATCH


def test_san_is_critical_only_without_a_subject(key: rsa.RSAPrivateKey) -> None:
    request = CertificateRequest(x509.Name([]), sans=(("dns", "pc.contoso.com"),))
    extension = build_csr(key, request, None).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert extension.critical


def test_unknown_san_type_and_hash_are_refused(key: rsa.RSAPrivateKey) -> None:
    name = x509.Name.from_rfc4514_string("CN=x")
    with pytest.raises(ValueError, match="SAN type"):
        build_csr(key, CertificateRequest(name, sans=(("ip", "10.0.0.1"),)), None)
    with pytest.raises(ValueError, match="hash"):
        build_csr(key, CertificateRequest(name, hash="md5"), None)


def test_signer_for_an_empty_subject_has_a_name(key: rsa.RSAPrivateKey) -> None:
    assert self_signed_signer(key, x509.Name([])).certificate.subject.rfc4514_string() == "CN=SCEP device"


def test_enrollment_describes_itself() -> None:
    failed = Enrollment("T", PKIStatus.FAILURE, None, FailInfo.BAD_REQUEST, "Intune refused", polls=0)
    assert failed.describe() == "FAILURE BAD_REQUEST: Intune refused"
    pending = Enrollment("T", PKIStatus.PENDING, None, None, None, polls=3, timed_out=True)
    assert pending.describe() == "PENDING after 3 polls (timed out)"
