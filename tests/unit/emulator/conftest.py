from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from flask.testing import FlaskClient

from scep_server.emulator import IntuneEmulator, create_app
from scep_server.emulator.server import EmulatorServer
from tests.support.clocks import FakeClock

from .helpers import CLIENT_ID, SECRET


@pytest.fixture(scope="session")
def device_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def app_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def clock() -> FakeClock[float]:
    return FakeClock(1_800_000_000.0)  # unix seconds


@pytest.fixture
def emulator(clock: FakeClock[float]) -> IntuneEmulator:
    emulator = IntuneEmulator(clock=clock)
    emulator.register_app(CLIENT_ID, secret=SECRET)
    return emulator


@pytest.fixture
def client(emulator: IntuneEmulator) -> FlaskClient:
    return create_app(emulator).test_client()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmulatorServer]:
    with EmulatorServer(state_dir=tmp_path / "emulator") as server:
        yield server


@pytest.fixture
def session(server: EmulatorServer) -> Iterator[requests.Session]:
    """Verifies with the emulator's CA only; ignores REQUESTS_CA_BUNDLE (intune-api.md §2)."""
    with requests.Session() as session:
        session.verify = str(server.ca_bundle)
        session.trust_env = False
        yield session
