"""Prometheus metrics, aggregated across gunicorn's workers at /metrics.

Under ``scep-server serve`` every worker writes its samples to files in its server instance's own
directory (``PROMETHEUS_MULTIPROC_DIR``, chosen by ``serve.py``), and whichever worker answers /metrics
reads them all. prometheus_client decides once, when it is first imported, whether samples go to such
files or stay in the process's memory. So this module imports it only when a metric is first used:
``Counter``, ``Gauge`` and ``Histogram`` below take prometheus_client's arguments and build the real
metric then. Should something import prometheus_client before :func:`enable_multiprocess` anyway, that
function makes it choose again and rebuilds the metrics already built, so that none is left in memory.

Gauges read from the store (outbox depth, CRL times, ...) are not kept here: they are computed when
/metrics is scraped, as :class:`Reading` values handed to :func:`render`.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client.metrics import Counter as ClientCounter
    from prometheus_client.metrics import Gauge as ClientGauge
    from prometheus_client.metrics import Histogram as ClientHistogram
    from prometheus_client.metrics_core import Metric

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

_BUILD_LOCK = threading.Lock()
log = logging.getLogger(__name__)


class Kind(StrEnum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


@dataclass(frozen=True, slots=True)
class Definition:
    """A metric as defined here, and the sample names it exports (a counter's with ``_total``)."""

    name: str
    kind: Kind
    documentation: str
    labels: tuple[str, ...]

    @property
    def exported(self) -> tuple[str, ...]:
        if self.kind is Kind.COUNTER:
            return (self.name + "_total",)
        if self.kind is Kind.HISTOGRAM:
            return tuple(self.name + suffix for suffix in ("_bucket", "_sum", "_count"))
        return (self.name,)


DEFINITIONS: dict[str, Definition] = {}  # every metric of this module, by name
_LAZY: list[LazyMetric] = []


class LazyMetric:
    """A prometheus_client metric, built on first use (see the module docstring for why)."""

    def __init__(self, definition: Definition, build: Callable[[], Any]) -> None:
        self.definition = definition
        self._build = build
        self._metric: Any = None
        _LAZY.append(self)

    def _built(self) -> Any:
        metric = self._metric
        if metric is None:
            with _BUILD_LOCK:
                if self._metric is None:
                    self._metric = self._build()
                metric = self._metric
        return metric

    def _forget(self) -> Any:
        """The metric built so far (None if none), to be built again on next use."""
        with _BUILD_LOCK:
            metric, self._metric = self._metric, None
        return metric


class LazyCounter(LazyMetric):
    def get(self) -> ClientCounter:
        """The prometheus_client metric itself."""
        metric: ClientCounter = self._built()
        return metric

    def labels(self, *values: str) -> ClientCounter:
        return self.get().labels(*values)

    def inc(self, amount: float = 1) -> None:
        self.get().inc(amount)


class LazyGauge(LazyMetric):
    def get(self) -> ClientGauge:
        """The prometheus_client metric itself."""
        metric: ClientGauge = self._built()
        return metric

    def labels(self, *values: str) -> ClientGauge:
        return self.get().labels(*values)

    def set(self, value: float) -> None:
        self.get().set(value)

    def set_to_current_time(self) -> None:
        self.get().set_to_current_time()


class LazyHistogram(LazyMetric):
    def get(self) -> ClientHistogram:
        """The prometheus_client metric itself."""
        metric: ClientHistogram = self._built()
        return metric

    def labels(self, *values: str) -> ClientHistogram:
        return self.get().labels(*values)

    def observe(self, amount: float) -> None:
        self.get().observe(amount)


def _client() -> Any:
    import prometheus_client

    return prometheus_client


def _define(name: str, kind: Kind, documentation: str, labelnames: Iterable[str]) -> Definition:
    if name in DEFINITIONS:
        raise ValueError(f"metric {name} is defined twice")
    definition = Definition(name, kind, documentation, tuple(labelnames))
    DEFINITIONS[name] = definition
    return definition


def Counter(name: str, documentation: str, labelnames: Iterable[str] = (), **options: Any) -> LazyCounter:
    """prometheus_client's ``Counter``, built on first use."""
    definition = _define(name, Kind.COUNTER, documentation, labelnames)
    return LazyCounter(definition, lambda: _client().Counter(name, documentation, definition.labels, **options))


def Gauge(name: str, documentation: str, labelnames: Iterable[str] = (), **options: Any) -> LazyGauge:
    """prometheus_client's ``Gauge``, built on first use (``multiprocess_mode`` says how workers combine)."""
    definition = _define(name, Kind.GAUGE, documentation, labelnames)
    return LazyGauge(definition, lambda: _client().Gauge(name, documentation, definition.labels, **options))


def Histogram(name: str, documentation: str, labelnames: Iterable[str] = (), **options: Any) -> LazyHistogram:
    """prometheus_client's ``Histogram``, built on first use."""
    definition = _define(name, Kind.HISTOGRAM, documentation, labelnames)
    return LazyHistogram(definition, lambda: _client().Histogram(name, documentation, definition.labels, **options))


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
RA_RENEWALS = Counter(
    "scep_ra_renewals", "Automatic RA renewals by result: renewed, failed", ["result"]
)


ENROLLMENTS = Counter(
    "scep_enrollments", "PKCSReq and RenewalReq answers by profile and outcome: issued (a new certificate), "
    "resent (the transaction's certificate again), pending, failed", ["profile", "outcome"],
)
PKIOPERATION_REJECTED = Counter(
    "scep_pkioperation_rejected", "PKIOperations refused before they were read, by profile and reason: busy "
    "(the profile's max_concurrent_operations were in progress), failure_budget", ["profile", "reason"],
)
PKIOPERATIONS_IN_PROGRESS = Gauge(
    "scep_pkioperations_in_progress", "PKIOperations being answered now, by profile", ["profile"],
    multiprocess_mode="livesum",
)
ENTRA_TOKEN_FAILURES = Counter(
    "scep_entra_token_failures", "Entra ID token requests that failed, by reason", ["reason"]
)
INTUNE_REVOCATION_SYNC_LAST_SUCCESS = Gauge(
    "scep_intune_revocation_sync_last_success_timestamp_seconds",
    "When (Unix time) a round of Intune revocation requests last succeeded in this server instance",
    multiprocess_mode="max",
)


@dataclass(frozen=True, slots=True)
class Reading:
    """One gauge sample computed when /metrics is scraped (not kept by prometheus_client)."""

    name: str
    documentation: str
    value: float
    labels: Mapping[str, str] = field(default_factory=dict)


Readings = Callable[[], Iterable[Reading]]


def enable_multiprocess(directory: str) -> None:
    """Have this process and the workers it forks write their samples to files in ``directory``.

    prometheus_client fixes where samples go when it is imported: were it imported already, the samples
    would stay in each worker's memory and /metrics would answer nothing, so it is made to choose again.
    """
    os.environ[MULTIPROC_DIR_ENV] = directory
    if "prometheus_client" in sys.modules:
        _choose_again()


def _choose_again() -> None:
    from prometheus_client import REGISTRY, values

    log.warning("prometheus_client was imported before its multiprocess directory was set: rebuilding the metrics")
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    for lazy in _LAZY:
        built = lazy._forget()
        if built is not None:
            REGISTRY.unregister(built)


def multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROC_DIR_ENV))


def render(readings: Readings | None = None) -> tuple[bytes, str]:
    """The exposition text and its content type: this process's metrics, or every worker's when
    multiprocess, and the gauges ``readings`` computes now."""
    client = _client()
    sources: list[Any] = [_worker_samples() if multiprocess() else client.REGISTRY]
    if readings is not None:
        sources.append(_ReadingsCollector(readings))
    return client.generate_latest(_Sources(sources)), str(client.CONTENT_TYPE_LATEST)


def worker_exited(pid: int) -> None:
    """gunicorn reaped worker ``pid``: its live gauges stop counting."""
    if multiprocess():
        from prometheus_client import multiprocess as prometheus_multiprocess

        prometheus_multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def _worker_samples() -> Any:
    from prometheus_client import multiprocess as prometheus_multiprocess

    return prometheus_multiprocess.MultiProcessCollector(None)  # type: ignore[no-untyped-call]


class _Sources:
    """The collectors of one scrape, in order (generate_latest only calls ``collect``)."""

    def __init__(self, sources: list[Any]) -> None:
        self._sources = sources

    def collect(self) -> Iterator[Metric]:
        for source in self._sources:
            yield from source.collect()


class _ReadingsCollector:
    """The readings of one scrape as gauge families, one per name."""

    def __init__(self, readings: Readings) -> None:
        self._readings = readings

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        families: dict[str, GaugeMetricFamily] = {}
        for reading in self._readings():
            family = families.get(reading.name)
            if family is None:
                family = GaugeMetricFamily(reading.name, reading.documentation, labels=sorted(reading.labels))
                families[reading.name] = family
            family.add_metric([reading.labels[key] for key in sorted(reading.labels)], reading.value)
        yield from families.values()


# Credential expiry radar (service/expiry.py): the earliest notAfter any live worker sees per credential.
CREDENTIAL_NOT_AFTER = Gauge(
    "scep_credential_not_after_seconds", "Expiry (Unix time) of each credential the server depends on",
    ["credential"], multiprocess_mode="livemin",
)
