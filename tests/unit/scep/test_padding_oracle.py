"""Finding 1 (CBC padding oracle on the SCEP envelope) and finding 11 (strictness), at the decoding layer.

From the RSA step to the parsed content there must be one failure, raised on one path: bad key
transport, bad padding and bad content are indistinguishable. Algorithms are refused before decrypting.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache

import pytest
from asn1crypto import cms as asn1_cms
from asn1crypto import core
from asn1crypto import csr as asn1_csr
from cryptography import x509
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.x509.oid import NameOID

from scep_server.errors import BadAlg, BadMessageCheck, FailInfo, PKIFailure
from scep_server.scep import client, cms, message
from scep_server.scep.device_key import DeviceKey
from scep_server.scep.envelope import (
    ENVELOPE_FAILURE_TEXT,
    CmsDecrypter,
    Decrypted,
    Envelope,
    EnvelopeRejected,
    decrypt,
    encrypt,
    parse_enveloped,
)
from scep_server.scep.types import Attr, ContentCipher, DigestAlgorithm, KeyTransport, MessageType

CHALLENGE = "profile-static-challenge-0123456789"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass(frozen=True)
class Party:
    key: rsa.RSAPrivateKey
    cert: x509.Certificate


@cache
def _party(cn: str) -> Party:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return Party(key, client.self_signed_signer(key, _name(cn)))


def ra() -> Party:
    return _party("Test RA")


def device() -> Party:
    return _party("device-1")


def attacker() -> Party:
    return _party("attacker")


def _csr_der(hash_algorithm: hashes.HashAlgorithm | None = None) -> bytes:
    csr = client.build_csr(device().key, _name("device-1"), challenge_password=CHALLENGE)
    der = csr.public_bytes(serialization.Encoding.DER)
    if hash_algorithm is None:
        return der
    tbs = csr.tbs_certrequest_bytes  # re-signed by hand: cryptography refuses to build SHA-1 CSRs
    signature = device().key.sign(tbs, asym_padding.PKCS1v15(), hash_algorithm)
    return bytes(asn1_csr.CertificationRequest({
        "certification_request_info": asn1_csr.CertificationRequestInfo.load(tbs),
        "signature_algorithm": {"algorithm": f"{hash_algorithm.name}_rsa"},
        "signature": signature,
    }).dump())


def _captured_envelope(cipher: ContentCipher = ContentCipher.AES128) -> bytes:
    """The pkcsPKIEnvelope of a genuine enrollment, as a network observer captures it."""
    csr = x509.load_der_x509_csr(_csr_der())
    built = client.build_pkcsreq(
        csr, signer_cert=device().cert, signer_key=device().key, recipient=ra().cert, cipher=cipher
    )
    content = cms.parse_signed(built.der).content
    assert content is not None
    return content


def _rewrap(envelope: bytes, message_type: MessageType = MessageType.PKCS_REQ, signer: Party | None = None) -> bytes:
    """The envelope in the attacker's own SignedData, signed with its own self-signed key."""
    signer = signer or attacker()
    attrs = [
        cms.make_attribute(Attr.MESSAGE_TYPE, core.PrintableString(str(int(message_type)))),
        cms.make_attribute(Attr.TRANSACTION_ID, core.PrintableString(os.urandom(8).hex())),
        cms.make_attribute(Attr.SENDER_NONCE, core.OctetString(os.urandom(16))),
    ]
    return cms.sign(envelope, signer_cert=signer.cert, signer_key=DeviceKey(signer.key), digest=DigestAlgorithm.SHA256,
                    attributes=attrs)


def _parts(envelope: bytes) -> tuple[bytes, bytes]:
    eci = asn1_cms.ContentInfo.load(envelope)["content"]["encrypted_content_info"]
    return bytes(eci["content_encryption_algorithm"]["parameters"].native), bytes(eci["encrypted_content"].native)


def _with(envelope: bytes, iv: bytes, ciphertext: bytes) -> bytes:
    info = asn1_cms.ContentInfo.load(envelope)
    eci = info["content"]["encrypted_content_info"]
    eci["content_encryption_algorithm"] = {"algorithm": eci["content_encryption_algorithm"]["algorithm"].native,
                                           "parameters": iv}
    eci["encrypted_content"] = ciphertext
    return bytes(info.dump(force=True))


def _final_block_variants(envelope: bytes) -> Iterator[bytes]:
    """The classic attack on the final block: the last byte of the block before it takes all 256 values
    (its first byte is flipped as well, so that every variant is a tampered one)."""
    iv, ciphertext = _parts(envelope)
    at = len(ciphertext) - 2 * 16
    for value in range(256):
        block = bytes([ciphertext[at] ^ 0x80]) + ciphertext[at + 1:at + 15] + bytes([value])
        yield _with(envelope, iv, ciphertext[:at] + block + ciphertext[at + 16:])


def _padding_is_valid(envelope: bytes) -> bool:
    """What the oracle used to reveal, computed here with the RA key."""
    ktri = asn1_cms.ContentInfo.load(envelope)["content"]["recipient_infos"][0].chosen
    key = ra().key.decrypt(bytes(ktri["encrypted_key"].native), asym_padding.PKCS1v15())
    iv, ciphertext = _parts(envelope)
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        unpadder.update(decryptor.update(ciphertext) + decryptor.finalize())
        unpadder.finalize()
    except ValueError:
        return False
    return True


Answer = tuple[str, FailInfo, str, str]


def _answer(der: bytes, options: message.DecodeOptions | None = None) -> Answer | message.PkiRequest:
    """What the server would answer: the failure's class, failInfo, device text and detail."""
    signed, context = message.read_envelope(der)
    try:
        return message.open_request(signed, context, ra_key=ra().key, ra_cert=ra().cert,
                                    options=options or message.DecodeOptions())
    except PKIFailure as failure:
        return type(failure).__name__, failure.fail_info, failure.public_text, failure.detail


UNIFORM: Answer = ("EnvelopeRejected", FailInfo.BAD_MESSAGE_CHECK, ENVELOPE_FAILURE_TEXT,
                   ENVELOPE_FAILURE_TEXT)


# --- one failure, one path ------------------------------------------------------------------------------


def test_finding1_padding_oracle_256_final_block_variants_answer_alike() -> None:
    envelope = _captured_envelope()
    variants = list(_final_block_variants(envelope))
    valid = [v for v in variants if _padding_is_valid(v)]
    assert valid and len(valid) < len(variants)  # both kinds are among them: the oracle had something to say
    answers = {_answer(_rewrap(v)) for v in variants}
    assert answers == {UNIFORM}


def test_finding1_content_of_every_message_type_fails_alike() -> None:
    """Bad padding, garbage that pads well, and good padding around content of the wrong kind."""
    envelope = _captured_envelope()
    iv, ciphertext = _parts(envelope)
    garbage = encrypt(os.urandom(64), ra().cert, ContentCipher.AES128)
    bad_padding = next(v for v in _final_block_variants(envelope) if not _padding_is_valid(v))
    for message_type in (MessageType.PKCS_REQ, MessageType.RENEWAL_REQ, MessageType.CERT_POLL,
                         MessageType.GET_CERT, MessageType.GET_CRL):
        answers = {_answer(_rewrap(e, message_type)) for e in (bad_padding, garbage)}
        assert answers == {UNIFORM}, message_type
    for message_type in (MessageType.CERT_POLL, MessageType.GET_CERT, MessageType.GET_CRL):
        assert _answer(_rewrap(envelope, message_type)) == UNIFORM  # a CSR is not their content


def test_finding1_bad_padding_still_runs_the_content_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    """The work done does not depend on the padding: the content is parsed either way."""
    parsed: list[int] = []
    real = message._with_content

    def counting(request: message.PkiRequest, content: bytes) -> message.PkiRequest:
        parsed.append(len(content))
        return real(request, content)

    monkeypatch.setattr(message, "_with_content", counting)
    envelope = _captured_envelope()
    variants = list(_final_block_variants(envelope))
    bad = next(v for v in variants if not _padding_is_valid(v))
    good = next(v for v in variants if _padding_is_valid(v))
    assert _answer(_rewrap(bad)) == _answer(_rewrap(good)) == UNIFORM
    assert len(parsed) == 2
    assert abs(parsed[0] - parsed[1]) <= 16  # about the same amount of content either way


class _FakeRsaKey:
    """An RA key whose RSA step behaves like one OpenSSL or another on a bad wrapped key."""

    def __init__(self, behaviour: Callable[[], bytes]) -> None:
        self.behaviour = behaviour

    def decrypt(self, ciphertext: bytes, padding: asym_padding.AsymmetricPadding) -> bytes:
        return self.behaviour()


def _raise() -> bytes:
    raise ValueError("Decryption failed")


@pytest.mark.parametrize("behaviour", [
    pytest.param(_raise, id="raises (explicit rejection)"),
    pytest.param(lambda: os.urandom(37), id="wrong length (implicit rejection)"),
    pytest.param(lambda: b"", id="empty"),
    pytest.param(lambda: os.urandom(16), id="right length, wrong key"),
])
def test_finding1_key_transport_failure_is_the_same_failure_at_the_content_stage(
    behaviour: Callable[[], bytes],
) -> None:
    """No Bleichenbacher oracle whatever the library does: a random key is substituted and decryption
    goes on, failing where bad padding or bad content fail."""
    envelope = parse_enveloped(_captured_envelope(), ra().cert)
    opened = envelope.open(_FakeRsaKey(behaviour))
    assert opened.problem is not None
    assert len(envelope.ciphertext) - 16 <= len(opened.content) < len(envelope.ciphertext)
    key = _FakeRsaKey(behaviour)
    signed, context = message.read_envelope(_rewrap(_captured_envelope()))
    with pytest.raises(EnvelopeRejected) as caught:
        message.open_request(signed, context, ra_key=key, ra_cert=ra().cert, options=message.DecodeOptions())
    assert (caught.value.fail_info, caught.value.public_text) == (FailInfo.BAD_MESSAGE_CHECK,
                                                                  ENVELOPE_FAILURE_TEXT)


def test_finding1_random_wrapped_key_fails_like_bad_padding() -> None:
    info = asn1_cms.ContentInfo.load(_captured_envelope())
    ktri = info["content"]["recipient_infos"][0].chosen
    ktri["encrypted_key"] = b"\x00" + os.urandom(255)
    assert _answer(_rewrap(bytes(info.dump(force=True)))) == UNIFORM


def test_finding1_csr_version_99_is_the_uniform_failure_not_an_error() -> None:
    tbs = asn1_csr.CertificationRequestInfo.load(x509.load_der_x509_csr(_csr_der()).tbs_certrequest_bytes)
    tbs["version"] = 99
    raw = tbs.dump(force=True)
    csr = asn1_csr.CertificationRequest({
        "certification_request_info": tbs, "signature_algorithm": {"algorithm": "sha256_rsa"},
        "signature": device().key.sign(raw, asym_padding.PKCS1v15(), hashes.SHA256()),
    }).dump()
    with pytest.raises(x509.InvalidVersion):
        x509.load_der_x509_csr(csr)  # what used to escape as a 500
    envelope = encrypt(csr, ra().cert, ContentCipher.AES128)
    assert _answer(_rewrap(envelope, signer=device())) == UNIFORM


def test_finding1_untampered_envelope_still_opens() -> None:
    request = _answer(_rewrap(_captured_envelope(), signer=device()))
    assert isinstance(request, message.PkiRequest) and request.csr is not None
    assert request.csr_der == _csr_der()


# --- wrapped-key reuse ------------------------------------------------------------------------------


def test_finding1_wrapped_key_reused_with_other_ciphertext_is_refused_before_decrypting(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    options = message.DecodeOptions(key_ledger=message.ContentKeyLedger())
    envelope = _captured_envelope()
    genuine = _rewrap(envelope, signer=device())
    assert isinstance(_answer(genuine, options), message.PkiRequest)
    assert isinstance(_answer(genuine, options), message.PkiRequest)  # a retry resends the same bytes
    opened: list[bytes] = []
    real_open = Envelope.open

    def counting(self: Envelope, key: CmsDecrypter) -> Decrypted:
        opened.append(self.ciphertext)
        return real_open(self, key)

    monkeypatch.setattr(Envelope, "open", counting)
    for variant in list(_final_block_variants(envelope))[:8]:
        for message_type in (MessageType.PKCS_REQ, MessageType.GET_CRL):
            assert _answer(_rewrap(variant, message_type), options) == UNIFORM
    assert opened == []
    assert "already used with another ciphertext" in caplog.text


def test_ledger_binds_the_first_ciphertext_and_is_bounded() -> None:
    ledger = message.ContentKeyLedger(max_entries=2)
    first, second, third = (parse_enveloped(_captured_envelope(), ra().cert) for _ in range(3))
    iv, ciphertext = first.iv, first.ciphertext
    tampered = Envelope(first.cipher, first.key_transport, first.encrypted_key, iv, ciphertext[::-1])
    assert ledger.admit(first) and ledger.admit(first)
    assert not ledger.admit(tampered)
    assert ledger.admit(second) and ledger.admit(third)  # first is now the oldest and is forgotten
    assert ledger.admit(tampered)


# --- algorithms refused before decrypting ------------------------------------------------------------


@pytest.fixture
def no_decryption(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: Envelope, key: CmsDecrypter) -> Decrypted:
        raise AssertionError("decrypted an envelope whose algorithm is refused")

    monkeypatch.setattr(Envelope, "open", refuse)


@pytest.mark.parametrize(("cipher", "options", "text"), [
    (ContentCipher.DES, message.DecodeOptions(), "allow_des"),
    (ContentCipher.DES3, message.DecodeOptions(allow_3des=False), "allow_3des"),
])
def test_3des_and_des_switches_refuse_before_decrypting(
    no_decryption: None, cipher: ContentCipher, options: message.DecodeOptions, text: str,
) -> None:
    answer = _answer(_rewrap(_captured_envelope(cipher), signer=device()), options)
    assert not isinstance(answer, message.PkiRequest)
    assert answer[:2] == ("BadAlg", FailInfo.BAD_ALG) and text in answer[3]


def test_3des_is_accepted_by_default() -> None:
    request = _answer(_rewrap(_captured_envelope(ContentCipher.DES3), signer=device()))
    assert isinstance(request, message.PkiRequest) and request.cipher is ContentCipher.DES3


def _with_key_encryption(envelope: bytes, algorithm: dict[str, object]) -> bytes:
    info = asn1_cms.ContentInfo.load(envelope)
    info["content"]["recipient_infos"][0].chosen["key_encryption_algorithm"] = algorithm
    return bytes(info.dump(force=True))


@pytest.mark.parametrize("algorithm", [
    {"algorithm": "rsaes_oaep", "parameters": {"hash_algorithm": {"algorithm": "md5"}}},
    {"algorithm": "rsaes_oaep", "parameters": {"p_source_algorithm": {"algorithm": "p_specified",
                                                                      "parameters": b"label"}}},
    {"algorithm": "rsaes_oaep", "parameters": {"mask_gen_algorithm": {"algorithm": "mgf1", "parameters": {
        "algorithm": "md5"}}}},
    {"algorithm": "1.2.840.113549.1.9.16.3.18"},
], ids=["OAEP-MD5", "OAEP with a label", "MGF1-MD5", "unknown key transport"])
def test_unsupported_key_transport_is_refused_before_decrypting(
    no_decryption: None, algorithm: dict[str, object],
) -> None:
    answer = _answer(_rewrap(_with_key_encryption(_captured_envelope(), algorithm), signer=device()))
    assert not isinstance(answer, message.PkiRequest)
    assert answer[:2] == ("BadAlg", FailInfo.BAD_ALG)


# --- RSAES-OAEP parameters ---------------------------------------------------------------------------


@pytest.mark.parametrize(("oaep_hash", "mgf_hash"), [
    (DigestAlgorithm.SHA1, DigestAlgorithm.SHA1),
    (DigestAlgorithm.SHA256, DigestAlgorithm.SHA256),
    (DigestAlgorithm.SHA384, DigestAlgorithm.SHA1),
    (DigestAlgorithm.SHA512, DigestAlgorithm.SHA256),
])
def test_oaep_parameters_are_written_and_read(oaep_hash: DigestAlgorithm, mgf_hash: DigestAlgorithm) -> None:
    transport = KeyTransport.oaep(oaep_hash, mgf_hash)
    envelope = encrypt(b"hello", ra().cert, ContentCipher.AES256, transport)
    ktri = asn1_cms.ContentInfo.load(envelope)["content"]["recipient_infos"][0].chosen
    params = ktri["key_encryption_algorithm"]["parameters"]
    assert params["hash_algorithm"]["algorithm"].native == oaep_hash.value
    assert params["mask_gen_algorithm"]["parameters"]["algorithm"].native == mgf_hash.value
    opened = decrypt(envelope, ra().key, ra().cert)
    assert opened.content == b"hello" and opened.key_transport == transport


def test_oaep_sha256_envelope_does_not_open_as_sha1() -> None:
    """The parameters are used, not assumed: read as SHA-1 the key does not unwrap."""
    envelope = encrypt(b"hello", ra().cert, ContentCipher.AES128, KeyTransport.oaep(DigestAlgorithm.SHA256))
    as_sha1 = _with_key_encryption(envelope, {"algorithm": "rsaes_oaep"})
    with pytest.raises(EnvelopeRejected) as caught:
        decrypt(as_sha1, ra().key, ra().cert)
    assert "cannot be decrypted" in caught.value.reason


def test_oaep_default_parameters_are_omitted() -> None:
    envelope = encrypt(b"x", ra().cert, ContentCipher.AES128, KeyTransport.RSA_OAEP)
    ktri = asn1_cms.ContentInfo.load(envelope)["content"]["recipient_infos"][0].chosen
    assert ktri["key_encryption_algorithm"]["parameters"].dump() == b"\x30\x00"  # RFC 4055 §4.1
    assert decrypt(envelope, ra().key, ra().cert).key_transport == KeyTransport.RSA_OAEP


def test_oaep_sha256_round_trip_through_the_server_side() -> None:
    """The client asks for OAEP-SHA256; the server opens it and answers with the same key transport."""
    csr = x509.load_der_x509_csr(_csr_der())
    transport = KeyTransport.oaep(DigestAlgorithm.SHA256)
    built = client.build_pkcsreq(csr, signer_cert=device().cert, signer_key=device().key, recipient=ra().cert,
                                 key_transport=transport)
    request = _answer(built.der)
    assert isinstance(request, message.PkiRequest) and request.key_transport == transport
    responder = message.CertRepSigner(ra().cert, DeviceKey(ra().key))
    reply = message.cert_rep_success(request.context, responder, cipher=request.cipher,
                                     key_transport=request.key_transport, certificates=[ra().cert])
    rep = client.parse_cert_rep(reply, request=built, signer_key=device().key, signer_cert=device().cert,
                                trusted_signers=[ra().cert])
    assert rep.certificates == (ra().cert,)
    reply_envelope = cms.parse_signed(reply).content
    assert reply_envelope is not None
    assert parse_enveloped(reply_envelope, device().cert).key_transport == transport


# --- finding 11: strictness --------------------------------------------------------------------------


def _message_without_content_type() -> bytes:
    info = asn1_cms.ContentInfo.load(_rewrap(_captured_envelope(), signer=device()))
    signer_info = info["content"]["signer_infos"][0]
    attrs = asn1_cms.CMSAttributes([a for a in signer_info["signed_attrs"] if a["type"].native != "content_type"])
    signer_info["signed_attrs"] = attrs
    to_sign = b"\x31" + attrs.dump(force=True)[1:]
    signer_info["signature"] = device().key.sign(to_sign, asym_padding.PKCS1v15(), hashes.SHA256())
    return bytes(info.dump(force=True))


def test_finding11_signed_attributes_without_content_type_are_refused() -> None:
    signed = cms.parse_signed(_message_without_content_type())
    assert signed.attribute(Attr.MESSAGE_DIGEST, core.OctetString) is not None  # the signature is sound
    with pytest.raises(BadMessageCheck, match="contentType"):
        signed.verify()


def test_finding11_signing_time_stays_optional() -> None:
    info = asn1_cms.ContentInfo.load(_rewrap(_captured_envelope(), signer=device()))
    signer_info = info["content"]["signer_infos"][0]
    attrs = asn1_cms.CMSAttributes([a for a in signer_info["signed_attrs"] if a["type"].native != "signing_time"])
    signer_info["signed_attrs"] = attrs
    signer_info["signature"] = device().key.sign(b"\x31" + attrs.dump(force=True)[1:], asym_padding.PKCS1v15(),
                                                 hashes.SHA256())
    assert isinstance(_answer(bytes(info.dump(force=True))), message.PkiRequest)


def test_finding11_sha1_signed_csr_is_refused_where_sha1_is_off() -> None:
    envelope = encrypt(_csr_der(hashes.SHA1()), ra().cert, ContentCipher.AES128)
    der = _rewrap(envelope, signer=device())
    answer = _answer(der, message.DecodeOptions(allow_sha1=False))
    assert not isinstance(answer, message.PkiRequest)
    assert answer[:2] == ("BadAlg", FailInfo.BAD_ALG) and "SHA-1-signed" in answer[3]
    allowed = _answer(der, message.DecodeOptions(allow_sha1=True))
    assert isinstance(allowed, message.PkiRequest) and allowed.csr is not None


def test_finding11_sha256_signed_csr_passes_where_sha1_is_off() -> None:
    der = _rewrap(_captured_envelope(), signer=device())
    assert isinstance(_answer(der, message.DecodeOptions(allow_sha1=False)), message.PkiRequest)


def test_bad_alg_answers_are_not_the_envelope_failure() -> None:
    assert not issubclass(BadAlg, EnvelopeRejected)
    assert issubclass(EnvelopeRejected, BadMessageCheck)

