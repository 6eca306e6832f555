"""``simulate`` and ``intune-emulator``: the dev tools' own console scripts, run under their old names.

``scep-simulator`` and ``scep-intune-emulator`` are programs of their own that the server never imports;
these subcommands run them (``python -m``) as child processes with everything after the subcommand's
name, and exit with their status.
"""

from __future__ import annotations

import subprocess
import sys

from scep_server.cli.common import Subcommands

# subcommand -> (module, console script, what it does)
TOOLS = {
    "simulate": ("scep_server.simulator", "scep-simulator", "enroll simulated Intune devices (TestMatrix rows)"),
    "intune-emulator": ("scep_server.emulator", "scep-intune-emulator", "run the Intune emulator (Entra ID + Graph)"),
}


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
    with subprocess.Popen([sys.executable, "-m", TOOLS[argv[index]][0], *argv[index + 1:]]) as tool:
        while True:
            try:
                return tool.wait()
            except KeyboardInterrupt:  # the tool got the SIGINT too: let it stop in its own way
                continue
