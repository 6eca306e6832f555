"""/metrics for Prometheus: every worker's metrics (see :mod:`scep_server.metrics`) and the gauges read
from the store and the CA directory when it is scraped (:mod:`.status_metrics`)."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Blueprint, Response, current_app

from scep_server import metrics
from scep_server.runtime import Runtime
from scep_server.service.status import OperationalStatus
from scep_server.web.context import runtime
from scep_server.web.status_metrics import readings

__all__ = ["STATUS_EXTENSION", "bp", "operational_status", "publish_expiry"]

bp = Blueprint("metrics", __name__)

STATUS_EXTENSION = "scep_server.operational_status"  # app.extensions key of the issuing generation's status


@bp.get("/metrics")
def metrics_endpoint() -> Response:
    publish_expiry(runtime())  # the RA's after a rotation: every worker follows the keyring on disk
    current = readings(operational_status().current(), runtime().config)
    body, content_type = metrics.render(lambda: current)
    return Response(body, content_type=content_type)


@dataclass(frozen=True, slots=True)
class _GenerationStatus:
    label: str
    status: OperationalStatus


def operational_status() -> OperationalStatus:
    """The OperationalStatus of the issuing generation (its newest CRL, its OCSP responder), made the
    first time a scrape finds it issuing: after an activation the gauges describe the CA that issues."""
    current = runtime()
    active = current.authority.generations().active
    kept = current_app.extensions.get(STATUS_EXTENSION)
    if isinstance(kept, _GenerationStatus) and kept.label == active.label:
        return kept.status
    status = OperationalStatus(current.store, issuer=active.ca.issuer_name, ca_dir=active.directory)
    current_app.extensions[STATUS_EXTENSION] = _GenerationStatus(active.label, status)
    return status


def publish_expiry(current: Runtime) -> None:
    """The CA's and the current RA's notAfter as ``scep_ca_certificate_not_after_seconds``."""
    ca = current.ca
    metrics.CA_EXPIRY.labels("ca").set(ca.ca_cert.not_valid_after_utc.timestamp())
    metrics.CA_EXPIRY.labels("ra").set(ca.ra_cert.not_valid_after_utc.timestamp())
