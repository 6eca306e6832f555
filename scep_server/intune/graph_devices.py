"""What Microsoft Graph knows of the devices behind certificates: Intune's managed devices, Entra ID's devices.

* Intune (``DeviceManagementManagedDevices.Read.All``): JSON batches (``POST {graph}/v1.0/$batch``) of up
  to 20 ``GET /deviceManagement/managedDevices/{id}``. 404 is a device deleted from Intune; a
  ``managementState`` of :data:`RETIRED_STATES` one being retired or wiped. Graph offers no delta
  query for managed devices, so each is asked for.
* Entra ID (``Device.Read.All``): the delta query ``GET /devices/delta?$select=id,deviceId,accountEnabled``,
  continued from the delta link of the previous run, names the devices changed since (``@removed``: gone);
  a device not seen yet is looked up in a batch of ``GET /devices?$filter=deviceId eq '{id}'`` (no match:
  gone). Graph identifies changes by object id, the certificate names the ``deviceId``.

Throttling: an answer 429 or 503, of a whole call or of one request in a batch, is retried after its
``Retry-After`` (:data:`DEFAULT_RETRY_AFTER` without one) as long as this run's waits stay within
``max_wait`` seconds; past that, IntuneUnavailable ends the run, and the next one starts over. A 403
is IntuneAuthError naming the missing application permission. Links Graph hands out are followed
only on the configured Graph host: they carry the token.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

from scep_server.config.model import IntuneConfig
from scep_server.errors import IntuneAuthError, IntuneProtocolError, IntuneUnavailable
from scep_server.intune.transport import Reply

__all__ = [
    "BATCH_LIMIT",
    "DEFAULT_RETRY_AFTER",
    "ENTRA_PERMISSION",
    "INTUNE_PERMISSION",
    "MAX_WAIT",
    "RETIRED_STATES",
    "DeltaPage",
    "DeviceState",
    "EntraDevice",
    "GraphDevices",
    "GraphTransport",
    "ManagedDevice",
]

log = logging.getLogger("scep_server.intune.graph_devices")

BATCH_LIMIT = 20  # requests in one JSON batch (Graph's limit)
MAX_WAIT = 120.0  # seconds one run may spend waiting out throttling
DEFAULT_RETRY_AFTER = 5.0
MIN_RETRY_AFTER = 1.0  # seconds: the least a throttled call waits, whatever Retry-After says
THROTTLED = frozenset({429, 503})
EXPIRED_LINK = frozenset({400, 410})  # what Graph answers a delta link it no longer has the state of
INTUNE_PERMISSION = "DeviceManagementManagedDevices.Read.All"
ENTRA_PERMISSION = "Device.Read.All"
# managementState values of a device being retired or wiped (or removed), per Graph's managementState enum.
RETIRED_STATES = frozenset({"retirePending", "retireIssued", "wipePending", "wipeIssued", "deletePending"})
_MANAGED_SELECT = "id,managementState,azureADDeviceId"
_ENTRA_SELECT = "id,deviceId,accountEnabled"
DELTA_PAGE = {"Prefer": "odata.maxpagesize=999"}  # the largest page Graph hands out for directory objects
_NO_ENTRA_DEVICE = "00000000-0000-0000-0000-000000000000"  # azureADDeviceId of a device Entra ID does not know


class GraphTransport(Protocol):
    """What this client needs of :class:`~scep_server.intune.transport.IntuneTransport`."""

    config: IntuneConfig

    def graph_request(
        self, operation: str, method: str, url: str, body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply: ...


class DeviceState(StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"  # Entra ID: accountEnabled false
    RETIRED = "retired"  # Intune: retire or wipe pending or issued
    DELETED = "deleted"  # gone from Intune or from Entra ID


@dataclass(frozen=True, slots=True)
class ManagedDevice:
    """An Intune managed device: its state, and its Entra ID device id if Entra ID knows it."""

    state: DeviceState
    entra_device_id: str | None = None


@dataclass(frozen=True, slots=True)
class EntraDevice:
    """An Entra ID device: its object id (what delta queries name), its deviceId, whether it is enabled."""

    object_id: str
    device_id: str | None
    enabled: bool | None


@dataclass(frozen=True, slots=True)
class DeltaPage:
    """What a delta query reported: the devices changed (some only by object id and the property that
    changed), the object ids removed, and the link that continues from here: the delta link of the next
    round, or, when ``complete`` is false (stopped early), the next page of this one."""

    changed: tuple[EntraDevice, ...]
    removed: frozenset[str]
    delta_link: str
    complete: bool = True


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    body: Any


class GraphDevices:
    """Reads device states from Graph for one tenant; one run at a time (:meth:`begin_run`)."""

    def __init__(
        self, transport: GraphTransport, *, sleep: Callable[[float], None] = time.sleep, max_wait: float = MAX_WAIT,
    ) -> None:
        config = transport.config
        self._transport = transport
        self._base = f"{config.graph_resource_url.rstrip('/')}/v{config.graph_api_version}"
        self._sleep = sleep
        self._max_wait = max_wait
        self._waited = 0.0

    @property
    def waited(self) -> float:
        """Seconds this run has waited out throttling so far."""
        return self._waited

    def begin_run(self) -> None:
        """A new run: the bound on waiting starts anew."""
        self._waited = 0.0

    # --- Intune --------------------------------------------------------------------------------------

    def managed_devices(self, ids: Sequence[str]) -> dict[str, ManagedDevice]:
        """The state of each managed device of ``ids`` (lowercase GUIDs) that Graph answered for; a device
        whose request failed otherwise is left out (its certificates are left alone)."""
        urls = {device_id: f"/deviceManagement/managedDevices/{device_id}?$select={_MANAGED_SELECT}"
                for device_id in ids}
        states: dict[str, ManagedDevice] = {}
        for device_id, answer in self._batched(urls, INTUNE_PERMISSION).items():
            state = _managed(answer)
            if state is None:
                log.warning("Graph answered HTTP %d for managed device %s; its certificates are left alone",
                            answer.status, device_id)
            else:
                states[device_id] = state
        return states

    # --- Entra ID ------------------------------------------------------------------------------------

    def entra_delta(self, delta_link: str | None, *, stop: Callable[[], bool] | None = None) -> DeltaPage:
        """Every change since ``delta_link`` (None: every device, as a first delta round reports them),
        following the pages to the new delta link, or, once ``stop()`` says so, to the page after the last
        one read (``complete`` false: a later call goes on from there). A link Graph no longer takes
        (expired: 400 syncStateNotFound, or 410) starts afresh."""
        try:
            return self._delta(delta_link, stop)
        except IntuneProtocolError as exc:
            if delta_link is None or exc.status not in EXPIRED_LINK:
                raise
            log.warning("Graph no longer takes the Entra ID delta link (HTTP %s); reading every device afresh",
                        exc.status)
            return self._delta(None, stop)

    def entra_devices(self, device_ids: Sequence[str]) -> dict[str, EntraDevice | None]:
        """Each Entra ID device of ``device_ids`` that Graph answered for: the device, or None when Entra ID
        has no device with that id (deleted)."""
        urls = {device_id: f"/devices?$filter={quote(_device_filter(device_id))}&$select={_ENTRA_SELECT}"
                for device_id in device_ids}
        found: dict[str, EntraDevice | None] = {}
        for device_id, answer in self._batched(urls, ENTRA_PERMISSION).items():
            values = answer.body.get("value") if answer.status == 200 and isinstance(answer.body, dict) else None
            if not isinstance(values, list):
                log.warning("Graph answered HTTP %d for Entra ID device %s; its certificates are left alone",
                            answer.status, device_id)
                continue
            devices = [device for device in map(_entra, values) if device is not None]
            if values and not devices:  # entries Graph sent but we cannot read: not the same as none
                log.warning("Graph's answer for Entra ID device %s holds no device we can read; its certificates "
                            "are left alone", device_id)
                continue
            found[device_id] = devices[0] if devices else None
        return found

    # --- the permission check (``intune check``) ------------------------------------------------------

    def probe(self, permission: str) -> str:
        """Read one device of the resource ``permission`` covers; IntuneAuthError (403) when the app lacks it."""
        path = "/deviceManagement/managedDevices" if permission == INTUNE_PERMISSION else "/devices"
        reply = self._get(f"{self._base}{path}?$top=1&$select=id", f"{permission} check", permission)
        listed = reply.body.get("value") if isinstance(reply.body, dict) else None
        return f"Graph answered {path} ({len(listed) if isinstance(listed, list) else 0} device(s) on a page of 1)"

    # --- calls ---------------------------------------------------------------------------------------

    def _delta(self, delta_link: str | None, stop: Callable[[], bool] | None) -> DeltaPage:
        url = delta_link or f"{self._base}/devices/delta?$select={_ENTRA_SELECT}"
        changed: list[EntraDevice] = []
        removed: set[str] = set()
        while True:
            body = self._get(self._on_graph(url), "Entra ID devices delta", ENTRA_PERMISSION, DELTA_PAGE).body
            if not isinstance(body, dict) or not isinstance(body.get("value"), list):
                raise IntuneProtocolError("Graph's devices delta answered without a 'value' list")
            for entry in body["value"]:
                if isinstance(entry, dict) and "@removed" in entry and isinstance(entry.get("id"), str):
                    removed.add(entry["id"])
                elif (device := _entra(entry)) is not None:
                    changed.append(device)
            if isinstance(body.get("@odata.nextLink"), str):
                url = body["@odata.nextLink"]
                if stop is not None and stop():
                    return DeltaPage(tuple(changed), frozenset(removed), url, complete=False)
            elif isinstance(body.get("@odata.deltaLink"), str):
                return DeltaPage(tuple(changed), frozenset(removed), body["@odata.deltaLink"])
            else:
                raise IntuneProtocolError("Graph's devices delta answered with neither a next nor a delta link")

    def _batched(self, urls: Mapping[str, str], permission: str) -> dict[str, _Answer]:
        """Each GET of ``urls`` (key → relative URL) through JSON batches; throttled ones are sent again."""
        answers: dict[str, _Answer] = {}
        keys = list(urls)
        for start in range(0, len(keys), BATCH_LIMIT):
            chunk = {key: urls[key] for key in keys[start:start + BATCH_LIMIT]}
            answers.update(self._batch(chunk, permission))
        return answers

    def _batch(self, urls: Mapping[str, str], permission: str) -> dict[str, _Answer]:
        pending = dict(urls)
        answers: dict[str, _Answer] = {}
        while pending:
            ids = {str(index): key for index, key in enumerate(pending, 1)}
            body = {"requests": [{"id": index, "method": "GET", "url": pending[key]} for index, key in ids.items()]}
            reply = self._call(f"{permission} batch", "POST", f"{self._base}/$batch", permission, body)
            throttled: list[float] = []
            for index, answer, retry_after in _responses(reply.body):
                key = ids.get(index)
                if key is None:
                    continue
                if answer.status in THROTTLED:
                    throttled.append(retry_after if retry_after is not None else DEFAULT_RETRY_AFTER)
                    continue
                if answer.status == 403:
                    raise _missing(permission, reply.activity_id)
                answers[key] = answer
                del pending[key]
            if pending and len(throttled) == 0:
                raise IntuneProtocolError(f"Graph's batch answer left {len(pending)} request(s) unanswered",
                                          activity_id=reply.activity_id)
            if pending:
                self._wait(max(throttled), f"{len(pending)} request(s) of a batch")
        return answers

    def _get(self, url: str, operation: str, permission: str, headers: Mapping[str, str] | None = None) -> Reply:
        return self._call(operation, "GET", url, permission, headers=headers)

    def _call(
        self, operation: str, method: str, url: str, permission: str, body: Mapping[str, Any] | None = None, *,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        while True:
            try:
                return self._transport.graph_request(operation, method, url, body, headers)
            except IntuneUnavailable as exc:
                if exc.status not in THROTTLED:
                    raise
                wait = exc.retry_after if exc.retry_after is not None else DEFAULT_RETRY_AFTER
                self._wait(wait, exc.detail)
            except IntuneAuthError as exc:
                if exc.status == 403:
                    raise _missing(permission, exc.activity_id) from None
                raise

    def _wait(self, seconds: float, what: str) -> None:
        # A Retry-After of 0 (or a date in the past, or no number) still waits: an answer that kept saying
        # "now" would otherwise be asked again and again without a pause, and never reach max_wait.
        seconds = max(seconds, MIN_RETRY_AFTER)
        if self._waited + seconds > self._max_wait:
            raise IntuneUnavailable(f"Graph throttles the device lookups ({what}: retry after {seconds:g} s); "
                                    f"this run stops after waiting {self._waited:g} s, the next one starts over",
                                    status=429, retry_after=seconds)
        log.info("Graph throttled %s: waiting %g s as Retry-After asks", what, seconds)
        self._waited += seconds
        self._sleep(seconds)

    def _on_graph(self, url: str) -> str:
        """``url`` if it is on the configured Graph host; a link elsewhere would be handed the token."""
        ours, theirs = urlsplit(self._base), urlsplit(url)
        if (theirs.scheme, theirs.netloc.lower()) != (ours.scheme, ours.netloc.lower()):
            raise IntuneProtocolError(f"Graph handed out a link to {theirs.netloc or url[:80]!r}, not to "
                                      f"{ours.netloc}: not followed")
        return url


def _responses(body: Any) -> Iterator[tuple[str, _Answer, float | None]]:
    """(request id, answer, Retry-After) of each response of a batch answer."""
    responses = body.get("responses") if isinstance(body, dict) else None
    if not isinstance(responses, list):
        raise IntuneProtocolError("Graph's batch answer has no 'responses' list")
    for response in responses:
        if not isinstance(response, dict) or not isinstance(response.get("status"), int):
            raise IntuneProtocolError("Graph's batch answer holds a response without a status")
        headers = response.get("headers")
        headers = headers if isinstance(headers, dict) else {}
        retry_after = next((value for name, value in headers.items() if name.lower() == "retry-after"), None)
        yield str(response.get("id")), _Answer(response["status"], response.get("body")), _seconds(retry_after)


def _device_filter(device_id: str) -> str:
    return f"deviceId eq '{device_id}'"


def _seconds(value: Any) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except (TypeError, ValueError):
        return None


def _managed(answer: _Answer) -> ManagedDevice | None:
    if answer.status == 404:
        return ManagedDevice(DeviceState.DELETED)
    if answer.status != 200 or not isinstance(answer.body, dict):
        return None
    entra = answer.body.get("azureADDeviceId")
    entra_id = entra.lower() if isinstance(entra, str) and entra and entra != _NO_ENTRA_DEVICE else None
    retired = answer.body.get("managementState") in RETIRED_STATES
    return ManagedDevice(DeviceState.RETIRED if retired else DeviceState.ACTIVE, entra_id)


def _entra(entry: Any) -> EntraDevice | None:
    if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
        return None
    device_id, enabled = entry.get("deviceId"), entry.get("accountEnabled")
    return EntraDevice(entry["id"], device_id.lower() if isinstance(device_id, str) else None,
                       enabled if isinstance(enabled, bool) else None)


def _missing(permission: str, activity_id: str | None) -> IntuneAuthError:
    return IntuneAuthError(f"Graph refused to read devices (HTTP 403): grant the app the Microsoft Graph "
                           f"application permission {permission} with admin consent",
                           activity_id=activity_id, status=403)
