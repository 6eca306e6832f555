"""Client side of SCEP: read GetCACert and GetCACaps replies, choose the recipient and the algorithms.

RFC 8894 §3.5 (capabilities) and §4.2 (the CA certificate distribution); pure functions.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from scep_server.errors import ScepError
from scep_server.scep import cms
from scep_server.scep.client.replies import ScepClientError
from scep_server.scep.types import ContentCipher, DigestAlgorithm

CA_CERT = "application/x-x509-ca-cert"
CA_RA_CERT = "application/x-x509-ca-ra-cert"

# RFC 8894 Table 7, in the case a CA must use; clients compare case-insensitively (§3.5.2).
KNOWN_CAPS = (
    "AES",
    "DES3",
    "GetNextCACert",
    "POSTPKIOperation",
    "Renewal",
    "SHA-1",
    "SHA-256",
    "SHA-512",
    "SCEPStandard",
)


def parse_get_ca_cert(body: bytes, content_type: str) -> list[x509.Certificate]:
    """The certificates of a GetCACert reply (RFC 8894 §4.2.1).

    ``application/x-x509-ca-cert`` is one DER certificate, ``application/x-x509-ca-ra-cert`` a
    degenerate certificates-only SignedData (§3.4); any other type is recognised by its content.
    """
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == CA_CERT:
        return [_load_one(body)]
    if media_type == CA_RA_CERT:
        return _load_certs_only(body)
    try:
        return [_load_one(body)]
    except ScepClientError:
        return _load_certs_only(body)


def _load_one(body: bytes) -> x509.Certificate:
    try:
        if body.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(body)
        return x509.load_der_x509_certificate(body)
    except ValueError as exc:
        raise ScepClientError(f"GetCACert reply is not a certificate: {exc}") from exc


def _load_certs_only(body: bytes) -> list[x509.Certificate]:
    try:
        ders, _ = cms.read_certs_only(body)
        certificates = [x509.load_der_x509_certificate(d) for d in ders]
    except (ScepError, ValueError) as exc:
        raise ScepClientError(f"GetCACert reply is not a certificates-only SignedData: {exc}") from exc
    if not certificates:
        raise ScepClientError("GetCACert reply holds no certificate")
    return certificates


def pick_recipient(certs: Sequence[x509.Certificate]) -> x509.Certificate:
    """The certificate to envelope requests to, chosen as Apple's clients do.

    First an RSA end-entity (RA) certificate whose keyUsage allows keyEncipherment, then an RSA
    end-entity certificate without keyUsage, else the RSA CA certificate lowest in the chain.
    """
    rsa_certs = [c for c in certs if isinstance(c.public_key(), rsa.RSAPublicKey)]
    ras = [c for c in rsa_certs if not _is_ca(c)]
    for cert in ras:
        usage = _key_usage(cert)
        if usage is not None and usage.key_encipherment:
            return cert
    for cert in ras:
        if _key_usage(cert) is None:
            return cert
    cas = [c for c in rsa_certs if _is_ca(c)]
    if not cas:
        raise ScepClientError("GetCACert returned no RSA certificate usable for key transport")
    issuers = {c.issuer for c in cas if c.issuer != c.subject}
    return next((c for c in cas if c.subject not in issuers), cas[0])


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return cert.issuer == cert.subject


def _key_usage(cert: x509.Certificate) -> x509.KeyUsage | None:
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None


def parse_caps(text: str) -> frozenset[str]:
    """GetCACaps keywords, CR/LF or LF separated (RFC 8894 §3.5.2).

    Known keywords are returned in their RFC spelling whatever the case sent, so ``"AES" in caps``
    works against a CA that answers ``aes``; unknown keywords are kept as sent.
    """
    canonical = {k.lower(): k for k in KNOWN_CAPS}
    words = (line.strip() for line in text.splitlines())
    return frozenset(canonical.get(w.lower(), w) for w in words if w)


def choose_algorithms(caps: frozenset[str]) -> tuple[ContentCipher, DigestAlgorithm]:
    """Content cipher and digest the CA advertises, preferring AES-128 and SHA-256 (RFC 8894 §3.5.2).

    SCEPStandard implies AES and SHA-256. With neither AES nor DES3, or no SHA keyword, the legacy
    fallback is 3DES and SHA-1 (the RFC's own historical default, DES + MD5, is not offered).
    """
    standard = "SCEPStandard" in caps
    cipher = ContentCipher.AES128 if standard or "AES" in caps else ContentCipher.DES3
    if standard or "SHA-256" in caps:
        digest = DigestAlgorithm.SHA256
    elif "SHA-512" in caps:
        digest = DigestAlgorithm.SHA512
    else:
        digest = DigestAlgorithm.SHA1
    return cipher, digest
