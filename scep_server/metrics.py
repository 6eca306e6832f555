"""Prometheus metrics. Under gunicorn the serve command sets PROMETHEUS_MULTIPROC_DIR so that every
worker's samples are aggregated at /metrics."""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as prometheus_multiprocess

SCEP_REQUESTS = Counter(
    "scep_requests", "SCEP HTTP requests by operation and result", ["profile", "operation", "result"]
)
PKI_OPERATIONS = Counter(
    "scep_pki_operations", "PKIOperation outcomes by message type", ["profile", "message_type", "outcome"]
)
PKI_OPERATION_SECONDS = Histogram(
    "scep_pki_operation_seconds", "Time to answer one PKIOperation", ["profile"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CERTIFICATES_ISSUED = Counter("scep_certificates_issued", "Certificates issued", ["profile"])
INTUNE_CALLS = Counter(
    "scep_intune_calls", "Calls to Graph and Intune by operation and HTTP status", ["operation", "status"]
)
INTUNE_CALL_SECONDS = Histogram(
    "scep_intune_call_seconds", "Duration of one call to Graph or Intune (one attempt)", ["operation"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
CA_EXPIRY = Gauge(
    "scep_ca_certificate_not_after_seconds", "Expiry (Unix time) of the CA and RA certificates", ["certificate"],
    multiprocess_mode="max",
)


def render() -> bytes:
    """The exposition text for this process, or for all gunicorn workers when multiprocess."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest()


def worker_exited(pid: int) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        prometheus_multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
