"""The OCSP row: cached "good" answers for a few issued certificates, from several client processes.

A few certificates are enrolled first (static challenge, fully checked); then ``--ocsp-processes`` x
``--ocsp-threads`` keep-alive clients POST OCSP requests (RFC 6960, SHA-1 CertID, no nonce: a cacheable
request) for them in turn. Every answer is checked: HTTP 200, and its bytes are either a body already
verified for that request or are verified now (successful, status good, the right serial, signed by a
responder the CA certified). Identical bytes cannot carry another verdict, so each distinct answer is
parsed once per thread: the client spends its CPU on HTTP, not on re-parsing the same response.
"""

from __future__ import annotations

import functools
import http.client
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509 import ocsp

from bench.context import Bench, load_row, say
from bench.enrollment import enroll_some
from bench.load import LoadResult, WindowReport, fan_out
from bench.machine import CpuMeter, group_cpu, group_peak_rss_mb
from bench.report import Kind, Row
from bench.servers import BenchServer, our_config
from tests.support.processes import HOST

CERTIFICATES = 4
OCSP_REQUEST = "application/ocsp-request"


@dataclass(frozen=True, slots=True)
class _Target:
    port: int
    requests: tuple[tuple[bytes, int], ...]  # (OCSP request DER, serial it asks about)
    ca: x509.Certificate
    threads: int
    duration: float


def _request(cert: x509.Certificate, ca: x509.Certificate) -> bytes:
    built = ocsp.OCSPRequestBuilder().add_certificate(cert, ca, hashes.SHA1()).build()
    return built.public_bytes(serialization.Encoding.DER)


def check(body: bytes, serial: int, ca: x509.Certificate) -> str | None:
    """None for a successful, signed "good" answer about ``serial``, else what is wrong with it."""
    try:
        answer = ocsp.load_der_ocsp_response(body)
    except ValueError as exc:
        return f"undecodable OCSP response: {str(exc)[:60]}"
    if answer.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        return f"OCSP {answer.response_status.name}"
    if answer.serial_number != serial or answer.certificate_status is not ocsp.OCSPCertStatus.GOOD:
        return f"OCSP status {answer.certificate_status.name} for serial {answer.serial_number:x}"
    signer = next(iter(answer.certificates), ca)
    ca_key, signer_key = ca.public_key(), signer.public_key()
    if not isinstance(ca_key, rsa.RSAPublicKey) or not isinstance(signer_key, rsa.RSAPublicKey):
        return "OCSP signer is not RSA"
    try:
        if signer is not ca:
            signer.verify_directly_issued_by(ca)
        algorithm = answer.signature_hash_algorithm
        assert algorithm is not None
        signer_key.verify(answer.signature, answer.tbs_response_bytes, padding.PKCS1v15(), algorithm)
    except Exception as exc:  # any failure of the signature check is a bad answer
        return f"OCSP signature does not verify: {type(exc).__name__}"
    return None


@dataclass(slots=True)
class _Tally:
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    sent: int = 0


def _client(target: _Target, deadline: list[float], start: threading.Barrier, out: _Tally, lock: threading.Lock,
            offset: int) -> None:  # fmt: skip
    conn, mine, good = http.client.HTTPConnection(HOST, target.port, timeout=30), _Tally(), set[tuple[int, bytes]]()
    start.wait()
    i = offset
    while time.monotonic() < deadline[0]:
        which = i % len(target.requests)
        der, serial = target.requests[which]
        i, mine.sent, began = i + 1, mine.sent + 1, time.monotonic()
        try:
            conn.request("POST", "/ocsp", body=der, headers={"Content-Type": OCSP_REQUEST})
            response = conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as exc:
            mine.errors[type(exc).__name__] += 1
            conn.close()
            continue
        latency = time.monotonic() - began
        problem = f"HTTP {response.status}" if response.status != 200 else None
        if problem is None and (which, body) not in good:
            problem = check(body, serial, target.ca)
            if problem is None:
                good.add((which, body))
        if problem is None:
            mine.latencies.append(latency)
        else:
            mine.errors[problem] += 1
    conn.close()
    with lock:
        out.latencies += mine.latencies
        out.errors.update(mine.errors)
        out.sent += mine.sent


def _child(target: _Target, index: int, wait_start: Callable[[], None], report: Callable[[Any], None]) -> None:
    out, lock, deadline = _Tally(), threading.Lock(), [0.0]
    start = threading.Barrier(target.threads + 1)
    threads = [threading.Thread(target=_client, args=(target, deadline, start, out, lock, index * target.threads + t),
                                daemon=True) for t in range(target.threads)]  # fmt: skip
    for thread in threads:
        thread.start()
    wait_start()
    cpu = time.process_time()
    deadline[0] = time.monotonic() + target.duration
    start.wait()
    for thread in threads:
        thread.join()
    report(WindowReport(time.monotonic(), time.process_time() - cpu, (out.latencies, out.errors, out.sent)))
    report(None)


def _result(window: Sequence[Any]) -> tuple[list[float], Counter[str], int]:
    latencies, errors, sent = [], Counter[str](), 0
    for lat, err, count in window:
        latencies += lat
        errors.update(err)
        sent += count
    return latencies, errors, sent


def measure(bench: Bench) -> Row:
    args = bench.args
    label = f"ours, OCSP cached good answer, {args.ocsp_processes}x{args.ocsp_threads} clients"
    with tempfile.TemporaryDirectory(dir=bench.root, prefix="ocsp-") as tmp:
        with BenchServer(Path(tmp), our_config(Path(tmp) / "var"), args.workers, args.threads) as server:
            issued, ca = enroll_some(bench, server, CERTIFICATES, "ocsp")
            target = _Target(server.port, tuple((_request(c, ca), c.serial_number) for c in issued), ca,
                             args.ocsp_threads, args.duration)  # fmt: skip
            say(f"ocsp: {server.base_url}/ocsp; {len(issued)} certificates; driving for {args.duration:.0f} s")
            pgid = server.pgid
            fanned = fan_out(args.ocsp_processes, functools.partial(_child, target),
                             CpuMeter({"server": lambda: group_cpu(pgid)}), args.duration + 60)  # fmt: skip
            peak = group_peak_rss_mb(pgid)
    latencies, errors, sent = _result(fanned.window)
    result = LoadResult(elapsed=fanned.elapsed, latencies=latencies, errors=errors, ok=len(latencies),
                        sent=sent, client_cpu=fanned.client_cpu, cpu=fanned.cpu, busy=fanned.busy)  # fmt: skip
    row = load_row(bench, "ocsp", label, Kind.OURS_OTHER, result, ["server"])
    row.unit = "responses/s"
    if peak is not None:
        row.notes.append(f"RSS <= {peak:.0f} MB/process")
    return row
