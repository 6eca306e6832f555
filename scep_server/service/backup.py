"""Backup and restore: one archive holding a consistent copy of the database and the CA directory.

The archive (:mod:`.backup_archive`) holds ``manifest.json`` (format, schema revision, rows per table,
the key backend, the SHA-256 and size of every other member), ``database/<table>.jsonl`` (one row per
line, see :mod:`scep_server.store.backup`) and ``ca/<path>``: every regular file of the CA directory
and its subdirectories as it is on disk (the RA keyring and the retired RAs too). With the ``file`` key
backend the keys are among them, encrypted with the CA passphrase, which is not in the archive; with a
token (``pkcs11``) the keys stay on the token and the archive holds only the certificates.

A backup may run beside a serving server: the database is read in one snapshot, and the CA directory
changes only on RA rotation (copy it again after one). A restore goes only into an empty database and
a data directory without a CA (judged by the CA directory's files, never by asking a token). Everything
is staged under ``<data_dir>/.ca-restoring-<random>`` and checked there, its CA generations (the
issuing one and a staged one) opened with the configured passphrase (or from the token) before anything
else is touched; the rows are then loaded in one transaction which, just before it commits, renames the
staged CA directory into place. What was at the CA directory's path (a directory without a CA) is
renamed aside first and put back when the load fails; a crash leaves it whole, in place or aside, and
leaves a staging directory that the next restore removes. Certificates, CRL numbers and every other
row come back as they were, so CRL numbers continue and no serial is issued twice (serials are drawn at
random and unique in the store).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Engine

from scep_server import __version__
from scep_server.ca.authority import CA_CERT, CA_KEY, check_keys_at_rest, load_ca
from scep_server.ca.generations import Generations, load_generations, read_state
from scep_server.config import ServerConfig
from scep_server.errors import CAError, InvalidInput, StoreError
from scep_server.files import give_to_owner_of, make_private_dir, open_lock_file
from scep_server.service.backup_archive import (
    CA_DIR,
    DATABASE_DIR,
    MANIFEST,
    allowed_ca_path,
    build_manifest,
    ca_member,
    copy_private,
    database_member,
    extract_checked,
    opened,
    read_manifest,
    write_archive,
)
from scep_server.store.backup import BackupRepository, DumpSummary, Row

__all__ = ["MANIFEST", "STAGING_PREFIX", "BackupResult", "RestoreResult", "create_backup", "restore_backup"]

log = logging.getLogger(__name__)

STAGING_PREFIX = ".ca-restoring-"
RESTORE_LOCK = ".restore.lock"
FORMER_CA_DIR = "ca.before-restore-{stamp}"


@dataclass(frozen=True, slots=True)
class BackupResult:
    """What a backup holds."""

    path: Path
    revision: str
    rows: dict[str, int]
    ca_files: tuple[str, ...]
    keys_encrypted: bool
    key_backend: str
    keys_in_archive: bool  # False: the keys stay with their backend (a token)


@dataclass(frozen=True, slots=True)
class RestoreResult:
    """What a restore put back; ``former_ca_dir``: where the directory found at the CA's path went."""

    revision: str
    rows: dict[str, int]
    ca_files: tuple[str, ...]
    ca_subject: str
    key_backend: str
    keys_in_archive: bool
    former_ca_dir: Path | None


def ca_in_directory(ca_dir: Path) -> bool:
    """Whether ``ca_dir`` holds a CA certificate or a CA key file. Only the directory's own files count:
    keys on a token stay there across a restore, so they say nothing about this directory."""
    return any(os.path.lexists(ca_dir / name) for name in (CA_CERT, CA_KEY))


def create_backup(config: ServerConfig, engine: Engine, passphrase: bytes | None, out: Path) -> BackupResult:
    """Write the archive of this server's database and CA directory to ``out``."""
    if not ca_in_directory(config.ca_dir):
        raise CAError(f"no CA in {config.ca_dir}: nothing to back up (initialise or import a CA first)")
    _whole_generations(config.ca_dir, config, passphrase)  # whole, and the keys encrypted if a passphrase is set
    check_keys_at_rest(config, passphrase, "backup")
    try:
        with tempfile.TemporaryDirectory(prefix=".scep-backup-", dir=out.parent) as scratch:
            work = Path(scratch)
            summary = _dump_database(BackupRepository(engine), work)
            ca_files = _copy_ca_files(config.ca_dir, work / CA_DIR)
            members = [database_member(table) for table in summary.rows] + [ca_member(name) for name in ca_files]
            keys = _KeysKept(config.ca.keys.type, CA_KEY in ca_files, passphrase is not None)
            write_archive(out, work, build_manifest(_manifest_fields(summary, keys), work, members), members)
    except OSError as exc:
        raise InvalidInput(f"cannot write the backup {out}: {exc.strerror or exc}") from None
    return BackupResult(out, summary.revision, summary.rows, ca_files, keys.encrypted, keys.backend, keys.in_archive)


def restore_backup(config: ServerConfig, engine: Engine, passphrase: bytes | None, archive: Path) -> RestoreResult:
    """Put the archive's CA directory and database back into this (empty) server's data dir and database."""
    if ca_in_directory(config.ca_dir):
        raise InvalidInput(f"{config.ca_dir} already holds a CA: restore goes into a data directory without one")
    repository = BackupRepository(engine)
    if not repository.is_empty():
        raise InvalidInput("the database already holds data: restore goes into an empty database")
    data_dir = Path(config.data_dir)
    make_private_dir(data_dir)
    with _restore_lock(data_dir), _staging(data_dir) as staging, opened(archive) as tar:
        manifest = read_manifest(tar)
        _check_key_backend(manifest, config)
        extract_checked(tar, manifest, staging)
        # opened before anything at the CA's path is touched
        issuing = _whole_generations(staging / CA_DIR, config, passphrase).active.ca
        swap = _CaSwap(staging / CA_DIR, config.ca_dir)
        try:
            rows = repository.load(
                manifest["schema_revision"], lambda table: _read_rows(staging, table, manifest),
                before_commit=swap.put_in_place,
            )
        except BaseException:
            swap.undo()
            raise
    former = swap.finish()
    return RestoreResult(
        manifest["schema_revision"], rows, _ca_names(manifest), issuing.ca_cert.subject.rfc4514_string(),
        manifest.get("key_backend", "file"), ca_member(CA_KEY) in manifest["sha256"], former,
    )


def _whole_generations(ca_dir: Path, config: ServerConfig, passphrase: bytes | None) -> Generations:
    """The CA generations of ``ca_dir``, loaded as a server loads them; CAError unless the issuing one and
    a staged one load (a retired one that does not is logged and left out, as a server leaves it)."""
    state = read_state(ca_dir, config.ca.name).settled(datetime.now(UTC))
    try:
        generations = load_generations(ca_dir, config.ca, passphrase)
    except CAError as exc:
        raise CAError(f"the issuing CA generation {state.active} does not load: {exc}") from exc
    if state.next is not None and generations.labelled(state.next) is None:
        record = state.record(state.next)
        try:  # again, for the reason load_generations logged
            load_ca(record.directory(ca_dir), config.ca, passphrase, label=record.label)
        except CAError as exc:
            raise CAError(f"the staged CA generation {record.label} does not load: {exc}") from exc
    return generations


# ------------------------------------------------------------------------------------------------- backup


@dataclass(frozen=True, slots=True)
class _KeysKept:
    """Where the CA's keys are: the backend, whether its key files are in the CA directory (and so in the
    archive), and whether those are encrypted."""

    backend: str
    in_archive: bool
    passphrase_set: bool

    @property
    def encrypted(self) -> bool:
        return self.in_archive and self.passphrase_set


def _manifest_fields(summary: DumpSummary, keys: _KeysKept) -> dict[str, Any]:
    return {
        "created_at": datetime.now(UTC).isoformat(),
        "server_version": __version__,
        "schema_revision": summary.revision,
        "database_dialect": summary.dialect,
        "rows": summary.rows,
        "key_backend": keys.backend,
        "keys_in_archive": keys.in_archive,
        "keys_encrypted": keys.encrypted,
    }


def _dump_database(repository: BackupRepository, work: Path) -> DumpSummary:
    (work / DATABASE_DIR).mkdir(mode=0o700)
    handles: dict[str, IO[str]] = {}
    try:
        def sink(table: str, row: Row) -> None:
            handle = handles.get(table)
            if handle is None:
                handle = handles[table] = _private_text(work / database_member(table))
            handle.write(json.dumps(row, separators=(",", ":"), ensure_ascii=False) + "\n")

        summary = repository.dump(sink)
    finally:
        for handle in handles.values():
            handle.close()
    for table in summary.rows:  # an empty table still gets its (empty) file
        if table not in handles:
            _private_text(work / database_member(table)).close()
    return summary


def _copy_ca_files(ca_dir: Path, target: Path) -> tuple[str, ...]:
    """Every regular file of the CA directory and of its subdirectories, copied as it is; their paths
    below the directory. Temporary (dot) files and links are left out."""
    names = []
    for path in _regular_files(ca_dir):
        relative = path.relative_to(ca_dir)
        if not allowed_ca_path(relative.parts):
            raise CAError(f"cannot back up {path}: its name has a control character, or it lies deeper "
                          "than a restore accepts")
        copy_private(path, target / relative)
        names.append(relative.as_posix())
    return tuple(names)


def _regular_files(directory: Path) -> Iterator[Path]:
    for path in sorted(directory.iterdir()):
        if path.name.startswith(".") or path.is_symlink():
            continue
        if path.is_dir():
            yield from _regular_files(path)
        elif path.is_file():
            yield path


def _private_text(path: Path) -> IO[str]:
    return os.fdopen(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600), "w", encoding="utf-8")


# ------------------------------------------------------------------------------------------------ restore


@contextlib.contextmanager
def _restore_lock(data_dir: Path) -> Iterator[None]:
    """One restore at a time in ``data_dir``: so a staging directory found there is a crashed one's."""
    path = data_dir / RESTORE_LOCK
    try:
        fd = open_lock_file(path)
    except OSError as exc:
        raise InvalidInput(f"cannot open the lock file {path}: {exc.strerror}") from None
    try:
        give_to_owner_of(data_dir, fd)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if isinstance(exc, BlockingIOError):
            raise InvalidInput(f"another restore into {data_dir} is under way") from None
        raise InvalidInput(f"cannot lock {path}: {exc.strerror}") from None
    try:
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def _staging(data_dir: Path) -> Iterator[Path]:
    """A new private directory ``<data_dir>/.ca-restoring-<random>`` (on the CA directory's filesystem, so
    its CA directory moves into place by a rename), removed afterwards; those of crashed restores first."""
    for leftover in sorted(data_dir.glob(STAGING_PREFIX + "*")):
        log.warning("removing %s, left by a restore that did not finish", leftover)
        _remove(leftover)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=data_dir))
    try:
        yield staging
    finally:
        _remove(staging)


def _remove(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path)


class _CaSwap:
    """Renames the staged CA directory to the CA directory's path; whatever was there (a directory without
    a CA) is renamed aside first, and back by :meth:`undo`."""

    def __init__(self, staged: Path, ca_dir: Path) -> None:
        self.staged, self.ca_dir = staged, ca_dir
        self.aside: Path | None = None
        self.placed = False

    def put_in_place(self) -> None:
        try:
            if os.path.lexists(self.ca_dir):
                stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
                aside = self.ca_dir.with_name(FORMER_CA_DIR.format(stamp=stamp))
                os.rename(self.ca_dir, aside)
                self.aside = aside
            os.rename(self.staged, self.ca_dir)
        except OSError as exc:
            raise CAError(f"cannot put the restored CA directory in place at {self.ca_dir}: {exc.strerror}") from exc
        self.placed = True

    def undo(self) -> None:
        """Put back what was at the CA directory's path (the database load did not commit)."""
        if self.placed:
            os.rename(self.ca_dir, self.staged)
            self.placed = False
        if self.aside is not None:
            os.rename(self.aside, self.ca_dir)
            self.aside = None

    def finish(self) -> Path | None:
        """Drop the directory set aside when it is empty; else where it is kept."""
        if self.aside is None:
            return None
        with contextlib.suppress(OSError):
            self.aside.rmdir()
            return None
        log.warning("the directory that was at %s (files, but no CA) is kept as %s", self.ca_dir, self.aside)
        return self.aside


def _check_key_backend(manifest: dict[str, Any], config: ServerConfig) -> None:
    kept_by, configured = manifest.get("key_backend", "file"), config.ca.keys.type
    if kept_by != configured:
        raise InvalidInput(f"the backup's CA keys are kept by the {kept_by!r} key backend, but ca.keys.type is "
                           f"{configured!r} here: restore with the key backend the backup was made with")


def _ca_names(manifest: dict[str, Any]) -> tuple[str, ...]:
    prefix = ca_member("")
    return tuple(sorted(member.removeprefix(prefix) for member in manifest["sha256"] if member.startswith(prefix)))


def _read_rows(work: Path, table: str, manifest: dict[str, Any]) -> Iterator[Row]:
    member = database_member(table)
    if member not in manifest["sha256"]:
        return
    with (work / member).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            try:
                row = json.loads(line)
            except ValueError:
                raise StoreError(f"{member} line {number} is not JSON") from None
            if not isinstance(row, dict):
                raise StoreError(f"{member} line {number} is not a row")
            yield row
