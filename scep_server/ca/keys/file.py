"""CA and RA key material on disk: generation, PKCS#8 PEM storage, certificate files, private directories.

Private keys are written as PKCS#8 PEM, encrypted with the best available scheme when a passphrase is
given (an unencrypted key is written with a warning), and created with mode 0600 before any byte is
written, so they are never readable by others, not even for an instant. Certificates are 0600 too, and
directories made here 0700. Every file is written to a temporary name and renamed into place, so a crash
leaves either the old or the new file, never half of one.

A key file found unencrypted while a passphrase is configured is encrypted with it in place when it is
loaded: setting ``ca.key_passphrase`` is how an admin asks for encrypted keys, so it is never ignored.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from scep_server.errors import CAError

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

PASSPHRASE_HINT = "set SCEP_CA_PASSPHRASE (or ca.key_passphrase)"
KEY_FILE_MODE = 0o600
CERT_FILE_MODE = 0o600
DIR_MODE = 0o700

log = logging.getLogger("scep_server.ca.keys.file")

CURVES: dict[str, type[ec.EllipticCurve]] = {
    "P-256": ec.SECP256R1,
    "P-384": ec.SECP384R1,
    "P-521": ec.SECP521R1,
}
_CURVE_NAMES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}


def curve_name(curve: ec.EllipticCurve) -> str:
    """The NIST name (``P-256``) of a curve, or its SEC name when it has no NIST one."""
    return _CURVE_NAMES.get(curve.name, curve.name)


def generate_private_key(key_type: str, *, key_size: int = 3072, curve: str = "P-256") -> PrivateKey:
    """A new RSA (``key_size`` bits, e = 65537) or EC (NIST ``curve``) private key."""
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    if key_type == "ec":
        if curve not in CURVES:
            raise ValueError(f"unsupported curve {curve!r} (supported: {', '.join(CURVES)})")
        return ec.generate_private_key(CURVES[curve]())
    raise ValueError(f"unsupported key type {key_type!r} (supported: rsa, ec)")


def public_key_der(key: PrivateKey | PublicKey | x509.Certificate) -> bytes:
    """The DER SubjectPublicKeyInfo of a key or certificate, for comparing keys."""
    public = key.public_key() if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey) else key
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_matches(key: PrivateKey, cert: x509.Certificate) -> bool:
    """Whether ``cert`` certifies the public half of ``key``."""
    return public_key_der(key) == public_key_der(cert)


def save_private_key(path: Path, key: PrivateKey, passphrase: bytes | None) -> None:
    """Write ``key`` as PKCS#8 PEM, encrypted when ``passphrase`` is given, with mode 0600."""
    write_atomic(path, private_key_pem(key, passphrase, path=path), KEY_FILE_MODE)


def private_key_pem(key: PrivateKey, passphrase: bytes | None, *, path: Path | None = None) -> bytes:
    """``key`` as PKCS#8 PEM, encrypted with the best available scheme when ``passphrase`` is given.

    Without a passphrase a warning says that the key goes to ``path`` (when given) unencrypted.
    """
    if passphrase == b"":
        raise CAError("an empty passphrase cannot protect a key: unset it to store the key unencrypted")
    if not passphrase:
        log.warning("writing the private key %s unencrypted: anyone who can read the file holds the key; "
                    "%s to encrypt it", path or "file", PASSPHRASE_HINT)
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def load_private_key(path: Path, passphrase: bytes | None) -> PrivateKey:
    """Read a PEM private key written by :func:`save_private_key` (or any PEM RSA/EC key).

    An unencrypted key file is encrypted in place with ``passphrase`` when one is given (module doc).
    """
    key, encrypted = _parse(_read(path, "key"), passphrase, source=str(path), hint=PASSPHRASE_HINT)
    if passphrase and not encrypted:
        _encrypt_in_place(path, key, passphrase)
    return key


def parse_private_key(data: bytes, passphrase: bytes | None, *, source: str, hint: str) -> PrivateKey:
    """Parse a PEM (or DER) RSA/EC private key; ``hint`` tells how to supply a missing passphrase.

    A passphrase given for unencrypted ``data`` is not needed to read it (what is stored is decided by
    whoever writes the key next).
    """
    return _parse(data, passphrase, source=source, hint=hint)[0]


def _parse(data: bytes, passphrase: bytes | None, *, source: str, hint: str) -> tuple[PrivateKey, bool]:
    """The key in ``data`` and whether ``data`` was encrypted."""
    password = passphrase or None
    encrypted = password is not None
    try:
        key = _load_key(data, password)
    except TypeError as exc:
        if password is None:
            raise CAError(f"the key in {source} is encrypted but no passphrase was given: {hint}") from exc
        key, encrypted = _load_key(data, None), False
    except ValueError as exc:
        raise CAError(_unreadable_key_detail(data, password, source)) from exc
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise CAError(f"the key in {source} is a {_key_kind(key)} key: a CA or RA key must be RSA or EC")
    return key, encrypted


def _encrypt_in_place(path: Path, key: PrivateKey, passphrase: bytes) -> None:
    try:
        write_atomic(path, private_key_pem(key, passphrase), KEY_FILE_MODE)
    except CAError as exc:
        raise CAError(f"{path} is unencrypted although a CA passphrase is set, and encrypting it failed: {exc}; "
                      "make the CA directory writable once, or unset the passphrase") from exc
    log.warning("%s was unencrypted: encrypted it with the configured CA passphrase", path)


def _load_key(data: bytes, password: bytes | None) -> object:
    if b"-----BEGIN" in data:
        return serialization.load_pem_private_key(data, password)
    return serialization.load_der_private_key(data, password)


def _unreadable_key_detail(data: bytes, password: bytes | None, source: str) -> str:
    if password is not None and b"ENCRYPTED" in data:
        return f"cannot decrypt the key in {source}: wrong passphrase"
    return f"{source} does not hold a readable PEM or DER private key"


def _key_kind(key: object) -> str:
    return type(key).__name__.removesuffix("PrivateKey").removeprefix("_") or "unknown"


def save_certificate(path: Path, cert: x509.Certificate) -> None:
    """Write one certificate as PEM."""
    save_certificates(path, (cert,))


def save_certificates(path: Path, certs: Iterable[x509.Certificate]) -> None:
    """Write certificates as concatenated PEM, in the order given."""
    write_atomic(path, certificates_pem(certs), CERT_FILE_MODE)


def certificates_pem(certs: Iterable[x509.Certificate]) -> bytes:
    """Certificates as concatenated PEM."""
    return b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in certs)


def load_certificates(path: Path) -> list[x509.Certificate]:
    """Every certificate in a PEM file, in file order."""
    return parse_certificates(_read(path, "certificate"), source=str(path))


def parse_certificates(data: bytes, *, source: str) -> list[x509.Certificate]:
    """Every certificate in PEM ``data`` (or the one certificate of DER ``data``)."""
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except ValueError as exc:
        raise CAError(f"{source} does not hold readable PEM or DER certificates") from exc


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise CAError(f"{what} file {path} does not exist") from exc
    except OSError as exc:
        raise CAError(f"cannot read {what} file {path}: {exc.strerror}") from exc


def make_private_dir(path: Path) -> None:
    """Create ``path`` and any missing parents with mode 0700; warn when an existing one is open to others.

    An existing directory is not changed (it may be shared on purpose, or not be ours): the warning
    names the command that closes it.
    """
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=DIR_MODE)
            os.chmod(directory, DIR_MODE)  # mkdir's mode is narrowed by the umask, never widened
        except FileExistsError:
            continue  # made at the same moment by another process
        except OSError as exc:
            raise CAError(f"cannot create the directory {directory}: {exc.strerror}") from exc
    if not missing:
        warn_if_open(path)


def warn_if_open(path: Path) -> None:
    """Log a warning when the directory ``path`` is readable, writable or searchable by group or others."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return
    if mode & 0o077:
        log.warning("%s is accessible to other users (mode %o): run `chmod 700 %s`", path, mode, path)


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` through a private temporary file renamed into place."""
    commit(stage(path, data, mode), path)


def stage(path: Path, data: bytes, mode: int) -> Path:
    """Write ``data`` to a new temporary file next to ``path`` and return its name.

    The file is created exclusively with ``mode`` and forced to exactly ``mode`` whatever the umask
    before any byte is written, so its content is never visible with wider permissions.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode)
    except OSError as exc:
        raise CAError(f"cannot create {path}: {exc.strerror}") from exc
    try:
        _write_fd(fd, data, mode)
    except OSError as exc:
        discard(tmp)
        raise CAError(f"cannot write {path}: {exc.strerror}") from exc
    return tmp


def commit(tmp: Path, path: Path) -> None:
    """Rename a file made by :func:`stage` over ``path`` (atomic on POSIX) and make it durable."""
    try:
        os.replace(tmp, path)
    except OSError as exc:
        discard(tmp)
        raise CAError(f"cannot write {path}: {exc.strerror}") from exc
    _fsync_dir(path.parent)


def discard(tmp: Path) -> None:
    """Remove a staged file that will not be committed."""
    with contextlib.suppress(OSError):
        tmp.unlink()


def _write_fd(fd: int, data: bytes, mode: int) -> None:
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), mode)
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(directory: Path) -> None:
    # Makes the rename durable; some filesystems refuse to open directories, which is harmless here.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
