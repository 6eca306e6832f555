"""Liveness and readiness.

``/livez``: the process answers (nothing else is looked at). ``/readyz``: every readiness check passes
(:mod:`scep_server.service.readiness`), 200 or 503 with the checks as JSON. ``/healthz`` keeps its old
meaning, the store answers, so that existing probes and scripts see no change.

The process's :class:`~scep_server.service.readiness.Readiness` is built with its runtime, which also
surveys the expiry radar at start (the credentials read locally) and then hourly in the background.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from scep_server.service.readiness import Readiness
from scep_server.web.context import runtime

bp = Blueprint("health", __name__)

def readiness() -> Readiness:
    return runtime().readiness


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
