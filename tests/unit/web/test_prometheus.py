"""The metrics module (lazy prometheus_client, scrape-time readings) and the deploy/ files that query its names."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from scep_server import metrics
from scep_server.metrics import Definition, Kind, Reading
from scep_server.web.status_metrics import GAUGES

REPO = Path(__file__).resolve().parents[3]
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "scep-server.json"
# Labels Prometheus adds to every scraped series, and a histogram's bucket label.
SCRAPE_LABELS = frozenset({"job", "instance", "le"})
_NAME = re.compile(r"\b(scep_[a-z0-9_]+)\b")
_SELECTOR = re.compile(r"\b(scep_[a-z0-9_]+)\{([^}]*)\}")
_MATCHER = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")


def exported() -> dict[str, frozenset[str]]:
    """Every sample name the server exports, with its label names."""
    names: dict[str, frozenset[str]] = {}
    for definition in metrics.DEFINITIONS.values():
        extra = {"le"} if definition.kind is Kind.HISTOGRAM else set()
        for name in definition.exported:
            names[name] = frozenset(definition.labels) | extra
    names.update({name: frozenset() for name in GAUGES})
    return names


def problems(expr: str) -> list[str]:
    """What in ``expr`` names a metric, or a label of one, that the server does not export."""
    known = exported()
    used = set(_NAME.findall(expr))
    found = [f"unknown metric {name}" for name in sorted(used - set(known))]
    for name, matchers in _SELECTOR.findall(expr):
        labels = set(_MATCHER.findall(matchers))
        found += [f"{name} has no label {label}" for label in sorted(labels - known.get(name, frozenset()))]
    labels_in_expr = set().union(*(known.get(name, frozenset()) for name in used)) | SCRAPE_LABELS
    for grouping in _GROUPING.findall(expr):
        grouped = {label.strip() for label in grouping.split(",") if label.strip()}
        found += [f"grouping by unknown label {label}" for label in sorted(grouped - labels_in_expr)]
    return found


def test_the_problem_finder_finds_problems() -> None:
    assert problems('sum by (profile) (rate(scep_enrollments_total{outcome="issued"}[5m]))') == []
    assert problems("scep_enrollments") == ["unknown metric scep_enrollments"]
    assert problems('scep_enrollments_total{reason="x"}') == ["scep_enrollments_total has no label reason"]
    assert problems("sum by (operation) (scep_crl_age_seconds)") == ["grouping by unknown label operation"]


def _rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def test_every_alert_queries_metrics_the_server_exports() -> None:
    rules = _rules()
    assert len(rules) >= 10
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert rule["labels"]["severity"] in ("warning", "critical"), rule
        assert rule["annotations"]["summary"], rule
        assert _NAME.search(rule["expr"]), rule
        assert problems(rule["expr"]) == [], (rule["alert"], problems(rule["expr"]))


def test_the_alerts_cover_expiry_intune_the_outbox_and_the_revocation_sync() -> None:
    queried = " ".join(rule["expr"] for rule in _rules())
    for name in ("scep_ca_certificate_not_after_seconds", "scep_credential_not_after_seconds",
                 "scep_ocsp_responder_not_after_seconds", "scep_intune_calls_total", "scep_intune_outbox_dead",
                 "scep_intune_revocation_sync_last_success_timestamp_seconds", "scep_entra_token_failures_total",
                 "scep_crl_next_update_timestamp_seconds", "scep_store_up"):
        assert name in queried, name


def _strings(node: Any, key: str) -> Iterator[str]:
    if isinstance(node, dict):
        for name, value in node.items():
            if name == key and isinstance(value, str):
                yield value
            yield from _strings(value, key)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item, key)


def test_the_dashboard_queries_only_metrics_the_server_exports() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    queries = [*_strings(dashboard["panels"], "expr"), *_strings(dashboard["templating"], "definition")]
    assert len(queries) >= 20
    for query in queries:
        assert problems(query) == [], (query, problems(query))
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_the_scrape_time_gauges_do_not_clash_with_the_kept_metrics() -> None:
    assert not set(GAUGES) & {name for d in metrics.DEFINITIONS.values() for name in (d.name, *d.exported)}


def test_a_metric_name_is_defined_once() -> None:
    with pytest.raises(ValueError, match="defined twice"):
        metrics.Counter("scep_requests", "again")


def test_definitions_name_what_prometheus_exports() -> None:
    assert Definition("a", Kind.COUNTER, "", ()).exported == ("a_total",)
    assert Definition("h", Kind.HISTOGRAM, "", ()).exported == ("h_bucket", "h_sum", "h_count")
    assert Definition("g", Kind.GAUGE, "", ()).exported == ("g",)


def test_render_adds_the_readings_as_gauges() -> None:
    metrics.ENROLLMENTS.labels("render-test", "issued").inc()
    readings = [Reading("scep_test_reading", "a reading", 3.0), Reading("scep_test_labelled", "labelled", 1.5,
                                                                          {"kind": "x"})]
    body, content_type = metrics.render(lambda: readings)
    assert content_type.startswith("text/plain")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(body.decode()) for s in family.samples}
    assert samples[("scep_test_reading", ())] == 3.0
    assert samples[("scep_test_labelled", (("kind", "x"),))] == 1.5
    assert samples[("scep_enrollments_total", (("outcome", "issued"), ("profile", "render-test")))] >= 1
    assert "# TYPE scep_test_reading gauge" in body.decode()


def test_metrics_built_before_the_multiprocess_directory_are_rebuilt_into_it(tmp_path: Path) -> None:
    # A process that used a metric (so imported prometheus_client) before serve() chose the directory.
    program = (
        "import sys\n"
        "from scep_server import metrics\n"
        "metrics.ENROLLMENTS.labels('early', 'issued').inc()\n"
        "metrics.enable_multiprocess(sys.argv[1])\n"
        "metrics.ENROLLMENTS.labels('late', 'issued').inc(2)\n"
        "print(metrics.render()[0].decode())\n"
    )
    done = subprocess.run([sys.executable, "-c", program, str(tmp_path)], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "rebuilding the metrics" in done.stderr
    samples = {(s.name, s.labels.get("profile")): s.value
               for family in text_string_to_metric_families(done.stdout) for s in family.samples}
    assert samples[("scep_enrollments_total", "late")] == 2
    assert ("scep_enrollments_total", "early") not in samples  # counted in memory, before the directory
    assert list(tmp_path.glob("counter_*.db"))


def test_the_serving_process_does_not_import_prometheus_client_before_the_metrics_directory() -> None:
    # What `scep-server serve` imports before serve() sets the multiprocess directory: the CLI, the
    # runtime it builds, the launcher, and the web app the workers load.
    program = (
        "import sys\n"
        "import scep_server.cli, scep_server.cli.serve, scep_server.runtime, scep_server.serve, scep_server.web\n"
        "from scep_server import metrics\n"
        "assert metrics.ENROLLMENTS.definition.name == 'scep_enrollments'\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'prometheus_client'))\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
