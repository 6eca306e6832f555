"""Finding 1 (CBC padding oracle on the SCEP envelope) and finding 11 (strictness) against a running server.

The attacker holds one captured enrollment, re-wraps tampered copies of its envelope in a SignedData of
its own (signed with its own self-signed key) and watches the answers. They must all be the same.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from asn1crypto import cms as asn1_cms
from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from werkzeug.test import TestResponse

from scep_server.ca.authority import init_ca
from scep_server.errors import FailInfo
from scep_server.runtime import build_runtime
from scep_server.scep import client, cms
from scep_server.scep.device_key import DeviceKey
from scep_server.scep.envelope import ENVELOPE_FAILURE_TEXT, encrypt, parse_enveloped
from scep_server.scep.types import Attr, ContentCipher, DigestAlgorithm, KeyTransport, MessageType, PKIStatus
from scep_server.web import create_app
from scep_server.web.budget import FailureBudget
from scep_server.web.scep import BUDGET_EXTENSION
from tests.support.clocks import FakeClock

from .conftest import CHALLENGE, Device, ScepTestServer, make_config

CONFIG = """
data_dir: {data_dir}
trusted_proxy_hops: {proxy_hops}
failure_budget: {{max_failures: {max_failures}, window_seconds: 60}}
ca:
  name: test-ca
  subject: "CN=Test Issuing CA,O=scep-server tests"
  key_size: 2048
profiles:
  default:
    challenge: {{type: static, secret: {{value: "{challenge}"}}}}
  no3des:
    challenge: {{type: static, secret: {{value: "{challenge}"}}}}
    allow_3des: false
  strict:
    challenge: {{type: static, secret: {{value: "{challenge}"}}}}
    allow_sha1: false
"""
BLOCK = 16  # AES


def _start(tmp_path: Path, *, max_failures: int = 0, proxy_hops: int = 0) -> ScepTestServer:
    config = make_config(tmp_path, CONFIG, max_failures=max_failures, proxy_hops=proxy_hops)
    init_ca(config.ca_dir, config.ca, None)
    runtime = build_runtime(config)
    app = create_app(config, runtime_override=runtime, start_background=False)
    return ScepTestServer(runtime, app.test_client(), tmp_path / "var")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ScepTestServer]:
    """No failure budget: the envelope layer alone is under test."""
    started = _start(tmp_path)
    try:
        yield started
    finally:
        started.runtime.close()


def _without_key_ledger(server: ScepTestServer, profile: str = "default") -> None:
    """Switch off the wrapped-key ledger, so that every tampered envelope reaches the RSA step."""
    current = server.runtime.profiles[profile]
    server.runtime.profiles[profile] = replace(current, decode=replace(current.decode, key_ledger=None))


# --- the attacker ------------------------------------------------------------------------------------


class Attacker:
    """Has a captured pkcsPKIEnvelope and a self-signed key of its own; sees only the HTTP answers."""

    def __init__(self, server: ScepTestServer) -> None:
        self.server = server
        self.me = Device(common_name="attacker")

    def ask(self, envelope: bytes, message_type: MessageType = MessageType.PKCS_REQ) -> tuple[object, ...]:
        attrs = [
            cms.make_attribute(Attr.MESSAGE_TYPE, core.PrintableString(str(int(message_type)))),
            cms.make_attribute(Attr.TRANSACTION_ID, core.PrintableString(os.urandom(8).hex())),
            cms.make_attribute(Attr.SENDER_NONCE, core.OctetString(os.urandom(16))),
        ]
        der = cms.sign(envelope, signer_cert=self.me.signer, signer_key=DeviceKey(self.me.key),
                       digest=DigestAlgorithm.SHA256, attributes=attrs)
        return observe(self.server.post(der))


def observe(response: TestResponse) -> tuple[object, ...]:
    """Everything an attacker can see of an answer, but its random nonce and signature."""
    if response.status_code != 200:
        return response.status_code, response.get_data(as_text=True)
    reply = cms.parse_signed(response.data)
    return (
        response.status_code, response.mimetype, len(response.data) // 64,
        reply.attribute(Attr.PKI_STATUS, core.PrintableString),
        reply.attribute(Attr.FAIL_INFO, core.PrintableString),
        reply.attribute(Attr.FAIL_INFO_TEXT, core.UTF8String),
        not reply.content,
    )


UNIFORM = (200, "application/x-pki-message", PKIStatus.FAILURE.value, str(int(FailInfo.BAD_MESSAGE_CHECK)),
           ENVELOPE_FAILURE_TEXT, True)


def _uniform(answer: tuple[object, ...]) -> bool:
    return answer[:2] + answer[3:] == UNIFORM


def _captured(server: ScepTestServer, device: Device) -> tuple[bytes, bytes]:
    """A genuine enrollment (sent, and answered SUCCESS) and its pkcsPKIEnvelope as seen on the wire."""
    built = server.pkcsreq(device)
    assert server.send(built, device).status is PKIStatus.SUCCESS
    envelope = cms.parse_signed(built.der).content
    assert envelope is not None
    return envelope, device.csr().public_bytes(serialization.Encoding.DER)


def _parts(envelope: bytes) -> tuple[bytes, bytes]:
    eci = asn1_cms.ContentInfo.load(envelope)["content"]["encrypted_content_info"]
    return bytes(eci["content_encryption_algorithm"]["parameters"].native), bytes(eci["encrypted_content"].native)


def _with(envelope: bytes, iv: bytes, ciphertext: bytes) -> bytes:
    info = asn1_cms.ContentInfo.load(envelope)
    eci = info["content"]["encrypted_content_info"]
    eci["content_encryption_algorithm"] = {"algorithm": "aes128_cbc", "parameters": iv}
    eci["encrypted_content"] = ciphertext
    return bytes(info.dump(force=True))


def _padding_is_valid(server: ScepTestServer, envelope: bytes) -> bool:
    """The bit the old server leaked, computed here with the RA key."""
    ktri = asn1_cms.ContentInfo.load(envelope)["content"]["recipient_infos"][0].chosen
    key = server.ca.ra_key.decrypt(bytes(ktri["encrypted_key"].native), asym_padding.PKCS1v15())
    iv, ciphertext = _parts(envelope)
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        unpadder.update(decryptor.update(ciphertext) + decryptor.finalize())
        unpadder.finalize()
    except ValueError:
        return False
    return True


# --- finding 1 ---------------------------------------------------------------------------------------


def test_finding1_padding_oracle_256_final_block_variants_get_one_answer(server: ScepTestServer) -> None:
    _without_key_ledger(server)
    envelope, _ = _captured(server, Device())
    iv, ciphertext = _parts(envelope)
    at = len(ciphertext) - 2 * BLOCK  # the block before the last: its last byte drives the final padding byte
    variants = []
    for value in range(256):
        block = bytes([ciphertext[at] ^ 0x80]) + ciphertext[at + 1:at + BLOCK - 1] + bytes([value])
        variants.append(_with(envelope, iv, ciphertext[:at] + block + ciphertext[at + BLOCK:]))
    valid = sum(_padding_is_valid(server, v) for v in variants)
    assert 0 < valid < 256  # the old server told these apart
    attacker = Attacker(server)
    answers = {attacker.ask(v) for v in variants}
    assert len(answers) == 1 and _uniform(answers.pop())
    assert server.issued_count() == 1


@pytest.mark.parametrize("message_type", [MessageType.PKCS_REQ, MessageType.GET_CRL, MessageType.CERT_POLL])
def test_finding1_padding_oracle_attack_on_the_challenge_learns_nothing(
    server: ScepTestServer, message_type: MessageType,
) -> None:
    """The classic attack on the ciphertext block that holds the end of the challengePassword: make it
    the final block behind a forged IV and guess its last byte until the padding is valid."""
    _without_key_ledger(server)
    envelope, csr_der = _captured(server, Device())
    iv, ciphertext = _parts(envelope)
    end = csr_der.index(CHALLENGE.encode()) + len(CHALLENGE)
    j = end // BLOCK - 1  # a block whose last byte is a byte of the challenge
    secret = csr_der[j * BLOCK + BLOCK - 1]
    assert secret in CHALLENGE.encode()
    previous = iv if j == 0 else ciphertext[(j - 1) * BLOCK:j * BLOCK]
    target = ciphertext[j * BLOCK:(j + 1) * BLOCK]

    def forged(guess: int) -> bytes:
        fake_iv = previous[:-1] + bytes([previous[-1] ^ guess ^ 0x01])
        return _with(envelope, fake_iv, target)

    assert [g for g in range(256) if _padding_is_valid(server, forged(g))] == [secret]  # an oracle would say so
    attacker = Attacker(server)
    answers = {guess: attacker.ask(forged(guess), message_type) for guess in range(256)}
    majority = max(set(answers.values()), key=list(answers.values()).count)
    stands_out = [guess for guess, answer in answers.items() if answer != majority]
    assert stands_out == []  # no guess is told apart: the attack cannot recover the byte
    assert all(_uniform(answer) for answer in answers.values())


def test_finding1_captured_envelope_gets_no_second_answer_with_other_ciphertext(
    server: ScepTestServer, caplog: pytest.LogCaptureFixture,
) -> None:
    """With the wrapped-key ledger (the default), a tampered copy is refused before the RSA step."""
    envelope, _ = _captured(server, Device())
    iv, ciphertext = _parts(envelope)
    attacker = Attacker(server)
    tampered = [_with(envelope, iv, ciphertext[:-17] + bytes([b]) + ciphertext[-16:]) for b in range(4)]
    answers = {attacker.ask(t, kind) for t in tampered for kind in (MessageType.PKCS_REQ, MessageType.GET_CRL)}
    assert len(answers) == 1 and _uniform(answers.pop())
    assert "already used with another ciphertext" in caplog.text


def test_finding1_failure_text_is_generic_and_detail_stays_in_the_log(
    server: ScepTestServer, caplog: pytest.LogCaptureFixture,
) -> None:
    device = Device()
    envelope = encrypt(b"\x30\x03\x02\x01\x05", server.ca.ra_cert, ContentCipher.AES128)
    answer = Attacker(server).ask(envelope)
    assert _uniform(answer)
    assert "could not be decrypted or parsed" in str(answer[5])
    assert "PKCS_REQ content" in caplog.text  # the real reason, for the operator
    assert device.common_name not in str(answer)


# --- 3DES switch, OAEP -------------------------------------------------------------------------------


def _caps(server: ScepTestServer, profile: str) -> set[str]:
    return set(server.http.get(f"/scep/{profile}", query_string={"operation": "GetCACaps"}).get_data(
        as_text=True).split())


def test_allow_3des_switch_and_get_ca_caps(server: ScepTestServer) -> None:
    assert "DES3" in _caps(server, "default")
    assert "DES3" not in _caps(server, "no3des") and "AES" in _caps(server, "no3des")
    device = Device()
    refused = server.send(server.pkcsreq(device, cipher=ContentCipher.DES3), device, profile="no3des")
    assert (refused.status, refused.fail_info) == (PKIStatus.FAILURE, FailInfo.BAD_ALG)
    assert server.issued_count() == 0
    aes = Device()
    accepted = server.send(server.pkcsreq(aes, cipher=ContentCipher.AES256), aes, profile="no3des")
    assert accepted.status is PKIStatus.SUCCESS
    other = Device()
    ok = server.send(server.pkcsreq(other, cipher=ContentCipher.DES3), other, profile="default")
    assert ok.status is PKIStatus.SUCCESS and ok.content_cipher is ContentCipher.DES3


def test_oaep_sha256_enrollment_round_trip(server: ScepTestServer) -> None:
    device = Device()
    transport = KeyTransport.oaep(DigestAlgorithm.SHA256)
    built = client.build_pkcsreq(device.csr(), signer_cert=device.signer, signer_key=device.key,
                                 recipient=server.ca.ra_cert, key_transport=transport)
    response = server.post(built.der)
    reply = client.parse_cert_rep(response.data, request=built, signer_key=device.key, signer_cert=device.signer,
                                  trusted_signers=[server.ca.ra_cert])
    assert reply.status is PKIStatus.SUCCESS
    assert reply.certificate_for(device.key.public_key()).subject == device.subject
    reply_envelope = cms.parse_signed(response.data).content
    assert reply_envelope is not None
    assert parse_enveloped(reply_envelope, device.signer).key_transport == transport


# --- finding 11 --------------------------------------------------------------------------------------


def _sha1_csr(device: Device) -> x509.CertificateSigningRequest:
    from asn1crypto import csr as asn1_csr

    tbs = device.csr().tbs_certrequest_bytes
    der = asn1_csr.CertificationRequest({
        "certification_request_info": asn1_csr.CertificationRequestInfo.load(tbs),
        "signature_algorithm": {"algorithm": "sha1_rsa"},
        "signature": device.key.sign(tbs, asym_padding.PKCS1v15(), hashes.SHA1()),
    }).dump()
    return x509.load_der_x509_csr(der)


def test_finding11_sha1_signed_csr_refused_only_where_allow_sha1_is_off(server: ScepTestServer) -> None:
    device = Device()
    refused = server.send(server.pkcsreq(device, csr=_sha1_csr(device)), device, profile="strict")
    assert (refused.status, refused.fail_info) == (PKIStatus.FAILURE, FailInfo.BAD_ALG)
    assert server.issued_count() == 0
    other = Device()
    accepted = server.send(server.pkcsreq(other, csr=_sha1_csr(other)), other, profile="default")
    assert accepted.status is PKIStatus.SUCCESS, accepted.fail_info_text


# --- failure budget ----------------------------------------------------------------------------------


def _post_from(server: ScepTestServer, der: bytes, ip: str, path: str = "/scep") -> TestResponse:
    return server.http.post(f"{path}?operation=PKIOperation", data=der, environ_base={"REMOTE_ADDR": ip})


def _bad_signature(server: ScepTestServer) -> bytes:
    der = server.pkcsreq(Device()).der
    signature = bytes(asn1_cms.ContentInfo.load(der)["content"]["signer_infos"][0]["signature"].native)
    return der.replace(signature, signature[:10] + bytes([signature[10] ^ 1]) + signature[11:])


def _undecryptable(server: ScepTestServer) -> bytes:
    device = Device()
    envelope = encrypt(os.urandom(48), server.ca.ra_cert, ContentCipher.AES128)
    attrs = [
        cms.make_attribute(Attr.MESSAGE_TYPE, core.PrintableString("19")),
        cms.make_attribute(Attr.TRANSACTION_ID, core.PrintableString(os.urandom(8).hex())),
        cms.make_attribute(Attr.SENDER_NONCE, core.OctetString(os.urandom(16))),
    ]
    return cms.sign(envelope, signer_cert=device.signer, signer_key=DeviceKey(device.key),
                    digest=DigestAlgorithm.SHA256, attributes=attrs)


@pytest.fixture
def budgeted(tmp_path: Path) -> Iterator[tuple[ScepTestServer, FakeClock[float]]]:
    """Three failures per minute per IP, on a clock the test moves."""
    started = _start(tmp_path, max_failures=3)
    clock = FakeClock(1000.0)
    budget = FailureBudget(3, 60, 100, clock=clock)
    started.http.application.extensions[BUDGET_EXTENSION] = budget  # type: ignore[attr-defined]
    try:
        yield started, clock
    finally:
        started.runtime.close()


def test_failure_budget_answers_429_with_retry_after(budgeted: tuple[ScepTestServer, FakeClock[float]]) -> None:
    server, clock = budgeted
    attacker_ip, other_ip = "192.0.2.10", "198.51.100.7"
    for der in (_undecryptable(server), _bad_signature(server), _undecryptable(server)):
        response = _post_from(server, der, attacker_ip)
        assert response.status_code == 200
        assert observe(response)[4] == str(int(FailInfo.BAD_MESSAGE_CHECK))
        clock.advance(10)
    device = Device()
    blocked = _post_from(server, server.pkcsreq(device).der, attacker_ip)
    assert blocked.status_code == 429
    assert blocked.headers["Retry-After"] == "30"  # the first failure, 30 s ago, leaves the 60 s window in 30 s
    assert server.issued_count() == 0
    assert _post_from(server, server.pkcsreq(Device()).der, other_ip).status_code == 200  # another client
    caps = server.http.get("/scep", query_string={"operation": "GetCACaps"}, environ_base={"REMOTE_ADDR": attacker_ip})
    assert caps.status_code == 200  # only PKIOperation is budgeted
    clock.advance(30)
    retried = _post_from(server, server.pkcsreq(device).der, attacker_ip)
    assert retried.status_code == 200 and server.issued_count() == 2


def test_failure_budget_ignores_policy_refusals(budgeted: tuple[ScepTestServer, FakeClock[float]]) -> None:
    """A wrong challenge (badRequest) is an answer to a readable request: it does not spend the budget."""
    server, _ = budgeted
    for _ in range(5):
        response = _post_from(server, server.pkcsreq(Device(), challenge="wrong").der, "192.0.2.20")
        assert response.status_code == 200
        assert observe(response)[4] == str(int(FailInfo.BAD_REQUEST))


def test_failure_budget_counts_the_forwarded_client_behind_a_trusted_proxy(tmp_path: Path) -> None:
    server = _start(tmp_path, max_failures=2, proxy_hops=1)
    try:
        def post(der: bytes, client_ip: str) -> TestResponse:
            return server.http.post("/scep?operation=PKIOperation", data=der,
                                    headers={"X-Forwarded-For": client_ip}, environ_base={"REMOTE_ADDR": "10.0.0.1"})

        assert post(_undecryptable(server), "203.0.113.5").status_code == 200
        assert post(_undecryptable(server), "203.0.113.5").status_code == 200
        limited = post(_undecryptable(server), "203.0.113.5")
        assert limited.status_code == 429 and 1 <= int(limited.headers["Retry-After"]) <= 60
        assert post(_undecryptable(server), "203.0.113.6").status_code == 200  # same proxy, another client
    finally:
        server.runtime.close()
