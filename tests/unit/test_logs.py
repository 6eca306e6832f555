"""Log sanitising: every record is one line, and the access log carries no query string; JSON lines and the
request context fields."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from gunicorn.config import Config

from scep_server import cli, logs
from scep_server.logs import EscapingFormatter, JsonFormatter, escape_controls, escape_handler_output
from scep_server.serve import ACCESS_FIELDS, ACCESS_LOG_FORMAT, ScepLogger, logged_target
from scep_server.web.request_ids import ENVIRON_KEY

FORGED = "\r\n2030-01-01 00:00:00,000 INFO scep_server.service.enrollment [1] PKIOperation SUCCESS forged"


@pytest.mark.parametrize(("raw", "escaped"), [
    ("plain text, quotes \" and \\ stay", "plain text, quotes \" and \\ stay"),
    ("a\r\nb\tc", "a\\r\\nb\\tc"),
    ("\x00\x1b[31m\x7f", "\\x00\\x1b[31m\\x7f"),
    ("nel\x85 csi\x9b", "nel\\x85 csi\\x9b"),
    ("ls\u2028ps\u2029", "ls\\u2028ps\\u2029"),
    ("caf\u00e9 \u20ac", "caf\u00e9 \u20ac"),
])  # fmt: skip
def test_escape_controls(raw: str, escaped: str) -> None:
    assert escape_controls(raw) == escaped


def _record(msg: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("bad\nvalue")
        except ValueError:
            exc_info = sys.exc_info()
    return logging.LogRecord("scep_server.test", logging.WARNING, __file__, 1, msg, args, exc_info)


def test_the_formatter_escapes_arguments_and_tracebacks() -> None:
    formatter = EscapingFormatter("%(levelname)s %(message)s")
    text = formatter.format(_record("transaction=%s", FORGED, exc=True))
    assert "\n" not in text and "\r" not in text
    assert text.startswith("WARNING transaction=\\r\\n2030-01-01")
    assert "Traceback (most recent call last):\\n" in text and "ValueError: bad\\nvalue" in text


def test_wrapping_a_handler_keeps_its_format_and_is_idempotent() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("[%(name)s] %(message)s"))
    escape_handler_output(handler)
    wrapped = handler.formatter
    escape_handler_output(handler)
    assert handler.formatter is wrapped
    handler.emit(_record("id=%s", "x\ny"))
    assert stream.getvalue() == "[scep_server.test] id=x\\ny\n"


@contextmanager
def bare_root(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """The root logger without handlers, as the CLI starts, and stderr in a buffer; restored afterwards."""
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    root.handlers = []
    try:
        yield stderr
    finally:
        root.handlers, root.level = saved, level


def test_the_cli_logging_setup_escapes_every_logger(monkeypatch: pytest.MonkeyPatch) -> None:
    with bare_root(monkeypatch) as stderr:
        cli.configure_logging("INFO")
        logging.getLogger("scep_server.service.enrollment").info("PKIOperation FAILURE transaction=%s", FORGED)
        logging.getLogger("some.library").warning("raw %s", "\x1b]0;title\x07")
    lines = stderr.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("transaction=\\r\\n2030-01-01 00:00:00,000 INFO scep_server.service.enrollment [1] "
                             "PKIOperation SUCCESS forged")
    assert lines[1].endswith("raw \\x1b]0;title\\x07")


# --------------------------------------------------------------------------------------------- gunicorn


@dataclass
class GunicornLogs:
    logger: ScepLogger
    access: io.StringIO
    error: io.StringIO


@contextmanager
def captured_gunicorn(logger_class: type[ScepLogger]) -> Iterator[GunicornLogs]:
    cfg = Config()
    cfg.set("accesslog", "-")
    cfg.set("errorlog", "-")
    logger = logger_class(cfg)
    captured = GunicornLogs(logger, io.StringIO(), io.StringIO())
    for log, stream in ((logger.access_log, captured.access), (logger.error_log, captured.error)):
        (handler,) = [h for h in log.handlers if getattr(h, "_gunicorn", False)]
        handler.setStream(stream)
    yield captured
    for log in (logger.error_log, logger.access_log):
        for handler in list(log.handlers):
            log.removeHandler(handler)


@pytest.fixture
def gunicorn_logs() -> Iterator[GunicornLogs]:
    """gunicorn's logger as ``serve`` configures it, its streams captured."""
    with captured_gunicorn(ScepLogger) as captured:
        yield captured


@pytest.fixture
def json_gunicorn_logs() -> Iterator[GunicornLogs]:
    """gunicorn's logger as ``serve`` configures it with ``log_format: json``."""
    with captured_gunicorn(ScepLogger.configured("json")) as captured:
        yield captured


def _access(logger: ScepLogger, raw_uri: str, **environ: str) -> None:
    path, _, query = raw_uri.partition("?")
    env = {
        "REQUEST_METHOD": "GET", "RAW_URI": raw_uri, "PATH_INFO": path, "QUERY_STRING": query,
        "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "192.0.2.7", **environ,
    }  # fmt: skip
    response = SimpleNamespace(status="200 OK", headers=[], sent=42)
    logger.access(response, SimpleNamespace(headers=[]), env, timedelta(milliseconds=3))


def test_the_access_log_keeps_only_the_operation_of_the_query(gunicorn_logs: GunicornLogs) -> None:
    message = "MIIKpgYJKoZIhvcNAQcCoIIKlzCCCpMCAQExDzANBglghkgBZQMEAgEFADCCA"
    _access(gunicorn_logs.logger, f"/scep?operation=PKIOperation&message={message}", HTTP_USER_AGENT="certmonger")
    _access(gunicorn_logs.logger, f"/scep/corp?message={message}&operation=GetCACert")
    _access(gunicorn_logs.logger, f"/livez?message={message}")
    lines = gunicorn_logs.access.getvalue().splitlines()
    assert len(lines) == 3 and not any(message[:16] in line or "message=" in line for line in lines)
    assert '"GET /scep?operation=PKIOperation HTTP/1.1" 200 42 "-" "certmonger"' in lines[0]
    assert '"GET /scep/corp?operation=GetCACert HTTP/1.1"' in lines[1]
    assert '"GET /livez HTTP/1.1"' in lines[2]


def test_the_access_log_escapes_and_clips_header_fields(gunicorn_logs: GunicornLogs) -> None:
    _access(gunicorn_logs.logger, "/scep?operation=GetCACaps", HTTP_USER_AGENT="agent" + FORGED,
            HTTP_REFERER="r" * 5000)
    (line,) = gunicorn_logs.access.getvalue().splitlines()
    assert '"agent\\r\\n2030-01-01' in line and "SUCCESS forged" in line
    assert '"' + "r" * 256 + '..."' in line and "r" * 257 not in line


def test_gunicorn_error_log_lines_are_escaped(gunicorn_logs: GunicornLogs) -> None:
    gunicorn_logs.logger.warning("Invalid request from ip=%s: %s", "192.0.2.7", "GET /\x1b[2J" + FORGED)
    (line,) = gunicorn_logs.error.getvalue().splitlines()
    assert "[WARNING] Invalid request from ip=192.0.2.7: GET /\\x1b[2J\\r\\n2030" in line


@pytest.mark.parametrize(("raw_uri", "query", "logged"), [
    ("/scep?operation=GetCACaps", "operation=GetCACaps", "/scep?operation=GetCACaps"),
    ("/scep?message=abc&operation=PKIOperation", "message=abc&operation=PKIOperation", "/scep?operation=PKIOperation"),
    ("/scep?xoperation=GetCACaps", "xoperation=GetCACaps", "/scep"),
    ("/p" * 200 + "?operation=x", "operation=x", "/p" * 128 + "...?operation=x"),
    ("/scep?operation=" + "o" * 100, "operation=" + "o" * 100, "/scep?operation=" + "o" * 64),
])  # fmt: skip
def test_logged_target(raw_uri: str, query: str, logged: str) -> None:
    assert logged_target(raw_uri, query) == logged


def test_the_access_atoms_are_the_fields_of_the_access_log_format(gunicorn_logs: GunicornLogs) -> None:
    env = {"REQUEST_METHOD": "POST", "RAW_URI": "/ocsp", "QUERY_STRING": "", "SERVER_PROTOCOL": "HTTP/1.1",
           "REMOTE_ADDR": "192.0.2.9", "HTTP_USER_AGENT": "openssl"}
    response = SimpleNamespace(status="200 OK", headers=[("Content-Type", "application/ocsp-response")], sent=0)
    atoms = gunicorn_logs.logger.atoms(response, SimpleNamespace(headers=[]), env, timedelta(milliseconds=1))
    assert set(re.findall(r"%\((\w+)\)s", ACCESS_LOG_FORMAT)) == set(atoms)
    assert (atoms["s"], atoms["b"], atoms["r"], atoms["a"]) == ("200", "0", "POST /ocsp HTTP/1.1", "openssl")


def test_the_json_access_line_has_the_request_fields_and_no_query(json_gunicorn_logs: GunicornLogs) -> None:
    message = "MIIKpgYJKoZIhvcNAQcCoIIKlzCCCpMCAQExDzANBglghkgBZQMEAgEFADCCA"
    _access(json_gunicorn_logs.logger, f"/scep/corp?operation=PKIOperation&message={message}",
            HTTP_USER_AGENT="agent" + FORGED, **{ENVIRON_KEY: "req-7"})
    (line,) = json_gunicorn_logs.access.getvalue().splitlines()
    assert message[:16] not in line and "message=" not in line
    entry = json.loads(line)
    assert set(ACCESS_FIELDS) <= set(entry)
    assert (entry["logger"], entry["level"], entry["request_id"]) == ("gunicorn.access", "INFO", "req-7")
    assert (entry["method"], entry["path"], entry["status"], entry["bytes"]) == (
        "GET", "/scep/corp?operation=PKIOperation", 200, 42)
    assert entry["duration_ms"] == 3.0 and entry["remote_addr"] == "192.0.2.7"
    assert entry["user_agent"].startswith("agent\\r\\n2030-01-01")
    assert entry["message"] == '"GET /scep/corp?operation=PKIOperation HTTP/1.1" 200'


def test_the_json_error_log_is_json(json_gunicorn_logs: GunicornLogs) -> None:
    with logs.log_context(request_id="abc"):
        json_gunicorn_logs.logger.warning("Invalid request from ip=%s: %s", "192.0.2.7", "GET /\x1b[2J" + FORGED)
    (line,) = json_gunicorn_logs.error.getvalue().splitlines()
    entry = json.loads(line)
    assert (entry["logger"], entry["level"], entry["request_id"]) == ("gunicorn.error", "WARNING", "abc")
    assert entry["message"].startswith("Invalid request from ip=192.0.2.7: GET /\\x1b[2J\\r\\n2030")


def test_an_unknown_log_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log format"):
        ScepLogger.configured("xml")
    with pytest.raises(ValueError, match="log format"):
        logs.formatter_for("yaml")


# --------------------------------------------------------------------------------------------- JSON lines


def _json(record: logging.LogRecord, formatter: logging.Formatter | None = None) -> dict[str, Any]:
    logs.ContextFilter().filter(record)
    text = (formatter or JsonFormatter()).format(record)
    assert "\n" not in text and "\r" not in text
    entry: dict[str, Any] = json.loads(text)
    return entry


def test_a_json_record_has_time_level_logger_message_and_process() -> None:
    record = _record("transaction=%s", FORGED)
    record.created = 1_700_000_000.25
    entry = _json(record)
    assert entry == {
        "time": "2023-11-14T22:13:20.250Z", "level": "WARNING", "logger": "scep_server.test",
        "message": "transaction=\\r\\n2030-01-01 00:00:00,000 INFO scep_server.service.enrollment [1] "
                   "PKIOperation SUCCESS forged",
        "process": record.process,
    }


def test_a_json_record_escapes_every_control_character_and_keeps_the_rest() -> None:
    entry = _json(_record("%s", "\x1b[31m\x7f\x85\u2028 caf\u00e9 \"quoted\" back\\slash"))
    assert entry["message"] == "\\x1b[31m\\x7f\\x85\\u2028 caf\u00e9 \"quoted\" back\\slash"


def test_a_json_record_carries_its_traceback_escaped() -> None:
    entry = _json(_record("failed", exc=True))
    assert entry["exception"].startswith("Traceback (most recent call last):\\n")
    assert entry["exception"].endswith("ValueError: bad\\nvalue")


def test_the_context_fields_are_added_and_extra_wins() -> None:
    with logs.log_context(request_id="r1", profile="corp"), logs.log_context(transaction_id="t\n1"):
        entry = _json(_record("inside"))
        explicit = _record("explicit")
        explicit.profile = "other"
        overridden = _json(explicit)
    assert (entry["request_id"], entry["profile"], entry["transaction_id"]) == ("r1", "corp", "t\\n1")
    assert "activity_id" not in entry
    assert overridden["profile"] == "other" and overridden["request_id"] == "r1"
    assert not any(key in _json(_record("outside")) for key in logs.CONTEXT_FIELDS)


def test_unknown_context_fields_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown log context fields: password"):
        logs.bind(password="x")


def test_each_thread_has_its_own_context() -> None:
    seen: dict[str, str | None] = {}
    inside, leave = threading.Event(), threading.Event()

    def request(name: str) -> None:
        token = logs.fresh_context(request_id=name)
        inside.set()
        leave.wait(5)
        seen[name] = logs.current_context().get("request_id")
        logs.unbind(token)

    with logs.log_context(request_id="main"):
        worker = threading.Thread(target=request, args=("in-thread",))
        worker.start()
        inside.wait(5)
        assert logs.current_context()["request_id"] == "main"
        leave.set()
        worker.join(5)
    assert seen == {"in-thread": "in-thread"}
    assert logs.current_context() == {}


def test_a_fresh_context_drops_what_was_bound_before() -> None:
    with logs.log_context(profile="left-over"):
        token = logs.fresh_context(request_id="new")
        assert dict(logs.current_context()) == {"request_id": "new"}
        logs.unbind(token)
        assert dict(logs.current_context()) == {"profile": "left-over"}


def test_configure_logging_json_writes_json_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    with bare_root(monkeypatch) as stderr:
        logs.configure_logging("info", "json")
        with logs.log_context(request_id="cli"):
            logging.getLogger("scep_server.cli").info("serving %s", "x\ny")
        logging.getLogger("alembic.runtime").info("not shown: alembic logs warnings only")
    (line,) = stderr.getvalue().splitlines()
    entry = json.loads(line)
    assert (entry["logger"], entry["message"], entry["request_id"]) == ("scep_server.cli", "serving x\\ny", "cli")


def test_configure_logging_again_replaces_its_handler_only(monkeypatch: pytest.MonkeyPatch) -> None:
    with bare_root(monkeypatch) as stderr:
        other = logging.NullHandler()
        logging.getLogger().addHandler(other)
        logs.configure_logging("INFO", "text")
        logs.configure_logging("WARNING", "json")
        root = logging.getLogger()
        assert other in root.handlers and len(root.handlers) == 2 and root.level == logging.WARNING
        logging.getLogger("scep_server.x").warning("once")
    (line,) = stderr.getvalue().splitlines()
    assert json.loads(line)["message"] == "once"


def test_configure_logging_text_is_the_cli_format_escaped(monkeypatch: pytest.MonkeyPatch) -> None:
    with bare_root(monkeypatch) as stderr:
        logs.configure_logging("INFO")
        with logs.log_context(request_id="r"):
            logging.getLogger("scep_server.service.enrollment").info("PKIOperation transaction=%s", FORGED)
    (line,) = stderr.getvalue().splitlines()
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO scep_server.service.enrollment \[\d+\] "
                    r"PKIOperation transaction=\\r\\n2030-01-01", line), line


def test_use_format_turns_an_existing_handler_into_json_once() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logs.use_format(handler, "json")
    formatter = handler.formatter
    logs.use_format(handler, "json")
    assert handler.formatter is formatter and len(handler.filters) == 1
    with logs.log_context(profile="p"):
        handler.handle(_record("hello"))
    assert json.loads(stream.getvalue())["profile"] == "p"
