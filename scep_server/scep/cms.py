"""CMS (RFC 5652) building blocks of SCEP: SignedData and EnvelopedData, both directions.

asn1crypto holds the structures; cryptography does every cryptographic operation. The signer of a
request is read leniently with asn1crypto (Windows' throw-away signer certificates carry extensions
that strict parsers reject): only its public key and issuer/serial are used.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from asn1crypto import algos, cms, core, parser
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from cryptography.hazmat.primitives.ciphers.algorithms import AES

from ..errors import BadAlg, BadMessageCheck, RequestError
from .types import OAEP_NAME, PKCS1V15_NAME, Attr, ContentCipher, DigestAlgorithm, KeyTransport

SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


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
        except ValueError:
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
        actual = _digest(self.digest, self.content or b"")
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
    try:
        info = cms.ContentInfo.load(der, strict=True)  # strict: no unsigned bytes after the message
        if info["content_type"].native != "signed_data":
            raise RequestError("pkiMessage is not a SignedData")
        signed = info["content"]
        signer_infos = signed["signer_infos"]
        if len(signer_infos) != 1:
            raise RequestError(f"pkiMessage must have exactly one signer, found {len(signer_infos)}")
        return _signed_message(signed, signer_infos[0])
    except RequestError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        # AttributeError: asn1crypto reads or re-encodes REAL, EXTERNAL and ObjectDescriptor through a
        # .native they lack; an input holding one is as undecodable as any other.
        raise RequestError(f"pkiMessage is not decodable CMS: {_short(exc)}") from exc


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
        digest=_digest_algorithm(signer_info["digest_algorithm"]["algorithm"].native),
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


def _digest_algorithm(name: str) -> DigestAlgorithm | None:
    try:
        return DigestAlgorithm(name)
    except ValueError:
        return None


def _digest(algorithm: DigestAlgorithm, data: bytes) -> bytes:
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
        raise BadAlg(f"signature algorithm parameters are not supported: {_short(exc)}") from exc


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
    signer_key: SigningKey,
    digest: DigestAlgorithm,
    attributes: Sequence[cms.CMSAttribute],
    extra_certificates: Sequence[x509.Certificate] = (),
    signing_time: datetime | None = None,
) -> bytes:
    """Build a ContentInfo(SignedData) over ``content`` (None: no eContent) with ``attributes`` signed."""
    all_attrs = cms.CMSAttributes(
        [
            make_attribute(Attr.CONTENT_TYPE, cms.ContentType("data")),
            make_attribute(Attr.MESSAGE_DIGEST, core.OctetString(_digest(digest, content or b""))),
            make_attribute(Attr.SIGNING_TIME, cms.Time({"utc_time": signing_time or datetime.now(UTC)})),
            *attributes,
        ]
    )
    to_sign = b"\x31" + all_attrs.dump()[1:]
    signature_algo, signature = _sign_bytes(signer_key, digest, to_sign)
    signer_info = cms.SignerInfo(
        {
            "version": "v1",
            "sid": cms.SignerIdentifier({"issuer_and_serial_number": issuer_and_serial(signer_cert)}),
            "digest_algorithm": algos.DigestAlgorithm({"algorithm": digest.value}),
            "signed_attrs": all_attrs,
            "signature_algorithm": algos.SignedDigestAlgorithm({"algorithm": signature_algo}),
            "signature": signature,
        }
    )
    encap: dict[str, object] = {"content_type": "data"}
    if content is not None:
        encap["content"] = content
    certs = [signer_cert, *extra_certificates]
    signed = cms.SignedData(
        {
            "version": "v1",
            "digest_algorithms": [algos.DigestAlgorithm({"algorithm": digest.value})],
            "encap_content_info": encap,
            "certificates": [_asn1_cert(c) for c in certs],
            "signer_infos": [signer_info],
        }
    )
    return bytes(cms.ContentInfo({"content_type": "signed_data", "content": signed}).dump())


def _sign_bytes(key: SigningKey, digest: DigestAlgorithm, data: bytes) -> tuple[str, bytes]:
    if isinstance(key, rsa.RSAPrivateKey):
        return "rsassa_pkcs1v15", key.sign(data, asym_padding.PKCS1v15(), digest.hash())
    return f"{digest.value}_ecdsa", key.sign(data, ec.ECDSA(digest.hash()))


def make_attribute(oid: Attr, value: core.Asn1Value) -> cms.CMSAttribute:
    """One signed attribute with a single value."""
    if oid.value in cms.CMSAttributeType._map:  # asn1crypto knows its value type: hand it the typed value
        return cms.CMSAttribute({"type": oid.value, "values": [value]})
    return cms.CMSAttribute({"type": oid.value, "values": [core.Any.load(value.dump())]})


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
    from asn1crypto import crl as asn1_crl_module

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
        raise RequestError(f"not a certificates-only SignedData: {_short(exc)}") from exc


ENVELOPE_FAILURE_TEXT = "the request could not be decrypted or parsed"


class EnvelopeRejected(BadMessageCheck):
    """The one answer to an envelope that cannot be opened or whose content cannot be read.

    The envelope is CBC without a MAC and anyone can re-wrap a captured one in a SignedData of their
    own (RFC 8894 §3.2 lets any self-signed key sign a PKCSReq), so every failure from the RSA step to
    the parsed content must look the same, or the answers are a padding oracle (RFC 5652 §14,
    RFC 3218 §2.3). Devices get failInfo badMessageCheck and :data:`ENVELOPE_FAILURE_TEXT`; ``reason``
    is for the server log only.
    """

    public_text = ENVELOPE_FAILURE_TEXT

    def __init__(self, reason: str) -> None:
        super().__init__(ENVELOPE_FAILURE_TEXT)
        self.reason = reason


def encrypt(
    content: bytes,
    recipient: x509.Certificate | SignerCertificate,
    cipher: ContentCipher,
    key_transport: KeyTransport = KeyTransport.RSA_PKCS1V15,
) -> bytes:
    """ContentInfo(EnvelopedData) of ``content`` for an RSA ``recipient`` (RFC 5652 §6)."""
    if isinstance(recipient, SignerCertificate):
        public_key, rid = recipient.public_key, recipient.issuer_and_serial()
    else:
        public_key, rid = recipient.public_key(), issuer_and_serial(recipient)
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise BadAlg("the recipient certificate has no RSA key: SCEP key transport needs RSA")
    key, iv = os.urandom(cipher.key_size), os.urandom(cipher.block_size)
    try:
        encrypted_key = public_key.encrypt(key, _key_transport_padding(key_transport))
    except ValueError:  # e.g. OAEP with SHA-512 cannot wrap a key for an RSA-1024 modulus
        raise BadAlg(f"a {cipher.name} key cannot be wrapped with {key_transport.name} for this RSA key") from None
    recipient_info = cms.KeyTransRecipientInfo(
        {
            "version": "v0",
            "rid": cms.RecipientIdentifier({"issuer_and_serial_number": rid}),
            "key_encryption_algorithm": _key_encryption_algorithm(key_transport),
            "encrypted_key": encrypted_key,
        }
    )
    enveloped = cms.EnvelopedData(
        {
            "version": "v0",
            "recipient_infos": [cms.RecipientInfo({"ktri": recipient_info})],
            "encrypted_content_info": {
                "content_type": "data",
                "content_encryption_algorithm": {"algorithm": cipher.asn1_name, "parameters": iv},
                "encrypted_content": _encrypt_content(cipher, key, iv, content),
            },
        }
    )
    return bytes(cms.ContentInfo({"content_type": "enveloped_data", "content": enveloped}).dump())


def _key_encryption_algorithm(transport: KeyTransport) -> cms.KeyEncryptionAlgorithm:
    """rsaEncryption for PKCS#1 v1.5; RSAES-OAEP with its parameters, defaults omitted (RFC 4055 §4.1)."""
    if not transport.is_oaep:
        return cms.KeyEncryptionAlgorithm({"algorithm": transport.name})
    oaep_hash = transport.oaep_hash or DigestAlgorithm.SHA1
    mgf_hash = transport.mgf_hash or oaep_hash
    params = algos.RSAESOAEPParams({  # asn1crypto leaves out the fields that equal their DEFAULT
        "hash_algorithm": {"algorithm": oaep_hash.value},
        "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": {"algorithm": mgf_hash.value}},
    })
    return cms.KeyEncryptionAlgorithm({"algorithm": transport.name, "parameters": params})


@dataclass(frozen=True, slots=True)
class Decrypted:
    """What an envelope decrypted to. ``problem`` set: the key transport or the padding failed and
    ``content`` is garbage of about the right length, to be parsed all the same (see :class:`Envelope`)."""

    content: bytes
    cipher: ContentCipher
    key_transport: KeyTransport
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class Envelope:
    """An EnvelopedData addressed to us, read and checked up to the RSA step: nothing is decrypted yet,
    so algorithms can be refused before any secret is touched."""

    cipher: ContentCipher
    key_transport: KeyTransport
    encrypted_key: bytes
    iv: bytes
    ciphertext: bytes

    def open(self, recipient_key: rsa.RSAPrivateKey) -> Decrypted:
        """Decrypt along one path whatever goes wrong, and say what did in ``problem`` (never raises).

        A key transport failure, or a content key of the wrong length, continues with a random key
        (RFC 3218 §2.3.2), so that a PKCS#1 v1.5 failure is not a Bleichenbacher oracle whatever the
        OpenSSL version; it then fails where a bad padding or bad content fails, at the content stage.
        """
        key, key_problem = _unwrap_key(recipient_key, self.encrypted_key, self.key_transport, self.cipher.key_size)
        padded = _decrypt_blocks(self.cipher, key, self.iv, self.ciphertext)
        content, padding_ok = _strip_padding(padded, self.cipher.block_size)
        problem = key_problem or (None if padding_ok else "the content's CBC padding is invalid")
        return Decrypted(content, self.cipher, self.key_transport, problem)

    def binding(self) -> tuple[bytes, bytes]:
        """(fingerprint of the wrapped key, fingerprint of what it is used with): a genuine sender draws a
        fresh content key for every envelope (RFC 5652 §6.3), so one wrapped key has one ciphertext."""
        used_with = b"\x00".join(
            [self.key_transport.name.encode(), self.cipher.asn1_name.encode(), self.iv, self.ciphertext]
        )
        return _fingerprint(self.encrypted_key), _fingerprint(used_with)


def _fingerprint(data: bytes) -> bytes:
    return _digest(DigestAlgorithm.SHA256, data)[:16]


def parse_enveloped(der: bytes, recipient: x509.Certificate) -> Envelope:
    """Read a ContentInfo(EnvelopedData) addressed to ``recipient`` (RFC 5652 §6.1) without decrypting.

    BadAlg for an algorithm we do not implement; EnvelopeRejected for a malformed envelope.
    """
    enveloped = _load_enveloped(der)
    ktri = _recipient_info(enveloped, recipient)
    transport = _key_transport(ktri["key_encryption_algorithm"])
    eci = enveloped["encrypted_content_info"]
    if eci["content_type"].native != "data":
        raise EnvelopeRejected("the encrypted content is not of type data (RFC 8894 §3.2.2)")
    algorithm = eci["content_encryption_algorithm"]
    cipher = ContentCipher.from_asn1_name(algorithm["algorithm"].native)
    if cipher is None:
        raise BadAlg(f"content encryption {algorithm['algorithm'].native} is not supported")
    iv = algorithm["parameters"].native
    ciphertext = _encrypted_content(eci)
    if not isinstance(iv, bytes) or len(iv) != cipher.block_size or not isinstance(ciphertext, bytes):
        raise EnvelopeRejected("the envelope's IV or encrypted content is malformed")
    if len(ciphertext) == 0 or len(ciphertext) % cipher.block_size:
        raise EnvelopeRejected("the encrypted content is not a whole number of cipher blocks")
    return Envelope(cipher, transport, bytes(ktri["encrypted_key"].native), iv, ciphertext)


def decrypt(der: bytes, recipient_key: rsa.RSAPrivateKey, recipient: x509.Certificate) -> Decrypted:
    """Open a ContentInfo(EnvelopedData) addressed to ``recipient``; BadAlg or EnvelopeRejected on failure."""
    decrypted = parse_enveloped(der, recipient).open(recipient_key)
    if decrypted.problem is not None:
        raise EnvelopeRejected(decrypted.problem)
    return decrypted


class _OctetStringChunks(core.SequenceOf):  # type: ignore[misc]
    _child_spec = core.OctetString


def _encrypted_content(eci: cms.EncryptedContentInfo) -> bytes | None:
    """The encryptedContent, also when sent as a definite-length constructed [0] (BER, as some clients
    and servers do), which asn1crypto's implicit-tag parsing refuses."""
    try:
        value = eci["encrypted_content"].native
        return bytes(value) if value is not None else None
    except ValueError:
        pass
    try:
        _, _, _, _, body, _ = parser.parse(eci.dump())
        offset = parser.peek(body)  # contentType
        offset += parser.peek(body[offset:])  # contentEncryptionAlgorithm
        class_, method, tag, _, contents, _ = parser.parse(body[offset:])
        if (class_, method, tag) != (2, 1, 0):  # context-specific, constructed, [0]
            return None
        return b"".join(bytes(chunk.native) for chunk in _OctetStringChunks(contents=contents))
    except (ValueError, TypeError):
        return None


def _load_enveloped(der: bytes) -> cms.EnvelopedData:
    try:
        info = cms.ContentInfo.load(der)
        if info["content_type"].native != "enveloped_data":
            raise EnvelopeRejected("pkcsPKIEnvelope is not an EnvelopedData")
        enveloped = info["content"]
        enveloped["recipient_infos"].native  # noqa: B018 - forces a full parse here
        enveloped["encrypted_content_info"]["content_encryption_algorithm"].native  # noqa: B018
        return enveloped
    except EnvelopeRejected:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        raise EnvelopeRejected(f"pkcsPKIEnvelope is not decodable: {_short(exc)}") from exc


def _recipient_info(enveloped: cms.EnvelopedData, recipient: x509.Certificate) -> cms.KeyTransRecipientInfo:
    wanted = issuer_and_serial(recipient).dump()
    ski = _subject_key_identifier(recipient)
    for info in enveloped["recipient_infos"]:
        if info.name != "ktri":
            continue
        rid = info.chosen["rid"]
        if rid.name == "issuer_and_serial_number" and rid.chosen.dump() == wanted:
            return info.chosen
        if rid.name == "subject_key_identifier" and ski is not None and rid.chosen.native == ski:
            return info.chosen
    raise EnvelopeRejected("the envelope is not addressed to the expected recipient certificate")


def _subject_key_identifier(cert: x509.Certificate) -> bytes | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return None


def _key_transport(algorithm: cms.KeyEncryptionAlgorithm) -> KeyTransport:
    """The key transport and, for RSAES-OAEP, its parameters (RFC 8017 §A.2.1); BadAlg when unsupported."""
    name = algorithm["algorithm"].native
    if name in ("rsa", PKCS1V15_NAME):  # rsaEncryption as the key-transport OID means PKCS#1 v1.5
        return KeyTransport.RSA_PKCS1V15
    if name != OAEP_NAME:
        raise BadAlg(f"key transport {name} is not supported")
    params = algorithm["parameters"]
    if isinstance(params, core.Void):  # absent: the defaults
        return KeyTransport.RSA_OAEP
    mgf = params["mask_gen_algorithm"]
    if mgf["algorithm"].native != "mgf1":
        raise BadAlg(f"RSAES-OAEP mask generation {mgf['algorithm'].native} is not supported (MGF1 is)")
    if params["p_source_algorithm"]["parameters"].native:
        raise BadAlg("RSAES-OAEP with a non-empty label is not supported")
    oaep_hash = _digest_algorithm(params["hash_algorithm"]["algorithm"].native)
    mgf_hash = _digest_algorithm(mgf["parameters"]["algorithm"].native)
    if oaep_hash is None or mgf_hash is None:
        raise BadAlg("RSAES-OAEP hashes must be SHA-1, SHA-256, SHA-384 or SHA-512")
    return KeyTransport.oaep(oaep_hash, mgf_hash)


def _key_transport_padding(transport: KeyTransport) -> asym_padding.AsymmetricPadding:
    if transport.is_oaep:
        oaep_hash = (transport.oaep_hash or DigestAlgorithm.SHA1).hash()
        mgf_hash = (transport.mgf_hash or transport.oaep_hash or DigestAlgorithm.SHA1).hash()
        return asym_padding.OAEP(mgf=asym_padding.MGF1(mgf_hash), algorithm=oaep_hash, label=None)
    return asym_padding.PKCS1v15()


def _unwrap_key(
    private_key: rsa.RSAPrivateKey, encrypted_key: bytes, transport: KeyTransport, size: int
) -> tuple[bytes, str | None]:
    """The content key, or a random one and the reason when the RSA step fails (implicit rejection)."""
    substitute = os.urandom(size)
    try:
        key = private_key.decrypt(encrypted_key, _key_transport_padding(transport))
    except ValueError:
        return substitute, "the content-encryption key cannot be decrypted"
    if len(key) != size:
        return substitute, f"the content-encryption key has {len(key)} bytes, not {size}"
    return key, None


def _cipher_engine(cipher: ContentCipher, key: bytes, iv: bytes) -> Cipher[modes.CBC]:
    if cipher is ContentCipher.DES:
        key = key * 3  # single DES is 3DES with K1 = K2 = K3
    algorithm = TripleDES(key) if cipher in (ContentCipher.DES, ContentCipher.DES3) else AES(key)
    return Cipher(algorithm, modes.CBC(iv))


def _encrypt_content(cipher: ContentCipher, key: bytes, iv: bytes, data: bytes) -> bytes:
    padder = padding.PKCS7(cipher.block_size * 8).padder()
    encryptor = _cipher_engine(cipher, key, iv).encryptor()
    return encryptor.update(padder.update(data) + padder.finalize()) + encryptor.finalize()


def _decrypt_blocks(cipher: ContentCipher, key: bytes, iv: bytes, data: bytes) -> bytes:
    decryptor = _cipher_engine(cipher, key, iv).decryptor()
    return decryptor.update(data) + decryptor.finalize()


def _strip_padding(padded: bytes, block_size: int) -> tuple[bytes, bool]:
    """Remove the PKCS#7 padding (RFC 5652 §6.3), checked in constant time by cryptography. When it is
    invalid, strip as many bytes as the last one says (at least 1, at most a block) so that the content
    parsed next has the length a valid padding would have given."""
    unpadder = padding.PKCS7(block_size * 8).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize(), True
    except ValueError:
        return padded[: len(padded) - min(max(padded[-1], 1), block_size)], False


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:160]
