"""``tokens create|list|revoke``: the named API tokens of the admin API (see
:mod:`scep_server.service.tokens`). A token's secret is printed once, by ``create``, alone on its last line."""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from typing import Any

from scep_server.cli.audit import NOT_MIGRATED, cli_actor
from scep_server.cli.common import Subcommands, fail, open_store
from scep_server.config import ServerConfig
from scep_server.errors import Conflict, NotFound
from scep_server.service.tokens import Scope, TokenService
from scep_server.store.tokens import TokenRecord


def register(sub: Subcommands) -> None:
    tokens = sub.add_parser("tokens", help="named API tokens of the admin API").add_subparsers(
        required=True, metavar="ACTION"
    )
    create = tokens.add_parser("create", help="a new token; its secret is printed once, on the last line")
    create.add_argument("name")
    create.add_argument("--scope", action="append", default=[], metavar="|".join(Scope),
                        help="what the token may do (repeatable)")
    create.set_defaults(func=cmd_tokens_create)
    listing = tokens.add_parser("list", help="every token, revoked ones too (never their secrets)")
    listing.add_argument("--json", action="store_true", help="print a JSON array instead of a table")
    listing.set_defaults(func=cmd_tokens_list)
    revoke = tokens.add_parser("revoke", help="revoke a token at once")
    revoke.add_argument("name")
    revoke.set_defaults(func=cmd_tokens_revoke)


def cmd_tokens_create(config: ServerConfig, args: argparse.Namespace) -> int:
    with open_store(config) as store:
        if not store.schema_is_current():
            return fail(NOT_MIGRATED, 2)
        try:
            record, secret = TokenService(store).create(args.name, args.scope, actor=cli_actor(), source="cli")
        except Conflict as exc:
            return fail(str(exc))
    print(f"created token {record.name} with scopes {', '.join(record.scopes)} (prefix {record.prefix});")
    print("its secret, shown only now:")
    print(secret)
    return 0


def cmd_tokens_list(config: ServerConfig, args: argparse.Namespace) -> int:
    with open_store(config) as store:
        if not store.schema_is_current():
            return fail(NOT_MIGRATED, 2)
        records = TokenService(store).list()
    if args.json:
        print(json.dumps([_as_json(record) for record in records], indent=2))
        return 0
    print(f"{'NAME':<24} {'SCOPES':<18} {'PREFIX':<8} {'CREATED (UTC)':<19} {'LAST USED':<19} REVOKED")
    for record in records:
        print(f"{record.name:<24} {','.join(record.scopes):<18} {record.prefix:<8} {_when(record.created_at):<19}",
              f"{_when(record.last_used_at):<19} {_when(record.revoked_at)}")
    return 0


def cmd_tokens_revoke(config: ServerConfig, args: argparse.Namespace) -> int:
    with open_store(config) as store:
        if not store.schema_is_current():
            return fail(NOT_MIGRATED, 2)
        try:
            record, now = TokenService(store).revoke(args.name, actor=cli_actor(), source="cli")
        except NotFound as exc:
            return fail(str(exc))
    if not now:
        return fail(f"token {record.name} was already revoked ({_when(record.revoked_at)} UTC)")
    print(f"revoked token {record.name}")
    return 0


def _when(value: datetime | None) -> str:
    return "-" if value is None else f"{value:%Y-%m-%d %H:%M:%S}"


def _as_json(record: TokenRecord) -> dict[str, Any]:
    def iso(value: datetime | None) -> str | None:
        return None if value is None else value.isoformat()

    return {
        "name": record.name, "scopes": list(record.scopes), "prefix": record.prefix,
        "created_at": iso(record.created_at), "last_used_at": iso(record.last_used_at),
        "revoked_at": iso(record.revoked_at),
    }
