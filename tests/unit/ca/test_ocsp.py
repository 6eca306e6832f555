"""OCSP messages (RFC 6960) and the delegated responder's key and certificate on disk."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import threading
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
from cryptography.x509.oid import ExtendedKeyUsageOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scep_server.ca.authority import CertificateAuthority, init_ca, key_backend
from scep_server.ca.keys import NewKey
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
    OCSP_CERT,
    OCSP_KEY,
    DelegatedResponder,
    ResponderIdentity,
    ResponderPolicy,
    issue_responder_certificate,
    new_responder_key,
    responder_policy,
)
from scep_server.config import CAConfig
from scep_server.errors import ConfigError
from scep_server.pki.names import parse_name

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CA_KINDS = {
    "rsa2048": CAConfig(key_type="rsa", key_size=2048),
    "p256": CAConfig(key_type="ec", curve="P-256"),
    "p384": CAConfig(key_type="ec", curve="P-384"),
}
POLICY = ResponderPolicy(parse_name("CN=Test OCSP Responder"), timedelta(days=30))
UNSTORED = key_backend(Path("unused"), None)  # the keys made here are never stored
TIMES = ResponseTimes(produced_at=NOW, this_update=NOW, next_update=NOW + timedelta(hours=1))
HASHES: dict[str, hashes.HashAlgorithm] = {"sha1": hashes.SHA1(), "sha256": hashes.SHA256()}


@pytest.fixture(scope="module", params=list(CA_KINDS))
def ca(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return init_ca(tmp_path_factory.mktemp("ca") / "ca", CA_KINDS[request.param], None, now=NOW)


@pytest.fixture(scope="module")
def rsa_ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return init_ca(tmp_path_factory.mktemp("ca") / "ca", CA_KINDS["rsa2048"], None, now=NOW)


def responder_key(ca: CertificateAuthority) -> NewKey:
    return new_responder_key(UNSTORED, ca)


@pytest.fixture(scope="module")
def signer(ca: CertificateAuthority) -> ResponderIdentity:
    key = responder_key(ca)
    return ResponderIdentity(issue_responder_certificate(ca, key, POLICY, NOW), key)


def leaf(ca: CertificateAuthority, serial: int | None = None, cn: str = "device") -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name.from_rfc4514_string(f"CN={cn}"))
        .issuer_name(ca.ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=30))
    )
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


def openssl_tool() -> str:
    path = shutil.which("openssl")
    if path is None:
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail("the openssl command is missing", pytrace=False)
        pytest.skip("needs the openssl command")
    return path


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
        openssl_tool(),
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


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    return tmp_path / "ca"


@pytest.fixture
def fresh_ca(ca_dir: Path) -> CertificateAuthority:
    return init_ca(ca_dir, CA_KINDS["p256"], None, now=NOW)


def test_responder_is_created_once_with_a_private_key_file(ca_dir: Path, fresh_ca: CertificateAuthority) -> None:
    clock = Clock(NOW)
    first = DelegatedResponder(ca_dir, fresh_ca, None, POLICY, now=clock).current()
    assert stat.S_IMODE((ca_dir / OCSP_KEY).stat().st_mode) == 0o600
    assert stat.S_IMODE((ca_dir / OCSP_CERT).stat().st_mode) == 0o600
    key_bytes = (ca_dir / OCSP_KEY).read_bytes()
    again = DelegatedResponder(ca_dir, fresh_ca, None, POLICY, now=clock).current()
    assert again.cert == first.cert and (ca_dir / OCSP_KEY).read_bytes() == key_bytes


def test_responder_is_renewed_and_other_processes_adopt_the_renewal(
    ca_dir: Path, fresh_ca: CertificateAuthority
) -> None:
    clock = Clock(NOW)
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
    responders = [DelegatedResponder(ca_dir, fresh_ca, None, POLICY, now=Clock(NOW)) for _ in range(6)]
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
    original = DelegatedResponder(ca_dir, fresh_ca, None, POLICY, now=Clock(NOW)).current()
    cert_pem = (ca_dir / OCSP_CERT).read_bytes()
    if damage == "mismatched pair":
        new_responder_key(key_backend(tmp_path, None), fresh_ca).stage(OCSP_KEY).commit()
        shutil.copy(tmp_path / OCSP_KEY, ca_dir / OCSP_KEY)
    elif damage == "other CA":
        stranger = init_ca(tmp_path / "stranger", CA_KINDS["p256"], None, now=NOW)
        DelegatedResponder(tmp_path / "stranger", stranger, None, POLICY, now=Clock(NOW)).current()
        shutil.copy(tmp_path / "stranger" / OCSP_KEY, ca_dir / OCSP_KEY)
        shutil.copy(tmp_path / "stranger" / OCSP_CERT, ca_dir / OCSP_CERT)
    elif damage == "garbage key":
        (ca_dir / OCSP_KEY).write_bytes(b"garbage")
    else:
        (ca_dir / OCSP_CERT).write_bytes(cert_pem + cert_pem)
    replaced = DelegatedResponder(ca_dir, fresh_ca, None, POLICY, now=Clock(NOW)).current()
    assert replaced.cert.serial_number != original.cert.serial_number
    replaced.cert.verify_directly_issued_by(fresh_ca.ca_cert)


def test_responder_key_is_encrypted_with_the_ca_passphrase(ca_dir: Path, fresh_ca: CertificateAuthority) -> None:
    created = DelegatedResponder(ca_dir, fresh_ca, b"correct horse", POLICY, now=Clock(NOW)).current()
    assert b"ENCRYPTED" in (ca_dir / OCSP_KEY).read_bytes()
    loaded = DelegatedResponder(ca_dir, fresh_ca, b"correct horse", POLICY, now=Clock(NOW)).current()
    assert loaded.cert == created.cert
