"""Liveness and readiness.

``/livez``: the process answers (nothing else is looked at). ``/readyz``: every readiness check passes
(:mod:`scep_server.service.readiness`), 200 or 503 with the checks as JSON. ``/healthz`` keeps its old
meaning, the store answers, so that existing probes and scripts see no change.

The app's :class:`~scep_server.service.readiness.Readiness` is built when the blueprint is registered;
the expiry radar is surveyed then too (the credentials read locally), so that the gauges are set and
a credential near its end is logged at startup.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify
from flask.blueprints import BlueprintSetupState

from scep_server.runtime import Runtime
from scep_server.service.readiness import Readiness
from scep_server.web.context import RUNTIME_EXTENSION, runtime

bp = Blueprint("health", __name__)

READINESS_EXTENSION = "scep_server.readiness"  # app.extensions key of the Readiness


@bp.record_once
def _build_readiness(state: BlueprintSetupState) -> None:
    current = state.app.extensions[RUNTIME_EXTENSION]
    if not isinstance(current, Runtime):
        raise TypeError(f"app.extensions[{RUNTIME_EXTENSION!r}] is not a Runtime")
    readiness = Readiness.of_server(current.config, current.ca, current.store, current.crls)
    readiness.radar.survey(local_only=True)  # no Graph call at startup: only probes and the task ask
    state.app.extensions[READINESS_EXTENSION] = readiness


def readiness() -> Readiness:
    value = current_app.extensions[READINESS_EXTENSION]
    if not isinstance(value, Readiness):
        raise TypeError(f"app.extensions[{READINESS_EXTENSION!r}] is not a Readiness")
    return value


@bp.get("/livez")
def livez() -> Response:
    return Response("ok\n", mimetype="text/plain")


@bp.get("/readyz")
def readyz() -> Response:
    """200 when every check passes, else 503; the body lists each check as {name, ok, detail}."""
    report = readiness().report()
    response = jsonify(report.to_json())
    response.status_code = 200 if report.ready else 503
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/healthz")
def healthz() -> Response:
    """Ready when the store answers (the original meaning; /readyz checks everything)."""
    if runtime().store.ping():
        return Response("ok\n", mimetype="text/plain")
    return Response("store unavailable\n", status=503, mimetype="text/plain")
