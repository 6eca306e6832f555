"""The Entra ID app as readiness sees it: last-known answers of slow calls, refreshed in the background.

A readiness probe must answer at once and must not ask Entra ID on every call, yet it must notice within
seconds when Entra ID starts (or stops) refusing the app. :class:`LastKnown` keeps the last result of a
call and, once that is older than its time to live, has one background thread fetch a new one while
probes go on reading the old. :class:`AppHealth` holds two: a fresh Intune token with its role (re-asked
every 30 s while it works, every 5 s while it does not, so a recovery shows quickly) and the client
secret's expiry from Graph (hourly). It has a transport of its own: dropping its cached tokens to ask
Entra ID anew never costs the enrollments' tokens.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from scep_server.config.model import IntuneConfig
from scep_server.errors import IntuneError, ScepServerError
from scep_server.intune.check import CheckResult, check_app_token
from scep_server.intune.credentials import secret_not_after
from scep_server.intune.transport import IntuneTransport

__all__ = ["AppHealth", "Known", "LastKnown", "SecretExpiry"]

log = logging.getLogger("scep_server.intune")

T = TypeVar("T")
Starter = Callable[[Callable[[], None]], None]
AUTH_RECHECK_SECONDS = 30.0
AUTH_RECHECK_FAILING_SECONDS = 5.0
SECRET_RECHECK_SECONDS = 3600.0
SECRET_RECHECK_FAILING_SECONDS = 600.0
FIRST_RESULT_WAIT_SECONDS = 3.0


def in_thread(work: Callable[[], None]) -> None:
    threading.Thread(target=work, name="readiness-refresh", daemon=True).start()


@dataclass(frozen=True, slots=True)
class Known(Generic[T]):
    """A result and when (monotonic seconds) it was fetched."""

    value: T
    fetched_at: float


class LastKnown(Generic[T]):
    """The last result of ``fetch`` and a single background refresh once it is ``ttl(result)`` old.

    ``fetch`` must not raise (it returns its failure as a result). ``start`` runs a refresh: a new
    thread by default, inline in tests. The first :meth:`get` waits up to ``first_wait`` seconds for
    the first result, so a process is not reported unready merely for having just started.
    """

    def __init__(
        self, fetch: Callable[[], T], *, ttl: Callable[[T], float], clock: Callable[[], float] = time.monotonic,
        start: Starter = in_thread, first_wait: float = FIRST_RESULT_WAIT_SECONDS,
    ) -> None:
        self._fetch = fetch
        self._ttl = ttl
        self._clock = clock
        self._start = start
        self._first_wait = first_wait
        self._lock = threading.Lock()
        self._known: Known[T] | None = None
        self._refreshing = False
        self._first = threading.Event()

    def get(self) -> Known[T] | None:
        """The last result (None before the first one), starting a refresh when it is due."""
        if self._claim_refresh():
            self._start(self._refresh)
        if self._known is None:
            self._first.wait(self._first_wait)
        return self._known

    def _claim_refresh(self) -> bool:
        with self._lock:
            known = self._known
            due = known is None or self._clock() - known.fetched_at >= self._ttl(known.value)
            if not due or self._refreshing:
                return False
            self._refreshing = True
            return True

    def _refresh(self) -> None:
        try:
            value = self._fetch()
            with self._lock:
                self._known = Known(value, self._clock())
        except Exception:  # noqa: BLE001 - a refresh thread must not die silently and leave probes waiting
            log.exception("readiness: a background check failed unexpectedly")
        finally:
            self._first.set()  # answered or failed: later probes never wait for this first result again
            with self._lock:
                self._refreshing = False


@dataclass(frozen=True, slots=True)
class SecretExpiry:
    """The client secret's endDateTime from Graph, or why it could not be read."""

    not_after: datetime | None
    problem: str | None = None


class AppHealth:
    """The app's token check and client secret expiry for readiness and the expiry radar (see the module doc)."""

    def __init__(
        self, config: IntuneConfig, *, transport: IntuneTransport | None = None,
        clock: Callable[[], float] = time.monotonic, start: Starter = in_thread,
        first_wait: float = FIRST_RESULT_WAIT_SECONDS,
    ) -> None:
        self._transport = transport if transport is not None else IntuneTransport(config)
        self._auth = LastKnown(self._check_auth, ttl=_auth_ttl, clock=clock, start=start, first_wait=first_wait)
        self._secret = LastKnown(self._secret_expiry, ttl=_secret_ttl, clock=clock, start=start,
                                 first_wait=first_wait)
        self._clock = clock

    def auth(self) -> CheckResult:
        """Whether Entra ID issued the app an Intune token with the role, when last asked, and how long ago."""
        known = self._auth.get()
        if known is None:
            return CheckResult("intune_auth", False, "the first token request to Entra ID has not completed yet")
        age = self._clock() - known.fetched_at
        result = known.value
        if age > 4 * _auth_ttl(result) + FIRST_RESULT_WAIT_SECONDS:
            return CheckResult(result.name, False, f"no token request to Entra ID has completed for {age:.0f} s "
                                                   f"(the last: {result.detail})")
        return CheckResult(result.name, result.ok, f"{result.detail} ({age:.0f} s ago)")

    def secret_not_after(self) -> datetime:
        """The client secret's expiry as Graph last told it; IntuneError saying why when it is not known."""
        known = self._secret.get()
        expiry = known.value if known is not None else SecretExpiry(None, "Graph has not answered yet")
        if expiry.not_after is None:
            raise IntuneError(expiry.problem or "Graph did not say")
        return expiry.not_after

    def close(self) -> None:
        self._transport.close()

    def _check_auth(self) -> CheckResult:
        try:
            result = check_app_token(self._transport, fresh=True)
        except ScepServerError as exc:  # a secret file that cannot be read, say: a failed check, not a crash
            result = CheckResult("intune_auth", False, f"cannot ask Entra ID: {exc}")
        if not result.ok:
            log.warning("readiness: Intune auth check failed: %s", result.detail)
        return result

    def _secret_expiry(self) -> SecretExpiry:
        try:
            return SecretExpiry(secret_not_after(self._transport))
        except ScepServerError as exc:  # IntuneError, or a ConfigError from a secret file that cannot be read
            log.info("the client secret's expiry cannot be read from Graph: %s", exc)
            return SecretExpiry(None, str(exc))


def _auth_ttl(result: CheckResult) -> float:
    return AUTH_RECHECK_SECONDS if result.ok else AUTH_RECHECK_FAILING_SECONDS


def _secret_ttl(result: SecretExpiry) -> float:
    return SECRET_RECHECK_SECONDS if result.not_after is not None else SECRET_RECHECK_FAILING_SECONDS
