"""The CA generations a running process serves with, following the files on disk without a restart.

``ca rotate-ra`` (or the renewal job, in whichever replica runs it) replaces a generation's
``ra-keyring.json``, and ``ca rollover stage|activate`` replaces ``ca-generations.json``, each in one
rename. Every process looks at those files' identities (inode, size, mtime) at most once a second, from
the request that needs the CA, and loads the generations again when one changed: a new RA is the one
GetCACert hands out within a second in every worker, while the replaced one keeps decrypting (its grace
period is in the keyring); a staged CA is what GetNextCACert hands out, and an activated one issues. A
set of files that does not load (a half-copied backup, a token that is away) is logged and the process
keeps what it has; it tries again on the next change.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from scep_server.ca.authority import CertificateAuthority
from scep_server.ca.generations import Generation, Generations
from scep_server.errors import CAError

log = logging.getLogger(__name__)

CHECK_EVERY_SECONDS = 1.0
_Stamp = tuple[tuple[int, int, int] | None, ...]  # (inode, size, mtime in ns) of each watched file


class LiveAuthority:
    """The current :class:`Generations` of one CA directory; :meth:`current` is the issuing CA."""

    def __init__(
        self,
        generations: Generations,
        load: Callable[[], Generations] | None = None,
        watched: Callable[[], Iterable[Path]] = tuple,
        *,
        check_every: float = CHECK_EVERY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        stamp: _Stamp | None = None,
    ) -> None:
        """``load`` None: generations that never change, as tests and tools hold them. ``stamp``: the
        watched files' identities taken *before* ``generations`` were loaded (:func:`follow`), so that
        a change made while they loaded is seen at the first look."""
        self._generations = generations
        self._load = load
        self._watched = watched
        self._check_every = check_every
        self._clock = clock
        self._now = now
        self._lock = threading.Lock()
        self._checked_at = clock()
        self._stamp = stamp if stamp is not None else self._stamp_now()
        self._failed_stamp: _Stamp | None = None

    @classmethod
    def fixed(cls, ca: CertificateAuthority, directory: Path | None = None) -> LiveAuthority:
        return cls(Generations.single(ca, directory or Path(".")))

    def generations(self) -> Generations:
        """The generations as of at most ``check_every`` seconds ago (and a scheduled activation)."""
        if self._load is not None and self._clock() - self._checked_at >= self._check_every:
            with self._lock:
                if self._clock() - self._checked_at >= self._check_every:
                    self._look()
        return self._generations.at(self._now())

    def current(self) -> CertificateAuthority:
        """The CA that issues: the active generation's, with its current RA keyring."""
        return self.generations().active.ca

    def refresh(self) -> Generations:
        """Look at the files on disk now, whenever the last look was."""
        with self._lock:
            self._look()
        return self._generations.at(self._now())

    def replace_active(self, ca: CertificateAuthority) -> None:
        """Serve ``ca`` as the active generation's CA (this process rotated its RA and stored it)."""
        with self._lock:
            generations = self._generations.at(self._now())
            self._generations = replace(generations, active=Generation(ca, generations.active.directory))
            self._stamp = ()  # what else changed on disk meanwhile is loaded at the next look

    def _look(self) -> None:
        self._checked_at = self._clock()
        if self._load is None:
            return
        stamp = self._stamp_now()
        if stamp in (self._stamp, self._failed_stamp):  # unchanged, or the change that did not load
            return
        try:
            loaded = self._load()
        except CAError as exc:
            if stamp != self._failed_stamp:  # one error per change on disk, not one a second
                log.error("the CA files changed on disk but did not load; still serving what was loaded: %s", exc)
            self._failed_stamp = stamp
            return
        _log_changes(self._generations.at(self._now()), loaded.at(self._now()))
        self._generations = loaded
        self._stamp, self._failed_stamp = stamp, None

    def _stamp_now(self) -> _Stamp:
        return tuple(_file_stamp(path) for path in self._watched())


def follow(load: Callable[[], Generations], watched: Callable[[], Iterable[Path]]) -> LiveAuthority:
    """The generations ``load`` gives, followed from then on: the watched files are stamped first."""
    stamp = tuple(_file_stamp(path) for path in watched())
    return LiveAuthority(load(), load, watched, stamp=stamp)


def as_live(ca: CertificateAuthority | LiveAuthority) -> LiveAuthority:
    """``ca`` as a LiveAuthority (a plain CA: one that never changes)."""
    return ca if isinstance(ca, LiveAuthority) else LiveAuthority.fixed(ca)


def _log_changes(before: Generations, after: Generations) -> None:
    if after.active.label != before.active.label:
        log.warning("CA generation %s issues from now on (was %s)", after.active.label, before.active.label)
    if after.next is not None and (before.next is None or before.next.label != after.next.label):
        log.warning("CA generation %s is staged: GetNextCACert hands it out", after.next.label)
    old_ra, new_ra = before.active.ca.ra_keyring.current, after.active.ca.ra_keyring.current
    if old_ra.cert != new_ra.cert:
        log.info("RA keyring reloaded: GetCACert now hands out RA %x (valid until %s); %d previous RA(s) "
                 "still decrypt", new_ra.serial, new_ra.cert.not_valid_after_utc,
                 len(after.active.ca.ra_keyring.previous))


def _file_stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("cannot look at %s: %s", path, exc.strerror)
        return None
    return status.st_ino, status.st_size, status.st_mtime_ns
