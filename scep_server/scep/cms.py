"""CMS (RFC 5652) SignedData for SCEP, both directions; EnvelopedData is :mod:`.envelope`'s.

asn1crypto holds the structures; cryptography does every cryptographic operation, the signature by a
:class:`CmsSigner` (the RA's key behind the CA's key backend, or a device's key). The signer of a
request is read leniently with asn1crypto (Windows' throw-away signer certificates carry extensions
that strict parsers reject): only its public key and issuer/serial are used.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Protocol

from asn1crypto import algos, cms, core
from asn1crypto import crl as asn1_crl_module
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from scep_server.errors import BadAlg, BadMessageCheck, RequestError
from scep_server.scep.types import Attr, DigestAlgorithm


class CmsSigner(Protocol):
    """What signs a SignerInfo (RFC 5652 §5.5): RSA with PKCS#1 v1.5, or ECDSA.

    The CA's key backends provide the RA's; :class:`~scep_server.scep.device_key.DeviceKey` wraps a
    device's own key on the client side.
    """

    def public_key(self) -> PublicKeyTypes: ...

    def sign(self, data: bytes, algorithm: hashes.HashAlgorithm) -> bytes:
        """The raw signature over ``data`` hashed with ``algorithm``."""
        ...


@dataclass(frozen=True, slots=True)
class SignerCertificate:
    """The certificate that signed a SignedData, parsed leniently."""

    der: bytes
    issuer_der: bytes
    serial: int
    public_key: PublicKeyTypes | None  # None: an algorithm we cannot use (reported by verify())

    def issuer_and_serial(self) -> cms.IssuerAndSerialNumber:
        return cms.IssuerAndSerialNumber(
            {"issuer": asn1_x509.Name.load(self.issuer_der), "serial_number": self.serial}
        )

    def to_x509(self) -> x509.Certificate | None:
        """The strict cryptography view, or None when the certificate does not parse strictly."""
        try:
            return x509.load_der_x509_certificate(self.der)
        except (ValueError, x509.InvalidVersion):  # InvalidVersion is no ValueError
            return None


@dataclass(frozen=True, slots=True)
class SignedMessage:
    """A parsed, not yet verified, SignedData."""

    content: bytes | None
    content_type: str
    attributes: Mapping[str, core.Any]
    signed_attrs_der: bytes
    signature: bytes
    digest: DigestAlgorithm | None  # None: an unsupported digest (reported by verify())
    signature_algorithm: algos.SignedDigestAlgorithm
    signer: SignerCertificate
    certificates: tuple[bytes, ...]

    def attribute(self, oid: Attr, spec: type[core.Asn1Value]) -> object | None:
        """The first value of a signed attribute, decoded as ``spec``; None when absent."""
        raw = self.attributes.get(oid.value)
        if raw is None:
            return None
        try:
            value: object = spec.load(raw.dump()).native
        except (ValueError, TypeError, AttributeError) as exc:
            # asn1crypto's REAL, EXTERNAL and ObjectDescriptor have no .native and raise AttributeError.
            raise RequestError(f"attribute {oid.name} is not a valid {spec.__name__}") from exc
        return value

    def verify(self) -> None:
        """Check the content digest and the signature (RFC 5652 §5.4, §5.6); raise BadMessageCheck."""
        if self.digest is None:
            raise BadAlg("the digest algorithm is not supported (SHA-1, SHA-256, SHA-384, SHA-512 are)")
        if self.signer.public_key is None:
            raise BadAlg("the signer's public key uses an unsupported algorithm")
        declared = self.attribute(Attr.MESSAGE_DIGEST, core.OctetString)
        actual = digest_of(self.digest, self.content or b"")
        if not isinstance(declared, bytes) or not hmac.compare_digest(declared, actual):
            raise BadMessageCheck("messageDigest does not match the signed content")
        declared_type = self.attribute(Attr.CONTENT_TYPE, cms.ContentType)
        if declared_type is None:  # required with signed attributes, as messageDigest is (RFC 5652 §5.3)
            raise BadMessageCheck("the signed attributes lack the contentType attribute")
        if declared_type != self.content_type:
            raise BadMessageCheck("contentType attribute does not match the encapsulated content type")
        # The signature covers the DER SET OF the attributes, not the [0] IMPLICIT tag they travel in.
        signed = b"\x31" + self.signed_attrs_der[1:]
        _verify_signature(self.signer.public_key, self.signature_algorithm, self.digest, self.signature, signed)


def parse_signed(der: bytes) -> SignedMessage:
    """Parse a ContentInfo(SignedData) with one signer; RequestError when it is not one."""
    return _parse_signers(der, exactly_one=True)[0]


def parse_each_signer(der: bytes) -> tuple[SignedMessage, ...]:
    """Parse a ContentInfo(SignedData) with one or more signers: one SignedMessage per SignerInfo, to be
    verified on its own (a GetNextCACert reply is signed by the CA and by the RA, RFC 8894 §4.7.1).

    RequestError when it is not one, or when a signer's certificate is not in the message."""
    return _parse_signers(der, exactly_one=False)


def _parse_signers(der: bytes, *, exactly_one: bool) -> tuple[SignedMessage, ...]:
    try:
        info = cms.ContentInfo.load(der, strict=True)  # strict: no unsigned bytes after the message
        if info["content_type"].native != "signed_data":
            raise RequestError("pkiMessage is not a SignedData")
        signed = info["content"]
        signer_infos = signed["signer_infos"]
        if exactly_one and len(signer_infos) != 1:
            raise RequestError(f"pkiMessage must have exactly one signer, found {len(signer_infos)}")
        if not signer_infos:
            raise RequestError("the SignedData has no signer")
        return tuple(_signed_message(signed, signer_info) for signer_info in signer_infos)
    except RequestError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        # AttributeError: asn1crypto reads or re-encodes REAL, EXTERNAL and ObjectDescriptor through a
        # .native they lack; an input holding one is as undecodable as any other.
        raise RequestError(f"pkiMessage is not decodable CMS: {short_reason(exc)}") from exc


def _signed_message(signed: cms.SignedData, signer_info: cms.SignerInfo) -> SignedMessage:
    encap = signed["encap_content_info"]
    content_value = encap["content"]
    content = None if isinstance(content_value, core.Void) else bytes(content_value.native or b"")
    attrs = signer_info["signed_attrs"]
    if isinstance(attrs, core.Void) or len(attrs) == 0:
        raise RequestError("pkiMessage has no signed attributes")
    certificates = tuple(c.chosen.dump() for c in signed["certificates"] if c.name == "certificate")
    return SignedMessage(
        content=content,
        content_type=encap["content_type"].dotted if encap["content_type"].native is None
        else str(encap["content_type"].native),
        attributes=_attribute_map(attrs),
        signed_attrs_der=attrs.dump(),
        signature=bytes(signer_info["signature"].native),
        digest=digest_algorithm(signer_info["digest_algorithm"]["algorithm"].native),
        signature_algorithm=signer_info["signature_algorithm"],
        signer=_find_signer(signer_info["sid"], certificates),
        certificates=certificates,
    )


def _attribute_map(attrs: cms.CMSAttributes) -> dict[str, core.Any]:
    found: dict[str, core.Any] = {}
    for attr in attrs:
        oid = attr["type"].dotted
        values = attr["values"]
        if oid in found:
            raise RequestError(f"signed attribute {oid} appears twice")
        if len(values) != 1:
            raise RequestError(f"signed attribute {oid} must have exactly one value")
        found[oid] = core.Any.load(values[0].dump())
    return found


def _find_signer(sid: cms.SignerIdentifier, certificates: Sequence[bytes]) -> SignerCertificate:
    for der in certificates:
        cert = asn1_x509.Certificate.load(der)
        if _matches(sid, cert):
            return _lenient_signer(der, cert)
    raise RequestError("the signer's certificate is not in the pkiMessage")


def _matches(sid: cms.SignerIdentifier, cert: asn1_x509.Certificate) -> bool:
    tbs = cert["tbs_certificate"]
    if sid.name == "issuer_and_serial_number":
        wanted = sid.chosen
        return bool(
            wanted["serial_number"].native == tbs["serial_number"].native
            and wanted["issuer"].dump() == tbs["issuer"].dump()
        )
    key_id = sid.chosen.native
    return bool(cert.key_identifier == key_id)


def _lenient_signer(der: bytes, cert: asn1_x509.Certificate) -> SignerCertificate:
    tbs = cert["tbs_certificate"]
    public_key: PublicKeyTypes | None
    try:
        public_key = serialization.load_der_public_key(tbs["subject_public_key_info"].dump())
    except (ValueError, UnsupportedAlgorithm):
        public_key = None
    return SignerCertificate(
        der=der, issuer_der=tbs["issuer"].dump(), serial=int(tbs["serial_number"].native), public_key=public_key
    )


def digest_algorithm(name: str) -> DigestAlgorithm | None:
    """The digest of asn1crypto name ``name``, or None when it is not one we support."""
    try:
        return DigestAlgorithm(name)
    except ValueError:
        return None


def digest_of(algorithm: DigestAlgorithm, data: bytes) -> bytes:
    """``data`` hashed with ``algorithm``."""
    h = hashes.Hash(algorithm.hash())
    h.update(data)
    return h.finalize()


def _verify_signature(
    key: PublicKeyTypes,
    algorithm: algos.SignedDigestAlgorithm,
    digest: DigestAlgorithm,
    signature: bytes,
    data: bytes,
) -> None:
    try:
        if isinstance(key, rsa.RSAPublicKey) and algorithm.signature_algo == "rsassa_pss":
            key.verify(signature, data, _pss_padding(algorithm), digest.hash())
        elif isinstance(key, rsa.RSAPublicKey) and algorithm.signature_algo == "rsassa_pkcs1v15":
            key.verify(signature, data, asym_padding.PKCS1v15(), digest.hash())
        elif isinstance(key, ec.EllipticCurvePublicKey) and algorithm.signature_algo == "ecdsa":
            key.verify(signature, data, ec.ECDSA(digest.hash()))
        else:
            raise BadAlg(f"signature algorithm {algorithm['algorithm'].native} is not supported for this key")
    except InvalidSignature:
        raise BadMessageCheck("the pkiMessage signature does not verify") from None
    except ValueError as exc:
        raise BadAlg(f"signature algorithm parameters are not supported: {short_reason(exc)}") from exc


def _pss_padding(algorithm: algos.SignedDigestAlgorithm) -> asym_padding.PSS:
    params = algorithm["parameters"]
    if isinstance(params, core.Void):
        raise BadAlg("RSASSA-PSS needs its parameters in the signature algorithm (RFC 4055 §3.1)")
    mgf_hash = params["mask_gen_algorithm"]["parameters"]["algorithm"].native
    return asym_padding.PSS(
        mgf=asym_padding.MGF1(DigestAlgorithm(mgf_hash).hash()), salt_length=int(params["salt_length"].native)
    )


def sign(
    content: bytes | None,
    *,
    signer_cert: x509.Certificate,
    signer_key: CmsSigner,
    digest: DigestAlgorithm,
    attributes: Sequence[cms.CMSAttribute],
    extra_certificates: Sequence[x509.Certificate] = (),
    signing_time: datetime | None = None,
) -> bytes:
    """Build a ContentInfo(SignedData) over ``content`` (None: no eContent) with ``attributes`` signed.

    What does not change between messages of one signer (versions, algorithms, the certificates, the
    signer's identifier) is encoded once (``_signer_parts``); each message encodes only its content,
    its signed attributes and its signature, and the SignedData is their DER in schema order.
    """
    parts = _parts_of(signer_cert, signer_key, digest, extra_certificates)
    the_signer = _signer_info(parts, content, signer_key, digest, attributes, signing_time)
    encap = cms.EncapsulatedContentInfo({"content_type": "data"} if content is None
                                        else {"content_type": "data", "content": content})
    signed = cms.SignedData(
        contents=parts.head + encap.dump() + parts.certificates + cms.SignerInfos([the_signer]).dump()
    )
    return bytes(cms.ContentInfo({"content_type": "signed_data", "content": signed}).dump())


def signer_info(
    content: bytes | None,
    *,
    signer_cert: x509.Certificate,
    signer_key: CmsSigner,
    digest: DigestAlgorithm,
    attributes: Sequence[cms.CMSAttribute] = (),
    signing_time: datetime | None = None,
) -> cms.SignerInfo:
    """The SignerInfo :func:`sign` would build, for a SignedData of several signers over ``content``."""
    parts = _parts_of(signer_cert, signer_key, digest, ())
    return _signer_info(parts, content, signer_key, digest, attributes, signing_time)


def _parts_of(
    signer_cert: x509.Certificate, signer_key: CmsSigner, digest: DigestAlgorithm,
    extra_certificates: Sequence[x509.Certificate],
) -> _SignerParts:  # fmt: skip
    return _signer_parts(
        signer_cert.public_bytes(serialization.Encoding.DER),
        tuple(c.public_bytes(serialization.Encoding.DER) for c in extra_certificates),
        digest,
        _signature_algorithm(signer_key, digest),
    )


def _signer_info(
    parts: _SignerParts,
    content: bytes | None,
    signer_key: CmsSigner,
    digest: DigestAlgorithm,
    attributes: Sequence[cms.CMSAttribute],
    signing_time: datetime | None,
) -> cms.SignerInfo:
    every_attribute = [
        make_attribute(Attr.CONTENT_TYPE, cms.ContentType("data")),
        make_attribute(Attr.MESSAGE_DIGEST, core.OctetString(digest_of(digest, content or b""))),
        make_attribute(Attr.SIGNING_TIME, cms.Time({"utc_time": signing_time or datetime.now(UTC)})),
        *attributes,
    ]
    # A DER SET OF lists its members' encodings in ascending order (X.690 §11.6); asn1crypto would
    # re-encode every member to find it, here each member is encoded once.
    members = b"".join(sorted(attribute.dump() for attribute in every_attribute))
    signed_attrs = cms.CMSAttributes(contents=members, implicit=0).dump()
    # RFC 5652 §5.4: the signature covers the attributes' explicit SET OF encoding, not the [0] one.
    signature = signer_key.sign(b"\x31" + signed_attrs[1:], digest.hash())
    return cms.SignerInfo(
        contents=parts.signer_head + signed_attrs + parts.signature_algorithm + core.OctetString(signature).dump()
    )


@dataclass(frozen=True, slots=True)
class _SignerParts:
    """The DER of a signer's SignedData fields that every message repeats."""

    head: bytes  # version, digestAlgorithms
    certificates: bytes  # [0] IMPLICIT CertificateSet
    signer_head: bytes  # SignerInfo version, sid, digestAlgorithm
    signature_algorithm: bytes


@lru_cache(maxsize=32)
def _signer_parts(
    signer_der: bytes, extra_ders: tuple[bytes, ...], digest: DigestAlgorithm, signature_algorithm: str
) -> _SignerParts:
    signer = asn1_x509.Certificate.load(signer_der)
    tbs = signer["tbs_certificate"]
    digest_algorithm = algos.DigestAlgorithm({"algorithm": digest.value})
    sid = cms.SignerIdentifier(
        {"issuer_and_serial_number": {"issuer": tbs["issuer"], "serial_number": tbs["serial_number"]}}
    )
    certificates = cms.CertificateSet(
        [cms.CertificateChoices({"certificate": asn1_x509.Certificate.load(der)}) for der in (signer_der, *extra_ders)],
        implicit=0,
    )
    return _SignerParts(
        head=cms.CMSVersion("v1").dump() + cms.DigestAlgorithms([digest_algorithm]).dump(),
        certificates=certificates.dump(),
        signer_head=cms.CMSVersion("v1").dump() + sid.dump() + digest_algorithm.dump(),
        signature_algorithm=algos.SignedDigestAlgorithm({"algorithm": signature_algorithm}).dump(),
    )


def _signature_algorithm(key: CmsSigner, digest: DigestAlgorithm) -> str:
    return "rsassa_pkcs1v15" if isinstance(key.public_key(), rsa.RSAPublicKey) else f"{digest.value}_ecdsa"


def make_attribute(oid: Attr, value: core.Asn1Value) -> cms.CMSAttribute:
    """One signed attribute with a single value: its type and the SET OF holding the value's DER (a set
    of one member needs no ordering), without building and re-encoding the value as an Any."""
    values = cms.SetOfAny(contents=value.dump())
    return cms.CMSAttribute(contents=cms.CMSAttributeType(oid.value).dump() + values.dump())


def issuer_and_serial(cert: x509.Certificate) -> cms.IssuerAndSerialNumber:
    """IssuerAndSerialNumber of a certificate (RFC 5652 §10.2.4)."""
    tbs = _asn1_cert(cert)["tbs_certificate"]
    return cms.IssuerAndSerialNumber({"issuer": tbs["issuer"], "serial_number": tbs["serial_number"]})


def _asn1_cert(cert: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))


def certs_only(certificates: Sequence[x509.Certificate], crls: Sequence[bytes] = ()) -> bytes:
    """A degenerate certificates/CRLs-only SignedData (RFC 8894 §3.4)."""
    signed: dict[str, object] = {
        "version": "v1",
        "digest_algorithms": [],
        "encap_content_info": {"content_type": "data"},
        "certificates": [_asn1_cert(c) for c in certificates],
        "signer_infos": [],
    }
    if crls:
        signed["crls"] = [cms.RevocationInfoChoice({"crl": asn1_crl(der)}) for der in crls]
    return bytes(cms.ContentInfo({"content_type": "signed_data", "content": cms.SignedData(signed)}).dump())


def asn1_crl(der: bytes) -> core.Asn1Value:
    return asn1_crl_module.CertificateList.load(der)


def read_certs_only(der: bytes) -> tuple[list[bytes], list[bytes]]:
    """Certificates and CRLs (DER) of a degenerate SignedData."""
    try:
        info = cms.ContentInfo.load(der)
        signed = info["content"]
        certs = [c.chosen.dump() for c in signed["certificates"] if c.name == "certificate"]
        crls = [c.chosen.dump() for c in signed["crls"] if c.name == "crl"]
        return certs, crls
    except (ValueError, TypeError, KeyError) as exc:
        raise RequestError(f"not a certificates-only SignedData: {short_reason(exc)}") from exc


def short_reason(exc: BaseException) -> str:
    """The first line of an exception's message, at most 160 characters, for failure reasons."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:160]
