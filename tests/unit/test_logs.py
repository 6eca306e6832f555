"""Log sanitising: every record is one line, and the access log carries no query string."""

from __future__ import annotations

import io
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from types import SimpleNamespace

import pytest
from gunicorn.config import Config

from scep_server import cli
from scep_server.logs import EscapingFormatter, escape_controls, escape_handler_output
from scep_server.serve import ACCESS_LOG_FORMAT, ScepLogger, logged_target

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


@pytest.fixture
def gunicorn_logs() -> Iterator[GunicornLogs]:
    """gunicorn's logger as ``serve`` configures it, its streams captured."""
    cfg = Config()
    cfg.set("accesslog", "-")
    cfg.set("errorlog", "-")
    logger = ScepLogger(cfg)
    logs = GunicornLogs(logger, io.StringIO(), io.StringIO())
    for log, stream in ((logger.access_log, logs.access), (logger.error_log, logs.error)):
        (handler,) = [h for h in log.handlers if getattr(h, "_gunicorn", False)]
        handler.setStream(stream)
    yield logs
    for log in (logger.error_log, logger.access_log):
        for handler in list(log.handlers):
            log.removeHandler(handler)


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
