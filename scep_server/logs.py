"""One log record, one line: control characters in formatted records are escaped.

Log messages carry attacker-chosen text (a SCEP transactionID, a request path, a User-Agent).
A CR or LF in it would end the line and let the rest pose as a record of its own; ESC sequences
would drive the terminal of whoever tails the log. Escaping at the formatter, after the record is
fully formatted (message, arguments, traceback), covers every logger whatever the calling code
does. Only the handler's own terminator, appended after formatting, still ends the line.

Backslashes are left alone: ``\\n`` in the output is either an escaped LF or two literal
characters, neither of which starts a new line.
"""

from __future__ import annotations

import logging
import re

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
