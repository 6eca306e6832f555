"""Request limits and slow clients against the real gunicorn server (``scep-server serve``).

An oversized request line is refused with 414 before gunicorn's parser runs, at a cost measured in
the server processes' CPU time; slow clients hold sockets, not threads, so ``/livez`` keeps
answering; deadlines end requests that arrive too slowly; GET PKIOperation of certmonger's size
still works, and the access log carries no SCEP message.
"""

from __future__ import annotations

import base64
import os
import re
import select
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from scep_server.scep import client
from scep_server.scep.types import PKIStatus
from tests.support.processes import HOST
from tests.support.servers import CHALLENGE, ScepServerProcess, server_config

pytestmark = pytest.mark.interop

LINE_LIMIT = 8190  # limits.request_line_bytes default
SLOW_CONNECTIONS = 100
CPU_BUDGET = 0.050


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScepServerProcess]:
    """Default limits, as ``scep-server serve`` runs with no ``limits`` section."""
    root = tmp_path_factory.mktemp("http-limits")
    with ScepServerProcess(root, server_config(root / "var")) as srv:
        time.sleep(1.0)  # let start-up work (the first CRL) finish before CPU is measured
        yield srv


@pytest.fixture(scope="module")
def impatient_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScepServerProcess]:
    root = tmp_path_factory.mktemp("http-deadlines")
    config = server_config(root / "var") + "limits:\n  header_timeout_seconds: 1\n  body_timeout_seconds: 1\n"
    with ScepServerProcess(root, config) as srv:
        yield srv


# --------------------------------------------------------------------------------------------- helpers


def connect(srv: ScepServerProcess, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection((HOST, srv.port), timeout=timeout)


def exchange(srv: ScepServerProcess, data: bytes, timeout: float = 10.0) -> bytes:
    """Send ``data`` on a fresh connection and read until the server closes it."""
    with connect(srv, timeout) as sock:
        sock.sendall(data)
        return read_until_closed(sock)


def read_until_closed(sock: socket.socket) -> bytes:
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk


def read_response(sock: socket.socket) -> bytes:
    """One response with a Content-Length, leaving the connection open."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += sock.recv(65536)
    length_field = re.search(rb"Content-Length: (\d+)", received)
    assert length_field, received
    length = int(length_field.group(1))
    while len(body_of(received)) < length:
        received += sock.recv(65536)
    return received


def status_of(response: bytes) -> int:
    match = re.match(rb"HTTP/1\.1 (\d{3}) ", response)
    assert match, response[:200]
    return int(match.group(1))


def body_of(response: bytes) -> bytes:
    return response.partition(b"\r\n\r\n")[2]


def get_livez(srv: ScepServerProcess) -> tuple[bytes, float]:
    started = time.monotonic()
    response = exchange(srv, b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", timeout=5.0)
    return response, time.monotonic() - started


def server_cpu_seconds(master_pid: int) -> float:
    """utime + stime of the gunicorn master and its workers, from /proc/<pid>/stat."""
    pids = [master_pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields and int(fields[1]) == master_pid:
                pids.append(int(entry.name))
    ticks = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name: state, ppid, ... (utime is [11], stime [12])."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return []


@dataclass
class GetRequest:
    """A PKCSReq as certmonger sends it: GET with the URL-escaped base64 message in the query."""

    line: bytes
    built: client.BuiltRequest
    key: rsa.RSAPrivateKey
    signer: x509.Certificate


def pkioperation_get(srv: ScepServerProcess, key_size: int) -> GetRequest:
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"get-{key_size}")])
    signer = client.self_signed_signer(key, subject)
    built = client.build_pkcsreq(
        client.build_csr(key, subject, challenge_password=CHALLENGE), signer_cert=signer, signer_key=key,
        recipient=x509.load_pem_x509_certificate(srv.ra_pem_path.read_bytes()),
    )  # fmt: skip
    message = urllib.parse.quote(base64.b64encode(built.der).decode(), safe="")
    return GetRequest(f"GET /scep?operation=PKIOperation&message={message} HTTP/1.1".encode(), built, key, signer)


# --------------------------------------------------------------------------------------------- the request line


def test_finding4_an_8_mb_request_line_is_refused_with_414_for_little_cpu(server: ScepServerProcess) -> None:
    line = b"GET /scep?operation=PKIOperation&message=" + b"A" * (8 * 1024 * 1024) + b" HTTP/1.1\r\n\r\n"
    assert server.proc is not None
    before = server_cpu_seconds(server.proc.pid)
    started = time.monotonic()
    with connect(server) as sock:
        sender = threading.Thread(target=_send_ignoring_errors, args=(sock, line), daemon=True)
        sender.start()
        response = read_until_closed(sock)
        sender.join(10.0)
    elapsed = time.monotonic() - started
    time.sleep(0.1)  # the worker closes its end after the response: count that too
    cpu = server_cpu_seconds(server.proc.pid) - before
    print(f"8 MB request line: {cpu * 1000:.0f} ms server CPU, answered and closed in {elapsed * 1000:.0f} ms")
    assert status_of(response) == 414, response[:300]
    assert b"POST" in body_of(response)
    assert cpu < CPU_BUDGET, f"{cpu * 1000:.0f} ms of server CPU for one refused line"
    assert b"A" * 200 not in server.log_text().encode(), "the line was logged"


def _send_ignoring_errors(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:
        pass  # the server closes once it has answered


def test_finding4_a_line_over_the_limit_gets_414_and_one_at_the_limit_is_served(server: ScepServerProcess) -> None:
    def request(line_length: int) -> bytes:
        prefix = b"GET /scep?operation=GetCACaps&pad="
        line = prefix + b"x" * (line_length - len(prefix) - len(b" HTTP/1.1")) + b" HTTP/1.1"
        assert len(line) == line_length
        return exchange(server, line + b"\r\nHost: x\r\nConnection: close\r\n\r\n")

    at_limit = request(LINE_LIMIT)
    assert status_of(at_limit) == 200 and b"POSTPKIOperation" in body_of(at_limit)
    over = request(LINE_LIMIT + 1)
    assert status_of(over) == 414
    assert b"Content-Type: text/plain" in over and b"with POST" in body_of(over)


def test_a_certmonger_sized_get_pkioperation_is_served(server: ScepServerProcess) -> None:
    get = pkioperation_get(server, key_size=4096)
    assert 5000 < len(get.line) <= LINE_LIMIT, len(get.line)
    response = exchange(server, get.line + b"\r\nHost: x\r\nConnection: close\r\n\r\n", timeout=30.0)
    assert status_of(response) == 200, response[:500]
    assert b"Content-Type: application/x-pki-message" in response
    reply = client.parse_cert_rep(
        body_of(response), request=get.built, signer_key=get.key, signer_cert=get.signer,
        trusted_signers=[x509.load_pem_x509_certificate(server.ra_pem_path.read_bytes())],
    )  # fmt: skip
    assert reply.status is PKIStatus.SUCCESS
    # The access log names the operation, never the message.
    message = get.line.partition(b"message=")[2].partition(b" ")[0].decode()
    log = server.log_text()
    assert message[:64] not in log and "message=" not in log
    assert '"GET /scep?operation=PKIOperation HTTP/1.1" 200' in log


def test_a_pkioperation_get_too_long_for_the_line_gets_414(server: ScepServerProcess) -> None:
    line = pkioperation_get(server, key_size=8192).line
    assert len(line) > LINE_LIMIT
    response = exchange(server, line + b"\r\nHost: x\r\n\r\n")
    assert status_of(response) == 414 and b"POST" in body_of(response)


# --------------------------------------------------------------------------------------------- slow clients


def test_finding4_slow_clients_do_not_stop_livez(server: ScepServerProcess) -> None:
    """100 connections trickling header bytes, half of them on a second, kept-alive request."""
    slow: list[socket.socket] = []
    stop = threading.Event()
    try:
        for index in range(SLOW_CONNECTIONS):
            sock = connect(server)
            if index % 2:
                sock.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
                assert status_of(read_response(sock)) == 200
            sock.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            slow.append(sock)
        trickler = threading.Thread(target=_trickle, args=(slow, stop), daemon=True)
        trickler.start()
        latencies = []
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline:
            response, latency = get_livez(server)
            assert status_of(response) == 200
            latencies.append(latency)
            time.sleep(0.2)
        stop.set()
        trickler.join(5.0)
        print(f"/livez under {SLOW_CONNECTIONS} slow connections: max {max(latencies) * 1000:.0f} ms, "
              f"{len(latencies)} probes")
        assert max(latencies) < 1.0, latencies
        # The slow connections were all still open, waiting: none was answered or dropped early.
        early = []
        for sock in slow:
            sock.setblocking(False)
            try:
                early.append(sock.recv(65536))
            except BlockingIOError:
                pass
        assert not early, early[:3]
    finally:
        stop.set()
        for sock in slow:
            sock.close()


def _trickle(socks: list[socket.socket], stop: threading.Event) -> None:
    """One more header byte on every connection every 0.5 s."""
    while not stop.wait(0.5):
        for sock in socks:
            try:
                sock.send(b"a")
            except OSError:
                pass


# --------------------------------------------------------------------------------------------- deadlines


def test_a_head_that_arrives_too_slowly_gets_408(impatient_server: ScepServerProcess) -> None:
    with connect(impatient_server) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /livez HTTP/1.1\r\n")
        while not select.select([sock], [], [], 0.2)[0] and time.monotonic() - started < 5.0:
            sock.sendall(b"X")  # bytes keep coming, the head never ends
        response = read_until_closed(sock)
        elapsed = time.monotonic() - started
    assert status_of(response) == 408, response
    assert 0.9 < elapsed < 3.0, elapsed


def test_a_body_that_stalls_gets_408(impatient_server: ScepServerProcess) -> None:
    with connect(impatient_server) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /scep?operation=PKIOperation HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123")
        response = read_until_closed(sock)
        elapsed = time.monotonic() - started
    assert status_of(response) == 408, response
    assert 0.9 < elapsed < 3.0, elapsed


def test_a_silent_connection_is_closed_without_an_answer(impatient_server: ScepServerProcess) -> None:
    with connect(impatient_server) as sock:
        started = time.monotonic()
        assert read_until_closed(sock) == b""
        assert time.monotonic() - started < 3.0


def test_expect_100_continue_is_answered_before_the_body(impatient_server: ScepServerProcess) -> None:
    with connect(impatient_server) as sock:
        sock.sendall(b"POST /scep?operation=PKIOperation HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                     b"Expect: 100-continue\r\nConnection: close\r\n\r\n")
        assert sock.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"\x30\x02\x05\x00")
        response = read_until_closed(sock)
    # One interim response only; the message itself is no pkiMessage.
    assert status_of(response) == 400 and b"100 Continue" not in response
