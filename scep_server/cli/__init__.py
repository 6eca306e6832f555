"""The ``scep-server`` console script: one module per command group, assembled into one parser here.

``ca`` (init, import-ca, ca show|rotate-ra), ``serve``, ``certs``, ``intune``, and ``tools``, which runs
the dev tools' own console scripts (``scep-simulator``, ``scep-intune-emulator``) under their old
subcommand names. The CLI is the top of the package: it may use every layer below, but never the
emulator or the simulator, which it only starts as programs.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from scep_server import __version__
from scep_server.cli import backup, ca, certs, intune, serve, tools
from scep_server.cli.common import PROG, Command
from scep_server.config import load_config
from scep_server.errors import ScepServerError

__all__ = ["configure_logging", "main"]

COMMAND_GROUPS = (ca, serve, tools, intune, certs, backup)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    delegated = tools.delegated(argv)
    if delegated is not None:
        return delegated
    args = _parser().parse_args(argv)
    configure_logging(os.environ.get("SCEP_SERVER_LOG_LEVEL", "INFO"))
    try:
        config = load_config(args.config)
        command: Command = args.func
        return command(config, args)
    except ScepServerError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def configure_logging(level: str) -> None:
    """stderr logging; control characters in records are escaped so that no record can forge a line."""
    from scep_server.logs import escape_logger_output

    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s",
        stream=sys.stderr,
    )
    escape_logger_output(logging.getLogger())
    logging.getLogger("alembic").setLevel(logging.WARNING)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="SCEP CA with Intune challenge validation")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument(
        "--config", default=os.environ.get("SCEP_SERVER_CONFIG"), help="YAML config file (env SCEP_SERVER_CONFIG)"
    )
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.register(sub)
    return parser
