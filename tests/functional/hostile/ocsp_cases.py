"""The OCSP table (RFC 6960 §4.1): requests the responder reads, refuses, or answers unknown."""

from __future__ import annotations

import os
from collections.abc import Callable

from asn1crypto import ocsp as asn1_ocsp
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from tests.functional.hostile.support import MALFORMED, SUCCESSFUL, UNAUTHORIZED, Case, Env, Sent, http


def _ocsp_for(env: Env, algorithm: hashes.HashAlgorithm | None = None) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(env.holder_cert, env.server.ca.ca_cert,
                                                        algorithm or hashes.SHA1())
    return builder.build().public_bytes(serialization.Encoding.DER)


def _ocsp_post(build: Callable[[Env], bytes], path: str = "/ocsp") -> Callable[[Env], Sent]:
    def send(env: Env) -> Sent:
        return Sent(env.server.http.post(path, data=build(env), content_type="application/ocsp-request"))

    return send


def _ocsp_tbs(change: Callable[[Env, asn1_ocsp.TBSRequest], None]) -> Callable[[Env], bytes]:
    def build(env: Env) -> bytes:
        request = asn1_ocsp.OCSPRequest.load(_ocsp_for(env))
        change(env, request["tbs_request"])
        return bytes(request.dump(force=True))

    return build


def _cert_id(change: Callable[[Env, asn1_ocsp.CertId], None]) -> Callable[[Env], bytes]:
    def tbs(env: Env, request: asn1_ocsp.TBSRequest) -> None:
        change(env, request["request_list"][0]["req_cert"])

    return _ocsp_tbs(tbs)


def _cert_id_field(field: str, value: object) -> Callable[[Env], bytes]:
    def change(env: Env, cert_id: asn1_ocsp.CertId) -> None:
        cert_id[field] = value

    return _cert_id(change)


def _md5_cert_id(env: Env, cert_id: asn1_ocsp.CertId) -> None:
    """Our CA's name and key hashed with MD5, which the responder does not implement."""
    ca = env.server.ca.ca_cert
    spki = ca.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    key_bits = bytes(asn1_x509.PublicKeyInfo.load(spki)["public_key"].contents[1:])
    cert_id["hash_algorithm"] = {"algorithm": "md5"}
    cert_id["issuer_name_hash"] = _md5(ca.subject.public_bytes())
    cert_id["issuer_key_hash"] = _md5(key_bits)


def _md5(data: bytes) -> bytes:
    h = hashes.Hash(hashes.MD5())
    h.update(data)
    return h.finalize()


def _cert_id_count(count: int) -> Callable[[Env], bytes]:
    def change(env: Env, request: asn1_ocsp.TBSRequest) -> None:
        one = request["request_list"][0]
        request["request_list"] = [asn1_ocsp.Request.load(one.dump()) for _ in range(count)]

    return _ocsp_tbs(change)


def _ocsp_nonce(size: int) -> Callable[[Env], bytes]:
    def change(env: Env, request: asn1_ocsp.TBSRequest) -> None:
        request["request_extensions"] = [{"extn_id": "nonce", "critical": False, "extn_value": b"n" * size}]

    return _ocsp_tbs(change)


def _ocsp_version(env: Env, request: asn1_ocsp.TBSRequest) -> None:
    request["version"] = 1


def _ocsp_serial(serial: int) -> Callable[[Env], bytes]:
    def change(env: Env, cert_id: asn1_ocsp.CertId) -> None:
        cert_id["serial_number"] = serial

    return _cert_id(change)


def _sha1_parameters_octets(env: Env) -> bytes:
    """The CertID's sha1 AlgorithmIdentifier with an empty OCTET STRING where NULL (or nothing) belongs."""
    der = _ocsp_for(env)
    with_null = bytes.fromhex("300906052b0e03021a0500")
    assert der.count(with_null) == 1
    return der.replace(with_null, bytes.fromhex("300906052b0e03021a0400"))


def _ocsp_get(encoded: Callable[[Env], str]) -> Callable[[Env], Sent]:
    return lambda env: Sent(env.server.http.get(f"/ocsp/{encoded(env)}"))


OCSP_CASES = [
    Case("OCSP random octets", _ocsp_post(lambda env: os.urandom(300)), ocsp_status=MALFORMED),
    Case("OCSP 20000 nested indefinite-length SEQUENCEs", _ocsp_post(lambda env: b"\x30\x80" * 20_000),
         ocsp_status=MALFORMED),
    Case("OCSP request truncated by one octet", _ocsp_post(lambda env: _ocsp_for(env)[:-1]), ocsp_status=MALFORMED),
    Case("OCSP request truncated to half", _ocsp_post(lambda env: _ocsp_for(env)[: len(_ocsp_for(env)) // 2]),
         ocsp_status=MALFORMED),
    Case("OCSP request with a trailing octet", _ocsp_post(lambda env: _ocsp_for(env) + b"\x00"), ocsp_status=MALFORMED),
    Case("OCSP request version v2", _ocsp_post(_ocsp_tbs(_ocsp_version)), ocsp_status=MALFORMED),
    Case("OCSP request with no CertID", _ocsp_post(_cert_id_count(0)), ocsp_status=MALFORMED),
    Case("OCSP request with 21 CertIDs", _ocsp_post(_cert_id_count(21)), ocsp_status=MALFORMED),
    Case("OCSP nonce of 0 octets", _ocsp_post(_ocsp_nonce(0)), ocsp_status=MALFORMED),
    Case("OCSP CertID hashed with MD5", _ocsp_post(_cert_id(_md5_cert_id)), ocsp_status=UNAUTHORIZED),
    Case("OCSP CertID SHA-256 with SHA-1-sized hashes",
         _ocsp_post(_cert_id_field("hash_algorithm", {"algorithm": "sha256"})), ocsp_status=MALFORMED),
    Case("OCSP CertID hash parameters an empty OCTET STRING", _ocsp_post(_sha1_parameters_octets),
         ocsp_status=MALFORMED),
    Case("OCSP CertID with a negative serial", _ocsp_post(_ocsp_serial(-5)), ocsp_status=MALFORMED),
    Case("OCSP CertID for an unknown issuer", _ocsp_post(_cert_id_field("issuer_key_hash", os.urandom(20))),
         ocsp_status=UNAUTHORIZED),
    Case("OCSP CertID for our issuer, serial 0", _ocsp_post(_ocsp_serial(0)), ocsp_status=SUCCESSFUL,
         cert_status=ocsp.OCSPCertStatus.UNKNOWN),
    Case("OCSP CertID for our issuer, a 200-bit serial", _ocsp_post(_ocsp_serial(1 << 200)), ocsp_status=SUCCESSFUL,
         cert_status=ocsp.OCSPCertStatus.UNKNOWN),
    Case("OCSP CertID for our issuer, a serial never issued", _ocsp_post(_ocsp_serial(0x5EED)), ocsp_status=SUCCESSFUL,
         cert_status=ocsp.OCSPCertStatus.UNKNOWN),
    Case("OCSP junk POSTed to /ocsp/", _ocsp_post(lambda env: b"\x30\x80\x00\x00", "/ocsp/"), ocsp_status=MALFORMED),
    Case("OCSP GET of base64 zeros", _ocsp_get(lambda env: "AAAA"), ocsp_status=MALFORMED),
    Case("OCSP GET with a percent-encoded junk path", _ocsp_get(lambda env: "%25%25%25"), ocsp_status=MALFORMED),
    Case("OCSP GET of a path longer than the body limit", _ocsp_get(lambda env: "A" * 400_000), ocsp_status=MALFORMED),
    Case("OCSP GET /ocsp without a request", http("GET", "/ocsp"), 405),
    Case("OCSP PUT", http("PUT", "/ocsp", data=b"\x30\x00"), 405),
]
