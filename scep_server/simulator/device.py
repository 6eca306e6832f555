"""A simulated Intune-managed device: it builds the CSR its SCEP profile asks for and enrolls over HTTP
the way real devices do (scep-interop.md): GetCACaps, GetCACert (the RA is the recipient, picked by key
usage), PKIOperation (POST when advertised) with AES, then CertPoll while the answer is PENDING.

The CSR carries the subject, the SANs (email, UPN otherName, DNS, URI), keyUsage and extendedKeyUsage
in its extensionRequest, and the challenge as challengePassword; it is signed with the profile's hash,
SHA-1 included (re-signed by hand: cryptography no longer signs X.509 structures with SHA-1).
Messages are built and CertReps checked by :mod:`scep_server.scep.client`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

import requests
from asn1crypto import algos, core
from asn1crypto import csr as asn1_csr
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import AttributeOID

from scep_server.intune.contract import ChallengeSpec
from scep_server.pki.names import parse_name
from scep_server.pki.sans import UPN_OID
from scep_server.scep import client
from scep_server.scep.client import BuiltRequest, CertRep, ScepClientError
from scep_server.scep.types import ContentCipher, DigestAlgorithm, FailInfo, PKIStatus
from scep_server.simulator.http import ScepHttpClient

__all__ = ["CaInfo", "CertificateRequest", "Device", "Enrollment", "Signer", "build_csr", "generate_key",
           "self_signed_signer"]

KEY_USAGES = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
              "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
_SIGNING_HASHES: dict[str, type[hashes.SHA256 | hashes.SHA384 | hashes.SHA512]] = {
    "sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}
_DIGESTS = {"sha1": DigestAlgorithm.SHA1, "sha256": DigestAlgorithm.SHA256, "sha384": DigestAlgorithm.SHA384,
            "sha512": DigestAlgorithm.SHA512}


@dataclass(frozen=True, slots=True)
class CertificateRequest:
    """What the device puts in its CSR (normally exactly what the challenge's profile asks for)."""

    subject: x509.Name
    sans: tuple[tuple[str, str], ...] = ()
    key_usage: tuple[str, ...] = ()
    extended_key_usage: tuple[str, ...] = ()
    hash: str = "sha256"

    @classmethod
    def from_spec(cls, spec: ChallengeSpec) -> CertificateRequest:
        subject = parse_name(spec.subject) if spec.subject else x509.Name([])
        return cls(subject, spec.sans, spec.key_usage, spec.extended_key_usage, spec.hash)


@dataclass(frozen=True, slots=True)
class Signer:
    """The certificate and key that sign a pkiMessage (and receive the CertRep's envelope)."""

    certificate: x509.Certificate
    key: rsa.RSAPrivateKey


@dataclass(frozen=True, slots=True)
class CaInfo:
    """What GetCACaps and GetCACert told the device."""

    caps: frozenset[str]
    certificates: tuple[x509.Certificate, ...]
    recipient: x509.Certificate
    issuer: x509.Certificate
    cipher: ContentCipher

    @property
    def post(self) -> bool:
        return "POSTPKIOperation" in self.caps


@dataclass(frozen=True, slots=True)
class Enrollment:
    """The last answer of one transaction; ``timed_out`` when it was still PENDING at the deadline."""

    transaction_id: str
    status: PKIStatus
    certificate: x509.Certificate | None
    fail_info: FailInfo | None
    fail_info_text: str | None
    polls: int
    timed_out: bool = False

    def describe(self) -> str:
        if self.status is PKIStatus.FAILURE:
            info = self.fail_info.name if self.fail_info is not None else "no failInfo"
            return f"FAILURE {info}: {self.fail_info_text or '(no failInfoText)'}"
        if self.status is PKIStatus.PENDING:
            return f"PENDING after {self.polls} polls" + (" (timed out)" if self.timed_out else "")
        return "SUCCESS" if self.certificate is not None else "SUCCESS without the certificate"


def generate_key(bits: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def build_csr(
    key: rsa.RSAPrivateKey, request: CertificateRequest, challenge: str | None
) -> x509.CertificateSigningRequest:
    """The PKCS#10 request (RFC 2986) a device sends: extensions in extensionRequest, challengePassword."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(request.subject)
    for extension, critical in _extensions(request):
        builder = builder.add_extension(extension, critical=critical)
    if challenge is not None:
        builder = builder.add_attribute(AttributeOID.CHALLENGE_PASSWORD, challenge.encode())
    if request.hash == "sha1":
        return _resign_sha1(builder.sign(key, hashes.SHA256()), key)
    if request.hash not in _SIGNING_HASHES:
        raise ValueError(f"unsupported CSR hash {request.hash!r}")
    return builder.sign(key, _SIGNING_HASHES[request.hash]())


def _extensions(request: CertificateRequest) -> list[tuple[x509.ExtensionType, bool]]:
    extensions: list[tuple[x509.ExtensionType, bool]] = []
    if request.sans:
        # RFC 5280 §4.2.1.6: critical when the subject is empty.
        names = [_general_name(kind, value) for kind, value in request.sans]
        extensions.append((x509.SubjectAlternativeName(names), not request.subject.rdns))
    if request.key_usage:
        flags = {usage: usage in request.key_usage for usage in KEY_USAGES}
        extensions.append((x509.KeyUsage(**flags), True))
    if request.extended_key_usage:
        oids = [x509.ObjectIdentifier(oid) for oid in request.extended_key_usage]
        extensions.append((x509.ExtendedKeyUsage(oids), False))
    return extensions


def _general_name(kind: str, value: str) -> x509.GeneralName:
    if kind == "email":
        return x509.RFC822Name(value)
    if kind == "upn":
        return x509.OtherName(UPN_OID, core.UTF8String(value).dump())
    if kind == "dns":
        return x509.DNSName(value)
    if kind == "uri":
        return x509.UniformResourceIdentifier(value)
    raise ValueError(f"unknown SAN type {kind!r} (email, upn, dns, uri)")


def _resign_sha1(csr: x509.CertificateSigningRequest, key: rsa.RSAPrivateKey) -> x509.CertificateSigningRequest:
    # RFC 3279 §2.2.1: sha1WithRSAEncryption, parameters NULL.
    request = asn1_csr.CertificationRequest.load(csr.public_bytes(serialization.Encoding.DER))
    info = request["certification_request_info"]
    algorithm = algos.SignedDigestAlgorithm({"algorithm": "sha1_rsa", "parameters": core.Null()})
    signature = key.sign(info.dump(), padding.PKCS1v15(), hashes.SHA1())
    signed = asn1_csr.CertificationRequest(
        {"certification_request_info": info, "signature_algorithm": algorithm, "signature": signature})
    return x509.load_der_x509_csr(signed.dump())


class Device:
    """One device talking to the SCEP URL of one profile (``http://host/scep/<profile>``).

    ``timeout`` bounds how long a PENDING request is polled; ``poll_interval`` is the wait between
    CertPolls. Closes its HTTP session on ``close()`` (or as a context manager).
    """

    def __init__(
        self, url: str, *, timeout: float = 60.0, poll_interval: float = 1.0, http_timeout: float = 30.0
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.poll_interval = poll_interval
        self._session = requests.Session()
        self._session.trust_env = False
        self._http = ScepHttpClient(url, session=self._session, timeout=http_timeout)

    def discover(self) -> CaInfo:
        """GetCACaps and GetCACert; the recipient is the RA (keyEncipherment) as Apple's clients pick it."""
        caps = self._http.get_ca_caps()
        certificates = tuple(self._http.get_ca_cert())
        recipient = client.pick_recipient(certificates)
        cipher, _ = client.choose_algorithms(caps)
        return CaInfo(caps, certificates, recipient, _issuer_of(recipient, certificates), cipher)

    def enroll(
        self, ca: CaInfo, csr: x509.CertificateSigningRequest, signer: Signer, *, digest: str = "sha256",
        transaction_id: str | None = None,
    ) -> Enrollment:
        """PKCSReq signed by ``signer`` (a throw-away self-signed certificate, or the current certificate
        when renewing as Apple and Windows do), then CertPoll until the answer is final or the time is up."""
        algorithm = _DIGESTS[digest]
        request = client.build_pkcsreq(csr, signer_cert=signer.certificate, signer_key=signer.key,
                                       recipient=ca.recipient, cipher=ca.cipher, digest=algorithm,
                                       transaction_id=transaction_id)
        reply = self._exchange(ca, request, signer)
        deadline, polls = time.monotonic() + self.timeout, 0
        while reply.status is PKIStatus.PENDING and time.monotonic() < deadline:
            time.sleep(min(self.poll_interval, max(0.0, deadline - time.monotonic())))
            poll = client.build_cert_poll(ca.issuer.subject, csr.subject, transaction_id=request.transaction_id,
                                          signer_cert=signer.certificate, signer_key=signer.key,
                                          recipient=ca.recipient, cipher=ca.cipher, digest=algorithm)
            reply, polls = self._exchange(ca, poll, signer), polls + 1
        return _enrollment(reply, csr, polls, timed_out=reply.status is PKIStatus.PENDING)

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> Device:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _exchange(self, ca: CaInfo, request: BuiltRequest, signer: Signer) -> CertRep:
        der = self._http.pki_operation(request.der, method="POST" if ca.post else "GET")
        return client.parse_cert_rep(der, request=request, signer_key=signer.key, signer_cert=signer.certificate,
                                     trusted_signers=ca.certificates)


def self_signed_signer(key: rsa.RSAPrivateKey, subject: x509.Name) -> Signer:
    """The throw-away signer of a first enrollment (RFC 8894 §2.3)."""
    name = subject if subject.rdns else x509.Name.from_rfc4514_string("CN=SCEP device")
    return Signer(client.self_signed_signer(key, name), key)


def _enrollment(reply: CertRep, csr: x509.CertificateSigningRequest, polls: int, *, timed_out: bool) -> Enrollment:
    certificate = None
    if reply.status is PKIStatus.SUCCESS:
        certificate = reply.certificate_for(csr.public_key())
    return Enrollment(reply.transaction_id, reply.status, certificate, reply.fail_info, reply.fail_info_text,
                      polls, timed_out)


def _issuer_of(recipient: x509.Certificate, certificates: Sequence[x509.Certificate]) -> x509.Certificate:
    """The CA that issued the RA: the issuer named in CertPoll and the one issued certificates chain to."""
    if recipient.issuer == recipient.subject:
        return recipient
    issuer = next((c for c in certificates if c.subject == recipient.issuer), None)
    if issuer is None:
        raise ScepClientError(f"GetCACert lacks the issuer of the RA ({recipient.issuer.rfc4514_string()})")
    return issuer
