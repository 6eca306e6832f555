"""GraphDevices: managed devices in JSON batches, the Entra ID delta query and lookups, throttling, permissions;
and the transport's single Graph request against the HTTPS double (real MSAL and TLS)."""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from flask import Response, jsonify

from scep_server.errors import IntuneAuthError, IntuneProtocolError, IntuneUnavailable
from scep_server.intune.graph_devices import (
    DEFAULT_RETRY_AFTER,
    ENTRA_PERMISSION,
    INTUNE_PERMISSION,
    DeviceState,
    EntraDevice,
    GraphDevices,
)

from .conftest import Harness
from .double import CloudDouble, Scripted
from .graph_fake import BASE, FakeGraph, Refusal


def _guid() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def graph() -> FakeGraph:
    return FakeGraph()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def devices(graph: FakeGraph, sleeps: list[float]) -> GraphDevices:
    return GraphDevices(graph, sleep=sleeps.append, max_wait=60.0)


def _batches(graph: FakeGraph) -> list[int]:
    return [count for method, url, count in graph.calls if method == "POST" and url == f"{BASE}/$batch"]


# --- Intune's managed devices ------------------------------------------------------------------------------


def test_managed_devices_are_asked_twenty_to_a_batch(graph: FakeGraph, devices: GraphDevices) -> None:
    ids = [_guid() for _ in range(25)]
    for device_id in ids:
        graph.add_device(device_id, _guid(), _guid())
    states = devices.managed_devices(ids)
    assert _batches(graph) == [20, 5]
    assert set(states) == set(ids)
    assert all(state.state is DeviceState.ACTIVE for state in states.values())


def test_deleted_retired_and_wiped_devices_are_told_apart(graph: FakeGraph, devices: GraphDevices) -> None:
    active, retiring, wiping, failed, deleted = (_guid() for _ in range(5))
    entra = _guid()
    graph.add_device(active, entra.upper(), _guid())
    graph.add_device(retiring, _guid(), _guid(), state="retirePending")
    graph.add_device(wiping, _guid(), _guid(), state="wipeIssued")
    graph.add_device(failed, "00000000-0000-0000-0000-000000000000", _guid(), state="retireFailed")
    states = devices.managed_devices([active, retiring, wiping, failed, deleted])
    assert states[active].state is DeviceState.ACTIVE and states[active].entra_device_id == entra
    assert states[retiring].state is DeviceState.RETIRED
    assert states[wiping].state is DeviceState.RETIRED
    assert states[failed].state is DeviceState.ACTIVE and states[failed].entra_device_id is None
    assert states[deleted].state is DeviceState.DELETED


def test_a_device_whose_request_fails_otherwise_is_left_out(graph: FakeGraph, devices: GraphDevices) -> None:
    broken, fine = _guid(), _guid()
    graph.add_device(broken, _guid(), _guid())
    graph.add_device(fine, _guid(), _guid())
    graph.throttle_inner[broken] = deque([Refusal(500)])
    assert set(devices.managed_devices([broken, fine])) == {fine}


def test_a_throttled_request_in_a_batch_is_sent_again_after_its_retry_after(
    graph: FakeGraph, devices: GraphDevices, sleeps: list[float]
) -> None:
    slow, quick = _guid(), _guid()
    graph.add_device(slow, _guid(), _guid(), state="wipePending")
    graph.add_device(quick, _guid(), _guid())
    graph.throttle_inner[slow] = deque([Refusal(429, 7), Refusal(503, 3)])
    states = devices.managed_devices([slow, quick])
    assert states[slow].state is DeviceState.RETIRED and states[quick].state is DeviceState.ACTIVE
    assert _batches(graph) == [2, 1, 1]  # only the throttled request goes again
    assert sleeps == [7, 3] and devices.waited == 10


def test_a_throttled_call_is_made_again_after_retry_after(
    graph: FakeGraph, devices: GraphDevices, sleeps: list[float]
) -> None:
    device_id = _guid()
    graph.add_device(device_id, _guid(), _guid())
    graph.throttle.extend([Refusal(429, 12), Refusal(503, None)])
    assert devices.managed_devices([device_id])[device_id].state is DeviceState.ACTIVE
    assert sleeps == [12, DEFAULT_RETRY_AFTER]
    assert _batches(graph) == [1, 1, 1]


def test_throttling_past_the_bound_stops_the_run_until_the_next(
    graph: FakeGraph, sleeps: list[float]
) -> None:
    devices = GraphDevices(graph, sleep=sleeps.append, max_wait=20.0)
    device_id = _guid()
    graph.add_device(device_id, _guid(), _guid())
    graph.throttle.extend([Refusal(429, 15), Refusal(429, 15)])
    with pytest.raises(IntuneUnavailable, match="throttles") as raised:
        devices.managed_devices([device_id])
    assert sleeps == [15]  # the second wait would pass the bound: none is made
    assert raised.value.retry_after == 15
    devices.begin_run()
    graph.throttle.append(Refusal(429, 15))
    assert devices.managed_devices([device_id])[device_id].state is DeviceState.ACTIVE
    assert sleeps == [15, 15]


def test_a_retry_after_beyond_the_bound_is_not_waited_for(graph: FakeGraph, sleeps: list[float]) -> None:
    devices = GraphDevices(graph, sleep=sleeps.append, max_wait=120.0)
    graph.throttle.append(Refusal(429, 600))
    with pytest.raises(IntuneUnavailable):
        devices.managed_devices([_guid()])
    assert sleeps == []


def test_other_failures_are_not_retried(graph: FakeGraph, devices: GraphDevices, sleeps: list[float]) -> None:
    graph.throttle.append(Refusal(502, 1))
    with pytest.raises(IntuneUnavailable):
        devices.managed_devices([_guid()])
    assert sleeps == [] and len(graph.calls) == 1


@pytest.mark.parametrize(("denied", "permission"), [("managed", INTUNE_PERMISSION), ("entra", ENTRA_PERMISSION)])
def test_a_missing_permission_is_named(graph: FakeGraph, devices: GraphDevices, denied: str, permission: str) -> None:
    graph.denied.add(denied)
    with pytest.raises(IntuneAuthError, match=permission) as raised:
        if denied == "managed":
            devices.managed_devices([_guid()])
        else:
            devices.entra_devices([_guid()])
    assert raised.value.status == 403
    with pytest.raises(IntuneAuthError, match=permission):
        devices.probe(permission)
    other = ENTRA_PERMISSION if permission == INTUNE_PERMISSION else INTUNE_PERMISSION
    assert "Graph answered" in devices.probe(other)


# --- Entra ID's devices --------------------------------------------------------------------------------------


def test_the_first_delta_round_reports_every_device_across_pages(graph: FakeGraph, devices: GraphDevices) -> None:
    objects = [_guid() for _ in range(5)]
    for object_id in objects:
        graph.add_device(_guid(), _guid(), object_id)
    page = devices.entra_delta(None)
    assert {device.object_id for device in page.changed} == set(objects)
    assert page.removed == frozenset()
    assert len([call for call in graph.calls if "/devices/delta" in call[1]]) == 3  # pages of 2
    assert page.delta_link.startswith(f"{BASE}/devices/delta?$deltatoken=")


def test_a_later_round_reports_changes_and_removals_only(graph: FakeGraph, devices: GraphDevices) -> None:
    kept, disabled, removed = _guid(), _guid(), _guid()
    entra = {object_id: _guid() for object_id in (kept, disabled, removed)}
    for object_id, device_id in entra.items():
        graph.add_device(_guid(), device_id, object_id)
    link = devices.entra_delta(None).delta_link
    graph.set_enabled(disabled, False)
    graph.delete_entra(removed)
    page = devices.entra_delta(link)
    assert page.changed == (EntraDevice(disabled, entra[disabled], False),)
    assert page.removed == frozenset({removed})
    assert devices.entra_delta(page.delta_link).changed == ()


def test_a_delta_link_graph_no_longer_takes_starts_afresh(graph: FakeGraph, devices: GraphDevices) -> None:
    object_id = _guid()
    graph.add_device(_guid(), _guid(), object_id)
    link = devices.entra_delta(None).delta_link
    graph.expired_links = True
    page = devices.entra_delta(link)
    assert [device.object_id for device in page.changed] == [object_id]


def test_a_link_to_another_host_is_not_followed(graph: FakeGraph, devices: GraphDevices) -> None:
    with pytest.raises(IntuneProtocolError, match="not followed"):
        devices.entra_delta("https://elsewhere.example/v1.0/devices/delta?$deltatoken=t0")
    assert graph.calls == []


def test_unseen_devices_are_looked_up_by_device_id(graph: FakeGraph, devices: GraphDevices) -> None:
    present, absent = _guid(), _guid()
    object_id = _guid()
    graph.add_device(_guid(), present, object_id)
    found = devices.entra_devices([present, absent])
    assert found == {present: EntraDevice(object_id, present, True), absent: None}
    assert _batches(graph) == [2]


def test_the_delta_query_waits_out_throttling(graph: FakeGraph, devices: GraphDevices, sleeps: list[float]) -> None:
    graph.add_device(_guid(), _guid(), _guid())
    graph.throttle.append(Refusal(429, 4))
    assert len(devices.entra_delta(None).changed) == 1
    assert sleeps == [4]


# --- the transport's single Graph request --------------------------------------------------------------------


@pytest.fixture
def graph_route(cloud: CloudDouble) -> deque[Scripted]:
    """Answers to GET /v1.0/devices on the double, in order (a plain device list once they run out)."""
    script: deque[Scripted] = deque()

    def devices_view() -> Response | tuple[Response, int]:
        if script:
            return cloud._scripted(script.popleft())
        return jsonify({"value": [{"id": "object-1"}]})

    cloud.app.add_url_rule("/v1.0/devices", "test-devices", devices_view)
    return script


def test_graph_request_hands_retry_after_on_as_graph_sent_it(
    make_client: Callable[..., Harness], cloud: CloudDouble, graph_route: deque[Scripted]
) -> None:
    harness = make_client(backoff_max=1.0)
    graph_route.append(Scripted(429, {"error": {"code": "TooManyRequests"}}, headers={"Retry-After": "90"}))
    with pytest.raises(IntuneUnavailable) as raised:
        harness.transport.graph_request("devices", "GET", f"{cloud.url}v1.0/devices")
    assert raised.value.status == 429 and raised.value.retry_after == 90  # not capped: the caller paces
    assert harness.sleeps == []
    reply = harness.transport.graph_request("devices", "GET", f"{cloud.url}v1.0/devices")
    assert reply.status == 200 and reply.body == {"value": [{"id": "object-1"}]}


def test_graph_request_403_and_the_device_permission_check(
    make_client: Callable[..., Harness], cloud: CloudDouble, graph_route: deque[Scripted]
) -> None:
    harness = make_client()
    graph_route.append(Scripted(403, {"error": {"code": "Authorization_RequestDenied"}}))
    with pytest.raises(IntuneAuthError) as raised:
        harness.transport.graph_request("devices", "GET", f"{cloud.url}v1.0/devices")
    assert raised.value.status == 403
    graph_route.append(Scripted(403, {"error": {"code": "Authorization_RequestDenied"}}))
    with pytest.raises(IntuneAuthError, match=ENTRA_PERMISSION):
        GraphDevices(harness.transport).probe(ENTRA_PERMISSION)


def test_graph_request_fetches_a_new_token_once_after_a_401(
    make_client: Callable[..., Harness], cloud: CloudDouble, graph_route: deque[Scripted]
) -> None:
    harness = make_client()
    graph_route.append(Scripted(401, {"error": {"code": "InvalidAuthenticationToken"}}))
    assert harness.transport.graph_request("devices", "GET", f"{cloud.url}v1.0/devices").status == 200
    assert cloud.token_requests[f"{cloud.url}.default"] == 2
    graph_route.extend([Scripted(401, {}), Scripted(401, {})])
    with pytest.raises(IntuneAuthError) as raised:
        harness.transport.graph_request("devices", "GET", f"{cloud.url}v1.0/devices")
    assert raised.value.status == 401


def test_a_stopped_delta_round_goes_on_from_its_next_page(graph: FakeGraph, devices: GraphDevices) -> None:
    objects = [_guid() for _ in range(3)]
    for object_id in objects:
        graph.add_device(_guid(), _guid(), object_id)
    first = devices.entra_delta(None, stop=lambda: True)
    assert not first.complete and "$skiptoken=" in first.delta_link
    assert len(first.changed) == 2
    rest = devices.entra_delta(first.delta_link, stop=lambda: True)  # the last page: nothing left to stop at
    assert rest.complete and "$deltatoken=" in rest.delta_link
    assert {d.object_id for d in (*first.changed, *rest.changed)} == set(objects)
    assert all(headers == {"Prefer": "odata.maxpagesize=999"} for headers in graph.headers)


def test_a_retry_after_of_zero_still_waits_and_the_bound_ends_the_run(
    graph: FakeGraph, devices: GraphDevices, sleeps: list[float]
) -> None:
    graph.throttle.extend(Refusal(429, 0) for _ in range(1000))
    with pytest.raises(IntuneUnavailable, match="throttles"):
        devices.managed_devices([_guid()])
    assert sleeps == [1.0] * 60  # at least a second each, until the run's 60 s are spent
    assert len(graph.calls) == 61


def test_entries_graph_sent_that_cannot_be_read_are_not_a_deleted_device(
    graph: FakeGraph, devices: GraphDevices, monkeypatch: pytest.MonkeyPatch
) -> None:
    unreadable, empty = _guid(), _guid()

    def devices_answer(query: Mapping[str, str]) -> tuple[int, Any]:
        filtered = query.get("$filter", "")
        return 200, {"value": [{"displayName": "no ids"}] if unreadable in filtered else []}

    monkeypatch.setattr(graph, "_devices", devices_answer)
    assert devices.entra_devices([unreadable, empty]) == {empty: None}  # the unreadable one is left out
