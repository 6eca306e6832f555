"""``audit verify|list``: the hash-chained audit log of issuances and revocations (see
:mod:`scep_server.store.audit_chain`), and the actor name the CLI's own changes are audited under."""

from __future__ import annotations

import argparse
import json
import os
import pwd
from typing import Any

from scep_server.cli.common import Subcommands, fail, migrate, open_store
from scep_server.config import ServerConfig
from scep_server.errors import StoreError
from scep_server.pki.names import printable
from scep_server.store import Actor, AuditAction, AuditEntry, AuditRecord, ChainBreak, Store

NOT_MIGRATED = "the database schema is not current: start the server or run `init --if-missing` to migrate it"


def register(sub: Subcommands) -> None:
    audit = sub.add_parser("audit", help="the audit log of issuances and revocations").add_subparsers(
        required=True, metavar="ACTION"
    )
    verify = audit.add_parser("verify", help="check that no audit row was changed or deleted (exit 1 if one was)")
    verify.set_defaults(func=cmd_audit_verify)
    listing = audit.add_parser("list", help="the audit log, newest first")
    listing.add_argument("--limit", type=_positive, default=50, help="rows to show (default 50)")
    listing.add_argument("--json", action="store_true", help="print a JSON array instead of a table")
    listing.set_defaults(func=cmd_audit_list)


def cli_actor() -> str:
    """``cli:<login name>``: who the audit log names for a change made with this command line."""
    # The account the process runs as, not $USER or $LOGNAME, which whoever runs it may set to anything.
    try:
        return f"cli:{pwd.getpwuid(os.getuid()).pw_name}"
    except KeyError:  # no account for the uid (a bare container)
        return f"cli:uid={os.getuid()}"


def audit_cli_change(config: ServerConfig, action: AuditAction, subject: str, done: str, **detail: str) -> int:
    """Append the audit row of a change the command line has just made outside the store (to the CA's
    files); 0, or 1 with ``done`` and why it is not audited on stderr, so a script sees the gap.

    The schema is migrated first, as ``init`` does: the audit log is where every CA change must land."""
    try:
        migrate(config)
        with open_store(config) as store:
            store.append_audit(AuditEntry(Actor(cli_actor(), "cli"), action.value, subject, detail))
    except StoreError as exc:
        return fail(f"{done}, but it could not be written to the audit log: {exc}")
    return 0


def cmd_audit_verify(config: ServerConfig, args: argparse.Namespace) -> int:
    with open_store(config) as store:
        if not store.schema_is_current():
            return fail(NOT_MIGRATED, 2)
        report = store.verify_audit()
    if report.problem is not None:
        return fail(f"audit chain broken {_where(report.problem)}: {report.problem.reason}")
    print(f"audit chain intact: {report.rows} rows")
    # A copy kept elsewhere catches a chain rewritten as a whole, which a check of the rows alone cannot.
    print(f"head hash: {report.head_hash}")
    return 0


def cmd_audit_list(config: ServerConfig, args: argparse.Namespace) -> int:
    with open_store(config) as store:
        records = _records(store, args.limit)
    if records is None:
        return fail(NOT_MIGRATED, 2)
    if args.json:
        print(json.dumps([_as_json(record) for record in records], indent=2))
        return 0
    print(f"{'ID':>6} {'TIME (UTC)':<19} {'ACTOR':<24} {'SOURCE':<11} {'ACTION':<20} SUBJECT  DETAIL")
    for record in records:
        print(
            f"{record.id:>6}",
            f"{record.occurred_at:%Y-%m-%d %H:%M:%S}",
            printable(record.actor).ljust(24),  # an Intune request context, a login name: escaped
            f"{printable(record.source):<11}",
            f"{printable(record.action):<20}",
            printable(record.subject),
            printable(record.detail),
        )
    return 0


def _records(store: Store, limit: int) -> list[AuditRecord] | None:
    if not store.schema_is_current():
        return None
    return store.list_audit(limit=limit)


def _where(problem: ChainBreak) -> str:
    return "at its head" if problem.row_id is None else f"at row {problem.row_id}"


def _as_json(record: AuditRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "occurred_at": record.occurred_at.isoformat(),
        "actor": record.actor,
        "source": record.source,
        "action": record.action,
        "subject": record.subject,
        "detail": _detail(record.detail),
        "prev_hash": record.prev_hash,
        "hash": record.hash,
    }


def _detail(text: str) -> Any:
    """The stored JSON object; the text itself when it is not JSON (an edited row: ``audit verify`` says so)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return text


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value
