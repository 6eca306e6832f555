"""The device lifecycle scenario: devices enroll, then Intune and Entra ID stop vouching for some of them.

For each of N devices the scenario creates a managed device and its Entra ID device in the emulator,
mints the device's challenge (its Intune id as the challenge's device id; the profile adds the SAN URI
``IntuneDeviceId://<intune device id>``, as Intune SCEP profiles do), enrolls over SCEP and checks the
certificate against the profile. Once every device has enrolled, it applies ``changes`` in turn, one
per device (by default: deleted in Intune, retired in Intune, disabled in Entra ID, deleted in Entra
ID); devices beyond the changes stay as they are, a control group. The report (``to_json``) says
what was done to which device and which certificate it holds, so a test can then check what a CA's
device lifecycle sync does with each.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from scep_server.intune.contract import ChallengeSpec
from scep_server.scep.client import ScepClientError
from scep_server.simulator import checks
from scep_server.simulator.admin import DEVICE_CHANGES, EmulatorAdmin, EmulatorAdminError
from scep_server.simulator.device import CertificateRequest, Device, build_csr, generate_key, self_signed_signer
from scep_server.simulator.matrix import PROFILES, ScepProfile
from scep_server.simulator.runner import Settings

__all__ = ["CHANGES", "LifecycleDevice", "LifecycleReport", "LifecycleScenario", "device_id_uri"]

CHANGES = ("delete-intune", "retire", "disable", "delete-entra")
OPERATING_SYSTEMS = ("Windows", "iOS", "Android", "macOS")
log = logging.getLogger("scep_server.simulator.lifecycle")


def device_id_uri(intune_device_id: str) -> str:
    return f"IntuneDeviceId://{intune_device_id}"


@dataclass(frozen=True, slots=True)
class LifecycleDevice:
    """One device: its ids, its enrollment and certificate, the change applied, its state afterwards."""

    name: str
    intune_device_id: str
    entra_device_id: str
    os: str
    enrollment: str = "not enrolled"
    transaction_id: str | None = None
    certificate: x509.Certificate | None = None
    change: str | None = None
    state: dict[str, Any] | None = None
    problems: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "intuneDeviceId": self.intune_device_id, "entraDeviceId": self.entra_device_id,
                "os": self.os, "enrollment": self.enrollment, "transactionId": self.transaction_id,
                "certificate": None if self.certificate is None else _certificate_json(self.certificate),
                "change": self.change, "state": self.state, "problems": list(self.problems)}


@dataclass(frozen=True, slots=True)
class LifecycleReport:
    scep_url: str
    devices: tuple[LifecycleDevice, ...]

    @property
    def passed(self) -> bool:
        return all(device.passed for device in self.devices)

    def to_json(self) -> dict[str, Any]:
        changes: dict[str, int] = {}
        for device in self.devices:
            if device.change is not None:
                changes[device.change] = changes.get(device.change, 0) + 1
        return {"scenario": "lifecycle", "scepUrl": self.scep_url, "passed": self.passed,
                "summary": {"devices": len(self.devices),
                            "enrolled": sum(d.certificate is not None for d in self.devices),
                            "changes": changes, "unchanged": sum(d.change is None for d in self.devices)},
                "devices": [device.to_json() for device in self.devices]}


class LifecycleScenario:
    """Creates, enrolls and then changes devices through ``admin`` (the emulator) and the SCEP server."""

    def __init__(self, admin: EmulatorAdmin, settings: Settings, *, profile: str = "intune",
                 changes: Sequence[str] = CHANGES) -> None:
        unknown = [change for change in changes if change not in DEVICE_CHANGES]
        if unknown:
            raise ValueError(f"unknown device change(s) {', '.join(unknown)}; known: {', '.join(DEVICE_CHANGES)}")
        self.admin = admin
        self.settings = settings
        self.profile = PROFILES.get(profile, ScepProfile(profile))
        self.changes = tuple(changes)

    @property
    def url(self) -> str:
        return self.settings.url_for_profile(self.profile.name)

    def run(self, devices: int = len(CHANGES), concurrency: int = 4) -> LifecycleReport:
        """Create ``devices`` devices, enroll them all, then apply the changes (one per device, in order)."""
        created = [self._create(index) for index in range(devices)]
        with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="lifecycle") as pool:
            enrolled = list(pool.map(self._enroll, created))
        changed = [self._change(device, self.changes[i] if i < len(self.changes) else None)
                   for i, device in enumerate(enrolled)]
        return LifecycleReport(self.url, tuple(changed))

    def _create(self, index: int) -> LifecycleDevice:
        os = OPERATING_SYSTEMS[index % len(OPERATING_SYSTEMS)]
        name = f"LIFECYCLE-{index + 1:03d}-{secrets.token_hex(3).upper()}"
        view = self.admin.create_device(name, os)
        return LifecycleDevice(name, str(view["intuneDeviceId"]), str(view["entraDeviceId"]), os)

    def _enroll(self, device: LifecycleDevice) -> LifecycleDevice:
        try:
            with Device(self.url, timeout=self.settings.timeout, poll_interval=self.settings.poll_interval,
                        http_timeout=self.settings.http_timeout) as client:
                return self._enroll_with(client, device)
        except (ScepClientError, EmulatorAdminError) as exc:
            log.debug("device %s did not enroll", device.name, exc_info=True)
            return replace(device, enrollment="ERROR", problems=(f"enrollment: {exc}",))

    def _enroll_with(self, client: Device, device: LifecycleDevice) -> LifecycleDevice:
        ca = client.discover()
        asked = ChallengeSpec(subject=f"CN={device.name}", device_id=device.intune_device_id,
                              user_id=str(uuid.uuid4()), validity_days=self.profile.validity_days)
        challenge, spec = self.admin.mint_device_challenge(device.intune_device_id, asked)
        key = generate_key(spec.key_size)
        csr = build_csr(key, CertificateRequest.from_spec(spec), challenge)
        enrollment = client.enroll(ca, csr, self_signed_signer(key, csr.subject), digest=spec.hash)
        done = replace(device, enrollment=enrollment.describe(), transaction_id=enrollment.transaction_id,
                       certificate=enrollment.certificate)
        if enrollment.certificate is None:
            return replace(done, problems=(f"no certificate: {enrollment.describe()}",))
        expected = checks.Expected.from_spec(spec, signature_hash=self.profile.signature_hash,
                                             validity_days=self.profile.validity_days,
                                             ca_certificates=ca.certificates, issued_at=datetime.now(UTC))
        found = checks.problems(enrollment.certificate, expected)
        if device_id_uri(device.intune_device_id) not in _san_uris(enrollment.certificate):
            found.append(f"the certificate lacks the SAN URI {device_id_uri(device.intune_device_id)}")
        return replace(done, problems=tuple(found))

    def _change(self, device: LifecycleDevice, change: str | None) -> LifecycleDevice:
        try:
            state = self.admin.change_device(device.intune_device_id, change) if change else \
                self.admin.device(device.intune_device_id)
        except EmulatorAdminError as exc:
            return replace(device, change=change, problems=(*device.problems, f"{change or 'state'}: {exc}"))
        return replace(device, change=change, state=_state(state))


def _state(view: dict[str, Any]) -> dict[str, Any]:
    keys = ("managementState", "accountEnabled", "intuneDeleted", "entraDeleted", "entraRemoval")
    return {key: view.get(key) for key in keys}


def _san_uris(certificate: x509.Certificate) -> list[str]:
    try:
        sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(uri) for uri in sans.get_values_for_type(x509.UniformResourceIdentifier)]


def _certificate_json(certificate: x509.Certificate) -> dict[str, Any]:
    return {"serialNumber": format(certificate.serial_number, "X"),
            "thumbprint": certificate.fingerprint(hashes.SHA1()).hex().upper(),
            "subject": certificate.subject.rfc4514_string(), "sanUris": _san_uris(certificate),
            "notAfter": certificate.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")}
