"""Finding 5 against ``scep-server serve`` (gunicorn, 2 workers): kill -9 the workers mid-burst.

A burst of enrollments is sent; the workers are killed with SIGKILL while requests are in flight and
gunicorn's master starts new ones. Every device then retries its transaction the way devices do (the
same transactionID and CSR, a new nonce) until it gets its certificate. Afterwards each transaction has
exactly one valid certificate in the store, and it is the one its device holds: a certificate stored by
a killed worker was re-delivered, not left valid beside a second one.

The ``intune`` profile makes the window certain: Intune's emulator holds every successNotification
(``ACK_LATENCY``), so the workers die with certificates stored but not acknowledged; the retry must have
Intune acknowledge them before they are delivered. The stale-claim lease is 2 s here (300 s by default).

Every worker runs as many threads as the Intune burst has devices. A gthread worker accepts every
connection it is woken for, whether or not a thread is free, and gunicorn does not balance connections
between its workers: one worker often takes five of the six. With four threads, the fifth request then
waits for a thread until the first notification is acknowledged, so the six are never stored and
unacknowledged at once, however long the acknowledgement takes.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from scep_server.emulator import EmulatorServer
from scep_server.intune.contract import ChallengeSpec
from scep_server.scep import client
from scep_server.scep.types import PKIStatus
from scep_server.simulator.http import ScepHttpClient, ScepHttpError
from scep_server.store import CertStatus, Store
from tests.support.processes import http_get
from tests.support.servers import CHALLENGE, ScepServerProcess, running_emulator

pytestmark = pytest.mark.interop

LEASE_SECONDS = 2
ACK_DEVICES = 6
THREADS_PER_WORKER = ACK_DEVICES  # whichever worker accepts them, every device of the burst gets a thread
ACK_LATENCY = 25.0  # seconds the emulator sits on each successNotification: all six must be waiting at once,
# so it is far longer than a loaded machine takes to bring the last device to its notification. It costs
# nothing when the test passes: the workers are killed as soon as all six wait.
RETRY_DEADLINE = 90.0


def _config(emulator: EmulatorServer) -> str:
    intune = {**emulator.settings(), "connect_timeout": 2.0, "read_timeout": 40.0, "max_retries": 0}
    return yaml.safe_dump({
        "data_dir": "var",
        "transaction_lease_seconds": LEASE_SECONDS,
        "ca": {"name": "crash-ca", "subject": "CN=Crash Safety CA,O=scep-server", "key_size": 2048,
               "key_passphrase": {"value": "crash-safety-ca-passphrase"}},
        "intune": intune,
        "profiles": {
            "default": {"challenge": {"type": "static", "secret": {"value": CHALLENGE}}},
            "intune": {"challenge": {"type": "intune"}},
        },
    }, sort_keys=False)


@dataclass
class Stack:
    emulator: EmulatorServer
    server: ScepServerProcess
    trusted: list[x509.Certificate] = field(default_factory=list)

    def store(self) -> Store:
        return Store.open(f"sqlite:///{self.server.data_dir.resolve() / 'scep-server.db'}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("crash")
    with running_emulator(root / "emulator") as emulator:
        with ScepServerProcess(root / "server", _config(emulator), threads=THREADS_PER_WORKER) as server:
            trusted = [server.ca_certificate(), x509.load_pem_x509_certificate(server.ra_pem_path.read_bytes())]
            yield Stack(emulator, server, trusted)


@dataclass
class Device:
    """One device's transaction: its key, CSR and signer never change across retries."""

    profile: str
    key: rsa.RSAPrivateKey
    csr: x509.CertificateSigningRequest
    signer: x509.Certificate
    transaction_id: str = field(default_factory=lambda: uuid.uuid4().hex.upper())
    held: x509.Certificate | None = None

    def request(self, ra: x509.Certificate) -> client.BuiltRequest:
        return client.build_pkcsreq(self.csr, signer_cert=self.signer, signer_key=self.key, recipient=ra,
                                    transaction_id=self.transaction_id)


def _device(stack: Stack, profile: str, name: str) -> Device:
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
    return Device(profile, key, csr, client.self_signed_signer(key, subject))


def _session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # loopback only, whatever proxies the environment names
    return session


def _attempt(stack: Stack, device: Device, session: requests.Session, timeout: float = 60) -> PKIStatus | None:
    """Send the device's request once; its certificate is kept on SUCCESS. None: no answer (killed)."""
    built = device.request(stack.trusted[1])
    http = ScepHttpClient(stack.server.url(device.profile), session=session, timeout=timeout)
    try:
        der = http.pki_operation(built.der)
    except (ScepHttpError, requests.RequestException):
        return None
    reply = client.parse_cert_rep(der, request=built, signer_key=device.key, signer_cert=device.signer,
                                  trusted_signers=stack.trusted)
    if reply.status is PKIStatus.SUCCESS:
        device.held = reply.certificate_for(device.key.public_key())
    return reply.status


def _burst(stack: Stack, devices: list[Device]) -> ThreadPoolExecutor:
    pool = ThreadPoolExecutor(len(devices))
    for device in devices:
        pool.submit(_attempt, stack, device, _session())
    return pool


def _workers(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [int(pid) for pid in children]


def _kill_workers(server: ScepServerProcess) -> list[int]:
    assert server.proc is not None
    killed = _workers(server.proc.pid)
    assert killed, "gunicorn has no workers to kill"
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    return killed


def _wait_for_new_workers(server: ScepServerProcess, killed: list[int], timeout: float = 60) -> None:
    assert server.proc is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fresh = set(_workers(server.proc.pid)) - set(killed)
        if len(fresh) >= server.workers and http_get(server.base_url + "/healthz")[0] == 200:
            return
        time.sleep(0.2)
    raise AssertionError(f"gunicorn did not replace its killed workers:\n{server.log_text()[-3000:]}")


def _retry_until_issued(stack: Stack, devices: list[Device]) -> None:
    """What devices do after an outage: resend the same request until SUCCESS (PENDING: wait, resend)."""
    session = _session()
    deadline = time.monotonic() + RETRY_DEADLINE
    for device in devices:
        while device.held is None:
            status = _attempt(stack, device, session)
            assert status is not PKIStatus.FAILURE, f"transaction {device.transaction_id} failed"
            assert time.monotonic() < deadline, f"transaction {device.transaction_id} was never issued"
            if device.held is None:
                time.sleep(0.5)


def _assert_one_valid_certificate_each(stack: Stack, devices: list[Device]) -> None:
    with stack.store() as store:
        stored = store.list_certificates(limit=10_000)
    for device in devices:
        assert device.held is not None
        mine = [c for c in stored if c.transaction_id == device.transaction_id and c.profile == device.profile]
        valid = [c.serial for c in mine if c.status is CertStatus.VALID]
        assert valid == [device.held.serial_number], (device.transaction_id, [(c.serial, c.status) for c in mine])


def _linked_but_undelivered(stack: Stack, devices: list[Device]) -> int:
    with stack.store() as store:
        records = [store.get_transaction(d.profile, d.transaction_id) for d in devices]
    return sum(1 for r in records if r is not None and r.serial is not None and r.state.value == "pending")


def _states(stack: Stack, devices: list[Device]) -> list[tuple[str, str | None, bool]]:
    with stack.store() as store:
        records = [store.get_transaction(d.profile, d.transaction_id) for d in devices]
    return [("absent", None, False) if r is None else (r.state.value, r.fail_reason, r.serial is not None)
            for r in records]


def test_finding5_kill_9_mid_burst_leaves_one_valid_certificate_per_transaction(stack: Stack) -> None:
    devices = [_device(stack, "default", f"burst-{n}") for n in range(40)]
    pool = _burst(stack, devices)
    time.sleep(0.4)  # some answered, some in flight, some not sent yet
    killed = _kill_workers(stack.server)
    pool.shutdown(wait=True)
    _wait_for_new_workers(stack.server, killed)
    _retry_until_issued(stack, devices)
    _assert_one_valid_certificate_each(stack, devices)


def test_finding5_kill_9_before_intune_acknowledges_redelivers_after_a_new_acknowledgement(stack: Stack) -> None:
    state = stack.emulator.emulator
    devices = [_device(stack, "intune", f"ack-{n}") for n in range(ACK_DEVICES)]
    state.inject_fault("successNotification", latency=ACK_LATENCY)
    try:
        pool = _burst(stack, devices)
        deadline = time.monotonic() + 90  # a wait, not a timing claim: a loaded machine is slow to get there
        while _linked_but_undelivered(stack, devices) < len(devices):  # every certificate stored, none delivered
            assert time.monotonic() < deadline, (
                f"the burst never reached the success notifications: {_states(stack, devices)}\n"
                f"{stack.server.log_text()[-4000:]}"
            )
            time.sleep(0.1)
        killed = _kill_workers(stack.server)
        pool.shutdown(wait=True)
    finally:
        state.clear_faults()
    assert all(device.held is None for device in devices)  # nothing was handed out before Intune acknowledged
    _wait_for_new_workers(stack.server, killed)
    _retry_until_issued(stack, devices)
    _assert_one_valid_certificate_each(stack, devices)
    for device in devices:
        assert device.held is not None
        acknowledged = {int(n["notification"]["certificateSerialNumber"], 16) for n in state.notifications
                        if n["type"] == "success" and n["transactionId"] == device.transaction_id}
        assert acknowledged == {device.held.serial_number}
