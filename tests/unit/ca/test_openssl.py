"""The CA's output (scep_server/ca/issue.py, crl.py) as the openssl command sees it: chains verify, CRLs
verify and revoke."""

from __future__ import annotations

import dataclasses
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from scep_server.ca.authority import init_ca
from scep_server.ca.crl import build_crl
from scep_server.ca.issue import build_certificate
from scep_server.ca.policy import IssuancePolicy
from scep_server.config import CAConfig, ProfileConfig
from tests.support.env import require_tool


@pytest.fixture(autouse=True)
def openssl_command() -> str:
    """Every test here runs the openssl command: missing, it skips locally and fails in CI."""
    return require_tool("openssl")


def openssl(*args: str | Path) -> str:
    done = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def write_pem(path: Path, *items: x509.Certificate | x509.CertificateRevocationList) -> Path:
    path.write_bytes(b"".join(item.public_bytes(serialization.Encoding.PEM) for item in items))
    return path


@pytest.mark.parametrize("config", [CAConfig(key_type="rsa", key_size=2048), CAConfig(key_type="ec", curve="P-384")])
def test_openssl_verifies_issued_certificates_and_crls(tmp_path: Path, config: CAConfig) -> None:
    now = datetime.now(UTC)
    ca = init_ca(tmp_path / "ca", config, None, now=now)
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name.from_rfc4514_string("CN=device"))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("device.example")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    policy = IssuancePolicy.from_profile(ProfileConfig(), crl_url="http://pki.example/ca.crl", ca_issuers_url=None)
    cert = build_certificate(csr, ca, policy, now=now)
    ca_file = write_pem(tmp_path / "ca.pem", ca.ca_cert)
    cert_file = write_pem(tmp_path / "cert.pem", cert)
    openssl("verify", "-CAfile", ca_file, cert_file)
    openssl("verify", "-CAfile", ca_file, "-purpose", "any", write_pem(tmp_path / "ra.pem", ca.ra_cert))

    crl = build_crl(ca, [(cert.serial_number, now, 1)], crl_number=1, now=now, validity=timedelta(days=1))
    crl_file = write_pem(tmp_path / "ca.crl", crl)
    assert "verify OK" in openssl("crl", "-in", crl_file, "-CAfile", ca_file, "-noout", "-verify")
    done = subprocess.run(
        ["openssl", "verify", "-crl_check", "-CAfile", str(ca_file), "-CRLfile", str(crl_file), str(cert_file)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0 and "certificate revoked" in done.stdout + done.stderr


def test_openssl_parses_sha1_certificates(tmp_path: Path) -> None:
    ca = init_ca(tmp_path / "ca", CAConfig(key_type="rsa", key_size=2048), None)
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name("a@example.com")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    base = IssuancePolicy.from_profile(ProfileConfig(), crl_url=None, ca_issuers_url=None)
    policy = dataclasses.replace(base, hash_name="sha1")
    text = openssl("x509", "-noout", "-text", "-in", write_pem(tmp_path / "c.pem", build_certificate(csr, ca, policy)))
    assert "sha1WithRSAEncryption" in text and "email:a@example.com" in text
