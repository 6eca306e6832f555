"""The RA keyring of one CA: the RA that GetCACert hands out, and the RAs it replaced, still decrypting.

A rotation (RFC 8894 §2.2 leaves the RA's lifetime to the CA) must not break a device that fetched
GetCACert a minute before and encrypts to the RA it got. So a replaced RA keeps its key and certificate
for a grace period and keeps decrypting (and signing the replies to) requests encrypted to it.

On disk, beside the CA's files: ``ra-keyring.json`` names the current RA's certificate file and key and
the previous ones with the time each stays usable until. Without the index (a CA directory that never
rotated) the current RA is ``ra.pem`` with the key ``ra.key``. A new RA is written under names of its
own (``ra-<serial>.pem``, ``ra-<serial>.key``) before the index is replaced in one rename, so a crash
leaves either the old keyring or the new one, never a half; nothing is ever renamed on a key token.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509

from scep_server.ca.certfiles import load_single_certificate, replace_pair
from scep_server.ca.keys import KeyBackend, NewKey, RaKey, as_ra_key, key_matches
from scep_server.errors import CAError
from scep_server.files import CERT_FILE_MODE, write_atomic
from scep_server.pki.chain import is_issued_by

log = logging.getLogger(__name__)

KEYRING_INDEX = "ra-keyring.json"
LOCK_FILE = ".ra-keyring.lock"
_RA_CERT_NAME = re.compile(r"ra(-[0-9a-f]{1,40})?\.pem")
_RA_KEY_NAME = re.compile(r"ra(-[0-9a-f]{1,40})?\.key")
LEGACY_CERT, LEGACY_KEY = "ra.pem", "ra.key"
_FORMAT = 1


@dataclass(frozen=True, slots=True)
class RaFiles:
    """Where one RA lives: its certificate file (in the CA directory) and its key's name in the backend."""

    cert: str
    key: str


@dataclass(frozen=True, slots=True)
class RaIdentity:
    """One RA: certificate and key, and until when it may decrypt (None: the current RA, while valid)."""

    cert: x509.Certificate
    key: RaKey = field(repr=False)
    files: RaFiles
    usable_until: datetime | None = None

    @property
    def serial(self) -> int:
        return self.cert.serial_number

    def usable(self, now: datetime) -> bool:
        """Whether requests encrypted to this RA are still opened at ``now``."""
        end = self.cert.not_valid_after_utc
        if self.usable_until is not None:
            end = min(end, self.usable_until)
        return now < end

    def addressed_by(self, issuer: x509.Name, serial: int) -> bool:
        """Whether a RecipientInfo naming ``issuer`` and ``serial`` (RFC 5652 §6.2.1) means this RA."""
        return self.cert.serial_number == serial and self.cert.issuer == issuer


@dataclass(frozen=True, slots=True)
class RaKeyring:
    """The current RA and the replaced ones still within their grace period, newest first."""

    current: RaIdentity
    previous: tuple[RaIdentity, ...] = ()

    def identities(self) -> tuple[RaIdentity, ...]:
        return (self.current, *self.previous)

    def find(self, issuer: x509.Name, serial: int, now: datetime | None = None) -> RaIdentity | None:
        """The usable RA a request's envelope is addressed to, or None."""
        moment = now or datetime.now(UTC)
        return next(
            (ra for ra in self.identities() if ra.addressed_by(issuer, serial) and ra.usable(moment)), None
        )


def index_path(ca_dir: Path) -> Path:
    return ca_dir / KEYRING_INDEX


def load_ra_keyring(
    ca_dir: Path, keys: KeyBackend, now: datetime | None = None, *, issuer: x509.Certificate | None = None
) -> RaKeyring:
    """The keyring of ``ca_dir``, with the previous RAs whose grace period is over left out.

    The current RA must load and match; a previous one that does not, or that ``issuer`` (the CA) did
    not issue, is logged and left out (it only serves devices that cached it)."""
    moment = now or datetime.now(UTC)
    current_files, previous = _read_index(ca_dir)
    current = _load_identity(ca_dir, keys, current_files, None)
    kept: list[RaIdentity] = []
    for files, until in previous:
        if until <= moment:
            continue
        try:
            identity = _load_identity(ca_dir, keys, files, until)
        except CAError as exc:
            log.warning("the previous RA %s is left out of the keyring: %s", files.cert, exc)
            continue
        if issuer is not None and not is_issued_by(identity.cert, issuer):
            log.warning("the previous RA %s is left out of the keyring: the CA did not issue it", files.cert)
            continue
        kept.append(identity)
    return RaKeyring(current, tuple(kept))


def rotate_ra_keyring(
    ca_dir: Path,
    keys: KeyBackend,
    keyring: RaKeyring,
    new_key: NewKey,
    new_cert: x509.Certificate,
    *,
    grace: timedelta,
    now: datetime | None = None,
) -> RaKeyring:
    """Make ``new_cert`` (with ``new_key``, not stored yet) the current RA; the current one becomes a
    previous RA usable for ``grace``. Previous RAs past their grace are dropped from the index (and their
    keys destroyed where the backend can)."""
    moment = now or datetime.now(UTC)
    ra_key = as_ra_key(new_key, "the new RA key")
    if not key_matches(ra_key, new_cert):
        raise CAError("the new RA key does not belong to the new RA certificate")
    files = RaFiles(f"ra-{new_cert.serial_number:x}.pem", f"ra-{new_cert.serial_number:x}.key")
    with _index_lock(ca_dir):  # one rotation at a time per CA directory: the CLI, the job, a replica
        current, previous = _read_index(ca_dir)
        if current != keyring.current.files:
            raise CAError(f"the RA of {ca_dir} was rotated meanwhile (it is now {current.cert}): try again")
        replace_pair(new_key, files.key, ca_dir / files.cert, new_cert)  # new names: nothing points at them yet
        retiring = [(current, moment + grace), *previous]
        kept = [(entry, until) for entry, until in retiring if until > moment]
        try:
            _write_index_files(ca_dir, files, kept)
        except CAError:
            _destroy_files(ca_dir, keys, files)
            raise
        for entry, until in retiring:
            if until <= moment:
                _destroy_files(ca_dir, keys, entry)
    retired = replace(keyring.current, usable_until=moment + grace)
    still = tuple(ra for ra in (retired, *keyring.previous) if ra.usable(moment))
    return RaKeyring(RaIdentity(new_cert, ra_key, files), still)


def prune_ra_keyring(ca_dir: Path, keys: KeyBackend, now: datetime | None = None) -> int:
    """Drop the previous RAs whose grace period is over from the index and destroy them; how many."""
    moment = now or datetime.now(UTC)
    with _index_lock(ca_dir):
        current, previous = _read_index(ca_dir)
        expired = [(files, until) for files, until in previous if until <= moment]
        if not expired:
            return 0
        kept = [(files, until) for files, until in previous if until > moment]
        _write_index_files(ca_dir, current, kept)
        for files, _ in expired:
            _destroy_files(ca_dir, keys, files)
    return len(expired)


@contextlib.contextmanager
def _index_lock(ca_dir: Path) -> Iterator[None]:
    """An exclusive lock on the keyring of ``ca_dir`` across processes (``.ra-keyring.lock``)."""
    path = ca_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_CREAT | os.O_RDWR, CERT_FILE_MODE)
    except OSError as exc:
        raise CAError(f"cannot lock {path}: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _load_identity(ca_dir: Path, keys: KeyBackend, files: RaFiles, until: datetime | None) -> RaIdentity:
    cert_path = ca_dir / files.cert
    missing = [name for name, there in ((files.cert, cert_path.exists()), (files.key, keys.exists(files.key)))
               if not there]
    if missing:
        raise CAError(f"no complete RA in {ca_dir}: missing {', '.join(missing)}")
    cert = load_single_certificate(cert_path)
    key = as_ra_key(keys.load(files.key), keys.describe(files.key))
    if not key_matches(key, cert):
        raise CAError(f"{keys.describe(files.key)} does not belong to the certificate in {cert_path}")
    return RaIdentity(cert, key, files, until)


def _read_index(ca_dir: Path) -> tuple[RaFiles, list[tuple[RaFiles, datetime]]]:
    path = index_path(ca_dir)
    if not path.exists():
        return RaFiles(LEGACY_CERT, LEGACY_KEY), []
    try:
        document = json.loads(path.read_bytes())
        current = _files(document["current"])
        previous = [(_files(entry), _time(entry["usable_until"])) for entry in document.get("previous", [])]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CAError(f"{path} is unreadable or malformed: {exc}") from exc
    return current, previous


def _files(entry: object) -> RaFiles:
    """An entry's names: only RA names (``ra.pem``/``ra.key``, ``ra-<hex serial>.pem``/``.key``), never
    a path or another key of the CA directory (a retired RA's files are deleted)."""
    if not isinstance(entry, dict):
        raise TypeError("an RA entry must be an object")
    cert, key = entry["cert"], entry["key"]
    if not (isinstance(cert, str) and _RA_CERT_NAME.fullmatch(cert) and isinstance(key, str)
            and _RA_KEY_NAME.fullmatch(key)):
        raise ValueError(f"bad RA file names {cert!r}, {key!r}")
    return RaFiles(cert, key)


def _time(text: object) -> datetime:
    if not isinstance(text, str):
        raise TypeError("usable_until must be a string")
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError("usable_until must carry a time zone")
    return moment


def _write_index_files(ca_dir: Path, current: RaFiles, previous: list[tuple[RaFiles, datetime]]) -> None:
    document = {
        "format": _FORMAT,
        "current": {"cert": current.cert, "key": current.key},
        "previous": [
            {"cert": files.cert, "key": files.key, "usable_until": until.isoformat()} for files, until in previous
        ],
    }
    write_atomic(index_path(ca_dir), json.dumps(document, indent=2).encode() + b"\n", CERT_FILE_MODE)


def _destroy_files(ca_dir: Path, keys: KeyBackend, files: RaFiles) -> None:
    """Remove a retired RA's certificate file and destroy its key (its index entry is gone already)."""
    try:
        keys.destroy(files.key)
        (ca_dir / files.cert).unlink(missing_ok=True)
    except (OSError, CAError) as exc:
        log.warning("the retired RA %s could not be removed: %s", files.cert, exc)
    else:
        log.info("retired RA %s removed after its grace period", files.cert)
