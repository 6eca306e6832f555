"""Seed inputs of each target: the public vectors in tests/data/vectors and messages the client code builds.

Messages are built against this process's throw-away CA (see :mod:`fuzz.material`), so the seeds that
decrypt are only meaningful with the same material; :mod:`fuzz.run` keeps it in one directory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

from asn1crypto import cms as asn1_cms
from asn1crypto import ocsp as asn1_ocsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from scep_server.errors import ScepError
from scep_server.scep import cms
from scep_server.scep.envelope import encrypt
from scep_server.scep.message import IssuerAndSubject
from scep_server.scep.types import ContentCipher, KeyTransport, MessageType

from . import material, messages

VECTORS = Path(__file__).resolve().parents[1] / "tests" / "data" / "vectors"
GET_SERIAL = 0x1234


def vectors() -> list[bytes]:
    """The public SCEP samples (pkiMessages, CertReps and one bare EnvelopedData)."""
    return [path.read_bytes() for path in sorted(VECTORS.glob("*.der"))]


def content_for(kind: MessageType) -> bytes:
    """The genuine decrypted content of a request of type ``kind``."""
    ca_subject = _asn1_name(material.scep_ca().ca_cert.subject)
    if kind in (MessageType.PKCS_REQ, MessageType.RENEWAL_REQ):
        return messages.genuine_csr()
    if kind is MessageType.CERT_POLL:
        subject = _asn1_name(material.device().signer.subject)
        return bytes(IssuerAndSubject({"issuer": ca_subject, "subject": subject}).dump())
    return bytes(asn1_cms.IssuerAndSerialNumber({"issuer": ca_subject, "serial_number": GET_SERIAL}).dump())


def envelope_raw() -> list[bytes]:
    build = messages.request_with_content
    built = [build(kind, content_for(kind), ContentCipher.AES128) for kind in messages.REQUEST_KINDS]
    built += [build(MessageType.PKCS_REQ, messages.genuine_csr(), cipher) for cipher in messages.CIPHERS]
    return vectors() + built


def envelope_pkcs() -> list[bytes]:
    csr, ra_cert = messages.genuine_csr(), material.scep_ca().ra_cert
    built = [encrypt(csr, ra_cert, cipher) for cipher in messages.CIPHERS]
    built.append(encrypt(csr, ra_cert, ContentCipher.AES256, KeyTransport.RSA_OAEP))
    return built + list(_envelopes_of(vectors()))


def envelope_content() -> list[bytes]:
    kinds, ciphers = messages.REQUEST_KINDS, messages.CIPHERS
    return [
        bytes([kinds.index(kind) + len(kinds) * ciphers.index(cipher)]) + content_for(kind)
        for kind in kinds
        for cipher in (ContentCipher.AES128, ContentCipher.DES3)
    ]


def envelope_attributes() -> list[bytes]:
    now = datetime.now(UTC).replace(microsecond=0)
    times = [None, asn1_cms.Time({"utc_time": now}), asn1_cms.Time({"generalized_time": now})]
    return [messages.attribute_records(kind, time) for kind in messages.REQUEST_KINDS for time in times]


def ocsp_request() -> list[bytes]:
    ca = material.ocsp_ca()
    single = [_ocsp_single(ca.ca_cert, serial, algorithm) for serial in range(1, 7) for algorithm in _OCSP_HASHES]
    with_nonce = _ocsp_single(ca.ca_cert, 4, hashes.SHA1(), nonce=b"\x01" * 16)
    other_issuer = _ocsp_single(material.scep_ca().ca_cert, 4, hashes.SHA256())
    several = _ocsp_several([*single[:4], other_issuer], nonce=b"\x02" * 32)
    return [*single, with_nonce, other_issuer, several, _ocsp_several(single[4:8], nonce=None)]


SEEDS: dict[str, Callable[[], list[bytes]]] = {
    "envelope_raw": envelope_raw,
    "envelope_attributes": envelope_attributes,
    "envelope_pkcs": envelope_pkcs,
    "envelope_content": envelope_content,
    "ocsp_request": ocsp_request,
}


def write(target: str, directory: Path) -> int:
    """Write the seeds of ``target`` into ``directory`` (named by their SHA-1); the number written."""
    directory.mkdir(parents=True, exist_ok=True)
    seeds = SEEDS[target]()
    for seed in seeds:
        (directory / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
    return len(seeds)


def _envelopes_of(ders: Iterable[bytes]) -> Iterable[bytes]:
    """The pkcsPKIEnvelope of every vector that is a pkiMessage, and every bare EnvelopedData."""
    for der in ders:
        try:
            content = cms.parse_signed(der).content
        except ScepError:
            yield der
            continue
        if content:
            yield content


_OCSP_HASHES: tuple[hashes.HashAlgorithm, ...] = (hashes.SHA1(), hashes.SHA256())


def _ocsp_single(
    issuer: x509.Certificate, serial: int, algorithm: hashes.HashAlgorithm, nonce: bytes | None = None
) -> bytes:
    probe = ocsp.OCSPRequestBuilder().add_certificate(issuer, issuer, algorithm).build()
    builder = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
        probe.issuer_name_hash, probe.issuer_key_hash, serial, algorithm
    )
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(Encoding.DER)


def _ocsp_several(singles: list[bytes], nonce: bytes | None) -> bytes:
    cert_ids = [asn1_ocsp.OCSPRequest.load(der)["tbs_request"]["request_list"][0]["req_cert"] for der in singles]
    tbs: dict[str, object] = {"request_list": [{"req_cert": cert_id} for cert_id in cert_ids]}
    if nonce is not None:
        tbs["request_extensions"] = [{"extn_id": "nonce", "critical": False, "extn_value": nonce}]
    return bytes(asn1_ocsp.OCSPRequest({"tbs_request": tbs}).dump())


def _asn1_name(name: x509.Name) -> asn1_x509.Name:
    return asn1_x509.Name.load(name.public_bytes())
