"""Intune's queue of CA revocation requests and the results CAs upload (intune-api.md §6).

Contract gaps, decided here: a request stays pending, and is downloaded again, until a result for its
``requestContext`` is accepted (at-least-once delivery; a CA that loses a batch sees it again). A
retryable failure (41xx) leaves it pending; success and non-retryable failures (40xx) close it. An
upload is all-or-nothing: one unknown ``requestContext``, unknown ``errorCode`` or ``succeeded``/code
contradiction answers ``{"value": false}`` and changes nothing. ``issuerName`` filters compare
case-insensitively, as distinguished names when both sides parse as RFC 4514, else as strings.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from scep_server.pki.names import parse_name

RESULT_CODES = {
    0: "None",
    4000: "NonRetryableServiceException",
    4001: "DataSerializationError",
    4002: "ParameterDataInvalidError",
    4003: "CryptographyError",
    4004: "CertificateNotFoundError",
    4005: "ConflictError",
    4006: "NotSupportedError",
    4007: "PayloadTooLargeError",
    4100: "RetryableServiceException",
    4101: "ServiceUnavailableException",
    4102: "ServiceTooBusyException",
    4103: "AuthenticationException",
}


@dataclass(frozen=True, slots=True)
class RevocationRequest:
    """One request to revoke a certificate, as ``downloadRevocationRequests`` answers it."""

    request_context: str
    serial_number: str
    issuer_name: str
    ca_configuration: str = ""

    def to_json(self) -> dict[str, str]:
        return {"requestContext": self.request_context, "serialNumber": self.serial_number,
                "issuerName": self.issuer_name, "caConfiguration": self.ca_configuration}


@dataclass(frozen=True, slots=True)
class RevocationResult:
    """One entry of ``uploadRevocationResults`` (shape already checked)."""

    request_context: str
    succeeded: bool
    error_code: str
    error_message: str

    def to_json(self) -> dict[str, Any]:
        return {"requestContext": self.request_context, "succeeded": self.succeeded,
                "errorCode": self.error_code, "errorMessage": self.error_message}


class RevocationQueue:
    """Pending requests in arrival order, and every uploaded result. Not locked: its owner locks."""

    def __init__(self) -> None:
        self._pending: dict[str, RevocationRequest] = {}
        self._serials: dict[str, str] = {}
        self.results: list[dict[str, Any]] = []

    def add(self, serial_number: str, issuer_name: str, ca_configuration: str = "") -> str:
        context = str(uuid.uuid4())
        self._pending[context] = RevocationRequest(context, serial_number, issuer_name, ca_configuration)
        self._serials[context] = serial_number
        return context

    def download(self, max_requests: int, issuer_name: str | None) -> list[RevocationRequest]:
        wanted = [r for r in self._pending.values() if issuer_name is None or _same_issuer(r.issuer_name, issuer_name)]
        return wanted[:max_requests]

    def upload(self, results: list[RevocationResult], now: float) -> bool:
        """Accept the whole batch or none of it; every result is recorded either way."""
        reason = next((r for r in map(self._problem, results) if r), None)
        for result in results:
            self.results.append({**result.to_json(), "time": now, "accepted": reason is None,
                                 "serialNumber": self._serials.get(result.request_context), "reason": reason})
        if reason is not None:
            return False
        for result in results:
            if not 4100 <= int(result.error_code) < 4200:
                self._pending.pop(result.request_context, None)
        return True

    def _problem(self, result: RevocationResult) -> str | None:
        if result.request_context not in self._pending:
            return f"requestContext {result.request_context!r} is not pending"
        code = int(result.error_code) if result.error_code.lstrip("-").isdigit() else None
        if code not in RESULT_CODES:
            return f"errorCode {result.error_code!r} is not a revocation result code"
        if result.succeeded != (code == 0):
            return "succeeded: true needs errorCode '0' and succeeded: false a non-zero code"
        return None


def _same_issuer(a: str, b: str) -> bool:
    # Directory strings compare case-insensitively (RFC 5280 §7.1); spacing is normalised by parsing.
    try:
        a, b = parse_name(a).rfc4514_string(), parse_name(b).rfc4514_string()
    except ValueError:
        pass
    return a.casefold() == b.casefold()
