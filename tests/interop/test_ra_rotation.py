"""RA rotation without an outage, on a real ``scep-server serve`` (gunicorn, 2 workers), never restarted.

A device fetched GetCACert before ``scep-server ca rotate-ra`` and encrypts to the RA it got: it must
still enroll during the grace period, and its CertRep must be signed by that RA (the only one it
knows). A device that fetches GetCACert after the rotation gets the new RA within seconds, from every
worker, and enrolls with it; micromdm's ``scepclient`` (which fetches GetCACert itself) too.

Each request goes on a fresh connection so that both workers answer some of them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from scep_server.scep.client import (
    CertRep,
    build_csr,
    build_pkcsreq,
    parse_cert_rep,
    pick_recipient,
    self_signed_signer,
)
from scep_server.scep.types import PKIStatus
from scep_server.simulator.http import ScepHttpClient
from tests.interop.harness import explain, run_scepclient, unique_cn
from tests.support.servers import CHALLENGE, LEGACY_PROFILE, ScepServerProcess, server_config

pytestmark = pytest.mark.interop

PICKUP_DEADLINE = 10.0  # seconds: every worker looks at the keyring at most once a second
FETCHES = 12  # fresh connections: both workers answer some


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScepServerProcess]:
    root = tmp_path_factory.mktemp("ra-rotation")
    with ScepServerProcess(root, server_config(root / "var"), workers=2, threads=2) as process:
        yield process


def fresh_client(server: ScepServerProcess) -> ScepHttpClient:
    session = requests.Session()
    session.trust_env = False
    session.headers["Connection"] = "close"
    return ScepHttpClient(server.url(), session=session, timeout=30)


def get_ca_cert(server: ScepServerProcess) -> list[x509.Certificate]:
    client = fresh_client(server)
    try:
        return client.get_ca_cert()
    finally:
        client.session.close()


def enroll(
    server: ScepServerProcess, recipient: x509.Certificate, trusted: list[x509.Certificate]
) -> tuple[CertRep, rsa.RSAPrivateKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name.from_rfc4514_string(f"CN={unique_cn('rotation')},O=Interop Org")
    signer = self_signed_signer(key, subject)
    request = build_pkcsreq(
        build_csr(key, subject, challenge_password=CHALLENGE), signer_cert=signer, signer_key=key,
        recipient=recipient,
    )
    client = fresh_client(server)
    try:
        reply = client.pki_operation(request.der)
    finally:
        client.session.close()
    # trusted_signers: the CertRep must be signed by one of these, or parse_cert_rep raises.
    rep = parse_cert_rep(reply, request=request, signer_key=key, signer_cert=signer, trusted_signers=trusted)
    return rep, key


def test_a_rotated_ra_is_served_at_once_and_the_old_one_still_enrolls(
    server: ScepServerProcess, tmp_path: Path
) -> None:
    assert server.proc is not None
    pid = server.proc.pid
    cached = get_ca_cert(server)  # what a device holds from before the rotation
    old_ra, ca = pick_recipient(cached), server.ca_certificate()
    assert enroll(server, old_ra, [old_ra])[0].status is PKIStatus.SUCCESS

    rotated = server.cli("ca", "rotate-ra")
    assert rotated.returncode == 0, rotated.stdout + rotated.stderr
    rotated_at = time.monotonic()

    new_ra = wait_for_new_ra(server, old_ra)
    picked_up_after = time.monotonic() - rotated_at
    assert picked_up_after < PICKUP_DEADLINE, f"the new RA took {picked_up_after:.1f} s to be served"
    new_ra.verify_directly_issued_by(ca)
    for _ in range(FETCHES):  # from now on every worker hands out the new RA
        assert pick_recipient(get_ca_cert(server)) == new_ra

    # The device that cached the old RA: its requests are opened with the old key, and every CertRep
    # is signed by the old RA (parse_cert_rep trusts nothing else here).
    for _ in range(FETCHES // 2):
        rep, key = enroll(server, old_ra, [old_ra])
        assert rep.status is PKIStatus.SUCCESS, rep
        rep.certificate_for(key.public_key()).verify_directly_issued_by(ca)
    # A device that fetched after the rotation: the new RA, signed by the new RA.
    for _ in range(FETCHES // 2):
        assert enroll(server, new_ra, [new_ra])[0].status is PKIStatus.SUCCESS

    run = run_scepclient(server.url(LEGACY_PROFILE), tmp_path, CHALLENGE, unique_cn("scepclient-rotated"))
    assert run.ok, explain(run, server)
    run.certificate().verify_directly_issued_by(ca)

    assert server.proc is not None and server.proc.pid == pid and server.proc.poll() is None, "the server restarted"
    shown = server.cli("ca", "show")
    assert f"{old_ra.serial_number:x}" in shown.stdout.lower(), shown.stdout  # the previous RA, in its grace


def wait_for_new_ra(server: ScepServerProcess, old_ra: x509.Certificate) -> x509.Certificate:
    deadline = time.monotonic() + PICKUP_DEADLINE
    while time.monotonic() < deadline:
        served = pick_recipient(get_ca_cert(server))
        if served != old_ra:
            return served
        time.sleep(0.1)
    raise AssertionError(f"GetCACert still hands out the old RA {PICKUP_DEADLINE} s after the rotation")
