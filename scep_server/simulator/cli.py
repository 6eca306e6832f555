"""``scep-simulator``: enroll simulated Intune devices for TestMatrix rows and report per device, or run
the device lifecycle scenario (``--scenario lifecycle``) and report it as JSON.

::

    scep-simulator --profile all --devices 2
    scep-simulator --profile "SN Format: IMEI" --scep-url http://127.0.0.1:8080/scep
    scep-simulator --scenario lifecycle --devices 5 --lifecycle-profile intune

Exit status 0 when every device passed, 1 when one did not, 2 on a usage or setup error.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import TextIO

from scep_server.pki.names import printable
from scep_server.simulator.admin import EmulatorAdmin, EmulatorAdminError
from scep_server.simulator.lifecycle import CHANGES, LifecycleScenario
from scep_server.simulator.matrix import ROWS, find_rows
from scep_server.simulator.runner import DeviceResult, Settings, Simulator

PROG = "scep-simulator"
ADMIN_TOKEN_ENV = "INTUNE_EMULATOR_ADMIN_TOKEN"
LOG_LEVEL_ENV = "SCEP_SERVER_LOG_LEVEL"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
HEADERS = ("ROW", "DEVICE", "RESULT", "DETAIL")
SCENARIOS = ("testmatrix", "lifecycle")


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: stderr logging at ``SCEP_SERVER_LOG_LEVEL`` (INFO), then ``run``."""
    raw = os.environ.get(LOG_LEVEL_ENV) or "INFO"  # empty: unset
    if raw.upper() not in LOG_LEVELS:
        print(f"{PROG}: {LOG_LEVEL_ENV} must be one of {', '.join(LOG_LEVELS)}, not {raw!r}", file=sys.stderr)
        return 2
    configure_logging(raw)
    return run(None if argv is None else list(argv))


def run(argv: list[str] | None = None) -> int:
    """Parse ``argv``, run the rows, print the table; the exit status.

    A leading ``--`` is dropped: ``scep-server simulate -- --profile all`` passes one through.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv[1:] if argv[:1] == ["--"] else argv)
    if args.list:
        _print_rows(sys.stdout)
        return 0
    if args.scenario == "lifecycle":
        return _run_lifecycle(args)
    try:
        rows = find_rows(args.profile)
    except KeyError:
        print(f"{PROG}: no TestMatrix row {args.profile!r} (see --list)", file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        with _admin(args) as admin:
            results = Simulator(admin, _settings(args)).run(rows, args.devices or 1, args.concurrency)
    except EmulatorAdminError as exc:
        print(f"{PROG}: the Intune emulator's admin API failed: {exc}", file=sys.stderr)
        return 2
    print_table(results, sys.stdout)
    passed = sum(r.passed for r in results)
    print(f"\n{passed}/{len(results)} devices passed in {time.monotonic() - started:.1f} s")
    return 0 if passed == len(results) else 1


def _run_lifecycle(args: argparse.Namespace) -> int:
    """The lifecycle scenario; its JSON report on stdout."""
    try:
        with _admin(args) as admin:
            scenario = LifecycleScenario(admin, _settings(args), profile=args.lifecycle_profile)
            report = scenario.run(args.devices or len(CHANGES), args.concurrency)
    except EmulatorAdminError as exc:
        print(f"{PROG}: the Intune emulator's admin API failed: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_json(), indent=2))
    return 0 if report.passed else 1


def _admin(args: argparse.Namespace) -> EmulatorAdmin:
    token = args.admin_token or os.environ.get(ADMIN_TOKEN_ENV)
    return EmulatorAdmin(args.emulator_url, ca_bundle=args.ca_bundle, token=token)


def _settings(args: argparse.Namespace) -> Settings:
    return Settings(scep_url=args.scep_url, timeout=args.timeout, poll_interval=args.poll_interval)


def print_table(results: Sequence[DeviceResult], out: TextIO) -> None:
    """ROW, DEVICE, RESULT, DETAIL; the detail is the failInfo text or the checks that failed."""
    lines = [(r.row, str(r.device), "PASS" if r.passed else "FAIL", r.detail) for r in results]
    widths = [max(len(line[i]) for line in [HEADERS, *lines]) for i in range(3)]
    for line in [HEADERS, *lines]:
        print("  ".join(cell.ljust(width) for cell, width in zip(line[:3], widths, strict=True)), line[3], file=out)


def _print_rows(out: TextIO) -> None:
    for row in ROWS:
        expect = f"{row.expect.value} via /scep/{row.profile.name}"
        print(f"{row.name:<50} {row.slug:<50} {expect}" + (f" ({row.note})" if row.note else ""), file=out)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Enroll simulated Intune devices through the SCEP server, one or all TestMatrix rows, "
                    "with challenges minted by the Intune emulator; check every certificate against its profile.")
    parser.add_argument("--profile", default="all", metavar="ROW|all",
                        help="a TestMatrix row by name or slug (see --list), or all (default)")
    parser.add_argument("--scenario", choices=SCENARIOS, default="testmatrix",
                        help="testmatrix (default): the TestMatrix rows; lifecycle: enroll devices, then delete, "
                             "retire and disable them in Intune and Entra ID, and report JSON")
    parser.add_argument("--devices", type=_positive_int, default=None,
                        help=f"devices per row (default 1); lifecycle: devices in all (default {len(CHANGES)}, "
                             "one per change; more stay unchanged)")
    parser.add_argument("--lifecycle-profile", default="intune", metavar="PROFILE",
                        help="lifecycle: the SCEP profile the devices enroll with (default %(default)s)")
    parser.add_argument("--scep-url", default="http://127.0.0.1:8080/scep",
                        help="SCEP base URL; /<profile> of the row is appended (default %(default)s)")
    parser.add_argument("--emulator-url", default="https://127.0.0.1:8443", help="the Intune emulator (%(default)s)")
    parser.add_argument("--ca-bundle", default="var/emulator/ca.pem", help="the emulator's TLS CA (%(default)s)")
    parser.add_argument("--admin-token", help=f"bearer token of the emulator's admin API (or {ADMIN_TOKEN_ENV})")
    parser.add_argument("--concurrency", type=_positive_int, default=4, help="devices enrolling at once (4)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a device polls a PENDING request (60)")
    parser.add_argument("--poll-interval", type=float, default=1.0, help="seconds between CertPolls (1)")
    parser.add_argument("--list", action="store_true", help="list the TestMatrix rows and exit")
    return parser


class _PrintableFormatter(logging.Formatter):
    """One record, one line: what a server answered cannot end the line or drive the terminal."""

    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record))


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_PrintableFormatter("%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler])
