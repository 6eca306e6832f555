"""The process's sessions on PKCS#11 tokens: one logged-in read/write session per token, behind a lock.

PKCS#11 logs in per application, not per session: a second ``C_Login`` fails and closing any session
that logged in logs every session out. So each process keeps one session per token (whatever number of
backends name it), opened on first use, and every call to a module goes through that module's lock:
gunicorn's threads sign one at a time per token, and the module, initialised without locking callbacks,
is never entered from two threads at once. A forked child cannot use its parent's sessions (PKCS#11
has a child process initialise the module anew), so after a fork every session is dropped and the
module is finalised and initialised again on first use. A session the token reports gone (device removed,
session closed) is dropped too, so the next call opens a fresh one.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import pkcs11
from pkcs11 import exceptions as p11_errors

if TYPE_CHECKING:
    from pkcs11._pkcs11 import lib as Library

from scep_server.errors import CAError

log = logging.getLogger(__name__)

_Result = TypeVar("_Result")
SETTINGS = "ca.keys.pkcs11"  # where the configuration keeps this backend's settings, for messages

# Errors after which the session is of no further use: the next call opens a new one.
_SESSION_GONE = (
    p11_errors.SessionHandleInvalid,
    p11_errors.SessionClosed,
    p11_errors.DeviceRemoved,
    p11_errors.TokenNotPresent,
    p11_errors.UserNotLoggedIn,
)


@dataclass(frozen=True, slots=True)
class TokenAddress:
    """A module and one of its tokens, by label or by slot ID (exactly one of them)."""

    module: str
    token_label: str | None = None
    slot: int | None = None

    def __post_init__(self) -> None:
        if (self.token_label is None) == (self.slot is None):
            raise ValueError("a token is named by its label or by its slot, and by only one of them")

    def describe(self) -> str:
        return f"token {self.token_label!r}" if self.token_label is not None else f"the token in slot {self.slot}"


@dataclass(slots=True)
class _Module:
    """A loaded module and the process that initialised it."""

    library: Library
    pid: int
    lock: threading.RLock = field(default_factory=threading.RLock)


_MODULES: dict[str, _Module] = {}
_SESSIONS: dict[tuple[TokenAddress, str], TokenSession] = {}
_REGISTRY_LOCK = threading.Lock()


class TokenSession:
    """The process's session on one token: :meth:`run` calls an operation with it, under the module's lock."""

    def __init__(self, address: TokenAddress, pin: str) -> None:
        self.address = address
        self._pin = pin
        self._session: pkcs11.Session | None = None

    def run(self, operation: Callable[[pkcs11.Session], _Result]) -> _Result:
        """``operation(session)``; a PKCS11Error from it propagates, and drops a session the token closed."""
        module = _module(self.address.module)
        with module.lock:
            session = self._session or self._open(module.library)
            try:
                return operation(session)
            except _SESSION_GONE:
                self._session = None
                raise

    def _open(self, library: Library) -> pkcs11.Session:
        token = _find_token(library, self.address)
        try:
            session = token.open(rw=True, user_pin=self._pin)
        except p11_errors.UserAlreadyLoggedIn:  # another session of this process on the same token logged in
            session = token.open(rw=True)
        except p11_errors.PinIncorrect:
            raise CAError(
                f"{self.address.describe()} refused the PIN ({SETTINGS}.pin): correct it before trying "
                "again, a token locks its PIN after a few failed logins"
            ) from None
        except p11_errors.PinLocked:
            raise CAError(f"the PIN of {self.address.describe()} is locked: unblock it with the SO PIN") from None
        except (p11_errors.PinExpired, p11_errors.PinInvalid, p11_errors.PinLenRange) as exc:
            raise CAError(f"{self.address.describe()} does not accept the PIN: {type(exc).__name__}") from None
        except p11_errors.PKCS11Error as exc:
            raise CAError(f"cannot log in to {self.address.describe()}: {type(exc).__name__}") from exc
        self._session = session
        return session

    def _forget(self) -> None:
        self._session = None

    def _close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            try:
                session.close()
            except p11_errors.PKCS11Error as exc:
                log.debug("closing the session on %s: %s", self.address.describe(), type(exc).__name__)


def token_session(address: TokenAddress, pin: str) -> TokenSession:
    """The process's session on ``address`` logged in with ``pin``, made on first use.

    A process names a token with one PIN; a second PIN for a token that is logged in already is not
    checked again (PKCS#11 answers any login then with CKR_USER_ALREADY_LOGGED_IN).
    """
    with _REGISTRY_LOCK:
        session = _SESSIONS.get((address, pin))
        if session is None:
            session = _SESSIONS[(address, pin)] = TokenSession(address, pin)
        return session


def close_sessions() -> None:
    """Close every session and finalise every module; the next use opens them again (shutdown, tests)."""
    with _REGISTRY_LOCK:
        for path, module in list(_MODULES.items()):
            with module.lock:
                for session in _SESSIONS.values():
                    if session.address.module == path:
                        session._close()
                _finalize(module)
        _MODULES.clear()


def _module(path: str) -> _Module:
    with _REGISTRY_LOCK:
        module = _MODULES.get(path)
        if module is None or module.pid != os.getpid():
            module = _MODULES[path] = _load(path, reinitialize=module is not None)
        return module


def _load(path: str, *, reinitialize: bool) -> _Module:
    if not Path(path).is_file():
        raise CAError(f"the PKCS#11 module {path} does not exist ({SETTINGS}.module)")
    try:
        library = pkcs11.lib(path)
        if reinitialize:
            library.reinitialize()
    except (RuntimeError, OSError) as exc:  # PKCS11Error is a RuntimeError
        raise CAError(f"cannot load the PKCS#11 module {path} ({SETTINGS}.module): {exc}") from exc
    return _Module(library, os.getpid())


def _finalize(module: _Module) -> None:
    try:
        module.library.finalize()
    except p11_errors.PKCS11Error as exc:
        log.debug("finalising %s: %s", module.library.so, type(exc).__name__)


def _find_token(library: Library, address: TokenAddress) -> pkcs11.Token:
    try:
        if address.slot is not None:
            slots = {slot.slot_id: slot for slot in library.get_slots(token_present=True)}
            if address.slot not in slots:
                raise CAError(f"{address.module} has no token in slot {address.slot} (slots: {_listed(slots)})")
            return slots[address.slot].get_token()
        return library.get_token(token_label=address.token_label)
    except p11_errors.NoSuchToken:
        labels = [token.label for token in library.get_tokens()]
        raise CAError(f"{address.module} has no token labelled {address.token_label!r} (tokens: {_listed(labels)})") \
            from None
    except p11_errors.MultipleTokensReturned:
        raise CAError(f"{address.module} has several tokens labelled {address.token_label!r}: name the slot") from None
    except p11_errors.PKCS11Error as exc:
        raise CAError(f"cannot reach {address.describe()} of {address.module}: {type(exc).__name__}") from exc


def _listed(names: Iterable[object]) -> str:
    return ", ".join(repr(name) for name in names) or "none"


def _after_fork_in_child() -> None:
    # The parent's locks may have been held at the fork, and its sessions are not the child's.
    global _REGISTRY_LOCK
    _REGISTRY_LOCK = threading.Lock()
    for module in _MODULES.values():
        module.lock = threading.RLock()
    for session in _SESSIONS.values():
        session._forget()


os.register_at_fork(after_in_child=_after_fork_in_child)
