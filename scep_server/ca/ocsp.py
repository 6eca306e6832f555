"""OCSP messages (RFC 6960): reading requests, recognising the CA's CertIDs, signing responses. No I/O.

Requests are read with asn1crypto because cryptography's ``load_der_ocsp_request`` refuses requests
for more than one certificate. Responses for one certificate are built with cryptography's
``OCSPResponseBuilder``; it holds a single SingleResponse only ("Only one response per OCSPResponse"
in cryptography 48), so responses for several certificates are assembled with asn1crypto and signed
over their DER ResponseData with the same keys and algorithms.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from asn1crypto import algos, core
from asn1crypto import ocsp as asn1_ocsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509 import ocsp

from scep_server.ca.keys import Signer
from scep_server.ca.responder import ResponderIdentity
from scep_server.errors import ScepServerError

# Hashes a CertID may use (RFC 6960 §4.1.1 names SHA-1; RFC 5019 §2.1.1 adds SHA-256), by asn1crypto name.
CERT_ID_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
NONCE_OID = "1.3.6.1.5.5.7.48.1.2"
MAX_NONCE_OCTETS = 128  # RFC 9654 §2.1
MAX_CERT_IDS = 20  # certificates one (unauthenticated) request may ask about: each costs a store lookup


class MalformedOcspRequest(ScepServerError):
    """The body is not an OCSPRequest this responder can read (answered ``malformedRequest``)."""


@dataclass(frozen=True, slots=True)
class CertId:
    """A CertID (RFC 6960 §4.1.1) as the client sent it; ``der`` is echoed in the response."""

    hash_name: str
    issuer_name_hash: bytes
    issuer_key_hash: bytes
    serial_number: int
    der: bytes

    @property
    def algorithm(self) -> hashes.HashAlgorithm | None:
        kind = CERT_ID_HASHES.get(self.hash_name)
        return kind() if kind is not None else None


@dataclass(frozen=True, slots=True)
class OcspRequest:
    """The certificates asked about, in request order, and the nonce to echo (RFC 6960 §4.4.1)."""

    cert_ids: tuple[CertId, ...]
    nonce: bytes | None


@dataclass(frozen=True, slots=True)
class SingleAnswer:
    """The status of one certificate (RFC 6960 §4.2.1 SingleResponse)."""

    cert_id: CertId
    status: ocsp.OCSPCertStatus
    revocation_time: datetime | None = None
    revocation_reason: x509.ReasonFlags | None = None

    def __post_init__(self) -> None:
        if (self.status is ocsp.OCSPCertStatus.REVOKED) != (self.revocation_time is not None):
            raise ValueError("a revocation time goes with the revoked status, and only with it")


@dataclass(frozen=True, slots=True)
class ResponseTimes:
    """producedAt, thisUpdate and nextUpdate (RFC 6960 §4.2.1, §4.2.2.1); encoded in whole seconds."""

    produced_at: datetime
    this_update: datetime
    next_update: datetime

    def __post_init__(self) -> None:
        if not self.this_update < self.next_update:
            raise ValueError("nextUpdate must be after thisUpdate")


# --- requests --------------------------------------------------------------------------------------


def parse_request(der: bytes) -> OcspRequest:
    """Read an OCSPRequest (RFC 6960 §4.1.1); its optional signature is not checked (§4.1.2)."""
    try:
        request = asn1_ocsp.OCSPRequest.load(der, strict=True)
        tbs = request["tbs_request"]
        if tbs["version"].native != "v1":
            raise MalformedOcspRequest(f"unsupported OCSPRequest version {tbs['version'].native}")
        cert_ids = tuple(_cert_id(item["req_cert"]) for item in tbs["request_list"])
        nonce = _nonce(tbs["request_extensions"])
    except (ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
        raise MalformedOcspRequest(f"not a DER OCSPRequest: {exc}") from None
    if not cert_ids:
        raise MalformedOcspRequest("the request names no certificate")
    if len(cert_ids) > MAX_CERT_IDS:
        raise MalformedOcspRequest(f"the request names {len(cert_ids)} certificates; at most {MAX_CERT_IDS}")
    return OcspRequest(cert_ids, nonce)


def _cert_id(value: asn1_ocsp.CertId) -> CertId:
    hash_name = value["hash_algorithm"]["algorithm"].native
    if not isinstance(value["hash_algorithm"]["parameters"], core.Void | core.Null):
        # The parameters of the SHA family are absent or NULL (RFC 5754 §2); a CertID with others is
        # echoed as sent in a multi-certificate response, which clients could then not read.
        raise MalformedOcspRequest(f"a CertID's {hash_name} parameters are neither absent nor NULL")
    cert_id = CertId(
        hash_name=hash_name,
        issuer_name_hash=value["issuer_name_hash"].native,
        issuer_key_hash=value["issuer_key_hash"].native,
        serial_number=value["serial_number"].native,
        der=value.dump(),
    )
    if cert_id.serial_number < 0:
        raise MalformedOcspRequest("a CertID's serial number is negative (RFC 5280 §4.1.2.2)")
    algorithm = cert_id.algorithm
    if algorithm is not None and {len(cert_id.issuer_name_hash), len(cert_id.issuer_key_hash)} != {
        algorithm.digest_size
    }:
        raise MalformedOcspRequest(f"a CertID's hashes do not have the size of {hash_name}")
    return cert_id


def _nonce(extensions: asn1_ocsp.TBSRequestExtensions) -> bytes | None:
    """The Nonce ::= OCTET STRING held in the extnValue (RFC 9654 §2.1), 1 to 128 octets."""
    for extension in extensions:
        if extension["extn_id"].dotted != NONCE_OID:
            continue
        nonce = core.OctetString.load(extension["extn_value"].contents, strict=True).native
        if not 1 <= len(nonce) <= MAX_NONCE_OCTETS:
            raise MalformedOcspRequest(f"a nonce of {len(nonce)} octets (RFC 9654: 1 to {MAX_NONCE_OCTETS})")
        return bytes(nonce)
    return None


# --- the CA's identity -----------------------------------------------------------------------------


class IssuerHashes:
    """The CA's issuerNameHash and issuerKeyHash under every CertID hash (RFC 6960 §4.1.1).

    The name hash covers the DER of the CA's subject, the key hash the value of the BIT STRING
    subjectPublicKey (without tag, length and unused-bits octet).
    """

    def __init__(self, ca_cert: x509.Certificate) -> None:
        name = ca_cert.subject.public_bytes()
        key = _public_key_bits(ca_cert)
        self._by_hash = {
            hash_name: (_digest(kind(), name), _digest(kind(), key)) for hash_name, kind in CERT_ID_HASHES.items()
        }

    def issued(self, cert_id: CertId) -> bool:
        """Whether ``cert_id`` names this CA as the issuer (both hashes match)."""
        expected = self._by_hash.get(cert_id.hash_name)
        return expected == (cert_id.issuer_name_hash, cert_id.issuer_key_hash)


def _public_key_bits(cert: x509.Certificate) -> bytes:
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return bytes(asn1_x509.PublicKeyInfo.load(spki)["public_key"].contents[1:])


def _digest(algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    digest = hashes.Hash(algorithm)
    digest.update(data)
    return digest.finalize()


# --- responses -------------------------------------------------------------------------------------


def unsuccessful_response(status: ocsp.OCSPResponseStatus) -> bytes:
    """An unsigned OCSPResponse with only an error status (RFC 6960 §4.2.1)."""
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(serialization.Encoding.DER)


def signed_response(
    answers: Sequence[SingleAnswer], signer: ResponderIdentity, times: ResponseTimes, nonce: bytes | None
) -> bytes:
    """A successful BasicOCSPResponse (RFC 6960 §4.2.1) signed by the delegated responder.

    The responder is named by key hash (§4.2.2.3) and its certificate travels in ``certs``
    (§4.2.2.2); a request nonce is echoed in the responseExtensions (§4.4.1).
    """
    if not answers:
        raise ValueError("a response needs at least one SingleResponse")
    if len(answers) == 1:
        return _single_response(answers[0], signer, times, nonce)
    return _multiple_response(answers, signer, times, nonce)


def _single_response(
    answer: SingleAnswer, signer: ResponderIdentity, times: ResponseTimes, nonce: bytes | None
) -> bytes:
    """cryptography's builder; it stamps producedAt itself, from the system clock."""
    cert_id, algorithm = answer.cert_id, answer.cert_id.algorithm
    if algorithm is None:  # only CertIDs naming this CA come here alone, and those have a known hash
        raise ValueError(f"cannot answer a CertID hashed with {cert_id.hash_name}")
    builder = (
        ocsp.OCSPResponseBuilder()
        .add_response_by_hash(
            cert_id.issuer_name_hash, cert_id.issuer_key_hash, cert_id.serial_number, algorithm, answer.status,
            _whole(times.this_update), _whole(times.next_update), _whole_or_none(answer.revocation_time),
            answer.revocation_reason,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, signer.cert)
        .certificates([signer.cert])
    )  # fmt: skip
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return signer.key.sign_ocsp_response(builder).public_bytes(serialization.Encoding.DER)


def _multiple_response(
    answers: Sequence[SingleAnswer], signer: ResponderIdentity, times: ResponseTimes, nonce: bytes | None
) -> bytes:
    """asn1crypto; each CertID is echoed exactly as the request encoded it (RFC 6960 §4.2.1)."""
    data = asn1_ocsp.ResponseData(
        {
            "responder_id": asn1_ocsp.ResponderId(
                name="by_key", value=x509.SubjectKeyIdentifier.from_public_key(signer.key.public_key()).digest
            ),
            "produced_at": _whole(times.produced_at),
            "responses": [_asn1_single(answer, times) for answer in answers],
        }
    )
    if nonce is not None:
        data["response_extensions"] = [{"extn_id": "nonce", "critical": False, "extn_value": nonce}]
    tbs = data.dump()
    basic = asn1_ocsp.BasicOCSPResponse(
        {
            "tbs_response_data": data,
            "signature_algorithm": _signature_algorithm(signer.key),
            "signature": signer.key.sign(tbs),
            "certs": [asn1_x509.Certificate.load(signer.cert.public_bytes(serialization.Encoding.DER))],
        }
    )
    response = asn1_ocsp.OCSPResponse(
        {
            "response_status": "successful",
            "response_bytes": {"response_type": "basic_ocsp_response", "response": basic},
        }
    )
    return bytes(response.dump())


def _asn1_single(answer: SingleAnswer, times: ResponseTimes) -> asn1_ocsp.SingleResponse:
    return asn1_ocsp.SingleResponse(
        {
            "cert_id": asn1_ocsp.CertId.load(answer.cert_id.der),
            "cert_status": _asn1_status(answer),
            "this_update": _whole(times.this_update),
            "next_update": _whole(times.next_update),
        }
    )


def _asn1_status(answer: SingleAnswer) -> asn1_ocsp.CertStatus:
    if answer.status is ocsp.OCSPCertStatus.GOOD:
        return asn1_ocsp.CertStatus(name="good", value=asn1_ocsp.StatusGood())
    if answer.status is ocsp.OCSPCertStatus.UNKNOWN:
        return asn1_ocsp.CertStatus(name="unknown", value=asn1_ocsp.StatusUnknown())
    info = asn1_ocsp.RevokedInfo({"revocation_time": _whole_or_none(answer.revocation_time)})
    if answer.revocation_reason is not None:
        info["revocation_reason"] = _ASN1_REASONS[answer.revocation_reason]
    return asn1_ocsp.CertStatus(name="revoked", value=info)


def _whole(when: datetime) -> datetime:
    """RFC 5280 §4.1.2.5.2: GeneralizedTime values carry no fractional seconds."""
    return when.replace(microsecond=0)


def _whole_or_none(when: datetime | None) -> datetime | None:
    return None if when is None else _whole(when)


_ASN1_REASONS = {
    x509.ReasonFlags.unspecified: "unspecified",
    x509.ReasonFlags.key_compromise: "key_compromise",
    x509.ReasonFlags.ca_compromise: "ca_compromise",
    x509.ReasonFlags.affiliation_changed: "affiliation_changed",
    x509.ReasonFlags.superseded: "superseded",
    x509.ReasonFlags.cessation_of_operation: "cessation_of_operation",
    x509.ReasonFlags.certificate_hold: "certificate_hold",
    x509.ReasonFlags.remove_from_crl: "remove_from_crl",
    x509.ReasonFlags.privilege_withdrawn: "privilege_withdrawn",
    x509.ReasonFlags.aa_compromise: "aa_compromise",
}


def _signature_algorithm(key: Signer) -> algos.SignedDigestAlgorithm:
    """The algorithm :meth:`Signer.sign` uses with the key's own hash."""
    digest = key.signature_hash.name  # sha256 | sha384 | sha512
    if isinstance(key.public_key(), rsa.RSAPublicKey):
        # RFC 4055 §5: the parameters of sha*WithRSAEncryption are NULL; ECDSA's are absent (RFC 5758 §3.2).
        return algos.SignedDigestAlgorithm({"algorithm": f"{digest}_rsa", "parameters": core.Null()})
    return algos.SignedDigestAlgorithm({"algorithm": f"{digest}_ecdsa"})
