"""What the client tests share: a CA, an RA it issued, and a device with its signer and CSR."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509

from scep_server.scep.client import BuiltRequest, CertRep, build_csr, build_pkcsreq, parse_cert_rep, self_signed_signer
from tests.support.pki import CA, key_usage, name, new_key

NOW = datetime.now(UTC)
VALID = {"not_before": NOW - timedelta(days=1), "not_after": NOW + timedelta(days=30)}
RA_USAGE = key_usage("digital_signature", "key_encipherment")


class Pki:
    """A CA, an RA it issued (signs CertReps, decrypts requests), and a device with its signer."""

    def __init__(self) -> None:
        self.authority = CA.root("Test CA", usage=key_usage("key_cert_sign", "crl_sign"), **VALID)
        self.ca, self.ca_key = self.authority.cert, self.authority.key
        ra = self.authority.issue("Test RA", usage=RA_USAGE, **VALID)
        self.ra, self.ra_key = ra.cert, ra.key
        self.device_key = new_key()
        self.signer = self_signed_signer(self.device_key, name("device-1"))
        self.csr = build_csr(self.device_key, name("device-1"), challenge_password="s3cret")

    def pkcsreq(self, **kwargs: object) -> BuiltRequest:
        return build_pkcsreq(
            self.csr,
            signer_cert=self.signer,
            signer_key=self.device_key,
            recipient=self.ra,
            **kwargs,  # type: ignore[arg-type]
        )

    def issued(self) -> x509.Certificate:
        return self.authority.issue("device-1", key=self.device_key, usage=RA_USAGE, **VALID).cert

    def parse(self, der: bytes, request: BuiltRequest, trusted: Sequence[x509.Certificate] | None = None) -> CertRep:
        return parse_cert_rep(
            der, request=request, signer_key=self.device_key, signer_cert=self.signer,
            trusted_signers=[self.ra, self.ca] if trusted is None else trusted,
        )  # fmt: skip


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()
