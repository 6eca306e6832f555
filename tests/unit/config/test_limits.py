"""The ``limits`` section: defaults, validation, the example config, and what reaches the worker."""

from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path

import pytest
import yaml

from scep_server.config import LimitsConfig, load_config
from scep_server.errors import ConfigError
from scep_server.web.request_buffer import Limits
from scep_server.web.worker import BufferingThreadWorker

EXAMPLE = Path(__file__).parents[3] / "config" / "example.yaml"


def _load(tmp_path: Path, text: str) -> LimitsConfig:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return load_config(path, env={}).limits


def test_defaults() -> None:
    limits = load_config(None, env={}).limits
    assert limits == LimitsConfig()
    assert (limits.request_line_bytes, limits.header_timeout_seconds, limits.body_timeout_seconds) == (8190, 10.0, 30.0)


def test_a_limits_section(tmp_path: Path) -> None:
    limits = _load(tmp_path, "limits:\n  request_line_bytes: 4096\n  header_timeout_seconds: 2.5\n")
    assert limits.request_line_bytes == 4096 and limits.header_timeout_seconds == 2.5
    assert limits.body_timeout_seconds == LimitsConfig().body_timeout_seconds


@pytest.mark.parametrize(("line", "message"), [
    ("request_line_bytes: 8191", "limits.request_line_bytes must be an integer from 1024 to 8190"),
    ("request_line_bytes: 2048.5", "limits.request_line_bytes must be an integer"),
    ("header_fields: 0", "limits.header_fields must be an integer from 1 to 1000"),
    ("header_timeout_seconds: 0", "limits.header_timeout_seconds must be a number from 0.5 to 600"),
    ("body_timeout_seconds: '30'", "limits.body_timeout_seconds must be a number"),
    ("connections_per_worker: true", "limits.connections_per_worker must be an integer"),
    ("max_requests: 5", "unknown key limits.max_requests"),
])  # fmt: skip
def test_bad_limits_are_refused(tmp_path: Path, line: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _load(tmp_path, f"limits:\n  {line}\n")


def test_limits_are_not_taken_from_the_environment() -> None:
    assert load_config(None, env={"SCEP_SERVER_LIMITS": "x"}).limits == LimitsConfig()


def test_the_example_config_lists_every_limit_with_its_default() -> None:
    example = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))["limits"]
    assert example == asdict(LimitsConfig())
    assert set(example) == {f.name for f in fields(LimitsConfig)}


def test_the_worker_gets_the_limits_and_max_body_bytes(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("max_body_bytes: 65536\nlimits:\n  header_fields: 20\n  body_timeout_seconds: 12\n")
    worker = BufferingThreadWorker.configured(load_config(path, env={}))
    assert worker.limits == Limits(request_line_bytes=8190, header_fields=20, header_field_bytes=8190,
                                   body_bytes=65536)
    assert (worker.header_timeout, worker.body_timeout) == (10.0, 12.0)
    assert worker.__name__ == "BufferingThreadWorker" and issubclass(worker, BufferingThreadWorker)
    # The bare class (as gunicorn would load it by name) has the defaults.
    assert BufferingThreadWorker.limits.request_line_bytes == LimitsConfig().request_line_bytes
