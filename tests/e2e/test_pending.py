"""A profile with ``on_intune_unavailable: pending``: Intune down → PENDING, the device polls with
CertPoll, and the certificate arrives once the server's background retry reaches Intune again."""

from __future__ import annotations

import threading

import pytest

from scep_server.scep.types import PKIStatus
from scep_server.simulator import Fault
from scep_server.simulator.device import CertificateRequest, Device, build_csr, generate_key, self_signed_signer
from scep_server.simulator.matrix import DeviceIdentity, Row

from .conftest import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
OUTAGE = 1.0  # seconds Intune answers 500; the server's first background retry comes about 5 s later


def test_device_polls_until_intune_is_back(stack: Stack, clean_faults: None) -> None:
    spec = Row("pending").challenge_spec(DeviceIdentity.random(), "sha256")
    challenge = stack.admin.mint_challenge(spec)
    key = generate_key(spec.key_size)
    csr = build_csr(key, CertificateRequest.from_spec(spec), challenge)
    stack.admin.inject_fault(Fault("validateRequest", status=500))
    recovery = threading.Timer(OUTAGE, stack.admin.clear_faults)
    recovery.start()
    try:
        with Device(stack.server.url("intune-pending"), timeout=30.0, poll_interval=0.5) as device:
            enrollment = device.enroll(device.discover(), csr, self_signed_signer(key, csr.subject))
    finally:
        recovery.cancel()
        recovery.join()
    assert enrollment.status is PKIStatus.SUCCESS, enrollment.describe()
    assert enrollment.certificate is not None and enrollment.polls >= 1
    assert stack.log_lines("validation deferred", f"transaction={enrollment.transaction_id}")
