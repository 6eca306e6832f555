"""The certificate authority: its certificate, key and chain, plus the RA, and their life on disk.

A CA directory (mode 0700) holds ``ca.pem``, ``ra.pem`` and, for a subordinate CA, ``chain.pem`` (the
certificates above ``ca.pem``, its issuer first), every file mode 0600. The keys ``ca.key`` and
``ra.key`` are kept by a key backend (:mod:`scep_server.ca.keys`; the ``file`` backend keeps them in
the same directory, encrypted with the CA passphrase when one is set), and reach the CA only as signers.

Keys at rest: ``serve`` and ``import-ca`` need a CA passphrase unless the configuration allows
unencrypted keys (``ca.allow_unencrypted_keys: true``, or ``dev: true`` as config/dev.yaml says), see
:func:`check_keys_at_rest`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from scep_server.ca.certfiles import (
    load_certificates,
    load_single_certificate,
    parse_certificates,
    save_certificate,
    save_certificates,
)
from scep_server.ca.keys import (
    KeyBackend,
    KeyContext,
    KeySpec,
    NewKey,
    RaKey,
    Signer,
    as_ra_key,
    key_matches,
    open_backend,
)
from scep_server.ca.material import RA_KEY_BITS, issue_ra, self_signed_ca
from scep_server.ca.ra_keyring import RaFiles, RaIdentity, RaKeyring, load_ra_keyring, rotate_ra_keyring
from scep_server.config import CAConfig, KeyBackendConfig, ServerConfig
from scep_server.errors import CAError, ConfigError
from scep_server.files import make_private_dir
from scep_server.pki.chain import is_issued_by, is_self_signed
from scep_server.pki.names import parse_name

CA_KEY, CA_CERT, RA_KEY, RA_CERT, CHAIN = "ca.key", "ca.pem", "ra.key", "ra.pem", "chain.pem"
CA_DIR_MODE = 0o700

_Ext = TypeVar("_Ext", bound=x509.ExtensionType)


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    """The issuing CA, the RA that speaks SCEP for it, and the chain above the CA; their keys as signers."""

    name: str
    ca_cert: x509.Certificate
    ca_key: Signer = field(repr=False)
    ra_keyring: RaKeyring = field(repr=False)
    chain: tuple[x509.Certificate, ...] = ()
    label: str = ""  # the CA generation (:mod:`scep_server.ca.generations`); "" is the CA's name

    @property
    def ra_cert(self) -> x509.Certificate:
        """The current RA's certificate: the one GetCACert hands out."""
        return self.ra_keyring.current.cert

    @property
    def ra_key(self) -> RaKey:
        return self.ra_keyring.current.key

    @property
    def generation(self) -> str:
        """The label of this CA's generation: its URLs (``/crl/<label>.crl``) and its place on disk."""
        return self.label or self.name

    @property
    def issuer_name(self) -> str:
        """The CA's subject as an RFC 4514 string."""
        return self.ca_cert.subject.rfc4514_string()

    def getcacert_certificates(self, include_root: bool) -> list[x509.Certificate]:
        """The GetCACert answer (RFC 8894 §4.2.1.2): RA, CA, then the chain up to the root.

        With ``include_root`` False a self-signed root at the top of the chain is left out; a
        self-signed CA certificate is always sent, as it is the issuer clients need.
        """
        chain = list(self.chain)
        if not include_root and chain and is_self_signed(chain[-1]):
            chain.pop()
        return [self.ra_cert, self.ca_cert, *chain]

    def fingerprints(self) -> dict[str, str]:
        """SHA-1 and SHA-256 fingerprints of the CA certificate, as ``AB:CD:...`` (Intune asks for them)."""
        return certificate_fingerprints(self.ca_cert)

    @property
    def root(self) -> x509.Certificate:
        """The self-signed certificate at the top: the CA itself, or the last of an imported chain (what an
        Intune trusted-certificate profile must carry)."""
        return self.chain[-1] if self.chain else self.ca_cert

    def ra_expires_within(self, delta: timedelta, now: datetime | None = None) -> bool:
        """Whether the RA certificate expires within ``delta`` of ``now`` (or is already expired)."""
        return self.ra_cert.not_valid_after_utc - _now(now) <= delta


def certificate_fingerprints(cert: x509.Certificate) -> dict[str, str]:
    """SHA-1 and SHA-256 fingerprints of ``cert``, as ``AB:CD:...``."""
    return {
        "sha1": _colon_hex(cert.fingerprint(hashes.SHA1())),
        "sha256": _colon_hex(cert.fingerprint(hashes.SHA256())),
    }


def _colon_hex(digest: bytes) -> str:
    return ":".join(f"{byte:02X}" for byte in digest)


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


def key_backend(
    ca_dir: Path, passphrase: bytes | None, keys: KeyBackendConfig | None = None, *, namespace: str = ""
) -> KeyBackend:
    """The backend holding the keys of the CA directory ``ca_dir``: the one ``keys`` (``ca.keys``) names,
    by default PEM files in the directory. ``namespace``: see :class:`~scep_server.ca.keys.KeyContext`."""
    keys = keys or KeyBackendConfig()
    return open_backend(KeyContext(ca_dir, passphrase, keys.settings, namespace), keys.type)


def unencrypted_keys_allowed(config: ServerConfig) -> bool:
    """Whether this configuration accepts CA/RA keys without a passphrase: a dev config, or said explicitly."""
    return config.dev or config.ca.allow_unencrypted_keys


def check_keys_at_rest(config: ServerConfig, passphrase: bytes | None, action: str) -> None:
    """Refuse ``action`` (``serve``, ``import-ca``) without a CA passphrase unless unencrypted keys are allowed.

    With a passphrase the keys are encrypted: written so, and encrypted in place when found otherwise.
    """
    keys = key_backend(config.ca_dir, passphrase, config.ca.keys)
    keys.check_at_rest(action, allow_unprotected=unencrypted_keys_allowed(config))


def ca_exists(ca_dir: Path, keys: KeyBackendConfig | None = None) -> bool:
    """Whether ``ca_dir`` (or the key backend ``keys``) already holds a CA key or certificate (which
    init/import must not overwrite)."""
    return key_backend(ca_dir, None, keys).exists(CA_KEY) or (ca_dir / CA_CERT).exists()


def init_ca(
    ca_dir: Path, config: CAConfig, passphrase: bytes | None, *, now: datetime | None = None, label: str = "",
    subject: x509.Name | None = None,
) -> CertificateAuthority:
    """Create a self-signed CA (``subject``, by default ``ca.subject``) and its RA in ``ca_dir`` (made
    mode 0700 when absent); ``label``: the generation it is (:mod:`~scep_server.ca.generations`)."""
    now = _now(now)
    _refuse_existing(ca_dir, config.keys, label)
    subject = subject or _config_name(config.subject, "ca.subject")
    ra_subject = _config_name(config.ra_subject, "ca.ra_subject")
    keys = key_backend(ca_dir, passphrase, config.keys, namespace=generation_namespace(label))
    ca_key = keys.generate(KeySpec(config.key_type, rsa_bits=config.key_size, curve=config.curve))
    ca_cert = self_signed_ca(ca_key, subject, config.validity_days, now)
    ra_key = keys.generate(KeySpec("rsa", rsa_bits=RA_KEY_BITS))
    ca = _with_ra(config.name, ca_cert, ca_key, (), ra_key, ra_subject, config.ra_validity_days, now, label)
    _store(ca_dir, ca, ca_key, ra_key)
    return ca


def import_ca(
    ca_dir: Path,
    config: CAConfig,
    *,
    cert_pem: bytes,
    key_pem: bytes,
    key_password: bytes | None,
    chain_pem: bytes | None,
    passphrase: bytes | None,
    now: datetime | None = None,
    label: str = "",
) -> CertificateAuthority:
    """Adopt an existing CA certificate and key, check them, and create an RA under them.

    Certificates after the first in ``cert_pem`` are treated as chain certificates, like those of
    ``chain_pem``; the chain may be given in any order and is stored issuer first. The key is stored
    re-encrypted with ``passphrase``.
    """
    now = _now(now)
    _refuse_existing(ca_dir, config.keys, label)
    ca_cert, *extra = parse_certificates(cert_pem, source="the CA certificate")
    pool = extra + (parse_certificates(chain_pem, source="the chain") if chain_pem else [])
    keys = key_backend(ca_dir, passphrase, config.keys, namespace=generation_namespace(label))
    ca_key = keys.adopt(key_pem, key_password, source="the CA key", hint="give the key's password")
    if not key_matches(ca_key, ca_cert):
        raise CAError("the private key does not belong to the CA certificate (their public keys differ)")
    check_ca_certificate(ca_cert, now, "the CA certificate")
    chain = order_chain(ca_cert, pool, now)
    ra_subject = _config_name(config.ra_subject, "ca.ra_subject")
    ra_key = keys.generate(KeySpec("rsa", rsa_bits=RA_KEY_BITS))
    ca = _with_ra(config.name, ca_cert, ca_key, chain, ra_key, ra_subject, config.ra_validity_days, now, label)
    _store(ca_dir, ca, ca_key, ra_key)
    return ca


def load_ca(
    ca_dir: Path, config: CAConfig, passphrase: bytes | None, *, label: str = "", now: datetime | None = None
) -> CertificateAuthority:
    """Load the CA of ``ca_dir`` (of the generation ``label``, "" for the CA the directory was created
    with) and check that its parts belong together."""
    keys = key_backend(ca_dir, passphrase, config.keys, namespace=generation_namespace(label))
    found = {CA_KEY: keys.exists(CA_KEY), CA_CERT: (ca_dir / CA_CERT).exists()}
    missing = [name for name, there in found.items() if not there]
    if missing:
        raise CAError(f"no complete CA in {ca_dir}: missing {', '.join(missing)} (initialise or import a CA)")
    ca_cert = load_single_certificate(ca_dir / CA_CERT)
    ca_key = keys.load(CA_KEY)
    if not key_matches(ca_key, ca_cert):
        raise CAError(f"{keys.describe(CA_KEY)} does not belong to the certificate in {ca_dir / CA_CERT}")
    keyring = load_ra_keyring(ca_dir, keys, now, issuer=ca_cert)
    if not is_issued_by(keyring.current.cert, ca_cert):
        raise CAError(f"the RA certificate in {ca_dir / keyring.current.files.cert} was not issued by the CA "
                      "(rotate the RA)")
    chain = _load_chain(ca_dir, ca_cert)
    return CertificateAuthority(config.name, ca_cert, ca_key, keyring, chain, label)


def generation_namespace(label: str) -> str:
    """Where a generation's keys live apart from the first CA's on a shared token: ``<label>/``."""
    return f"{label}/" if label else ""


def rotate_ra(
    ca_dir: Path,
    ca: CertificateAuthority,
    config: CAConfig,
    passphrase: bytes | None,
    *,
    now: datetime | None = None,
) -> CertificateAuthority:
    """Give the CA a new RA key and certificate; the RA it replaces keeps decrypting requests encrypted
    to it for ``ca.ra_grace_days`` (:func:`~scep_server.ca.ra_keyring.rotate_ra_keyring`)."""
    moment = _now(now)
    ra_subject = _config_name(config.ra_subject, "ca.ra_subject")
    keys = key_backend(ca_dir, passphrase, config.keys, namespace=generation_namespace(ca.label))
    ra_key = keys.generate(KeySpec("rsa", rsa_bits=RA_KEY_BITS))
    ra_cert = issue_ra(ca.ca_cert, ca.ca_key, as_ra_key(ra_key, "the new RA key").public_key(), ra_subject,
                       config.ra_validity_days, moment)
    keyring = rotate_ra_keyring(
        ca_dir, keys, ca.ra_keyring, ra_key, ra_cert, grace=timedelta(days=config.ra_grace_days), now=moment
    )
    return replace(ca, ra_keyring=keyring)


def check_ca_certificate(cert: x509.Certificate, now: datetime, label: str) -> None:
    """Raise CAError unless ``cert`` may issue certificates at ``now``.

    RFC 5280 §4.2.1.9: basicConstraints with cA TRUE; §4.2.1.3: keyCertSign when keyUsage is present.
    """
    subject = cert.subject.rfc4514_string()
    extensions = _extensions(cert, label)
    constraints = _extension(extensions, x509.BasicConstraints)
    if constraints is None or not constraints.ca:
        raise CAError(f"{label} ({subject}) is not a CA certificate: basicConstraints cA is not TRUE")
    usage = _extension(extensions, x509.KeyUsage)
    if usage is not None and not usage.key_cert_sign:
        raise CAError(f"{label} ({subject}) may not sign certificates: keyUsage lacks keyCertSign")
    if cert.not_valid_after_utc <= now:
        raise CAError(f"{label} ({subject}) expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    if cert.not_valid_before_utc > now:
        raise CAError(f"{label} ({subject}) is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")


def order_chain(ca_cert: x509.Certificate, pool: list[x509.Certificate], now: datetime) -> tuple[x509.Certificate, ...]:
    """Arrange ``pool`` into the chain above ``ca_cert`` (issuer first), checking every link.

    Each certificate must be a valid CA certificate whose key signed the one below it; a certificate
    that is not on the path, or a name match whose signature does not verify, is a broken chain.
    """
    remaining = _unique(pool, exclude=ca_cert)
    chain: list[x509.Certificate] = []
    current = ca_cert
    while remaining and not is_self_signed(current):
        issuer = _find_issuer(current, remaining)
        if issuer is None:
            break
        check_ca_certificate(issuer, now, "the chain certificate")
        chain.append(issuer)
        remaining.remove(issuer)
        current = issuer
    if remaining:
        names = "; ".join(cert.subject.rfc4514_string() for cert in remaining)
        raise CAError(
            f"broken chain: {names} did not issue {current.subject.rfc4514_string()} "
            "or any certificate above the CA certificate"
        )
    return tuple(chain)


def _find_issuer(cert: x509.Certificate, candidates: list[x509.Certificate]) -> x509.Certificate | None:
    named = [candidate for candidate in candidates if candidate.subject == cert.issuer]
    issuer = next((candidate for candidate in named if is_issued_by(cert, candidate)), None)
    if named and issuer is None:
        raise CAError(
            f"broken chain: the signature of {cert.subject.rfc4514_string()} does not verify with the key "
            f"of the given {cert.issuer.rfc4514_string()} certificate"
        )
    return issuer


def _unique(certs: list[x509.Certificate], *, exclude: x509.Certificate) -> list[x509.Certificate]:
    unique: list[x509.Certificate] = []
    for cert in certs:
        if cert != exclude and cert not in unique:
            unique.append(cert)
    return unique


def _extensions(cert: x509.Certificate, label: str) -> x509.Extensions:
    try:
        return cert.extensions
    except ValueError as exc:
        raise CAError(f"{label} has malformed extensions: {exc}") from exc


def _extension(extensions: x509.Extensions, kind: type[_Ext]) -> _Ext | None:
    try:
        return extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _with_ra(
    name: str,
    ca_cert: x509.Certificate,
    ca_key: Signer,
    chain: tuple[x509.Certificate, ...],
    ra_key: Signer,
    ra_subject: x509.Name,
    ra_validity_days: int,
    now: datetime,
    label: str = "",
) -> CertificateAuthority:
    ra = as_ra_key(ra_key, "the new RA key")
    ra_cert = issue_ra(ca_cert, ca_key, ra.public_key(), ra_subject, ra_validity_days, now)
    keyring = RaKeyring(RaIdentity(ra_cert, ra, RaFiles(RA_CERT, RA_KEY)))
    return CertificateAuthority(name, ca_cert, ca_key, keyring, chain, label)


def _config_name(text: str, setting: str) -> x509.Name:
    try:
        name = parse_name(text)
    except ValueError as exc:
        raise ConfigError(f"{setting}: {exc}") from exc
    if not name.rdns:
        raise ConfigError(f"{setting} must not be empty")
    return name


def _refuse_existing(ca_dir: Path, keys: KeyBackendConfig, label: str = "") -> None:
    backend = key_backend(ca_dir, None, keys, namespace=generation_namespace(label))
    if backend.exists(CA_KEY) or (ca_dir / CA_CERT).exists():
        where = backend.describe(CA_KEY)
        raise CAError(f"{ca_dir} already holds a CA; remove {where} and {ca_dir / CA_CERT} first to replace it")


def _store(ca_dir: Path, ca: CertificateAuthority, ca_key: NewKey, ra_key: NewKey) -> None:
    # ca.pem goes last: until it exists, load_ca reports the CA as incomplete.
    make_private_dir(ca_dir)
    ra_key.stage(RA_KEY).commit()
    save_certificate(ca_dir / RA_CERT, ca.ra_cert)
    if ca.chain:
        save_certificates(ca_dir / CHAIN, ca.chain)
    ca_key.stage(CA_KEY).commit()
    save_certificate(ca_dir / CA_CERT, ca.ca_cert)


def _load_chain(ca_dir: Path, ca_cert: x509.Certificate) -> tuple[x509.Certificate, ...]:
    path = ca_dir / CHAIN
    chain = tuple(load_certificates(path)) if path.exists() else ()
    for lower, upper in zip((ca_cert, *chain), chain, strict=False):
        if not is_issued_by(lower, upper):
            raise CAError(
                f"{path} is out of order: {lower.subject.rfc4514_string()} is not issued by the next certificate"
            )
    return chain
