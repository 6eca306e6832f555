"""Microsoft's TestMatrix, one test per row: simulated devices enroll through gunicorn, Intune is emulated.

Every device's certificate is checked against its profile by ``scep_server.simulator.checks``; each
test also asserts the one property its row is about directly, so a lenient check cannot hide a
wrong certificate. The four failure rows behave as intune-api.md §7 states.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from scep_server.errors import RetryLater
from scep_server.simulator import ROWS, DeviceResult, Row
from scep_server.simulator.checks import signature_hash_name, subject_alt_names
from scep_server.simulator.cli import print_table
from scep_server.simulator.matrix import CLIENT_AUTH, IPSEC_TUNNEL, Expect

from .conftest import Stack, stored_with_subject

pytestmark = pytest.mark.e2e
DEVICES = 2


def _key_usage(cert: x509.Certificate) -> tuple[bool, bool]:
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    return usage.digital_signature, usage.key_encipherment


def _ekus(cert: x509.Certificate) -> list[str]:
    return [oid.dotted_string for oid in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value]


def _lifetime(cert: x509.Certificate) -> timedelta:
    return cert.not_valid_after_utc - cert.not_valid_before_utc


def _san_kinds(cert: x509.Certificate) -> list[str]:
    return sorted(kind for kind, _ in subject_alt_names(cert))


def _attributes(cert: x509.Certificate) -> list[str]:
    return [attribute.rfc4514_attribute_name for attribute in cert.subject]


# What each issuing row is about, asserted on every certificate it produced.
ROW_PROPERTY: dict[str, Callable[[x509.Certificate], bool]] = {
    "Validation Period Configuration": lambda c: abs(_lifetime(c) - timedelta(days=30)) <= timedelta(days=1),
    "SN Format: Common Name": lambda c: _attributes(c) == ["CN"],
    "SN Format: Common Name with email": lambda c: len(c.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS)) == 1,
    "SN Format: Common name as email": lambda c: "@" in c.subject.rfc4514_string(),
    "SN Format: IMEI": lambda c: re.fullmatch(r"CN=\d{15}", c.subject.rfc4514_string()) is not None,
    "SN Format: Serial number": lambda c: len(c.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)) == 1,
    "SN Format: Custom": lambda c: "O=Contoso\\, Ltd." in c.subject.rfc4514_string() and _san_kinds(c) == [
        "dns", "upn", "uri"],
    "SAN: Email": lambda c: _san_kinds(c) == ["email"],
    "SAN: UPN": lambda c: _san_kinds(c) == ["upn"],
    "SAN: Email and UPN": lambda c: _san_kinds(c) == ["email", "upn"],
    "Key Usage: Digital signature": lambda c: _key_usage(c) == (True, False),
    "Key Usage: Key encipherment": lambda c: _key_usage(c) == (False, True),
    "Key Usage: Digital signature and Key encipherment": lambda c: _key_usage(c) == (True, True),
    "Key Size: 1024": lambda c: c.public_key().key_size == 1024,  # type: ignore[union-attr]
    "Key Size: 2048": lambda c: c.public_key().key_size == 2048,  # type: ignore[union-attr]
    "Hash Alg: SHA-1": lambda c: signature_hash_name(c) == "sha1",
    "Hash Alg: SHA-2": lambda c: signature_hash_name(c) == "sha256",
    "Hash Alg: SHA-1 & SHA-2": lambda c: signature_hash_name(c) == "sha256",
    "Extended Key Usage: Client Authentication": lambda c: _ekus(c) == [CLIENT_AUTH],
    "Extended Key Usage: Ipsec Tunnel": lambda c: _ekus(c) == [IPSEC_TUNNEL],
    "Renewal": lambda c: abs(_lifetime(c) - timedelta(days=30)) <= timedelta(days=1),
}


def _table(results: list[DeviceResult]) -> str:
    out = io.StringIO()
    print_table(results, out)
    return out.getvalue()


def _no_certificate_stored(stack: Stack, results: list[DeviceResult]) -> None:
    stored = stack.certificates()
    for result in results:
        assert not stored_with_subject(stored, result.subject), result.subject


def _challenge_refused(stack: Stack, results: list[DeviceResult]) -> None:
    _no_certificate_stored(stack, results)
    for result in results:
        assert "challenge not accepted" in result.status  # Intune's code is for the operator only
        assert stack.log_lines(result.transaction_ids[0], "code=ChallengeDecryptionError")


def _validation_unavailable(stack: Stack, results: list[DeviceResult]) -> None:
    _no_certificate_stored(stack, results)
    for result in results:
        assert result.status.startswith("FAILURE BAD_REQUEST") and RetryLater.public_text in result.status
        # The device gets a generic text; the server log keeps the transport detail (the 500s).
        assert stack.log_lines(result.transaction_ids[0], "Intune unavailable", "500")


def _issued_then_revoked(stack: Stack, results: list[DeviceResult]) -> None:
    revoked, issued = stack.certificates("revoked"), stack.certificates("valid")
    for result in results:
        assert RetryLater.public_text in result.status  # the withdrawn serial stays in the log
        assert stack.log_lines(result.transaction_ids[0], "revoked and not delivered")
        assert len(stored_with_subject(revoked, result.subject)) == 1, "the certificate must be stored revoked"
        assert not stored_with_subject(issued, result.subject)


def _failed_closed(stack: Stack, results: list[DeviceResult]) -> None:
    # The matrix says a certificate is issued; we fail closed and say so in the log.
    _no_certificate_stored(stack, results)
    # The device only learns that the server is misconfigured; Entra ID's error stays in the log.
    assert all("server configuration" in result.status and "AADSTS" not in result.status for result in results)
    assert stack.log_lines("Entra ID authentication failed", "no certificate is issued")


# What each failure row must leave behind, beyond "FAILURE badRequest and no certificate" (the simulator's).
ROW_AFTERMATH: dict[str, Callable[[Stack, list[DeviceResult]], None]] = {
    "Challenge Authentication Failure": _challenge_refused,
    "Challenge Authentication Failure - 2": _validation_unavailable,
    "Success Notification Failure": _issued_then_revoked,
    "Communication Failure": _failed_closed,
}


def _param(row: Row) -> Any:
    marks = [pytest.mark.slow] if row.faults else []
    return pytest.param(row, id=row.name, marks=marks)


def test_every_row_is_covered() -> None:
    issuing = {row.name for row in ROWS if row.expect is Expect.CERTIFICATE}
    refused = {row.name for row in ROWS if row.expect is Expect.NO_CERTIFICATE}
    assert issuing == set(ROW_PROPERTY) and refused == set(ROW_AFTERMATH)


@pytest.mark.parametrize("row", [_param(row) for row in ROWS])
def test_row(stack: Stack, clean_faults: None, row: Row) -> None:
    results = stack.simulator.run_row(row, devices=DEVICES, concurrency=DEVICES)
    assert [r.device for r in results] == list(range(1, DEVICES + 1))
    assert all(r.passed for r in results), "\n" + _table(results)
    if row.expect is Expect.NO_CERTIFICATE:
        assert not any(r.certificates for r in results)
        ROW_AFTERMATH[row.name](stack, results)
        return
    for result in results:
        assert len(result.certificates) == (2 if row.renewal else 1)
        assert all(ROW_PROPERTY[row.name](cert) for cert in result.certificates), _table([result])
    if row.renewal:
        old, new = results[0].certificates
        assert new.serial_number != old.serial_number and new.public_key() != old.public_key()


def test_issuing_again_after_the_failure_rows(stack: Stack, clean_faults: None) -> None:
    """No fault outlives its row: tokens and discovery recover once Entra ID and Intune answer again."""
    for row in ROWS:
        if row.faults:
            stack.simulator.run_row(row)
    results = stack.simulator.run_row(ROWS[1])
    assert results[0].passed and results[0].certificates, _table(results)
