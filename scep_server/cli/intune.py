"""``intune check|sync-revocations``: troubleshooting the Intune app, and one revocation round for cron."""

from __future__ import annotations

import argparse

from scep_server.cli.common import Subcommands, ca_issuer, fail, open_store
from scep_server.config import ServerConfig
from scep_server.intune.check import check_services
from scep_server.intune.client import IntuneClient
from scep_server.intune.transport import IntuneTransport
from scep_server.runtime import revocation_sync
from scep_server.service.revocation import RevocationService

NOT_CONFIGURED = "intune.tenant and intune.client_id are not set"


def register(sub: Subcommands) -> None:
    intune = sub.add_parser("intune", help="Intune integration").add_subparsers(required=True, metavar="ACTION")
    intune.add_parser("check", help="get tokens, discover the services, report what works").set_defaults(
        func=cmd_intune_check
    )
    intune.add_parser(
        "sync-revocations", help="download Intune's revocation requests, revoke, upload results (for cron)"
    ).set_defaults(func=cmd_intune_sync_revocations)


def cmd_intune_check(config: ServerConfig, args: argparse.Namespace) -> int:
    """Troubleshooting for admins: can we get tokens, find Intune's services, and would we call them?"""
    if not config.intune.configured:
        return fail(NOT_CONFIGURED, status=2)
    transport = IntuneTransport(config.intune)
    try:
        checks = check_services(transport)
    finally:
        transport.close()
    print(f"Entra ID token and Graph discovery OK for tenant {config.intune.tenant}")
    for check in checks:
        print(f"  {check.line()}")
    unusable = [check for check in checks if check.required and not check.usable]
    for check in unusable:
        fail(check.line())
    return 1 if unusable else 0


def cmd_intune_sync_revocations(config: ServerConfig, args: argparse.Namespace) -> int:
    """One download → revoke → upload round, for cron-style use beside (or instead of) the server's worker."""
    if not config.intune.configured:
        return fail(NOT_CONFIGURED, status=2)
    client = IntuneClient(config.intune)
    try:
        with open_store(config) as store:
            revocations = RevocationService(store, issuer=ca_issuer(config))
            report = revocation_sync(config, store, client, revocations).run_safely()
    finally:
        client.close()
    if report is None:
        return fail("no round ran (another one is running, or it failed: see the log)")
    print(f"downloaded {report.downloaded}, revoked {report.revoked}, uploaded {report.uploaded} results"
          f"{'' if report.upload_acknowledged else ' (not acknowledged: they will be sent again)'}")
    return 0 if report.upload_acknowledged else 1
