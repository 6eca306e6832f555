"""What every section shares: the options, the process pool, the device keys, a scratch directory,
the rows measured so far; and turning a load's figures into a row."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from bench.load import LoadResult
from bench.machine import cpu_count
from bench.messages import KeyPool
from bench.report import Kind, Row, percentile
from scep_server.scep.client import pick_recipient
from scep_server.simulator.http import ScepHttpClient


@dataclass(slots=True)
class Bench:
    args: argparse.Namespace
    pool: ProcessPoolExecutor
    keys: KeyPool
    root: Path
    rows: list[Row] = field(default_factory=list)
    cores: int = field(default_factory=cpu_count)

    def row(self, key: str) -> Row | None:
        return next((r for r in self.rows if r.key == key and r.skipped is None), None)

    def scratch(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path


def say(text: str) -> None:
    """Progress, on stderr: stdout carries the table only."""
    print(text, file=sys.stderr, flush=True)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """What GetCACert told a client: whom to envelope to, the CA named in CertPolls, who signs CertReps."""

    recipient: x509.Certificate
    issuer: x509.Name
    trusted: tuple[x509.Certificate, ...]

    def describe(self) -> str:
        key = self.recipient.public_key()
        bits = key.key_size if isinstance(key, rsa.RSAPublicKey) else 0
        return f"recipient RSA-{bits}"


def endpoint(url: str) -> Endpoint:
    import requests  # only here: the load itself uses http.client

    session = requests.Session()
    session.trust_env = False
    with ScepHttpClient(url, session=session) as http:
        certificates = tuple(http.get_ca_cert())
    recipient = pick_recipient(certificates)
    issuer = next((c.subject for c in certificates if c.subject == recipient.issuer), recipient.issuer)
    return Endpoint(recipient, issuer, certificates)


def load_row(bench: Bench, key: str, label: str, kind: Kind, result: LoadResult, server: Sequence[str]) -> Row:
    """A row from a load: ``server`` names the CPU parties that count as the server's (gunicorn, PostgreSQL)."""
    elapsed = result.elapsed or float("nan")
    row = Row(key, label, kind, rate=result.ok / elapsed if result.elapsed else 0.0,
              p50=percentile(result.latencies, 50), p99=percentile(result.latencies, 99), ok=result.ok,
              errors=sum(result.errors.values()), reasons=dict(result.errors),
              server_ms=sum(result.cpu[p] for p in server) / result.sent * 1000 if result.sent else None,
              client_share=result.client_cpu / (elapsed * bench.cores))  # fmt: skip
    others = max(result.busy - result.client_cpu - sum(result.cpu.values()), 0.0)
    row.notes.append(f"{result.sent} sent in {result.elapsed:.1f} s")
    capacity = elapsed * bench.cores
    row.notes.append(f"CPU busy {result.busy / capacity:.0%} (others {others / capacity:.0%})")
    if result.exhausted:
        row.notes.append("used up all messages")
    if result.polls:
        row.notes.append(f"{result.polls} CertPolls")
    row.extra.update(
        elapsed=result.elapsed, sent=result.sent, client_cpu=result.client_cpu, cpu=result.cpu, busy=result.busy,
        verify_seconds=result.verify_seconds, duplicates=result.duplicates(),
    )
    return row


def add_error(row: Row, reason: str, count: int = 1) -> None:
    row.errors += count
    row.reasons[reason] = row.reasons.get(reason, 0) + count
