"""certmonger 0.79.17 against our server: the real daemon on a private session bus, and its helper.

``scep-submit -c`` / ``-C`` are the GetCACaps / GetCACert calls the daemon makes; enrollment goes
through ``getcert add-scep-ca`` and ``getcert request``, which sends PKIOperation by GET only and
needs both nonces and the transactionID in the CertRep.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from tests.interop.harness import CertmongerSession, ClientRun, explain, load_pem_certs, scep_submit, unique_cn
from tests.support.servers import CHALLENGE, ScepServerProcess

pytestmark = pytest.mark.interop

SCEP_PATHS = [
    "/scep",
    "/scep/default",
    "/cgi-bin/pkiclient.exe",
    "/certsrv/mscep/mscep.dll",
    "/certsrv/mscep/mscep.dll/pkiclient.exe",
]
REQUIRED_CAPS = {"AES", "SHA-256", "SHA-512", "POSTPKIOperation", "Renewal", "SCEPStandard"}


@pytest.fixture(scope="module")
def scep_ca(certmonger: CertmongerSession, scep_server: ScepServerProcess) -> Callable[[str], str]:
    """``getcert add-scep-ca`` once per URL path; returns the certmonger CA nickname."""
    names: dict[str, str] = {}

    def for_path(path: str) -> str:
        if path not in names:
            names[path] = f"ours-{len(names)}"
            certmonger.add_scep_ca(names[path], scep_server.url(path=path))
        return names[path]

    return for_path


def thumbprint(cert: x509.Certificate, algorithm: hashes.HashAlgorithm) -> str:
    """Fingerprint as ``getcert list-cas`` prints it: upper-case hex in groups of eight."""
    digest = cert.fingerprint(algorithm).hex().upper()
    return " ".join(digest[i : i + 8] for i in range(0, len(digest), 8))


def enroll(
    certmonger: CertmongerSession, ca: str, challenge: str | None, *, key_size: int = 2048
) -> tuple[str, ClientRun]:
    cn = unique_cn("certmonger")
    run = certmonger.request(
        ca,
        challenge=challenge,
        subject=f"CN={cn},O=Interop Org",
        dns=[f"{cn}.example.test"],
        email=[f"{cn}@example.test"],
        key_size=key_size,
    )
    return cn, run


def test_getcacaps(certmonger_tools: None, scep_server: ScepServerProcess) -> None:
    done = scep_submit(scep_server.url(), "-c")
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{scep_server.log_text()[-4000:]}"
    caps = set(done.stdout.split())
    assert REQUIRED_CAPS <= caps, f"missing {REQUIRED_CAPS - caps} in {sorted(caps)}"


def test_getcacert_ra_then_ca(certmonger_tools: None, scep_server: ScepServerProcess) -> None:
    done = scep_submit(scep_server.url(), "-C")
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{scep_server.log_text()[-4000:]}"
    certs = load_pem_certs(done.stdout)
    ra = x509.load_pem_x509_certificate(scep_server.ra_pem_path.read_bytes())
    ca = scep_server.ca_certificate()
    # The helper prints the certificate it encrypts to first, then the root it verifies against.
    assert certs[:2] == [ra, ca], [c.subject.rfc4514_string() for c in certs]
    ra.verify_directly_issued_by(ca)
    usage = ra.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_encipherment and usage.digital_signature


def test_add_scep_ca_learns_our_ca(
    certmonger: CertmongerSession, scep_server: ScepServerProcess, scep_ca: Callable[[str], str]
) -> None:
    name = scep_ca("/scep")
    listing = certmonger.getcert("list-cas", "-c", name).stdout
    assert thumbprint(scep_server.ca_certificate(), hashes.SHA1()) in listing, (
        f"{listing}\n{certmonger.log_text()[-4000:]}"
    )


@pytest.mark.parametrize("path", SCEP_PATHS)
def test_enrollment_with_static_challenge(
    path: str, certmonger: CertmongerSession, scep_server: ScepServerProcess, scep_ca: Callable[[str], str]
) -> None:
    cn, run = enroll(certmonger, scep_ca(path), CHALLENGE)
    assert run.ok, explain(run, scep_server)
    cert = run.certificate()
    cert.verify_directly_issued_by(scep_server.ca_certificate())
    csr = certmonger.request_csr(run.extra["request"])
    assert cert.subject == csr.subject
    assert cn in cert.subject.rfc4514_string()
    key = serialization.load_pem_private_key(run.key_path.read_bytes(), password=None)
    assert cert.public_key() == key.public_key()
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [f"{cn}.example.test"]
    assert san.get_values_for_type(x509.RFC822Name) == [f"{cn}@example.test"]
    assert cn in scep_server.certs_list()


def test_enrollment_with_4096_bit_key_on_longest_path(
    certmonger: CertmongerSession, scep_server: ScepServerProcess, scep_ca: Callable[[str], str]
) -> None:
    # certmonger GETs the whole pkiMessage in the query string: well over 4 KB here.
    cn, run = enroll(certmonger, scep_ca(SCEP_PATHS[-1]), CHALLENGE, key_size=4096)
    assert run.ok, explain(run, scep_server)
    cert = run.certificate()
    cert.verify_directly_issued_by(scep_server.ca_certificate())
    assert cert.public_key().key_size == 4096  # type: ignore[union-attr]


@pytest.mark.parametrize("challenge", ["not-the-secret", None], ids=["wrong", "absent"])
def test_bad_challenge_is_rejected(
    challenge: str | None,
    certmonger: CertmongerSession,
    scep_server: ScepServerProcess,
    scep_ca: Callable[[str], str],
) -> None:
    cn, run = enroll(certmonger, scep_ca("/scep"), challenge)
    assert run.cert_path is None, explain(run, scep_server)
    # CA_REJECTED: a CertRep FAILURE that verified. CA_UNREACHABLE means an HTTP error, or a CertRep
    # OpenSSL could not verify ("no content": the FAILURE needs an empty eContent, not none).
    assert run.extra["status"] == "CA_REJECTED", explain(run, scep_server)
    assert cn not in scep_server.certs_list()
