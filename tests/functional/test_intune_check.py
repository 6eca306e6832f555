"""`scep-server intune check` as an admin runs it (the console script) against the Intune emulator."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from scep_server.emulator import EmulatorServer
from tests.support.servers import ScepServerProcess, running_emulator


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[EmulatorServer]:
    with running_emulator(tmp_path / "emulator") as started:
        yield started


def _check(tmp_path: Path, intune: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    config = {"data_dir": "var", "intune": {**intune, "connect_timeout": 2, "read_timeout": 10, "max_retries": 0}}
    command = ScepServerProcess(tmp_path / "cli", yaml.safe_dump(config))
    command.config_path.write_text(command.config_yaml, encoding="utf-8")
    return command.cli("intune", "check", *args, timeout=60)


def _lines(done: subprocess.CompletedProcess[str], verdict: str) -> list[str]:
    return [line.split(":", 1)[0].split()[1] for line in done.stdout.splitlines() if line.startswith(verdict)]


def test_every_check_and_the_probe_pass(emulator: EmulatorServer, tmp_path: Path) -> None:
    done = _check(tmp_path, emulator.settings(), "--probe")
    assert done.returncode == 0, done.stdout + done.stderr
    assert _lines(done, "OK") == ["graph-token", "intune-token", "intune-role", "discovery", "discovery", "discovery",
                                  "app-credential", "probe"]
    assert "validateRequest answered CertificateRequestDecodingFailed to a deliberately invalid CSR" in done.stdout
    assert "the client secret expires" in done.stdout and "(180.0 days left)" in done.stdout
    assert done.stdout.rstrip().endswith(f"intune check passed for tenant {emulator.emulator.tenant}")
    (validation,) = emulator.emulator.validations
    assert validation["code"] == "CertificateRequestDecodingFailed"
    assert validation["transactionId"].startswith("intune-check-")


def test_a_revoked_consent_fails_with_exit_1_naming_the_role(emulator: EmulatorServer, tmp_path: Path) -> None:
    settings = emulator.settings()
    emulator.emulator.set_intune_roles(settings["client_id"], ())
    done = _check(tmp_path, settings, "--probe")
    assert done.returncode == 1, done.stdout + done.stderr
    assert _lines(done, "FAIL") == ["intune-role"] and _lines(done, "SKIP") == ["probe"]
    assert ("scep-server: intune-role: the Intune token lacks the scep_challenge_provider role (roles: none): grant "
            "the app the Intune application permission scep_challenge_provider and admin consent") in done.stderr
    assert done.stderr.rstrip().endswith("scep-server: intune check failed: intune-role")
    assert emulator.emulator.validations == []  # no probe without the role


def test_refused_credentials_fail_with_exit_1(emulator: EmulatorServer, tmp_path: Path) -> None:
    done = _check(tmp_path, {**emulator.settings(), "client_secret": "not-the-secret"})
    assert done.returncode == 1
    assert _lines(done, "FAIL") == ["graph-token", "intune-token"]
    assert "AADSTS7000215" in done.stderr and "not-the-secret" not in done.stdout + done.stderr


def test_entra_id_down_fails_with_exit_1(emulator: EmulatorServer, tmp_path: Path) -> None:
    emulator.emulator.inject_fault("token", status=503)
    done = _check(tmp_path, emulator.settings())
    assert done.returncode == 1 and "cannot get a token from Entra ID" in done.stderr


def test_a_secret_near_its_end_shows_its_days(emulator: EmulatorServer, tmp_path: Path) -> None:
    settings = emulator.settings()
    expires = datetime.now(UTC) + timedelta(days=9, hours=12)
    emulator.register_client(settings["client_id"], settings["client_secret"], secret_expires=expires.timestamp())
    done = _check(tmp_path, settings)
    assert done.returncode == 0 and f"expires {expires:%Y-%m-%d %H:%M} UTC (9.5 days left)" in done.stdout


def test_a_configuration_that_cannot_be_used_exits_2(emulator: EmulatorServer, tmp_path: Path) -> None:
    missing = tmp_path / "absent.pem"
    done = _check(tmp_path, {**emulator.settings(), "client_certificate": str(missing), "client_key": str(missing)})
    assert done.returncode == 2 and f"cannot read {missing}" in done.stderr
    unconfigured = _check(tmp_path, {})
    assert unconfigured.returncode == 2 and "intune.tenant and intune.client_id are not set" in unconfigured.stderr
    assert emulator.emulator.counters()["token"] == 0
