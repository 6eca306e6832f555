"""One log record, one line: control characters in formatted records are escaped; text or JSON lines.

``configure_logging(level, log_format)`` sets the server's logging up: ``text`` (``TEXT_FORMAT``) or
``json`` (one object per line, :class:`JsonFormatter`), both with the request's context fields
(request id, profile, transactionID, Intune activity id: :func:`log_context`) on every record.

Log messages carry attacker-chosen text (a SCEP transactionID, a request path, a User-Agent).
A CR or LF in it would end the line and let the rest pose as a record of its own; ESC sequences
would drive the terminal of whoever tails the log. Escaping at the formatter, after the record is
fully formatted (message, arguments, traceback), covers every logger whatever the calling code
does. Only the handler's own terminator, appended after formatting, still ends the line.

Backslashes are left alone: ``\\n`` in the output is either an escaped LF or two literal
characters, neither of which starts a new line.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from types import MappingProxyType

# C0 (TAB, LF, CR and ESC included), DEL, C1 (NEL included), and the two Unicode separators that
# str.splitlines() and some log viewers treat as line breaks.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def escape_controls(text: str) -> str:
    """``text`` with each control character written as ``\\n``, ``\\r``, ``\\t``, ``\\xNN`` or ``\\uNNNN``."""
    return _CONTROL.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


class EscapingFormatter(logging.Formatter):
    """Formats like ``inner`` (or like a plain ``logging.Formatter`` with the given format), then escapes."""

    def __init__(
        self, fmt: str | None = None, datefmt: str | None = None, *, inner: logging.Formatter | None = None
    ) -> None:
        super().__init__(fmt, datefmt)
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        text = self.inner.format(record) if self.inner is not None else super().format(record)
        return escape_controls(text)


def escape_handler_output(handler: logging.Handler) -> None:
    """Make ``handler`` escape control characters in what it writes, keeping its format (idempotent)."""
    if isinstance(handler.formatter, EscapingFormatter):
        return
    handler.setFormatter(EscapingFormatter(inner=handler.formatter or logging.Formatter()))


def escape_logger_output(logger: logging.Logger) -> None:
    """``escape_handler_output`` for every handler attached to ``logger`` itself."""
    for handler in logger.handlers:
        escape_handler_output(handler)


# --- request context -------------------------------------------------------------------------------
#
# What a record is about (the HTTP request, its profile and SCEP transaction, the Intune call) rides in
# one context variable: each gunicorn thread, and each background thread, has a context of its own, so
# one request's fields never show up in another's records. The web layer binds them per request and
# resets them when the response is done; code below it binds what only it knows (a transactionID, an
# Intune activity id) with :func:`log_context`.

CONTEXT_FIELDS = ("request_id", "profile", "transaction_id", "activity_id")
_CONTEXT: ContextVar[Mapping[str, str]] = ContextVar("scep_server_log_context", default=MappingProxyType({}))


def current_context() -> Mapping[str, str]:
    """The fields bound in this thread's context now."""
    return _CONTEXT.get()


def bind(**fields: str | None) -> Token[Mapping[str, str]]:
    """Add ``fields`` (``CONTEXT_FIELDS`` only; None leaves a field out) to this context's records."""
    unknown = set(fields) - set(CONTEXT_FIELDS)
    if unknown:
        raise ValueError(f"unknown log context fields: {', '.join(sorted(unknown))}")
    merged = {**_CONTEXT.get(), **{key: value for key, value in fields.items() if value is not None}}
    return _CONTEXT.set(MappingProxyType(merged))


def fresh_context(**fields: str | None) -> Token[Mapping[str, str]]:
    """Only ``fields`` from now on (a new request starts afresh, whatever a thread kept bound before)."""
    token = _CONTEXT.set(MappingProxyType({}))
    bind(**fields)
    return token


def unbind(token: Token[Mapping[str, str]]) -> None:
    """Back to the fields bound before the :func:`bind` that returned ``token``."""
    _CONTEXT.reset(token)


@contextmanager
def log_context(**fields: str | None) -> Iterator[None]:
    """``fields`` in every record logged inside the block (in this thread)."""
    token = bind(**fields)
    try:
        yield
    finally:
        unbind(token)


class ContextFilter(logging.Filter):
    """Copies the bound context fields onto each record (a field given with ``extra=`` wins).

    Attached to handlers, not loggers: a handler's filter sees the records of every logger below it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _CONTEXT.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


# --- JSON lines ------------------------------------------------------------------------------------

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"
LOG_FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line.

    ``time`` (ISO 8601, UTC, milliseconds), ``level``, ``logger``, ``message``, ``process``, the context
    fields that are known, the ``fields`` given to the formatter (the access log's), and ``exception``
    or ``stack`` when the record has one. Every string is escaped as :func:`escape_controls` does before
    it is encoded, so a decoded message cannot break a line either.
    """

    def __init__(self, fields: Sequence[str] = ()) -> None:
        super().__init__()
        self.fields = tuple(fields)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": iso_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        for key in (*CONTEXT_FIELDS, *self.fields):
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps({key: _escaped(value) for key, value in entry.items()}, ensure_ascii=True)


def iso_time(created: float) -> str:
    """``created`` (Unix time) as ``2026-01-31T12:34:56.789Z``."""
    moment = datetime.fromtimestamp(created, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _escaped(value: object) -> object:
    if isinstance(value, str):
        return escape_controls(value)
    if isinstance(value, bool | int | float) or value is None:
        return value
    return escape_controls(str(value))


def formatter_for(log_format: str, *, text: logging.Formatter | None = None) -> logging.Formatter:
    """The formatter of ``log_format``: JSON lines, or ``text`` (default: the server's text format), escaped."""
    if log_format == "json":
        return JsonFormatter()
    if log_format != "text":
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    return EscapingFormatter(inner=text or logging.Formatter(TEXT_FORMAT))


def use_format(handler: logging.Handler, log_format: str) -> None:
    """Make ``handler`` write ``log_format`` with the context fields; text keeps its format, escaped."""
    if not any(isinstance(f, ContextFilter) for f in handler.filters):
        handler.addFilter(ContextFilter())
    if log_format == "json":
        if not isinstance(handler.formatter, JsonFormatter):
            handler.setFormatter(JsonFormatter())
    else:
        escape_handler_output(handler)


def configure_logging(level: str, log_format: str = "text") -> None:
    """The server's logging: one stderr handler on the root logger, text or JSON lines, escaped.

    Called again (once the configuration is read, say), it replaces the handler it installed before
    and leaves other handlers alone.
    """
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, _OURS, False)]:
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter_for(log_format))
    handler.addFilter(ContextFilter())
    setattr(handler, _OURS, True)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("alembic").setLevel(logging.WARNING)


_OURS = "_scep_server_handler"
