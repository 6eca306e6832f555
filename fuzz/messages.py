"""Genuine pkiMessages around a fuzzed part: the envelope, the decrypted content, or the signed attributes.

Each builder signs what it is given with the device key, so the server's signature and digest checks
pass and the fuzzed part is what gets parsed next. Built with the client code the server is tested
with (:mod:`scep_server.scep.client`, :mod:`scep_server.scep.cms`, :mod:`scep_server.scep.envelope`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache

from asn1crypto import cms as asn1_cms
from asn1crypto import core
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.serialization import Encoding

from scep_server.scep import client, cms
from scep_server.scep.device_key import DeviceKey
from scep_server.scep.envelope import encrypt
from scep_server.scep.types import Attr, ContentCipher, DigestAlgorithm, MessageType

from . import material

TRANSACTION_ID = "FUZZ"
SENDER_NONCE = bytes(range(16))
REQUEST_KINDS = (
    MessageType.PKCS_REQ, MessageType.RENEWAL_REQ, MessageType.CERT_POLL, MessageType.GET_CERT, MessageType.GET_CRL,
)  # fmt: skip
CIPHERS = tuple(ContentCipher)
_SIGNED_DATA_OID = bytes.fromhex("06092a864886f70d010702")  # DER OBJECT IDENTIFIER 1.2.840.113549.1.7.2


def scep_attributes(message_type: MessageType) -> list[asn1_cms.CMSAttribute]:
    """messageType, transactionID and senderNonce, as every request carries them (RFC 8894 §3.2.1)."""
    return [
        cms.make_attribute(Attr.MESSAGE_TYPE, core.PrintableString(str(int(message_type)))),
        cms.make_attribute(Attr.TRANSACTION_ID, core.PrintableString(TRANSACTION_ID)),
        cms.make_attribute(Attr.SENDER_NONCE, core.OctetString(SENDER_NONCE)),
    ]


def sign_envelope(envelope: bytes, message_type: MessageType = MessageType.PKCS_REQ) -> bytes:
    """A signed pkiMessage whose pkcsPKIEnvelope is ``envelope``, whatever those bytes are."""
    device = material.device()
    return cms.sign(
        envelope, signer_cert=device.signer, signer_key=DeviceKey(device.key), digest=DigestAlgorithm.SHA256,
        attributes=scep_attributes(message_type),
    )  # fmt: skip


def request_with_content(kind: MessageType, content: bytes, cipher: ContentCipher) -> bytes:
    """A signed pkiMessage of type ``kind`` whose envelope, to the RA, decrypts to ``content``."""
    device = material.device()
    built = client.build_pki_request(
        kind, content, signer_cert=device.signer, signer_key=device.key, recipient=material.scep_ca().ra_cert,
        cipher=cipher, transaction_id=TRANSACTION_ID, sender_nonce=SENDER_NONCE,
    )  # fmt: skip
    return built.der


@cache
def genuine_csr() -> bytes:
    """The DER PKCS#10 of the device, with a challengePassword."""
    device = material.device()
    csr = client.build_csr(device.key, device.signer.subject, challenge_password="fuzz-challenge")
    return csr.public_bytes(Encoding.DER)


@cache
def genuine_envelope() -> bytes:
    """A PKCSReq envelope to the RA (AES-128), the content the attribute target signs."""
    return encrypt(genuine_csr(), material.scep_ca().ra_cert, ContentCipher.AES128)


@dataclass(frozen=True, slots=True)
class _Frame:
    """The DER of everything in a genuine pkiMessage but its signed attributes and signature."""

    signed_data_head: bytes  # version, digestAlgorithms, encapContentInfo, certificates
    signer_info_head: bytes  # version, sid, digestAlgorithm
    signature_algorithm: bytes


@cache
def _frame() -> _Frame:
    device = material.device()
    der = cms.sign(
        genuine_envelope(), signer_cert=device.signer, signer_key=DeviceKey(device.key), digest=DigestAlgorithm.SHA256,
        attributes=[],
    )  # fmt: skip
    signed = asn1_cms.ContentInfo.load(der)["content"]
    signer_info = signed["signer_infos"][0]
    fields = ("version", "digest_algorithms", "encap_content_info", "certificates")
    return _Frame(
        signed_data_head=b"".join(signed[name].dump() for name in fields),
        signer_info_head=b"".join(signer_info[name].dump() for name in ("version", "sid", "digest_algorithm")),
        signature_algorithm=signer_info["signature_algorithm"].dump(),
    )


def sign_attributes(attributes: bytes) -> bytes:
    """A pkiMessage over the genuine envelope whose signed attributes are ``attributes`` (the contents of
    the SET OF Attribute, any bytes) followed by the correct messageDigest, signed by the device.

    Assembled from DER pieces, so that bytes asn1crypto would not build still reach the server.
    """
    digest = cms.make_attribute(Attr.MESSAGE_DIGEST, core.OctetString(hashlib.sha256(genuine_envelope()).digest()))
    contents = attributes + digest.dump()
    signature = material.device().key.sign(_tlv(0x31, contents), padding.PKCS1v15(), SHA256())
    frame = _frame()
    signer_info = _tlv(
        0x30,
        frame.signer_info_head + _tlv(0xA0, contents) + frame.signature_algorithm + _tlv(0x04, signature),
    )
    signed_data = _tlv(0x30, frame.signed_data_head + _tlv(0x31, signer_info))
    return _tlv(0x30, _SIGNED_DATA_OID + _tlv(0xA0, signed_data))


# Attributes a record may name (see attribute_records); a selector past the end means a raw attribute.
RECORD_ATTRIBUTES = (
    Attr.CONTENT_TYPE, Attr.SIGNING_TIME, Attr.MESSAGE_TYPE, Attr.TRANSACTION_ID, Attr.SENDER_NONCE,
    Attr.RECIPIENT_NONCE, Attr.PKI_STATUS, Attr.FAIL_INFO,
)  # fmt: skip


def attributes_from_records(data: bytes) -> bytes:
    """Signed attributes (the contents of their SET OF) from records ``selector tag length value``.

    ``selector`` picks the attribute type in RECORD_ATTRIBUTES (modulo one more than its length: the
    extra value appends ``value`` as raw bytes) and the attribute gets the single value ``tag value``,
    DER lengths filled in. A mutation of a value's length or tag is then one change, not three.
    """
    out, offset = [], 0
    while offset + 3 <= len(data):
        selector, tag, length = data[offset : offset + 3]
        value = data[offset + 3 : offset + 3 + length]
        offset += 3 + length
        choice = selector % (len(RECORD_ATTRIBUTES) + 1)
        if choice == len(RECORD_ATTRIBUTES):
            out.append(value)
        else:
            oid = core.ObjectIdentifier(RECORD_ATTRIBUTES[choice].value).dump()
            out.append(_tlv(0x30, oid + _tlv(0x31, _tlv(tag, value))))
    return b"".join(out)


def attribute_records(message_type: MessageType, signing_time: asn1_cms.Time | None) -> bytes:
    """The records of a request's attributes (seed material): contentType, signingTime, the SCEP ones."""
    values: list[tuple[Attr, core.Asn1Value]] = [(Attr.CONTENT_TYPE, asn1_cms.ContentType("data"))]
    if signing_time is not None:
        values.append((Attr.SIGNING_TIME, signing_time.chosen))
    values += [
        (Attr.MESSAGE_TYPE, core.PrintableString(str(int(message_type)))),
        (Attr.TRANSACTION_ID, core.PrintableString(TRANSACTION_ID)),
        (Attr.SENDER_NONCE, core.OctetString(SENDER_NONCE)),
    ]
    return b"".join(_record(RECORD_ATTRIBUTES.index(oid), value.dump()) for oid, value in values)


def _record(selector: int, value_der: bytes) -> bytes:
    """A record for a value whose DER has a one-octet tag and fewer than 128 octets of contents."""
    tag, contents = value_der[0], value_der[2:]
    return bytes([selector, tag, len(contents)]) + contents


def _tlv(tag: int, contents: bytes) -> bytes:
    """One DER element with a single-octet tag."""
    length = len(contents)
    if length < 0x80:
        return bytes([tag, length]) + contents
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(octets)]) + octets + contents
