"""The OCSP responder over HTTP (RFC 6960, RFC 5019): statuses, CertID hashes, nonces, errors, caching."""

from __future__ import annotations

import base64
import dataclasses
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from asn1crypto import ocsp as asn1_ocsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from scep_server.ca.authority import init_ca
from scep_server.ca.issue import thumbprints
from scep_server.ca.responder import OCSP_CERT, OCSP_KEY, DelegatedResponder, responder_policy
from scep_server.config import CAConfig, ServerConfig
from scep_server.errors import StoreUnavailable
from scep_server.pki.names import parse_name
from scep_server.runtime import build_runtime, ca_passphrase
from scep_server.service.ocsp import OcspAnswer, OcspResponder
from scep_server.service.publishing import DEFAULT_CHECK_INTERVAL
from scep_server.store import NewCertificate
from scep_server.web import create_app
from scep_server.web.ocsp import decode_get_request
from tests.support.clocks import FakeClock

from .conftest import Device, ScepTestServer, make_config

OCSP_REQUEST = "application/ocsp-request"
OCSP_VALIDITY = timedelta(hours=1)  # ca.ocsp_response_validity_minutes default
PUBLIC_URL = "http://pki.example.test"
HASHES = {"sha1": hashes.SHA1(), "sha256": hashes.SHA256()}


@pytest.fixture
def cert(server: ScepTestServer) -> x509.Certificate:
    return server.enroll(Device(common_name="ocsp-device"))


@contextmanager
def running(config: ServerConfig, data_dir: Path) -> Iterator[ScepTestServer]:
    """The app of ``config`` on a fresh CA, as the ``server`` fixture builds it."""
    init_ca(config.ca_dir, config.ca, None)
    runtime = build_runtime(config)
    app = create_app(config, runtime_override=runtime, start_background=False)
    try:
        yield ScepTestServer(runtime, app.test_client(), data_dir)
    finally:
        runtime.close()


def request_for(
    cert: x509.Certificate, issuer: x509.Certificate, algorithm: str = "sha1", nonce: bytes | None = None
) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, HASHES[algorithm])
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def request_for_serial(server: ScepTestServer, serial: int, algorithm: str = "sha1") -> bytes:
    name_hash, key_hash = ca_hashes(server, algorithm)
    builder = ocsp.OCSPRequestBuilder().add_certificate_by_hash(name_hash, key_hash, serial, HASHES[algorithm])
    return builder.build().public_bytes(serialization.Encoding.DER)


def ca_hashes(server: ScepTestServer, algorithm: str) -> tuple[bytes, bytes]:
    probe = ocsp.OCSPRequestBuilder().add_certificate(server.ca.ra_cert, server.ca.ca_cert, HASHES[algorithm]).build()
    return probe.issuer_name_hash, probe.issuer_key_hash


def multi_request(parts: list[bytes], nonce: bytes | None = None) -> bytes:
    """One OCSPRequest for the CertIDs of several single requests (cryptography builds only one at a time)."""
    requests = [
        {"req_cert": asn1_ocsp.OCSPRequest.load(part)["tbs_request"]["request_list"][0]["req_cert"]} for part in parts
    ]
    tbs: dict[str, Any] = {"request_list": requests}
    if nonce is not None:
        tbs["request_extensions"] = [{"extn_id": "nonce", "critical": False, "extn_value": nonce}]
    return bytes(asn1_ocsp.OCSPRequest({"tbs_request": tbs}).dump())


def post(server: ScepTestServer, der: bytes, path: str = "/ocsp") -> tuple[ocsp.OCSPResponse, Any]:
    response = server.http.post(path, data=der, content_type=OCSP_REQUEST)
    assert response.status_code == 200 and response.mimetype == "application/ocsp-response"
    return ocsp.load_der_ocsp_response(response.data), response


def clocked_responder(server: ScepTestServer, clock: FakeClock[datetime]) -> OcspResponder:
    """The runtime's OCSP responder built again on the same CA files, store and watch, but on ``clock``."""
    runtime, config = server.runtime, server.runtime.config
    policy = responder_policy(config.ca.ocsp_subject, config.ca.ocsp_validity_days)
    delegated = DelegatedResponder(config.ca_dir, runtime.ca, ca_passphrase(config), policy, now=clock)
    validity = timedelta(minutes=config.ca.ocsp_response_validity_minutes)
    return OcspResponder(runtime.ca, runtime.store, delegated, runtime.crls.watch, validity=validity, now=clock)


def ask(responder: OcspResponder, der: bytes) -> tuple[ocsp.OCSPResponse, OcspAnswer]:
    answer = responder.respond(der)
    return ocsp.load_der_ocsp_response(answer.der), answer


def check_signed_by_delegated_responder(server: ScepTestServer, answer: ocsp.OCSPResponse) -> x509.Certificate:
    """RFC 6960 §4.2.2.2: a certificate issued by the CA for OCSPSigning signed the response."""
    assert answer.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    (responder,) = answer.certificates
    responder.verify_directly_issued_by(server.ca.ca_cert)
    assert ExtendedKeyUsageOID.OCSP_SIGNING in responder.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert responder.extensions.get_extension_for_class(x509.OCSPNoCheck)
    assert answer.responder_key_hash == x509.SubjectKeyIdentifier.from_public_key(responder.public_key()).digest  # type: ignore[arg-type]
    public_key = responder.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey) and answer.signature_hash_algorithm is not None
    public_key.verify(answer.signature, answer.tbs_response_bytes, padding.PKCS1v15(), answer.signature_hash_algorithm)
    return responder


def max_age(response: Any) -> int:
    cache_control = response.headers["Cache-Control"]
    assert cache_control.endswith(", public, no-transform, must-revalidate")
    return int(cache_control.removeprefix("max-age=").split(",")[0])


# --- statuses ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["sha1", "sha256"])
def test_good_certificate(server: ScepTestServer, cert: x509.Certificate, algorithm: str) -> None:
    answer, response = post(server, request_for(cert, server.ca.ca_cert, algorithm))
    responder = check_signed_by_delegated_responder(server, answer)
    assert responder.subject == parse_name(server.runtime.config.ca.ocsp_subject)
    assert answer.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert answer.serial_number == cert.serial_number and answer.hash_algorithm.name == algorithm
    assert answer.next_update_utc is not None
    assert answer.next_update_utc - answer.this_update_utc == OCSP_VALIDITY
    assert OCSP_VALIDITY.total_seconds() - 5 <= max_age(response) <= OCSP_VALIDITY.total_seconds()
    assert response.expires == answer.next_update_utc and response.last_modified == answer.produced_at_utc
    assert len(answer.extensions) == 0  # no nonce asked, none sent


def test_revocation_shows_at_once_even_when_the_good_answer_was_cached(
    server: ScepTestServer, cert: x509.Certificate
) -> None:
    der = request_for(cert, server.ca.ca_cert)
    first, _ = post(server, der)
    second, _ = post(server, der)
    assert second.public_bytes(serialization.Encoding.DER) == first.public_bytes(serialization.Encoding.DER)
    revoked_at = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    server.runtime.revocations.revoke(cert.serial_number, reason="keyCompromise", revoked_at=revoked_at)
    answer, _ = post(server, der)
    assert answer.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert answer.revocation_time_utc == revoked_at
    assert answer.revocation_reason is x509.ReasonFlags.key_compromise


def test_unspecified_reason_is_left_out(server: ScepTestServer, cert: x509.Certificate) -> None:
    server.runtime.revocations.revoke(cert.serial_number, reason="unspecified")
    answer, _ = post(server, request_for(cert, server.ca.ca_cert, "sha256"))
    assert answer.certificate_status is ocsp.OCSPCertStatus.REVOKED and answer.revocation_reason is None


def test_unknown_serial_until_the_certificate_exists(server: ScepTestServer, cert: x509.Certificate) -> None:
    serial = x509.random_serial_number()
    der = request_for_serial(server, serial)
    answer, response = post(server, der)
    check_signed_by_delegated_responder(server, answer)
    assert answer.certificate_status is ocsp.OCSPCertStatus.UNKNOWN
    record = server.runtime.store.get_certificate(cert.serial_number)
    assert record is not None
    sha1, sha256 = thumbprints(cert)
    server.runtime.store.record_issued(
        profile="default", transaction_id=None,
        certificate=NewCertificate(
            serial=serial, issuer=server.ca.issuer_name, subject=record.subject, sans=(),
            not_before=record.not_before, not_after=record.not_after, profile="default", transaction_id=None,
            requester_ip=None, der=record.der, sha1_thumbprint=sha1, sha256_thumbprint=sha256,
        ),
    )  # fmt: skip
    assert post(server, der)[0].certificate_status is ocsp.OCSPCertStatus.GOOD  # 'unknown' was not kept


# --- nonces and several certificates -------------------------------------------------------------------


@pytest.mark.parametrize("size", [16, 32])
def test_nonce_is_echoed(server: ScepTestServer, cert: x509.Certificate, size: int) -> None:
    nonce = os.urandom(size)
    answer, _ = post(server, request_for(cert, server.ca.ca_cert, nonce=nonce))
    assert answer.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == nonce
    again, _ = post(server, request_for(cert, server.ca.ca_cert, nonce=os.urandom(size)))
    assert again.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce != nonce


def test_several_certificates_in_one_request(server: ScepTestServer, tmp_path: Path) -> None:
    good, revoked = server.enroll(Device(common_name="a")), server.enroll(Device(common_name="b"))
    server.runtime.revocations.revoke(revoked.serial_number, reason="superseded")
    stranger = init_ca(tmp_path / "stranger", CAConfig(key_type="ec"), None)
    nonce = os.urandom(16)
    der = multi_request(
        [
            request_for(good, server.ca.ca_cert, "sha1"),
            request_for(revoked, server.ca.ca_cert, "sha256"),
            request_for_serial(server, x509.random_serial_number(), "sha256"),
            request_for(stranger.ra_cert, stranger.ca_cert, "sha1"),
        ],
        nonce,
    )
    answer, response = post(server, der)
    check_signed_by_delegated_responder(server, answer)
    singles = list(answer.responses)
    assert [s.certificate_status for s in singles] == [
        ocsp.OCSPCertStatus.GOOD, ocsp.OCSPCertStatus.REVOKED, ocsp.OCSPCertStatus.UNKNOWN, ocsp.OCSPCertStatus.UNKNOWN,
    ]  # fmt: skip
    assert [s.hash_algorithm.name for s in singles] == ["sha1", "sha256", "sha256", "sha1"]
    assert singles[1].revocation_reason is x509.ReasonFlags.superseded
    assert answer.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == nonce
    assert max_age(response) > 0


# --- errors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"", b"\x30\x03\x02\x01\x01", b"garbage"])
def test_malformed_request(server: ScepTestServer, body: bytes) -> None:
    answer, response = post(server, body)
    assert answer.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    assert response.headers["Cache-Control"] == "no-store"


def test_nonce_longer_than_rfc_9654_allows_is_malformed(server: ScepTestServer, cert: x509.Certificate) -> None:
    answer, _ = post(server, request_for(cert, server.ca.ca_cert, nonce=b"n" * 129))
    assert answer.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_foreign_issuer_is_unauthorized(server: ScepTestServer, tmp_path: Path) -> None:
    stranger = init_ca(
        tmp_path / "stranger", CAConfig(key_type="ec", subject="CN=Test Issuing CA,O=scep-server tests"), None
    )
    answer, response = post(server, request_for(stranger.ra_cert, stranger.ca_cert))
    assert answer.response_status is ocsp.OCSPResponseStatus.UNAUTHORIZED
    assert response.headers["Cache-Control"] == "no-store"


def test_store_failure_answers_try_later(
    server: ScepTestServer, cert: x509.Certificate, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unavailable(*args: object, **kwargs: object) -> None:
        raise StoreUnavailable("database is locked")

    monkeypatch.setattr(server.runtime.store, "get_certificate", unavailable)
    answer, _ = post(server, request_for(cert, server.ca.ca_cert, nonce=b"n" * 16))
    assert answer.response_status is ocsp.OCSPResponseStatus.TRY_LATER


# --- GET ---------------------------------------------------------------------------------------------


def test_get_form(server: ScepTestServer, cert: x509.Certificate) -> None:
    der = request_for(cert, server.ca.ca_cert, "sha256")
    encoded = base64.b64encode(der).decode()
    for path in (quote(encoded, safe=""), encoded, base64.urlsafe_b64encode(der).decode().rstrip("=")):
        response = server.http.get(f"/ocsp/{path}")
        assert response.status_code == 200, path
        answer = ocsp.load_der_ocsp_response(response.data)
        assert answer.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert max_age(response) > 0


def test_get_form_keeps_double_slashes(server: ScepTestServer) -> None:
    """Base64 holds '//' now and then; merged into one slash the request would no longer decode."""
    for _ in range(5000):
        der = request_for_serial(server, x509.random_serial_number())
        encoded = base64.b64encode(der).decode()
        if "//" in encoded:
            break
    else:
        pytest.fail("no request with '//' in its base64 found")
    response = server.http.get(f"/ocsp/{encoded}")
    assert response.status_code == 200
    assert ocsp.load_der_ocsp_response(response.data).certificate_status is ocsp.OCSPCertStatus.UNKNOWN


def test_get_form_with_bad_base64_is_malformed(server: ScepTestServer) -> None:
    response = server.http.get("/ocsp/not*base64!")
    assert ocsp.load_der_ocsp_response(response.data).response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_get_request_decoding() -> None:
    der = bytes(range(256))
    standard = base64.b64encode(der).decode()
    assert decode_get_request(standard) == der
    assert decode_get_request(quote(standard, safe="")) == der  # encoded twice by the client, once undone
    assert decode_get_request(base64.urlsafe_b64encode(der).decode().rstrip("=")) == der
    assert decode_get_request("a b") == b"" and decode_get_request("====") == b""


# --- caching, renewal, other processes ---------------------------------------------------------------


def test_cached_response_is_reused_for_half_its_validity(server: ScepTestServer) -> None:
    clock = FakeClock(datetime.now(UTC))
    responder = clocked_responder(server, clock)
    der = request_for(server.enroll(Device()), server.ca.ca_cert)
    first, answer = ask(responder, der)
    clock.now += timedelta(minutes=29)
    same, later = ask(responder, der)
    assert same.public_bytes(serialization.Encoding.DER) == first.public_bytes(serialization.Encoding.DER)
    assert answer.max_age is not None and later.max_age == answer.max_age - 29 * 60
    clock.now += timedelta(minutes=2)
    fresh, _ = ask(responder, der)
    assert fresh.this_update_utc > first.this_update_utc


def test_responder_certificate_is_renewed_when_a_third_of_its_life_is_left(server: ScepTestServer) -> None:
    start = datetime.now(UTC)
    clock = FakeClock(start)
    responder = clocked_responder(server, clock)
    der = request_for(server.enroll(Device()), server.ca.ca_cert, nonce=b"n" * 16)
    original = check_signed_by_delegated_responder(server, ask(responder, der)[0])
    clock.now = start + timedelta(days=19)
    assert ask(responder, der)[0].certificates == [original]
    clock.now = start + timedelta(days=21)
    renewed = check_signed_by_delegated_responder(server, ask(responder, der)[0])
    assert renewed.serial_number != original.serial_number
    assert renewed.not_valid_after_utc > original.not_valid_after_utc
    ca_dir = server.data_dir / "ca"
    assert x509.load_pem_x509_certificate((ca_dir / OCSP_CERT).read_bytes()) == renewed
    assert (ca_dir / OCSP_KEY).stat().st_mode & 0o777 == 0o600


def test_revocation_by_another_process_is_noticed(
    server: ScepTestServer, cert: x509.Certificate, tmp_path: Path
) -> None:
    """Two runtimes on one SQLite file, as two gunicorn workers (or the CLI and a worker) are."""
    der = request_for(cert, server.ca.ca_cert)
    first, _ = post(server, der)
    assert first.certificate_status is ocsp.OCSPCertStatus.GOOD  # now cached
    other = build_runtime(make_config(tmp_path))
    try:
        theirs = ocsp.load_der_ocsp_response(other.ocsp.respond(der).der)
        assert theirs.certificates == first.certificates  # the responder is shared, not re-issued
        other.revocations.revoke(cert.serial_number, reason="privilegeWithdrawn")
    finally:
        other.close()
    time.sleep(DEFAULT_CHECK_INTERVAL + 0.05)
    answer, _ = post(server, der)
    assert answer.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert answer.revocation_reason is x509.ReasonFlags.privilege_withdrawn
    crl = x509.load_der_x509_crl(server.http.get("/crl/test-ca.crl").data)
    assert crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None


# --- the responder's URL in issued certificates ------------------------------------------------------


def test_certificates_name_the_responder_when_public_url_is_set(tmp_path: Path) -> None:
    """RFC 5280 §4.2.2.1: AIA id-ad-ocsp says where to ask; asking there gets the status."""
    config = dataclasses.replace(make_config(tmp_path), public_url=PUBLIC_URL)
    with running(config, tmp_path / "var") as server:
        cert = server.enroll(Device(common_name="aia-device"))
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
        urls = [d.access_location.value for d in aia if d.access_method == AuthorityInformationAccessOID.OCSP]
        assert urls == [f"{PUBLIC_URL}/ocsp"]
        answer, _ = post(server, request_for(cert, server.ca.ca_cert), urlsplit(urls[0]).path)
        check_signed_by_delegated_responder(server, answer)
        assert answer.certificate_status is ocsp.OCSPCertStatus.GOOD


def test_certificates_name_no_responder_without_public_url(server: ScepTestServer, cert: x509.Certificate) -> None:
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess)
