"""A profile's ``max_concurrent_operations`` under ``scep-server serve``, with Intune slowed down for real.

The Intune emulator holds every validateRequest for a few seconds. With one worker and a cap of one on
the ``intune`` profile, a second PKIOperation of that profile, sent while the first is being
validated, is answered at once with 503 and Retry-After and counted; the ``default`` profile, which has
no cap, is served meanwhile by the same worker; once the first is answered the profile takes requests
again.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
import requests
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from prometheus_client.parser import text_string_to_metric_families

from scep_server.emulator import EmulatorServer
from scep_server.intune.contract import ChallengeSpec
from scep_server.scep import client
from scep_server.scep.types import PKIStatus
from scep_server.web.backpressure import BUSY_RETRY_AFTER
from tests.support.processes import HOST
from tests.support.servers import CHALLENGE, ScepServerProcess, running_emulator

pytestmark = pytest.mark.interop

VALIDATION_LATENCY = 8.0  # seconds the emulator holds each validateRequest


@dataclass
class Stack:
    emulator: EmulatorServer
    server: ScepServerProcess

    @property
    def ra(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.server.ra_pem_path.read_bytes())


def _config(emulator: EmulatorServer) -> str:
    intune = {**emulator.settings(), "connect_timeout": 2.0, "read_timeout": 30.0, "max_retries": 0}
    return yaml.safe_dump({
        "data_dir": "var",
        "ca": {"key_size": 2048, "key_passphrase": {"value": "backpressure-ca-passphrase"}},
        "intune": intune,
        "profiles": {
            "default": {"challenge": {"type": "static", "secret": {"value": CHALLENGE}}},
            "intune": {"challenge": {"type": "intune"}, "max_concurrent_operations": 1},
        },
    }, sort_keys=False)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("backpressure")
    with running_emulator(root / "emulator") as emulator:
        with ScepServerProcess(root / "server", _config(emulator), workers=1, threads=4) as server:
            yield Stack(emulator, server)


@dataclass
class Request:
    built: client.BuiltRequest
    key: rsa.RSAPrivateKey
    signer: x509.Certificate


def _request(stack: Stack, profile: str, name: str) -> Request:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    if profile == "intune":
        challenge = stack.emulator.emulator.mint_challenge(ChallengeSpec(subject=subject.rfc4514_string()))
        csr = (
            x509.CertificateSigningRequestBuilder().subject_name(subject)
            .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_attribute(x509.oid.AttributeOID.CHALLENGE_PASSWORD, challenge.encode())
            .sign(key, hashes.SHA256())
        )
    else:
        csr = client.build_csr(key, subject, challenge_password=CHALLENGE)
    signer = client.self_signed_signer(key, subject)
    return Request(client.build_pkcsreq(csr, signer_cert=signer, signer_key=key, recipient=stack.ra), key, signer)


def _post(stack: Stack, profile: str, request: Request) -> requests.Response:
    url = stack.server.url(profile) + "?operation=PKIOperation"
    assert url.startswith(f"http://{HOST}:")
    with requests.Session() as session:
        session.trust_env = False
        return session.post(url, data=request.built.der, timeout=60,
                            headers={"Content-Type": "application/x-pki-message", "Connection": "close"})


def _status(stack: Stack, request: Request, response: requests.Response) -> PKIStatus:
    assert response.status_code == 200, response.text
    reply = client.parse_cert_rep(response.content, request=request.built, signer_key=request.key,
                                  signer_cert=request.signer, trusted_signers=[stack.ra, stack.server.ca_certificate()])
    return reply.status


def _sample(stack: Stack, name: str, **labels: str) -> float | None:
    with requests.Session() as session:
        session.trust_env = False
        text = session.get(stack.server.base_url + "/metrics", timeout=30).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


def _until_in_progress(stack: Stack, profile: str) -> None:
    """Until the profile's one operation is under way, early enough to be still held for a while."""
    deadline = time.monotonic() + VALIDATION_LATENCY / 2
    while _sample(stack, "scep_pkioperations_in_progress", profile=profile) != 1:
        assert time.monotonic() < deadline, "the first request never got under way"
        time.sleep(0.1)


def test_past_its_cap_a_profile_answers_503_and_the_others_go_on(stack: Stack) -> None:
    first, second = _request(stack, "intune", "held-1"), _request(stack, "intune", "held-2")
    static = _request(stack, "default", "uncapped")
    stack.emulator.emulator.inject_fault("validateRequest", latency=VALIDATION_LATENCY)
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(_post, stack, "intune", first)
        _until_in_progress(stack, "intune")
        started = time.monotonic()
        refused = _post(stack, "intune", second)
        assert time.monotonic() - started < VALIDATION_LATENCY / 2  # at once, not after waiting for a slot
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == str(BUSY_RETRY_AFTER)
        assert refused.headers["Content-Type"].startswith("text/plain")
        assert refused.text == f"profile intune is busy: too many PKIOperations in progress; " \
                               f"retry in {BUSY_RETRY_AFTER} seconds\n"
        assert _status(stack, static, _post(stack, "default", static)) is PKIStatus.SUCCESS
        assert held.result().status_code == 200
    stack.emulator.emulator.clear_faults()
    assert _status(stack, first, held.result()) is PKIStatus.SUCCESS
    assert _status(stack, second, _post(stack, "intune", second)) is PKIStatus.SUCCESS  # the slot is free again

    assert _sample(stack, "scep_pkioperation_rejected_total", profile="intune", reason="busy") == 1
    assert _sample(stack, "scep_pkioperation_rejected_total", profile="default", reason="busy") is None
    assert _sample(stack, "scep_requests_total", profile="intune", operation="PKIOperation", result="busy") == 1
    assert _sample(stack, "scep_enrollments_total", profile="intune", outcome="issued") == 2
    assert _sample(stack, "scep_pkioperations_in_progress", profile="intune") == 0
