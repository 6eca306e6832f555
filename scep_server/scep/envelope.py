"""CMS (RFC 5652 §6) EnvelopedData for SCEP: the requests' pkcsPKIEnvelope and the replies' envelope.

Content keys are wrapped with RSA key transport, PKCS#1 v1.5 or RSAES-OAEP; the recipient unwraps
them through a :class:`CmsDecrypter` (the RA's key behind the CA's key backend, or a device's key).
From the RSA step to the parsed content every failure is one :class:`EnvelopeRejected`, whatever went
wrong: the envelope is unauthenticated CBC, and different answers would be a padding oracle.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from asn1crypto import algos, cms, core, parser
from cryptography import x509
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from cryptography.hazmat.primitives.ciphers.algorithms import AES

from scep_server.errors import BadAlg, BadMessageCheck
from scep_server.scep.cms import SignerCertificate, digest_algorithm, digest_of, issuer_and_serial, short_reason
from scep_server.scep.types import OAEP_NAME, PKCS1V15_NAME, ContentCipher, DigestAlgorithm, KeyTransport


class CmsDecrypter(Protocol):
    """The recipient's half of RSA key transport (RFC 5652 §6.2.1)."""

    def decrypt(self, ciphertext: bytes, padding: asym_padding.AsymmetricPadding) -> bytes:
        """The plaintext; ValueError when ``ciphertext`` does not decrypt under ``padding``."""
        ...


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


def check_recipient(
    recipient: x509.Certificate | SignerCertificate, cipher: ContentCipher, key_transport: KeyTransport
) -> None:
    """``BadAlg`` when :func:`encrypt` could not envelope anything to ``recipient`` with ``cipher`` and
    ``key_transport``, found from the key's size without encrypting (RFC 8017 §7.1.1, §7.2.1 limits)."""
    public_key = recipient.public_key if isinstance(recipient, SignerCertificate) else recipient.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise BadAlg("the recipient certificate has no RSA key: SCEP key transport needs RSA")
    if cipher.key_size > _largest_wrappable(public_key.key_size, key_transport):
        raise BadAlg(f"a {cipher.name} key cannot be wrapped with {key_transport.name} for this RSA key")


def _largest_wrappable(modulus_bits: int, transport: KeyTransport) -> int:
    """The longest message, in octets, that ``transport`` encrypts under a modulus of ``modulus_bits``."""
    octets = (modulus_bits + 7) // 8
    if transport.is_oaep:
        digest_size = (transport.oaep_hash or DigestAlgorithm.SHA1).hash().digest_size
        return octets - 2 * digest_size - 2
    return octets - 11


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
    # Each field is encoded by asn1crypto once and the structures are their fields' DER in schema order,
    # which saves asn1crypto building the nested values and then encoding them again.
    recipient_info = cms.KeyTransRecipientInfo(
        contents=cms.CMSVersion("v0").dump()
        + cms.RecipientIdentifier({"issuer_and_serial_number": rid}).dump()
        + _key_encryption_algorithm(key_transport).dump()
        + core.OctetString(encrypted_key).dump()
    )
    encrypted_content_info = cms.EncryptedContentInfo(
        {
            "content_type": "data",
            "content_encryption_algorithm": {"algorithm": cipher.asn1_name, "parameters": iv},
            "encrypted_content": _encrypt_content(cipher, key, iv, content),
        }
    )
    enveloped = cms.EnvelopedData(
        contents=cms.CMSVersion("v0").dump()
        + cms.RecipientInfos(contents=recipient_info.dump()).dump()  # a SET OF one member: no ordering
        + encrypted_content_info.dump()
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

    def open(self, recipient_key: CmsDecrypter) -> Decrypted:
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
    return digest_of(DigestAlgorithm.SHA256, data)[:16]


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


def decrypt(der: bytes, recipient_key: CmsDecrypter, recipient: x509.Certificate) -> Decrypted:
    """Open a ContentInfo(EnvelopedData) addressed to ``recipient``; BadAlg or EnvelopeRejected on failure."""
    decrypted = parse_enveloped(der, recipient).open(recipient_key)
    if decrypted.problem is not None:
        raise EnvelopeRejected(decrypted.problem)
    return decrypted


def addressed_recipient(der: bytes | None, candidates: Sequence[x509.Certificate]) -> int | None:
    """The index of the first of ``candidates`` the ContentInfo(EnvelopedData) ``der`` is addressed to
    (an RA and the RAs it replaced); None when it names none of them or is not readable."""
    if der is None:
        return None
    try:
        enveloped = _load_enveloped(der)
    except EnvelopeRejected:
        return None
    for index, candidate in enumerate(candidates):
        try:
            _recipient_info(enveloped, candidate)
        except EnvelopeRejected:
            continue
        except (ValueError, TypeError, KeyError):  # a malformed recipient identifier
            return None
        return index
    return None


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
        raise EnvelopeRejected(f"pkcsPKIEnvelope is not decodable: {short_reason(exc)}") from exc


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
    oaep_hash = digest_algorithm(params["hash_algorithm"]["algorithm"].native)
    mgf_hash = digest_algorithm(mgf["parameters"]["algorithm"].native)
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
    recipient_key: CmsDecrypter, encrypted_key: bytes, transport: KeyTransport, size: int
) -> tuple[bytes, str | None]:
    """The content key, or a random one and the reason when the RSA step fails (implicit rejection)."""
    substitute = os.urandom(size)
    try:
        key = recipient_key.decrypt(encrypted_key, _key_transport_padding(transport))
    except Exception:  # noqa: BLE001 - any backend error (a token's, say) must look like a bad block: no oracle
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
