"""A real server in-process: real CA on disk, real SQLite store, Flask's test client for HTTP."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from flask.testing import FlaskClient

from scep_server.ca.authority import CertificateAuthority, init_ca
from scep_server.config import ServerConfig, load_config
from scep_server.runtime import Runtime, build_runtime
from scep_server.scep import client
from scep_server.scep.types import ContentCipher, DigestAlgorithm
from scep_server.web import create_app

CHALLENGE = "s3cret-challenge"

CONFIG = """
data_dir: {data_dir}
ca:
  name: test-ca
  subject: "CN=Test Issuing CA,O=scep-server tests"
  key_size: 2048
profiles:
  default:
    challenge: {{type: static, secret: {{value: "{challenge}"}}}}
  legacy:
    challenge: {{type: static, secret: {{value: "{challenge}"}}}}
    allow_des: true
  strict:
    challenge: {{type: static, secret: {{value: "{challenge}"}}}}
    allow_sha1: false
    allow_renewal: false
    key_usage: [digital_signature]
    extended_key_usage: [client_auth]
"""

_KEYS: list[rsa.RSAPrivateKey] = []


def device_key() -> rsa.RSAPrivateKey:
    """A fresh RSA 2048 device key (kept in a small pool so the suite stays fast)."""
    if len(_KEYS) < 24:
        _KEYS.append(rsa.generate_private_key(public_exponent=65537, key_size=2048))
        return _KEYS[-1]
    _KEYS.append(_KEYS.pop(0))
    return _KEYS[-1]


@dataclass
class Device:
    """A SCEP client: a key, a throw-away signer certificate, and the CSR it asks for."""

    key: rsa.RSAPrivateKey = field(default_factory=device_key)
    common_name: str = "device-01"

    @property
    def subject(self) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.common_name)])

    @cached_property
    def signer(self) -> x509.Certificate:
        return client.self_signed_signer(self.key, self.subject)

    def csr(self, challenge: str | None = CHALLENGE) -> x509.CertificateSigningRequest:
        return client.build_csr(self.key, self.subject, challenge_password=challenge)


@dataclass
class ScepTestServer:
    runtime: Runtime
    http: FlaskClient
    data_dir: Path

    @property
    def ca(self) -> CertificateAuthority:
        return self.runtime.ca

    def post(self, der: bytes, profile: str | None = None):  # type: ignore[no-untyped-def]
        path = f"/scep/{profile}" if profile else "/scep"
        return self.http.post(f"{path}?operation=PKIOperation", data=der)

    def get(self, der: bytes, profile: str | None = None):  # type: ignore[no-untyped-def]
        path = f"/scep/{profile}" if profile else "/scep"
        return self.http.get(path, query_string={"operation": "PKIOperation", "message": base64.b64encode(der)})

    def send(
        self, built: client.BuiltRequest, device: Device, *, signer: x509.Certificate | None = None,
        profile: str | None = None, method: str = "POST",
    ) -> client.CertRep:
        response = self.post(built.der, profile) if method == "POST" else self.get(built.der, profile)
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.mimetype == "application/x-pki-message"
        return client.parse_cert_rep(
            response.data, request=built, signer_key=device.key, signer_cert=signer or device.signer,
            trusted_signers=[self.ca.ra_cert, self.ca.ca_cert],
        )

    def pkcsreq(
        self, device: Device, *, challenge: str | None = CHALLENGE, cipher: ContentCipher = ContentCipher.AES128,
        digest: DigestAlgorithm = DigestAlgorithm.SHA256, csr: x509.CertificateSigningRequest | None = None,
        transaction_id: str | None = None,
    ) -> client.BuiltRequest:
        return client.build_pkcsreq(
            csr or device.csr(challenge), signer_cert=device.signer, signer_key=device.key,
            recipient=self.ca.ra_cert, cipher=cipher, digest=digest, transaction_id=transaction_id,
        )

    def enroll(self, device: Device, **kwargs: object) -> x509.Certificate:
        profile = kwargs.pop("profile", None)
        built = self.pkcsreq(device, **kwargs)  # type: ignore[arg-type]
        reply = self.send(built, device, profile=profile)  # type: ignore[arg-type]
        assert reply.status.name == "SUCCESS", (reply.fail_info, reply.fail_info_text)
        return reply.certificate_for(device.key.public_key())

    def issued_count(self) -> int:
        return self.runtime.store.count_certificates()


def make_config(tmp_path: Path, template: str = CONFIG, **fields: object) -> ServerConfig:
    """A config from a YAML template with ``{data_dir}``, ``{challenge}`` and ``fields`` filled in."""
    path = tmp_path / "scep-server.yaml"
    path.write_text(template.format(data_dir=tmp_path / "var", challenge=CHALLENGE, **fields))
    return load_config(path, env={})


@contextmanager
def serving(config: ServerConfig) -> Iterator[ScepTestServer]:
    """A new CA, the runtime and the Flask test client for ``config``; closed on exit."""
    init_ca(config.ca_dir, config.ca, None)
    runtime = build_runtime(config)
    try:
        app = create_app(config, runtime_override=runtime, start_background=False)
        yield ScepTestServer(runtime, app.test_client(), Path(config.data_dir))
    finally:
        runtime.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ScepTestServer]:
    with serving(make_config(tmp_path)) as started:
        yield started


# Fixtures defined beside their helpers, made available to every functional test.
from .intune_env import intune_env  # noqa: E402, F401
