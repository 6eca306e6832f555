"""Running TestMatrix rows: for each device, mint its challenge in (emulated) Intune, enroll, judge.

A row with faults runs alone, between injecting its faults and clearing them (faults apply to every
caller of the emulator); the other rows' devices run together. What Intune recorded (the success
notification of an issued certificate, the validation code of a refused one) is read once after a
batch, not per device.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa

from scep_server.intune.contract import ChallengeSpec
from scep_server.scep.client import ScepClientError
from scep_server.scep.types import FailInfo, PKIStatus
from scep_server.simulator import checks
from scep_server.simulator.admin import EmulatorAdmin, EmulatorAdminError
from scep_server.simulator.device import (
    CaInfo,
    CertificateRequest,
    Device,
    Enrollment,
    Signer,
    build_csr,
    generate_key,
    self_signed_signer,
)
from scep_server.simulator.matrix import DeviceIdentity, Expect, Row

__all__ = ["DeviceResult", "IntuneRecord", "Settings", "Simulator"]

log = logging.getLogger("scep_server.simulator")


@dataclass(frozen=True, slots=True)
class Settings:
    """Where the SCEP server is (the base URL: ``/<profile>`` is appended) and how patient devices are."""

    scep_url: str = "http://127.0.0.1:8080/scep"
    timeout: float = 60.0
    poll_interval: float = 1.0
    http_timeout: float = 30.0

    def url_for(self, row: Row) -> str:
        return self.url_for_profile(row.profile.name)

    def url_for_profile(self, profile: str) -> str:
        return f"{self.scep_url.rstrip('/')}/{profile}"


@dataclass(frozen=True, slots=True)
class IntuneRecord:
    """Something Intune must have recorded for a transaction: a success notification for the
    certificate with ``thumbprint``, or a validateRequest answered ``code``."""

    transaction_id: str
    thumbprint: str | None = None
    code: str | None = None


@dataclass(frozen=True, slots=True)
class DeviceResult:
    """One device of one row: PASS when ``problems`` is empty. ``subject`` is the device's rendered
    subject; ``certificates`` what it received (two for renewal)."""

    row: str
    device: int
    status: str
    problems: tuple[str, ...] = ()
    subject: str = ""
    transaction_ids: tuple[str, ...] = ()
    certificates: tuple[x509.Certificate, ...] = ()
    intune: tuple[IntuneRecord, ...] = field(default=(), repr=False)

    @property
    def passed(self) -> bool:
        return not self.problems

    @property
    def detail(self) -> str:
        return "; ".join(self.problems) if self.problems else self.status


@dataclass(frozen=True, slots=True)
class _Step:
    spec: ChallengeSpec
    key: rsa.RSAPrivateKey
    enrollment: Enrollment


class Simulator:
    """Enrolls simulated devices for TestMatrix rows through ``admin`` (Intune) and the SCEP server."""

    def __init__(self, admin: EmulatorAdmin, settings: Settings) -> None:
        self.admin = admin
        self.settings = settings

    def run(self, rows: Sequence[Row], devices: int = 1, concurrency: int = 4) -> list[DeviceResult]:
        """Every row's devices; results in row order, then device order."""
        self.admin.clear_faults()
        plain = [row for row in rows if not row.faults]
        results = self._batch([(row, i) for row in plain for i in range(1, devices + 1)], concurrency)
        for row in rows:
            if row.faults:
                results += self.run_row(row, devices, concurrency)
        order = {row.name: n for n, row in enumerate(rows)}
        return sorted(results, key=lambda r: (order[r.row], r.device))

    def run_row(self, row: Row, devices: int = 1, concurrency: int = 4) -> list[DeviceResult]:
        """One row's devices, with the row's faults injected around them."""
        with self._faults(row):
            results = self._batch([(row, i) for i in range(1, devices + 1)], concurrency, reconcile=False)
        return self._reconcile(results)

    def run_device(self, row: Row, index: int = 1) -> DeviceResult:
        """One device, judged on what it received (not yet on what Intune recorded: see ``run_row``)."""
        identity = DeviceIdentity.random()
        try:
            with Device(self.settings.url_for(row), timeout=self.settings.timeout,
                        poll_interval=self.settings.poll_interval, http_timeout=self.settings.http_timeout) as device:
                return self._device(device, row, index, identity)
        except (ScepClientError, EmulatorAdminError) as exc:
            log.debug("row %r device %d failed", row.name, index, exc_info=True)
            return DeviceResult(row.name, index, "ERROR", (f"ERROR: {exc}",), subject=identity.render(row.subject))

    # --- one device ---------------------------------------------------------------------------------

    def _device(self, device: Device, row: Row, index: int, identity: DeviceIdentity) -> DeviceResult:
        ca = device.discover()
        hash_name = row.pick_hash(ca.caps)
        if hash_name is None:
            raise ScepClientError(f"the CA offers none of the profile's hashes {list(row.hashes)} (GetCACaps)")
        first = self._enroll(device, ca, row, identity, hash_name, signer=None)
        result = self._judge(row, index, ca, first)
        if not row.renewal or not result.passed:
            return result
        signer = Signer(result.certificates[0], first.key)
        second = self._enroll(device, ca, row, identity, hash_name, signer=signer)
        renewed = self._judge(row, index, ca, second)
        return _renewal(result, renewed)

    def _enroll(
        self, device: Device, ca: CaInfo, row: Row, identity: DeviceIdentity, hash_name: str, signer: Signer | None,
    ) -> _Step:
        spec = row.challenge_spec(identity, hash_name)
        challenge = self.admin.mint_challenge(spec)
        key = generate_key(spec.key_size)
        csr = build_csr(key, CertificateRequest.from_spec(spec), challenge)
        signer = signer or self_signed_signer(key, csr.subject)
        return _Step(spec, key, device.enroll(ca, csr, signer, digest=hash_name))

    def _judge(self, row: Row, index: int, ca: CaInfo, step: _Step) -> DeviceResult:
        enrollment = step.enrollment
        base = DeviceResult(row.name, index, enrollment.describe(), subject=step.spec.subject,
                            transaction_ids=(enrollment.transaction_id,))
        if row.expect is Expect.NO_CERTIFICATE:
            return replace(base, problems=tuple(_refusal_problems(enrollment)),
                           intune=_expected_validation(row, enrollment))
        if enrollment.certificate is None:
            return replace(base, problems=(f"no certificate: {enrollment.describe()}",))
        certificate = enrollment.certificate
        expected = checks.Expected.from_spec(step.spec, signature_hash=row.profile.signature_hash,
                                             validity_days=row.profile.validity_days,
                                             ca_certificates=ca.certificates, issued_at=datetime.now(UTC))
        record = IntuneRecord(enrollment.transaction_id, thumbprint=certificate.fingerprint(hashes.SHA1()).hex())
        return replace(base, status="SUCCESS", problems=tuple(checks.problems(certificate, expected)),
                       certificates=(certificate,), intune=(record,))

    # --- batches and faults -------------------------------------------------------------------------

    def _batch(self, jobs: list[tuple[Row, int]], concurrency: int, *, reconcile: bool = True) -> list[DeviceResult]:
        if not jobs:
            return []
        with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="device") as pool:
            results = list(pool.map(lambda job: self.run_device(*job), jobs))
        return self._reconcile(results) if reconcile else results

    @contextmanager
    def _faults(self, row: Row) -> Iterator[None]:
        self.admin.clear_faults()
        try:
            for fault in row.faults:
                self.admin.inject_fault(fault)
            yield
        finally:
            self.admin.clear_faults()

    def _reconcile(self, results: list[DeviceResult]) -> list[DeviceResult]:
        """Add what Intune failed to record to each result's problems."""
        records = [record for result in results for record in result.intune]
        if not records:
            return results
        notified, validated = _notified(self.admin.notifications()), _validated(self.admin.validations())
        return [replace(r, problems=r.problems + tuple(_intune_problems(r.intune, notified, validated)))
                for r in results]


def _refusal_problems(enrollment: Enrollment) -> list[str]:
    if enrollment.certificate is not None or enrollment.status is PKIStatus.SUCCESS:
        return ["a certificate was delivered; the profile expects none"]
    if enrollment.status is PKIStatus.PENDING:
        return [f"{enrollment.describe()}: no certificate so far, but the server keeps the request and will issue "
                "one when Intune answers (a profile with on_validator_unavailable: pending); expected FAILURE"]
    if enrollment.fail_info is not FailInfo.BAD_REQUEST:
        return [f"{enrollment.describe()}: expected failInfo badRequest"]
    return []


def _expected_validation(row: Row, enrollment: Enrollment) -> tuple[IntuneRecord, ...]:
    if row.validation_code is None:
        return ()
    return (IntuneRecord(enrollment.transaction_id, code=row.validation_code),)


def _renewal(first: DeviceResult, renewed: DeviceResult) -> DeviceResult:
    problems = [f"renewal: {p}" for p in renewed.problems]
    old, new = first.certificates[0], renewed.certificates[0] if renewed.certificates else None
    if new is not None and new.serial_number == old.serial_number:
        problems.append("renewal: the same certificate came back")
    if new is not None and new.public_key() == old.public_key():
        problems.append("renewal: the renewed certificate certifies the old key")
    return replace(first, status=f"SUCCESS, renewed {'SUCCESS' if new is not None else renewed.status}",
                   problems=tuple(problems), transaction_ids=first.transaction_ids + renewed.transaction_ids,
                   certificates=first.certificates + renewed.certificates, intune=first.intune + renewed.intune)


def _notified(notifications: list[dict[str, Any]]) -> dict[str, set[str]]:
    """transactionId → the thumbprints Intune was told about in success notifications."""
    seen: dict[str, set[str]] = {}
    for item in notifications:
        body = item.get("notification") or {}
        if item.get("type") == "success" and isinstance(body, dict):
            seen.setdefault(str(item.get("transactionId")), set()).add(str(body.get("certificateThumbprint")).lower())
    return seen


def _validated(validations: list[dict[str, Any]]) -> dict[str, list[str]]:
    """transactionId → the codes validateRequest answered, in order."""
    seen: dict[str, list[str]] = {}
    for item in validations:
        seen.setdefault(str(item.get("transactionId")), []).append(str(item.get("code")))
    return seen


def _intune_problems(
    records: Sequence[IntuneRecord], notified: dict[str, set[str]], validated: dict[str, list[str]]
) -> Iterator[str]:
    for record in records:
        if record.thumbprint is not None and record.thumbprint not in notified.get(record.transaction_id, set()):
            yield f"Intune got no success notification for the certificate of transaction {record.transaction_id}"
        codes = validated.get(record.transaction_id, [])
        if record.code is not None and record.code not in codes:
            yield f"Intune answered validateRequest {codes or 'never'}, expected {record.code}"
