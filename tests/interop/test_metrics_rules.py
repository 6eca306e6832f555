"""deploy/prometheus/alerts.yml loads in Prometheus's own checker, and its unit tests (alerts_test.yml) pass:
each alert fires on what it describes and stays quiet otherwise. promtool comes from Debian's prometheus
package (.ci/install-deps.sh). That the rules and the Grafana dashboard query only metrics the server
exports is checked in tests/unit/web/test_prometheus.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.env import require_tool

pytestmark = pytest.mark.interop

RULES_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_tool("promtool"), *args], cwd=RULES_DIR, capture_output=True, text=True,
                          timeout=120)


def test_promtool_accepts_the_alert_rules() -> None:
    done = _promtool("check", "rules", "alerts.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_the_alert_rules_pass_their_unit_tests() -> None:
    done = _promtool("test", "rules", "alerts_test.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_would_catch_a_broken_rule(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("groups:\n  - name: x\n    rules:\n      - alert: X\n        expr: sum by (job (up)\n")
    done = _promtool("check", "rules", str(broken))
    assert done.returncode != 0
