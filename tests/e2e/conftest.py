"""The whole stack on 127.0.0.1: the Intune emulator in this process, our server under gunicorn.

The server's ``intune:`` settings come from ``EmulatorServer.settings()`` (fast retries, so the failure
rows stay quick); its profiles are config/dev.yaml's intune ones, with ``intune`` failing closed when
Intune cannot be asked (what the matrix expects) and ``intune-pending`` deferring instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from scep_server.emulator import EmulatorServer
from scep_server.simulator import EmulatorAdmin, Settings, Simulator
from tests.support.servers import ScepServerProcess, running_emulator

PROFILES: dict[str, Any] = {
    "intune": {"challenge": {"type": "intune", "on_intune_unavailable": "fail"}},
    "intune-pending": {"challenge": {"type": "intune", "on_intune_unavailable": "pending"}},
    "intune-sha1": {"challenge": {"type": "intune"}, "hash": "sha1", "allow_sha1_signature": True,
                    "min_rsa_bits": 1024},
    "intune-short": {"challenge": {"type": "intune"}, "validity_days": 30},
}
INTUNE_TUNING = {"provider_name_and_version": "scep-server-e2e/0.1.0", "connect_timeout": 2.0, "read_timeout": 5.0,
                 "max_retries": 1, "backoff_base": 0.05, "backoff_max": 0.2}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: the SCEP server under gunicorn with the Intune emulator")
    config.addinivalue_line("markers", "slow: takes seconds (Intune retries, polling)")


def server_config(emulator: EmulatorServer) -> str:
    config = {
        "dev": True,  # a development setup (the emulator): unencrypted CA keys are accepted
        "data_dir": "var",
        "ca": {"name": "scep-server-e2e", "subject": "CN=scep-server E2E CA,O=scep-server", "key_size": 2048},
        "intune": {**emulator.settings(), **INTUNE_TUNING},
        "profiles": PROFILES,
    }
    return yaml.safe_dump(config, sort_keys=False)


@dataclass(frozen=True, slots=True)
class Stack:
    """The running emulator and server, an admin client, and a simulator pointed at both."""

    emulator: EmulatorServer
    server: ScepServerProcess
    admin: EmulatorAdmin
    simulator: Simulator

    def certificates(self, status: str | None = None) -> list[str]:
        """One line per stored certificate (``certs list``), optionally only those with ``status``."""
        args = ["certs", "list", "--limit", "100000"] + (["--status", status] if status else [])
        done = self.server.cli(*args)
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()[1:]

    def log_lines(self, *needles: str) -> list[str]:
        """The server log's lines that contain every one of ``needles``."""
        return [line for line in self.server.log_text().splitlines() if all(n in line for n in needles)]


def stored_with_subject(lines: list[str], subject: str) -> list[str]:
    """The ``certs list`` lines whose subject column is exactly ``subject``."""
    return [line for line in lines if re.search(rf"\s{re.escape(subject)}$", line)]


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("e2e")
    with running_emulator(root / "emulator") as emulator:
        with ScepServerProcess(root / "server", server_config(emulator)) as server, \
                EmulatorAdmin(emulator.url, ca_bundle=emulator.ca_bundle, token=emulator.admin_token) as admin:
            settings = Settings(scep_url=server.url(), timeout=10.0, poll_interval=0.2, http_timeout=30.0)
            yield Stack(emulator, server, admin, Simulator(admin, settings))


@pytest.fixture
def clean_faults(stack: Stack) -> Iterator[None]:
    stack.admin.clear_faults()
    yield
    stack.admin.clear_faults()
