"""The delegated OCSP responder (RFC 6960 §4.2.2.2): its own key and certificate, issued by the CA.

OCSP responses are signed by a short-lived responder certificate rather than by the CA key, so the CA
key signs once a renewal instead of once a response. The certificate carries extendedKeyUsage
id-kp-OCSPSigning (the CA's delegation, §4.2.2.2) and id-pkix-ocsp-nocheck (§4.2.2.2.1: clients need
not check the responder's own status). Its key is ``ocsp.key`` of the CA's key backend (with the
``file`` backend a PKCS#8 PEM file, mode 0600, encrypted with the CA passphrase when one is set) and
its certificate ``ocsp.pem``, next to the CA's.

Several server processes share the files: creation and renewal happen under an exclusive lock on
``.ocsp.lock`` and each process re-reads the files under that lock first, so a renewal is done once
and every process adopts it; the pair is replaced by two renames, and a mismatched pair (a crash in
between) is replaced on the next load.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from scep_server.ca.authority import CertificateAuthority, generation_namespace, key_backend
from scep_server.ca.certfiles import load_single_certificate, replace_pair
from scep_server.ca.keys import KeyBackend, KeySpec, NewKey, Signer, key_matches
from scep_server.ca.material import MATERIAL_BACKDATE, authority_key_identifier
from scep_server.config import KeyBackendConfig
from scep_server.errors import CAError, ConfigError
from scep_server.files import KEY_FILE_MODE
from scep_server.pki.chain import is_issued_by
from scep_server.pki.names import parse_name

log = logging.getLogger(__name__)

OCSP_KEY, OCSP_CERT, OCSP_LOCK = "ocsp.key", "ocsp.pem", ".ocsp.lock"
DEFAULT_RESPONDER_VALIDITY = timedelta(days=30)
RESPONDER_RSA_BITS = 2048
# Renewed when less than this share of its life is left: the old certificate stays valid long after.
RENEW_WHEN_LEFT = 1 / 3

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class ResponderPolicy:
    """The responder certificate's subject and lifetime."""

    subject: x509.Name
    validity: timedelta = DEFAULT_RESPONDER_VALIDITY

    def __post_init__(self) -> None:
        if not self.subject.rdns:
            raise ValueError("the responder subject must not be empty")
        if self.validity <= timedelta(0):
            raise ValueError("the responder validity must be positive")


def responder_policy(subject: str, validity_days: int) -> ResponderPolicy:
    """The policy from configuration values; ConfigError names the setting at fault."""
    try:
        name = parse_name(subject)
    except ValueError as exc:
        raise ConfigError(f"ca.ocsp_subject: {exc}") from exc
    if validity_days < 1:
        raise ConfigError("ca.ocsp_validity_days must be >= 1")
    try:
        return ResponderPolicy(name, timedelta(days=validity_days))
    except ValueError as exc:
        raise ConfigError(f"ca.ocsp_subject: {exc}") from exc


@dataclass(frozen=True, slots=True)
class ResponderIdentity:
    """A responder certificate and its key, which signs the responses."""

    cert: x509.Certificate
    key: Signer = field(repr=False)

    def renewal_due(self, ca_cert: x509.Certificate, now: datetime) -> bool:
        """Whether less than a third of the certificate's life is left (or it is not valid at ``now``).

        A certificate that already ends with the CA is kept: a new one could not outlive it.
        """
        not_before, not_after = self.cert.not_valid_before_utc, self.cert.not_valid_after_utc
        if not not_before <= now < not_after:
            return True
        if not_after >= ca_cert.not_valid_after_utc:
            return False
        return not_after - now < (not_after - not_before) * RENEW_WHEN_LEFT


def issue_responder_certificate(
    ca: CertificateAuthority, key: Signer, policy: ResponderPolicy, now: datetime
) -> x509.Certificate:
    """The delegated responder certificate for ``key``, issued by the CA and never outliving it.

    RFC 6960 §4.2.2.2: extendedKeyUsage id-kp-OCSPSigning; §4.2.2.2.1: id-pkix-ocsp-nocheck;
    RFC 5280 §4.2.1.3 keyUsage digitalSignature and §4.2.1.9 basicConstraints cA FALSE, both critical.
    """
    not_before = max(now - MATERIAL_BACKDATE, ca.ca_cert.not_valid_before_utc)
    not_after = min(now + policy.validity, ca.ca_cert.not_valid_after_utc)
    if not_after <= now:
        raise CAError("the CA certificate has expired: it cannot delegate OCSP signing")
    builder = (
        x509.CertificateBuilder()
        .subject_name(policy.subject)
        .issuer_name(ca.ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_digital_signature_only(), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
        .add_extension(x509.OCSPNoCheck(), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(authority_key_identifier(ca.ca_cert), critical=False)
    )
    return ca.ca_key.sign_certificate(builder)


def _digital_signature_only() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def new_responder_key(keys: KeyBackend, ca: CertificateAuthority) -> NewKey:
    """A key of the CA's family: clients that check an RSA CA may not do ECDSA, and the reverse."""
    return keys.generate(KeySpec.like(ca.ca_key.public_key(), rsa_bits=RESPONDER_RSA_BITS))


class DelegatedResponder:
    """The responder identity of one CA directory, created when missing and renewed when due.

    :meth:`current` is cheap while the identity in memory is fine; otherwise it takes the lock,
    adopts what another process may have written, and creates a new identity only if still needed.
    """

    def __init__(
        self,
        ca_dir: Path,
        ca: CertificateAuthority,
        passphrase: bytes | None,
        policy: ResponderPolicy,
        *,
        keys: KeyBackendConfig | None = None,
        now: Clock = utcnow,
    ) -> None:
        self._dir = ca_dir
        self._ca = ca
        self._keys = key_backend(ca_dir, passphrase, keys, namespace=generation_namespace(ca.label))
        self._policy = policy
        self._now = now
        self._lock = threading.Lock()
        self._identity: ResponderIdentity | None = None

    @property
    def cert_path(self) -> Path:
        return self._dir / OCSP_CERT

    def current(self) -> ResponderIdentity:
        """The identity to sign with now; raises CAError when it can be neither loaded nor created."""
        identity = self._identity
        if identity is not None and not identity.renewal_due(self._ca.ca_cert, self._now()):
            return identity
        with self._lock, _file_lock(self._dir / OCSP_LOCK):
            identity = self._identity
            if identity is None or identity.renewal_due(self._ca.ca_cert, self._now()):
                identity = self._load_usable() or self._create()
                self._identity = identity
            return identity

    def _load_usable(self) -> ResponderIdentity | None:
        if not (self._keys.exists(OCSP_KEY) and self.cert_path.exists()):
            return None
        try:
            identity = self._load()
        except CAError as exc:
            log.warning("replacing the OCSP responder: %s", exc)
            return None
        problem = self._problem(identity)
        if problem:
            log.info("replacing the OCSP responder certificate: %s", problem)
            return None
        return identity

    def _load(self) -> ResponderIdentity:
        return ResponderIdentity(load_single_certificate(self.cert_path), self._keys.load(OCSP_KEY))

    def _problem(self, identity: ResponderIdentity) -> str | None:
        if not key_matches(identity.key, identity.cert):
            return f"{self._keys.describe(OCSP_KEY)} does not belong to {self.cert_path}"
        if not is_issued_by(identity.cert, self._ca.ca_cert):
            return "it was not issued by the current CA"
        if identity.renewal_due(self._ca.ca_cert, self._now()):
            return f"it expires on {identity.cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        return None

    def _create(self) -> ResponderIdentity:
        key = new_responder_key(self._keys, self._ca)
        cert = issue_responder_certificate(self._ca, key, self._policy, self._now())
        replace_pair(key, OCSP_KEY, self.cert_path, cert)
        log.info(
            "new OCSP responder certificate serial=%x valid until %s",
            cert.serial_number,
            cert.not_valid_after_utc.isoformat(),
        )
        return ResponderIdentity(cert, key)


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (created 0600), held across processes until exit."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_RDWR, KEY_FILE_MODE)
    except OSError as exc:
        raise CAError(f"cannot create the lock file {path}: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
