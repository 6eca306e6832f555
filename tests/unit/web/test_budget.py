"""The per-client-IP failure budget (scep_server/web/budget.py): HTTP 429 after too many failed envelopes."""

from __future__ import annotations

import threading

from scep_server.web.budget import FailureBudget
from tests.support.clocks import FakeClock


def test_budget_refuses_after_max_failures_within_the_window() -> None:
    clock = FakeClock(500.0)
    budget = FailureBudget(3, 60, 100, clock=clock)
    for _ in range(2):
        budget.record_failure("192.0.2.1")
        clock.now += 5
    assert budget.retry_after("192.0.2.1") is None
    budget.record_failure("192.0.2.1")
    assert budget.retry_after("192.0.2.1") == 50  # the first failure leaves the window at 560
    assert budget.retry_after("192.0.2.2") is None


def test_budget_window_slides() -> None:
    clock = FakeClock(500.0)
    budget = FailureBudget(2, 10, 100, clock=clock)
    budget.record_failure("a")
    clock.now += 9
    budget.record_failure("a")
    assert budget.retry_after("a") == 1
    clock.now += 1  # the first failure has left the window
    assert budget.retry_after("a") is None
    budget.record_failure("a")
    assert budget.retry_after("a") == 9


def test_budget_retry_after_is_at_least_one_second() -> None:
    clock = FakeClock(500.0)
    budget = FailureBudget(1, 10, 100, clock=clock)
    budget.record_failure("a")
    clock.now += 9.9
    assert budget.retry_after("a") == 1


def test_budget_is_bounded_in_memory() -> None:
    budget = FailureBudget(1, 60, 3, clock=FakeClock(500.0))
    for index in range(10):
        budget.record_failure(f"10.0.0.{index}")
    assert budget.tracked() == 3
    assert budget.retry_after("10.0.0.9") is not None
    assert budget.retry_after("10.0.0.0") is None  # forgotten: failed longest ago


def test_budget_zero_is_off() -> None:
    budget = FailureBudget(0, 60, 100)
    for _ in range(50):
        budget.record_failure("a")
    assert budget.retry_after("a") is None and budget.tracked() == 0


def test_budget_without_a_peer_address_shares_one_entry() -> None:
    budget = FailureBudget(1, 60, 100, clock=FakeClock(500.0))
    budget.record_failure(None)
    assert budget.retry_after(None) is not None and budget.retry_after("") is not None


def test_budget_is_thread_safe() -> None:
    budget = FailureBudget(10_000, 60, 50, clock=FakeClock(500.0))

    def fail() -> None:
        for index in range(500):
            budget.record_failure(f"ip-{index % 80}")

    threads = [threading.Thread(target=fail) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert budget.tracked() == 50
