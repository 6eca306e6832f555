"""Signing cryptography's builders with a key that cryptography does not hold, such as a token's.

pyca/cryptography signs a ``CertificateBuilder``, ``CertificateRevocationListBuilder`` or
``OCSPResponseBuilder`` only with a private key object of its own. So the builder signs with a stand-in
key of the same family (RSA or EC) first: the signature AlgorithmIdentifier it writes, inside the
to-be-signed part and outside it (sha256WithRSAEncryption, ecdsa-with-SHA384, ...), names the family
and the hash and never the key, so the to-be-signed bytes of that draft are exactly what the real key
has to sign. The real key signs them, asn1crypto assembles the structure again around the same
to-be-signed part with the real signature, and cryptography parses the result. An OCSP response
builder also checks that its responder certificate certifies the key it signs with, so its draft
names a stand-in certificate and asn1crypto puts the real ResponderID back before the real signing.
The stand-in keys are made once per process, and nothing they sign leaves this module.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache, lru_cache
from typing import Protocol

from asn1crypto import core as asn1_core
from asn1crypto import crl as asn1_crl
from asn1crypto import ocsp as asn1_ocsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import ocsp

from scep_server.ca.keys import PublicKey, SigningHash
from scep_server.ca.keys.generate import PrivateKey

_DER = serialization.Encoding.DER
_STAND_IN_FROM, _STAND_IN_UNTIL = datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)


class RawSigner(Protocol):
    """What signs the to-be-signed bytes: PKCS#1 v1.5 for RSA, a DER ECDSA-Sig-Value for EC."""

    def public_key(self) -> PublicKey: ...

    def sign(self, data: bytes, algorithm: hashes.HashAlgorithm | None = None) -> bytes: ...


def sign_certificate(
    builder: x509.CertificateBuilder, signer: RawSigner, algorithm: SigningHash
) -> x509.Certificate:
    """``builder``'s certificate, signed by ``signer`` with ``algorithm``."""
    draft = builder.sign(stand_in_for(signer.public_key()), algorithm).public_bytes(_DER)
    signed = _signed_again(asn1_x509.Certificate, draft, ("tbs_certificate", "signature_value"), signer, algorithm)
    return x509.load_der_x509_certificate(signed)


def sign_crl(
    builder: x509.CertificateRevocationListBuilder, signer: RawSigner, algorithm: SigningHash
) -> x509.CertificateRevocationList:
    """``builder``'s CRL, signed by ``signer`` with ``algorithm``."""
    draft = builder.sign(stand_in_for(signer.public_key()), algorithm).public_bytes(_DER)
    return x509.load_der_x509_crl(_signed_again(asn1_crl.CertificateList, draft, ("tbs_cert_list", "signature"),
                                                signer, algorithm))


def _signed_again(
    structure: type[asn1_core.Sequence], draft_der: bytes, fields: tuple[str, str], signer: RawSigner,
    algorithm: SigningHash,
) -> bytes:
    """The DER of ``draft_der`` (a signed ``structure``) with its TBS kept byte for byte and signed by
    ``signer``; ``fields`` names the TBS and the signature value in ``structure``."""
    tbs_field, signature_field = fields
    draft = structure.load(draft_der)
    tbs = draft[tbs_field].dump()
    tbs_type = draft[tbs_field].__class__
    signed: bytes = structure({
        tbs_field: tbs_type.load(tbs),
        "signature_algorithm": draft["signature_algorithm"],
        signature_field: signer.sign(tbs, algorithm),
    }).dump()  # fmt: skip
    return signed


def sign_ocsp_response(
    builder: ocsp.OCSPResponseBuilder, signer: RawSigner, algorithm: SigningHash
) -> ocsp.OCSPResponse:
    """``builder``'s successful OCSP response, its BasicOCSPResponse signed by ``signer`` with ``algorithm``.

    The builder refuses a key that its responder certificate does not certify, so the draft names a
    stand-in certificate of the same subject instead; the ResponderID is then set from the real one.
    """
    stand_in = stand_in_for(signer.public_key())
    responder, draft_builder = _with_stand_in_responder(builder, stand_in)
    draft = asn1_ocsp.OCSPResponse.load(draft_builder.sign(stand_in, algorithm).public_bytes(_DER))
    basic = draft["response_bytes"]["response"].parsed
    data = asn1_ocsp.ResponseData.load(basic["tbs_response_data"].dump())
    data["responder_id"] = responder
    tbs = data.dump()
    fields = {
        "tbs_response_data": data,
        "signature_algorithm": basic["signature_algorithm"],
        "signature": signer.sign(tbs, algorithm),
    }
    if basic["certs"].native is not None:
        fields["certs"] = basic["certs"]
    signed = asn1_ocsp.OCSPResponse({
        "response_status": "successful",
        "response_bytes": {"response_type": "basic_ocsp_response", "response": asn1_ocsp.BasicOCSPResponse(fields)},
    })  # fmt: skip
    return ocsp.load_der_ocsp_response(signed.dump())


def _with_stand_in_responder(
    builder: ocsp.OCSPResponseBuilder, stand_in: PrivateKey
) -> tuple[asn1_ocsp.ResponderId, ocsp.OCSPResponseBuilder]:
    """The real ResponderID, and ``builder`` naming a stand-in certificate of the same subject.

    cryptography keeps a builder's parts in the attributes its own signing code reads (there is no
    public accessor); a builder without them is refused as its ``sign`` refuses it.
    """
    responder = getattr(builder, "_responder_id", None)
    if responder is None:
        raise ValueError("You must add a responder_id before signing")
    cert, encoding = responder
    stand_in_cert = _stand_in_certificate(cert.subject, isinstance(stand_in, ec.EllipticCurvePrivateKey))
    stand_in_builder = ocsp.OCSPResponseBuilder(
        builder._response, (stand_in_cert, encoding), builder._certs, builder._extensions
    )
    return _responder_id(cert, encoding), stand_in_builder


def _responder_id(cert: x509.Certificate, encoding: ocsp.OCSPResponderEncoding) -> asn1_ocsp.ResponderId:
    """RFC 6960 §4.2.2.3: byName, the subject; byKey, the SHA-1 of the subjectPublicKey bits."""
    if encoding is ocsp.OCSPResponderEncoding.NAME:
        return asn1_ocsp.ResponderId(name="by_name", value=asn1_x509.Name.load(cert.subject.public_bytes()))
    key_hash = asn1_x509.Certificate.load(cert.public_bytes(_DER)).public_key.sha1
    return asn1_ocsp.ResponderId(name="by_key", value=key_hash)


@lru_cache(maxsize=16)
def _stand_in_certificate(subject: x509.Name, is_ec: bool) -> x509.Certificate:
    key = _stand_in_ec() if is_ec else _stand_in_rsa()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(_STAND_IN_FROM)
        .not_valid_after(_STAND_IN_UNTIL)
        .sign(key, hashes.SHA256())
    )


def stand_in_for(public_key: PublicKey) -> PrivateKey:
    """The stand-in key of ``public_key``'s family: any RSA key for RSA, any EC key for EC."""
    return _stand_in_ec() if isinstance(public_key, ec.EllipticCurvePublicKey) else _stand_in_rsa()


@cache
def _stand_in_rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@cache
def _stand_in_ec() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())
