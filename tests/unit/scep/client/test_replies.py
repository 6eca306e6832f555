"""Client side of SCEP: builders read back with cms, CertRep checks, GetCACert/GetCACaps, HTTP transport."""

from __future__ import annotations

import base64
import hashlib
import itertools
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from asn1crypto import cms as asn1_cms
from asn1crypto import core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AttributeOID, NameOID

from scep_server.scep import cms
from scep_server.scep.client import (
    BuiltRequest,
    CertRep,
    ScepClientError,
    build_cert_poll,
    build_csr,
    build_get_cert,
    build_get_crl,
    build_pkcsreq,
    build_pki_request,
    choose_algorithms,
    parse_caps,
    parse_cert_rep,
    parse_get_ca_cert,
    pick_recipient,
    self_signed_signer,
    transaction_id_for,
)
from scep_server.scep.device_key import DeviceKey
from scep_server.scep.envelope import decrypt, encrypt
from scep_server.scep.types import Attr, ContentCipher, DigestAlgorithm, FailInfo, MessageType, PKIStatus
from scep_server.simulator.http import ScepHttpClient, ScepHttpError

VECTORS = Path(__file__).parents[2] / "data" / "vectors"
NOW = datetime.now(UTC)


# --- fixtures: a CA, an RA, a device ------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key_usage(*, signature: bool = True, encipherment: bool = True, ca: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=signature, content_commitment=False, key_encipherment=encipherment,
        data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip


def _cert(
    subject: str,
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    *,
    issuer: tuple[x509.Certificate, rsa.RSAPrivateKey] | None = None,
    ca: bool = False,
    usage: x509.KeyUsage | None = None,
) -> x509.Certificate:
    issuer_name, issuer_key = (issuer[0].subject, issuer[1]) if issuer else (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if usage is not None:
        builder = builder.add_extension(usage, critical=True)
    return builder.sign(issuer_key, hashes.SHA256())


class Pki:
    """A CA, an RA it issued (signs CertReps, decrypts requests), and a device with its signer."""

    def __init__(self) -> None:
        self.ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ca = _cert("Test CA", self.ca_key, ca=True, usage=_key_usage(signature=False, encipherment=False, ca=True))
        self.ra_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ra = _cert("Test RA", self.ra_key, issuer=(self.ca, self.ca_key), usage=_key_usage())
        self.device_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.signer = self_signed_signer(self.device_key, _name("device-1"))
        self.csr = build_csr(self.device_key, _name("device-1"), challenge_password="s3cret")

    def pkcsreq(self, **kwargs: object) -> BuiltRequest:
        return build_pkcsreq(
            self.csr,
            signer_cert=self.signer,
            signer_key=self.device_key,
            recipient=self.ra,
            **kwargs,  # type: ignore[arg-type]
        )

    def issued(self) -> x509.Certificate:
        return _cert("device-1", self.device_key, issuer=(self.ca, self.ca_key), usage=_key_usage())

    def parse(self, der: bytes, request: BuiltRequest, trusted: Sequence[x509.Certificate] | None = None) -> CertRep:
        return parse_cert_rep(
            der, request=request, signer_key=self.device_key, signer_cert=self.signer,
            trusted_signers=[self.ra, self.ca] if trusted is None else trusted,
        )  # fmt: skip


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


def make_cert_rep(
    pki: Pki,
    request: BuiltRequest,
    *,
    status: PKIStatus = PKIStatus.SUCCESS,
    certificates: Sequence[x509.Certificate] | None = None,
    crls: Sequence[bytes] = (),
    cipher: ContentCipher = ContentCipher.AES128,
    digest: DigestAlgorithm = DigestAlgorithm.SHA256,
    signer: tuple[x509.Certificate, rsa.RSAPrivateKey] | None = None,
    overrides: dict[Attr, core.Asn1Value | None] | None = None,
    envelope: bytes | None = None,
) -> bytes:
    """A CertRep as a CA would answer ``request``; ``overrides`` replaces (None: drops) attributes."""
    attrs: dict[Attr, core.Asn1Value | None] = {
        Attr.MESSAGE_TYPE: core.PrintableString("3"),
        Attr.PKI_STATUS: core.PrintableString(status.value),
        Attr.TRANSACTION_ID: core.PrintableString(request.transaction_id),
        Attr.RECIPIENT_NONCE: core.OctetString(request.sender_nonce),
        Attr.SENDER_NONCE: core.OctetString(b"\x01" * 16),
    }
    if status is PKIStatus.FAILURE:
        attrs[Attr.FAIL_INFO] = core.PrintableString("2")
        attrs[Attr.FAIL_INFO_TEXT] = core.UTF8String("challenge rejected")
    attrs.update(overrides or {})
    content = envelope
    if status is PKIStatus.SUCCESS and content is None:
        inner = cms.certs_only([pki.issued(), pki.ca] if certificates is None else certificates, crls)
        content = encrypt(inner, pki.signer, cipher)
    cert, key = signer or (pki.ra, pki.ra_key)
    return cms.sign(
        content, signer_cert=cert, signer_key=DeviceKey(key), digest=digest,
        attributes=[cms.make_attribute(oid, value) for oid, value in attrs.items() if value is not None],
    )  # fmt: skip


# --- transactionID and signer --------------------------------------------------------------------------


def test_transaction_id_is_upper_hex_sha1_of_spki(pki: Pki) -> None:
    spki = pki.device_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert transaction_id_for(pki.device_key.public_key()) == hashlib.sha1(spki).hexdigest().upper()


def test_self_signed_signer(pki: Pki) -> None:
    signer = pki.signer
    assert signer.subject == signer.issuer == _name("device-1")
    signer.verify_directly_issued_by(signer)
    assert signer.public_key() == pki.device_key.public_key()
    usage = signer.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.key_encipherment
    assert signer.not_valid_before_utc <= datetime.now(UTC) < signer.not_valid_after_utc
    assert signer.not_valid_after_utc - datetime.now(UTC) <= timedelta(days=1)


def test_build_csr_carries_the_challenge(pki: Pki) -> None:
    value = pki.csr.attributes.get_attribute_for_oid(AttributeOID.CHALLENGE_PASSWORD).value
    assert value == b"s3cret"
    assert pki.csr.is_signature_valid


# --- builders --------------------------------------------------------------------------------------------


def _scep_attr(message: cms.SignedMessage, oid: Attr, spec: type[core.Asn1Value]) -> object:
    return message.attribute(oid, spec)


@pytest.mark.parametrize(("cipher", "digest"), list(itertools.product(ContentCipher, DigestAlgorithm)))
def test_pkcsreq_reads_back(pki: Pki, cipher: ContentCipher, digest: DigestAlgorithm) -> None:
    built = pki.pkcsreq(cipher=cipher, digest=digest)
    message = cms.parse_signed(built.der)
    message.verify()
    assert message.digest is digest
    assert message.signer.der == pki.signer.public_bytes(serialization.Encoding.DER)
    assert _scep_attr(message, Attr.MESSAGE_TYPE, core.PrintableString) == "19"
    assert _scep_attr(message, Attr.TRANSACTION_ID, core.PrintableString) == built.transaction_id
    assert _scep_attr(message, Attr.SENDER_NONCE, core.OctetString) == built.sender_nonce
    assert len(built.sender_nonce) == 16
    assert built.transaction_id == transaction_id_for(pki.device_key.public_key())
    assert built.message_type is MessageType.PKCS_REQ
    assert message.content is not None
    opened = decrypt(message.content, pki.ra_key, pki.ra)
    assert opened.cipher is cipher
    assert opened.content == pki.csr.public_bytes(serialization.Encoding.DER)


def test_attribute_encodings_are_printable_and_octet_strings(pki: Pki) -> None:
    message = cms.parse_signed(pki.pkcsreq().der)
    tags = {oid: message.attributes[oid.value].dump()[0] for oid in (Attr.MESSAGE_TYPE, Attr.TRANSACTION_ID)}
    assert tags == {Attr.MESSAGE_TYPE: 0x13, Attr.TRANSACTION_ID: 0x13}
    assert message.attributes[Attr.SENDER_NONCE.value].dump()[0] == 0x04


def test_each_request_gets_a_fresh_nonce(pki: Pki) -> None:
    assert pki.pkcsreq().sender_nonce != pki.pkcsreq().sender_nonce


def test_renewal_and_explicit_transaction_id(pki: Pki) -> None:
    built = pki.pkcsreq(renewal=True, transaction_id="renew-1")
    message = cms.parse_signed(built.der)
    assert built.message_type is MessageType.RENEWAL_REQ
    assert _scep_attr(message, Attr.MESSAGE_TYPE, core.PrintableString) == "17"
    assert _scep_attr(message, Attr.TRANSACTION_ID, core.PrintableString) == "renew-1"


def test_explicit_sender_nonce(pki: Pki) -> None:
    built = build_pki_request(
        MessageType.PKCS_REQ, b"x", signer_cert=pki.signer, signer_key=pki.device_key, recipient=pki.ra,
        transaction_id="T", sender_nonce=b"n" * 16,
    )  # fmt: skip
    assert built.sender_nonce == b"n" * 16
    assert _scep_attr(cms.parse_signed(built.der), Attr.SENDER_NONCE, core.OctetString) == b"n" * 16


def _opened(pki: Pki, built: BuiltRequest) -> bytes:
    message = cms.parse_signed(built.der)
    message.verify()
    assert message.content is not None
    return decrypt(message.content, pki.ra_key, pki.ra).content


def test_cert_poll_content_is_issuer_and_subject(pki: Pki) -> None:
    built = build_cert_poll(
        pki.ca.subject, _name("device-1"), transaction_id="T-1", signer_cert=pki.signer,
        signer_key=pki.device_key, recipient=pki.ra,
    )  # fmt: skip
    assert built.message_type is MessageType.CERT_POLL
    assert built.transaction_id == "T-1"
    content = core.Sequence.load(_opened(pki, built))
    assert asn1_x509.Name.load(content[0].dump()).dump() == pki.ca.subject.public_bytes()
    assert asn1_x509.Name.load(content[1].dump()).dump() == _name("device-1").public_bytes()


@pytest.mark.parametrize(("builder", "message_type"), [(build_get_cert, "21"), (build_get_crl, "22")])
def test_get_cert_and_get_crl_content_is_issuer_and_serial(
    pki: Pki, builder: Callable[..., BuiltRequest], message_type: str
) -> None:
    built = builder(pki.ca.subject, 0x1234, signer_cert=pki.signer, signer_key=pki.device_key, recipient=pki.ra)
    assert _scep_attr(cms.parse_signed(built.der), Attr.MESSAGE_TYPE, core.PrintableString) == message_type
    content = asn1_cms.IssuerAndSerialNumber.load(_opened(pki, built))
    assert content["serial_number"].native == 0x1234
    assert content["issuer"].dump() == pki.ca.subject.public_bytes()
    assert built.transaction_id.isalnum()


@pytest.mark.parametrize("transaction_id", ["", "under_score", "ünïcode", "new\nline"])
def test_transaction_id_must_be_printable(pki: Pki, transaction_id: str) -> None:
    with pytest.raises(ValueError, match="PrintableString"):
        build_pki_request(
            MessageType.PKCS_REQ, b"x", signer_cert=pki.signer, signer_key=pki.device_key, recipient=pki.ra,
            transaction_id=transaction_id,
        )  # fmt: skip


def test_builder_refuses_misuse(pki: Pki) -> None:
    common = {"signer_cert": pki.signer, "signer_key": pki.device_key, "transaction_id": "T"}
    with pytest.raises(ValueError, match="CertRep"):
        build_pki_request(MessageType.CERT_REP, b"x", recipient=pki.ra, **common)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sender_nonce"):
        build_pki_request(MessageType.PKCS_REQ, b"x", recipient=pki.ra, sender_nonce=b"", **common)  # type: ignore[arg-type]
    ec_key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(ValueError, match="RSA"):
        build_pki_request(MessageType.PKCS_REQ, b"x", recipient=_cert("EC RA", ec_key), **common)  # type: ignore[arg-type]


# --- CertRep ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cipher", list(ContentCipher))
def test_cert_rep_success(pki: Pki, cipher: ContentCipher) -> None:
    request = pki.pkcsreq()
    rep = pki.parse(make_cert_rep(pki, request, cipher=cipher, digest=DigestAlgorithm.SHA512), request)
    assert rep.status is PKIStatus.SUCCESS
    assert (rep.fail_info, rep.fail_info_text) == (None, None)
    assert rep.transaction_id == request.transaction_id
    assert rep.recipient_nonce == request.sender_nonce
    assert rep.sender_nonce == b"\x01" * 16
    assert rep.content_cipher is cipher
    assert rep.digest is DigestAlgorithm.SHA512
    assert [c.subject for c in rep.certificates] == [_name("device-1"), pki.ca.subject]
    assert rep.certificate_for(pki.device_key.public_key()).subject == _name("device-1")
    with pytest.raises(ScepClientError, match="no certificate for"):
        rep.certificate_for(pki.ra_key.public_key())


def test_cert_rep_failure_is_returned(pki: Pki) -> None:
    request = pki.pkcsreq()
    rep = pki.parse(make_cert_rep(pki, request, status=PKIStatus.FAILURE), request)
    assert rep.status is PKIStatus.FAILURE
    assert rep.fail_info is FailInfo.BAD_REQUEST
    assert rep.fail_info_text == "challenge rejected"
    assert (rep.certificates, rep.crls, rep.content_cipher) == ((), (), None)


def test_cert_rep_failure_without_fail_info(pki: Pki) -> None:
    request = pki.pkcsreq()
    der = make_cert_rep(pki, request, status=PKIStatus.FAILURE, overrides={Attr.FAIL_INFO: None})
    assert pki.parse(der, request).fail_info is None


def test_cert_rep_pending_without_sender_nonce(pki: Pki) -> None:
    request = pki.pkcsreq()
    rep = pki.parse(make_cert_rep(pki, request, status=PKIStatus.PENDING, overrides={Attr.SENDER_NONCE: None}), request)
    assert rep.status is PKIStatus.PENDING
    assert rep.sender_nonce is None
    assert rep.certificates == ()


def test_cert_rep_get_crl(pki: Pki) -> None:
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(pki.ca.subject)
        .last_update(NOW)
        .next_update(NOW + timedelta(days=1))
        .sign(pki.ca_key, hashes.SHA256())
    )
    request = build_get_crl(pki.ca.subject, 7, signer_cert=pki.signer, signer_key=pki.device_key, recipient=pki.ra)
    der = make_cert_rep(pki, request, certificates=[], crls=[crl.public_bytes(serialization.Encoding.DER)])
    rep = pki.parse(der, request)
    assert [c.issuer for c in rep.crls] == [pki.ca.subject]
    assert rep.certificates == ()


def test_cert_rep_signed_by_trusted_key_in_another_certificate(pki: Pki) -> None:
    request = pki.pkcsreq()
    reissued = _cert("Test RA", pki.ra_key, issuer=(pki.ca, pki.ca_key), usage=_key_usage())
    rep = pki.parse(make_cert_rep(pki, request, signer=(reissued, pki.ra_key)), request)
    assert rep.status is PKIStatus.SUCCESS


def _flip_last_byte(der: bytes) -> bytes:
    return der[:-1] + bytes([der[-1] ^ 0x01])


REJECTIONS = {
    "wrong recipient nonce": ({"overrides": {Attr.RECIPIENT_NONCE: core.OctetString(b"\x00" * 16)}}, "recipientNonce"),
    "missing recipient nonce": ({"overrides": {Attr.RECIPIENT_NONCE: None}}, "no recipientNonce"),
    "wrong transaction id": ({"overrides": {Attr.TRANSACTION_ID: core.PrintableString("OTHER")}}, "transactionID"),
    "missing transaction id": ({"overrides": {Attr.TRANSACTION_ID: None}}, "transactionID"),
    "not a CertRep": ({"overrides": {Attr.MESSAGE_TYPE: core.PrintableString("19")}}, "messageType"),
    "unknown pkiStatus": ({"overrides": {Attr.PKI_STATUS: core.PrintableString("1")}}, "pkiStatus '1'"),
    "missing pkiStatus": ({"overrides": {Attr.PKI_STATUS: None}}, "no pkiStatus"),
    "unknown failInfo": (
        {"status": PKIStatus.FAILURE, "overrides": {Attr.FAIL_INFO: core.PrintableString("9")}},
        "failInfo '9'",
    ),
    "nonce of the wrong type": (
        {"overrides": {Attr.RECIPIENT_NONCE: core.PrintableString("nonce")}},
        "RECIPIENT_NONCE",
    ),
}


@pytest.mark.parametrize("case", list(REJECTIONS))
def test_cert_rep_rejections(pki: Pki, case: str) -> None:
    kwargs, message = REJECTIONS[case]
    request = pki.pkcsreq()
    with pytest.raises(ScepClientError, match=message):
        pki.parse(make_cert_rep(pki, request, **kwargs), request)  # type: ignore[arg-type]


def test_cert_rep_untrusted_signer(pki: Pki) -> None:
    request = pki.pkcsreq()
    rogue_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rogue = _cert("Test RA", rogue_key, usage=_key_usage())
    with pytest.raises(ScepClientError, match="not one of the CA/RA"):
        pki.parse(make_cert_rep(pki, request, signer=(rogue, rogue_key)), request)
    with pytest.raises(ScepClientError, match="not one of the CA/RA"):
        pki.parse(make_cert_rep(pki, request), request, trusted=[pki.ca])


def test_cert_rep_tampered_signature(pki: Pki) -> None:
    request = pki.pkcsreq()
    with pytest.raises(ScepClientError, match="signature is invalid"):
        pki.parse(_flip_last_byte(make_cert_rep(pki, request)), request)


def test_cert_rep_tampered_content(pki: Pki) -> None:
    request = pki.pkcsreq()
    good = encrypt(cms.certs_only([pki.issued()]), pki.signer, ContentCipher.AES128)
    der = make_cert_rep(pki, request, envelope=good)
    tampered = der.replace(good[-16:], bytes(b ^ 0xFF for b in good[-16:]))
    assert tampered != der
    with pytest.raises(ScepClientError, match="signature is invalid"):
        pki.parse(tampered, request)


def test_cert_rep_success_without_envelope(pki: Pki) -> None:
    request = pki.pkcsreq()
    der = make_cert_rep(pki, request, status=PKIStatus.PENDING, overrides={Attr.PKI_STATUS: core.PrintableString("0")})
    with pytest.raises(ScepClientError, match="no pkcsPKIEnvelope"):
        pki.parse(der, request)


def test_cert_rep_success_encrypted_to_someone_else(pki: Pki) -> None:
    request = pki.pkcsreq()
    envelope = encrypt(cms.certs_only([pki.issued()]), pki.ra, ContentCipher.AES128)
    with pytest.raises(ScepClientError, match="envelope cannot be opened"):
        pki.parse(make_cert_rep(pki, request, envelope=envelope), request)


def test_cert_rep_success_without_certificate(pki: Pki) -> None:
    request = pki.pkcsreq()
    with pytest.raises(ScepClientError, match="no certificate"):
        pki.parse(make_cert_rep(pki, request, certificates=[]), request)


def test_cert_rep_get_crl_without_crl(pki: Pki) -> None:
    request = build_get_crl(pki.ca.subject, 7, signer_cert=pki.signer, signer_key=pki.device_key, recipient=pki.ra)
    with pytest.raises(ScepClientError, match="no CRL"):
        pki.parse(make_cert_rep(pki, request), request)


@pytest.mark.parametrize("der", [b"", b"\x30\x03\x02\x01\x00", b"not cms at all"])
def test_cert_rep_garbage(pki: Pki, der: bytes) -> None:
    with pytest.raises(ScepClientError, match="not a SCEP pkiMessage"):
        pki.parse(der, pki.pkcsreq())


def test_cert_rep_with_constructed_encrypted_content(pki: Pki) -> None:
    """Go's pkcs7 (micromdm, smallstep) sends encryptedContent as a constructed [0] of OCTET STRINGs."""
    request = pki.pkcsreq()
    der = encrypt(cms.certs_only([pki.issued()]), pki.signer, ContentCipher.DES)
    enveloped = asn1_cms.ContentInfo.load(der)["content"]
    eci = enveloped["encrypted_content_info"]
    ciphertext = eci["encrypted_content"].native
    segments = core.OctetString(ciphertext[:8]).dump() + core.OctetString(ciphertext[8:]).dump()
    ber_eci = _tlv(0x30, eci["content_type"].dump() + eci["content_encryption_algorithm"].dump() + _tlv(0xA0, segments))
    ber_enveloped = _tlv(0x30, enveloped["version"].dump() + enveloped["recipient_infos"].dump() + ber_eci)
    ber = _tlv(0x30, asn1_cms.ContentType("enveloped_data").dump() + _tlv(0xA0, ber_enveloped))
    rep = pki.parse(make_cert_rep(pki, request, envelope=ber), request)
    assert rep.content_cipher is ContentCipher.DES
    assert rep.certificates[0].subject == _name("device-1")


def _tlv(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(raw)]) + raw + body


# --- public vectors: the outer CertRep checks pass, the envelope is for a key we do not have -----------


def _vector(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


def _request_from(name: str) -> BuiltRequest:
    message = cms.parse_signed(_vector(name))
    tid = message.attribute(Attr.TRANSACTION_ID, core.PrintableString)
    nonce = message.attribute(Attr.SENDER_NONCE, core.OctetString)
    assert isinstance(tid, str) and isinstance(nonce, bytes)
    return BuiltRequest(der=b"", transaction_id=tid, sender_nonce=nonce, message_type=MessageType.PKCS_REQ)


def _signer_of(der: bytes) -> x509.Certificate:
    return x509.load_der_x509_certificate(cms.parse_signed(der).signer.der)


# (CertRep vector, the request it answers); micromdm's CertRep echoes the request nonce as its own
# senderNonce, so the request's transaction and nonce are read from the CertRep itself.
VECTOR_PAIRS = {
    "micromdm_scepserver_2.1.0_CertRep.der": ("micromdm_scepclient_2.1.0_PKCSReq_POST.der", DigestAlgorithm.SHA1),
    "jscep_scep_resp2.der": ("jscep_scep_req2.der", DigestAlgorithm.SHA256),
    "smallstep_CertRep.der": ("PKCSReq_micromdm.der", DigestAlgorithm.SHA1),
}


@pytest.mark.parametrize("rep_name", list(VECTOR_PAIRS))
def test_vector_cert_rep_outer_checks_pass(pki: Pki, rep_name: str) -> None:
    req_name, _ = VECTOR_PAIRS[rep_name]
    der = _vector(rep_name)
    request = _request_from(req_name)
    if rep_name.startswith("micromdm"):
        # The captured client request and CertRep are one exchange only if nonces agree.
        assert cms.parse_signed(der).attribute(Attr.RECIPIENT_NONCE, core.OctetString) == request.sender_nonce
    # Everything up to the envelope is accepted: the failure is the envelope being for another key.
    with pytest.raises(ScepClientError, match="envelope cannot be opened: .*not addressed"):
        pki.parse(der, request, trusted=[_signer_of(der)])


@pytest.mark.parametrize("rep_name", list(VECTOR_PAIRS))
def test_vector_cert_rep_rejections(pki: Pki, rep_name: str) -> None:
    req_name, _ = VECTOR_PAIRS[rep_name]
    der = _vector(rep_name)
    request = _request_from(req_name)
    trusted = [_signer_of(der)]
    other_nonce = BuiltRequest(b"", request.transaction_id, b"\x00" * len(request.sender_nonce), request.message_type)
    with pytest.raises(ScepClientError, match="recipientNonce does not match"):
        pki.parse(der, other_nonce, trusted=trusted)
    other_tid = BuiltRequest(b"", "OTHER", request.sender_nonce, request.message_type)
    with pytest.raises(ScepClientError, match="transactionID"):
        pki.parse(der, other_tid, trusted=trusted)
    with pytest.raises(ScepClientError, match="not one of the CA/RA"):
        pki.parse(der, request, trusted=[pki.ca, pki.ra])
    with pytest.raises(ScepClientError, match="signature is invalid"):
        pki.parse(_flip_last_byte(der), request, trusted=trusted)


@pytest.mark.parametrize("req_name", ["micromdm_scepclient_2.1.0_PKCSReq_POST.der", "jscep_scep_req2.der"])
def test_vector_request_is_not_a_cert_rep(pki: Pki, req_name: str) -> None:
    der = _vector(req_name)
    with pytest.raises(ScepClientError, match="messageType is '19'"):
        pki.parse(der, _request_from(req_name), trusted=[_signer_of(der)])


# --- GetCACert, GetCACaps, recipient choice ------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["application/x-x509-ca-cert", "Application/X-X509-CA-Cert; charset=x"])
def test_get_ca_cert_single(pki: Pki, content_type: str) -> None:
    body = pki.ca.public_bytes(serialization.Encoding.DER)
    assert parse_get_ca_cert(body, content_type) == [pki.ca]


def test_get_ca_cert_ra_chain(pki: Pki) -> None:
    body = cms.certs_only([pki.ra, pki.ca])
    assert parse_get_ca_cert(body, "application/x-x509-ca-ra-cert") == [pki.ra, pki.ca]


@pytest.mark.parametrize("content_type", ["application/octet-stream", ""])
def test_get_ca_cert_sniffs_unknown_types(pki: Pki, content_type: str) -> None:
    assert parse_get_ca_cert(pki.ca.public_bytes(serialization.Encoding.DER), content_type) == [pki.ca]
    assert parse_get_ca_cert(pki.ca.public_bytes(serialization.Encoding.PEM), content_type) == [pki.ca]
    assert parse_get_ca_cert(cms.certs_only([pki.ra, pki.ca]), content_type) == [pki.ra, pki.ca]


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"garbage", "application/x-x509-ca-cert", "not a certificate"),
        (b"garbage", "application/x-x509-ca-ra-cert", "not a certificates-only"),
        (b"garbage", "text/html", "not a certificates-only"),
        (cms.certs_only([]), "application/x-x509-ca-ra-cert", "no certificate"),
    ],
)
def test_get_ca_cert_rejects(body: bytes, content_type: str, message: str) -> None:
    with pytest.raises(ScepClientError, match=message):
        parse_get_ca_cert(body, content_type)


def test_pick_recipient(pki: Pki) -> None:
    signing_ra = _cert("Sign RA", pki.ra_key, issuer=(pki.ca, pki.ca_key), usage=_key_usage(encipherment=False))
    bare_ra = _cert("Bare RA", pki.ra_key, issuer=(pki.ca, pki.ca_key))
    ec_ra = _cert("EC RA", ec.generate_private_key(ec.SECP256R1()), issuer=(pki.ca, pki.ca_key), usage=_key_usage())
    assert pick_recipient([pki.ca]) == pki.ca
    assert pick_recipient([pki.ca, pki.ra]) == pki.ra
    assert pick_recipient([signing_ra, pki.ca, pki.ra]) == pki.ra
    assert pick_recipient([signing_ra, pki.ca]) == pki.ca
    assert pick_recipient([pki.ca, bare_ra, signing_ra]) == bare_ra
    assert pick_recipient([ec_ra, pki.ca]) == pki.ca


def test_pick_recipient_lowest_ca_in_chain(pki: Pki) -> None:
    sub_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sub = _cert("Sub CA", sub_key, issuer=(pki.ca, pki.ca_key), ca=True)
    assert pick_recipient([pki.ca, sub]) == sub
    assert pick_recipient([sub, pki.ca]) == sub


def test_pick_recipient_without_rsa() -> None:
    with pytest.raises(ScepClientError, match="no RSA certificate"):
        pick_recipient([_cert("EC CA", ec.generate_private_key(ec.SECP256R1()), ca=True)])


def test_parse_caps() -> None:
    text = "Renewal\r\nsha-256\r\nAES\nPOSTPKIOperation\n\nX-Vendor-Thing\r\n"
    assert parse_caps(text) == {"Renewal", "SHA-256", "AES", "POSTPKIOperation", "X-Vendor-Thing"}
    assert parse_caps("") == frozenset()


@pytest.mark.parametrize(
    ("caps", "expected"),
    [
        ({"SCEPStandard"}, (ContentCipher.AES128, DigestAlgorithm.SHA256)),
        ({"AES", "SHA-512"}, (ContentCipher.AES128, DigestAlgorithm.SHA512)),
        ({"DES3", "SHA-1"}, (ContentCipher.DES3, DigestAlgorithm.SHA1)),
        (set(), (ContentCipher.DES3, DigestAlgorithm.SHA1)),
    ],
)
def test_choose_algorithms(caps: set[str], expected: tuple[ContentCipher, DigestAlgorithm]) -> None:
    assert choose_algorithms(frozenset(caps)) == expected


# --- HTTP transport (a fake adapter: no sockets) -----------------------------------------------------


class FakeAdapter(requests.adapters.BaseAdapter):
    """Answers every request with a canned response and records what was sent."""

    def __init__(self, status: int = 200, body: bytes = b"", content_type: str = "", error: bool = False) -> None:
        super().__init__()
        self.status, self.body, self.content_type, self.error = status, body, content_type, error
        self.sent: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, **kwargs: object) -> requests.Response:  # type: ignore[override]
        self.sent.append(request)
        if self.error:
            raise requests.ConnectionError("connection refused")
        response = requests.Response()
        response.status_code = self.status
        response._content = self.body
        response.headers["Content-Type"] = self.content_type
        response.request = request
        response.url = request.url or ""
        return response

    def close(self) -> None:
        pass


def _client(adapter: FakeAdapter) -> ScepHttpClient:
    session = requests.Session()
    session.mount("http://", adapter)
    return ScepHttpClient("http://127.0.0.1:9/scep", session=session, timeout=3)


def _query(request: requests.PreparedRequest) -> dict[str, list[str]]:
    return parse_qs(urlsplit(request.url or "").query, keep_blank_values=True)


def test_http_get_ca_caps() -> None:
    adapter = FakeAdapter(body=b"AES\r\nSHA-256\r\n", content_type="text/plain")
    assert _client(adapter).get_ca_caps() == {"AES", "SHA-256"}
    assert adapter.sent[0].method == "GET"
    assert _query(adapter.sent[0]) == {"operation": ["GetCACaps"]}


def test_http_get_ca_caps_error_means_none() -> None:
    assert _client(FakeAdapter(status=404, body=b"nope")).get_ca_caps() == frozenset()


def test_http_get_ca_cert(pki: Pki) -> None:
    adapter = FakeAdapter(body=cms.certs_only([pki.ra, pki.ca]), content_type="application/x-x509-ca-ra-cert")
    assert _client(adapter).get_ca_cert("default") == [pki.ra, pki.ca]
    assert _query(adapter.sent[0]) == {"operation": ["GetCACert"], "message": ["default"]}


def test_http_pki_operation_post() -> None:
    adapter = FakeAdapter(body=b"reply", content_type="application/x-pki-message")
    assert _client(adapter).pki_operation(b"\x30\x00+/") == b"reply"
    sent = adapter.sent[0]
    assert sent.method == "POST"
    assert sent.body == b"\x30\x00+/"
    assert sent.headers["Content-Type"] == "application/x-pki-message"
    assert _query(sent) == {"operation": ["PKIOperation"]}


def test_http_pki_operation_get_escapes_base64() -> None:
    der = bytes(range(256)) * 3  # base64 of this holds '+', '/' and '=' padding
    adapter = FakeAdapter(body=b"reply")
    assert _client(adapter).pki_operation(der, method="GET") == b"reply"
    sent = adapter.sent[0]
    raw_query = urlsplit(sent.url or "").query
    assert "+" not in raw_query and "/" not in raw_query
    assert sent.method == "GET"
    assert base64.b64decode(_query(sent)["message"][0]) == der


def test_http_pki_operation_errors() -> None:
    with pytest.raises(ScepHttpError) as info:
        _client(FakeAdapter(status=500, body=b"E" * 500)).pki_operation(b"x")
    assert info.value.status_code == 500
    assert info.value.body == "E" * 200
    assert "HTTP 500" in str(info.value)
    with pytest.raises(ScepHttpError) as info:
        _client(FakeAdapter(error=True)).pki_operation(b"x")
    assert info.value.status_code is None
    with pytest.raises(ValueError, match="POST or GET"):
        _client(FakeAdapter()).pki_operation(b"x", method="PUT")


def test_http_client_closes_only_its_own_session() -> None:
    with ScepHttpClient("http://127.0.0.1:9/scep") as own:
        assert isinstance(own.session, requests.Session)
    adapter = FakeAdapter()
    client = _client(adapter)
    client.close()
    assert client.session.adapters["http://"] is adapter
