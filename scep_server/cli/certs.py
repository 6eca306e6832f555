"""``certs list|expiring|show|revoke``: the issued certificates, through the certificate queries and the
reports the admin API uses. ``list`` and ``expiring`` print a table, or with ``--json``/``--csv`` an export
(``events list`` shares those flags and their printing)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from scep_server.ca.generations import issuer_names
from scep_server.cli.audit import cli_actor
from scep_server.cli.common import PROG, Subcommands, fail, open_store
from scep_server.cli.output import print_fields
from scep_server.config import ServerConfig
from scep_server.pki.names import printable
from scep_server.service.certificates import (
    CertificateQueries,
    NoSuchCertificate,
    WasRevoked,
    parse_serial,
    pem,
    text_rows,
)
from scep_server.service.reports import (
    CERTIFICATE_COLUMNS,
    REPORT_STATUSES,
    CertificateSearch,
    ReportPage,
    Reports,
    ReportStatus,
    certificate_row,
    parse_duration,
    parse_range,
    to_csv,
    to_json,
)
from scep_server.service.revocation import REASON_NAMES, RevocationService
from scep_server.store import CertificateRecord

Export = Literal["json", "csv"]


def register(sub: Subcommands) -> None:
    certs = sub.add_parser("certs", help="issued certificates").add_subparsers(required=True, metavar="ACTION")
    _register_list(certs)
    _register_expiring(certs)
    show = certs.add_parser("show", help="show one certificate")
    show.add_argument("serial", help="serial number in hex (as listed)")
    show.add_argument("--pem", action="store_true", help="print the certificate in PEM")
    show.set_defaults(func=cmd_certs_show)
    revoke = certs.add_parser("revoke", help="revoke a certificate (running servers follow within a second)")
    revoke.add_argument("serial", help="serial number in hex (as listed)")
    revoke.add_argument("--reason", default="unspecified", choices=REASON_NAMES)
    revoke.add_argument("--issuer", help="issuer DN (default: this CA)")
    revoke.set_defaults(func=cmd_certs_revoke)


def _register_list(certs: Subcommands) -> None:
    listing = certs.add_parser("list", help="list issued certificates, newest first")
    listing.add_argument(
        "--since", metavar="DURATION|TIME", help="issued at or after (7d, 24h, 30m ago, or ISO 8601 with a zone)"
    )
    listing.add_argument("--until", metavar="DURATION|TIME", help="issued before (same forms as --since)")
    listing.add_argument("--subject", metavar="TEXT", help="the subject contains TEXT (ignoring case)")
    listing.add_argument(
        "--status", choices=REPORT_STATUSES, help="valid: neither revoked nor expired; expired: notAfter has passed"
    )
    listing.add_argument("--profile")
    listing.add_argument("--limit", type=int, default=100)
    add_export_flags(listing)
    listing.set_defaults(func=cmd_certs_list)


def _register_expiring(certs: Subcommands) -> None:
    expiring = certs.add_parser("expiring", help="valid certificates expiring soon, soonest first")
    expiring.add_argument("--within", metavar="DURATION", default="30d", help="from now (default: 30d)")
    expiring.add_argument("--profile")
    expiring.add_argument("--limit", type=int, default=100)
    add_export_flags(expiring)
    expiring.set_defaults(func=cmd_certs_expiring)


def add_export_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print a JSON array instead of the table")
    parser.add_argument("--csv", action="store_true", help="print CSV with a header row instead of the table")


def export_format(args: argparse.Namespace) -> Export | None:
    """``json``, ``csv`` or None (the table); ValueError for both."""
    if args.json and args.csv:
        raise ValueError("--json and --csv do not go together: pick one")
    return "json" if args.json else "csv" if args.csv else None


def print_export(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], export: Export) -> None:
    print(to_json(rows) if export == "json" else to_csv(rows, columns), end="")


def note_more(page: ReportPage[Any], what: str) -> None:
    """Say on stderr (stdout stays the report) that ``--limit`` cut the report short."""
    if page.more:
        print(f"{PROG}: more {what} match; the first {len(page.rows)} are shown (raise --limit)", file=sys.stderr)


def cmd_certs_list(config: ServerConfig, args: argparse.Namespace) -> int:
    try:
        export = export_format(args)
        since, until = parse_range(args.since, args.until, now=datetime.now(UTC))
        search = CertificateSearch(
            issued_since=since, issued_until=until, subject=args.subject, profile=args.profile, limit=args.limit,
            status=ReportStatus(args.status) if args.status is not None else None,
        )
        with open_store(config) as store:
            page = Reports(store).certificates(search)
    except ValueError as exc:
        return fail(str(exc), 2)
    _print_certificates(page, export, _print_certificate_table)
    return 0


def cmd_certs_expiring(config: ServerConfig, args: argparse.Namespace) -> int:
    try:
        export = export_format(args)
        within = parse_duration(args.within, "--within")
        with open_store(config) as store:
            page = Reports(store).expiring(within, profile=args.profile, limit=args.limit)
    except ValueError as exc:
        return fail(str(exc), 2)
    _print_certificates(page, export, _print_expiring_table)
    return 0


def _print_certificates(
    page: ReportPage[CertificateRecord], export: Export | None, table: Callable[[ReportPage[CertificateRecord]], None]
) -> None:
    if export is None:
        table(page)
    else:
        print_export([certificate_row(record, page.taken_at) for record in page.rows], CERTIFICATE_COLUMNS, export)
    note_more(page, "certificates")


def _print_certificate_table(page: ReportPage[CertificateRecord]) -> None:
    print(f"{'SERIAL':<42} {'STATUS':<8} {'NOT AFTER':<20} {'PROFILE':<12} SUBJECT")
    for record in page.rows:
        print(
            f"{record.serial:x}".ljust(42),
            f"{record.status.value:<8}",
            f"{record.not_after:%Y-%m-%d %H:%M:%S}".ljust(20),
            f"{record.profile:<12}",
            printable(record.subject),  # a device chose it: control characters escaped
        )


def _print_expiring_table(page: ReportPage[CertificateRecord]) -> None:
    print(f"{'SERIAL':<42} {'NOT AFTER':<20} {'LEFT':<8} {'PROFILE':<12} SUBJECT")
    for record in page.rows:
        print(
            f"{record.serial:x}".ljust(42),
            f"{record.not_after:%Y-%m-%d %H:%M:%S}".ljust(20),
            _time_left(record.not_after - page.taken_at).ljust(8),
            f"{record.profile:<12}",
            printable(record.subject),
        )


def _time_left(left: timedelta) -> str:
    hours = left.seconds // 3600
    return f"{left.days}d {hours:02d}h"


def cmd_certs_show(config: ServerConfig, args: argparse.Namespace) -> int:
    serial = _parse_serial(args.serial)
    with _queries(config) as certificates:
        record = certificates.show(serial)
    if record is None:
        return fail(f"no certificate with serial {args.serial}")
    if args.pem:
        print(pem(record), end="")
    else:
        print_fields(text_rows(record), width=14)
    return 0


def cmd_certs_revoke(config: ServerConfig, args: argparse.Namespace) -> int:
    serial = _parse_serial(args.serial)
    with _queries(config) as certificates:
        answer = certificates.revoke(serial, reason=args.reason, issuer=args.issuer, actor=cli_actor(), source="cli")
    if isinstance(answer, NoSuchCertificate):
        return fail(f"no certificate with serial {args.serial}")
    if isinstance(answer, WasRevoked):
        revoked_at = answer.certificate.revoked_at
        when = f"{revoked_at:%Y-%m-%d %H:%M:%S} UTC" if revoked_at else "earlier"
        return fail(f"certificate {args.serial} was already revoked ({when})")
    print(f"revoked {answer.certificate.serial:x} ({args.reason})")
    return 0


@contextmanager
def _queries(config: ServerConfig) -> Iterator[CertificateQueries]:
    """Lookups of any issuer's certificates (as stored); a revocation without an issuer finds the
    certificate in whichever CA generation issued it."""
    issuers = issuer_names(config.ca_dir, config.ca.name)
    with open_store(config) as store:
        yield CertificateQueries(store, RevocationService(store, issuer=issuers[0], issuers=lambda: issuers))


def _parse_serial(text: str) -> int:
    try:
        return parse_serial(text)
    except ValueError:
        raise SystemExit(f"{PROG}: {text!r} is not a hexadecimal serial number") from None
