"""Intune's revocation requests end to end: emulator queue → our worker → store, CRL, OCSP → results."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from scep_server.cli import main
from scep_server.intune.client import IntuneClient
from scep_server.pki.reasons import CRLReason
from scep_server.runtime import revocation_sync
from scep_server.scep.types import PKIStatus

from .intune_env import IntuneEnv, enroll


def _sync(env: IntuneEnv) -> None:
    runtime = env.server.runtime
    client = IntuneClient(env.config.intune)
    try:
        revocation_sync(env.config, runtime.store, client, runtime.revocations).run_safely()
    finally:
        client.close()


def _ocsp_status(env: IntuneEnv, cert: x509.Certificate) -> ocsp.OCSPCertStatus:
    request = ocsp.OCSPRequestBuilder().add_certificate(cert, env.server.ca.ca_cert, hashes.SHA1()).build()
    answer = env.server.http.post(
        "/ocsp", data=request.public_bytes(serialization.Encoding.DER),
        headers={"Content-Type": "application/ocsp-request"},
    )
    assert answer.status_code == 200
    return ocsp.load_der_ocsp_response(answer.data).certificate_status


def _enroll_devices(env: IntuneEnv, count: int) -> list[x509.Certificate]:
    certs = []
    for index in range(count):
        reply, device, _ = enroll(env, subject=f"CN=revocable-{index}")
        assert reply.status is PKIStatus.SUCCESS
        certs.append(reply.certificate_for(device.key.public_key()))
    return certs


def _results(env: IntuneEnv) -> dict[str, str]:
    """Accepted uploads: requestContext → errorCode."""
    return {r["requestContext"]: r["errorCode"] for r in env.state.revocation_results if r["accepted"]}


def test_intune_revocations_round_trip(intune_env: IntuneEnv) -> None:
    certs = _enroll_devices(intune_env, 5)
    issuer = intune_env.server.ca.issuer_name
    already = certs[4]
    intune_env.server.runtime.revocations.revoke(already.serial_number, reason=CRLReason.KEY_COMPROMISE)
    contexts = [intune_env.state.queue_revocation(f"{c.serial_number:X}", issuer) for c in certs[:3]]
    unknown = intune_env.state.queue_revocation("0DEADBEEF0", issuer)
    conflict = intune_env.state.queue_revocation(f"{already.serial_number:X}", issuer)

    _sync(intune_env)

    for cert in certs[:3]:
        assert _ocsp_status(intune_env, cert) is ocsp.OCSPCertStatus.REVOKED
    assert _ocsp_status(intune_env, certs[3]) is ocsp.OCSPCertStatus.GOOD
    results = _results(intune_env)
    assert [results[c] for c in contexts] == ["0", "0", "0"]
    assert results[unknown] == "4004" and results[conflict] == "4005"
    crl = x509.load_der_x509_crl(intune_env.server.http.get("/crl/t.crl").data)
    for cert in certs[:3]:
        assert crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None


def test_results_survive_failed_uploads_and_arrive_once(intune_env: IntuneEnv) -> None:
    cert = _enroll_devices(intune_env, 1)[0]
    context = intune_env.state.queue_revocation(f"{cert.serial_number:X}", intune_env.server.ca.issuer_name)
    intune_env.state.inject_fault("uploadRevocationResults", status=503)
    _sync(intune_env)
    _sync(intune_env)  # the request is downloaded again; the certificate is not revoked twice
    assert _ocsp_status(intune_env, cert) is ocsp.OCSPCertStatus.REVOKED
    assert context not in _results(intune_env)
    intune_env.state.clear_faults()
    _sync(intune_env)
    _sync(intune_env)  # acknowledged: nothing is sent again
    uploads = [r for r in intune_env.state.revocation_results if r["requestContext"] == context and r["accepted"]]
    assert len(uploads) == 1 and uploads[0]["errorCode"] == "0"
    assert intune_env.state.counters()["uploadRevocationResults"] >= 3


def test_sync_revocations_command(intune_env: IntuneEnv, capsys: pytest.CaptureFixture[str]) -> None:
    cert = _enroll_devices(intune_env, 1)[0]
    intune_env.state.queue_revocation(f"{cert.serial_number:X}", intune_env.server.ca.issuer_name)
    config_path = intune_env.tmp_path / "scep.yaml"
    assert main(["--config", str(config_path), "intune", "sync-revocations"]) == 0
    assert "downloaded 1, revoked 1, uploaded 1 results" in capsys.readouterr().out
    assert _ocsp_status(intune_env, cert) is ocsp.OCSPCertStatus.REVOKED


def test_rounds_take_turns_across_processes(intune_env: IntuneEnv) -> None:
    """While one process holds the sync lock, another process's round is skipped, not run twice."""
    import fcntl

    cert = _enroll_devices(intune_env, 1)[0]
    intune_env.state.queue_revocation(f"{cert.serial_number:X}", intune_env.server.ca.issuer_name)
    lock_path = intune_env.tmp_path / "var" / "intune-revocations.lock"
    with open(lock_path, "a+b") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        _sync(intune_env)
        assert _ocsp_status(intune_env, cert) is ocsp.OCSPCertStatus.GOOD
        assert intune_env.state.counters().get("downloadRevocationRequests", 0) == 0
        fcntl.flock(held, fcntl.LOCK_UN)
    _sync(intune_env)
    assert _ocsp_status(intune_env, cert) is ocsp.OCSPCertStatus.REVOKED
