"""The requests a load sends, built before any timing, and the checks of what came back.

Device keys: RSA key generation costs ~50 ms CPU per key, far more than an enrollment, so a pool of
``keys`` RSA-2048 keys is generated once per invocation and each key serves several messages. Every
message still has its own subject (unique CN), self-signed signer, CSR, random transactionID and nonce,
so the server does the same work as for distinct devices (nothing in SCEP ties a transaction to a key).

In the timed window a client only reads the CertRep's outer attributes (:func:`quick_status`); after
the window every answer is verified in full with the project's client helpers (signature, correlation,
and on SUCCESS the envelope is opened with the device key) and the issued serial is collected.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import cache

from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from scep_server.errors import ScepError
from scep_server.intune.contract import ChallengeSpec
from scep_server.scep import cms
from scep_server.scep.client import (
    BuiltRequest,
    ScepClientError,
    build_cert_poll,
    build_csr,
    build_pkcsreq,
    parse_cert_rep,
    self_signed_signer,
)
from scep_server.scep.types import Attr, ContentCipher, DigestAlgorithm, MessageType, PKIStatus
from scep_server.simulator.device import CertificateRequest
from scep_server.simulator.device import build_csr as build_profile_csr

CIPHER = ContentCipher.AES128
DIGEST = DigestAlgorithm.SHA256


@dataclass(frozen=True, slots=True)
class Message:
    """One PKCSReq ready to POST, and what is needed to poll for it and to open its CertRep."""

    der: bytes
    transaction_id: str
    sender_nonce: bytes
    key_index: int
    signer_der: bytes


@dataclass(frozen=True, slots=True)
class Verdict:
    """A fully checked answer: the issued serial on SUCCESS, else why it is not an enrollment."""

    serial: int | None
    problem: str | None


# --- keys -----------------------------------------------------------------------------------------------


def _new_key(bits: int) -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())  # fmt: skip


def generate_keys(pool: ProcessPoolExecutor, count: int, bits: int = 2048) -> tuple[bytes, ...]:
    return tuple(pool.map(_new_key, [bits] * count, chunksize=4))


class KeyPool:
    """The device keys as DER (what crosses process boundaries) and, loaded once per process, as keys."""

    def __init__(self, ders: Sequence[bytes]) -> None:
        self.ders = tuple(ders)

    def __len__(self) -> int:
        return len(self.ders)

    def key(self, index: int) -> rsa.RSAPrivateKey:
        return _load_key(self.ders[index])


@cache
def _load_key(der: bytes) -> rsa.RSAPrivateKey:
    key = serialization.load_der_private_key(der, password=None, unsafe_skip_rsa_key_validation=True)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


# --- building (process pool) ----------------------------------------------------------------------------

# (key DER, key index, recipient DER, subject CN, challenge, Intune spec JSON or None)
_Job = tuple[bytes, int, bytes, str, str, dict[str, object] | None]


def _subject(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "scep-server bench"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])  # fmt: skip


def _build(job: _Job) -> Message:
    key_der, key_index, recipient_der, common_name, challenge, spec_json = job
    key = _load_key(key_der)
    if spec_json is None:
        subject = _subject(common_name)
        csr = build_csr(key, subject, challenge_password=challenge)
    else:
        request = CertificateRequest.from_spec(ChallengeSpec.from_json(spec_json))
        subject = request.subject
        csr = build_profile_csr(key, request, challenge)
    signer = self_signed_signer(key, subject)
    recipient = x509.load_der_x509_certificate(recipient_der)
    built = build_pkcsreq(csr, signer_cert=signer, signer_key=key, recipient=recipient, cipher=CIPHER, digest=DIGEST,
                          transaction_id=uuid.uuid4().hex.upper())  # fmt: skip
    return Message(built.der, built.transaction_id, built.sender_nonce, key_index,
                   signer.public_bytes(serialization.Encoding.DER))  # fmt: skip


def build_static(pool: ProcessPoolExecutor, keys: KeyPool, recipient: x509.Certificate, count: int,
                 prefix: str, challenge: str) -> list[Message]:  # fmt: skip
    """``count`` PKCSReqs with a static challenge; CNs ``<prefix>-<pid>-<i>`` are unique per invocation."""
    recipient_der = recipient.public_bytes(serialization.Encoding.DER)
    jobs: list[_Job] = [(keys.ders[i % len(keys)], i % len(keys), recipient_der, f"{prefix}-{os.getpid()}-{i}",
                         challenge, None) for i in range(count)]  # fmt: skip
    return list(pool.map(_build, jobs, chunksize=16))


def build_intune(pool: ProcessPoolExecutor, keys: KeyPool, recipient: x509.Certificate,
                 devices: Sequence[tuple[ChallengeSpec, str]]) -> list[Message]:  # fmt: skip
    """One PKCSReq per (spec, challenge minted for it): the CSR carries what the profile asks for."""
    recipient_der = recipient.public_bytes(serialization.Encoding.DER)
    jobs: list[_Job] = [(keys.ders[i % len(keys)], i % len(keys), recipient_der, "", challenge, spec.to_json())
                        for i, (spec, challenge) in enumerate(devices)]  # fmt: skip
    return list(pool.map(_build, jobs, chunksize=16))


def cert_poll(message: Message, keys: KeyPool, recipient: x509.Certificate, issuer: x509.Name) -> BuiltRequest:
    """The CertPoll a device sends while its request is PENDING (same transactionID, fresh nonce)."""
    signer = x509.load_der_x509_certificate(message.signer_der)
    return build_cert_poll(issuer, signer.subject, transaction_id=message.transaction_id, signer_cert=signer,
                           signer_key=keys.key(message.key_index), recipient=recipient, cipher=CIPHER,
                           digest=DIGEST)  # fmt: skip


# --- checking -------------------------------------------------------------------------------------------


def quick_status(body: bytes) -> tuple[PKIStatus | None, str | None]:
    """The pkiStatus of a CertRep from its outer SignedData only (cheap: no signature, no decryption)."""
    try:
        reply = cms.parse_signed(body)
        status = reply.attribute(Attr.PKI_STATUS, core.PrintableString)
        if status == PKIStatus.FAILURE:
            return PKIStatus.FAILURE, f"FAILURE failInfo {reply.attribute(Attr.FAIL_INFO, core.PrintableString)}"
        return PKIStatus(str(status)), None
    except (ScepError, ValueError) as exc:
        return None, f"undecodable CertRep: {str(exc)[:80]}"


def issued_certificate(body: bytes, message: Message, sender_nonce: bytes, keys: KeyPool,
                       trusted: Sequence[x509.Certificate]) -> x509.Certificate:  # fmt: skip
    """The certificate a SUCCESS CertRep carries for the device's key (RFC 8894 §3.3.2), fully checked:
    trusted signer, valid signature, our transactionID and nonce, envelope opened with the device key."""
    key = keys.key(message.key_index)
    signer = x509.load_der_x509_certificate(message.signer_der)
    request = BuiltRequest(message.der, message.transaction_id, sender_nonce, MessageType.PKCS_REQ)
    reply = parse_cert_rep(body, request=request, signer_key=key, signer_cert=signer, trusted_signers=trusted)
    if reply.status is not PKIStatus.SUCCESS:
        raise ScepClientError(f"pkiStatus {reply.status.name} {reply.fail_info.name if reply.fail_info else ''}")
    issued = reply.certificate_for(key.public_key())
    if issued.subject != signer.subject:
        raise ScepClientError("the issued certificate has another subject")
    return issued


def verify(body: bytes, message: Message, sender_nonce: bytes, keys: KeyPool,
           trusted: Sequence[x509.Certificate]) -> Verdict:  # fmt: skip
    """:func:`issued_certificate`, as the issued serial or what is wrong."""
    try:
        return Verdict(issued_certificate(body, message, sender_nonce, keys, trusted).serial_number, None)
    except ScepClientError as exc:
        return Verdict(None, f"CertRep rejected: {str(exc)[:80]}")
