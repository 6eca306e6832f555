"""What ``serve`` prints once before the server's logs: where devices enroll and what they must trust.

The SCEP URL of each profile (``/scep/<profile>/pkiclient.exe``, as Windows and Intune's SCEP profile
use it), the CA certificate's download URL and its SHA-1 and SHA-256 fingerprints (what Intune's
trusted-certificate profile and pinning devices check), the data directory and, with the emulator
beside the server, its URL and the simulator command that enrolls the emulated devices.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from scep_server.cli.beside import ADMIN_TOKEN_ENV, EmulatorProcess
from scep_server.cli.output import print_fields
from scep_server.config import ServerConfig

__all__ = ["Banner", "base_url", "print_banner", "scep_url", "simulator_command"]

SIMULATOR_SCRIPT = "scep-simulator"
# Hosts a server listens on for every interface: a client on this machine reaches it on loopback.
_WILDCARD_HOSTS = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]", "": "127.0.0.1"}


@dataclass(frozen=True, slots=True)
class Banner:
    """What is shown: the server's base URL, its configuration, its CA's fingerprints, the emulator."""

    base_url: str
    config: ServerConfig
    fingerprints: Mapping[str, str]
    emulator: EmulatorProcess | None = None

    def rows(self) -> list[tuple[str, object]]:
        rows: list[tuple[str, object]] = [
            (f"SCEP URL ({profile.name})", scep_url(self.base_url, profile.name)) for profile in self.config.profiles
        ]
        rows += [
            ("CA certificate", f"{self.base_url}/ca/{self.config.ca.name}.crt"),
            ("CA SHA-1 fingerprint", self.fingerprints["sha1"]),
            ("CA SHA-256 fingerprint", self.fingerprints["sha256"]),
            ("data dir", Path(self.config.data_dir).resolve()),
        ]
        if self.emulator is not None:
            rows += [
                ("Intune emulator", self.emulator.url),
                ("try", shlex.join(simulator_command(self.base_url, self.emulator))),
            ]
        return rows


def print_banner(banner: Banner) -> None:
    rows = [(f"  {key}", value) for key, value in banner.rows()]
    print(f"scep-server serving on {banner.base_url}")
    print_fields(rows, width=max(len(key) for key, _ in rows) + 2)
    sys.stdout.flush()  # before gunicorn, whose logs go to stderr, says anything


def base_url(bind: str) -> str:
    """The URL a client on this machine uses for gunicorn's ``--bind`` (``HOST:PORT``, ``unix:PATH``)."""
    if bind.startswith(("unix:", "fd://")):
        return bind
    host, _, port = bind.rpartition(":")
    return f"http://{_WILDCARD_HOSTS.get(host, host)}:{port}"


def scep_url(base: str, profile: str) -> str:
    """A profile's SCEP URL with the ``/pkiclient.exe`` that Windows appends (web/scep.py serves both)."""
    return f"{base}/scep/{profile}/pkiclient.exe"


def simulator_command(base: str, emulator: EmulatorProcess) -> Sequence[str]:
    """The simulator's command line against this server and emulator (it appends each row's profile)."""
    command = [_simulator_program(), "--scep-url", f"{base}/scep", "--emulator-url", emulator.url,
               "--ca-bundle", _shown_path(emulator.ca_bundle)]
    if os.environ.get(ADMIN_TOKEN_ENV) != emulator.admin_token:
        command += ["--admin-token", emulator.admin_token]  # generated: the simulator cannot know it
    return command


def _simulator_program() -> str:
    """The simulator's console script beside this interpreter (the virtualenv's), else by name on PATH."""
    script = Path(sys.executable).parent / SIMULATOR_SCRIPT
    return _shown_path(script) if script.is_file() else SIMULATOR_SCRIPT


def _shown_path(path: Path) -> str:
    """``path`` relative to the working directory when it lies under it (``.venv/bin/...``), else absolute."""
    absolute = Path(os.path.abspath(path))
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(absolute)
