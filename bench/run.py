"""Throughput of scep-server on this machine, in one invocation, as one table (``make bench``).

    python bench/run.py [--sections floor,sqlite,softhsm,postgres,micromdm,intune,ocsp] [--scale]
                        [--duration S] [--requests N] [--concurrency C] [--json FILE]

Rows: the crypto floor (no HTTP, no DB); ours with a static challenge on SQLite (keys in files, then
in a SoftHSM2 token) and on PostgreSQL; micromdm's scepserver with the same client; ours with the
Intune profile against the Intune emulator answering after an injected latency, at each --devices
count; cached OCSP answers; and with --scale a store of 1M certificates. Every answer is checked (see
bench/README.md). Exit status 1 when our server answered any error or a check failed.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import enrollment, floor, intune, ocsp, scale, softhsm  # noqa: E402
from bench.context import Bench, say  # noqa: E402
from bench.machine import cpu_count  # noqa: E402
from bench.messages import KeyPool, generate_keys  # noqa: E402
from bench.report import Kind, Row, error_lines, markdown, skipped, write_json  # noqa: E402
from tests.support.processes import HarnessError  # noqa: E402

Section = Callable[[Bench], list[Row]]
SECTIONS: dict[str, tuple[str, Kind, Section]] = {
    "floor": ("crypto floor", Kind.FLOOR,
              lambda b: [floor.measure(b.pool, b.cores, b.args.floor_seconds or min(b.args.duration, 10.0))]),
    "sqlite": ("ours, static, SQLite", Kind.OURS, lambda b: [enrollment.ours_static(b, "sqlite")]),
    "softhsm": (softhsm.SECTION_LABEL, Kind.OURS, softhsm.rows),
    "postgres": ("ours, static, PostgreSQL", Kind.OURS, lambda b: [enrollment.ours_static(b, "postgres")]),
    "micromdm": ("micromdm scepserver", Kind.REFERENCE, lambda b: [enrollment.micromdm(b)]),
    "intune": ("ours, Intune profile", Kind.OURS, intune.rows),
    "ocsp": ("OCSP, cached good answer", Kind.OURS_OTHER, lambda b: [ocsp.measure(b)]),
    "scale": ("ours, 1M-certificate store", Kind.OURS_OTHER, scale.rows),
}  # fmt: skip
DEFAULT_SECTIONS = ("floor", "sqlite", "softhsm", "postgres", "micromdm", "intune", "ocsp")


def _sections(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}")
    return names


def _counts(text: str) -> list[int]:
    return [int(n) for n in text.split(",") if n.strip()]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sections", type=_sections, default=list(DEFAULT_SECTIONS),
                   help=f"comma list of {','.join(SECTIONS)} (default: all but scale)")
    p.add_argument("--scale", action="store_true", help="add the scale section (slow: a 1M-certificate store)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds per load (default 20)")
    p.add_argument("--requests", type=int, default=4000,
                   help="messages prepared per enrollment row, at most (default 4000; Intune: at least 4 per device)")
    p.add_argument("--concurrency", type=int, default=8, help="clients of the static rows (default 8)")
    p.add_argument("--devices", type=_counts, default=[64, 512], help="Intune rows' concurrent devices (64,512)")
    p.add_argument("--intune-latency", type=float, default=0.1,
                   help="seconds the emulator waits before answering validateRequest/successNotification (0.1)")
    p.add_argument("--client-processes", type=int, default=cpu_count(),
                   help="client processes of the enrollment loads (default: one per core)")
    p.add_argument("--ocsp-processes", type=int, default=4, help="OCSP client processes (default 4)")
    p.add_argument("--ocsp-threads", type=int, default=2, help="threads per OCSP client process (default 2)")
    p.add_argument("--keys", type=int, default=256, help="RSA-2048 device keys generated and shared (default 256)")
    p.add_argument("--workers", type=int, help="gunicorn workers of ours (default: serve's own default)")
    p.add_argument("--threads", type=int, help="threads per worker of ours (default: serve's own default)")
    p.add_argument("--postgres-url", default=os.environ.get("SCEP_BENCH_POSTGRES_URL"),
                   help="PostgreSQL server (default postgresql+psycopg://postgres@127.0.0.1:5432/test)")
    p.add_argument("--floor-seconds", type=float, help="length of the floor (default min(duration, 10))")
    p.add_argument("--scale-certs", type=int, default=1_000_000, help="certificates in the scale store (1M)")
    p.add_argument("--scale-revoked", type=int, default=100_000, help="of which revoked (100k)")
    p.add_argument("--json", type=Path, help="also write the results to FILE as JSON")
    args = p.parse_args(argv)
    if args.scale and "scale" not in args.sections:
        args.sections.append("scale")
    if min(args.requests, args.concurrency, args.client_processes, args.keys, *args.devices) < 1 or args.duration <= 0:
        p.error("--requests, --concurrency, --devices, --client-processes, --keys and --duration must be positive")
    return args


def run_sections(bench: Bench) -> None:
    for name in bench.args.sections:
        label, kind, section = SECTIONS[name]
        say(f"== {name}")
        began = time.monotonic()
        try:
            bench.rows.extend(section(bench))
        except Exception as exc:  # one section failing must not stop the others
            reason = str(exc) if isinstance(exc, HarnessError) else f"{type(exc).__name__}: {exc}"
            bench.rows.append(skipped(name, label, kind, reason))
        say(f"== {name}: {time.monotonic() - began:.0f} s")


def _meta(args: argparse.Namespace, seconds: float) -> dict[str, object]:
    def git(*argv: str) -> str:
        done = subprocess.run(["git", *argv], cwd=REPO, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    return {"commit": git("rev-parse", "--short", "HEAD"), "dirty": bool(git("status", "--porcelain")),
            "cores": cpu_count(), "python": platform.python_version(), "loadavg": os.getloadavg(),
            "seconds": round(seconds), "args": {k: v for k, v in vars(args).items() if k != "json"}}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.monotonic()
    say(f"{cpu_count()} CPUs shared by clients and servers; load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="scep-bench-") as root, ProcessPoolExecutor(cpu_count()) as pool:
        needs_keys = any(name != "floor" for name in args.sections)
        keys = KeyPool(generate_keys(pool, args.keys) if needs_keys else ())
        bench = Bench(args, pool, keys, Path(root))
        run_sections(bench)
    meta = _meta(args, time.monotonic() - began)
    print(f"\nscep-server bench, commit {meta['commit']}{' (modified)' if meta['dirty'] else ''}, "
          f"{meta['cores']} CPUs, {meta['seconds']} s, --duration {args.duration:g}\n")  # fmt: skip
    print(markdown(bench.rows))
    problems = error_lines(bench.rows)
    if problems:
        print("\nerrors:\n" + "\n".join(problems))
    if args.json:
        write_json(args.json, bench.rows, meta)
    return 1 if any(r.fails_run for r in bench.rows) else 0


if __name__ == "__main__":
    sys.exit(main())
