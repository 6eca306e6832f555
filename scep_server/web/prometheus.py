"""/metrics for Prometheus."""

from __future__ import annotations

from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST

from scep_server import metrics

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def metrics_endpoint() -> Response:
    return Response(metrics.render(), content_type=CONTENT_TYPE_LATEST)
