"""Graph's JSON batching over the device endpoints: limits, per-request answers, faults and permissions."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import requests
from flask.testing import FlaskClient

from scep_server.emulator import EmulatorServer, IntuneEmulator, create_app

from .helpers import CLIENT_ID, GRAPH_SCOPE, token

ADMIN = {"Authorization": "Bearer admin-secret"}
BATCH = "/graph/v1.0/$batch"


@pytest.fixture
def admin(emulator: IntuneEmulator) -> FlaskClient:
    return create_app(emulator, admin_token="admin-secret").test_client()


@pytest.fixture
def graph(admin: FlaskClient) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(admin, GRAPH_SCOPE)}"}


@pytest.fixture
def devices(emulator: IntuneEmulator) -> list[dict[str, Any]]:
    return [emulator.devices.create(f"D{i}", "Windows") for i in range(3)]


def _get(request_id: str, url: str, **extra: Any) -> dict[str, Any]:
    return {"id": request_id, "method": "GET", "url": url, **extra}


def _batch(client: FlaskClient, requests: Any, headers: dict[str, str]) -> Any:
    return client.post(BATCH, json={"requests": requests}, headers=headers)


def _responses(answer: Any) -> dict[str, dict[str, Any]]:
    assert answer.status_code == 200, answer.json
    assert answer.json is not None
    return {r["id"]: r for r in answer.json["responses"]}


def test_each_request_gets_its_own_answer(
    admin: FlaskClient, graph: dict[str, str], devices: list[dict[str, Any]], emulator: IntuneEmulator
) -> None:
    emulator.devices.delete_intune(devices[1]["intuneDeviceId"])
    filter_query = f"deviceId eq '{devices[0]['entraDeviceId']}' or deviceId eq '{devices[2]['entraDeviceId']}'"
    answer = _batch(admin, [
        _get("a", f"/deviceManagement/managedDevices/{devices[0]['intuneDeviceId']}?$select=managementState"),
        _get("b", f"deviceManagement/managedDevices/{devices[1]['intuneDeviceId']}"),
        _get("c", f"/devices?$filter={filter_query}&$select=deviceId,accountEnabled"),
        _get("d", f"/devices(deviceId='{devices[2]['entraDeviceId']}')"),
    ], graph)
    responses = _responses(answer)
    assert list(responses) == ["a", "b", "c", "d"]
    assert responses["a"]["status"] == 200 and responses["a"]["body"]["managementState"] == "managed"
    assert responses["a"]["headers"]["Content-Type"].startswith("application/json")
    assert responses["b"]["status"] == 404 and responses["b"]["body"]["error"]["code"] == "ResourceNotFound"
    assert [d["deviceId"] for d in responses["c"]["body"]["value"]] == [devices[0]["entraDeviceId"],
                                                                         devices[2]["entraDeviceId"]]
    assert responses["d"]["status"] == 200 and responses["d"]["body"]["id"] == devices[2]["entraObjectId"]
    counters = emulator.counters()
    assert counters["graph.batch"] == 1 and counters["graph.managedDevices"] == 2 and counters["graph.devices"] == 2


def test_a_batch_holds_at_most_20_requests(
    admin: FlaskClient, graph: dict[str, str], devices: list[dict[str, Any]], emulator: IntuneEmulator
) -> None:
    url = f"/devices(deviceId='{devices[0]['entraDeviceId']}')"
    full = _responses(_batch(admin, [_get(str(i), url) for i in range(20)], graph))
    assert len(full) == 20 and {r["status"] for r in full.values()} == {200}
    refused = _batch(admin, [_get(str(i), url) for i in range(21)], graph)
    assert refused.status_code == 400 and refused.json is not None
    assert refused.json["error"]["code"] == "BadRequest" and "20" in refused.json["error"]["message"]
    assert emulator.counters()["graph.devices"] == 20  # nothing of the refused batch ran


@pytest.mark.parametrize("requests", [
    [], "x", [{"id": "1", "method": "GET"}], [{"id": "1", "url": "/devices"}],
    [_get("1", "/devices"), _get("1", "/devices")], [_get("a", "/devices"), _get("A", "/devices")],
    [_get("1", "/devices", dependsOn=["2"]), _get("2", "/devices")], [_get("1", "/devices", headers={"x": 1})],
])
def test_a_malformed_batch_is_refused_whole(admin: FlaskClient, graph: dict[str, str], requests: Any) -> None:
    answer = _batch(admin, requests, graph)
    assert answer.status_code == 400 and answer.json is not None and answer.json["error"]["code"] == "BadRequest"


def test_a_request_whose_dependency_failed_answers_424(admin: FlaskClient, graph: dict[str, str]) -> None:
    missing = str(uuid.uuid4())
    responses = _responses(_batch(admin, [
        _get("1", f"/deviceManagement/managedDevices/{missing}"),
        _get("2", "/devices", dependsOn=["1"]),
        _get("3", "/devices"),
        _get("4", "/devices", dependsOn=["3"]),
    ], graph))
    assert [responses[i]["status"] for i in "1234"] == [404, 424, 200, 200]
    assert responses["2"]["body"]["error"]["code"] == "FailedDependency"


def test_only_relative_get_requests_run(admin: FlaskClient, graph: dict[str, str]) -> None:
    responses = _responses(_batch(admin, [
        _get("abs", "https://graph.microsoft.com/v1.0/devices"),
        {"id": "post", "method": "POST", "url": "/devices", "body": {},
         "headers": {"Content-Type": "application/json"}},
        _get("nested", "/$batch"),
        _get("outside", "/../../admin/devices"),
    ], graph))
    assert responses["abs"]["status"] == 400 and responses["nested"]["status"] == 400
    assert responses["outside"]["status"] == 400
    assert responses["post"]["status"] == 405 and "code" in responses["post"]["body"]["error"]


def test_a_throttled_request_inside_a_batch_carries_its_retry_after(
    admin: FlaskClient, graph: dict[str, str], devices: list[dict[str, Any]], emulator: IntuneEmulator
) -> None:
    emulator.inject_fault("graph.managedDevices", status=429, retry_after=3, times=1)
    url = f"/deviceManagement/managedDevices/{devices[0]['intuneDeviceId']}"
    responses = _responses(_batch(admin, [_get("1", url), _get("2", url), _get("3", "/devices")], graph))
    assert responses["1"]["status"] == 429 and responses["1"]["headers"]["Retry-After"] == "3"
    assert responses["1"]["body"]["error"]["code"] == "TooManyRequests"
    assert responses["2"]["status"] == 200 and responses["3"]["status"] == 200


def test_the_whole_batch_can_be_throttled(admin: FlaskClient, graph: dict[str, str], emulator: IntuneEmulator) -> None:
    assert admin.post("/admin/faults", json={"endpoint": "graph.batch", "status": 429, "retryAfter": 5, "times": 1},
                      headers=ADMIN).status_code == 204
    throttled = _batch(admin, [_get("1", "/devices")], graph)
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "5"
    assert emulator.counters()["graph.devices"] == 0
    assert _responses(_batch(admin, [_get("1", "/devices")], graph))["1"]["status"] == 200


def test_each_request_is_authorized_on_its_own(
    admin: FlaskClient, devices: list[dict[str, Any]]
) -> None:
    assert admin.post(f"/admin/apps/{CLIENT_ID}/roles", json={"graphRoles": ["Device.Read.All"]},
                      headers=ADMIN).status_code == 204
    headers = {"Authorization": f"Bearer {token(admin, GRAPH_SCOPE)}"}
    responses = _responses(_batch(admin, [
        _get("intune", f"/deviceManagement/managedDevices/{devices[0]['intuneDeviceId']}"),
        _get("entra", f"/devices(deviceId='{devices[0]['entraDeviceId']}')"),
    ], headers))
    assert responses["intune"]["status"] == 403
    assert responses["intune"]["body"]["error"]["code"] == "Authorization_RequestDenied"
    assert responses["entra"]["status"] == 200


def test_a_batch_needs_a_graph_token(admin: FlaskClient) -> None:
    assert _batch(admin, [_get("1", "/devices")], {}).status_code == 401
    intune = {"Authorization": f"Bearer {token(admin)}"}
    assert _batch(admin, [_get("1", "/devices")], intune).status_code == 401


def test_a_batch_over_https_pages_with_https_links(server: EmulatorServer, session: requests.Session) -> None:
    client_id, secret = server.register_client()
    for i in range(3):
        server.emulator.devices.create(f"D{i}", "Android")
    answer = session.post(f"{server.url}/contoso.onmicrosoft.com/oauth2/v2.0/token", timeout=10, data={
        "grant_type": "client_credentials", "client_id": client_id, "client_secret": secret,
        "scope": f"{server.url}/graph/.default"})
    session.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
    batch = session.post(f"{server.url}{BATCH}", timeout=10, json={"requests": [
        _get("delta", "/devices/delta", headers={"Prefer": "odata.maxpagesize=2"})]})
    assert batch.status_code == 200
    (response,) = batch.json()["responses"]
    assert response["status"] == 200 and len(response["body"]["value"]) == 2
    next_link = response["body"]["@odata.nextLink"]
    assert next_link.startswith(f"{server.url}/graph/v1.0/devices/delta?$skiptoken=")
    rest = session.get(next_link, timeout=10).json()
    assert len(rest["value"]) == 1 and rest["@odata.deltaLink"].startswith(f"{server.url}/graph/v1.0/devices/delta")
