"""The web console in a real browser: headless Chromium (Debian's, driven by Playwright) against the server
under gunicorn, with the Intune emulator validating and simulated devices enrolling through it.

One stack serves the module's tests: before the first, the device simulator enrolls a few TestMatrix rows
(issued certificates) and two failure rows (Intune refusing the challenge, Intune answering 500), so the
dashboard has something to chart. Each test gets a fresh browser context (no cookies) at 1366x768, a
laptop screen. Screenshots go to the test's tmp dir, and also to ``$SCEP_CONSOLE_SCREENSHOTS_DIR`` when
it is set (``SCEP_CONSOLE_SCREENSHOTS_DIR=docs pytest tests/browser`` refreshes the README's pictures).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from scep_server.simulator import EmulatorAdmin, Settings, Simulator, find_rows
from scep_server.simulator.runner import DeviceResult
from tests.support.env import require
from tests.support.processes import client_env
from tests.support.servers import ScepServerProcess, running_emulator

CHROMIUM = "/usr/bin/chromium"
VIEWPORT = {"width": 1366, "height": 768}
ADMIN_TOKEN = "console-admin-token-for-the-browser-tests"
SCREENSHOTS_ENV = "SCEP_CONSOLE_SCREENSHOTS_DIR"
ISSUING_ROWS = ("SN Format: Common Name", "SAN: Email", "Key Usage: Digital signature")
FAILING_ROWS = ("Challenge Authentication Failure", "Challenge Authentication Failure - 2")
OTP_PROFILE = "kiosks"
PROFILES: dict[str, Any] = {
    "intune": {"challenge": {"type": "intune", "on_intune_unavailable": "fail"}},
    OTP_PROFILE: {"challenge": {"type": "otp"}},  # for the one-time passwords page to mint for
}
INTUNE_TUNING = {"connect_timeout": 2.0, "read_timeout": 5.0, "max_retries": 1, "backoff_base": 0.05,
                 "backoff_max": 0.2}


@dataclass(frozen=True, slots=True)
class ConsoleStack:
    """The running server (its console at ``url``), the tokens to sign in with and what the devices did."""

    server: ScepServerProcess
    read_token: str  # a named token with only the read scope
    issued: list[DeviceResult]
    refused: list[DeviceResult]

    @property
    def url(self) -> str:
        return self.server.base_url + "/console/"

    @property
    def admin_token(self) -> str:
        return ADMIN_TOKEN


def _server_config(intune: dict[str, Any]) -> str:
    config = {
        "dev": True,  # the emulator's development setup: unencrypted CA keys are accepted
        "data_dir": "var",
        "admin_token": {"value": ADMIN_TOKEN},
        "ca": {"name": "scep-server-console", "subject": "CN=scep-server Console Test CA,O=scep-server",
               "key_size": 2048},
        "intune": {**intune, **INTUNE_TUNING},
        "profiles": PROFILES,
    }
    return yaml.safe_dump(config, sort_keys=False)


def _read_token(server: ScepServerProcess) -> str:
    done = server.cli("tokens", "create", "viewer", "--scope", "read")
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleStack]:
    root = tmp_path_factory.mktemp("console")
    with running_emulator(root / "emulator") as emulator:
        with ScepServerProcess(root / "server", _server_config(dict(emulator.settings()))) as server, \
                EmulatorAdmin(emulator.url, ca_bundle=emulator.ca_bundle, token=emulator.admin_token) as admin:
            settings = Settings(scep_url=server.url(), timeout=10.0, poll_interval=0.2, http_timeout=30.0)
            simulator = Simulator(admin, settings)
            issued = simulator.run([row for name in ISSUING_ROWS for row in find_rows(name)], devices=2)
            refused = simulator.run([row for name in FAILING_ROWS for row in find_rows(name)], devices=1)
            assert all(result.passed for result in issued + refused), [r.detail for r in issued + refused]
            yield ConsoleStack(server, _read_token(server), issued, refused)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    require(os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is missing: install Debian's chromium (.ci/install-deps.sh)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], env=client_env())
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    opened = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    try:
        yield opened
    finally:
        opened.close()


@dataclass
class ConsolePage:
    """A browser tab, and every message the browser logged as an error (a CSP violation is one)."""

    page: Page
    errors: list[str]


@pytest.fixture
def tab(context: BrowserContext) -> ConsolePage:
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    return ConsolePage(page, errors)


def screenshot(page: Page, tmp_path: Path, name: str) -> Path:
    """A screenshot of the viewport as ``tmp_path/<name>.png``, copied to ``$SCEP_CONSOLE_SCREENSHOTS_DIR``
    as ``console-<name>.png`` when that is set."""
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path))
    wanted = os.environ.get(SCREENSHOTS_ENV)
    if wanted:
        target = Path(wanted) / f"console-{name}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    return path
