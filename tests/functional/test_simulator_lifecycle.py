"""The simulator's device lifecycle scenario against the server (the `intune` validator, served over HTTP
beside the in-process runtime) and the Intune emulator: devices enroll with the IntuneDeviceId SAN URI,
then Intune and Entra ID change them, and Graph tells so over HTTPS with the server's own app token."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from cryptography import x509
from werkzeug.serving import WSGIRequestHandler, make_server

from scep_server.simulator import EmulatorAdmin, Settings
from scep_server.simulator import cli as simulator_cli
from scep_server.simulator.lifecycle import CHANGES, LifecycleScenario
from scep_server.web import create_app

from .intune_env import IntuneEnv

EXPECTED_STATES = {
    "delete-intune": {"managementState": None, "accountEnabled": True, "intuneDeleted": True, "entraDeleted": False},
    "retire": {"managementState": "retirePending", "accountEnabled": True, "intuneDeleted": False,
               "entraDeleted": False},
    "disable": {"managementState": "managed", "accountEnabled": False, "intuneDeleted": False, "entraDeleted": False},
    "delete-entra": {"managementState": "managed", "accountEnabled": None, "intuneDeleted": False,
                     "entraDeleted": True},
    None: {"managementState": "managed", "accountEnabled": True, "intuneDeleted": False, "entraDeleted": False},
}


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


@pytest.fixture
def scep_url(intune_env: IntuneEnv) -> Iterator[str]:
    """The server's SCEP base URL: its web app over the functional runtime, on a free port."""
    app = create_app(intune_env.config, runtime_override=intune_env.server.runtime, start_background=False)
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/scep"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def admin(intune_env: IntuneEnv) -> Iterator[EmulatorAdmin]:
    emulator = intune_env.emulator
    with EmulatorAdmin(emulator.url, ca_bundle=emulator.ca_bundle, token=emulator.admin_token) as admin:
        yield admin


def _settings(scep_url: str) -> Settings:
    return Settings(scep_url=scep_url, timeout=10.0, poll_interval=0.2, http_timeout=30.0)


def _graph(intune_env: IntuneEnv) -> requests.Session:
    """A session with the app token the server's configuration gets (client credentials, Graph scope)."""
    settings = intune_env.emulator.settings()
    session = requests.Session()
    session.verify, session.trust_env = settings["ca_bundle"], False
    answer = session.post(f"{settings['authority']}{settings['tenant']}/oauth2/v2.0/token", data={
        "grant_type": "client_credentials", "client_id": settings["client_id"],
        "client_secret": settings["client_secret"], "scope": f"{settings['graph_resource_url']}.default"}, timeout=10)
    assert answer.status_code == 200, answer.text
    session.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
    return session


def test_devices_enroll_with_their_intune_id_and_then_change(
    intune_env: IntuneEnv, scep_url: str, admin: EmulatorAdmin
) -> None:
    report = LifecycleScenario(admin, _settings(scep_url)).run(devices=len(CHANGES) + 1)
    assert report.passed, [d.problems for d in report.devices]
    assert [d.change for d in report.devices] == [*CHANGES, None]
    notified = {n["transactionId"] for n in intune_env.state.notifications if n["type"] == "success"}
    for device in report.devices:
        assert device.certificate is not None and device.transaction_id in notified
        sans = device.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [
            f"IntuneDeviceId://{device.intune_device_id}"]
        assert device.certificate.subject.rfc4514_string() == f"CN={device.name}"
        assert {k: v for k, v in (device.state or {}).items() if k != "entraRemoval"} == EXPECTED_STATES[device.change]
    assert intune_env.server.issued_count() == len(report.devices)


def test_graph_shows_the_changes_to_the_enrolled_devices(
    intune_env: IntuneEnv, scep_url: str, admin: EmulatorAdmin
) -> None:
    graph = _graph(intune_env)
    base = f"{intune_env.emulator.url}/graph/v1.0"
    start = graph.get(f"{base}/devices/delta", params={"$deltatoken": "latest"}, timeout=10).json()
    report = LifecycleScenario(admin, _settings(scep_url)).run(devices=len(CHANGES))
    by_change = {d.change: d for d in report.devices}

    gone = graph.get(f"{base}/deviceManagement/managedDevices/{by_change['delete-intune'].intune_device_id}",
                     timeout=10)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "ResourceNotFound"
    retired = graph.get(f"{base}/deviceManagement/managedDevices/{by_change['retire'].intune_device_id}", timeout=10)
    assert retired.json()["managementState"] == "retirePending"

    changes = graph.get(start["@odata.deltaLink"], timeout=10).json()["value"]
    removed = [c for c in changes if "@removed" in c]
    assert [c["@removed"]["reason"] for c in removed] == ["deleted"]
    enabled = {c["deviceId"]: c["accountEnabled"] for c in changes if "@removed" not in c}
    assert enabled == {by_change["delete-intune"].entra_device_id: True, by_change["retire"].entra_device_id: True,
                       by_change["disable"].entra_device_id: False}


def test_the_cli_runs_the_scenario_and_prints_json(
    intune_env: IntuneEnv, scep_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    emulator = intune_env.emulator
    status = simulator_cli.run(["--scenario", "lifecycle", "--devices", "2", "--scep-url", scep_url,
                                "--emulator-url", emulator.url, "--ca-bundle", str(emulator.ca_bundle),
                                "--admin-token", emulator.admin_token, "--timeout", "10", "--poll-interval", "0.2"])
    out = capsys.readouterr().out
    assert status == 0, out
    report: dict[str, Any] = json.loads(out)
    assert report["scenario"] == "lifecycle" and report["passed"] is True
    assert report["summary"] == {"devices": 2, "enrolled": 2, "changes": {"delete-intune": 1, "retire": 1},
                                 "unchanged": 0}
    for device in report["devices"]:
        assert device["certificate"]["sanUris"] == [f"IntuneDeviceId://{device['intuneDeviceId']}"]
    assert [d["intuneDeviceId"] for d in report["devices"]] == [
        d["intuneDeviceId"] for d in intune_env.state.devices.views()]
