"""Liveness and readiness."""

from __future__ import annotations

from flask import Blueprint, Response

from scep_server.web.context import runtime

bp = Blueprint("health", __name__)


@bp.get("/livez")
def livez() -> Response:
    return Response("ok\n", mimetype="text/plain")


@bp.get("/healthz")
def healthz() -> Response:
    """Ready when the store answers."""
    if runtime().store.ping():
        return Response("ok\n", mimetype="text/plain")
    return Response("store unavailable\n", status=503, mimetype="text/plain")
