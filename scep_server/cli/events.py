"""``events list``: the SCEP PKIOperation audit events (who asked, what they were answered, why it failed),
newest first, as a table or with ``--json``/``--csv`` an export."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from scep_server.cli.certs import add_export_flags, export_format, note_more, print_export
from scep_server.cli.common import Subcommands, fail, open_store
from scep_server.config import ServerConfig
from scep_server.pki.names import printable
from scep_server.service.reports import (
    EVENT_COLUMNS,
    OUTCOMES,
    EventSearch,
    ReportPage,
    Reports,
    event_row,
    parse_outcome,
    parse_range,
)
from scep_server.store import OperationRecord


def register(sub: Subcommands) -> None:
    events = sub.add_parser("events", help="SCEP audit events").add_subparsers(required=True, metavar="ACTION")
    listing = events.add_parser("list", help="list SCEP PKIOperation events, newest first")
    listing.add_argument(
        "--since", metavar="DURATION|TIME", help="at or after (7d, 24h, 30m ago, or ISO 8601 with a zone)"
    )
    listing.add_argument("--until", metavar="DURATION|TIME", help="before (same forms as --since)")
    listing.add_argument("--outcome", help=f"one of {', '.join(OUTCOMES)} (failure: every failure)")
    listing.add_argument("--profile")
    listing.add_argument("--transaction-id", metavar="ID")
    listing.add_argument("--limit", type=int, default=100)
    add_export_flags(listing)
    listing.set_defaults(func=cmd_events_list)


def cmd_events_list(config: ServerConfig, args: argparse.Namespace) -> int:
    try:
        export = export_format(args)
        since, until = parse_range(args.since, args.until, now=datetime.now(UTC))
        search = EventSearch(
            since=since, until=until, profile=args.profile, transaction_id=args.transaction_id, limit=args.limit,
            outcomes=parse_outcome(args.outcome) if args.outcome is not None else (),
        )
        with open_store(config) as store:
            page = Reports(store).events(search)
    except ValueError as exc:
        return fail(str(exc), 2)
    if export is None:
        _print_table(page)
    else:
        print_export([event_row(record) for record in page.rows], EVENT_COLUMNS, export)
    note_more(page, "events")
    return 0


def _print_table(page: ReportPage[OperationRecord]) -> None:
    print(f"{'OCCURRED (UTC)':<20} {'OUTCOME':<26} {'TYPE':<12} {'PROFILE':<12} {'REQUESTER':<16} TRANSACTION / DETAIL")
    for record in page.rows:
        row = event_row(record)
        line = " ".join((
            f"{record.occurred_at:%Y-%m-%d %H:%M:%S}".ljust(20),
            record.outcome.ljust(26),
            (row["message_type"] or "-").ljust(12),
            record.profile.ljust(12),
            (record.requester_ip or "-").ljust(16),
            f"{record.transaction_id or '-'} {record.detail or ''}".rstrip(),
        ))
        print(printable(line))  # transaction ids and details come from devices: control characters escaped
