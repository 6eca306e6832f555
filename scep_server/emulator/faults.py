"""Injected faults: what a named endpoint does instead of (or before) answering normally.

Applied at the start of the endpoint, after the call is counted, in this order: ``latency`` sleeps;
``hang`` sleeps (long enough for the client's read timeout to fire, then the endpoint answers as it
would have); ``auth_failure`` answers 401; ``status`` answers that status with a JSON error body in the
surface's own shape (and ``Retry-After`` when ``retry_after`` is set); ``malformed_json`` answers 200
with a body that is not JSON; ``code`` (only the three ``ScepActions``) answers 200 with that Intune
code, e.g. ``ScepProfileNoLongerTargetedToTheClient``, and is recorded like a real answer.
A fault lasts for ``times`` calls, or for ``seconds`` (on the emulator's clock, e.g. Entra ID refusing
the app for a while), whichever ends first, or until cleared when neither is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scep_server.emulator.codes import Code

ENDPOINTS = (
    "openid-configuration",
    "token",
    "discovery",
    "application",
    "validateRequest",
    "successNotification",
    "failureNotification",
    "downloadRevocationRequests",
    "uploadRevocationResults",
    "graph.managedDevices",
    "graph.devices",
    "graph.devicesDelta",
    "graph.batch",
)
CODE_ENDPOINTS = ("validateRequest", "successNotification", "failureNotification")


@dataclass(frozen=True, slots=True)
class Fault:
    """One endpoint's injected behaviour; see the module docstring for the order effects apply in."""

    status: int | None = None
    latency: float = 0
    hang: float | None = None
    malformed_json: bool = False
    auth_failure: bool = False
    code: str | None = None
    retry_after: int | None = None

    def __post_init__(self) -> None:
        if self.status is not None and not (type(self.status) is int and 100 <= self.status <= 599):
            raise ValueError("status must be an HTTP status (100-599)")
        for name in ("latency", "hang"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int | float) or isinstance(value, bool) or value < 0):
                raise ValueError(f"{name} must be a number of seconds >= 0")
        if self.code is not None and self.code not in set(Code):
            raise ValueError(f"code must be one of the Intune codes, not {self.code!r}")
        if self.retry_after is not None and (type(self.retry_after) is not int or self.retry_after < 0):
            raise ValueError("retry_after must be a whole number of seconds >= 0")
        if not (self.status or self.latency or self.hang or self.malformed_json or self.auth_failure or self.code):
            raise ValueError("a fault needs at least one effect")

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "latency": self.latency, "hang": self.hang,
                "malformedJson": self.malformed_json, "authFailure": self.auth_failure, "code": self.code,
                "retryAfter": self.retry_after}


class FaultTable:
    """The active faults per endpoint, the calls each has left and when it ends. Not locked: its owner locks."""

    def __init__(self) -> None:
        self._faults: dict[str, tuple[Fault, int | None, float | None]] = {}

    def set(self, endpoint: str, fault: Fault, times: int | None, *, until: float | None = None) -> None:
        """``until``: the emulator clock's time the fault ends at (None: it does not end by itself)."""
        if endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; known: {', '.join(ENDPOINTS)}")
        if fault.code is not None and endpoint not in CODE_ENDPOINTS:
            raise ValueError(f"code faults apply to {', '.join(CODE_ENDPOINTS)} only")
        if times is not None and (type(times) is not int or times < 1):
            raise ValueError("times must be a positive integer (or None: until cleared)")
        self._faults[endpoint] = (fault, times, until)

    def clear(self) -> None:
        self._faults.clear()

    def take(self, endpoint: str, now: float) -> Fault | None:
        """The fault for this call of ``endpoint`` at ``now``, counting it against ``times``."""
        entry = self._faults.get(endpoint)
        if entry is None:
            return None
        fault, times, until = entry
        if until is not None and now >= until:
            del self._faults[endpoint]
            return None
        if times is not None:
            if times <= 1:
                del self._faults[endpoint]
            else:
                self._faults[endpoint] = (fault, times - 1, until)
        return fault

    def snapshot(self, now: float) -> dict[str, dict[str, Any]]:
        return {name: {**fault.to_json(), "times": times,
                       "secondsLeft": None if until is None else max(0.0, until - now)}
                for name, (fault, times, until) in self._faults.items() if until is None or now < until}
