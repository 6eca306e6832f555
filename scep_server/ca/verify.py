"""``scep-server ca verify``: whether the CA directory's keys, certificates and chain fit together, and for how long.

A CA directory that does not load (missing, unreadable, a key that is not its certificate's, a foreign
RA, a chain file out of order: what :func:`~scep_server.ca.authority.load_ca` refuses) is one FAIL
finding with the reason. A loaded one is checked part by part, each check with cryptography:

- the CA: its key is its certificate's; basicConstraints cA and keyUsage keyCertSign (RFC 5280
  §4.2.1.9, §4.2.1.3; cRLSign missing is a warning: CRL checkers would refuse its CRLs); valid now;
- the chain above it: each certificate signed by the next and a CA itself, valid, and a self-signed
  root at the top (else a warning: clients need the missing issuers from elsewhere);
- the current RA: its key, issued by the CA, valid, keyUsage digitalSignature and keyEncipherment
  (it signs CertReps and decrypts requests, RFC 8894 §2.1); each previous RA still in its grace period;
- the OCSP responder when there is one: issued by the CA, its key, id-kp-OCSPSigning (RFC 6960
  §4.2.2.2), valid. A responder the server would replace by itself (foreign, mismatched, expired) is a
  warning; one it would keep using although clients refuse it (no OCSPSigning) is a failure;
- the keys at rest: unprotected keys are a warning unless the configuration allows them.

Expiry warnings: the CA and the chain within :data:`EXPIRY_WARNING` or within the longest profile
validity, whichever is longer (certificates issued after that end with the CA and are cut short,
:mod:`scep_server.ca.issue`); the current RA within ``ca.ra_renew_days`` (it is due for renewal).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from scep_server.ca.authority import (
    CA_CERT,
    CA_KEY,
    CertificateAuthority,
    generation_namespace,
    key_backend,
    load_ca,
    unencrypted_keys_allowed,
)
from scep_server.ca.certfiles import load_single_certificate
from scep_server.ca.keys import KeyBackend, Signer, key_matches
from scep_server.ca.ra_keyring import RaIdentity
from scep_server.ca.responder import OCSP_CERT, OCSP_KEY
from scep_server.config import ServerConfig
from scep_server.errors import CAError, ConfigError
from scep_server.pki.chain import is_issued_by, is_self_signed

EXPIRY_WARNING = timedelta(days=90)
RESPONDER_REPLACED = "the server replaces it when it next signs an OCSP response"

_Ext = TypeVar("_Ext", bound=x509.ExtensionType)


class Level(StrEnum):
    OK = "ok"
    WARNING = "warning"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Finding:
    """One check's outcome: what was checked (``subject``) and what was found (``detail``)."""

    level: Level
    subject: str
    detail: str


@dataclass(frozen=True, slots=True)
class _Horizon:
    """How close to its end a certificate earns a warning, and what to do then."""

    within: timedelta
    advice: str


def verify_authority(
    ca_dir: Path, config: ServerConfig, passphrase: bytes | None, *, now: datetime | None = None, label: str = ""
) -> list[Finding]:
    """The findings on the CA in ``ca_dir`` (of ``config``'s ``ca`` section; ``label``: the CA generation
    it holds, "" for the first) at ``now``; never raises on a broken CA directory."""
    moment = now or datetime.now(UTC)
    try:
        ca = load_ca(ca_dir, config.ca, passphrase, now=moment, label=label)
        keys = key_backend(ca_dir, passphrase, config.ca.keys, namespace=generation_namespace(label))
    except (CAError, ConfigError) as exc:
        return [Finding(Level.FAIL, "CA directory", str(exc))]
    ca_horizon = _Horizon(
        max(EXPIRY_WARNING, timedelta(days=_longest_profile_days(config))),
        "certificates issued from now on end with it: plan its replacement",
    )
    return [
        *_ca_findings(ca, keys, ca_dir, ca_horizon, moment),
        *_chain_findings(ca, ca_horizon, moment),
        *_current_ra_findings(ca, keys, ca_dir, config, moment),
        *_previous_ra_findings(ca, keys, ca_dir, moment),
        *_responder_findings(ca_dir, ca, keys, moment),
        _at_rest_finding(keys, config),
    ]


def passed(findings: Iterable[Finding], *, strict: bool = False) -> bool:
    """No failure; with ``strict``, no warning either."""
    refused = {Level.FAIL, Level.WARNING} if strict else {Level.FAIL}
    return not any(finding.level in refused for finding in findings)


def ra_decrypts_until(ra: RaIdentity) -> datetime:
    """When ``ra`` stops opening requests: its grace period's end or its certificate's, the earlier."""
    end = ra.cert.not_valid_after_utc
    return end if ra.usable_until is None else min(end, ra.usable_until)


def _longest_profile_days(config: ServerConfig) -> int:
    return max((profile.validity_days for profile in config.profiles), default=0)


# --- the CA and its chain --------------------------------------------------------------------------


def _ca_findings(
    ca: CertificateAuthority, keys: KeyBackend, ca_dir: Path, horizon: _Horizon, now: datetime
) -> Iterator[Finding]:
    yield _key_finding("CA key", ca.ca_key, ca.ca_cert, keys.describe(CA_KEY), ca_dir / CA_CERT)
    yield _ca_usage_finding("CA certificate", ca.ca_cert, signs_crls=True)
    yield _validity_finding("CA certificate", ca.ca_cert, now, horizon)


def _chain_findings(ca: CertificateAuthority, horizon: _Horizon, now: datetime) -> Iterator[Finding]:
    for position, (lower, upper) in enumerate(zip((ca.ca_cert, *ca.chain), ca.chain, strict=False), 1):
        subject = f"chain certificate {position}"
        yield _issuer_finding(subject, lower, upper)
        yield _ca_usage_finding(subject, upper, signs_crls=False)
        yield _validity_finding(subject, upper, now, horizon)
    yield _top_finding(ca.chain[-1] if ca.chain else ca.ca_cert)


def _issuer_finding(subject: str, cert: x509.Certificate, issuer: x509.Certificate) -> Finding:
    if is_issued_by(cert, issuer):
        return Finding(Level.OK, subject, f"{_name(issuer)} issued {_name(cert)}")
    return Finding(Level.FAIL, subject, f"{_name(issuer)} did not issue {_name(cert)}: the signature does not verify "
                                        "with its key or the names differ")


def _top_finding(top: x509.Certificate) -> Finding:
    if is_self_signed(top):
        return Finding(Level.OK, "chain", f"ends at the self-signed root {_name(top)}")
    return Finding(Level.WARNING, "chain", f"incomplete: {_name(top)} is not self-signed and its issuer "
                                           f"{top.issuer.rfc4514_string()} is not in the chain file; clients must "
                                           "get it elsewhere (import-ca --chain stores it)")


def _ca_usage_finding(subject: str, cert: x509.Certificate, *, signs_crls: bool) -> Finding:
    """RFC 5280 §4.2.1.9 (cA TRUE) and §4.2.1.3 (keyCertSign, cRLSign; no keyUsage allows every use)."""
    try:
        constraints = _extension(cert, x509.BasicConstraints)
        usage = _extension(cert, x509.KeyUsage)
    except ValueError as exc:
        return Finding(Level.FAIL, subject, f"malformed extensions: {exc}")
    if constraints is None or not constraints.ca:
        return Finding(Level.FAIL, subject, "not a CA certificate: basicConstraints cA is not TRUE")
    if usage is not None and not usage.key_cert_sign:
        return Finding(Level.FAIL, subject, "may not sign certificates: keyUsage lacks keyCertSign")
    if signs_crls and usage is not None and not usage.crl_sign:
        return Finding(Level.WARNING, subject, "keyUsage lacks cRLSign: clients that check it refuse the CA's CRLs")
    return Finding(Level.OK, subject, "a CA certificate (basicConstraints cA, keyUsage allows signing)")


# --- the RAs ---------------------------------------------------------------------------------------


def _current_ra_findings(
    ca: CertificateAuthority, keys: KeyBackend, ca_dir: Path, config: ServerConfig, now: datetime
) -> Iterator[Finding]:
    ra = ca.ra_keyring.current
    renew = _Horizon(timedelta(days=config.ca.ra_renew_days), "it is due for renewal: run `scep-server ca rotate-ra`")
    yield _key_finding("RA key", ra.key, ra.cert, keys.describe(ra.files.key), ca_dir / ra.files.cert)
    yield _issued_by_ca("RA certificate", ra.cert, ca)
    yield _ra_usage_finding(ra.cert)
    yield _validity_finding("RA certificate", ra.cert, now, renew)


def _previous_ra_findings(
    ca: CertificateAuthority, keys: KeyBackend, ca_dir: Path, now: datetime
) -> Iterator[Finding]:
    for ra in ca.ra_keyring.previous:
        subject = f"previous RA {ra.serial:x}"
        yield _key_finding(subject, ra.key, ra.cert, keys.describe(ra.files.key), ca_dir / ra.files.cert)
        yield _issued_by_ca(subject, ra.cert, ca)
        yield _previous_ra_validity(subject, ra, now)


def _previous_ra_validity(subject: str, ra: RaIdentity, now: datetime) -> Finding:
    expired = ra.cert.not_valid_after_utc
    if expired <= now:
        return Finding(Level.WARNING, subject, f"its certificate expired on {_when(expired)}: requests encrypted to "
                                               "it are no longer opened")
    return Finding(Level.OK, subject, f"decrypts until {_when(ra_decrypts_until(ra))}")


def _ra_usage_finding(cert: x509.Certificate) -> Finding:
    try:
        usage = _extension(cert, x509.KeyUsage)
    except ValueError as exc:
        return Finding(Level.FAIL, "RA certificate", f"malformed extensions: {exc}")
    if usage is None:
        return Finding(Level.WARNING, "RA certificate", "carries no keyUsage: clients that pick the certificate to "
                                                        "encrypt to by keyEncipherment may not find it")
    lacking = [name for name, there in (("digitalSignature", usage.digital_signature),
                                        ("keyEncipherment", usage.key_encipherment)) if not there]
    if lacking:
        return Finding(Level.FAIL, "RA certificate", f"keyUsage lacks {' and '.join(lacking)}: it signs the replies "
                                                     "and decrypts the requests")
    return Finding(Level.OK, "RA certificate", "keyUsage allows digitalSignature and keyEncipherment")


# --- the OCSP responder ----------------------------------------------------------------------------


def _responder_findings(ca_dir: Path, ca: CertificateAuthority, keys: KeyBackend, now: datetime) -> Iterator[Finding]:
    subject = "OCSP responder"
    cert_path = ca_dir / OCSP_CERT
    if not cert_path.exists() and not keys.exists(OCSP_KEY):
        yield Finding(Level.OK, subject, "none yet: the server creates it when it first signs an OCSP response")
        return
    try:
        cert, key = load_single_certificate(cert_path), keys.load(OCSP_KEY)
    except CAError as exc:
        yield Finding(Level.WARNING, subject, f"{exc}; {RESPONDER_REPLACED}")
        return
    yield _demoted(_key_finding(subject, key, cert, keys.describe(OCSP_KEY), cert_path))
    yield _demoted(_issued_by_ca(subject, cert, ca))
    yield _ocsp_signing_finding(subject, cert)
    yield _demoted(_validity_finding(subject, cert, now, _Horizon(timedelta(0), "")))


def _demoted(finding: Finding) -> Finding:
    """A responder problem the server mends by itself (responder.py replaces such a responder): a warning."""
    if finding.level is not Level.FAIL:
        return finding
    return Finding(Level.WARNING, finding.subject, f"{finding.detail}; {RESPONDER_REPLACED}")


def _ocsp_signing_finding(subject: str, cert: x509.Certificate) -> Finding:
    try:
        usages = _extension(cert, x509.ExtendedKeyUsage)
    except ValueError as exc:
        return Finding(Level.FAIL, subject, f"malformed extensions: {exc}")
    if usages is None or ExtendedKeyUsageOID.OCSP_SIGNING not in usages:
        return Finding(Level.FAIL, subject, "lacks the extendedKeyUsage id-kp-OCSPSigning: clients refuse the "
                                            "responses it signs (remove its certificate and key to have it replaced)")
    return Finding(Level.OK, subject, "carries id-kp-OCSPSigning")


# --- keys at rest ----------------------------------------------------------------------------------


def _at_rest_finding(keys: KeyBackend, config: ServerConfig) -> Finding:
    try:
        keys.check_at_rest("serve", allow_unprotected=False)
    except ConfigError as exc:
        if unencrypted_keys_allowed(config):
            return Finding(Level.OK, "keys at rest", "not encrypted, which this configuration allows "
                                                     "(dev: true or ca.allow_unencrypted_keys: true)")
        return Finding(Level.WARNING, "keys at rest", str(exc))
    return Finding(Level.OK, "keys at rest", f"protected ({config.ca.keys.type} key backend)")


# --- shared checks ---------------------------------------------------------------------------------


def _key_finding(subject: str, key: Signer, cert: x509.Certificate, key_where: str, cert_where: Path) -> Finding:
    if key_matches(key, cert):
        return Finding(Level.OK, subject, f"{key_where} belongs to the certificate in {cert_where}")
    return Finding(Level.FAIL, subject, f"{key_where} does not belong to the certificate in {cert_where} "
                                        "(their public keys differ)")


def _issued_by_ca(subject: str, cert: x509.Certificate, ca: CertificateAuthority) -> Finding:
    if is_issued_by(cert, ca.ca_cert):
        return Finding(Level.OK, subject, f"issued by the CA {_name(ca.ca_cert)}")
    return Finding(Level.FAIL, subject, f"not issued by the CA {_name(ca.ca_cert)} (issuer "
                                        f"{cert.issuer.rfc4514_string()}; or its signature does not verify)")


def _validity_finding(subject: str, cert: x509.Certificate, now: datetime, horizon: _Horizon) -> Finding:
    not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
    if not_after <= now:
        return Finding(Level.FAIL, subject, f"expired on {_when(not_after)}")
    if not_before > now:
        return Finding(Level.FAIL, subject, f"not valid before {_when(not_before)}")
    if not_after - now <= horizon.within:
        days = (not_after - now).days
        return Finding(Level.WARNING, subject, f"expires on {_when(not_after)}, in {days} days: {horizon.advice}")
    return Finding(Level.OK, subject, f"valid until {_when(not_after)}")


def _extension(cert: x509.Certificate, kind: type[_Ext]) -> _Ext | None:
    """The extension's value, None when absent; ValueError when the certificate's extensions do not parse."""
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _name(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string()


def _when(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC"
