"""``config check``: everything ``serve`` checks before it forks, without serving, writing keys or migrating.

The configuration has loaded by the time the command runs (a mistake in it ends the CLI with one line
per problem and status 2); this adds ``serve``'s own options from the environment and the checks of
:mod:`.preflight`, then prints a short summary: the profiles and their validators, the database URL
without its password, the data directory, the CA and Intune.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from scep_server.challenge import defers_when_unavailable
from scep_server.cli.common import Subcommands, fail
from scep_server.cli.output import print_fields
from scep_server.cli.preflight import Startup, check_startup, redacted_database_url
from scep_server.cli.serve import serve_options
from scep_server.config import ServerConfig

__all__ = ["cmd_config_check", "register"]


def register(sub: Subcommands) -> None:
    config = sub.add_parser("config", help="the configuration").add_subparsers(required=True, metavar="ACTION")
    check = config.add_parser("check", help="validate the configuration as serve would, print a summary")
    check.add_argument("--config", default=argparse.SUPPRESS, help="YAML config file (as before the command)")
    check.add_argument("--with-emulator", action="store_true",
                       help="as serve --with-emulator: the Intune emulator stands in for Entra ID and Intune")
    # serve's own variables (SCEP_SERVER_BIND, _WORKERS, _THREADS) are checked with the configuration.
    check.set_defaults(func=cmd_config_check, environment_check=serve_options)


def cmd_config_check(config: ServerConfig, args: argparse.Namespace) -> int:
    startup = check_startup(config, "serve", with_emulator=args.with_emulator)
    for problem in startup.problems:
        fail(problem)
    if startup.problems:
        return 2
    print(f"{args.config or 'built-in defaults'}: OK")
    rows = _summary(config, startup)
    print_fields(rows, width=max(len(key) for key, _ in rows) + 2)
    return 0


def _summary(config: ServerConfig, startup: Startup) -> list[tuple[str, object]]:
    rows: list[tuple[str, object]] = [
        (f"  profile {profile.name}", profile.challenge.type
         + (" (pending while it is unavailable)" if defers_when_unavailable(profile.challenge) else ""))
        for profile in config.profiles
    ]
    rows += [
        ("  database", redacted_database_url(config)),
        ("  data dir", Path(config.data_dir).resolve()),
        ("  CA", _ca_line(config, startup)),
        ("  Intune", f"tenant {config.intune.tenant} at {config.intune.authority}"
         if config.intune.configured else "not configured"),
    ]
    return rows


def _ca_line(config: ServerConfig, startup: Startup) -> str:
    if startup.ca is None:
        return f"none yet in {config.ca_dir} (init or serve --init-if-missing creates it)"
    return f"{startup.ca.issuer_name}, SHA-256 {startup.ca.fingerprints()['sha256']}"
