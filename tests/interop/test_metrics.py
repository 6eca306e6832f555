"""/metrics of ``scep-server serve`` (gunicorn, 2 workers) after real enrollments, and beside a second instance.

The samples of every worker are aggregated: the counts asserted are exact for the profile the test
uses alone, whichever worker answered each request (every request is sent on a new connection, and the
test checks that both workers wrote samples). The gauges read from the store are checked against rows
put in the server's own SQLite database, and the CRL and OCSP ones against what the server publishes.
A second instance on the same data_dir must leave the first one's metrics alone, remove the
directories of instances that have ended, and remove its own when it stops.
"""

from __future__ import annotations

import fcntl
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from prometheus_client.parser import text_string_to_metric_families

from scep_server.scep import client
from scep_server.scep.types import PKIStatus
from scep_server.simulator.http import ScepHttpClient
from scep_server.store import Store
from tests.support.processes import HOST
from tests.support.servers import CHALLENGE, ScepServerProcess

pytestmark = pytest.mark.interop

COUNTED = "counted"  # the profile only test_enrollments_are_counted_across_workers enrolls on
CONFIG = """\
data_dir: var
ca:
  name: metrics-ca
  key_size: 2048
  key_passphrase: {{value: "metrics-ca-passphrase"}}
profiles:
  default:
    challenge: {{type: static, secret: {{value: "{challenge}"}}}}
  {counted}:
    challenge: {{type: static, secret: {{value: "{challenge}"}}}}
"""
STATUS_MAX_AGE = 5.0  # service/status.py keeps a worker's store readings this long
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScepServerProcess]:
    root = tmp_path_factory.mktemp("metrics")
    with ScepServerProcess(root, CONFIG.format(challenge=CHALLENGE, counted=COUNTED), workers=2) as started:
        yield started


def scrape(base_url: str) -> Samples:
    response = _get(f"{base_url}/metrics")
    assert response.status_code == 200
    assert int(response.headers["Content-Length"]) > 0
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def _get(url: str, **headers: str) -> requests.Response:
    """A request on a connection of its own, so that either worker may take it."""
    assert url.startswith(f"http://{HOST}:")
    with requests.Session() as session:
        session.trust_env = False
        return session.get(url, headers={"Connection": "close", **headers}, timeout=30)


@dataclass
class Device:
    key: rsa.RSAPrivateKey
    name: str
    transaction_id: str

    @classmethod
    def new(cls, name: str) -> Device:
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=2048), name, uuid.uuid4().hex)

    def enroll(self, server: ScepServerProcess, profile: str, challenge: str = CHALLENGE) -> client.CertRep:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.name)])
        signer = client.self_signed_signer(self.key, subject)
        ra = x509.load_pem_x509_certificate(server.ra_pem_path.read_bytes())
        built = client.build_pkcsreq(client.build_csr(self.key, subject, challenge_password=challenge),
                                     signer_cert=signer, signer_key=self.key, recipient=ra,
                                     transaction_id=self.transaction_id)
        with requests.Session() as session:
            session.trust_env = False
            session.headers["Connection"] = "close"
            der = ScepHttpClient(server.url(profile), session=session).pki_operation(built.der)
        return client.parse_cert_rep(der, request=built, signer_key=self.key, signer_cert=signer,
                                     trusted_signers=[ra, server.ca_certificate()])


def _worker_pids_with_samples(directory: Path) -> set[str]:
    return {path.stem.rsplit("_", 1)[1] for path in directory.glob("counter_*.db")}


def _instance_dirs(data_dir: Path) -> list[Path]:
    return sorted(path for path in (data_dir / "metrics").iterdir() if path.is_dir())


def _until(check: Callable[[], bool], what: str, timeout: float = 3 * STATUS_MAX_AGE) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.5)


def test_enrollments_are_counted_across_workers(server: ScepServerProcess) -> None:
    issued = [Device.new(f"counted-{n}") for n in range(4)]
    for device in issued:
        assert device.enroll(server, COUNTED).status is PKIStatus.SUCCESS
    assert Device.new("wrong-challenge").enroll(server, COUNTED, "not-the-challenge").status is PKIStatus.FAILURE
    assert issued[0].enroll(server, COUNTED).status is PKIStatus.SUCCESS  # the same transaction: resent
    (directory,) = _instance_dirs(server.data_dir)
    for _ in range(60):  # until both workers have answered something (each request on a new connection)
        if len(_worker_pids_with_samples(directory)) >= 2:
            break
        _get(server.url(path="/scep") + "?operation=GetCACaps")
    assert len(_worker_pids_with_samples(directory)) == 2, sorted(directory.iterdir())

    samples = scrape(server.base_url)
    assert value(samples, "scep_certificates_issued_total", profile=COUNTED) == 4
    assert value(samples, "scep_enrollments_total", profile=COUNTED, outcome="issued") == 4
    assert value(samples, "scep_enrollments_total", profile=COUNTED, outcome="failed") == 1
    assert value(samples, "scep_enrollments_total", profile=COUNTED, outcome="resent") == 1
    assert value(samples, "scep_enrollments_total", profile=COUNTED, outcome="pending") is None
    ok = {"profile": COUNTED, "message_type": "PKCS_REQ"}
    assert value(samples, "scep_pki_operations_total", **ok, outcome="SUCCESS") == 5
    assert value(samples, "scep_pki_operations_total", **ok, outcome="FAILURE:BAD_REQUEST") == 1
    assert value(samples, "scep_requests_total", profile=COUNTED, operation="PKIOperation", result="answered") == 6
    assert value(samples, "scep_pki_operation_seconds_count", profile=COUNTED) == 6
    assert value(samples, "scep_pkioperations_in_progress", profile=COUNTED) == 0


def test_the_store_gauges_count_the_outbox_and_the_deferred_validations(server: ScepServerProcess) -> None:
    now = datetime.now(UTC)
    with Store.open(f"sqlite:///{(server.data_dir / 'scep-server.db').resolve()}") as store:
        entries = [store.outbox_add(kind="failureNotification", transaction_id=f"t{n}", payload={"n": n})
                   for n in range(6)]
        store.outbox_dead(entries[0], at=now, error="given up")
        store.outbox_dead(entries[1], at=now, error="given up")
        store.outbox_delivered(entries[2], at=now)
        for n in range(2):
            store.claim_transaction(profile="default", transaction_id=f"deferred-{n}", message_type=19,
                                    csr_der=b"csr", requester_ip=None)
            store.defer_transaction(profile="default", transaction_id=f"deferred-{n}",
                                    next_attempt_at=now + timedelta(hours=1), error="Intune unreachable")
    expected = {"scep_store_up": 1, "scep_intune_outbox_pending": 3, "scep_intune_outbox_dead": 2,
                "scep_deferred_validations_pending": 2}

    def shown() -> bool:  # by both workers, once their kept readings have aged
        return all({name: value(scrape(server.base_url), name) for name in expected} == expected for _ in range(4))

    _until(shown, "the store gauges never showed the rows")


def test_the_crl_and_ocsp_gauges_are_those_published(server: ScepServerProcess) -> None:
    crl = x509.load_der_x509_crl(_get(f"{server.base_url}/crl/metrics-ca.crl").content)
    responder = x509.load_pem_x509_certificate((server.data_dir / "ca" / "ocsp.pem").read_bytes())
    assert crl.next_update_utc is not None

    def shown() -> bool:
        samples = scrape(server.base_url)
        next_update = value(samples, "scep_crl_next_update_timestamp_seconds")
        return next_update is not None and abs(next_update - crl.next_update_utc.timestamp()) < 1

    _until(shown, "the CRL gauges never showed the published CRL")
    samples = scrape(server.base_url)
    this_update = value(samples, "scep_crl_this_update_timestamp_seconds")
    assert this_update is not None and abs(this_update - crl.last_update_utc.timestamp()) < 1
    age = value(samples, "scep_crl_age_seconds")
    assert age is not None and 0 <= age <= time.time() - crl.last_update_utc.timestamp() + 1
    assert value(samples, "scep_ocsp_responder_not_after_seconds") == responder.not_valid_after_utc.timestamp()
    responder_age = value(samples, "scep_ocsp_responder_age_seconds")
    assert responder_age is not None
    assert abs(responder_age - (time.time() - responder.not_valid_before_utc.timestamp())) < 2 * STATUS_MAX_AGE


def _workers(server: ScepServerProcess) -> set[int]:
    assert server.proc is not None
    master = server.proc.pid
    return {int(pid) for pid in Path(f"/proc/{master}/task/{master}/children").read_text().split()}


def test_a_worker_that_exits_leaves_the_metrics_in_place(server: ScepServerProcess) -> None:
    assert Device.new("before-restart").enroll(server, "default").status is PKIStatus.SUCCESS
    before = scrape(server.base_url)
    (directory,) = _instance_dirs(server.data_dir)
    old = _workers(server)
    os.kill(min(old), signal.SIGTERM)  # a graceful exit, as after max_requests or a timeout: gunicorn replaces it

    def replaced() -> bool:
        now = _workers(server)
        return len(now) == server.workers and now != old

    _until(replaced, "gunicorn did not replace the worker")
    assert _instance_dirs(server.data_dir) == [directory]
    after = scrape(server.base_url)
    for name in ("scep_certificates_issued_total", "scep_enrollments_total"):
        kept = {key: count for key, count in before.items() if key[0] == name}
        assert kept and all(after[key] == count for key, count in kept.items()), name


class SecondInstance(ScepServerProcess):
    """Another ``serve`` on the data_dir (and so the CA and database) of a running one."""

    def __init__(self, first: ScepServerProcess, tmp_path: Path) -> None:
        config = first.config_yaml.replace("data_dir: var", f"data_dir: {first.data_dir}")
        super().__init__(tmp_path, config, workers=1)

    def _prepare(self) -> None:
        self.config_path.write_text(self.config_yaml, encoding="utf-8")


def test_a_second_instance_leaves_the_first_ones_metrics_alone(
    server: ScepServerProcess, tmp_path: Path
) -> None:
    assert Device.new("before-second").enroll(server, "default").status is PKIStatus.SUCCESS
    before = value(scrape(server.base_url), "scep_certificates_issued_total", profile="default")
    assert before is not None and before >= 1
    (first_dir,) = _instance_dirs(server.data_dir)
    metrics_root = server.data_dir / "metrics"
    ended = metrics_root / "1-ended"  # an instance that was killed: its lock is held by no one
    ended.mkdir()
    (ended / "counter_1.db").write_bytes(b"\0" * 16)
    (metrics_root / "1-ended.lock").touch()
    orphan = metrics_root / "orphan"  # a directory whose lock file is gone
    orphan.mkdir()
    held = metrics_root / ".held.locking"  # a lock being taken right now: not to be touched
    with open(held, "w") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)
        with SecondInstance(server, tmp_path) as second:
            dirs = _instance_dirs(server.data_dir)
            assert first_dir in dirs and len(dirs) == 2, dirs
            assert not ended.exists() and not (metrics_root / "1-ended.lock").exists() and not orphan.exists()
            assert held.exists()
            assert Device.new("on-second").enroll(second, "default").status is PKIStatus.SUCCESS
            assert value(scrape(second.base_url), "scep_certificates_issued_total", profile="default") == 1
            assert value(scrape(server.base_url), "scep_certificates_issued_total", profile="default") == before
        assert _instance_dirs(server.data_dir) == [first_dir]
        assert sorted(path.name for path in metrics_root.glob("*.lock")) == [f"{first_dir.name}.lock"]
    os.unlink(held)
    assert value(scrape(server.base_url), "scep_certificates_issued_total", profile="default") == before
