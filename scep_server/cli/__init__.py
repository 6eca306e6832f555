"""The ``scep-server`` console script: one module per command group, assembled into one parser here.

``ca`` (init, import-ca, ca show|rotate-ra), ``serve``, ``check`` (config check), ``certs``, ``events``, ``intune``,
``backup``, ``audit`` (verify|list), ``tokens`` (create|list|revoke) and ``tools``, which runs the dev
tools' own console scripts (``scep-simulator``, ``scep-intune-emulator``) under their old subcommand names.
A configuration error ends every command with one line per problem and status 2. The CLI is the top of the
package: it may use every layer below, but never the emulator or the simulator, which it only starts as programs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from scep_server import __version__
from scep_server.cli import audit, backup, ca, certs, check, events, intune, otp, serve, tokens, tools
from scep_server.cli.common import PROG, Command
from scep_server.config import ServerConfig, load_config
from scep_server.config.checks import log_level
from scep_server.config.parsing import Problems
from scep_server.errors import ConfigError, ScepServerError

__all__ = ["configure_logging", "main"]

COMMAND_GROUPS = (ca, serve, check, tools, intune, certs, events, backup, audit, tokens, otp)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    delegated = tools.delegated(argv)
    if delegated is not None:
        return delegated
    args = _parser().parse_args(argv)
    configure_logging(_startup_log_level())
    try:
        config = _configuration(args)
        configure_logging(config.log_level, config.log_format)
        command: Command = args.func
        return command(config, args)
    except ScepServerError as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:  # one line per problem
            print(f"{PROG}: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _configuration(args: argparse.Namespace) -> ServerConfig:
    """The configuration; ConfigError with its problems and those of the command's own environment
    variables (``serve``'s), all at once."""
    problems = Problems()
    config = problems.attempt(lambda: load_config(args.config))
    environment_check: Callable[[argparse.Namespace], object] | None = getattr(args, "environment_check", None)
    if environment_check is not None:
        problems.attempt(lambda: environment_check(args))
    problems.raise_if_any()
    assert config is not None
    return config


def _startup_log_level() -> str:
    """``SCEP_SERVER_LOG_LEVEL`` when it names a level, else INFO until the configuration (which reports
    a bad one with the other problems) has loaded."""
    try:
        return log_level(os.environ.get(tools.LOG_LEVEL_ENV, "INFO"), tools.LOG_LEVEL_ENV)
    except ConfigError:
        return "INFO"


def configure_logging(level: str, log_format: str = "text") -> None:
    """stderr logging, text or JSON lines (``scep_server.logs``); control characters in records are
    escaped so that no record can forge a line."""
    from scep_server import logs

    logs.configure_logging(level, log_format)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="SCEP CA with Intune challenge validation")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument(  # an empty SCEP_SERVER_CONFIG is an unset one
        "--config", default=os.environ.get("SCEP_SERVER_CONFIG") or None,
        help="YAML config file (env SCEP_SERVER_CONFIG)",
    )
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.register(sub)
    return parser
