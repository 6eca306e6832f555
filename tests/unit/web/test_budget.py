"""The per-client-IP failure budget (HTTP 429 after too many failed envelopes) and its configuration."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from scep_server.config import FailureBudgetConfig, ProfileConfig, load_config
from scep_server.errors import ConfigError
from scep_server.web.budget import FailureBudget

EXAMPLE = Path(__file__).parents[2] / "config" / "example.yaml"


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def test_budget_refuses_after_max_failures_within_the_window() -> None:
    clock = Clock()
    budget = FailureBudget(3, 60, 100, clock=clock)
    for _ in range(2):
        budget.record_failure("192.0.2.1")
        clock.now += 5
    assert budget.retry_after("192.0.2.1") is None
    budget.record_failure("192.0.2.1")
    assert budget.retry_after("192.0.2.1") == 50  # the first failure leaves the window at 560
    assert budget.retry_after("192.0.2.2") is None


def test_budget_window_slides() -> None:
    clock = Clock()
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
    clock = Clock()
    budget = FailureBudget(1, 10, 100, clock=clock)
    budget.record_failure("a")
    clock.now += 9.9
    assert budget.retry_after("a") == 1


def test_budget_is_bounded_in_memory() -> None:
    budget = FailureBudget(1, 60, 3, clock=Clock())
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
    budget = FailureBudget(1, 60, 100, clock=Clock())
    budget.record_failure(None)
    assert budget.retry_after(None) is not None and budget.retry_after("") is not None


def test_budget_is_thread_safe() -> None:
    budget = FailureBudget(10_000, 60, 50, clock=Clock())

    def fail() -> None:
        for index in range(500):
            budget.record_failure(f"ip-{index % 80}")

    threads = [threading.Thread(target=fail) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert budget.tracked() == 50


def test_config_defaults_and_example_agree() -> None:
    config = load_config(EXAMPLE, env={})
    assert config.failure_budget == FailureBudgetConfig() == FailureBudgetConfig(20, 60, 10000)
    assert config.profiles[0].allow_3des is ProfileConfig().allow_3des is True


def _load(tmp_path: Path, body: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "c.yaml"
    path.write_text(body)
    return load_config(path, env={})


def test_config_reads_the_budget_and_allow_3des(tmp_path: Path) -> None:
    config = _load(tmp_path, "failure_budget: {max_failures: 5, window_seconds: 30}\n"
                             "profiles: {p: {allow_3des: false}}\n")
    assert config.failure_budget == FailureBudgetConfig(5, 30, 10000)
    assert config.profiles[0].allow_3des is False


@pytest.mark.parametrize("body", [
    "failure_budget: {max_failures: -1}",
    "failure_budget: {window_seconds: 0}",
    "failure_budget: {max_tracked_ips: 0}",
    "failure_budget: {max_failures: yes}",
    "failure_budget: {per_ip: 3}",
])
def test_config_refuses_bad_budgets(tmp_path: Path, body: str) -> None:
    with pytest.raises(ConfigError, match="failure_budget"):
        _load(tmp_path, body + "\n")


def test_budget_env_override_is_ignored() -> None:
    config = load_config(None, env={"SCEP_SERVER_FAILURE_BUDGET": "3"})
    assert config.failure_budget == FailureBudgetConfig()
