"""/readyz of the real server (gunicorn) with an Intune profile: it turns 503 while Entra ID refuses the app
and 200 again once it accepts it; the expiry radar's gauge reaches /metrics across workers."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from scep_server.emulator import EmulatorServer
from scep_server.intune.health import AUTH_RECHECK_FAILING_SECONDS, AUTH_RECHECK_SECONDS
from tests.support.processes import http_get
from tests.support.servers import CHALLENGE, ScepServerProcess, running_emulator

# One worker: every probe reaches the same process, so what it answers is that process's last check.
WORKERS = 1
SLACK = 20.0  # a loaded machine's delay between a check falling due and its answer


@dataclass
class Stack:
    emulator: EmulatorServer
    server: ScepServerProcess

    def readyz(self) -> tuple[int, dict[str, Any]]:
        status, body = http_get(self.server.base_url + "/readyz")
        return status, json.loads(body)

    def wait_for(self, status: int, within: float) -> dict[str, Any]:
        deadline = time.monotonic() + within
        last: tuple[int, dict[str, Any]] = (0, {})
        while time.monotonic() < deadline:
            last = self.readyz()
            if last[0] == status:
                return last[1]
            time.sleep(0.5)
        raise AssertionError(f"/readyz did not answer {status} within {within:.0f} s; last: {last}")


def _config(emulator: EmulatorServer) -> str:
    intune = {**emulator.settings(), "connect_timeout": 2.0, "read_timeout": 5.0, "max_retries": 0}
    return yaml.safe_dump({
        "data_dir": "var",
        "ca": {"name": "ready-ca", "subject": "CN=Readiness CA,O=scep-server", "key_size": 2048,
               "key_passphrase": {"value": "readiness-ca-passphrase"}},
        "intune": intune,
        "profiles": {
            "default": {"challenge": {"type": "static", "secret": {"value": CHALLENGE}}},
            "intune": {"challenge": {"type": "intune"}},
        },
    }, sort_keys=False)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root: Path = tmp_path_factory.mktemp("readiness")
    with running_emulator(root / "emulator") as emulator:
        with ScepServerProcess(root / "server", _config(emulator), workers=WORKERS) as server:
            yield Stack(emulator, server)


def _check(body: dict[str, Any], name: str) -> dict[str, Any]:
    (check,) = [check for check in body["checks"] if check["name"] == name]
    return check


def test_readiness_follows_entra_id_refusing_the_app(stack: Stack) -> None:
    ready = stack.wait_for(200, SLACK)
    assert _check(ready, "intune_auth")["ok"] and ready["ready"] is True
    stack.emulator.emulator.inject_fault("token", auth_failure=True)
    try:
        refused = stack.wait_for(503, AUTH_RECHECK_SECONDS + SLACK)
    finally:
        stack.emulator.emulator.clear_faults()
    auth = _check(refused, "intune_auth")
    assert auth["ok"] is False and "Entra ID refused the app credentials: invalid_client" in auth["detail"]
    assert all(check["ok"] for check in refused["checks"] if check["name"] != "intune_auth")
    recovered = stack.wait_for(200, AUTH_RECHECK_FAILING_SECONDS + SLACK)
    assert _check(recovered, "intune_auth")["ok"]
    assert stack.server.cli("intune", "check").returncode == 0


def test_the_credential_gauge_reaches_metrics(stack: Stack) -> None:
    body = stack.wait_for(200, SLACK)
    assert set(body["credentials"]) == {"ca", "ra", "ocsp", "client_secret"}
    status, metrics = http_get(stack.server.base_url + "/metrics")
    assert status == 200
    exported = {line.split('credential="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
                for line in metrics.decode().splitlines() if line.startswith("scep_credential_not_after_seconds{")}
    assert exported.keys() == {"ca", "ra", "ocsp", "client_secret"}
    ca = stack.server.ca_certificate().not_valid_after_utc.timestamp()
    assert exported["ca"] == ca
