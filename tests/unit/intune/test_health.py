"""Readiness' view of the Entra ID app: last-known results, refreshed in the background on a schedule."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from scep_server.errors import IntuneError
from scep_server.intune.check import CheckResult
from scep_server.intune.health import (
    AUTH_RECHECK_FAILING_SECONDS,
    AUTH_RECHECK_SECONDS,
    AppHealth,
    LastKnown,
)
from scep_server.intune.transport import IntuneTransport
from tests.support.clocks import FakeClock

from .conftest import config_for
from .double import INTUNE_RESOURCE, CloudDouble, Scripted

INTUNE_SCOPE = f"{INTUNE_RESOURCE}.default"


def inline(work: Callable[[], None]) -> None:
    work()


class Deferred:
    """A starter that keeps the refreshes until the test runs them (a background thread, held still)."""

    def __init__(self) -> None:
        self.pending: list[Callable[[], None]] = []

    def __call__(self, work: Callable[[], None]) -> None:
        self.pending.append(work)

    def run(self) -> None:
        work, self.pending = self.pending, []
        for each in work:
            each()


# --- LastKnown ---------------------------------------------------------------------------------------------


def test_a_result_is_kept_for_its_ttl_then_fetched_again() -> None:
    clock, calls = FakeClock(100.0), []
    known = LastKnown(lambda: calls.append(clock()) or len(calls), ttl=lambda value: 30.0, clock=clock, start=inline)
    assert known.get() is not None and known.get().value == 1  # type: ignore[union-attr]
    clock.advance(29.9)
    assert known.get().value == 1 and calls == [100.0]  # type: ignore[union-attr]
    clock.advance(0.1)
    assert known.get().value == 2 and calls == [100.0, 130.0]  # type: ignore[union-attr]


def test_the_ttl_follows_the_result() -> None:
    clock, answers = FakeClock(0.0), iter([False, False, True])
    known = LastKnown(lambda: next(answers), ttl=lambda ok: 30.0 if ok else 5.0, clock=clock, start=inline)
    assert known.get().value is False  # type: ignore[union-attr]
    clock.advance(5)
    assert known.get().value is False  # type: ignore[union-attr]
    clock.advance(5)
    assert known.get().value is True  # type: ignore[union-attr]


def test_probes_read_the_old_result_while_one_refresh_runs() -> None:
    clock, starter, counter = FakeClock(0.0), Deferred(), iter(range(1, 10))
    known = LastKnown(lambda: next(counter), ttl=lambda value: 30.0, clock=clock, start=starter, first_wait=0)
    assert known.get() is None and len(starter.pending) == 1
    assert known.get() is None and len(starter.pending) == 1  # one refresh at a time
    starter.run()
    clock.advance(31)
    assert [known.get().value for _ in range(3)] == [1, 1, 1]  # type: ignore[union-attr]
    assert len(starter.pending) == 1
    starter.run()
    assert known.get().value == 2 and known.get().fetched_at == 31  # type: ignore[union-attr]


def test_the_first_probe_waits_briefly_for_the_first_result() -> None:
    release = threading.Event()

    def slow() -> str:
        release.wait(5)
        return "done"

    known = LastKnown(slow, ttl=lambda value: 30.0, first_wait=0.05)
    assert known.get() is None  # it did not wait for ever
    release.set()
    waited = LastKnown(lambda: "quick", ttl=lambda value: 30.0, first_wait=5)
    assert waited.get().value == "quick"  # type: ignore[union-attr]


# --- AppHealth against the double (real MSAL, real TLS) -------------------------------------------------


@pytest.fixture
def health(cloud: CloudDouble) -> Iterator[tuple[AppHealth, FakeClock[float]]]:
    clock = FakeClock(1000.0)
    app = AppHealth(config_for(cloud), transport=IntuneTransport(config_for(cloud)), clock=clock, start=inline)
    yield app, clock
    app.close()


def test_auth_asks_entra_id_at_most_once_per_ttl(health: tuple[AppHealth, FakeClock[float]],
                                                 cloud: CloudDouble) -> None:
    app, clock = health
    assert app.auth().ok and app.auth().ok
    assert cloud.token_requests[INTUNE_SCOPE] == 1
    clock.advance(AUTH_RECHECK_SECONDS)
    result = app.auth()
    assert result.ok and result.detail.endswith("(0 s ago)")
    assert cloud.token_requests[INTUNE_SCOPE] == 2


def test_auth_turns_false_while_entra_id_refuses_and_true_when_it_recovers(
    health: tuple[AppHealth, FakeClock[float]], cloud: CloudDouble
) -> None:
    app, clock = health
    assert app.auth().ok
    refusal = Scripted(401, {"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret"})
    cloud.token_script.extend([refusal, refusal])
    clock.advance(AUTH_RECHECK_SECONDS)
    refused = app.auth()
    assert not refused.ok and "invalid_client" in refused.detail
    clock.advance(AUTH_RECHECK_FAILING_SECONDS)
    assert not app.auth().ok  # the second refusal, asked again after the shorter interval
    clock.advance(AUTH_RECHECK_FAILING_SECONDS)
    assert app.auth().ok


def test_auth_reports_a_missing_role(health: tuple[AppHealth, FakeClock[float]], cloud: CloudDouble) -> None:
    cloud.intune_roles = ["Something.Else"]
    result = health[0].auth()
    assert not result.ok and "lacks the scep_challenge_provider role (roles: Something.Else)" in result.detail


def test_auth_fails_when_no_check_completes_for_long(cloud: CloudDouble) -> None:
    clock, starter = FakeClock(0.0), Deferred()
    app = AppHealth(config_for(cloud), clock=clock, start=starter, first_wait=0)
    try:
        assert app.auth() == CheckResult("intune_auth", False,
                                         "the first token request to Entra ID has not completed yet")
        starter.run()
        assert app.auth().ok
        clock.advance(AUTH_RECHECK_SECONDS * 5)  # the refresh started now never finishes
        stale = app.auth()
        assert not stale.ok and "no token request to Entra ID has completed for 150 s" in stale.detail
    finally:
        app.close()


def test_secret_expiry_unknown_says_why(health: tuple[AppHealth, FakeClock[float]]) -> None:
    with pytest.raises(IntuneError, match="application lookup"):
        health[0].secret_not_after()  # the double has no Graph app lookup: HTTP 405


def test_a_fetch_that_raises_does_not_leave_every_probe_waiting() -> None:
    def broken() -> str:
        raise RuntimeError("unexpected")

    known = LastKnown(broken, ttl=lambda value: 30.0, first_wait=5)
    started = time.monotonic()
    assert known.get() is None and known.get() is None
    assert time.monotonic() - started < 2.5, "the first failure released the waiters"
