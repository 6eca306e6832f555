"""OCSP messages (RFC 6960, scep_server/ca/ocsp.py): requests parsed, issuer hashes, responses signed."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asn1crypto import algos
from asn1crypto import ocsp as asn1_ocsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scep_server.ca.authority import CertificateAuthority, init_ca
from scep_server.ca.ocsp import (
    MAX_CERT_IDS,
    CertId,
    IssuerHashes,
    MalformedOcspRequest,
    ResponseTimes,
    SingleAnswer,
    parse_request,
    signed_response,
    unsuccessful_response,
)
from scep_server.ca.responder import (
    ResponderIdentity,
    issue_responder_certificate,
)
from scep_server.config import CAConfig
from tests.support.env import require_tool
from tests.support.pki import KeyType, certificate_builder, new_key

from .support import NOW, OCSP_CA_KINDS, POLICY, responder_key

TIMES = ResponseTimes(produced_at=NOW, this_update=NOW, next_update=NOW + timedelta(hours=1))
HASHES: dict[str, hashes.HashAlgorithm] = {"sha1": hashes.SHA1(), "sha256": hashes.SHA256()}


@pytest.fixture(scope="module", params=list(OCSP_CA_KINDS))
def ca(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return init_ca(tmp_path_factory.mktemp("ca") / "ca", OCSP_CA_KINDS[request.param], None, now=NOW)


@pytest.fixture(scope="module")
def rsa_ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return init_ca(tmp_path_factory.mktemp("ca") / "ca", OCSP_CA_KINDS["rsa2048"], None, now=NOW)


@pytest.fixture(scope="module")
def signer(ca: CertificateAuthority) -> ResponderIdentity:
    key = responder_key(ca)
    return ResponderIdentity(issue_responder_certificate(ca, key, POLICY, NOW), key)


def leaf(ca: CertificateAuthority, serial: int | None = None, cn: str = "device") -> x509.Certificate:
    builder = certificate_builder(
        f"CN={cn}", new_key(KeyType.P256).public_key(), ca.ca_cert.subject, ca=None, serial=serial,
        not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=30),
    )  # fmt: skip
    return ca.ca_key.sign_certificate(builder, hashes.SHA256())


def request_der(
    cert: x509.Certificate, issuer: x509.Certificate, algorithm: str = "sha1", nonce: bytes | None = None
) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, HASHES[algorithm])
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def cert_id_of(cert: x509.Certificate, issuer: x509.Certificate, algorithm: str = "sha1") -> CertId:
    return parse_request(request_der(cert, issuer, algorithm)).cert_ids[0]


def asn1_request(cert_ids: Sequence[CertId], extensions: Sequence[dict[str, object]] = (), version: int = 0) -> bytes:
    tbs: dict[str, object] = {
        "version": version,
        "request_list": [{"req_cert": asn1_ocsp.CertId.load(cert_id.der)} for cert_id in cert_ids],
    }
    if extensions:
        tbs["request_extensions"] = list(extensions)
    return bytes(asn1_ocsp.OCSPRequest({"tbs_request": tbs}).dump())


def raw_cert_id(hash_name: str, name_hash: bytes, key_hash: bytes, serial: int) -> CertId:
    value = asn1_ocsp.CertId(
        {
            "hash_algorithm": algos.DigestAlgorithm({"algorithm": hash_name}),
            "issuer_name_hash": name_hash,
            "issuer_key_hash": key_hash,
            "serial_number": serial,
        }
    )
    return CertId(hash_name, name_hash, key_hash, serial, bytes(value.dump()))


def nonce_extension(value: bytes) -> dict[str, object]:
    return {"extn_id": "1.3.6.1.5.5.7.48.1.2", "critical": False, "extn_value": value}


def bare_nonce_request(cert_id: CertId, value: bytes) -> bytes:
    """A nonce extension whose extnValue is the raw nonce, not an OCTET STRING (as some old clients send)."""
    # asn1crypto insists on a well-formed nonce: encode under an OID of the same length, then swap it in.
    stand_in = {"extn_id": "1.3.6.1.5.5.7.48.1.99", "critical": False, "extn_value": value}
    return asn1_request([cert_id], [stand_in]).replace(b"\x30\x01\x63", b"\x30\x01\x02")


def verify_signature(response: ocsp.OCSPResponse, public_key: object) -> None:
    algorithm = response.signature_hash_algorithm
    assert algorithm is not None
    if isinstance(public_key, rsa.RSAPublicKey):
        public_key.verify(response.signature, response.tbs_response_bytes, padding.PKCS1v15(), algorithm)
    else:
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        public_key.verify(response.signature, response.tbs_response_bytes, ec.ECDSA(algorithm))


# --- requests --------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["sha1", "sha256"])
def test_parse_request_of_one_certificate(rsa_ca: CertificateAuthority, algorithm: str) -> None:
    cert = leaf(rsa_ca)
    der = request_der(cert, rsa_ca.ca_cert, algorithm)
    expected = ocsp.load_der_ocsp_request(der)
    parsed = parse_request(der)
    assert parsed.nonce is None and len(parsed.cert_ids) == 1
    cert_id = parsed.cert_ids[0]
    assert cert_id.hash_name == algorithm and cert_id.serial_number == cert.serial_number
    assert (cert_id.issuer_name_hash, cert_id.issuer_key_hash) == (expected.issuer_name_hash, expected.issuer_key_hash)
    assert isinstance(cert_id.algorithm, type(HASHES[algorithm]))


@pytest.mark.parametrize("size", [1, 16, 32, 128])
def test_parse_request_nonce(rsa_ca: CertificateAuthority, size: int) -> None:
    nonce = os.urandom(size)
    assert parse_request(request_der(leaf(rsa_ca), rsa_ca.ca_cert, nonce=nonce)).nonce == nonce


def test_parse_request_of_several_certificates_keeps_their_order(rsa_ca: CertificateAuthority) -> None:
    ids = [cert_id_of(leaf(rsa_ca), rsa_ca.ca_cert, algorithm) for algorithm in ("sha1", "sha256", "sha1")]
    parsed = parse_request(asn1_request(ids, [nonce_extension(b"n" * 16)]))
    assert parsed.cert_ids == tuple(ids) and parsed.nonce == b"n" * 16


def test_parse_request_accepts_unsupported_cert_id_hashes(rsa_ca: CertificateAuthority) -> None:
    odd = raw_cert_id("md5", b"\x01" * 16, b"\x02" * 16, 5)
    parsed = parse_request(asn1_request([odd]))
    assert parsed.cert_ids[0].algorithm is None and parsed.cert_ids[0].der == odd.der


MALFORMED = [
    "empty", "garbage", "trailing data", "truncated", "no certificates", "hash size", "empty nonce", "long nonce",
    "bare nonce", "version 2", "too many",
]  # fmt: skip


def malformed_request(ca: CertificateAuthority, case: str) -> bytes:
    good = cert_id_of(leaf(ca), ca.ca_cert)
    valid = request_der(leaf(ca), ca.ca_cert)
    cases = {
        "empty": b"",
        "garbage": b"not an OCSP request",
        "trailing data": valid + b"\x00",
        "truncated": valid[:-3],
        "no certificates": lambda: asn1_request([]),
        "hash size": lambda: asn1_request([raw_cert_id("sha256", b"\x01" * 20, b"\x02" * 20, 5)]),
        "empty nonce": lambda: asn1_request([good], [nonce_extension(b"")]),
        "long nonce": lambda: asn1_request([good], [nonce_extension(b"x" * 129)]),
        "bare nonce": lambda: bare_nonce_request(good, b"\x01\x02\x03"),
        "version 2": lambda: asn1_request([good], version=1),
        "too many": lambda: asn1_request([good] * (MAX_CERT_IDS + 1)),
    }
    value = cases[case]
    return value if isinstance(value, bytes) else value()


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_requests_are_refused(rsa_ca: CertificateAuthority, case: str) -> None:
    der = malformed_request(rsa_ca, case)
    with pytest.raises(MalformedOcspRequest):
        parse_request(der)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mangled_requests_only_ever_raise_malformed(rsa_ca: CertificateAuthority, data: st.DataObject) -> None:
    der = bytearray(asn1_request([cert_id_of(leaf(rsa_ca, serial=7), rsa_ca.ca_cert)] * 2, [nonce_extension(b"n" * 8)]))
    for _ in range(data.draw(st.integers(1, 4))):
        der[data.draw(st.integers(0, len(der) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(der)))
    try:
        parse_request(bytes(der[:cut]) + data.draw(st.binary(max_size=4)))
    except MalformedOcspRequest:
        pass


@given(st.binary(max_size=200))
def test_random_bytes_only_ever_raise_malformed(der: bytes) -> None:
    try:
        parse_request(der)
    except MalformedOcspRequest:
        pass


# --- issuer hashes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "algorithm", [hashes.SHA1(), hashes.SHA224(), hashes.SHA256(), hashes.SHA384(), hashes.SHA512()]
)
def test_issuer_hashes_match_what_clients_compute(ca: CertificateAuthority, algorithm: hashes.HashAlgorithm) -> None:
    request = ocsp.OCSPRequestBuilder().add_certificate(leaf(ca), ca.ca_cert, algorithm).build()
    cert_id = parse_request(request.public_bytes(serialization.Encoding.DER)).cert_ids[0]
    assert IssuerHashes(ca.ca_cert).issued(cert_id)


def test_issuer_hashes_refuse_other_issuers(rsa_ca: CertificateAuthority, tmp_path: Path) -> None:
    other = init_ca(tmp_path / "other", CAConfig(key_type="ec", subject=rsa_ca.issuer_name), None, now=NOW)
    ours = IssuerHashes(rsa_ca.ca_cert)
    same_name_other_key = cert_id_of(leaf(other), other.ca_cert)
    assert not ours.issued(same_name_other_key)
    good = cert_id_of(leaf(rsa_ca), rsa_ca.ca_cert)
    assert not ours.issued(raw_cert_id("md5", good.issuer_name_hash[:16], good.issuer_key_hash[:16], 5))


# --- responses -------------------------------------------------------------------------------------


def test_single_response_is_signed_by_the_delegated_responder(
    ca: CertificateAuthority, signer: ResponderIdentity
) -> None:
    cert = leaf(ca)
    cert_id = cert_id_of(cert, ca.ca_cert, "sha256")
    revoked_at = NOW - timedelta(minutes=5, microseconds=1234)
    answer = SingleAnswer(cert_id, ocsp.OCSPCertStatus.REVOKED, revoked_at, x509.ReasonFlags.key_compromise)
    response = ocsp.load_der_ocsp_response(signed_response([answer], signer, TIMES, b"nonce-0123456789"))
    assert response.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    verify_signature(response, signer.cert.public_key())
    assert response.certificates == [signer.cert]
    assert response.responder_key_hash == x509.SubjectKeyIdentifier.from_public_key(signer.key.public_key()).digest
    assert response.serial_number == cert.serial_number and isinstance(response.hash_algorithm, hashes.SHA256)
    assert (response.issuer_name_hash, response.issuer_key_hash) == (cert_id.issuer_name_hash, cert_id.issuer_key_hash)
    assert response.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert response.revocation_time_utc == revoked_at.replace(microsecond=0)
    assert response.revocation_reason is x509.ReasonFlags.key_compromise
    assert (response.this_update_utc, response.next_update_utc) == (TIMES.this_update, TIMES.next_update)
    assert response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == b"nonce-0123456789"


def test_response_for_several_certificates(ca: CertificateAuthority, signer: ResponderIdentity) -> None:
    ids = [cert_id_of(leaf(ca), ca.ca_cert, algorithm) for algorithm in ("sha1", "sha256", "sha1")]
    odd = raw_cert_id("md5", b"\x01" * 16, b"\x02" * 16, 99)
    answers = [
        SingleAnswer(ids[0], ocsp.OCSPCertStatus.GOOD),
        SingleAnswer(ids[1], ocsp.OCSPCertStatus.REVOKED, NOW - timedelta(days=1), x509.ReasonFlags.superseded),
        SingleAnswer(ids[2], ocsp.OCSPCertStatus.REVOKED, NOW - timedelta(days=2)),
        SingleAnswer(odd, ocsp.OCSPCertStatus.UNKNOWN),
    ]
    der = signed_response(answers, signer, TIMES, b"n" * 32)
    response = ocsp.load_der_ocsp_response(der)
    verify_signature(response, signer.cert.public_key())
    assert response.certificates == [signer.cert] and response.produced_at_utc == NOW
    assert response.responder_key_hash == x509.SubjectKeyIdentifier.from_public_key(signer.key.public_key()).digest
    assert response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == b"n" * 32
    singles = list(response.responses)
    assert [s.certificate_status for s in singles[:3]] == [a.status for a in answers[:3]]
    assert [s.serial_number for s in singles[:3]] == [a.cert_id.serial_number for a in answers[:3]]
    assert [s.revocation_reason for s in singles[:3]] == [None, x509.ReasonFlags.superseded, None]
    assert singles[1].revocation_time_utc == NOW - timedelta(days=1)
    assert all(s.this_update_utc == NOW and s.next_update_utc == TIMES.next_update for s in singles[:3])
    echoed = asn1_ocsp.OCSPResponse.load(der).basic_ocsp_response["tbs_response_data"]["responses"]
    assert [single["cert_id"].dump() for single in echoed] == [answer.cert_id.der for answer in answers]
    assert echoed[3]["cert_status"].name == "unknown"


def test_response_without_nonce_has_no_extensions(rsa_ca: CertificateAuthority) -> None:
    key = responder_key(rsa_ca)
    signer = ResponderIdentity(issue_responder_certificate(rsa_ca, key, POLICY, NOW), key)
    cert_id = cert_id_of(leaf(rsa_ca), rsa_ca.ca_cert)
    for answers in (
        [SingleAnswer(cert_id, ocsp.OCSPCertStatus.GOOD)],
        [SingleAnswer(cert_id, ocsp.OCSPCertStatus.GOOD)] * 2,
    ):
        assert len(ocsp.load_der_ocsp_response(signed_response(answers, signer, TIMES, None)).extensions) == 0


@pytest.mark.parametrize(
    "status",
    [
        ocsp.OCSPResponseStatus.MALFORMED_REQUEST,
        ocsp.OCSPResponseStatus.UNAUTHORIZED,
        ocsp.OCSPResponseStatus.TRY_LATER,
    ],
)
def test_unsuccessful_responses(status: ocsp.OCSPResponseStatus) -> None:
    assert ocsp.load_der_ocsp_response(unsuccessful_response(status)).response_status is status


def test_answers_and_times_are_checked(rsa_ca: CertificateAuthority) -> None:
    cert_id = cert_id_of(leaf(rsa_ca), rsa_ca.ca_cert)
    with pytest.raises(ValueError):
        SingleAnswer(cert_id, ocsp.OCSPCertStatus.REVOKED)
    with pytest.raises(ValueError):
        SingleAnswer(cert_id, ocsp.OCSPCertStatus.GOOD, NOW)
    with pytest.raises(ValueError):
        ResponseTimes(NOW, NOW, NOW)


@pytest.mark.parametrize("count", [1, 3])
def test_openssl_verifies_our_responses(ca: CertificateAuthority, tmp_path: Path, count: int) -> None:
    now = datetime.now(UTC)  # openssl checks the responder certificate at the real time
    key = responder_key(ca)
    signer = ResponderIdentity(issue_responder_certificate(ca, key, POLICY, now), key)
    times = ResponseTimes(now, now, now + timedelta(hours=1))
    certs = [leaf(ca) for _ in range(count)]
    answers = [SingleAnswer(cert_id_of(cert, ca.ca_cert), ocsp.OCSPCertStatus.GOOD) for cert in certs]
    (tmp_path / "resp.der").write_bytes(signed_response(answers, signer, times, None))
    (tmp_path / "ca.pem").write_bytes(ca.ca_cert.public_bytes(serialization.Encoding.PEM))
    args = ["-issuer", tmp_path / "ca.pem"]
    for index, cert in enumerate(certs):
        (tmp_path / f"{index}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        args += ["-cert", tmp_path / f"{index}.pem"]
    command = [
        require_tool("openssl"),
        "ocsp",
        *args,
        "-no_nonce",
        "-respin",
        tmp_path / "resp.der",
        "-CAfile",
        tmp_path / "ca.pem",
    ]
    done = subprocess.run([str(part) for part in command], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "Response verify OK" in done.stderr, done.stdout + done.stderr
    assert done.stdout.count(": good") == count
