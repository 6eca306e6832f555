"""Run one fuzz target under atheris (libFuzzer): ``python -m fuzz.run TARGET [options] [libFuzzer flags]``.

scep_server and asn1crypto are instrumented for coverage. The corpus grows in ``var/fuzz/TARGET/corpus``,
seeds are rewritten into ``var/fuzz/TARGET/seeds`` on every start, and the CAs the seeds are built
against stay in ``var/fuzz/material``. Flags this script does not know go to libFuzzer (``-runs=N``,
``-max_total_time=S``, ``-timeout=S``, ...), with defaults for the artifact directory, the timeout and
the input size.

``--replay FILE...`` runs saved inputs (findings, artifacts) once and prints their outcome or traceback.

Without ``--keep-going`` the first finding stops the run, as libFuzzer does, and its input is written to
``var/fuzz/TARGET/artifacts``. With it, every distinct finding (exception type and the line that raised
it) is written once to ``var/fuzz/TARGET/findings`` with its traceback, inputs slower than
``--slow`` seconds are kept too, and the run goes on.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INSTRUMENTED = ["scep_server", "asn1crypto"]
MAX_LEN = {"envelope_raw": 8192, "envelope_attributes": 2048, "envelope_pkcs": 4096}
DEFAULT_MAX_LEN = 4096
SUMMARY_EVERY = 10.0  # seconds between rewrites of findings/summary.txt


def main(argv: Sequence[str]) -> None:
    options, libfuzzer = _arguments(argv)
    logging.disable(logging.CRITICAL)  # rejected requests log a warning each: millions of lines otherwise
    if options.replay:
        sys.exit(replay(options.target, options.home, options.replay))
    try:
        import atheris  # type: ignore[import-untyped]
    except ImportError:
        sys.exit("fuzz.run needs atheris: pip install atheris (see fuzz/README.md)")

    with atheris.instrument_imports(include=INSTRUMENTED):
        from . import material, seeds, targets
    home = options.home / options.target
    material.keep_in(options.home / "material")
    corpus, seed_dir = home / "corpus", home / "seeds"
    corpus.mkdir(parents=True, exist_ok=True)
    count = seeds.write(options.target, seed_dir)
    print(f"fuzz.run: {options.target}: {count} seeds in {seed_dir}, corpus {corpus}", file=sys.stderr)
    target = targets.TARGETS[options.target]
    if options.keep_going:
        target = Findings(home / "findings", options.slow).guard(target)
    flags = _libfuzzer_flags(libfuzzer, options.target, home)
    atheris.Setup([sys.argv[0], *flags, str(corpus), str(seed_dir)], _entry(target))
    atheris.Fuzz()


def replay(target_name: str, home: Path, inputs: Sequence[Path]) -> int:
    """Run ``inputs`` through the target (uninstrumented, same CAs); 1 when any of them raises."""
    from . import material, targets

    material.keep_in(home / "material")
    target, failed = targets.TARGETS[target_name], 0
    for path in inputs:
        try:
            print(f"{path}: {target(path.read_bytes())}")
        except Exception:
            failed = 1
            print(f"{path}: FINDING\n{traceback.format_exc()}")
    return failed


def _arguments(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="python -m fuzz.run", description=__doc__.splitlines()[0])
    parser.add_argument("target", choices=_target_names())
    parser.add_argument("--keep-going", action="store_true", help="record findings and go on")
    parser.add_argument("--slow", type=float, default=1.0, help="seconds after which an input is kept as slow")
    parser.add_argument("--home", type=Path, default=ROOT / "var" / "fuzz", help="where corpora and findings go")
    parser.add_argument("--replay", type=Path, nargs="+", metavar="FILE", help="run these inputs once, no fuzzing")
    return parser.parse_known_args(list(argv))


def _target_names() -> list[str]:
    # Without importing the targets, which must be imported under instrumentation.
    return ["envelope_raw", "envelope_attributes", "envelope_pkcs", "envelope_content", "ocsp_request"]


def _libfuzzer_flags(given: list[str], target: str, home: Path) -> list[str]:
    defaults = {
        "-artifact_prefix": f"{home / 'artifacts'}/",
        "-timeout": "10",
        "-max_len": str(MAX_LEN.get(target, DEFAULT_MAX_LEN)),
        "-rss_limit_mb": "2048",
        "-print_final_stats": "1",
    }
    named = {flag.split("=", 1)[0] for flag in given}
    (home / "artifacts").mkdir(parents=True, exist_ok=True)
    return [*given, *(f"{name}={value}" for name, value in defaults.items() if name not in named)]


def _entry(target: Callable[[bytes], str]) -> Callable[[bytes], None]:
    def test_one_input(data: bytes) -> None:
        target(data)

    return test_one_input


class Findings:
    """Distinct exceptions and slow inputs, each written once with the input that produced it."""

    def __init__(self, directory: Path, slow: float) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._dir = directory
        self._slow = slow
        self._counts: Counter[str] = Counter()
        self._written_at = 0.0

    @property
    def counts(self) -> Counter[str]:
        """How often each finding occurred."""
        return Counter(self._counts)

    def guard(self, target: Callable[[bytes], str]) -> Callable[[bytes], str]:
        def guarded(data: bytes) -> str:
            started = time.perf_counter()
            try:
                return target(data)
            except Exception as exc:  # the finding itself: kept, then the run goes on
                self._record(_signature(exc), data, "".join(traceback.format_exception(exc)))
                return "finding"
            finally:
                elapsed = time.perf_counter() - started
                if elapsed > self._slow:
                    self._record(f"slow-{len(data)}", data, f"{elapsed:.3f} s for {len(data)} bytes\n")

        return guarded

    def _record(self, signature: str, data: bytes, details: str) -> None:
        self._counts[signature] += 1
        if self._counts[signature] == 1:
            stem = self._dir / hashlib.sha1(signature.encode()).hexdigest()[:12]
            stem.with_suffix(".bin").write_bytes(data)
            stem.with_suffix(".txt").write_text(f"{signature}\ninput: {data.hex()}\n\n{details}")
            print(f"fuzz.run: NEW FINDING {signature} -> {stem}.bin", file=sys.stderr, flush=True)
        if self._counts[signature] == 1 or time.monotonic() - self._written_at > SUMMARY_EVERY:
            self._write_summary()

    def _write_summary(self) -> None:
        lines = [f"{count}\t{signature}" for signature, count in self._counts.most_common()]
        (self._dir / "summary.txt").write_text("\n".join(lines) + "\n")
        self._written_at = time.monotonic()


def _signature(exc: BaseException) -> str:
    """The exception type and the innermost frame that raised it, in the project if any."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [frame for frame in frames if "scep_server" in frame.filename] or frames
    where = f"{Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else "?"
    return f"{type(exc).__name__}@{where}"


if __name__ == "__main__":
    main(sys.argv[1:])
