"""Reading what the CA answers (scep_server/scep/client/replies.py): CertRep checks, made-up replies and the
public vectors of other implementations."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import pytest
from asn1crypto import cms as asn1_cms
from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from scep_server.scep import cms
from scep_server.scep.client import BuiltRequest, ScepClientError, build_get_crl
from scep_server.scep.device_key import DeviceKey
from scep_server.scep.envelope import encrypt
from scep_server.scep.types import Attr, ContentCipher, DigestAlgorithm, FailInfo, MessageType, PKIStatus
from tests.support.pki import name, new_key, self_signed

from .conftest import NOW, RA_USAGE, Pki

VECTORS = Path(__file__).parents[3] / "data" / "vectors"


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
    assert [c.subject for c in rep.certificates] == [name("device-1"), pki.ca.subject]
    assert rep.certificate_for(pki.device_key.public_key()).subject == name("device-1")
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
    reissued = pki.authority.issue("Test RA", key=pki.ra_key, usage=RA_USAGE).cert
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
    rogue_key = new_key()
    rogue = self_signed("Test RA", rogue_key, ca=False, usage=RA_USAGE)
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
    assert rep.certificates[0].subject == name("device-1")


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
