"""The server with the `intune` validator beside an in-process Intune emulator (real MSAL, real TLS)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from scep_server.ca.authority import init_ca
from scep_server.config import ServerConfig, load_config
from scep_server.emulator import EmulatorServer, IntuneEmulator
from scep_server.intune.contract import ChallengeSpec
from scep_server.runtime import build_runtime
from scep_server.scep import client
from scep_server.web import create_app

from .conftest import Device, ScepTestServer, device_key

PROFILES = """
profiles:
  intune:
    challenge: {type: intune}
  intune-pending:
    challenge: {type: intune, on_intune_unavailable: pending}
"""


def intune_config(tmp_path: Path, intune: dict[str, object], *, name: str = "scep.yaml") -> ServerConfig:
    intune = {**intune, "connect_timeout": 2, "read_timeout": 5, "max_retries": 1,
              "backoff_base": 0.01, "backoff_max": 0.05}
    text = (f"data_dir: {tmp_path / 'var'}\nca: {{name: t, subject: 'CN=Intune Test CA', key_size: 2048}}\n"
            f"intune: {json.dumps(intune)}\n{PROFILES}")
    path = tmp_path / name
    path.write_text(text)
    return load_config(path, env={})


@dataclass
class IntuneEnv:
    emulator: EmulatorServer
    server: ScepTestServer
    config: ServerConfig
    tmp_path: Path

    @property
    def state(self) -> IntuneEmulator:
        return self.emulator.emulator

    def restart_server(self) -> None:
        """A new runtime on the same data dir and database, as after a process restart."""
        self.server.runtime.close()
        runtime = build_runtime(self.config)
        app = create_app(self.config, runtime_override=runtime, start_background=False)
        self.server = ScepTestServer(runtime, app.test_client(), self.tmp_path / "var")


def csr_for(spec: ChallengeSpec, key: rsa.RSAPrivateKey, challenge: str) -> x509.CertificateSigningRequest:
    """A CSR exactly as the Intune profile behind ``spec`` asks for it."""
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name.from_rfc4514_string(spec.subject))
        .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_attribute(x509.oid.AttributeOID.CHALLENGE_PASSWORD, challenge.encode())
    )
    return builder.sign(key, hashes.SHA256())


def enroll(env: IntuneEnv, *, profile: str = "intune", subject: str = "CN=device-1",
            spec: ChallengeSpec | None = None, csr_subject: str | None = None,
            key: rsa.RSAPrivateKey | None = None) -> tuple[client.CertRep, Device, client.BuiltRequest]:
    spec = spec or ChallengeSpec(subject=subject)
    challenge = env.state.mint_challenge(spec)
    device = Device(key=key or device_key(), common_name="signer")
    csr = csr_for(ChallengeSpec(subject=csr_subject) if csr_subject else spec, device.key, challenge)
    built = env.server.pkcsreq(device, csr=csr, transaction_id=uuid.uuid4().hex.upper())
    return env.server.send(built, device, profile=profile), device, built


@pytest.fixture
def intune_env(tmp_path: Path) -> Iterator[IntuneEnv]:
    with EmulatorServer(IntuneEmulator(), state_dir=tmp_path / "emulator") as emulator:
        emulator.register_client()
        config = intune_config(tmp_path, dict(emulator.settings()))
        init_ca(config.ca_dir, config.ca, None)
        runtime = build_runtime(config)
        app = create_app(config, runtime_override=runtime, start_background=False)
        env = IntuneEnv(emulator, ScepTestServer(runtime, app.test_client(), tmp_path / "var"), config, tmp_path)
        try:
            yield env
        finally:
            env.server.runtime.close()


