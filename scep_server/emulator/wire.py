"""What every emulated endpoint shares: counting, fault injection, error bodies, the Intune call headers.

Each surface answers errors in its own shape, as the real services do: Entra ID
``{"error", "error_description", "error_codes"}``, Graph ``{"error": {"code", "message"}}``, Intune
``{"code", "errorDescription"}`` and the admin API ``{"error"}``.
"""

from __future__ import annotations

import functools
import threading
import uuid
from collections.abc import Callable
from enum import Enum
from typing import Any, TypeVar, cast

from flask import Response, current_app, g, jsonify, request

from scep_server.emulator.bodies import BodyError
from scep_server.emulator.faults import Fault
from scep_server.emulator.state import IntuneEmulator
from scep_server.emulator.tokens import INTUNE_ROLE, AccessDenied, EntraError

EMULATOR_KEY = "intune_emulator"
INTERRUPT_KEY = "intune_emulator.interrupt"
SCEP_API_VERSION = "2018-02-20"
PKI_API_VERSION = "5019-05-05"
TRANSIENT_AADSTS = 90033  # "A transient error has occurred. Please try again."
MALFORMED_JSON = '{"value": [{"providerName": "ScepRequestValidationFEService", "uri": '
_View = TypeVar("_View", bound=Callable[..., Any])
_INTUNE_CODES = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 429: "TooManyRequests",
                 500: "InternalServerError", 502: "BadGateway", 503: "ServiceUnavailable", 504: "GatewayTimeout"}
_GRAPH_CODES = {400: "BadRequest", 401: "InvalidAuthenticationToken", 403: "Authorization_RequestDenied",
                404: "Request_ResourceNotFound", 429: "TooManyRequests", 503: "serviceNotAvailable"}


class Surface(Enum):
    ENTRA = "entra"
    GRAPH = "graph"
    INTUNE = "intune"
    ADMIN = "admin"


def emulator() -> IntuneEmulator:
    return cast(IntuneEmulator, current_app.extensions[EMULATOR_KEY])


def origin() -> str:
    """``https://host:port`` as the client addressed this server."""
    return request.host_url.rstrip("/")


def error(surface: Surface, status: int, message: str, *, code: str | None = None,
          headers: dict[str, str] | None = None) -> Response:
    """A JSON error answer in ``surface``'s shape."""
    if surface is Surface.ENTRA:
        oauth_error = "invalid_request" if status < 500 else "temporarily_unavailable"
        body = EntraError(status, code or oauth_error, TRANSIENT_AADSTS, message).body(emulator().clock())
    elif surface is Surface.GRAPH:
        body = {"error": {"code": code or _GRAPH_CODES.get(status, "generalException"), "message": message,
                          "innerError": {"request-id": str(uuid.uuid4()),
                                         "client-request-id": request.headers.get("client-request-id", "")}}}
    elif surface is Surface.INTUNE:
        body = {"code": code or _INTUNE_CODES.get(status, f"Http{status}"), "errorDescription": message}
    else:
        body = {"error": message}
    response = jsonify(body)
    response.status_code = status
    response.headers.update(headers or {})
    return response


def entra_error(exc: EntraError) -> Response:
    response = jsonify(exc.body(emulator().clock()))
    response.status_code = exc.status
    return response


def denied(surface: Surface, exc: AccessDenied) -> Response:
    headers = {"WWW-Authenticate": f'Bearer error="invalid_token", error_description="{exc.reason}"'}
    return error(surface, exc.status, exc.reason, headers=headers if exc.status == 401 else None)


def endpoint(name: str, surface: Surface) -> Callable[[_View], _View]:
    """Count each call of the view as ``name`` and apply the fault injected for it, if any."""

    def decorate(view: _View) -> _View:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            fault = emulator().begin_call(name)
            g.fault = fault
            if fault is not None:
                early = _apply(fault, surface)
                if early is not None:
                    return early
            return view(*args, **kwargs)

        return cast(_View, wrapper)

    return decorate


def injected_code() -> str | None:
    """The Intune code a ``code`` fault makes this call answer."""
    fault: Fault | None = g.get("fault")
    return fault.code if fault is not None else None


def _apply(fault: Fault, surface: Surface) -> Response | None:
    if not (_pause(fault.latency) and _pause(fault.hang or 0)):
        # The server is stopping: answer without touching any state (the client is gone anyway).
        return error(surface, 503, "the emulator is stopping")
    if fault.auth_failure:
        if surface is Surface.ENTRA:
            return entra_error(EntraError(401, "invalid_client", 7000215, "Invalid client secret provided."))
        return denied(surface, AccessDenied(401, "the token was rejected"))
    if fault.status:
        headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else None
        return error(surface, fault.status, f"injected by the emulator: HTTP {fault.status}", headers=headers)
    if fault.malformed_json:
        return Response(MALFORMED_JSON, status=200, mimetype="application/json")
    return None


def _pause(seconds: float) -> bool:
    """Sleep, but wake when the server stops (so stopping never waits for a hang); False if woken."""
    interrupt: threading.Event = current_app.extensions[INTERRUPT_KEY]
    if seconds > 0:
        return not interrupt.wait(seconds)
    return not interrupt.is_set()


def json_body() -> Any:
    """The request's JSON (``None`` when it is not JSON or not sent as ``application/json``)."""
    return request.get_json(silent=True)


def intune_call(api_version: str) -> dict[str, str]:
    """Check the headers every Intune call carries (intune-api.md §4); returns what to record of them.

    The caller has already checked the token. Raises ``BodyError`` (HTTP 400).
    """
    if request.headers.get("api-version") != api_version:
        raise BodyError(f"the api-version header must be {api_version}")
    activity = request.headers.get("client-request-id", "")
    try:
        uuid.UUID(activity)
    except ValueError:
        raise BodyError("the client-request-id header must be a new GUID per call") from None
    user_agent = request.headers.get("UserAgent", "")
    if not user_agent:
        raise BodyError("the UserAgent header must carry PROVIDER_NAME_AND_VERSION")
    return {"clientRequestId": activity, "userAgent": user_agent}


def authorize_intune() -> None:
    """The bearer token must be for the Intune resource and carry scep_challenge_provider."""
    emulator().authorize(request.headers.get("Authorization"), resource="intune", role=INTUNE_ROLE, origin=origin())
