"""The runner without a network: fault rows run alone between inject and clear, Intune's records are
read once per batch, and refusals are judged as intune-api.md §7 says."""

from __future__ import annotations

from typing import Any

import pytest

from scep_server.scep.types import FailInfo, PKIStatus
from scep_server.simulator import Fault, Settings, Simulator, find_rows
from scep_server.simulator.device import Enrollment
from scep_server.simulator.matrix import ROWS, Row
from scep_server.simulator.runner import DeviceResult, IntuneRecord, _intune_problems, _refusal_problems


class FakeAdmin:
    """Records what the simulator asks of the emulator; answers with canned records."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.active: list[Fault] = []
        self.notified: list[dict[str, Any]] = []
        self.validated: list[dict[str, Any]] = []

    def inject_fault(self, fault: Fault) -> None:
        self.active.append(fault)
        self.events.append(f"inject {fault.endpoint}")

    def clear_faults(self) -> None:
        self.active.clear()
        self.events.append("clear")

    def notifications(self) -> list[dict[str, Any]]:
        self.events.append("notifications")
        return self.notified

    def validations(self) -> list[dict[str, Any]]:
        self.events.append("validations")
        return self.validated


@pytest.fixture
def admin() -> FakeAdmin:
    return FakeAdmin()


@pytest.fixture
def simulator(admin: FakeAdmin, monkeypatch: pytest.MonkeyPatch) -> Simulator:
    simulator = Simulator(admin, Settings())  # type: ignore[arg-type]

    def run_device(row: Row, index: int = 1) -> DeviceResult:
        admin.events.append(f"device {row.slug} {index} faults={len(admin.active)}")
        record = IntuneRecord(f"T-{row.slug}-{index}", thumbprint="ab" * 20)
        return DeviceResult(row.name, index, "SUCCESS", intune=(record,))

    monkeypatch.setattr(simulator, "run_device", run_device)
    return simulator


def test_fault_rows_run_alone_with_their_faults(simulator: Simulator, admin: FakeAdmin) -> None:
    rows = (find_rows("san-upn")[0], find_rows("communication-failure")[0], find_rows("key-size-2048")[0])
    results = simulator.run(rows, devices=2, concurrency=1)
    assert [(r.row, r.device) for r in results] == [(row.name, i) for row in rows for i in (1, 2)]
    faulted = admin.events[admin.events.index("inject token"):]
    assert faulted[:6] == ["inject token", "inject validateRequest", "device communication-failure 1 faults=2",
                           "device communication-failure 2 faults=2", "clear", "notifications"]
    plain = [e for e in admin.events if e.startswith("device") and "communication" not in e]
    assert all(e.endswith("faults=0") for e in plain)


def test_intune_records_are_read_once_per_batch(simulator: Simulator, admin: FakeAdmin) -> None:
    plain = tuple(row for row in ROWS if not row.faults)
    results = simulator.run(plain, devices=3, concurrency=4)
    assert admin.events.count("notifications") == 1 and admin.events.count("validations") == 1
    assert all("no success notification" in r.detail for r in results)


def test_a_recorded_notification_satisfies_the_device(simulator: Simulator, admin: FakeAdmin) -> None:
    row = find_rows("san-email")[0]
    admin.notified = [{"type": "success", "transactionId": f"T-{row.slug}-1",
                       "notification": {"certificateThumbprint": "AB" * 20}}]
    assert [r.passed for r in simulator.run((row,), devices=2)] == [True, False]


def _enrollment(status: PKIStatus, fail_info: FailInfo | None = None, *, timed_out: bool = False) -> Enrollment:
    return Enrollment("T", status, None, fail_info, "text", polls=0, timed_out=timed_out)


def test_refusal_must_be_failure_bad_request() -> None:
    assert _refusal_problems(_enrollment(PKIStatus.FAILURE, FailInfo.BAD_REQUEST)) == []
    assert "expected failInfo badRequest" in _refusal_problems(_enrollment(PKIStatus.FAILURE, FailInfo.BAD_ALG))[0]
    assert "pending" in _refusal_problems(_enrollment(PKIStatus.PENDING, timed_out=True))[0]
    assert "delivered" in _refusal_problems(_enrollment(PKIStatus.SUCCESS))[0]


def test_intune_problems_name_the_missing_record() -> None:
    records = [IntuneRecord("T1", code="Success"), IntuneRecord("T2", thumbprint="aa")]
    problems = list(_intune_problems(records, {"T2": {"aa"}}, {"T1": ["ChallengeExpired"]}))
    assert problems == ["Intune answered validateRequest ['ChallengeExpired'], expected Success"]
