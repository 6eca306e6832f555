"""Managed devices and Entra ID devices: the admin API changes them, Graph shows them (and their changes)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey as RSAKey
from flask.testing import FlaskClient

from scep_server.emulator import IntuneEmulator, create_app
from scep_server.emulator.devices import DELTA_TOKEN_LIFETIME
from scep_server.intune.contract import ChallengeSpec
from tests.support.clocks import FakeClock

from .helpers import CLIENT_ID, GRAPH_SCOPE, csr_for, intune_headers, token, validate_body

ADMIN = {"Authorization": "Bearer admin-secret"}
MANAGED = "/graph/v1.0/deviceManagement/managedDevices"
DEVICES = "/graph/v1.0/devices"
DELTA = "/graph/v1.0/devices/delta"
VALIDATE = "/intune/scep/ScepActions/validateRequest"


@pytest.fixture
def admin(emulator: IntuneEmulator) -> FlaskClient:
    return create_app(emulator, admin_token="admin-secret").test_client()


@pytest.fixture
def graph(admin: FlaskClient) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(admin, GRAPH_SCOPE)}"}


def _create(admin: FlaskClient, name: str = "DESKTOP-1", **fields: str) -> dict[str, Any]:
    response = admin.post("/admin/devices", json={"name": name, "os": "Windows", **fields}, headers=ADMIN)
    assert response.status_code == 201, response.json
    assert response.json is not None
    return dict(response.json)


def _change(admin: FlaskClient, device: dict[str, Any], change: str, body: Any = None) -> Any:
    response = admin.post(f"/admin/devices/{device['intuneDeviceId']}/{change}", json=body, headers=ADMIN)
    assert response.status_code == 200, response.json
    return response.json


def _json(response: Any) -> dict[str, Any]:
    assert response.json is not None, response.data
    return dict(response.json)


def _follow(client: FlaskClient, first: Any, headers: dict[str, str]) -> tuple[list[dict[str, Any]], str | None, int]:
    """Every entity of a paged answer, its deltaLink (if any) and how many pages it took."""
    body, items, pages = _json(first), [], 1
    items += body["value"]
    while "@odata.nextLink" in body:
        body = _json(client.get(body["@odata.nextLink"], headers=headers))
        items += body["value"]
        pages += 1
    return items, body.get("@odata.deltaLink"), pages


# --- the admin API ----------------------------------------------------------------------------------------------


def test_a_new_device_is_a_managed_device_and_its_entra_device(admin: FlaskClient) -> None:
    device = _create(admin)
    assert device["managementState"] == "managed" and device["accountEnabled"] is True
    assert not device["intuneDeleted"] and not device["entraDeleted"] and device["entraRemoval"] is None
    assert len({device["intuneDeviceId"], device["entraDeviceId"], device["entraObjectId"]}) == 3
    for key in ("intuneDeviceId", "entraDeviceId", "entraObjectId"):
        assert str(uuid.UUID(device[key])) == device[key]
    listed = _json(admin.get("/admin/devices", headers=ADMIN))["value"]
    assert listed == [device]
    for key in ("intuneDeviceId", "entraDeviceId", "entraObjectId"):
        assert _json(admin.get(f"/admin/devices/{device[key].upper()}", headers=ADMIN)) == device


def test_a_device_keeps_the_ids_it_is_given_in_either_spelling(admin: FlaskClient) -> None:
    intune, entra = str(uuid.uuid4()), str(uuid.uuid4())
    camel = _create(admin, intuneDeviceId=intune.upper(), entraDeviceId=entra)
    assert (camel["intuneDeviceId"], camel["entraDeviceId"]) == (intune, entra)
    snake = admin.post("/admin/devices", json={"name": "MAC-1", "os": "macOS", "intune_device_id": str(uuid.uuid4())},
                       headers=ADMIN)
    assert snake.status_code == 201 and _json(snake)["os"] == "macOS"


@pytest.mark.parametrize("body", [{"os": "Windows"}, {"name": "x"}, {"name": "x", "os": "Windows", "colour": "red"},
                                  {"name": "x", "os": "Windows", "intuneDeviceId": "not-a-guid"},
                                  {"name": "x", "os": 7}, ["name"]])
def test_a_malformed_device_is_refused(admin: FlaskClient, body: Any) -> None:
    response = admin.post("/admin/devices", json=body, headers=ADMIN)
    assert response.status_code == 400 and _json(response)["error"]


def test_a_device_id_cannot_be_taken_twice(admin: FlaskClient) -> None:
    device = _create(admin)
    again = admin.post("/admin/devices", json={"name": "y", "os": "iOS", "entraDeviceId": device["intuneDeviceId"]},
                       headers=ADMIN)
    assert again.status_code == 409


def test_device_calls_need_the_admin_token(admin: FlaskClient) -> None:
    assert admin.post("/admin/devices", json={"name": "x", "os": "Windows"}).status_code == 401
    assert admin.get("/admin/devices", headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_unknown_devices_answer_404(admin: FlaskClient) -> None:
    unknown = str(uuid.uuid4())
    assert admin.get(f"/admin/devices/{unknown}", headers=ADMIN).status_code == 404
    for change in ("delete-intune", "retire", "delete-entra", "disable", "enable", "challenges"):
        response = admin.post(f"/admin/devices/{unknown}/{change}", headers=ADMIN)
        assert response.status_code == 404 and unknown in _json(response)["error"]


# --- Intune: managedDevices ----------------------------------------------------------------------------------


def test_graph_shows_the_managed_device_until_it_is_deleted_in_intune(
    admin: FlaskClient, graph: dict[str, str]
) -> None:
    device = _create(admin, "DESKTOP-7", userPrincipalName="alice@contoso.com", osVersion="10.0.22631")
    answer = admin.get(f"{MANAGED}/{device['intuneDeviceId']}", headers=graph)
    assert answer.status_code == 200
    body = _json(answer)
    assert body["id"] == device["intuneDeviceId"] and body["azureADDeviceId"] == device["entraDeviceId"]
    assert body["deviceName"] == "DESKTOP-7" and body["operatingSystem"] == "Windows"
    assert body["managementState"] == "managed" and body["userPrincipalName"] == "alice@contoso.com"
    assert body["osVersion"] == "10.0.22631" and body["lastSyncDateTime"].endswith("Z")
    assert body["@odata.context"].endswith("$metadata#deviceManagement/managedDevices/$entity")
    deleted = _change(admin, device, "delete-intune")
    assert deleted["intuneDeleted"] and deleted["managementState"] is None and not deleted["entraDeleted"]
    gone = admin.get(f"{MANAGED}/{device['intuneDeviceId']}", headers=graph)
    assert gone.status_code == 404 and _json(gone)["error"]["code"] == "ResourceNotFound"
    assert admin.get(f"{DEVICES}(deviceId='{device['entraDeviceId']}')", headers=graph).status_code == 200
    assert admin.post(f"/admin/devices/{device['intuneDeviceId']}/retire", headers=ADMIN).status_code == 409


@pytest.mark.parametrize(("change", "body", "state"), [("retire", None, "retirePending"), ("wipe", None, "wipePending"),
                                                       ("management-state", {"managementState": "retireFailed"},
                                                        "retireFailed")])
def test_management_state_changes_show_in_graph(
    admin: FlaskClient, graph: dict[str, str], change: str, body: Any, state: str
) -> None:
    device = _create(admin)
    assert _change(admin, device, change, body)["managementState"] == state
    assert _json(admin.get(f"{MANAGED}/{device['intuneDeviceId']}", headers=graph))["managementState"] == state


def test_an_unknown_management_state_is_refused(admin: FlaskClient) -> None:
    device = _create(admin)
    response = admin.post(f"/admin/devices/{device['intuneDeviceId']}/management-state",
                          json={"managementState": "lost"}, headers=ADMIN)
    assert response.status_code == 400 and "retirePending" in _json(response)["error"]


def test_managed_devices_by_id_or_entra_device_id(admin: FlaskClient, graph: dict[str, str]) -> None:
    first, second, third = _create(admin, "A"), _create(admin, "B"), _create(admin, "C")
    query = (f"id eq '{first['intuneDeviceId'].upper()}' or azureADDeviceId eq '{second['entraDeviceId']}' "
             f"or id eq '{uuid.uuid4()}'")
    answer = _json(admin.get(MANAGED, query_string={"$filter": query, "$select": "id,managementState"},
                             headers=graph))
    assert answer["value"] == [{"id": first["intuneDeviceId"], "managementState": "managed"},
                               {"id": second["intuneDeviceId"], "managementState": "managed"}]
    everything = _json(admin.get(MANAGED, headers=graph))["value"]
    assert [d["id"] for d in everything] == [d["intuneDeviceId"] for d in (first, second, third)]


def test_a_filter_holds_at_most_15_terms(admin: FlaskClient, graph: dict[str, str]) -> None:
    terms = [f"id eq '{uuid.uuid4()}'" for _ in range(16)]
    assert admin.get(MANAGED, query_string={"$filter": " or ".join(terms[:15])}, headers=graph).status_code == 200
    refused = admin.get(MANAGED, query_string={"$filter": " or ".join(terms)}, headers=graph)
    assert refused.status_code == 400 and "15" in _json(refused)["error"]["message"]


@pytest.mark.parametrize("query", [{"$filter": "deviceName eq 'x'"}, {"$filter": "id ne 'x'"},
                                   {"$filter": "id eq 'a' and id eq 'b'"}, {"$filter": "id eq 'a' or"},
                                   {"$select": "id,colour"}, {"$top": "0"}, {"$top": "1001"},
                                   {"$skiptoken": "forged"}])
def test_unsupported_managed_device_queries_answer_400(
    admin: FlaskClient, graph: dict[str, str], query: dict[str, str]
) -> None:
    _create(admin)
    answer = admin.get(MANAGED, query_string=query, headers=graph)
    assert answer.status_code == 400 and _json(answer)["error"]["code"] == "BadRequest"


def test_managed_devices_page_with_next_links(admin: FlaskClient, graph: dict[str, str]) -> None:
    created = [_create(admin, f"D{i}")["intuneDeviceId"] for i in range(5)]
    items, delta_link, pages = _follow(admin, admin.get(MANAGED, query_string={"$top": "2", "$select": "deviceName"},
                                                        headers=graph), graph)
    assert pages == 3 and delta_link is None
    assert items == [{"id": i, "deviceName": f"D{n}"} for n, i in enumerate(created)]


# --- Entra ID: devices --------------------------------------------------------------------------------------


def test_graph_shows_the_entra_device_by_device_id_or_object_id(admin: FlaskClient, graph: dict[str, str]) -> None:
    device = _create(admin, "IPHONE-1", os="iOS")
    by_device_id = _json(admin.get(f"{DEVICES}(deviceId='{device['entraDeviceId']}')", headers=graph))
    assert by_device_id["id"] == device["entraObjectId"] and by_device_id["deviceId"] == device["entraDeviceId"]
    assert by_device_id["accountEnabled"] is True and by_device_id["displayName"] == "IPHONE-1"
    assert by_device_id["operatingSystem"] == "iOS"
    by_object_id = _json(admin.get(f"{DEVICES}/{device['entraObjectId']}", query_string={"$select": "accountEnabled"},
                                   headers=graph))
    assert by_object_id == {"@odata.context": by_object_id["@odata.context"], "id": device["entraObjectId"],
                            "accountEnabled": True}


def test_disable_enable_and_delete_in_entra(admin: FlaskClient, graph: dict[str, str]) -> None:
    device = _create(admin)
    url = f"{DEVICES}(deviceId='{device['entraDeviceId']}')"
    assert _change(admin, device, "disable")["accountEnabled"] is False
    assert _json(admin.get(url, headers=graph))["accountEnabled"] is False
    assert _change(admin, device, "enable")["accountEnabled"] is True
    assert _json(admin.get(url, headers=graph))["accountEnabled"] is True
    deleted = _change(admin, device, "delete-entra")
    assert deleted["entraDeleted"] and deleted["entraRemoval"] == "deleted" and deleted["accountEnabled"] is None
    gone = admin.get(url, headers=graph)
    assert gone.status_code == 404 and _json(gone)["error"]["code"] == "Request_ResourceNotFound"
    assert admin.get(f"{MANAGED}/{device['intuneDeviceId']}", headers=graph).status_code == 200
    assert admin.post(f"/admin/devices/{device['intuneDeviceId']}/disable", headers=ADMIN).status_code == 409


def test_devices_by_device_id_filter(admin: FlaskClient, graph: dict[str, str]) -> None:
    first, second, _ = _create(admin, "A"), _create(admin, "B"), _create(admin, "C")
    _change(admin, second, "disable")
    query = f"deviceId eq '{first['entraDeviceId']}' or deviceId eq '{second['entraDeviceId'].upper()}'"
    answer = _json(admin.get(DEVICES, query_string={"$filter": query,
                                                    "$select": "deviceId,accountEnabled,displayName"}, headers=graph))
    assert answer["value"] == [
        {"id": first["entraObjectId"], "deviceId": first["entraDeviceId"], "accountEnabled": True, "displayName": "A"},
        {"id": second["entraObjectId"], "deviceId": second["entraDeviceId"], "accountEnabled": False,
         "displayName": "B"}]
    refused = admin.get(DEVICES, query_string={"$filter": "displayName eq 'A'"}, headers=graph)
    assert refused.status_code == 400 and _json(refused)["error"]["code"] == "Request_UnsupportedQuery"


# --- Entra ID: delta ------------------------------------------------------------------------------------------


def test_the_first_delta_round_is_every_device_and_then_only_changes(admin: FlaskClient, graph: dict[str, str]) -> None:
    devices = [_create(admin, f"D{i}") for i in range(5)]
    paged = {**graph, "Prefer": "odata.maxpagesize=2"}
    first = admin.get(DELTA, query_string={"$select": "deviceId,accountEnabled,displayName"}, headers=paged)
    items, delta_link, pages = _follow(admin, first, paged)
    assert pages == 3 and delta_link is not None and "$deltatoken=" in delta_link
    assert items == [{"id": d["entraObjectId"], "deviceId": d["entraDeviceId"], "accountEnabled": True,
                      "displayName": d["name"]} for d in devices]

    unchanged, next_link, _ = _follow(admin, admin.get(delta_link, headers=graph), graph)
    assert unchanged == [] and next_link is not None

    _change(admin, devices[0], "disable")
    _change(admin, devices[1], "delete-entra")
    _change(admin, devices[2], "delete-entra", {"restorable": True})
    _change(admin, devices[3], "retire")  # an Intune change: not an Entra ID one
    added = _create(admin, "NEW")
    changes, _, _ = _follow(admin, admin.get(next_link, headers=graph), graph)
    assert changes == [
        {"id": devices[0]["entraObjectId"], "deviceId": devices[0]["entraDeviceId"], "accountEnabled": False,
         "displayName": "D0"},
        {"id": devices[1]["entraObjectId"], "@removed": {"reason": "deleted"}},
        {"id": devices[2]["entraObjectId"], "@removed": {"reason": "changed"}},
        {"id": added["entraObjectId"], "deviceId": added["entraDeviceId"], "accountEnabled": True,
         "displayName": "NEW"}]


def test_a_delta_link_can_be_used_again(admin: FlaskClient, graph: dict[str, str]) -> None:
    device = _create(admin)
    _, delta_link, _ = _follow(admin, admin.get(DELTA, headers=graph), graph)
    assert delta_link is not None
    _change(admin, device, "disable")
    once = _follow(admin, admin.get(delta_link, headers=graph), graph)[0]
    again = _follow(admin, admin.get(delta_link, headers=graph), graph)[0]
    assert once == again and [d["accountEnabled"] for d in once] == [False]
    assert set(once[0]) > {"id", "deviceId", "accountEnabled", "displayName", "operatingSystem"}  # no $select: all


def test_re_enabling_shows_as_a_change(admin: FlaskClient, graph: dict[str, str]) -> None:
    device = _create(admin)
    _change(admin, device, "disable")
    _, delta_link, _ = _follow(admin, admin.get(DELTA, headers=graph), graph)
    assert delta_link is not None
    _change(admin, device, "enable")
    changes = _follow(admin, admin.get(delta_link, headers=graph), graph)[0]
    assert [(d["id"], d["accountEnabled"]) for d in changes] == [(device["entraObjectId"], True)]


def test_latest_starts_from_now_without_the_devices(admin: FlaskClient, graph: dict[str, str]) -> None:
    device, other = _create(admin), _create(admin)
    latest = _json(admin.get(DELTA, query_string={"$deltatoken": "latest"}, headers=graph))
    assert latest["value"] == [] and "@odata.deltaLink" in latest
    _change(admin, other, "delete-entra")
    changes = _follow(admin, admin.get(latest["@odata.deltaLink"], headers=graph), graph)[0]
    assert changes == [{"id": other["entraObjectId"], "@removed": {"reason": "deleted"}}]
    assert device["entraObjectId"] not in str(changes)


def test_the_fully_qualified_delta_function_is_the_same(admin: FlaskClient, graph: dict[str, str]) -> None:
    device = _create(admin)
    answer = _json(admin.get("/graph/v1.0/devices/microsoft.graph.delta()", headers=graph))
    assert [d["deviceId"] for d in answer["value"]] == [device["entraDeviceId"]] and "@odata.deltaLink" in answer


def test_delta_tokens_expire_after_seven_days(
    admin: FlaskClient, graph: dict[str, str], clock: FakeClock[float]
) -> None:
    _create(admin)
    _, delta_link, _ = _follow(admin, admin.get(DELTA, headers=graph), graph)
    assert delta_link is not None
    clock.advance(DELTA_TOKEN_LIFETIME - 1)
    fresh = {"Authorization": f"Bearer {token(admin, GRAPH_SCOPE)}"}
    assert admin.get(delta_link, headers=fresh).status_code == 200
    clock.advance(1)
    expired = admin.get(delta_link, headers=fresh)
    assert expired.status_code == 400 and _json(expired)["error"]["code"] == "syncStateNotFound"


def test_forgotten_and_forged_tokens_answer_sync_state_not_found(admin: FlaskClient, graph: dict[str, str]) -> None:
    for i in range(3):
        _create(admin, f"D{i}")
    first = _json(admin.get(DELTA, headers={**graph, "Prefer": "odata.maxpagesize=1"}))
    next_link = first["@odata.nextLink"]
    assert admin.delete("/admin/delta-tokens", headers=ADMIN).status_code == 204
    for link in (next_link, f"{DELTA}?$deltatoken=forged"):
        answer = admin.get(link, headers=graph)
        assert answer.status_code == 400 and _json(answer)["error"]["code"] == "syncStateNotFound"


@pytest.mark.parametrize("query", [{"$filter": "id eq 'x'"}, {"$top": "5"}, {"$select": "colour"}])
def test_unsupported_delta_queries_answer_400(admin: FlaskClient, graph: dict[str, str], query: dict[str, str]) -> None:
    assert admin.get(DELTA, query_string=query, headers=graph).status_code == 400


# --- permissions -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("roles", "refused", "allowed"), [
    (["Device.Read.All"], MANAGED, DELTA),
    (["DeviceManagementManagedDevices.Read.All"], DELTA, MANAGED),
    (["DeviceManagementManagedDevices.Read.All"], DEVICES, MANAGED),
    (["Application.Read.All"], MANAGED, "/graph/v1.0/servicePrincipals/appId=0000000a-0000-0000-c000-000000000000/"
                                        "endpoints"),
])
def test_device_endpoints_need_their_graph_permission(
    admin: FlaskClient, roles: list[str], refused: str, allowed: str
) -> None:
    assert admin.post(f"/admin/apps/{CLIENT_ID}/roles", json={"graphRoles": roles}, headers=ADMIN).status_code == 204
    headers = {"Authorization": f"Bearer {token(admin, GRAPH_SCOPE)}"}
    denied = admin.get(refused, headers=headers)
    assert denied.status_code == 403
    assert _json(denied)["error"]["code"] == "Authorization_RequestDenied"
    assert admin.get(allowed, headers=headers).status_code == 200


def test_an_app_registered_with_chosen_graph_roles(admin: FlaskClient) -> None:
    app = {"clientId": "app-2", "clientSecret": "app-2-secret", "graphRoles": ["Device.Read.All"]}
    assert admin.post("/admin/apps", json=app, headers=ADMIN).status_code == 201
    headers = {"Authorization": f"Bearer {token(admin, GRAPH_SCOPE, client_id='app-2', secret='app-2-secret')}"}
    assert admin.get(DEVICES, headers=headers).status_code == 200
    assert admin.get(MANAGED, headers=headers).status_code == 403
    bad = admin.post("/admin/apps", json={**app, "graphRoles": "Device.Read.All"}, headers=ADMIN)
    assert bad.status_code == 400 and "graphRoles" in _json(bad)["error"]


def test_device_endpoints_need_a_graph_token(admin: FlaskClient) -> None:
    intune = {"Authorization": f"Bearer {token(admin)}"}  # a token for Intune, not for Graph
    for url in (MANAGED, DEVICES, DELTA):
        assert admin.get(url).status_code == 401
        assert admin.get(url, headers=intune).status_code == 401


def test_an_unknown_graph_version_is_refused(admin: FlaskClient, graph: dict[str, str]) -> None:
    assert admin.get("/graph/v2.0/devices", headers=graph).status_code == 400


def test_an_unknown_graph_path_answers_in_graph_shape(admin: FlaskClient, graph: dict[str, str]) -> None:
    answer = admin.get("/graph/v1.0/deviceManagement/somethingElse/x/y", headers=graph)
    assert answer.status_code == 404 and "code" in _json(answer)["error"]


# --- faults ------------------------------------------------------------------------------------------------


def test_throttling_with_retry_after_through_the_admin_api(
    admin: FlaskClient, graph: dict[str, str], emulator: IntuneEmulator
) -> None:
    device = _create(admin)
    fault = {"endpoint": "graph.managedDevices", "status": 429, "retryAfter": 7, "times": 2}
    assert admin.post("/admin/faults", json=fault, headers=ADMIN).status_code == 204
    for _ in range(2):
        throttled = admin.get(f"{MANAGED}/{device['intuneDeviceId']}", headers=graph)
        assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "7"
        assert _json(throttled)["error"]["code"] == "TooManyRequests"
    assert admin.get(f"{MANAGED}/{device['intuneDeviceId']}", headers=graph).status_code == 200
    assert admin.get(DEVICES, headers=graph).status_code == 200  # another endpoint: not throttled
    assert emulator.counters()["graph.managedDevices"] == 3 and emulator.counters()["graph.devices"] == 1


def test_service_unavailable_on_delta(admin: FlaskClient, graph: dict[str, str], emulator: IntuneEmulator) -> None:
    emulator.inject_fault("graph.devicesDelta", status=503, times=1)
    unavailable = admin.get(DELTA, headers=graph)
    assert unavailable.status_code == 503 and _json(unavailable)["error"]["code"] == "serviceNotAvailable"
    assert admin.get(DELTA, headers=graph).status_code == 200


def test_slow_answers(admin: FlaskClient, graph: dict[str, str], emulator: IntuneEmulator) -> None:
    emulator.inject_fault("graph.devices", latency=0.3, times=1)
    started = time.monotonic()
    assert admin.get(DEVICES, headers=graph).status_code == 200
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    assert admin.get(DEVICES, headers=graph).status_code == 200
    assert time.monotonic() - started < 0.3


# --- challenges for a device -------------------------------------------------------------------------------


def _device_challenge(admin: FlaskClient, device: dict[str, Any], body: dict[str, Any]) -> tuple[str, ChallengeSpec]:
    response = admin.post(f"/admin/devices/{device['entraDeviceId']}/challenges", json=body, headers=ADMIN)
    assert response.status_code == 201, response.json
    answer = _json(response)
    return str(answer["challenge"]), ChallengeSpec.from_json(answer["spec"])


def test_a_device_challenge_carries_its_intune_id_and_san_uri(
    admin: FlaskClient, device_key: RSAKey
) -> None:
    device = _create(admin, "DESKTOP-9")
    challenge, spec = _device_challenge(admin, device, {"sans": [{"type": "upn", "value": "bob@contoso.com"}]})
    uri = f"IntuneDeviceId://{device['intuneDeviceId']}"
    assert spec.device_id == device["intuneDeviceId"] and spec.subject == "CN=DESKTOP-9"
    assert spec.sans == (("upn", "bob@contoso.com"), ("uri", uri))
    intune = intune_headers(token(admin))
    accepted = admin.post(VALIDATE, json=validate_body(csr_for(spec, device_key, challenge), "tid-dev-1"),
                          headers=intune)
    assert _json(accepted)["code"] == "Success"
    without_uri = csr_for(spec, device_key, challenge, sans=[("upn", "bob@contoso.com")])
    refused = admin.post(VALIDATE, json=validate_body(without_uri, "tid-dev-1"), headers=intune)
    assert _json(refused)["code"] in ("SubjectAltNameMismatch", "SubjectAltNameMissing")


def test_a_device_challenge_keeps_a_san_uri_already_asked_for(admin: FlaskClient) -> None:
    device = _create(admin)
    uri = {"type": "uri", "value": f"IntuneDeviceId://{device['intuneDeviceId']}"}
    _, spec = _device_challenge(admin, device, {"subject": "CN=x", "sans": [uri]})
    assert spec.sans == (("uri", uri["value"]),)


def test_a_device_challenge_for_another_device_id_is_refused(admin: FlaskClient) -> None:
    device = _create(admin)
    response = admin.post(f"/admin/devices/{device['intuneDeviceId']}/challenges",
                          json={"subject": "CN=x", "deviceId": str(uuid.uuid4())}, headers=ADMIN)
    assert response.status_code == 400


def test_the_python_api_mints_the_same_device_challenge(emulator: IntuneEmulator) -> None:
    device = emulator.devices.create("LAPTOP-1", "Windows")
    challenge, spec = emulator.mint_device_challenge(device["entraObjectId"], ChallengeSpec(subject="CN=LAPTOP-1"))
    assert spec.device_id == device["intuneDeviceId"]
    assert ("uri", f"IntuneDeviceId://{device['intuneDeviceId']}") in spec.sans
    assert emulator.codec.open(challenge).spec == spec
