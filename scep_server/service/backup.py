"""Backup and restore: one archive holding a consistent copy of the database and the CA directory.

The archive is a gzipped tar with ``manifest.json`` (format, schema revision, rows per table, the
SHA-256 of every other member), ``database/<table>.jsonl`` (one row per line, see
:mod:`scep_server.store.backup`) and ``ca/<file>`` (the CA directory's files as they are on disk: keys
stay encrypted with the CA passphrase, which is not in the archive). It is written 0600 under a
temporary name and renamed into place.

A backup may run beside a serving server: the database is read in one snapshot, and the CA directory
changes only on RA rotation (copy it again after one). A restore goes only into an empty database and
a data directory without a CA; the CA is checked with the configured passphrase before anything is
written, and the rows are loaded in one transaction. Certificates, CRL numbers and every other row
come back as they were, so CRL numbers continue and no serial is issued twice (serials are drawn at
random and unique in the store).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Engine

from scep_server import __version__
from scep_server.ca.authority import ca_exists, check_keys_at_rest, load_ca
from scep_server.config import ServerConfig
from scep_server.errors import CAError, InvalidInput, StoreError
from scep_server.files import CERT_FILE_MODE, make_private_dir, write_atomic
from scep_server.store.backup import BackupRepository, DumpSummary, Row

log = logging.getLogger(__name__)

FORMAT = "scep-server-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DATABASE_MEMBER = "database/{table}.jsonl"
CA_MEMBER = "ca/{name}"
ARCHIVE_MODE = 0o600
MAX_MANIFEST_BYTES = 1 << 20
_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class BackupResult:
    """What a backup holds."""

    path: Path
    revision: str
    rows: dict[str, int]
    ca_files: tuple[str, ...]
    keys_encrypted: bool


@dataclass(frozen=True, slots=True)
class RestoreResult:
    """What a restore put back."""

    revision: str
    rows: dict[str, int]
    ca_files: tuple[str, ...]
    ca_subject: str


def create_backup(config: ServerConfig, engine: Engine, passphrase: bytes | None, out: Path) -> BackupResult:
    """Write the archive of this server's database and CA directory to ``out``."""
    load_ca(config.ca_dir, config.ca, passphrase)  # the CA is whole, and its keys encrypted if a passphrase is set
    check_keys_at_rest(config, passphrase, "backup")
    with tempfile.TemporaryDirectory(prefix=".scep-backup-", dir=out.parent) as scratch:
        work = Path(scratch)
        summary = _dump_database(BackupRepository(engine), work)
        ca_files = _copy_ca_files(config.ca_dir, work)
        members = [DATABASE_MEMBER.format(table=table) for table in summary.rows] + [
            CA_MEMBER.format(name=name) for name in ca_files
        ]
        manifest = _manifest(summary, members, work, keys_encrypted=passphrase is not None)
        _write_archive(out, work, manifest, members)
    return BackupResult(out, summary.revision, summary.rows, ca_files, keys_encrypted=passphrase is not None)


def restore_backup(config: ServerConfig, engine: Engine, passphrase: bytes | None, archive: Path) -> RestoreResult:
    """Put the archive's CA directory and database back into this (empty) server's data dir and database."""
    if ca_exists(config.ca_dir, config.ca.keys):
        raise InvalidInput(f"{config.ca_dir} already holds a CA: restore goes into a data directory without one")
    repository = BackupRepository(engine)
    if not repository.is_empty():
        raise InvalidInput("the database already holds data: restore goes into an empty database")
    make_private_dir(Path(config.data_dir))
    with _opened(archive) as tar, tempfile.TemporaryDirectory(prefix=".scep-restore-", dir=config.data_dir) as scratch:
        manifest = _read_manifest(tar)
        work = Path(scratch)
        _extract_checked(tar, manifest, work)
        staged_ca = work / "ca"
        ca = load_ca(staged_ca, config.ca, passphrase)  # the configured passphrase opens the restored keys
        installed: list[str] = []
        try:
            rows = repository.load(
                manifest["schema_revision"],
                lambda table: _read_rows(work, table, manifest),
                before_commit=lambda: installed.extend(_install_ca_files(staged_ca, config.ca_dir)),
            )
        except BaseException:
            _remove_ca_files(config.ca_dir, installed)
            raise
    return RestoreResult(manifest["schema_revision"], rows, tuple(installed), ca.ca_cert.subject.rfc4514_string())


# ------------------------------------------------------------------------------------------------- backup


def _dump_database(repository: BackupRepository, work: Path) -> DumpSummary:
    (work / "database").mkdir(mode=0o700)
    handles: dict[str, IO[str]] = {}
    try:
        def sink(table: str, row: Row) -> None:
            handle = handles.get(table)
            if handle is None:
                handle = handles[table] = _private_text(work / DATABASE_MEMBER.format(table=table))
            handle.write(json.dumps(row, separators=(",", ":"), ensure_ascii=False) + "\n")

        summary = repository.dump(sink)
    finally:
        for handle in handles.values():
            handle.close()
    for table in summary.rows:  # an empty table still gets its (empty) file
        _private_text(work / DATABASE_MEMBER.format(table=table), mode="a").close()
    return summary


def _copy_ca_files(ca_dir: Path, work: Path) -> tuple[str, ...]:
    """The CA directory's regular files (not temporary ones), copied as they are."""
    target = work / "ca"
    target.mkdir(mode=0o700)
    names = []
    for path in sorted(ca_dir.iterdir()):
        if path.name.startswith(".") or not path.is_file() or path.is_symlink():
            continue
        shutil.copyfile(path, target / path.name)
        os.chmod(target / path.name, CERT_FILE_MODE)
        names.append(path.name)
    return tuple(names)


def _manifest(summary: DumpSummary, members: list[str], work: Path, *, keys_encrypted: bool) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created_at": datetime.now(UTC).isoformat(),
        "server_version": __version__,
        "schema_revision": summary.revision,
        "database_dialect": summary.dialect,
        "rows": summary.rows,
        "keys_encrypted": keys_encrypted,
        "sha256": {member: _sha256(work / member) for member in members},
    }


def _write_archive(out: Path, work: Path, manifest: dict[str, Any], members: list[str]) -> None:
    partial = out.with_name(f".{out.name}.partial")
    fd = os.open(partial, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, ARCHIVE_MODE)
    try:
        os.fchmod(fd, ARCHIVE_MODE)
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            _add_bytes(tar, MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode())
            for member in members:
                tar.add(work / member, arcname=member, recursive=False, filter=_plain_member)
            tar.close()
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(partial, out)
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise


def _plain_member(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = ARCHIVE_MODE
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = _plain_member(tarfile.TarInfo(name))
    info.size = len(data)
    info.mtime = int(datetime.now(UTC).timestamp())
    tar.addfile(info, io.BytesIO(data))


# ------------------------------------------------------------------------------------------------ restore


@contextlib.contextmanager
def _opened(archive: Path) -> Iterator[tarfile.TarFile]:
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            yield tar
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise InvalidInput(f"{archive} is not a readable backup archive: {exc}") from None


def _read_manifest(tar: tarfile.TarFile) -> dict[str, Any]:
    try:
        info = tar.getmember(MANIFEST)
    except KeyError:
        raise InvalidInput("the archive has no manifest.json: not a scep-server backup") from None
    if not info.isfile() or info.size > MAX_MANIFEST_BYTES:
        raise InvalidInput("the archive's manifest.json is not a plain file of sane size")
    handle = tar.extractfile(info)
    if handle is None:
        raise InvalidInput("the archive's manifest.json cannot be read")
    try:
        manifest = json.loads(handle.read())
    except ValueError:
        raise InvalidInput("the archive's manifest.json is not JSON") from None
    _check_manifest(manifest)
    return manifest  # type: ignore[no-any-return]


def _check_manifest(manifest: Any) -> None:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InvalidInput("the archive is not a scep-server backup")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise InvalidInput(f"backup format version {manifest.get('format_version')!r} is not {FORMAT_VERSION}")
    digests, rows, revision = manifest.get("sha256"), manifest.get("rows"), manifest.get("schema_revision")
    if not isinstance(digests, dict) or not isinstance(rows, dict) or not isinstance(revision, str):
        raise InvalidInput("the backup's manifest lacks its digests, row counts or schema revision")
    for member in digests:
        if not _allowed_member(str(member)):
            raise InvalidInput(f"the backup names a member outside its layout: {member!r}")


def _allowed_member(member: str) -> bool:
    directory, _, name = member.partition("/")
    plain = bool(name) and "/" not in name and name not in (".", "..") and not name.startswith(".")
    return plain and directory in ("ca", "database") and (directory != "database" or name.endswith(".jsonl"))


def _extract_checked(tar: tarfile.TarFile, manifest: dict[str, Any], work: Path) -> None:
    """Extract the manifest's members, and only those, as plain files whose SHA-256 matches."""
    for directory in ("ca", "database"):
        (work / directory).mkdir(mode=0o700)
    expected: dict[str, str] = manifest["sha256"]
    for member, digest in expected.items():
        try:
            info = tar.getmember(member)
        except KeyError:
            raise InvalidInput(f"the backup lacks {member}, which its manifest lists") from None
        source = tar.extractfile(info) if info.isfile() else None
        if source is None:
            raise InvalidInput(f"the backup's {member} is not a plain file")
        target = work / member
        with source, _private_binary(target) as sink:
            shutil.copyfileobj(source, sink, _CHUNK)
        if _sha256(target) != digest:
            raise InvalidInput(f"the backup's {member} does not match its manifest (damaged or altered)")


def _read_rows(work: Path, table: str, manifest: dict[str, Any]) -> Iterator[Row]:
    member = DATABASE_MEMBER.format(table=table)
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


def _install_ca_files(staged: Path, ca_dir: Path) -> tuple[str, ...]:
    make_private_dir(ca_dir)
    names = []
    for path in sorted(staged.iterdir()):
        write_atomic(ca_dir / path.name, path.read_bytes(), CERT_FILE_MODE)
        names.append(path.name)
    if not names:
        raise CAError("the backup holds no CA files")
    return tuple(names)


def _remove_ca_files(ca_dir: Path, names: list[str]) -> None:
    """Undo :func:`_install_ca_files` when the database load that went with it did not commit."""
    for name in names:
        with contextlib.suppress(OSError):
            (ca_dir / name).unlink()


# ------------------------------------------------------------------------------------------------ helpers


def _private_text(path: Path, mode: str = "w") -> IO[str]:
    flags = os.O_CREAT | os.O_WRONLY | (os.O_APPEND if mode == "a" else os.O_TRUNC)
    return os.fdopen(os.open(path, flags, 0o600), mode, encoding="utf-8")


def _private_binary(path: Path) -> IO[bytes]:
    return os.fdopen(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600), "wb")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()
