"""The static-challenge rows: ours on SQLite, ours on PostgreSQL, micromdm's scepserver; same client.

Ours: after the window the whole server (gunicorn master and workers) is killed with SIGKILL, and the
store, opened directly, must hold exactly one new certificate per SUCCESS answer (durability); every
SUCCESS must carry a serial no other answer of the run has.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from cryptography import x509

from bench import load
from bench.context import Bench, Endpoint, add_error, endpoint, load_row, say
from bench.machine import CpuMeter, group_cpu, group_peak_rss_mb, named_cpu
from bench.messages import Message, build_static, issued_certificate
from bench.report import Kind, Row
from bench.servers import (
    CHALLENGE,
    DEFAULT_POSTGRES_URL,
    BenchServer,
    count_certificates,
    kill_hard,
    our_config,
    private_database,
    sqlite_url,
)
from tests.support.processes import HOST
from tests.support.servers import MicromdmScepServer


def plan(bench: Bench, port: int, path: str, messages: list[Message], found: Endpoint, *, concurrency: int,
         keep_alive: bool = True) -> load.Plan:  # fmt: skip
    args = bench.args
    return load.Plan(HOST, port, path, messages, bench.keys, found.recipient, found.issuer, found.trusted,
                     concurrency=concurrency, processes=min(args.client_processes, concurrency),
                     duration=args.duration, keep_alive=keep_alive)  # fmt: skip


def run_ours(
    server: BenchServer, load_plan: load.Plan, store_url: str, *, extra: dict[str, Callable[[], float]] | None = None,
    settle: Callable[[], None] = lambda: None,
) -> tuple[load.LoadResult, int, float | None]:
    """The load against our running server, then (after ``settle``) kill -9 and count the store:
    (result, new certificates, peak RSS MB of a server process)."""
    pgid = server.pgid
    peak: list[float | None] = [None]
    before = count_certificates(store_url)
    meter = CpuMeter({"server": lambda: group_cpu(pgid), **(extra or {})})

    def at_end() -> None:
        peak[0] = group_peak_rss_mb(pgid)
        settle()
        kill_hard(pgid)

    result = load.run(load_plan, meter, at_end)
    return result, count_certificates(store_url) - before, peak[0]


def check_ours(row: Row, result: load.LoadResult, stored: int, peak_mb: float | None) -> None:
    """Durability, serial uniqueness and memory of an enrollment row of ours."""
    if stored != result.ok:
        add_error(row, f"durability: the store gained {stored} certificates for {result.ok} SUCCESS answers",
                  abs(stored - result.ok) or 1)  # fmt: skip
    duplicates = result.duplicates()
    if duplicates:
        add_error(row, f"{duplicates} certificates share a serial", duplicates)
    row.notes.append(f"after kill -9 the store has +{stored} {'=' if stored == result.ok else '!='} SUCCESS")
    row.notes.append(f"{duplicates} duplicate serials")
    if peak_mb is not None:
        row.notes.append(f"RSS <= {peak_mb:.0f} MB/process")


@contextlib.contextmanager
def _database(kind: str, bench: Bench) -> Iterator[str | None]:
    if kind == "sqlite":
        yield None
    else:
        with private_database(bench.args.postgres_url or DEFAULT_POSTGRES_URL) as url:
            yield url


@dataclass(frozen=True, slots=True)
class KeyPlacement:
    """CA, RA and OCSP keys elsewhere than the default files: ``ca.keys`` and the server's extra environment;
    ``slug`` extends the row's key and ``label`` its label."""

    slug: str
    label: str
    keys: dict[str, Any]
    env: Mapping[str, str] = field(default_factory=dict, repr=False)


def ours_static(bench: Bench, database: str, placement: KeyPlacement | None = None) -> Row:
    key = f"ours-{database}" + (f"-{placement.slug}" if placement else "")
    kind = "SQLite" if database == "sqlite" else "PostgreSQL"
    label = f"ours, static, {kind}, {placement.label + ', ' if placement else ''}{bench.args.concurrency} clients"
    with tempfile.TemporaryDirectory(dir=bench.root, prefix=f"{key}-") as tmp, _database(database, bench) as url:
        data_dir = Path(tmp) / "var"
        config = our_config(data_dir, database_url=url, keys=placement.keys if placement else None)
        server = BenchServer(Path(tmp), config, bench.args.workers, bench.args.threads,
                             env=placement.env if placement else None)  # fmt: skip
        with server:
            found = endpoint(server.url())
            say(f"{key}: {server.url()} ({found.describe()}); building {bench.args.requests} PKCSReqs")
            messages = build_static(bench.pool, bench.keys, found.recipient, bench.args.requests, key, CHALLENGE)
            extra = {"db": lambda: named_cpu("postgres")} if url else None
            say(f"{key}: driving for up to {bench.args.duration:.0f} s")
            load_plan = plan(bench, server.port, "/scep", messages, found, concurrency=bench.args.concurrency)
            result, stored, peak = run_ours(server, load_plan, url or sqlite_url(data_dir), extra=extra)
    row = load_row(bench, key, label, Kind.OURS, result, ["server", "db"] if url else ["server"])
    check_ours(row, result, stored, peak)
    if url:
        row.notes.append("server CPU includes all postgres processes")
    return row


def enroll_some(bench: Bench, server: BenchServer, count: int, prefix: str) -> tuple[list[x509.Certificate],
                                                                                   x509.Certificate]:
    """``count`` certificates enrolled one by one (fully checked), and the CA that issued them."""
    found = endpoint(server.url())
    messages = build_static(bench.pool, bench.keys, found.recipient, count, prefix, CHALLENGE)
    session = requests.Session()
    session.trust_env = False
    issued = []
    for message in messages:
        response = session.post(server.url(), params={"operation": "PKIOperation"}, data=message.der,
                                headers={"Content-Type": "application/x-pki-message"}, timeout=60)  # fmt: skip
        response.raise_for_status()
        issued.append(issued_certificate(response.content, message, message.sender_nonce, bench.keys, found.trusted))
    session.close()
    return issued, next(c for c in found.trusted if c.subject == issued[0].issuer)


def micromdm(bench: Bench) -> Row:
    label = f"micromdm scepserver, {bench.args.concurrency} clients"
    with tempfile.TemporaryDirectory(dir=bench.root, prefix="micromdm-") as tmp:
        with MicromdmScepServer(Path(tmp), challenge=CHALLENGE, key_size=2048, debug=False) as server:
            assert server.proc is not None
            pgid = server.proc.pid
            found = endpoint(server.url())
            say(f"micromdm: {server.url()} ({found.describe()}); building {bench.args.requests} PKCSReqs")
            messages = build_static(bench.pool, bench.keys, found.recipient, bench.args.requests, "micromdm",
                                    CHALLENGE)  # fmt: skip
            say(f"micromdm: driving for up to {bench.args.duration:.0f} s")
            load_plan = plan(bench, server.port, "/scep", messages, found, concurrency=bench.args.concurrency)
            result = load.run(load_plan, CpuMeter({"server": lambda: group_cpu(pgid)}))
    row = load_row(bench, "micromdm", label, Kind.REFERENCE, result, ["server"])
    row.notes.append(f"{result.duplicates()} of {result.ok} certificates share a serial")
    return row
