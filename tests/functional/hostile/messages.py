"""pkiMessages built from their parts (RFC 8894 §3): signed attributes, SignerInfo and SignedData fields, so
a case can change any one of them."""

from __future__ import annotations

import datetime
import os
import uuid
from collections.abc import Callable, Sequence

from asn1crypto import cms as asn1_cms
from asn1crypto import core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from scep_server.scep import cms, envelope
from scep_server.scep.types import Attr, ContentCipher, DigestAlgorithm
from tests.functional.conftest import CHALLENGE, Device
from tests.functional.hostile.support import NONCE, WRONG, Env


def tid() -> str:
    return uuid.uuid4().hex.upper()


def tlv(tag: int, body: bytes) -> bytes:
    if len(body) < 0x80:
        return bytes([tag, len(body)]) + body
    size = len(body).to_bytes((len(body).bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def attribute(oid: str, *values: bytes) -> bytes:
    """One Attribute (RFC 5652 §5.3) as DER, its values given as DER: any type, any number."""
    return tlv(0x30, core.ObjectIdentifier(oid).dump() + tlv(0x31, b"".join(sorted(values))))


def printable(text: str) -> bytes:
    return bytes(core.PrintableString(text).dump())


def octets(data: bytes) -> bytes:
    return bytes(core.OctetString(data).dump())


def utc(when: datetime.datetime) -> bytes:
    return bytes(asn1_cms.Time({"utc_time": when}).dump())


def digest_of(algorithm: DigestAlgorithm, data: bytes) -> bytes:
    h = hashes.Hash(algorithm.hash())
    h.update(data)
    return h.finalize()


Values = dict[str, list[bytes] | None]  # attribute OID -> its values as DER; None: left out


def scep_attributes(
    content: bytes | None, digest: DigestAlgorithm = DigestAlgorithm.SHA256, *, message_type: str = "19",
    transaction_id: str | None = None, nonce: bytes = NONCE, change: Values | None = None,
    extra: Sequence[bytes] = (),
) -> list[bytes]:
    """The signed attributes of a pkiMessage (CMS ones first), each replaceable or removable by OID."""
    values: Values = {
        Attr.CONTENT_TYPE.value: [bytes(asn1_cms.ContentType("data").dump())],
        Attr.MESSAGE_DIGEST.value: [octets(digest_of(digest, content or b""))],
        Attr.SIGNING_TIME.value: [utc(datetime.datetime.now(datetime.UTC))],
        Attr.MESSAGE_TYPE.value: [printable(message_type)],
        Attr.TRANSACTION_ID.value: [printable(transaction_id or tid())],
        Attr.SENDER_NONCE.value: [octets(nonce)],
    }
    values.update(change or {})
    return [attribute(oid, *found) for oid, found in values.items() if found is not None] + list(extra)


def sign_parts(
    content: bytes | None, attributes: Sequence[bytes], *, key: rsa.RSAPrivateKey, cert: x509.Certificate,
    digest: DigestAlgorithm = DigestAlgorithm.SHA256, signed_prefix: bytes = b"\x31",
) -> bytes:
    """A ContentInfo(SignedData) over raw signed attributes, RSA PKCS#1 v1.5 over ``signed_prefix`` + SET body."""
    attrs_set = tlv(0x31, b"".join(attributes))
    signature = key.sign(signed_prefix + attrs_set[1:], padding.PKCS1v15(), digest.hash())
    signer_info = asn1_cms.SignerInfo({
        "version": "v1",
        "sid": asn1_cms.SignerIdentifier({"issuer_and_serial_number": cms.issuer_and_serial(cert)}),
        "digest_algorithm": {"algorithm": digest.value},
        "signed_attrs": asn1_cms.CMSAttributes.load(attrs_set),
        "signature_algorithm": {"algorithm": "rsassa_pkcs1v15"},
        "signature": signature,
    })
    encap: dict[str, object] = {"content_type": "data"}
    if content is not None:
        encap["content"] = content
    signed = asn1_cms.SignedData({
        "version": "v1",
        "digest_algorithms": [{"algorithm": digest.value}],
        "encap_content_info": encap,
        "certificates": [_asn1_cert(cert)],
        "signer_infos": [signer_info],
    })
    return bytes(asn1_cms.ContentInfo({"content_type": "signed_data", "content": signed}).dump())


def _asn1_cert(cert: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))


def sealed(env: Env, content: bytes, cipher: ContentCipher = ContentCipher.AES128,
              recipient: x509.Certificate | None = None) -> bytes:
    return envelope.encrypt(content, recipient or env.server.ca.ra_cert, cipher)


def csr_der(csr: x509.CertificateSigningRequest) -> bytes:
    return csr.public_bytes(serialization.Encoding.DER)


def raw(
    *, device: Device | None = None, content: Callable[[Env, Device], bytes | None] | None = None,
    digest: DigestAlgorithm = DigestAlgorithm.SHA256, message_type: str = "19", transaction_id: str | None = None,
    nonce: bytes = NONCE, change: Values | None = None, extra: Sequence[bytes] = (),
    signed_prefix: bytes = b"\x31",
) -> Callable[[Env], bytes]:
    """A pkiMessage signed by a (fresh) device with its CSR in the envelope, unless ``content`` says otherwise."""

    def build(env: Env) -> bytes:
        signer = device or Device()
        body = content(env, signer) if content else sealed(env, csr_der(signer.csr()))
        attributes = scep_attributes(body, digest, message_type=message_type, transaction_id=transaction_id,
                                 nonce=nonce, change=change, extra=extra)
        return sign_parts(body, attributes, key=signer.key, cert=signer.signer, digest=digest,
                           signed_prefix=signed_prefix)

    return build


def _wrong_challenge(env: Env, device: Device) -> bytes:
    return sealed(env, csr_der(device.csr(WRONG)))


def lenient(**kwargs: object) -> Callable[[Env], bytes]:
    """Accepted as it is, but with a wrong challenge: the answer is badRequest and nothing is issued."""
    return raw(content=_wrong_challenge, **kwargs)  # type: ignore[arg-type]


def mutated(
    build: Callable[[Env], bytes], change: Callable[[Env, asn1_cms.SignedData], None]
) -> Callable[[Env], bytes]:
    """``build``'s pkiMessage with its SignedData changed (outside what the signature covers)."""

    def built(env: Env) -> bytes:
        info = asn1_cms.ContentInfo.load(build(env))
        change(env, info["content"])
        return bytes(info.dump(force=True))

    return built


def valid(env: Env, device: Device | None = None, challenge: str = CHALLENGE) -> bytes:
    signer = device or Device()
    return env.server.pkcsreq(signer, challenge=challenge, transaction_id=tid()).der


def valid_wrong_challenge(env: Env) -> bytes:
    return valid(env, challenge=WRONG)


def with_signer_info(field: str, value: object) -> Callable[[Env, asn1_cms.SignedData], None]:
    def change(env: Env, signed: asn1_cms.SignedData) -> None:
        signed["signer_infos"][0][field] = value

    return change


def signed_field(field: str, value: object) -> Callable[[Env, asn1_cms.SignedData], None]:
    def change(env: Env, signed: asn1_cms.SignedData) -> None:
        signed[field] = value

    return change


def with_signature(transform: Callable[[bytes], bytes]) -> Callable[[Env, asn1_cms.SignedData], None]:
    def change(env: Env, signed: asn1_cms.SignedData) -> None:
        info = signed["signer_infos"][0]
        info["signature"] = transform(bytes(info["signature"].native))

    return change


def signature_by_another_key(env: Env, signed: asn1_cms.SignedData) -> None:
    info = signed["signer_infos"][0]
    to_sign = b"\x31" + info["signed_attrs"].dump()[1:]
    info["signature"] = Device().key.sign(to_sign, padding.PKCS1v15(), hashes.SHA256())


def second_signer(env: Env, signed: asn1_cms.SignedData) -> None:
    other = asn1_cms.ContentInfo.load(valid(env))["content"]
    signed["signer_infos"] = [signed["signer_infos"][0], other["signer_infos"][0]]
    signed["certificates"] = list(signed["certificates"]) + list(other["certificates"])


def certificates_of_a_stranger(env: Env, signed: asn1_cms.SignedData) -> None:
    signed["certificates"] = [_asn1_cert(Device(common_name="stranger").signer)]


def sid_serial_plus_one(env: Env, signed: asn1_cms.SignedData) -> None:
    sid = signed["signer_infos"][0]["sid"].chosen
    sid["serial_number"] = sid["serial_number"].native + 1


def sid_issuer_is_the_ca(env: Env, signed: asn1_cms.SignedData) -> None:
    sid = signed["signer_infos"][0]["sid"].chosen
    sid["issuer"] = asn1_x509.Name.load(env.server.ca.ca_cert.subject.public_bytes())


def sid_key_identifier(env: Env, signed: asn1_cms.SignedData) -> None:
    signed["signer_infos"][0]["sid"] = asn1_cms.SignerIdentifier({"subject_key_identifier": os.urandom(20)})


def outer_content_type(oid: str) -> Callable[[Env], bytes]:
    """The outer ContentInfo's contentType (RFC 5652 §3) replaced by another 9-octet pkcs-7 OID."""

    def build(env: Env) -> bytes:
        der = valid(env)
        signed_data = bytes.fromhex("06092a864886f70d010702")
        assert der.count(signed_data) == 1
        return der.replace(signed_data, bytes(core.ObjectIdentifier(oid).dump()))

    return build


def truncated_at(offset: int) -> Callable[[Env], bytes]:
    def build(env: Env) -> bytes:
        der = valid(env)
        return der[: offset if offset > 0 else len(der) + offset]

    return build


def trailing(junk: bytes) -> Callable[[Env], bytes]:
    return lambda env: valid(env) + junk


def indefinite_length(env: Env) -> bytes:
    """The outer ContentInfo SEQUENCE in BER indefinite-length form (RFC 5652 allows BER outside signedAttrs)."""
    der = valid_wrong_challenge(env)
    assert der[:2] == b"\x30\x82"
    return b"\x30\x80" + der[4:] + b"\x00\x00"
