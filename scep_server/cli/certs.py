"""``certs list|show|revoke``: the issued certificates, through the certificate queries the admin API uses."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager

from scep_server.ca.generations import issuer_names
from scep_server.cli.common import PROG, Subcommands, fail, open_store
from scep_server.cli.output import print_fields
from scep_server.config import ServerConfig
from scep_server.pki.names import printable
from scep_server.service.certificates import (
    STATUSES,
    CertificateQueries,
    NoSuchCertificate,
    WasRevoked,
    parse_serial,
    pem,
    text_rows,
)
from scep_server.service.revocation import REASON_NAMES, RevocationService


def register(sub: Subcommands) -> None:
    certs = sub.add_parser("certs", help="issued certificates").add_subparsers(required=True, metavar="ACTION")
    listing = certs.add_parser("list", help="list issued certificates, newest first")
    listing.add_argument("--status", choices=STATUSES)
    listing.add_argument("--profile")
    listing.add_argument("--limit", type=int, default=100)
    listing.set_defaults(func=cmd_certs_list)
    show = certs.add_parser("show", help="show one certificate")
    show.add_argument("serial", help="serial number in hex (as listed)")
    show.add_argument("--pem", action="store_true", help="print the certificate in PEM")
    show.set_defaults(func=cmd_certs_show)
    revoke = certs.add_parser("revoke", help="revoke a certificate (running servers follow within a second)")
    revoke.add_argument("serial", help="serial number in hex (as listed)")
    revoke.add_argument("--reason", default="unspecified", choices=REASON_NAMES)
    revoke.add_argument("--issuer", help="issuer DN (default: this CA)")
    revoke.set_defaults(func=cmd_certs_revoke)


def cmd_certs_list(config: ServerConfig, args: argparse.Namespace) -> int:
    with _queries(config) as certificates:
        records = certificates.page(limit=args.limit, status=args.status, profile=args.profile)
    print(f"{'SERIAL':<42} {'STATUS':<8} {'NOT AFTER':<20} {'PROFILE':<12} SUBJECT")
    for record in records:
        print(
            f"{record.serial:x}".ljust(42),
            f"{record.status.value:<8}",
            f"{record.not_after:%Y-%m-%d %H:%M:%S}".ljust(20),
            f"{record.profile:<12}",
            printable(record.subject),  # a device chose it: control characters escaped
        )
    return 0


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
        answer = certificates.revoke(serial, reason=args.reason, issuer=args.issuer)
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
