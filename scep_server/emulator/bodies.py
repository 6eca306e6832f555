"""Shape checks for the JSON bodies of the Intune calls (intune-api.md §5, §6).

A body that does not have the documented shape is answered with HTTP 400 and a JSON error naming the
field: integrators see their mistake instead of a code that looks like a validation verdict. Values
that are present but wrong (a CSR that does not decode, say) are the validation's business, not ours.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from scep_server.emulator.revocations import RevocationResult

_HEX = re.compile(r"^[0-9A-Fa-f]+$")
_SUCCESS_FIELDS = ("transactionId", "certificateRequest", "certificateThumbprint", "certificateSerialNumber",
                   "certificateExpirationDateUtc", "issuingCertificateAuthority", "callerInfo")
_OPTIONAL_SUCCESS_FIELDS = ("caConfiguration", "certificateAuthority")
_FAILURE_FIELDS = ("transactionId", "certificateRequest", "errorDescription", "callerInfo")
MAX_REVOCATION_REQUESTS = 500


class BodyError(ValueError):
    """The body does not have the documented shape (HTTP 400)."""


@dataclass(frozen=True, slots=True)
class ValidateRequest:
    transaction_id: str
    certificate_request: str
    caller_info: str


def validate_request(body: Any) -> ValidateRequest:
    """``{"request": {"transactionId", "certificateRequest", "callerInfo"}}``."""
    request = _object(body, "request")
    return ValidateRequest(
        transaction_id=_string(request, "transactionId", "request"),
        certificate_request=_string(request, "certificateRequest", "request", empty=True),
        caller_info=_string(request, "callerInfo", "request"),
    )


def success_notification(body: Any) -> dict[str, Any]:
    """``{"notification": {...}}`` with every field of a successNotification; returns the notification."""
    notification = _object(body, "notification")
    for name in _SUCCESS_FIELDS:
        _string(notification, name, "notification")
    for name in _OPTIONAL_SUCCESS_FIELDS:
        _string(notification, name, "notification", empty=True)
    if not re.fullmatch(r"[0-9A-Fa-f]{40}", notification["certificateThumbprint"]):
        raise BodyError("notification.certificateThumbprint must be the hex SHA-1 of the certificate (40 digits)")
    if not _HEX.match(notification["certificateSerialNumber"]):
        raise BodyError("notification.certificateSerialNumber must be hex")
    _utc_timestamp(notification["certificateExpirationDateUtc"])
    return dict(notification)


def failure_notification(body: Any) -> dict[str, Any]:
    """``{"notification": {...}}`` with every field of a failureNotification; returns the notification."""
    notification = _object(body, "notification")
    for name in _FAILURE_FIELDS:
        _string(notification, name, "notification", empty=name == "errorDescription")
    h_result = notification.get("hResult")
    if type(h_result) is not int or not -(2**31) <= h_result < 2**32:
        raise BodyError("notification.hResult must be a 32-bit HRESULT as a JSON number")
    return dict(notification)


def download_parameters(body: Any) -> tuple[int, str | None]:
    """``{"downloadParameters": {"maxRequests": 1..500, "issuerName": null | str}}``."""
    parameters = _object(body, "downloadParameters")
    maximum = parameters.get("maxRequests")
    if type(maximum) is not int or not 1 <= maximum <= MAX_REVOCATION_REQUESTS:
        raise BodyError(f"downloadParameters.maxRequests must be an integer 1-{MAX_REVOCATION_REQUESTS}")
    issuer = parameters.get("issuerName")
    if issuer is not None and not isinstance(issuer, str):
        raise BodyError("downloadParameters.issuerName must be null or a string")
    return maximum, issuer


def revocation_results(body: Any) -> list[RevocationResult]:
    """``{"results": [{"requestContext", "succeeded", "errorCode", "errorMessage"}, ...]}``."""
    results = body.get("results") if isinstance(body, Mapping) else None
    if not isinstance(results, list) or not results:
        raise BodyError("results must be a non-empty list")
    return [_revocation_result(item, f"results[{i}]") for i, item in enumerate(results)]


def _revocation_result(item: Any, where: str) -> RevocationResult:
    if not isinstance(item, Mapping):
        raise BodyError(f"{where} must be an object")
    if type(item.get("succeeded")) is not bool:
        raise BodyError(f"{where}.succeeded must be true or false")
    return RevocationResult(
        request_context=_string(item, "requestContext", where),
        succeeded=item["succeeded"],
        error_code=_string(item, "errorCode", where),
        error_message=_string(item, "errorMessage", where, empty=True),
    )


def _object(body: Any, name: str) -> Mapping[str, Any]:
    value = body.get(name) if isinstance(body, Mapping) else None
    if not isinstance(value, Mapping):
        raise BodyError(f"the body must be a JSON object with an object {name!r}")
    return value


def _string(container: Mapping[str, Any], name: str, where: str, *, empty: bool = False) -> str:
    value = container.get(name)
    if not isinstance(value, str) or (not empty and not value):
        raise BodyError(f"{where}.{name} must be a {'' if empty else 'non-empty '}string")
    return value


def _utc_timestamp(text: str) -> None:
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        stamp = None
    if stamp is None or stamp.utcoffset() != timedelta(0):
        raise BodyError("notification.certificateExpirationDateUtc must be ISO-8601 UTC (e.g. 2018-06-11T16:11:20Z)")
