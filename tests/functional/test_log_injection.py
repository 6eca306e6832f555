"""A transactionID with CR/LF in it cannot forge a log line: the CLI's logging setup escapes it."""

from __future__ import annotations

import io
import logging
import re
import sys
from collections.abc import Iterator

import pytest

from scep_server import cli
from scep_server.scep.client import requests as client_requests

from .conftest import Device, ScepTestServer

FORGED = (
    "\r\n2030-01-01 00:00:00,000 INFO scep_server.service.enrollment [1] PKIOperation SUCCESS profile=default forged"
)
# The CLI's record format: "<date> <time>,<ms> <LEVEL> <logger> [<pid>] <message>".
RECORD_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ [\w.]+ \[\d+\] ")


@pytest.fixture
def cli_log(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """Logging as ``scep-server`` sets it up, writing to a buffer instead of stderr."""
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    root.handlers = []
    try:
        cli.configure_logging("INFO")
        yield stderr
    finally:
        root.handlers, root.level = saved, level


def test_finding6_a_crlf_transaction_id_is_logged_on_one_line(
    server: ScepTestServer, cli_log: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Our client refuses to build such a transactionID; an attacker's does not.
    monkeypatch.setattr(client_requests, "_PRINTABLE", re.compile(r".+", re.S))
    transaction_id = "tid" + FORGED
    device = Device()
    reply = server.send(server.pkcsreq(device, transaction_id=transaction_id), device)
    assert reply.transaction_id == transaction_id

    text = cli_log.getvalue()
    lines = text.splitlines()
    assert lines and all(RECORD_START.match(line) for line in lines), text
    assert not any(line.startswith("2030-01-01") for line in lines)
    # The request was logged, with the transactionID escaped in place.
    escaped = "tid\\r\\n2030-01-01 00:00:00,000 INFO scep_server.service.enrollment [1] PKIOperation SUCCESS"
    assert any(escaped in line for line in lines), text
