"""The backup archive: its layout, its manifest, and how it is written and read back (:mod:`.backup`).

A gzipped tar: ``manifest.json`` first, then ``database/<table>.jsonl`` and ``ca/<path>`` (the CA
directory's files, those of its subdirectories included). The manifest gives the SHA-256 and the size
of every other member. The archive is written 0600 to a fresh temporary file (``mkstemp``) beside its
final name and renamed into place. A restore extracts the members the manifest lists, and only those,
as private plain files, each checked against its size and its digest.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tarfile
import tempfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from scep_server.errors import CAError, InvalidInput
from scep_server.files import make_private_dir

FORMAT = "scep-server-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DATABASE_DIR, CA_DIR = "database", "ca"
ARCHIVE_MODE = 0o600
MAX_MANIFEST_BYTES = 1 << 20
MAX_CA_DEPTH = 8  # path parts below the CA directory (``generations/<label>/ca.pem`` is 3)
_MAX_BACKEND_NAME = 64
_CHUNK = 1 << 20


def database_member(table: str) -> str:
    return f"{DATABASE_DIR}/{table}.jsonl"


def ca_member(relative: str) -> str:
    return f"{CA_DIR}/{relative}"


def allowed_ca_path(parts: Sequence[str]) -> bool:
    """Whether a path below the CA directory (its parts) is one a backup carries and a restore accepts."""
    return 0 < len(parts) <= MAX_CA_DEPTH and all(_plain_part(part) for part in parts)


def allowed_member(member: str) -> bool:
    directory, _, rest = member.partition("/")
    if directory == DATABASE_DIR:
        return _plain_part(rest) and rest.endswith(".jsonl")
    return directory == CA_DIR and allowed_ca_path(rest.split("/"))


def _plain_part(part: str) -> bool:
    # No "..", no hidden or temporary names, nothing a terminal or the filesystem would act on.
    return bool(part) and not part.startswith(".") and "/" not in part and part.isprintable()


# ------------------------------------------------------------------------------------------------- write


def build_manifest(fields: Mapping[str, Any], work: Path, members: Sequence[str]) -> dict[str, Any]:
    """The manifest: the format, ``fields``, and the digest and size of each member (a file under ``work``)."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        **fields,
        "sha256": {member: _sha256(work / member) for member in members},
        "sizes": {member: (work / member).stat().st_size for member in members},
    }


def write_archive(out: Path, work: Path, manifest: Mapping[str, Any], members: Sequence[str]) -> None:
    """Write the archive through a new private temporary file in ``out``'s directory, renamed over ``out``."""
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
    partial = Path(name)
    try:
        os.fchmod(fd, ARCHIVE_MODE)
        with os.fdopen(fd, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w:gz") as tar:
                _add_bytes(tar, MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode())
                for member in members:
                    tar.add(work / member, arcname=member, recursive=False, filter=_plain_member)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(partial, out)
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise


def copy_private(source: Path, target: Path) -> None:
    """Copy ``source`` to the new file ``target`` (mode 0600 from its creation), making its directories."""
    make_private_dir(target.parent)
    with source.open("rb") as reader, private_binary(target) as writer:
        _copy_hashing(reader, writer)


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


# -------------------------------------------------------------------------------------------------- read


_UNREADABLE = (OSError, tarfile.TarError, EOFError, zlib.error)


@contextlib.contextmanager
def opened(archive: Path) -> Iterator[tarfile.TarFile]:
    """The archive, open for reading; InvalidInput when it is no gzipped tar (errors of the block pass)."""
    try:
        tar = tarfile.open(archive, mode="r:gz")
    except _UNREADABLE as exc:
        raise InvalidInput(f"{archive} is not a readable backup archive: {exc}") from None
    with tar:
        yield tar


def read_manifest(tar: tarfile.TarFile) -> dict[str, Any]:
    info = _member(tar, MANIFEST)
    if info is None:
        raise InvalidInput("the archive has no manifest.json: not a scep-server backup")
    if not info.isfile() or info.size > MAX_MANIFEST_BYTES:
        raise InvalidInput("the archive's manifest.json is not a plain file of sane size")
    try:
        handle = tar.extractfile(info)
        data = handle.read() if handle is not None else None
    except _UNREADABLE as exc:
        raise InvalidInput(f"the archive's manifest.json cannot be read: {exc}") from None
    try:
        manifest = json.loads(data or b"")
    except ValueError:
        raise InvalidInput("the archive's manifest.json is not JSON") from None
    _check_manifest(manifest)
    return manifest  # type: ignore[no-any-return]


def _check_manifest(manifest: Any) -> None:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InvalidInput("the archive is not a scep-server backup")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise InvalidInput(f"backup format version {manifest.get('format_version')!r} is not {FORMAT_VERSION}")
    digests, sizes = manifest.get("sha256"), manifest.get("sizes")
    rows, revision = manifest.get("rows"), manifest.get("schema_revision")
    if not isinstance(digests, dict) or not isinstance(rows, dict) or not isinstance(revision, str):
        raise InvalidInput("the backup's manifest lacks its digests, row counts or schema revision")
    for member in digests:
        if not allowed_member(str(member)):
            raise InvalidInput(f"the backup names a member outside its layout: {member!r}")
    if not isinstance(sizes, dict) or set(sizes) != set(digests) or not all(map(_is_size, sizes.values())):
        raise InvalidInput("the backup's manifest lacks the size of each member it lists")
    backend = manifest.get("key_backend", "file")
    if not isinstance(backend, str) or not 0 < len(backend) <= _MAX_BACKEND_NAME or not backend.isprintable():
        raise InvalidInput("the backup's manifest names no key backend it could have been made with")


def _is_size(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def extract_checked(tar: tarfile.TarFile, manifest: Mapping[str, Any], work: Path) -> None:
    """Extract the manifest's members, and only those, as private plain files of the size and SHA-256
    it lists for them."""
    for directory in (CA_DIR, DATABASE_DIR):
        make_private_dir(work / directory)
    for member, digest in manifest["sha256"].items():
        size: int = manifest["sizes"][member]
        info = _member(tar, member)
        if info is None:
            raise InvalidInput(f"the backup lacks {member}, which its manifest lists")
        if info.size != size:
            raise InvalidInput(f"the backup's {member} holds {info.size} bytes where its manifest says {size} "
                               "(damaged or altered)")
        _extract_one(tar, info, work / member, digest)


def _member(tar: tarfile.TarFile, name: str) -> tarfile.TarInfo | None:
    """The member ``name``, None when there is none; InvalidInput when the archive breaks off before."""
    try:
        return tar.getmember(name)
    except KeyError:
        return None
    except _UNREADABLE as exc:
        raise InvalidInput(f"the archive cannot be read (damaged?): {exc}") from None


def _extract_one(tar: tarfile.TarFile, info: tarfile.TarInfo, target: Path, digest: str) -> None:
    if not info.isfile():
        raise InvalidInput(f"the backup's {info.name} is not a plain file")
    try:
        source = tar.extractfile(info)
        assert source is not None  # a plain file's member always has its bytes
        make_private_dir(target.parent)
        with source, private_binary(target) as sink:
            written, found = _copy_hashing(source, sink)
    except (*_UNREADABLE, CAError) as exc:
        raise InvalidInput(f"cannot extract the backup's {info.name}: {exc}") from None
    if written != info.size:
        raise InvalidInput(f"the backup's {info.name} is cut short (damaged)")
    if found != digest:
        raise InvalidInput(f"the backup's {info.name} does not match its manifest (damaged or altered)")


# ------------------------------------------------------------------------------------------------ helpers


def private_binary(path: Path) -> IO[bytes]:
    """A new file (never an existing one, never through a link), mode 0600 before a byte is written."""
    return os.fdopen(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600), "wb")


def _copy_hashing(source: IO[bytes], sink: IO[bytes]) -> tuple[int, str]:
    """Copy ``source`` to ``sink``; the bytes copied and their SHA-256."""
    digest, size = hashlib.sha256(), 0
    for chunk in iter(lambda: source.read(_CHUNK), b""):
        digest.update(chunk)
        sink.write(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()
