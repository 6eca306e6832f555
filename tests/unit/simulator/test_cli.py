"""``scep-simulator``: arguments, the table, the exit status (the simulator itself is faked)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import pytest

from scep_server.simulator import EmulatorAdminError, cli
from scep_server.simulator.matrix import ROWS, Row
from scep_server.simulator.runner import DeviceResult


class FakeAdmin:
    def __init__(self, url: str, *, ca_bundle: str, token: str | None = None) -> None:
        self.url, self.ca_bundle, self.token = url, ca_bundle, token

    def __enter__(self) -> FakeAdmin:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _fake_simulator(results: list[DeviceResult], calls: list[Any]) -> type:
    class FakeSimulator:
        def __init__(self, admin: FakeAdmin, settings: Any) -> None:
            calls.append((admin.url, admin.ca_bundle, admin.token, settings))

        def run(self, rows: Sequence[Row], devices: int, concurrency: int) -> list[DeviceResult]:
            calls.append((rows, devices, concurrency))
            return results

    return FakeSimulator


def test_list_prints_every_row(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run(["--", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(ROWS) and lines[4].startswith("SN Format: IMEI") and "sn-format-imei" in lines[4]


def test_unknown_row_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run(["--profile", "SN Format: Shoe size"]) == 2
    assert "no TestMatrix row" in capsys.readouterr().err


def test_run_passes_the_options_and_prints_the_table(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[Any] = []
    results = [DeviceResult("SN Format: IMEI", 1, "SUCCESS"), DeviceResult("SN Format: IMEI", 2, "SUCCESS")]
    monkeypatch.setattr(cli, "EmulatorAdmin", FakeAdmin)
    monkeypatch.setattr(cli, "Simulator", _fake_simulator(results, calls))
    monkeypatch.setenv(cli.ADMIN_TOKEN_ENV, "from-env")
    status = cli.run(["--profile", "sn-format-imei", "--devices", "2", "--scep-url", "http://h:1/scep",
                      "--emulator-url", "https://e:2", "--ca-bundle", "ca.pem", "--concurrency", "3", "--timeout", "5"])
    assert status == 0
    (url, bundle, token, settings), (rows, devices, concurrency) = calls
    assert (url, bundle, token) == ("https://e:2", "ca.pem", "from-env")
    assert settings.scep_url == "http://h:1/scep" and settings.timeout == 5.0
    assert [r.name for r in rows] == ["SN Format: IMEI"] and (devices, concurrency) == (2, 3)
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["ROW", "DEVICE", "RESULT", "DETAIL"]
    assert "2/2 devices passed" in out


def test_one_failed_device_fails_the_run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    results = [DeviceResult("Renewal", 1, "SUCCESS", problems=("renewal: no certificate",))]
    monkeypatch.setattr(cli, "EmulatorAdmin", FakeAdmin)
    monkeypatch.setattr(cli, "Simulator", _fake_simulator(results, []))
    assert cli.run(["--profile", "renewal"]) == 1
    assert "Renewal  1       FAIL   renewal: no certificate" in capsys.readouterr().out


def test_an_unreachable_emulator_is_a_setup_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class Unreachable(FakeAdmin):
        def __enter__(self) -> FakeAdmin:
            raise EmulatorAdminError("connection refused")

    monkeypatch.setattr(cli, "EmulatorAdmin", Unreachable)
    assert cli.run([]) == 2
    assert "connection refused" in capsys.readouterr().err


def test_devices_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.run(["--devices", "0"])
    assert "at least 1" in capsys.readouterr().err


def test_table_columns_line_up() -> None:
    out = io.StringIO()
    cli.print_table([DeviceResult("A", 1, "SUCCESS"), DeviceResult("Longer row", 12, "x", problems=("bad",))], out)
    lines = out.getvalue().splitlines()
    assert [line.index("RESULT") if i == 0 else line.index("PASS" if i == 1 else "FAIL")
            for i, line in enumerate(lines)] == [20, 20, 20]
