"""Enrollment throughput of scep-server against micromdm's scepserver, on 127.0.0.1.

    python bench/enroll.py --requests N --concurrency C --duration T

For each server in turn: start it on a free loopback port with a static challenge, fetch its CA/RA
certificates, pre-build N PKCSReq messages (fresh RSA device keys, made in a process pool before any
timing), then POST them as PKIOperation from C threads (one keep-alive session each) for T seconds or
until the messages run out. A request counts as an enrollment when it answers HTTP 200 with a CertRep
whose pkiStatus is SUCCESS for our transactionID and nonce. Only the outer SignedData is parsed
(no signature check, no decryption) so that the client spends as little CPU as possible.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO)]

import requests  # noqa: E402
from asn1crypto import core  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

from scep_server.errors import ScepError  # noqa: E402
from scep_server.scep import cms  # noqa: E402
from scep_server.scep.client import (  # noqa: E402
    build_csr,
    build_pkcsreq,
    pick_recipient,
    self_signed_signer,
)
from scep_server.scep.types import Attr, ContentCipher, DigestAlgorithm  # noqa: E402
from scep_server.simulator.http import PKI_MESSAGE, ScepHttpClient  # noqa: E402
from tests.support.processes import HarnessError  # noqa: E402
from tests.support.servers import MicromdmScepServer, ScepServerProcess  # noqa: E402

CHALLENGE = "bench-secret"
OUR_CONFIG = """\
data_dir: {data_dir}
ca:
  key_passphrase: {{value: "bench-ca-passphrase"}}
profiles:
  default:
    challenge: {{type: static, secret: {{value: "{challenge}"}}}}
"""


@dataclass(frozen=True, slots=True)
class Message:
    der: bytes
    transaction_id: str
    sender_nonce: bytes


@dataclass(slots=True)
class Result:
    server: str
    skipped: str | None = None
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    server_cpu: float | None = None
    client_cpu: float = 0.0
    algorithms: str = ""

    @property
    def requests(self) -> int:
        return self.ok + sum(self.errors.values())

    @property
    def rate(self) -> float:
        return self.ok / self.elapsed if self.elapsed else 0.0

    def percentile(self, p: float) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


# --- message preparation (process pool) -----------------------------------------------------------------


def _new_key(key_size: int) -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _build(job: tuple[bytes, bytes, str, str, str]) -> Message:
    key_der, recipient_der, common_name, cipher, digest = job
    key = serialization.load_der_private_key(key_der, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "scep-server bench"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    built = build_pkcsreq(
        build_csr(key, subject, challenge_password=CHALLENGE),
        signer_cert=self_signed_signer(key, subject),
        signer_key=key,
        recipient=x509.load_der_x509_certificate(recipient_der),
        cipher=ContentCipher[cipher],
        digest=DigestAlgorithm[digest],
    )
    return Message(built.der, built.transaction_id, built.sender_nonce)


def build_messages(
    pool: ProcessPoolExecutor,
    keys: Sequence[bytes],
    recipient: x509.Certificate,
    prefix: str,
    cipher: ContentCipher,
    digest: DigestAlgorithm,
) -> list[Message]:
    recipient_der = recipient.public_bytes(serialization.Encoding.DER)
    # Unique subjects: micromdm refuses a second certificate for a CN it issued recently.
    jobs = [(k, recipient_der, f"{prefix}-{os.getpid()}-{i}", cipher.name, digest.name) for i, k in enumerate(keys)]
    return list(pool.map(_build, jobs, chunksize=16))


# --- the timed run --------------------------------------------------------------------------------------


def _session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # no proxies: every request stays on 127.0.0.1
    return session


def _check(response: requests.Response, message: Message) -> str | None:
    """None for a SUCCESS CertRep answering ``message``, else a short reason."""
    if response.status_code != 200:
        return f"HTTP {response.status_code}"
    try:
        reply = cms.parse_signed(response.content)
        fields = {
            "messageType": reply.attribute(Attr.MESSAGE_TYPE, core.PrintableString),
            "pkiStatus": reply.attribute(Attr.PKI_STATUS, core.PrintableString),
            "transactionID": reply.attribute(Attr.TRANSACTION_ID, core.PrintableString),
            "recipientNonce": reply.attribute(Attr.RECIPIENT_NONCE, core.OctetString),
        }
    except ScepError as exc:
        return f"undecodable CertRep: {exc}"
    expected: dict[str, object] = {
        "messageType": "3",
        "pkiStatus": "0",
        "transactionID": message.transaction_id,
        "recipientNonce": message.sender_nonce,
    }
    wrong = [name for name, value in expected.items() if fields[name] != value]
    if wrong == ["pkiStatus"]:
        failinfo = reply.attribute(Attr.FAIL_INFO, core.PrintableString)
        return f"pkiStatus {fields['pkiStatus']} failInfo {failinfo}"
    return f"wrong {', '.join(wrong)}" if wrong else None


def drive(url: str, messages: Sequence[Message], concurrency: int, duration: float, result: Result) -> None:
    """POST ``messages`` from ``concurrency`` threads until they run out or ``duration`` passes."""
    indexes = itertools.count()  # next() on a count is atomic under the GIL
    lock = threading.Lock()
    start = threading.Barrier(concurrency + 1)
    deadline = [0.0]

    def worker() -> None:
        session = _session()
        latencies: list[float] = []
        errors: Counter[str] = Counter()
        with contextlib.suppress(requests.RequestException):
            session.get(url, params={"operation": "GetCACaps"}, timeout=10)  # opens the keep-alive connection
        start.wait()
        while time.perf_counter() < deadline[0]:
            i = next(indexes)
            if i >= len(messages):
                break
            message = messages[i]
            began = time.perf_counter()
            try:
                response = session.post(
                    url, params={"operation": "PKIOperation"}, data=message.der,
                    headers={"Content-Type": PKI_MESSAGE}, timeout=60,
                )  # fmt: skip
                reason = _check(response, message)
            except requests.RequestException as exc:
                reason = type(exc).__name__
            if reason is None:
                latencies.append(time.perf_counter() - began)
            else:
                errors[reason] += 1
        session.close()
        with lock:
            result.latencies.extend(latencies)
            result.errors.update(errors)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    cpu_before = time.process_time()
    deadline[0] = time.perf_counter() + duration
    began = time.perf_counter()
    start.wait()
    for thread in threads:
        thread.join()
    result.elapsed = time.perf_counter() - began
    result.client_cpu = time.process_time() - cpu_before
    result.ok = len(result.latencies)


def group_cpu_seconds(pgid: int) -> float:
    """utime + stime of every live process in a process group (gunicorn master and workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:  # fields after "(comm)": state ppid pgrp ... utime(11) stime(12)
                total += int(fields[11]) + int(fields[12])
    return total / tick


# --- one server -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    start: Callable[[Path], ScepServerProcess | MicromdmScepServer]
    cipher: ContentCipher
    digest: DigestAlgorithm


def run_target(target: Target, keys: Sequence[bytes], pool: ProcessPoolExecutor, args: argparse.Namespace) -> Result:
    result = Result(target.name, algorithms=f"{target.cipher.name}+{target.digest.name}")
    with tempfile.TemporaryDirectory(prefix=f"bench-{target.name}-") as tmp, contextlib.ExitStack() as stack:
        server = target.start(Path(tmp))
        try:
            stack.enter_context(server)
        except (HarnessError, OSError) as exc:
            result.skipped = str(exc).splitlines()[0][:160]
            return result
        assert server.proc is not None
        url = server.url()
        with ScepHttpClient(url, session=_session()) as http:
            recipient = pick_recipient(http.get_ca_cert())
        public_key = recipient.public_key()
        bits = public_key.key_size if isinstance(public_key, rsa.RSAPublicKey) else 0
        result.algorithms += f", recipient RSA-{bits}"
        print(f"{target.name}: {url}; building {len(keys)} PKCSReq ({result.algorithms})", flush=True)
        messages = build_messages(pool, keys, recipient, target.name, target.cipher, target.digest)
        cpu_before = group_cpu_seconds(server.proc.pid)
        drive(url, messages, args.concurrency, args.duration, result)
        result.server_cpu = group_cpu_seconds(server.proc.pid) - cpu_before
    return result


def targets(args: argparse.Namespace) -> list[Target]:
    def ours(tmp: Path) -> ScepServerProcess:
        config = OUR_CONFIG.format(data_dir=tmp / "var", challenge=CHALLENGE)
        return ScepServerProcess(tmp, config, workers=args.workers, threads=args.threads)

    def micromdm(tmp: Path) -> MicromdmScepServer:
        # -debug logs every request; off unless asked for, as it costs server CPU.
        return MicromdmScepServer(tmp, challenge=CHALLENGE, key_size=2048, debug=bool(os.environ.get("BENCH_DEBUG")))

    # micromdm advertises AES and SHA-256 and accepts them; it answers in DES + SHA-1 regardless.
    every = {
        "ours": Target("ours", ours, ContentCipher.AES128, DigestAlgorithm.SHA256),
        "micromdm": Target("micromdm", micromdm, ContentCipher.AES128, DigestAlgorithm.SHA256),
    }
    return [every[name] for name in args.servers]


# --- report ---------------------------------------------------------------------------------------------


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def _per(cpu_seconds: float | None, count: int) -> str:
    return "-" if cpu_seconds is None or not count else f"{cpu_seconds / count * 1000:.1f}"


def report(results: Sequence[Result]) -> str:
    header = f"{'server':<10} {'enroll/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'ok':>6} {'errors':>6} "
    header += f"{'srv cpu ms/req':>14} {'cli cpu ms/req':>14}"
    lines = [header, "-" * len(header)]
    for r in results:
        if r.skipped:
            lines.append(f"{r.server:<10} skipped: {r.skipped}")
            continue
        lines.append(
            f"{r.server:<10} {r.rate:>9.1f} {_ms(r.percentile(50)):>8} {_ms(r.percentile(99)):>8} {r.ok:>6} "
            f"{sum(r.errors.values()):>6} {_per(r.server_cpu, r.requests):>14} {_per(r.client_cpu, r.requests):>14}"
        )
    for r in results:
        for reason, count in r.errors.most_common(5):
            lines.append(f"  {r.server} error x{count}: {reason}")
    by_name = {r.server: r for r in results if not r.skipped}
    if "ours" in by_name and "micromdm" in by_name and by_name["micromdm"].rate:
        ratio = by_name["ours"].rate / by_name["micromdm"].rate
        lines.append(f"ratio ours/micromdm (enrollments/s): {ratio:.2f}")
    else:
        lines.append("ratio ours/micromdm: n/a (a server did not run)")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=500, help="PKCSReq messages per server (default 500)")
    parser.add_argument("--concurrency", type=int, default=4, help="client threads (default 4)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per server at most (default 30)")
    parser.add_argument("--servers", type=lambda s: s.split(","), default=["ours", "micromdm"],
                        help="comma-separated subset of ours,micromdm (default both)")  # fmt: skip
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers for ours (default 2)")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn threads per worker for ours (default 4)")
    parser.add_argument("--key-size", type=int, default=2048, help="device RSA key size (default 2048)")
    args = parser.parse_args(argv)
    unknown = set(args.servers) - {"ours", "micromdm"}
    if unknown or args.requests < 1 or args.concurrency < 1 or args.duration <= 0:
        parser.error(f"bad arguments{': unknown server ' + ', '.join(sorted(unknown)) if unknown else ''}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    print(
        f"{args.requests} requests/server, {args.concurrency} threads, <= {args.duration:.0f} s, "
        f"{os.cpu_count()} CPUs shared by client and server",
        flush=True,
    )
    results: list[Result] = []
    with ProcessPoolExecutor() as pool:
        began = time.perf_counter()
        keys = list(pool.map(_new_key, itertools.repeat(args.key_size, args.requests), chunksize=8))
        print(f"generated {len(keys)} RSA-{args.key_size} device keys in {time.perf_counter() - began:.1f} s")
        for target in targets(args):
            results.append(run_target(target, keys, pool, args))
    print()
    print(report(results))
    # micromdm's own failures under load are measured, not fatal; ours must not fail, nothing may be idle.
    broken = [r for r in results if not r.skipped and (r.ok == 0 or (r.server == "ours" and r.errors))]
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
