"""Issuing an end-entity certificate from a CSR the profile's policy accepted (RFC 5280 §4)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID

from scep_server.ca.authority import CertificateAuthority
from scep_server.ca.csr import check_request, csr_public_key, key_usage_for
from scep_server.ca.material import authority_key_identifier
from scep_server.ca.policy import Granted, IssuancePolicy
from scep_server.ca.signing import sign_certificate
from scep_server.errors import BadRequest, CAError


def build_certificate(
    csr: x509.CertificateSigningRequest,
    ca: CertificateAuthority,
    policy: IssuancePolicy,
    *,
    now: datetime | None = None,
    not_after_cap: datetime | None = None,
) -> x509.Certificate:
    """Issue the certificate for a CSR that :func:`~scep_server.ca.csr.check_csr` accepted, signed by the CA.

    The names, SID and EKUs are checked again (:func:`~scep_server.ca.csr.check_request`, with the CA's
    names), so nothing the policy refuses is signed even when ``check_csr`` was not called.

    Validity runs from ``now - backdate`` (devices' clocks can be hours off) to ``now + validity``,
    never beyond the CA certificate nor ``not_after_cap`` (RFC 5280 §4.1.2.5).
    """
    granted = check_request(csr, policy, ca=ca)
    now = now if now is not None else datetime.now(UTC)
    not_before, not_after = _validity(ca.ca_cert, policy, now, not_after_cap)
    public_key = csr_public_key(csr)
    builder = (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(ca.ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    for extension, critical in _extensions(csr, ca, policy, public_key, granted):
        builder = builder.add_extension(extension, critical=critical)
    return sign_certificate(builder, ca.ca_key, policy.hash_name)


def _validity(
    ca_cert: x509.Certificate, policy: IssuancePolicy, now: datetime, cap: datetime | None
) -> tuple[datetime, datetime]:
    if ca_cert.not_valid_after_utc <= now:
        raise CAError(f"the CA certificate expired on {ca_cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    not_before = max(now - policy.backdate, ca_cert.not_valid_before_utc)
    not_after = min(now + policy.validity, ca_cert.not_valid_after_utc)
    if cap is not None:
        not_after = min(not_after, cap)
    if not_after <= not_before:
        raise BadRequest("the certificate would expire before it becomes valid")
    return not_before, not_after


def _extensions(
    csr: x509.CertificateSigningRequest,
    ca: CertificateAuthority,
    policy: IssuancePolicy,
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
    granted: Granted,
) -> Iterator[tuple[x509.ExtensionType, bool]]:
    """The extensions of the new certificate with their criticality (RFC 5280 §4.2)."""
    yield x509.BasicConstraints(ca=False, path_length=None), True
    key_usage = key_usage_for(csr, policy, public_key)
    if key_usage is not None:
        yield key_usage, True
    if granted.extended_key_usage is not None:
        yield granted.extended_key_usage, False
    if granted.sans:
        # RFC 5280 §4.2.1.6: with an empty subject the subjectAltName must be critical.
        yield x509.SubjectAlternativeName(granted.sans), not csr.subject.rdns
    yield x509.SubjectKeyIdentifier.from_public_key(public_key), False
    yield authority_key_identifier(ca.ca_cert), False
    yield from _url_extensions(policy)
    if granted.sid_extension is not None:
        yield granted.sid_extension, False


def _url_extensions(policy: IssuancePolicy) -> Iterator[tuple[x509.ExtensionType, bool]]:
    """CRL distribution point (RFC 5280 §4.2.1.13) and AIA ocsp and caIssuers (§4.2.2.1)."""
    if policy.crl_url:
        point = x509.DistributionPoint([x509.UniformResourceIdentifier(policy.crl_url)], None, None, None)
        yield x509.CRLDistributionPoints([point]), False
    access = [
        x509.AccessDescription(method, x509.UniformResourceIdentifier(url))
        for method, url in (
            (AuthorityInformationAccessOID.OCSP, policy.ocsp_url),
            (AuthorityInformationAccessOID.CA_ISSUERS, policy.ca_issuers_url),
        )
        if url
    ]
    if access:
        yield x509.AuthorityInformationAccess(access), False


def thumbprints(cert: x509.Certificate) -> tuple[str, str]:
    """The (SHA-1, SHA-256) thumbprints of the certificate's DER, upper-case hex without separators."""
    return cert.fingerprint(hashes.SHA1()).hex().upper(), cert.fingerprint(hashes.SHA256()).hex().upper()
