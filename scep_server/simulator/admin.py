"""A small client of the Intune emulator's admin API (``scep_server.emulator.admin``): what Intune's
console does (mint a challenge for a device) and what a test harness does (inject faults, read back
the validations and notifications Intune received).

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

__all__ = ["EmulatorAdmin", "EmulatorAdminError", "Fault"]


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
