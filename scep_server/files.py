"""Private files of the CA directory: written whole or not at all, never readable by others.

Files are created with their final mode (0600) before any byte is written, so their content is never
visible with wider permissions, not even for an instant, and are written to a temporary name renamed
into place, so a crash leaves either the old or the new file, never half of one. Directories made here
are 0700.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from scep_server.errors import CAError

KEY_FILE_MODE = 0o600
CERT_FILE_MODE = 0o600
DIR_MODE = 0o700

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StagedFile:
    """A file written in full under a temporary name next to ``path``, not yet in place."""

    tmp: Path
    path: Path

    def commit(self) -> None:
        """Rename the file over ``path`` (atomic on POSIX) and make the rename durable."""
        try:
            os.replace(self.tmp, self.path)
        except OSError as exc:
            self.discard()
            raise CAError(f"cannot write {self.path}: {exc.strerror}") from exc
        _fsync_dir(self.path.parent)

    def discard(self) -> None:
        """Remove the temporary file: it will not be committed."""
        with contextlib.suppress(OSError):
            self.tmp.unlink()


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` through a private temporary file renamed into place."""
    stage(path, data, mode).commit()


def stage(path: Path, data: bytes, mode: int) -> StagedFile:
    """Write ``data`` to a new temporary file next to ``path``, created exclusively with exactly ``mode``."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode)
    except OSError as exc:
        raise CAError(f"cannot create {path}: {exc.strerror}") from exc
    staged = StagedFile(tmp, path)
    try:
        _write_fd(fd, data, mode)
    except OSError as exc:
        staged.discard()
        raise CAError(f"cannot write {path}: {exc.strerror}") from exc
    return staged


def read_file(path: Path, what: str) -> bytes:
    """The bytes of ``path``; CAError naming ``what`` the file should hold when it cannot be read."""
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
        _warn_if_open(path)


def _warn_if_open(path: Path) -> None:
    """Log a warning when the directory ``path`` is readable, writable or searchable by group or others."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return
    if mode & 0o077:
        log.warning("%s is accessible to other users (mode %o): run `chmod 700 %s`", path, mode, path)


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


def open_lock_file(path: Path) -> int:
    """A descriptor of the lock file ``path`` (created 0600), which must be a plain file of its own.

    Lock files live in the data directory, which the server's user owns, and root may open them too (a
    command run with sudo): a symbolic link or a hard link planted there must not make root open, and
    then hand over, some other file. OSError when it cannot be opened or is not such a file.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NOCTTY, 0o600)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        raise OSError(errno.EPERM, "not a plain file of its own (a link?)", str(path))
    return fd


def give_to_owner_of(reference: Path, fd: int) -> None:
    """When root holds ``fd`` (from :func:`open_lock_file`), make the file belong to ``reference``'s owner,
    so that the server's own user can still open it; nothing otherwise. OSError when that fails."""
    if os.geteuid() != 0:
        return
    owner = os.stat(reference)
    os.fchown(fd, owner.st_uid, owner.st_gid)
