"""Certificate revocation lists (RFC 5280 §5)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from cryptography import x509

from scep_server.ca.authority import CertificateAuthority
from scep_server.ca.material import authority_key_identifier
from scep_server.pki.reasons import CRLReason


def build_crl(
    ca: CertificateAuthority,
    revoked: Iterable[tuple[int, datetime, int | None]],
    *,
    crl_number: int,
    now: datetime | None = None,
    validity: timedelta,
) -> x509.CertificateRevocationList:
    """A CRL of the CA, signed with its key, listing ``revoked`` as (serial, revocation time, reason).

    ``revoked`` is read once, so a database cursor can be passed as is. thisUpdate is ``now`` and
    nextUpdate ``now + validity`` (§5.1.2.4-5); extensions: cRLNumber (§5.2.3) and
    authorityKeyIdentifier (§5.2.1).
    """
    if crl_number < 0:
        raise ValueError("crl_number must not be negative")
    if validity <= timedelta(0):
        raise ValueError("validity must be positive")
    now = now if now is not None else datetime.now(UTC)
    builder = x509.CertificateRevocationListBuilder(
        issuer_name=ca.ca_cert.subject,
        last_update=now,
        next_update=now + validity,
        extensions=[
            x509.Extension(x509.CRLNumber.oid, False, x509.CRLNumber(crl_number)),
            _aki_extension(ca.ca_cert),
        ],
        # Handed over as one list: adding entries one by one copies the list each time (quadratic).
        revoked_certificates=[_entry(serial, when, reason) for serial, when, reason in revoked],
    )
    return ca.ca_key.sign_crl(builder)


def _aki_extension(ca_cert: x509.Certificate) -> x509.Extension[x509.ExtensionType]:
    aki = authority_key_identifier(ca_cert)
    return x509.Extension(aki.oid, False, aki)


def _entry(serial: int, when: datetime, reason: int | None) -> x509.RevokedCertificate:
    """One revokedCertificates entry; the reasonCode extension (§5.3.1) is left out for 'unspecified'."""
    builder = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when)
    if reason is not None and reason != 0:
        builder = builder.add_extension(x509.CRLReason(_reason(reason)), critical=False)
    return builder.build()


def _reason(code: int) -> x509.ReasonFlags:
    try:
        return CRLReason(code).flag
    except ValueError:
        raise ValueError(f"{code} is not an RFC 5280 CRLReason code") from None
