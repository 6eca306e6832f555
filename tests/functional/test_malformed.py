"""Malformed input, table-driven: each case gets a SCEP FAILURE with the right failInfo or a 4xx —
never a 500 — and nothing is issued. Whatever goes wrong from the RSA step to the parsed content gets
one answer: badMessageCheck with the one generic text (no padding oracle)."""

from __future__ import annotations

import base64
import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from asn1crypto import cms as asn1_cms
from asn1crypto import core
from asn1crypto import csr as asn1_csr
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from scep_server.errors import FailInfo
from scep_server.scep import client, cms
from scep_server.scep.device_key import DeviceKey
from scep_server.scep.envelope import ENVELOPE_FAILURE_TEXT, encrypt
from scep_server.scep.types import Attr, ContentCipher, DigestAlgorithm, MessageType, PKIStatus
from tests.support import pki

from .conftest import CHALLENGE, Device, ScepTestServer


@dataclass(frozen=True)
class Case:
    """A request to send and what must come back: an HTTP status, or 200 with a FAILURE failInfo."""

    name: str
    send: Callable[[ScepTestServer], object]
    http_status: int = 200
    fail_info: FailInfo | None = None
    text: str | None = None  # the exact failInfoText, when it matters


def _post(body: bytes, path: str = "/scep") -> Callable[[ScepTestServer], object]:
    return lambda s: s.http.post(f"{path}?operation=PKIOperation", data=body)


def _get(query: dict[str, str | bytes], path: str = "/scep") -> Callable[[ScepTestServer], object]:
    return lambda s: s.http.get(path, query_string=query)


def _signed(
    server: ScepTestServer,
    device: Device,
    *,
    content: bytes | None = None,
    attributes: list[asn1_cms.CMSAttribute] | None = None,
    digest: DigestAlgorithm = DigestAlgorithm.SHA256,
    signer_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | None = None,
    signer_cert: x509.Certificate | None = None,
    signing_time: datetime.datetime | None = None,
) -> bytes:
    """A pkiMessage assembled from parts, so that each part can be wrong on purpose."""
    if content is None:
        csr = device.csr().public_bytes(serialization.Encoding.DER)
        content = encrypt(csr, server.ca.ra_cert, ContentCipher.AES128)
    if attributes is None:
        attributes = _attrs(MessageType.PKCS_REQ)
    return cms.sign(
        content, signer_cert=signer_cert or device.signer, signer_key=DeviceKey(signer_key or device.key),
        digest=digest, attributes=attributes, signing_time=signing_time,
    )


def _attrs(
    message_type: int | str | None = MessageType.PKCS_REQ,
    transaction_id: str | None = "MALFORMED-TX",
    nonce: bytes | None = b"0123456789abcdef",
) -> list[asn1_cms.CMSAttribute]:
    attrs = []
    if message_type is not None:
        value = str(int(message_type)) if isinstance(message_type, int) else message_type
        attrs.append(cms.make_attribute(Attr.MESSAGE_TYPE, core.PrintableString(value)))
    if transaction_id is not None:
        attrs.append(cms.make_attribute(Attr.TRANSACTION_ID, core.PrintableString(transaction_id)))
    if nonce is not None:
        attrs.append(cms.make_attribute(Attr.SENDER_NONCE, core.OctetString(nonce)))
    return attrs


def _message(build: Callable[[ScepTestServer, Device], bytes], path: str = "/scep") -> Callable[..., object]:
    def send(server: ScepTestServer) -> object:
        return server.http.post(f"{path}?operation=PKIOperation", data=build(server, Device()))

    return send


def _valid(server: ScepTestServer, device: Device, **kwargs: object) -> bytes:
    return server.pkcsreq(device, **kwargs).der  # type: ignore[arg-type]


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1:]


def _tampered_signature(server: ScepTestServer, device: Device) -> bytes:
    der = _valid(server, device)
    info = asn1_cms.ContentInfo.load(der)
    signer = info["content"]["signer_infos"][0]
    signature = bytes(signer["signature"].native)
    return der.replace(signature, _flip(signature, 10))


def _tampered_content(server: ScepTestServer, device: Device) -> bytes:
    der = _valid(server, device)
    envelope = cms.parse_signed(der).content
    assert envelope is not None
    return der.replace(envelope, _flip(envelope, len(envelope) - 5))


def _to_stranger(server: ScepTestServer, device: Device) -> bytes:
    stranger = Device(common_name="not-the-ra")
    csr = device.csr().public_bytes(serialization.Encoding.DER)
    return _signed(server, device, content=encrypt(csr, stranger.signer, ContentCipher.AES128))


def _garbage_ciphertext(server: ScepTestServer, device: Device) -> bytes:
    envelope = encrypt(b"x" * 64, server.ca.ra_cert, ContentCipher.AES128)
    return _signed(server, device, content=envelope)


def _inner(content: bytes) -> Callable[[ScepTestServer, Device], bytes]:
    def build(server: ScepTestServer, device: Device) -> bytes:
        return _signed(server, device, content=encrypt(content, server.ca.ra_cert, ContentCipher.AES128))

    return build


def _inner_typed(message_type: MessageType, content: bytes) -> Callable[[ScepTestServer, Device], bytes]:
    def build(server: ScepTestServer, device: Device) -> bytes:
        envelope = encrypt(content, server.ca.ra_cert, ContentCipher.AES128)
        return _signed(server, device, content=envelope, attributes=_attrs(message_type))

    return build


def _get_crl_trailing_bytes(server: ScepTestServer, device: Device) -> bytes:
    """A well-formed IssuerAndSerialNumber for this CA, plus one byte: parsed strictly, it is refused."""
    issuer = asn1_x509.Name.load(server.ca.ca_cert.subject.public_bytes())
    content = asn1_cms.IssuerAndSerialNumber({"issuer": issuer, "serial_number": 1}).dump() + b"\x00"
    return _inner_typed(MessageType.GET_CRL, content)(server, device)


def _bad_csr_signature(server: ScepTestServer, device: Device) -> bytes:
    der = device.csr().public_bytes(serialization.Encoding.DER)
    return _inner(_flip(der, len(der) - 3))(server, device)


def _weak_key_csr(server: ScepTestServer, device: Device) -> bytes:
    weak = Device(key=rsa.generate_private_key(public_exponent=65537, key_size=1024))
    csr = client.build_csr(weak.key, device.subject, challenge_password=CHALLENGE)
    return _inner(csr.public_bytes(serialization.Encoding.DER))(server, weak)  # signed with its CSR's key


def _ed25519_csr(server: ScepTestServer, device: Device) -> bytes:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    csr = (
        x509.CertificateSigningRequestBuilder().subject_name(device.subject)
        .add_attribute(x509.oid.AttributeOID.CHALLENGE_PASSWORD, CHALLENGE.encode())
        .sign(key, None)
    )
    return _inner(csr.public_bytes(serialization.Encoding.DER))(server, device)


def _reassembled_csr(device: Device, mutate: Callable[[asn1_csr.CertificationRequestInfo], None]) -> bytes:
    """A CSR whose info was changed with asn1crypto (cryptography's builder refuses such requests)."""
    info = asn1_csr.CertificationRequest.load(
        device.csr().public_bytes(serialization.Encoding.DER))["certification_request_info"]
    mutate(info)
    tbs = info.dump(force=True)
    signature = device.key.sign(tbs, padding.PKCS1v15(), hashes.SHA256())
    return asn1_csr.CertificationRequest({
        "certification_request_info": info,
        "signature_algorithm": {"algorithm": "sha256_rsa"},
        "signature": signature,
    }).dump()


def _duplicate_extension_csr(server: ScepTestServer, device: Device) -> bytes:
    san = x509.SubjectAlternativeName([x509.DNSName("a.example")])
    ext = asn1_x509.Extension({"extn_id": "subject_alt_name", "extn_value": asn1_x509.GeneralNames.load(
        san.public_bytes())})

    def mutate(info: asn1_csr.CertificationRequestInfo) -> None:
        attrs = list(info["attributes"])
        attrs.append(asn1_csr.CRIAttribute({"type": "extension_request", "values": [[ext, ext]]}))
        info["attributes"] = attrs

    return _inner(_reassembled_csr(device, mutate))(server, device)


def _repeated_challenge_csr(server: ScepTestServer, device: Device) -> bytes:
    def mutate(info: asn1_csr.CertificationRequestInfo) -> None:
        attrs = list(info["attributes"])
        info["attributes"] = attrs + attrs

    return _inner(_reassembled_csr(device, mutate))(server, device)


def _ec_signer(server: ScepTestServer, device: Device) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = pki.self_signed("ec-signer", key, serial=7, not_after=now + datetime.timedelta(days=1))
    return _signed(server, device, signer_key=key, signer_cert=cert)


def _old_signing_time(server: ScepTestServer, device: Device) -> bytes:
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=3)
    return _signed(server, device, signing_time=past)


def _sha1_on_strict(server: ScepTestServer, device: Device) -> bytes:
    return _valid(server, device, digest=DigestAlgorithm.SHA1)


def _des_on_default(server: ScepTestServer, device: Device) -> bytes:
    return _valid(server, device, cipher=ContentCipher.DES)


def _two_signers(server: ScepTestServer, device: Device) -> bytes:
    der = _valid(server, device)
    info = asn1_cms.ContentInfo.load(der)
    signed = info["content"]
    signer = signed["signer_infos"][0]
    signed["signer_infos"] = [signer, signer]
    return bytes(asn1_cms.ContentInfo({"content_type": "signed_data", "content": signed}).dump(force=True))


def _duplicate_attribute(server: ScepTestServer, device: Device) -> bytes:
    attrs = _attrs() + [cms.make_attribute(Attr.TRANSACTION_ID, core.PrintableString("SECOND"))]
    return _signed(server, device, attributes=attrs)


def _enveloped_not_signed(server: ScepTestServer, device: Device) -> bytes:
    return encrypt(b"hello", server.ca.ra_cert, ContentCipher.AES128)


def _certs_only(server: ScepTestServer, device: Device) -> bytes:
    return cms.certs_only([server.ca.ca_cert])


def _get_cert_foreign_issuer(server: ScepTestServer, device: Device) -> bytes:
    foreign = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Some Other CA")])
    return client.build_get_cert(
        foreign, 1, signer_cert=device.signer, signer_key=device.key, recipient=server.ca.ra_cert
    ).der


def _get_crl_foreign_issuer(server: ScepTestServer, device: Device) -> bytes:
    foreign = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Some Other CA")])
    return client.build_get_crl(
        foreign, 1, signer_cert=device.signer, signer_key=device.key, recipient=server.ca.ra_cert
    ).der


def _truncated(server: ScepTestServer, device: Device) -> bytes:
    der = _valid(server, device)
    return der[: len(der) // 2]


def _trailing_junk_inside(server: ScepTestServer, device: Device) -> bytes:
    return _inner(b"\x30\x03\x02\x01\x05")(server, device)


def _csr_version_99(server: ScepTestServer, device: Device) -> bytes:
    """cryptography raises InvalidVersion (not a ValueError) for this one."""

    def mutate(info: asn1_csr.CertificationRequestInfo) -> None:
        info["version"] = 99

    return _inner(_reassembled_csr(device, mutate))(server, device)


def _signed_csr(device: Device, tbs: bytes, hash_algorithm: hashes.HashAlgorithm, algorithm: str) -> bytes:
    """A CSR over raw ``tbs`` bytes (neither cryptography nor asn1crypto would build these requests)."""
    signature = device.key.sign(tbs, padding.PKCS1v15(), hash_algorithm)
    return asn1_csr.CertificationRequest({
        "certification_request_info": asn1_csr.CertificationRequestInfo.load(tbs),
        "signature_algorithm": {"algorithm": algorithm},
        "signature": signature,
    }).dump()


def _unknown_key_algorithm_csr(server: ScepTestServer, device: Device) -> bytes:
    """rsaEncryption in the SubjectPublicKeyInfo replaced by 1.2.840.113549.1.1.99, which no one implements."""
    tbs = device.csr().tbs_certrequest_bytes
    rsa_encryption = bytes.fromhex("06092a864886f70d010101")
    assert tbs.count(rsa_encryption) == 1
    tbs = tbs.replace(rsa_encryption, bytes.fromhex("06092a864886f70d010163"))
    return _inner(_signed_csr(device, tbs, hashes.SHA256(), "sha256_rsa"))(server, device)


def _sha1_signed_csr(server: ScepTestServer, device: Device) -> bytes:
    csr = x509.load_der_x509_csr(_signed_csr(device, device.csr().tbs_certrequest_bytes, hashes.SHA1(), "sha1_rsa"))
    return server.pkcsreq(device, csr=csr).der


def _with_key_transport(algorithm: dict[str, object]) -> Callable[[ScepTestServer, Device], bytes]:
    def build(server: ScepTestServer, device: Device) -> bytes:
        csr = device.csr().public_bytes(serialization.Encoding.DER)
        info = asn1_cms.ContentInfo.load(encrypt(csr, server.ca.ra_cert, ContentCipher.AES128))
        info["content"]["recipient_infos"][0].chosen["key_encryption_algorithm"] = algorithm
        return _signed(server, device, content=info.dump(force=True))

    return build


def _wrong_wrapped_key(server: ScepTestServer, device: Device) -> bytes:
    """The content key wrapped with random RSA input: the RSA step fails (or, with implicit rejection in
    the library, yields a key of the wrong length), and the answer is the one envelope failure."""
    csr = device.csr().public_bytes(serialization.Encoding.DER)
    info = asn1_cms.ContentInfo.load(encrypt(csr, server.ca.ra_cert, ContentCipher.AES128))
    ktri = info["content"]["recipient_infos"][0].chosen
    ktri["encrypted_key"] = b"\x00" + os.urandom(len(ktri["encrypted_key"].native) - 1)
    return _signed(server, device, content=info.dump(force=True))


def _without_content_type(server: ScepTestServer, device: Device) -> bytes:
    """Signed attributes present but no contentType (RFC 5652 §5.3 requires it), properly re-signed."""
    info = asn1_cms.ContentInfo.load(_valid(server, device))
    signer_info = info["content"]["signer_infos"][0]
    kept = [a for a in signer_info["signed_attrs"] if a["type"].native != "content_type"]
    attrs = asn1_cms.CMSAttributes(kept)
    signer_info["signed_attrs"] = attrs
    to_sign = b"\x31" + attrs.dump(force=True)[1:]
    signer_info["signature"] = device.key.sign(to_sign, padding.PKCS1v15(), hashes.SHA256())
    return bytes(info.dump(force=True))


BAD_REQUEST, BAD_ALG, BAD_CHECK = FailInfo.BAD_REQUEST, FailInfo.BAD_ALG, FailInfo.BAD_MESSAGE_CHECK
BAD_TIME, BAD_CERT_ID = FailInfo.BAD_TIME, FailInfo.BAD_CERT_ID
OPAQUE = ENVELOPE_FAILURE_TEXT

CASES = [
    # HTTP-level: no CertRep possible
    Case("no operation", _get({}), 400),
    Case("unknown operation", _get({"operation": "GetNextCACertificate"}), 400),
    Case("GET without message", _get({"operation": "PKIOperation"}), 400),
    Case("GET message not base64", _get({"operation": "PKIOperation", "message": "!!!not*base64!!!"}), 400),
    Case("GET message base64 of junk", _get({"operation": "PKIOperation", "message": base64.b64encode(b"junk")}), 400),
    Case("GET message empty", _get({"operation": "PKIOperation", "message": ""}), 400),
    Case("POST empty body", _post(b""), 400),
    Case("POST random bytes", _post(os.urandom(300)), 400),
    Case("POST DER-looking junk", _post(b"\x30\x82\x01\x00" + os.urandom(256)), 400),
    Case("POST a lone NULL", _post(b"\x05\x00"), 400),
    Case("truncated DER", _message(_truncated), 400),
    Case("EnvelopedData instead of SignedData", _message(_enveloped_not_signed), 400),
    Case("certs-only SignedData (no signer)", _message(_certs_only), 400),
    Case("two signers", _message(_two_signers), 400),
    Case("duplicate transactionID attribute", _message(_duplicate_attribute), 400),
    Case("no transactionID", _message(lambda s, d: _signed(s, d, attributes=_attrs(transaction_id=None))), 400),
    Case("no senderNonce", _message(lambda s, d: _signed(s, d, attributes=_attrs(nonce=None))), 400),
    Case("short senderNonce", _message(lambda s, d: _signed(s, d, attributes=_attrs(nonce=b"123"))), 400),
    Case("no messageType", _message(lambda s, d: _signed(s, d, attributes=_attrs(message_type=None))), 400),
    Case("non-numeric messageType", _message(lambda s, d: _signed(s, d, attributes=_attrs(message_type="abc"))), 400),
    Case("body over max_body_bytes", _post(b"\x30" + os.urandom(300 * 1024)), 413),
    Case("GET message over the limit", _get({"operation": "PKIOperation", "message": "A" * 400_000}), 413),
    Case("unknown profile", _get({"operation": "GetCACaps"}, path="/scep/no-such-profile"), 404),
    # CertRep FAILURE with failInfo
    Case("unknown messageType 99", _message(lambda s, d: _signed(s, d, attributes=_attrs(message_type=99))),
         fail_info=BAD_REQUEST),
    Case("CertRep sent as a request", _message(lambda s, d: _signed(s, d, attributes=_attrs(message_type=3))),
         fail_info=BAD_REQUEST),
    Case("signature tampered", _message(_tampered_signature), fail_info=BAD_CHECK),
    Case("content tampered (digest mismatch)", _message(_tampered_content), fail_info=BAD_CHECK),
    Case("encrypted to another recipient", _message(_to_stranger), fail_info=BAD_CHECK),
    Case("ciphertext that does not decrypt to a CSR", _message(_garbage_ciphertext), fail_info=BAD_CHECK,
         text=OPAQUE),
    Case("CSR signature invalid", _message(_bad_csr_signature), fail_info=BAD_CHECK, text=OPAQUE),
    Case("CSR with an RSA 1024 key", _message(_weak_key_csr), fail_info=BAD_REQUEST),
    # Not signed with its CSR's key (an Ed25519 key cannot receive the reply): answered like a bad envelope.
    Case("CSR with an Ed25519 key", _message(_ed25519_csr), fail_info=BAD_CHECK, text=OPAQUE),
    Case("content is not a CSR", _message(_inner(b"not a certification request")), fail_info=BAD_CHECK,
         text=OPAQUE),
    Case("content is a tiny unrelated DER", _message(_trailing_junk_inside), fail_info=BAD_CHECK, text=OPAQUE),
    Case("EC signer (reply cannot be enveloped)", _message(_ec_signer), fail_info=BAD_ALG),
    Case("CSR with a duplicated extension", _message(_duplicate_extension_csr), fail_info=BAD_CHECK, text=OPAQUE),
    Case("CSR with a repeated challengePassword", _message(_repeated_challenge_csr), fail_info=BAD_CHECK,
         text=OPAQUE),
    Case("CSR with version 99", _message(_csr_version_99), fail_info=BAD_CHECK, text=OPAQUE),
    Case("CSR with an unknown key algorithm", _message(_unknown_key_algorithm_csr), fail_info=BAD_CHECK,
         text=OPAQUE),
    Case("wrapped content key that does not unwrap", _message(_wrong_wrapped_key), fail_info=BAD_CHECK,
         text=OPAQUE),
    Case("GetCert content that is not IssuerAndSerialNumber",
         _message(_inner_typed(MessageType.GET_CERT, b"\x30\x03\x02\x01\x05")), fail_info=BAD_CHECK, text=OPAQUE),
    Case("CertPoll content that is not IssuerAndSubject",
         _message(_inner_typed(MessageType.CERT_POLL, b"\x04\x02hi")), fail_info=BAD_CHECK, text=OPAQUE),
    Case("GetCRL content with trailing bytes", _message(_get_crl_trailing_bytes), fail_info=BAD_CHECK, text=OPAQUE),
    Case("signed attributes without contentType", _message(_without_content_type), fail_info=BAD_CHECK),
    Case("OAEP key transport with an MD5 hash",
         _message(_with_key_transport({"algorithm": "rsaes_oaep", "parameters": {"hash_algorithm": {
             "algorithm": "md5"}}})), fail_info=BAD_ALG),
    Case("unknown key transport", _message(_with_key_transport({"algorithm": "1.2.840.113549.1.9.16.3.18"})),
         fail_info=BAD_ALG),
    Case("SHA-1-signed CSR on a profile without allow_sha1", _message(_sha1_signed_csr, path="/scep/strict"),
         fail_info=BAD_ALG),
    Case("signingTime three days old", _message(_old_signing_time), fail_info=BAD_TIME),
    Case("single DES on a profile without allow_des", _message(_des_on_default), fail_info=BAD_ALG),
    Case("SHA-1 on a profile without allow_sha1", _message(_sha1_on_strict, path="/scep/strict"), fail_info=BAD_ALG),
    Case("GetCert for a foreign issuer", _message(_get_cert_foreign_issuer), fail_info=BAD_CERT_ID),
    Case("GetCRL for a foreign issuer", _message(_get_crl_foreign_issuer), fail_info=BAD_CERT_ID),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_malformed_input_gets_a_clear_answer(server: ScepTestServer, case: Case) -> None:
    response = case.send(server)
    status = response.status_code  # type: ignore[attr-defined]
    assert status == case.http_status, response.get_data(as_text=True)[:300]  # type: ignore[attr-defined]
    if case.fail_info is not None:
        reply = cms.parse_signed(response.data)  # type: ignore[attr-defined]
        reply.verify()
        assert reply.signer.der == server.ca.ra_cert.public_bytes(serialization.Encoding.DER)
        assert reply.attribute(Attr.PKI_STATUS, core.PrintableString) == PKIStatus.FAILURE.value
        assert reply.attribute(Attr.FAIL_INFO, core.PrintableString) == str(int(case.fail_info))
        if case.text is not None:
            assert reply.attribute(Attr.FAIL_INFO_TEXT, core.UTF8String) == case.text
        assert reply.attribute(Attr.TRANSACTION_ID, core.PrintableString) is not None
        assert reply.attribute(Attr.RECIPIENT_NONCE, core.OctetString) is not None
    assert server.issued_count() == 0


def test_there_are_at_least_thirty_cases() -> None:
    assert len(CASES) >= 30
