"""The device lifecycle sync end to end, driven through the emulator's admin API: devices enrolled with their
Intune device id, then deleted, retired, disabled in Entra ID; one sync; OCSP, the CRL and `certs show` follow.
Also: Graph's throttling is honoured, a certificate without a device id is left alone, `intune check` proves
the Graph permissions, and a reissue waits for one Intune revocation round first."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from scep_server.ca.authority import init_ca
from scep_server.cli import main
from scep_server.config import ServerConfig, load_config
from scep_server.emulator import EmulatorServer, IntuneEmulator
from scep_server.intune.contract import ChallengeSpec
from scep_server.runtime import build_runtime
from scep_server.scep.types import PKIStatus
from scep_server.service.device_lifecycle import DeviceLifecycleSync
from scep_server.web import create_app

from .conftest import Device, ScepTestServer, device_key

PROFILES = """
profiles:
  devices:
    challenge: {type: intune}
    device_lifecycle: ocsp-only
"""


@dataclass
class Lab:
    emulator: EmulatorServer
    server: ScepTestServer
    config: ServerConfig
    config_path: Path

    def admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One call of the emulator's admin API; its JSON answer."""
        answer = requests.request(method, f"{self.emulator.url}/admin/{path}", json=body, timeout=10,
                                  headers={"Authorization": f"Bearer {self.emulator.admin_token}"},
                                  verify=str(self.emulator.ca_bundle))
        assert answer.status_code < 300, answer.text
        return answer.json() if answer.content else None

    @property
    def sync(self) -> DeviceLifecycleSync:
        sync = self.server.runtime.device_lifecycle
        assert sync is not None, "a profile has the device lifecycle on: the runtime has its sync"
        return sync


API_TOKEN = "lifecycle-api-token"


def _config(tmp_path: Path, intune: dict[str, Any], profiles: str = PROFILES) -> tuple[ServerConfig, Path]:
    intune = {**intune, "connect_timeout": 2, "read_timeout": 5, "max_retries": 1, "backoff_base": 0.01,
              "backoff_max": 0.05}
    path = tmp_path / "scep.yaml"
    path.write_text(f"data_dir: {tmp_path / 'var'}\nadmin_token: {{value: {API_TOKEN}}}\n"
                    "ca: {name: t, subject: 'CN=Lifecycle CA', key_size: 2048}\n"
                    f"intune: {json.dumps(intune)}\n{profiles}")
    return load_config(path, env={}), path





@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    with EmulatorServer(IntuneEmulator(), state_dir=tmp_path / "emulator") as emulator:
        emulator.register_client()
        config, path = _config(tmp_path, dict(emulator.settings()))
        init_ca(config.ca_dir, config.ca, None)
        runtime = build_runtime(config)
        app = create_app(config, runtime_override=runtime, start_background=False)
        try:
            yield Lab(emulator, ScepTestServer(runtime, app.test_client(), tmp_path / "var"), config, path)
        finally:
            runtime.close()


def _csr(spec: dict[str, Any], device: Device, challenge: str) -> x509.CertificateSigningRequest:
    """The CSR the Intune profile behind ``spec`` asks for, its SANs (the IntuneDeviceId:// URI) included."""
    sans = [x509.UniformResourceIdentifier(san["value"]) if san["type"] == "uri" else x509.DNSName(san["value"])
            for san in spec["sans"]]
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name.from_rfc4514_string(spec["subject"]))
        .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_attribute(x509.oid.AttributeOID.CHALLENGE_PASSWORD, challenge.encode())
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(device.key, hashes.SHA256())


def _enroll(lab: Lab, minted: dict[str, Any]) -> x509.Certificate:
    spec = minted["spec"]
    device = Device(key=device_key(), common_name="signer")
    built = lab.server.pkcsreq(device, csr=_csr(spec, device, minted["challenge"]),
                               transaction_id=uuid.uuid4().hex.upper())
    reply = lab.server.send(built, device, profile="devices")
    assert reply.status is PKIStatus.SUCCESS, reply
    return reply.certificate_for(device.key.public_key())


def _new_device(lab: Lab, name: str) -> dict[str, Any]:
    device: dict[str, Any] = lab.admin("POST", "devices", {"name": name, "os": "Windows"})
    return device


def _enroll_device(lab: Lab, name: str) -> tuple[dict[str, Any], x509.Certificate]:
    device = _new_device(lab, name)
    return device, _enroll(lab, lab.admin("POST", f"devices/{device['intuneDeviceId']}/challenges", {}))


def _ocsp(lab: Lab, cert: x509.Certificate) -> ocsp.OCSPResponse:
    request = ocsp.OCSPRequestBuilder().add_certificate(cert, lab.server.ca.ca_cert, hashes.SHA1()).build()
    answer = lab.server.http.post("/ocsp", data=request.public_bytes(serialization.Encoding.DER),
                                  headers={"Content-Type": "application/ocsp-request"})
    assert answer.status_code == 200
    return ocsp.load_der_ocsp_response(answer.data)


def _status(lab: Lab, cert: x509.Certificate) -> ocsp.OCSPCertStatus:
    return _ocsp(lab, cert).certificate_status


def _crl_serials(lab: Lab) -> set[int]:
    crl = x509.load_der_x509_crl(lab.server.http.get("/crl/t.crl").data)
    return {entry.serial_number for entry in crl}


def test_certificates_follow_their_devices_through_one_sync(
    lab: Lab, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    names = ("deleted-in-intune", "retired", "disabled", "deleted-in-entra", "fine-1", "fine-2")
    enrolled = {name: _enroll_device(lab, name) for name in names}
    devices = {name: device for name, (device, _) in enrolled.items()}
    certs = {name: cert for name, (_, cert) in enrolled.items()}
    # A device whose certificate does not carry its id: its deletion cannot touch that certificate.
    hidden = _new_device(lab, "no-device-id")
    spec = ChallengeSpec(subject="CN=no-device-id", device_id=hidden["intuneDeviceId"])
    unbound = _enroll(lab, lab.admin("POST", "challenges", spec.to_json()))
    for cert in [*certs.values(), unbound]:
        assert _status(lab, cert) is ocsp.OCSPCertStatus.GOOD  # and kept in the OCSP cache

    lab.admin("POST", f"devices/{devices['deleted-in-intune']['intuneDeviceId']}/delete-intune")
    lab.admin("POST", f"devices/{devices['retired']['intuneDeviceId']}/retire")
    lab.admin("POST", f"devices/{devices['disabled']['entraDeviceId']}/disable")
    lab.admin("POST", f"devices/{devices['deleted-in-entra']['entraDeviceId']}/delete-entra")
    lab.admin("POST", f"devices/{hidden['intuneDeviceId']}/delete-intune")
    lab.admin("POST", "faults", {"endpoint": "graph.batch", "status": 429, "retryAfter": 1, "times": 1})
    batches = lab.admin("GET", "counters")["graph.batch"]

    with caplog.at_level(logging.INFO, logger="scep_server.intune.graph_devices"):
        report = lab.sync.run_pass()

    assert "waiting 1 s as Retry-After asks" in caplog.text
    assert lab.admin("GET", "counters")["graph.batch"] >= batches + 2  # the throttled batch was sent again
    assert (report.checked, report.revoked, report.held, report.released) == (6, 3, 1, 0)
    on_crl = _crl_serials(lab)
    for name in ("deleted-in-intune", "retired", "deleted-in-entra"):
        answer = _ocsp(lab, certs[name])
        assert answer.certificate_status is ocsp.OCSPCertStatus.REVOKED, name
        assert answer.revocation_reason is x509.ReasonFlags.cessation_of_operation
        assert certs[name].serial_number in on_crl
    held = _ocsp(lab, certs["disabled"])
    assert held.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert held.revocation_reason is x509.ReasonFlags.certificate_hold
    assert certs["disabled"].serial_number not in on_crl
    for cert in (certs["fine-1"], certs["fine-2"], unbound):
        assert _status(lab, cert) is ocsp.OCSPCertStatus.GOOD
        assert cert.serial_number not in on_crl

    assert main(["--config", str(lab.config_path), "certs", "show", f"{certs['disabled'].serial_number:x}"]) == 0
    shown = capsys.readouterr().out
    assert devices["disabled"]["intuneDeviceId"] in shown and "on hold since" in shown

    lab.admin("POST", f"devices/{devices['disabled']['entraDeviceId']}/enable")
    assert lab.sync.run_pass().released == 1
    assert _status(lab, certs["disabled"]) is ocsp.OCSPCertStatus.GOOD
    assert certs["disabled"].serial_number not in _crl_serials(lab)


def test_intune_check_proves_the_graph_permissions(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(lab.config_path), "intune", "check"]) == 0
    out = capsys.readouterr().out
    assert "OK    graph-permission DeviceManagementManagedDevices.Read.All" in out
    assert "OK    graph-permission Device.Read.All" in out
    client_id = lab.config.intune.client_id
    lab.admin("POST", f"apps/{client_id}/roles", {"graphRoles": ["Application.Read.All",
                                                                 "DeviceManagementManagedDevices.Read.All"]})
    assert main(["--config", str(lab.config_path), "intune", "check"]) == 1
    captured = capsys.readouterr()
    assert "FAIL  graph-permission Device.Read.All" in captured.out
    assert "grant the app the Microsoft Graph application permission Device.Read.All" in captured.out


def test_a_reissue_waits_for_one_revocation_round_first(lab: Lab) -> None:
    device, first = _enroll_device(lab, "reissued")
    # Intune queues the old certificate's revocation as the profile changes, and the device enrolls again.
    lab.admin("POST", "revocations", {"serials": [f"{first.serial_number:X}"],
                                      "issuerName": lab.server.ca.issuer_name})
    second = _enroll(lab, lab.admin("POST", f"devices/{device['intuneDeviceId']}/challenges", {}))
    assert _status(lab, first) is ocsp.OCSPCertStatus.REVOKED  # revoked before the new one was issued
    assert _status(lab, second) is ocsp.OCSPCertStatus.GOOD
    assert [r["accepted"] for r in lab.admin("GET", "revocation-results")["value"]] == [True]


def test_the_admin_api_finds_a_certificate_by_its_device_and_shows_its_hold(lab: Lab) -> None:
    device, cert = _enroll_device(lab, "searched")
    _enroll_device(lab, "other")
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    found = lab.server.http.get(f"/api/v1/certificates?device_id={device['intuneDeviceId'].upper()}", headers=auth)
    assert found.status_code == 200
    [row] = found.get_json()["items"]
    assert row["serial"] == f"{cert.serial_number:x}"
    assert (row["device_id"], row["device_id_kind"], row["device_hold_at"]) == (
        device["intuneDeviceId"].lower(), "intune", None)
    lab.admin("POST", f"devices/{device['entraDeviceId']}/disable")
    assert lab.sync.run_pass().held == 1
    shown = lab.server.http.get(f"/api/v1/certificates/{cert.serial_number:x}", headers=auth).get_json()
    assert shown["device_hold_at"] is not None and shown["status"] == "valid"  # held for OCSP, not revoked
