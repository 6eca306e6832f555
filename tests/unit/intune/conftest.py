"""Fixtures: a throw-away PKI, the HTTPS cloud double, and Intune clients pointed at it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import AttributeOID, NameOID

from scep_server.config import IntuneConfig, SecretSource
from scep_server.intune.client import IntuneClient
from scep_server.intune.transport import IntuneTransport

from .double import CLIENT_ID, INTUNE_APP_ID, INTUNE_RESOURCE, SECRET, TENANT, CloudDouble, ThrowawayPKI

CHALLENGE = "ch4llenge-from-intune-9f8e7d"


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> ThrowawayPKI:
    return ThrowawayPKI(Path(tmp_path_factory.mktemp("intune-pki")))


@pytest.fixture
def cloud(pki: ThrowawayPKI) -> Iterator[CloudDouble]:
    double = CloudDouble(pki).start()
    double.use_intune_at(double.url)
    yield double
    double.stop()


def config_for(cloud: CloudDouble, **overrides: Any) -> IntuneConfig:
    base = IntuneConfig(
        tenant=TENANT,
        client_id=CLIENT_ID,
        client_secret=SecretSource(value=SECRET),
        provider_name_and_version="scep-server-tests/1.2.3",
        authority=cloud.url,
        intune_resource_url=INTUNE_RESOURCE,
        graph_resource_url=cloud.url,
        intune_app_id=INTUNE_APP_ID,
        ca_bundle=str(cloud.pki.ca_bundle),
        connect_timeout=2.0,
        read_timeout=5.0,
        allowed_service_hosts=("127.0.0.1",),  # where the double's discovery points
    )
    return dataclasses.replace(base, **overrides)


@dataclasses.dataclass
class Harness:
    client: IntuneClient
    transport: IntuneTransport
    sleeps: list[float]


@pytest.fixture
def make_client(cloud: CloudDouble) -> Iterator[Callable[..., Harness]]:
    harnesses: list[Harness] = []

    def make(config: IntuneConfig | None = None, **overrides: Any) -> Harness:
        sleeps: list[float] = []
        transport = IntuneTransport(config or config_for(cloud, **overrides), sleep=sleeps.append, random=lambda: 0.5)
        harness = Harness(IntuneClient(transport.config, transport=transport), transport, sleeps)
        harnesses.append(harness)
        return harness

    yield make
    for harness in harnesses:
        harness.client.close()


@pytest.fixture(scope="session")
def csr_der() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "device-42")]))
        .add_attribute(AttributeOID.CHALLENGE_PASSWORD, CHALLENGE.encode())
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(Encoding.DER)
