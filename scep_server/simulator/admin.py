"""A small client of the Intune emulator's admin API (``scep_server.emulator.admin``): what Intune's
console does (mint a challenge for a device; create, retire, delete, disable and re-enable devices in
Intune and Entra ID) and what a test harness does (inject faults, read back the validations and
notifications Intune received).

HTTPS verified against the emulator's CA bundle; proxies and ``REQUESTS_CA_BUNDLE`` from the
environment are ignored (``trust_env=False``): the emulator is always reached directly.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

from scep_server.intune.contract import ChallengeSpec

__all__ = ["DEVICE_CHANGES", "EmulatorAdmin", "EmulatorAdminError", "Fault"]

DEVICE_CHANGES = ("delete-intune", "retire", "wipe", "delete-entra", "disable", "enable")


class EmulatorAdminError(RuntimeError):
    """The admin API could not be reached or refused a call."""


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault for ``POST /admin/faults``: until cleared, ``endpoint`` answers ``status``, an Intune
    ``code``, or (``auth_failure``) HTTP 401 as Entra ID or Intune would."""

    endpoint: str
    status: int | None = None
    code: str | None = None
    auth_failure: bool = False

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"endpoint": self.endpoint}
        if self.status is not None:
            body["status"] = self.status
        if self.code is not None:
            body["code"] = self.code
        if self.auth_failure:
            body["authFailure"] = True
        return body

    def describe(self) -> str:
        effect = self.code or (f"HTTP {self.status}" if self.status else "HTTP 401 (authentication)")
        return f"{self.endpoint} answers {effect}"


class EmulatorAdmin:
    """The admin API at ``url`` (``https://host:port``); thread-safe, a context manager."""

    def __init__(self, url: str, *, ca_bundle: str | Path, token: str | None = None, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._timeout = timeout
        self._lock = threading.Lock()
        self._session = requests.Session()
        self._session.trust_env = False
        self._session.verify = str(ca_bundle)
        if token:
            self._session.headers["Authorization"] = f"Bearer {token}"

    def mint_challenge(self, spec: ChallengeSpec) -> str:
        """The challenge Intune would put in the device's SCEP profile for ``spec``."""
        answer = self._call("POST", "/admin/challenges", spec.to_json())
        challenge = answer.get("challenge") if isinstance(answer, Mapping) else None
        if not isinstance(challenge, str):
            raise EmulatorAdminError("POST /admin/challenges answered without a challenge")
        return challenge

    def create_device(
        self, name: str, os: str, *, intune_device_id: str | None = None, entra_device_id: str | None = None,
    ) -> dict[str, Any]:
        """A managed device in Intune and its Entra ID device; the emulator's view of it."""
        body = {"name": name, "os": os, "intuneDeviceId": intune_device_id, "entraDeviceId": entra_device_id}
        return self._object("POST", "/admin/devices", {k: v for k, v in body.items() if v is not None})

    def devices(self) -> list[dict[str, Any]]:
        return self._values("/admin/devices")

    def device(self, device: str) -> dict[str, Any]:
        return self._object("GET", f"/admin/devices/{device}")

    def change_device(self, device: str, change: str) -> dict[str, Any]:
        """One of ``DEVICE_CHANGES``, as an admin does it in Intune or Entra ID; the device afterwards."""
        if change not in DEVICE_CHANGES:
            raise ValueError(f"a device change is one of {', '.join(DEVICE_CHANGES)}, not {change!r}")
        return self._object("POST", f"/admin/devices/{device}/{change}")

    def mint_device_challenge(self, device: str, spec: ChallengeSpec) -> tuple[str, ChallengeSpec]:
        """The challenge Intune puts in the device's SCEP profile, and the profile as Intune completed it
        (the device's Intune id, the ``IntuneDeviceId://`` SAN URI)."""
        body = {k: v for k, v in spec.to_json().items() if k != "deviceId"}
        answer = self._object("POST", f"/admin/devices/{device}/challenges", body)
        challenge, completed = answer.get("challenge"), answer.get("spec")
        if not isinstance(challenge, str) or not isinstance(completed, Mapping):
            raise EmulatorAdminError(f"POST /admin/devices/{device}/challenges answered without a challenge")
        try:
            return challenge, ChallengeSpec.from_json(completed)
        except ValueError as exc:
            raise EmulatorAdminError(f"the emulator answered an unreadable spec: {exc}") from None

    def inject_fault(self, fault: Fault) -> None:
        self._call("POST", "/admin/faults", fault.to_json())

    def clear_faults(self) -> None:
        self._call("DELETE", "/admin/faults")

    def validations(self) -> list[dict[str, Any]]:
        """Every validateRequest the emulator answered (faulted calls are not recorded)."""
        return self._values("/admin/validations")

    def notifications(self) -> list[dict[str, Any]]:
        """Every success and failure notification the emulator recorded."""
        return self._values("/admin/notifications")

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> EmulatorAdmin:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _object(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        answer = self._call(method, path, body)
        if not isinstance(answer, Mapping):
            raise EmulatorAdminError(f"{method} {path} answered without a JSON object")
        return dict(answer)

    def _values(self, path: str) -> list[dict[str, Any]]:
        answer = self._call("GET", path)
        values = answer.get("value") if isinstance(answer, Mapping) else None
        if not isinstance(values, list):
            raise EmulatorAdminError(f"GET {path} answered without a value list")
        return [dict(v) for v in values if isinstance(v, Mapping)]

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        try:
            with self._lock:
                response = self._session.request(method, self.url + path, json=body, timeout=self._timeout)
        except (requests.RequestException, OSError) as exc:
            raise EmulatorAdminError(f"{method} {self.url}{path}: {exc}") from exc
        if response.status_code >= 300:
            raise EmulatorAdminError(f"{method} {path}: HTTP {response.status_code}: {response.text[:200]}")
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise EmulatorAdminError(f"{method} {path}: the answer is not JSON") from None
