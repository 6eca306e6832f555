"""The CA a running process serves with, following the RA keyring on disk without a restart.

``ca rotate-ra`` (or the renewal job, in whichever replica runs it) replaces ``ra-keyring.json`` in one
rename. Every process looks at the index's identity (inode, size, mtime) at most once a second, from the
request that needs the CA, and reloads the keyring when it changed: the new RA is the one GetCACert hands
out within a second in every worker, and the replaced one keeps decrypting (its grace period is in the
index). A keyring that does not load (a half-copied backup, a token that is away) is logged and the
process keeps the one it has; it tries again on the next look.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from scep_server.ca.authority import CertificateAuthority
from scep_server.ca.keys import KeyBackend
from scep_server.ca.ra_keyring import RaKeyring, index_path, load_ra_keyring
from scep_server.errors import CAError
from scep_server.pki.chain import is_issued_by

log = logging.getLogger(__name__)

CHECK_EVERY_SECONDS = 1.0
_Stamp = tuple[int, int, int] | None  # (inode, size, mtime in ns) of the index; None: no index


class LiveAuthority:
    """The current :class:`CertificateAuthority` of one CA directory, its RA keyring kept fresh."""

    def __init__(
        self,
        ca: CertificateAuthority,
        ca_dir: Path | None,
        keys: Callable[[], KeyBackend] | None = None,
        *,
        check_every: float = CHECK_EVERY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``ca_dir`` None (with ``keys`` None): a CA that never changes, as tests and tools hold one."""
        self._ca = ca
        self._ca_dir = ca_dir
        self._keys = keys
        self._check_every = check_every
        self._clock = clock
        self._lock = threading.Lock()
        self._checked_at = clock()
        self._stamp = _index_stamp(ca_dir) if ca_dir is not None else None
        self._failed_stamp: _Stamp = None

    @classmethod
    def fixed(cls, ca: CertificateAuthority) -> LiveAuthority:
        return cls(ca, None)

    def current(self) -> CertificateAuthority:
        """The CA with the keyring on disk as of at most ``check_every`` seconds ago."""
        if self._ca_dir is None or self._clock() - self._checked_at < self._check_every:
            return self._ca
        with self._lock:
            if self._clock() - self._checked_at >= self._check_every:
                self._look()
            return self._ca

    def refresh(self) -> CertificateAuthority:
        """Look at the keyring on disk now, whenever the last look was."""
        with self._lock:
            self._look()
            return self._ca

    def replace(self, ca: CertificateAuthority) -> None:
        """Serve ``ca`` from now on (one this process built and stored, a rotated RA say)."""
        with self._lock:
            self._ca = ca
            self._stamp = _index_stamp(self._ca_dir) if self._ca_dir is not None else None

    def _look(self) -> None:
        self._checked_at = self._clock()
        if self._ca_dir is None or self._keys is None:
            return
        stamp = _index_stamp(self._ca_dir)
        if stamp == self._stamp:
            return
        try:
            keyring = self._load(self._ca_dir, self._keys())
        except CAError as exc:
            if stamp != self._failed_stamp:  # one error per change on disk, not one a second
                log.error("the RA keyring in %s did not load; still serving RA %x: %s",
                          self._ca_dir, self._ca.ra_cert.serial_number, exc)
            self._failed_stamp = stamp
            return
        if keyring.current.cert != self._ca.ra_cert:
            log.info("RA keyring reloaded: GetCACert now hands out RA %x (valid until %s); %d previous RA(s) "
                     "still decrypt", keyring.current.serial, keyring.current.cert.not_valid_after_utc,
                     len(keyring.previous))
        self._ca = replace(self._ca, ra_keyring=keyring)
        self._stamp, self._failed_stamp = stamp, None

    def _load(self, ca_dir: Path, keys: KeyBackend) -> RaKeyring:
        keyring = load_ra_keyring(ca_dir, keys)
        if not is_issued_by(keyring.current.cert, self._ca.ca_cert):
            raise CAError(f"the RA {keyring.current.files.cert} was not issued by the CA")
        return keyring


def as_live(ca: CertificateAuthority | LiveAuthority) -> LiveAuthority:
    """``ca`` as a LiveAuthority (a plain CA: one that never changes)."""
    return ca if isinstance(ca, LiveAuthority) else LiveAuthority.fixed(ca)


def _index_stamp(ca_dir: Path) -> _Stamp:
    try:
        status = os.stat(index_path(ca_dir))
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("cannot look at %s: %s", index_path(ca_dir), exc.strerror)
        return None
    return status.st_ino, status.st_size, status.st_mtime_ns
