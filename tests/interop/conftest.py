"""Fixtures for the real-client interop tests: our server under gunicorn, and the client tools.

A missing client binary fails the test when ``CI`` is set (CI must install them with
``.ci/install-deps.sh``); elsewhere it skips with a pointer to that script.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    CERTMONGER,
    DBUS_DAEMON,
    GETCERT,
    SCEP_SUBMIT,
    SCEPCLIENT,
    CertmongerSession,
    ScepServerProcess,
    server_config,
)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_executables(*paths: str) -> None:
    missing = [p for p in paths if not os.access(p, os.X_OK)]
    if not missing:
        return
    message = f"missing {', '.join(missing)}: install the interop clients with `sudo .ci/install-deps.sh`"
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def scepclient_tool() -> str:
    require_executables(SCEPCLIENT)
    return SCEPCLIENT


@pytest.fixture(scope="session")
def certmonger_tools() -> None:
    require_executables(CERTMONGER, GETCERT, SCEP_SUBMIT, DBUS_DAEMON)


@pytest.fixture(scope="module")
def scep_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScepServerProcess]:
    """Our server with a ``default`` profile and a DES-allowing ``legacy`` profile, static challenge."""
    root = tmp_path_factory.mktemp("scep-server")
    with ScepServerProcess(root, server_config(root / "var")) as server:
        yield server


@pytest.fixture(scope="module")
def certmonger(certmonger_tools: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CertmongerSession]:
    with CertmongerSession(tmp_path_factory.mktemp("certmonger")) as session:
        yield session
