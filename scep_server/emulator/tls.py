"""The emulator's throw-away TLS: its own CA and a server certificate for 127.0.0.1 and localhost.

MSAL and Intune require https (intune-api.md §2), and nothing here ever disables verification: clients
trust ``state_dir/ca.pem``. The CA's private key is never written: it signs the server certificate
once and is dropped. The files are reused while they are valid, so a restarted emulator keeps the CA a
server was configured with. A state directory created here is private (0700), its files 0600.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_FILE = "ca.pem"
CERT_FILE = "server.pem"
KEY_FILE = "server-key.pem"
CA_VALIDITY = timedelta(days=730)
SERVER_VALIDITY = timedelta(days=365)
RENEW_BEFORE = timedelta(days=1)
DIR_MODE = 0o700
FILE_MODE = 0o600


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca_bundle: Path
    certificate: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.certificate, self.key)
        return context


def ensure_tls_files(state_dir: Path) -> TlsFiles:
    """The CA bundle, server certificate and key under ``state_dir``, created unless valid ones exist."""
    state_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    files = TlsFiles(state_dir / CA_FILE, state_dir / CERT_FILE, state_dir / KEY_FILE)
    if not _reusable(files, datetime.now(UTC)):
        _create(files, datetime.now(UTC))
    return files


def _reusable(files: TlsFiles, now: datetime) -> bool:
    try:
        ca = x509.load_pem_x509_certificate(files.ca_bundle.read_bytes())
        certificate = x509.load_pem_x509_certificate(files.certificate.read_bytes())
        key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
        certificate.verify_directly_issued_by(ca)
    except (OSError, ValueError, TypeError, InvalidSignature):
        return False
    same_key = key.public_key() == certificate.public_key()
    return same_key and min(ca.not_valid_after_utc, certificate.not_valid_after_utc) > now + RENEW_BEFORE


def _create(files: TlsFiles, now: datetime) -> None:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "scep-server Intune emulator CA"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "scep-server")])
    ca = (
        _builder(ca_name, ca_name, ca_key.public_key(), now, CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    certificate = (
        _builder(name, ca_name, key.public_key(), now, SERVER_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    _write(files.key, key_pem, mode=FILE_MODE)
    _write(files.certificate, certificate.public_bytes(serialization.Encoding.PEM), mode=FILE_MODE)
    _write(files.ca_bundle, ca.public_bytes(serialization.Encoding.PEM), mode=FILE_MODE)


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, now: datetime,
             validity: timedelta) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + validity)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=not ca, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                         encipher_only=False, decipher_only=False)


def _write(path: Path, data: bytes, *, mode: int) -> None:
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), mode)  # also when a stale temporary file was reused
        handle.write(data)
    os.replace(temporary, path)
