"""Fixtures for the real-client interop tests: our server under gunicorn, and the client tools.

A missing client binary fails the test when ``CI`` is set (CI must install them with
``.ci/install-deps.sh``); elsewhere it skips with a pointer to that script (:mod:`tests.support.env`).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.interop.harness import CERTMONGER, DBUS_DAEMON, GETCERT, SCEP_SUBMIT, SCEPCLIENT, CertmongerSession
from tests.support.env import require_executables
from tests.support.servers import ScepServerProcess, server_config


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
