"""``intune check|sync-revocations``: troubleshooting the Intune app, and one revocation round for cron."""

from __future__ import annotations

import argparse

from scep_server.ca.generations import issuer_names
from scep_server.cli.common import Subcommands, fail, open_store
from scep_server.config import ServerConfig
from scep_server.config.model import DeviceLifecycle
from scep_server.intune.check import run_checks
from scep_server.intune.client import IntuneClient
from scep_server.intune.transport import IntuneTransport
from scep_server.runtime import revocation_sync
from scep_server.service.revocation import RevocationService

NOT_CONFIGURED = "intune.tenant and intune.client_id are not set"


def register(sub: Subcommands) -> None:
    intune = sub.add_parser("intune", help="Intune integration").add_subparsers(required=True, metavar="ACTION")
    check = intune.add_parser(
        "check", help="get both tokens, check the app's Intune role, discover the services, report what works",
        description="Exit status: 0 every check passed, 1 a check failed (named on stderr), 2 the "
                    "configuration cannot be used.",
    )
    check.add_argument("--probe", action="store_true",
                       help="also send Intune one validateRequest with a deliberately invalid CSR (expects a refusal)")
    check.set_defaults(func=cmd_intune_check)
    intune.add_parser(
        "sync-revocations", help="download Intune's revocation requests, revoke, upload results (for cron)"
    ).set_defaults(func=cmd_intune_sync_revocations)


def cmd_intune_check(config: ServerConfig, args: argparse.Namespace) -> int:
    """Troubleshooting for admins: one line per check; exit 1 naming the failed checks, 2 when it cannot run."""
    if not config.intune.configured:
        return fail(NOT_CONFIGURED, status=2)
    transport = IntuneTransport(config.intune)  # ConfigError (exit 2): unreadable credential files
    try:
        results = []
        lifecycle = any(p.device_lifecycle is not DeviceLifecycle.OFF for p in config.profiles)
        for result in run_checks(transport, probe=args.probe, device_lifecycle=lifecycle):
            print(result.line(), flush=True)
            results.append(result)
    finally:
        transport.close()
    failed = [result for result in results if result.failed]
    for result in failed:
        fail(f"{result.name}: {result.detail}")
    if failed:
        return fail(f"intune check failed: {', '.join(dict.fromkeys(r.name for r in failed))}")
    print(f"intune check passed for tenant {config.intune.tenant}")
    return 0


def cmd_intune_sync_revocations(config: ServerConfig, args: argparse.Namespace) -> int:
    """One download → revoke → upload round, for cron-style use beside (or instead of) the server's worker."""
    if not config.intune.configured:
        return fail(NOT_CONFIGURED, status=2)
    client = IntuneClient(config.intune)
    try:
        with open_store(config) as store:
            issuers = issuer_names(config.ca_dir, config.ca.name)  # each CA generation's, the issuing one first
            revocations = RevocationService(store, issuer=issuers[0], issuers=lambda: issuers)
            report = revocation_sync(config, store, client, revocations).run_safely()
    finally:
        client.close()
    if report is None:
        return fail("no round ran (another one is running, or it failed: see the log)")
    print(f"downloaded {report.downloaded}, revoked {report.revoked}, uploaded {report.uploaded} results"
          f"{'' if report.upload_acknowledged else ' (not acknowledged: they will be sent again)'}")
    return 0 if report.upload_acknowledged else 1
