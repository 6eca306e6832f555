"""``simulate`` and ``intune-emulator``: the dev tools' own console scripts, run under their old names.

``scep-simulator`` and ``scep-intune-emulator`` are programs of their own that the server never imports;
these subcommands run them (``python -m``) as child processes with everything after the subcommand's
name, and exit with their status.

Both meet in one directory, ``var/emulator`` (relative to where they run, as ``make run`` places it):
``intune-emulator`` keeps its TLS CA there unless ``--state-dir`` says otherwise, and ``simulate``
trusts the ``ca.pem`` there unless ``--ca-bundle`` says otherwise. ``simulate`` says so, on one line
and with status 2, when that file is missing (run outside the checkout, or before the emulator ran).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from scep_server.cli.common import PROG, Subcommands
from scep_server.config.checks import log_level
from scep_server.config.load import SERVER_ENV_NAMES
from scep_server.errors import ConfigError

__all__ = ["EMULATOR_STATE_DIR", "TOOLS", "delegated", "register"]

# subcommand -> (module, console script, what it does)
TOOLS = {
    "simulate": ("scep_server.simulator", "scep-simulator", "enroll simulated Intune devices (TestMatrix rows)"),
    "intune-emulator": ("scep_server.emulator", "scep-intune-emulator", "run the Intune emulator (Entra ID + Graph)"),
}
# config/dev.yaml's intune.ca_bundle is var/emulator/ca.pem: `serve --with-emulator` keeps the state there too.
EMULATOR_STATE_DIR = Path("var/emulator")
CA_FILE = "ca.pem"
LOG_LEVEL_ENV = SERVER_ENV_NAMES["log_level"]
_HELP = ("-h", "--help")
_NO_ENROLLMENT = ("--list", *_HELP)


def register(sub: Subcommands) -> None:
    """Listed for --help; ``delegated`` runs them, as they parse their own options."""
    for name, (_, script, summary) in TOOLS.items():
        sub.add_parser(name, help=f"{summary}: runs {script}")


def delegated(argv: list[str]) -> int | None:
    """The exit status of the tool ``argv`` names, after running it; None when it names none."""
    index = 0
    while index < len(argv) and argv[index].startswith("-"):
        index += 2 if argv[index] == "--config" else 1
    if index >= len(argv) or argv[index] not in TOOLS:
        return None
    name, tool_args = argv[index], argv[index + 1:]
    try:  # the tools configure their logging with it, before anything else
        log_level(os.environ.get(LOG_LEVEL_ENV) or "INFO", LOG_LEVEL_ENV)  # empty: unset
    except ConfigError as exc:
        print(f"{PROG} {name}: {exc}", file=sys.stderr)
        return 2
    if name == "simulate":
        problem = _missing_ca_bundle(tool_args)
        if problem is not None:
            print(f"{PROG} simulate: {problem}", file=sys.stderr)
            return 2
    elif _option(tool_args, "--state-dir") is None and not any(arg in _HELP for arg in tool_args):
        tool_args = [*tool_args, "--state-dir", str(EMULATOR_STATE_DIR)]
    with subprocess.Popen([sys.executable, "-m", TOOLS[name][0], *tool_args]) as tool:
        while True:
            try:
                return tool.wait()
            except KeyboardInterrupt:  # the tool got the SIGINT too: let it stop in its own way
                continue


def _missing_ca_bundle(args: list[str]) -> str | None:
    """Why the simulator could not reach the emulator's admin API over TLS: its CA file is not there."""
    if any(arg in _NO_ENROLLMENT for arg in args):
        return None
    bundle = _option(args, "--ca-bundle")
    path = Path(bundle) if bundle is not None else EMULATOR_STATE_DIR / CA_FILE
    if path.is_file():
        return None
    where = f"{path}" if path.is_absolute() else f"{path} (under {Path.cwd()})"
    return (f"no Intune emulator CA at {where}: run it where `make run` (serve --with-emulator) runs, "
            "or pass --ca-bundle <the emulator's state dir>/ca.pem")


def _option(args: list[str], name: str) -> str | None:
    """The last value given to ``name`` (``--name VALUE`` or ``--name=VALUE``) in ``args``."""
    value = None
    for index, arg in enumerate(args):
        if arg == name and index + 1 < len(args):
            value = args[index + 1]
        elif arg.startswith(f"{name}="):
            value = arg.partition("=")[2]
    return value
