"""A stand-in for Microsoft Graph's device endpoints behind the transport's ``graph_request``, for unit tests.

It keeps Intune managed devices and Entra ID devices, answers JSON batches of single GETs, the managed
device and ``$filter=deviceId eq`` lookups and the devices delta query (pages of ``page_size``, removals
as ``{"id", "@removed"}``), and raises what the real transport raises: IntuneUnavailable for 429/503
(with Retry-After), IntuneAuthError for 403, IntuneProtocolError for other statuses. ``throttle`` queues
whole-call refusals, ``throttle_inner`` refusals of single requests inside a batch (by device id).
"""

from __future__ import annotations

import itertools
import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from scep_server.config import IntuneConfig
from scep_server.errors import IntuneAuthError, IntuneProtocolError, IntuneUnavailable
from scep_server.intune.transport import Reply

GRAPH = "https://graph.example.test/"
BASE = f"{GRAPH}v1.0"


@dataclass
class Refusal:
    status: int
    retry_after: float | None = None


@dataclass
class FakeGraph:
    """Graph for one tenant; ``calls`` lists (method, url, request count) of every call."""

    config: IntuneConfig = field(default_factory=lambda: IntuneConfig(graph_resource_url=GRAPH))
    managed: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> managedDevice
    entra: dict[str, dict[str, Any]] = field(default_factory=dict)  # object id -> device
    page_size: int = 2
    denied: set[str] = field(default_factory=set)  # "managed", "entra": answered 403
    throttle: deque[Refusal] = field(default_factory=deque)
    throttle_inner: dict[str, deque[Refusal]] = field(default_factory=dict)
    calls: list[tuple[str, str, int]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    expired_links: bool = False
    _log: list[tuple[int, str]] = field(default_factory=list)  # (sequence, object id) of each change
    _sequence: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _links: dict[str, int] = field(default_factory=dict)

    # --- what a test does to the tenant ---

    def add_device(self, intune_id: str, entra_id: str, object_id: str, *, state: str = "managed") -> None:
        self.managed[intune_id] = {"id": intune_id, "managementState": state, "azureADDeviceId": entra_id}
        self.entra[object_id] = {"id": object_id, "deviceId": entra_id, "accountEnabled": True}
        self._changed(object_id)

    def set_enabled(self, object_id: str, enabled: bool) -> None:
        self.entra[object_id]["accountEnabled"] = enabled
        self._changed(object_id)

    def delete_entra(self, object_id: str) -> None:
        del self.entra[object_id]
        self._changed(object_id)

    def _changed(self, object_id: str) -> None:
        self._log.append((next(self._sequence), object_id))

    # --- the transport's side ---

    def graph_request(
        self, operation: str, method: str, url: str, body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        self.calls.append((method, url, len(body["requests"]) if body and "requests" in body else 1))
        self.headers.append(dict(headers or {}))
        if self.throttle:
            refusal = self.throttle.popleft()
            raise IntuneUnavailable(f"{operation}: Graph answered HTTP {refusal.status}", status=refusal.status,
                                    retry_after=refusal.retry_after)
        status, answer = self._answer(method, url, body)
        if status == 403:
            raise IntuneAuthError("Graph refused the call (HTTP 403)", status=403)
        if status != 200:
            raise IntuneProtocolError(f"Graph {operation} answered HTTP {status}", status=status)
        return Reply(answer, "activity", status)

    def _answer(self, method: str, url: str, body: Mapping[str, Any] | None) -> tuple[int, Any]:
        assert url.startswith(BASE), url
        relative = url[len(BASE):]
        if method == "POST" and relative == "/$batch":
            assert body is not None and len(body["requests"]) <= 20
            return 200, {"responses": [self._inner(item) for item in body["requests"]]}
        assert method == "GET"
        return self._get(relative)

    def _inner(self, item: Mapping[str, Any]) -> dict[str, Any]:
        key = _device_in(item["url"])
        queued = self.throttle_inner.get(key)
        if queued:
            refusal = queued.popleft()
            headers = {} if refusal.retry_after is None else {"Retry-After": str(int(refusal.retry_after))}
            return {"id": item["id"], "status": refusal.status, "headers": headers, "body": {"error": {}}}
        status, answer = self._get(item["url"])
        return {"id": item["id"], "status": status, "headers": {"Content-Type": "application/json"}, "body": answer}

    def _get(self, relative: str) -> tuple[int, Any]:
        parts = urlsplit(relative)
        query = {name: values[0] for name, values in parse_qs(parts.query).items()}
        if parts.path.startswith("/deviceManagement/managedDevices"):
            return self._managed(parts.path, query)
        if parts.path == "/devices/delta":
            return self._delta(query)
        if parts.path == "/devices":
            return self._devices(query)
        return 404, {"error": {"code": "ResourceNotFound"}}

    def _managed(self, path: str, query: Mapping[str, str]) -> tuple[int, Any]:
        if "managed" in self.denied:
            return 403, {"error": {"code": "Forbidden"}}
        device_id = path.removeprefix("/deviceManagement/managedDevices").strip("/")
        if not device_id:
            return 200, {"value": list(self.managed.values())[: int(query.get("$top", "100"))]}
        device = self.managed.get(device_id)
        return (200, dict(device)) if device is not None else (404, {"error": {"code": "ResourceNotFound"}})

    def _devices(self, query: Mapping[str, str]) -> tuple[int, Any]:
        if "entra" in self.denied:
            return 403, {"error": {"code": "Authorization_RequestDenied"}}
        wanted = re.fullmatch(r"deviceId eq '([0-9a-f-]+)'", query.get("$filter", ""))
        devices = [d for d in self.entra.values() if wanted is None or d["deviceId"] == wanted.group(1)]
        return 200, {"value": [dict(d) for d in devices][: int(query.get("$top", "100"))]}

    def _delta(self, query: Mapping[str, str]) -> tuple[int, Any]:
        if "entra" in self.denied:
            return 403, {"error": {"code": "Authorization_RequestDenied"}}
        if "$skiptoken" in query:
            since, offset = (int(n) for n in query["$skiptoken"].split("."))
        elif "$deltatoken" in query:
            if self.expired_links or query["$deltatoken"] not in self._links:
                return 400, {"error": {"code": "syncStateNotFound"}}
            since, offset = self._links[query["$deltatoken"]], 0
        else:
            assert query.get("$select") == "id,deviceId,accountEnabled"
            since, offset = 0, 0
        items = self._since(since)
        page = items[offset: offset + self.page_size]
        if offset + self.page_size < len(items):
            link = f"{BASE}/devices/delta?$skiptoken={since}.{offset + self.page_size}"
            return 200, {"value": page, "@odata.nextLink": link}
        token = f"t{len(self._links)}"
        self._links[token] = self._log[-1][0] if self._log else 0
        return 200, {"value": page, "@odata.deltaLink": f"{BASE}/devices/delta?$deltatoken={token}"}

    def _since(self, sequence: int) -> list[dict[str, Any]]:
        changed = list(dict.fromkeys(object_id for n, object_id in self._log if n > sequence))
        return [dict(self.entra[o]) if o in self.entra else {"id": o, "@removed": {"reason": "deleted"}}
                for o in changed]


def _device_in(url: str) -> str:
    """The device id a batched request asks about (managed device path or deviceId filter)."""
    match = re.search(r"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})", unquote(url))
    return match.group(1) if match else ""
