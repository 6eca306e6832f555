"""``otp create|list|revoke|prune``: the one-time challenge passwords of the ``otp`` profiles (see
:mod:`scep_server.service.otp`). ``create`` prints the passwords once, each alone on its own line, last."""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from typing import Any

from scep_server.cli.audit import NOT_MIGRATED, cli_actor
from scep_server.cli.common import Subcommands, fail, open_store
from scep_server.config import ServerConfig
from scep_server.errors import NotFound
from scep_server.service.otp import OtpService, otp_profiles, parse_ttl
from scep_server.store import Store
from scep_server.store.otp import OtpRecord


def register(sub: Subcommands) -> None:
    otp = sub.add_parser("otp", help="one-time challenge passwords of the otp profiles").add_subparsers(
        required=True, metavar="ACTION"
    )
    create = otp.add_parser("create", help="new passwords; printed once, one a line, on the last lines")
    create.add_argument("--profile", required=True, help="a profile with challenge type otp")
    create.add_argument("--ttl", default="1h", help="how long they are valid: 1m to 30d (default 1h)")
    create.add_argument("--subject-pattern", help="a glob the CSR's subject or a SAN value must match")
    create.add_argument("--count", type=int, default=1, help="how many (1-100, default 1)")
    create.set_defaults(func=cmd_otp_create)
    listing = otp.add_parser("list", help="passwords, newest first (never their secrets)")
    listing.add_argument("--profile", help="of this profile only")
    listing.add_argument("--limit", type=int, default=100, help="at most this many (1-1000, default 100)")
    listing.add_argument("--json", action="store_true", help="print a JSON array instead of a table")
    listing.set_defaults(func=cmd_otp_list)
    revoke = otp.add_parser("revoke", help="expire an unused password now")
    revoke.add_argument("id", type=int)
    revoke.set_defaults(func=cmd_otp_revoke)
    prune = otp.add_parser("prune", help="delete passwords that expired a while ago, used or not")
    prune.add_argument("--older-than", default="30d", help="expired at least this long ago (default 30d)")
    prune.set_defaults(func=cmd_otp_prune)


def cmd_otp_create(config: ServerConfig, args: argparse.Namespace) -> int:
    ttl = parse_ttl(args.ttl)
    with open_store(config) as store:
        if not store.schema_is_current():
            return fail(NOT_MIGRATED, 2)
        passwords = _service(config, store).create(
            args.profile, ttl, args.subject_pattern, args.count, actor=cli_actor(), source="cli"
        )
    bound = f", bound to subject pattern {args.subject_pattern!r}" if args.subject_pattern else ""
    print(f"created {len(passwords)} one-time password(s) for profile {args.profile}, valid for {args.ttl}{bound};")
    print("shown only now, one a line:")
    for password in passwords:
        print(password)
    return 0


def cmd_otp_list(config: ServerConfig, args: argparse.Namespace) -> int:
    with open_store(config) as store:
        if not store.schema_is_current():
            return fail(NOT_MIGRATED, 2)
        service = _service(config, store)
        records = service.list(profile=args.profile, limit=args.limit)
        states = [str(service.state(record)) for record in records]
    if args.json:
        print(json.dumps([_as_json(record, state) for record, state in zip(records, states, strict=True)], indent=2))
        return 0
    print(f"{'ID':>8} {'PROFILE':<16} {'STATE':<8} {'CREATED (UTC)':<19} {'EXPIRES (UTC)':<19} {'BY':<20} "
          "USED BY TRANSACTION / PATTERN")
    for record, state in zip(records, states, strict=True):
        print(f"{record.id:>8} {record.profile:<16} {state:<8} {_when(record.created_at):<19}",
              f"{_when(record.expires_at):<19} {record.created_by:<20}",
              record.used_by_transaction or record.subject_pattern or "-")
    return 0


def cmd_otp_revoke(config: ServerConfig, args: argparse.Namespace) -> int:
    with open_store(config) as store:
        if not store.schema_is_current():
            return fail(NOT_MIGRATED, 2)
        try:
            record, now = _service(config, store).revoke(args.id, actor=cli_actor(), source="cli")
        except NotFound as exc:
            return fail(str(exc))
    if not now:
        return fail(f"one-time password {record.id} was used or had expired already")
    print(f"revoked one-time password {record.id}")
    return 0


def cmd_otp_prune(config: ServerConfig, args: argparse.Namespace) -> int:
    older_than = parse_ttl(args.older_than)
    with open_store(config) as store:
        if not store.schema_is_current():
            return fail(NOT_MIGRATED, 2)
        removed = _service(config, store).prune(older_than=older_than, actor=cli_actor(), source="cli")
    print(f"deleted {removed} one-time password(s) that expired more than {args.older_than} ago")
    return 0


def _service(config: ServerConfig, store: Store) -> OtpService:
    return OtpService(store, profiles=otp_profiles(config))


def _when(value: datetime | None) -> str:
    return "-" if value is None else f"{value:%Y-%m-%d %H:%M:%S}"


def _as_json(record: OtpRecord, state: str) -> dict[str, Any]:
    def iso(value: datetime | None) -> str | None:
        return None if value is None else value.isoformat()

    return {
        "id": record.id, "profile": record.profile, "state": state, "subject_pattern": record.subject_pattern,
        "created_at": iso(record.created_at), "expires_at": iso(record.expires_at), "created_by": record.created_by,
        "used_at": iso(record.used_at), "used_by_transaction": record.used_by_transaction,
    }
