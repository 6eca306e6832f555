"""Certificate revocation lists (RFC 5280 §5), built as DER in one pass over the revoked certificates.

The CRL is assembled rather than handed to cryptography's builder, which needs an object per entry
(a million entries cost it seconds and hundreds of MB): asn1crypto encodes the fixed fields of the
TBSCertList, :mod:`scep_server.ca.crl_entries` the entries as they are read, and the CA's Signer signs
the TBSCertList bytes, as it signs every structure built outside cryptography.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from asn1crypto import algos, core
from asn1crypto import crl as asn1_crl
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from scep_server.ca.authority import CertificateAuthority
from scep_server.ca.crl_entries import EARLIEST, GENERALIZED_FROM_YEAR, SEQUENCE, RevokedEntry, encode_entries, header
from scep_server.ca.keys import Signer
from scep_server.ca.material import authority_key_identifier

# The TBSCertList fields before revokedCertificates; crlExtensions come after it (RFC 5280 §5.1).
_HEAD_FIELDS = ("version", "signature", "issuer", "this_update", "next_update")


def build_crl(
    ca: CertificateAuthority,
    revoked: Iterable[RevokedEntry],
    *,
    crl_number: int,
    now: datetime | None = None,
    validity: timedelta,
) -> x509.CertificateRevocationList:
    """:func:`build_crl_der`, parsed."""
    return x509.load_der_x509_crl(build_crl_der(ca, revoked, crl_number=crl_number, now=now, validity=validity))


def build_crl_der(
    ca: CertificateAuthority,
    revoked: Iterable[RevokedEntry],
    *,
    crl_number: int,
    now: datetime | None = None,
    validity: timedelta,
) -> bytes:
    """The DER CRL of the CA, signed with its key, listing ``revoked`` as (serial, revocation time, reason).

    ``revoked`` is read once, so a database cursor can be passed as is. thisUpdate is ``now`` and
    nextUpdate ``now + validity`` (§5.1.2.4-5), to the second; extensions: cRLNumber (§5.2.3) and
    authorityKeyIdentifier (§5.2.1). A reason of 0 (unspecified) or None gets no reasonCode (§5.3.1).
    """
    if crl_number < 0:
        raise ValueError("crl_number must not be negative")
    if validity <= timedelta(0):
        raise ValueError("validity must be positive")
    this_update = _utc(now if now is not None else datetime.now(UTC))
    algorithm = _signature_algorithm(ca.ca_key)
    head, extensions = _fixed_fields(ca, algorithm, crl_number, this_update, this_update + validity)
    tbs = _tbs_cert_list(head, encode_entries(revoked), extensions)
    signature = core.OctetBitString(ca.ca_key.sign(tbs)).dump()
    algorithm_der = algorithm.dump()
    return b"".join((header(SEQUENCE, len(tbs) + len(algorithm_der) + len(signature)), tbs, algorithm_der, signature))


def _signature_algorithm(key: Signer) -> algos.SignedDigestAlgorithm:
    """The algorithm :meth:`Signer.sign` uses with the key's own hash."""
    digest = key.signature_hash.name  # sha256 | sha384 | sha512
    if isinstance(key.public_key(), rsa.RSAPublicKey):
        # RFC 4055 §5: the parameters of sha*WithRSAEncryption are NULL; ECDSA's are absent (RFC 5758 §3.2).
        return algos.SignedDigestAlgorithm({"algorithm": f"{digest}_rsa", "parameters": core.Null()})
    return algos.SignedDigestAlgorithm({"algorithm": f"{digest}_ecdsa"})


def _tbs_cert_list(head: bytes, entries: bytearray, extensions: bytes) -> bytes:
    # No revoked certificates: the list is left out, not empty (§5.1.2.6).
    revoked_header = header(SEQUENCE, len(entries)) if entries else b""
    length = len(head) + len(revoked_header) + len(entries) + len(extensions)
    return b"".join((header(SEQUENCE, length), head, revoked_header, entries, extensions))


def _fixed_fields(
    ca: CertificateAuthority, algorithm: algos.SignedDigestAlgorithm, crl_number: int, this_update: datetime,
    next_update: datetime,
) -> tuple[bytes, bytes]:
    """The DER of the TBSCertList fields before revokedCertificates, and of its crlExtensions."""
    aki = authority_key_identifier(ca.ca_cert).public_bytes()
    tbs = asn1_crl.TbsCertList({
        "version": "v2",
        "signature": algorithm,
        "issuer": asn1_x509.Name.load(ca.ca_cert.subject.public_bytes()),
        "this_update": _time(this_update),
        "next_update": _time(next_update),
        "crl_extensions": [
            {"extn_id": "crl_number", "critical": False, "extn_value": crl_number},
            {"extn_id": "authority_key_identifier", "critical": False,
             "extn_value": asn1_x509.AuthorityKeyIdentifier.load(aki)},
        ],
    })
    head = b"".join(tbs[field].dump() for field in _HEAD_FIELDS)
    return head, tbs["crl_extensions"].dump()


def _time(when: datetime) -> asn1_x509.Time:
    """UTCTime through 2049, GeneralizedTime from 2050, whole seconds (RFC 5280 §5.1.2.4)."""
    if when < EARLIEST:
        raise ValueError("CRL times must be on or after 1950 January 1")
    kind = "utc_time" if when.year < GENERALIZED_FROM_YEAR else "general_time"
    return asn1_x509.Time({kind: when.replace(microsecond=0)})


def _utc(when: datetime) -> datetime:
    """``when`` in UTC; a naive datetime is taken as UTC already, as cryptography takes it."""
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
