"""The CA directory's certificate files: concatenated PEM, mode 0600 like every file under data_dir."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from scep_server.ca.keys import NewKey
from scep_server.errors import CAError
from scep_server.files import CERT_FILE_MODE, read_file, stage, write_atomic


def save_certificate(path: Path, cert: x509.Certificate) -> None:
    """Write one certificate as PEM."""
    save_certificates(path, (cert,))


def save_certificates(path: Path, certs: Iterable[x509.Certificate]) -> None:
    """Write certificates as concatenated PEM, in the order given."""
    write_atomic(path, certificates_pem(certs), CERT_FILE_MODE)


def replace_pair(key: NewKey, key_name: str, cert_path: Path, cert: x509.Certificate) -> None:
    """Store ``key`` as ``key_name`` and ``cert`` at ``cert_path``, replacing the pair there.

    Both are written in full under temporary names first and then put in place one right after the
    other, so the pair is only ever mismatched for the instant between two renames (which a load
    detects) and a failed write leaves the old pair.
    """
    staged_key = key.stage(key_name)
    try:
        staged_cert = stage(cert_path, certificates_pem([cert]), CERT_FILE_MODE)
    except CAError:
        staged_key.discard()
        raise
    staged_key.commit()
    staged_cert.commit()


def certificates_pem(certs: Iterable[x509.Certificate]) -> bytes:
    """Certificates as concatenated PEM."""
    return b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in certs)


def load_certificates(path: Path) -> list[x509.Certificate]:
    """Every certificate in a PEM file, in file order."""
    return parse_certificates(read_file(path, "certificate"), source=str(path))


def load_single_certificate(path: Path) -> x509.Certificate:
    """The one certificate of a PEM file; CAError when it holds more or fewer."""
    certs = load_certificates(path)
    if len(certs) != 1:
        raise CAError(f"{path} must hold exactly one certificate, not {len(certs)}")
    return certs[0]


def parse_certificates(data: bytes, *, source: str) -> list[x509.Certificate]:
    """Every certificate in PEM ``data`` (or the one certificate of DER ``data``)."""
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except ValueError as exc:
        raise CAError(f"{source} does not hold readable PEM or DER certificates") from exc
