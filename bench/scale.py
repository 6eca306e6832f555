"""The scale rows (``--scale``): our server on a SQLite store of ``--scale-certs`` certificates, of which
``--scale-revoked`` are revoked (defaults 1M and 100k).

The store is filled by cloning one certificate the server really issued, row by row in SQL (unique
serial, subject, transactionID and thumbprints; revoked rows spread evenly), so whatever columns the
schema has are filled as the server fills them. Then the server is restarted on it and measured:

- the CRL: the first ``GET /crl/<ca>.crl`` after the start (the revocations are new to the server, so
  it builds, signs and stores the CRL, database read included); its entries are counted; the peak RSS
  is the largest VmHWM of a server process afterwards;
- the admin API: list pages (all, revoked, one profile) and single certificates, one at a time;
  ``certs list`` unfiltered, revoked and of one profile (a new process each time) as a note;
- static enrollments, as the SQLite row, compared with that row (or an empty store measured here).
"""

from __future__ import annotations

import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests
from cryptography import x509

from bench.context import Bench, endpoint, load_row, say
from bench.enrollment import check_ours, enroll_some, ours_static, plan, run_ours
from bench.machine import group_peak_rss_mb
from bench.messages import build_static
from bench.report import Kind, Row, percentile
from bench.servers import ADMIN_TOKEN, CHALLENGE, BenchServer, our_config, sqlite_url

BATCH = 50_000
QUERIES = 100  # of each kind
CA_NAME = "bench-ca"
CLI_LISTS = {"all": (), "revoked": ("--status", "revoked"), "profile": ("--profile", "default")}


def _template(db: Path) -> dict[str, Any]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        row = conn.execute("SELECT * FROM certificates ORDER BY id DESC LIMIT 1").fetchone()
    return {k: row[k] for k in row.keys() if k != "id"}


def _clones(template: dict[str, Any], count: int, revoked: int) -> Iterator[tuple[Any, ...]]:
    base, every = random.getrandbits(60) << 64, max(count // max(revoked, 1), 1)
    for i in range(count):
        row = dict(template, serial_hex=f"{base + i:x}", subject=f"CN=scale-{i},O=scep-server bench",
                   transaction_id=f"SCALE{i:09d}", sha1_thumbprint=f"{i:040x}", sha256_thumbprint=f"{i:064x}")
        if i % every == 0 and i // every < revoked:
            row.update(status="revoked", revoked_at=template["issued_at"], revocation_reason=1)
        yield tuple(row.values())


def fill(db: Path, count: int, revoked: int) -> float:
    """Clone the newest certificate ``count`` times; the seconds it took."""
    began, template = time.monotonic(), _template(db)
    columns = ", ".join(template)
    insert = f"INSERT INTO certificates ({columns}) VALUES ({', '.join('?' * len(template))})"
    rows = _clones(template, count, revoked)
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA synchronous=OFF")  # a bulk load of test data, not the server's writes
        while batch := [r for _, r in zip(range(BATCH), rows, strict=False)]:
            conn.executemany(insert, batch)
    return time.monotonic() - began


def _crl(bench: Bench, server: BenchServer, revoked: int) -> Row:
    session = requests.Session()
    session.trust_env = False
    began = time.monotonic()
    response = session.get(f"{server.base_url}/crl/{CA_NAME}.crl", timeout=600)
    seconds = time.monotonic() - began
    peak = group_peak_rss_mb(server.pgid)
    row = Row("scale-crl", f"ours, CRL of a store with {revoked:,} revoked", Kind.OURS_OTHER, unit="s to build",
              rate=seconds, ok=1)  # fmt: skip
    entries = len(x509.load_der_x509_crl(response.content)) if response.status_code == 200 else -1
    if entries < revoked:
        row.ok, row.errors, row.reasons = 0, 1, {f"HTTP {response.status_code}, {entries} CRL entries": 1}
    row.notes += [f"first GET after start, {entries:,} entries, {len(response.content) / 1e6:.1f} MB",
                  f"RSS <= {peak or 0:.0f} MB/process"]  # fmt: skip
    return row


def _queries(bench: Bench, server: BenchServer, serials: list[str]) -> Row:
    """Each kind of admin query in turn, one at a time, until each ran QUERIES times or the time is up."""
    session = requests.Session()
    session.trust_env = False
    session.headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
    kinds: dict[str, Callable[[], str]] = {
        "list": lambda: "/admin/certificates?limit=100",
        "revoked": lambda: "/admin/certificates?status=revoked&limit=100",
        "profile": lambda: "/admin/certificates?profile=default&limit=100",
        "show": lambda: f"/admin/certificates/{random.choice(serials)}",
    }
    latencies: dict[str, list[float]] = {kind: [] for kind in kinds}
    failed, began = 0, time.monotonic()
    deadline = began + max(bench.args.duration, 10.0)
    while min(map(len, latencies.values())) < QUERIES and (time.monotonic() < deadline or not latencies["show"]):
        for kind, path in kinds.items():
            start = time.monotonic()
            failed += session.get(server.base_url + path(), timeout=600).status_code != 200
            latencies[kind].append(time.monotonic() - start)
    every = [t for times in latencies.values() for t in times]
    row = Row("scale-admin", "ours, admin API queries on that store", Kind.OURS_OTHER, unit="queries/s",
              rate=len(every) / (time.monotonic() - began), p50=percentile(every, 50), p99=percentile(every, 99),
              ok=len(every) - failed, errors=failed, reasons={"admin query not HTTP 200": failed} if failed else {})
    row.notes.append("p99 " + ", ".join(f"{kind} {_ms(percentile(times, 99))}" for kind, times in latencies.items()))
    _certs_list(server, row)
    return row


def _certs_list(server: BenchServer, row: Row) -> None:
    """``certs list`` unfiltered, of the revoked, of one profile: the median of 3 runs each (new processes)."""
    medians = []
    for name, filters in CLI_LISTS.items():
        runs = []
        for _ in range(3):
            start = time.monotonic()
            done = server.cli("certs", "list", "--limit", "100", *filters)
            runs.append(time.monotonic() - start)
            if done.returncode != 0:
                row.errors, row.reasons["certs list failed"] = row.errors + 1, 1
        medians.append(f"{name} {statistics.median(runs):.2f} s")
    row.notes.append(f"`certs list` {', '.join(medians)} per run (a new process)")


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def _serials(db: Path, count: int) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [r[0] for r in conn.execute("SELECT serial_hex FROM certificates ORDER BY random() LIMIT ?", (count,))]


def _enroll(bench: Bench, server: BenchServer, data_dir: Path, baseline: Row | None) -> Row:
    found = endpoint(server.url())
    messages = build_static(bench.pool, bench.keys, found.recipient, bench.args.requests, "scale", CHALLENGE)
    load_plan = plan(bench, server.port, "/scep", messages, found, concurrency=bench.args.concurrency)
    say(f"scale: static enrollments for up to {bench.args.duration:.0f} s")
    result, stored, peak = run_ours(server, load_plan, sqlite_url(data_dir))
    label = f"ours, static, SQLite, {bench.args.scale_certs:,}-certificate store, {bench.args.concurrency} clients"
    row = load_row(bench, "scale-enroll", label, Kind.OURS, result, ["server"])
    check_ours(row, result, stored, peak)
    if baseline is not None and baseline.rate and row.rate is not None:
        row.notes.insert(0, f"{row.rate / baseline.rate:.0%} of the empty store's enroll/s")
    return row


def rows(bench: Bench) -> list[Row]:
    args, found = bench.args, list[Row]()
    baseline = bench.row("ours-sqlite")
    if baseline is None:
        say("scale: no SQLite row in this run: measuring the empty store first")
        baseline = ours_static(bench, "sqlite")
        found.append(baseline)
    with tempfile.TemporaryDirectory(dir=bench.root, prefix="scale-") as name:
        tmp = Path(name)
        data_dir, config = tmp / "var", our_config(tmp / "var")
        with BenchServer(tmp, config, args.workers, args.threads) as server:
            enroll_some(bench, server, 1, "scale-template")
        db = data_dir / "scep-server.db"
        say(f"scale: cloning {args.scale_certs:,} certificates ({args.scale_revoked:,} revoked)")
        seconds = fill(db, args.scale_certs, args.scale_revoked)
        say(f"scale: filled in {seconds:.0f} s ({db.stat().st_size / 1e9:.1f} GB); restarting the server")
        with BenchServer(tmp, config, args.workers, args.threads, init=False) as server:
            found.append(_crl(bench, server, args.scale_revoked))
            found.append(_queries(bench, server, _serials(db, QUERIES)))
            found.append(_enroll(bench, server, data_dir, baseline))
    found[-3].notes.append(f"store filled in {seconds:.0f} s")
    return found
