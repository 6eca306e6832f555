"""micromdm ``scepclient`` 2.1.0 (Debian ``scep``) against our server.

The client runs GetCACert, GetCACaps, then POSTs a PKCSReq encrypted with single DES to every
certificate GetCACert returned, with SHA-1 digests. It enrolls on the ``legacy`` profile, the one
that allows DES; the ``default`` profile must refuse it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509

from tests.interop.harness import ClientRun, explain, run_scepclient, scepclient_cacerts, sha256_fingerprint, unique_cn
from tests.support.servers import CHALLENGE, LEGACY_PROFILE, ScepServerProcess

pytestmark = pytest.mark.interop


def client_csr(run: ClientRun) -> x509.CertificateSigningRequest:
    return x509.load_pem_x509_csr((run.workdir / "csr.pem").read_bytes())


def common_name(csr: x509.CertificateSigningRequest) -> str:
    return str(csr.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value)


@pytest.fixture(scope="module")
def enrolled(
    scepclient_tool: str, scep_server: ScepServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> ClientRun:
    """One enrollment with the right challenge, shared by the checks below."""
    return run_scepclient(
        scep_server.url(LEGACY_PROFILE),
        tmp_path_factory.mktemp("scepclient"),
        CHALLENGE,
        unique_cn("scepclient"),
        organization="Interop Org",
        ou="Interop Unit",
    )


def test_getcacert_gives_ra_and_ca(enrolled: ClientRun, scep_server: ScepServerProcess) -> None:
    assert "op=GetCACert error=null" in enrolled.stderr, explain(enrolled, scep_server)
    listed = {digest for _rdn, digest in scepclient_cacerts(enrolled)}
    ra = x509.load_pem_x509_certificate(scep_server.ra_pem_path.read_bytes())
    ca = scep_server.ca_certificate()
    assert sha256_fingerprint(ra) in listed, explain(enrolled, scep_server)
    assert sha256_fingerprint(ca) in listed, explain(enrolled, scep_server)


def test_getcacaps_answered(enrolled: ClientRun, scep_server: ScepServerProcess) -> None:
    assert "op=GetCACaps error=null" in enrolled.stderr, explain(enrolled, scep_server)


def test_enrollment_with_static_challenge(enrolled: ClientRun, scep_server: ScepServerProcess) -> None:
    assert enrolled.ok, explain(enrolled, scep_server)
    assert "pkiStatus=SUCCESS" in enrolled.stderr
    cert = enrolled.certificate()
    cert.verify_directly_issued_by(scep_server.ca_certificate())
    csr = client_csr(enrolled)
    assert cert.subject == csr.subject
    assert cert.public_key() == csr.public_key()


def test_issued_certificate_is_listed(enrolled: ClientRun, scep_server: ScepServerProcess) -> None:
    assert enrolled.ok, explain(enrolled, scep_server)
    assert common_name(client_csr(enrolled)) in scep_server.certs_list()


@pytest.mark.parametrize("challenge", ["not-the-secret", None], ids=["wrong", "absent"])
def test_bad_challenge_gets_no_certificate(
    challenge: str | None, scepclient_tool: str, scep_server: ScepServerProcess, tmp_path: Path
) -> None:
    cn = unique_cn("scepclient-rejected")
    run = run_scepclient(scep_server.url(LEGACY_PROFILE), tmp_path, challenge, cn)
    assert run.returncode == 1 and run.cert_path is None, explain(run, scep_server)
    # A signed CertRep FAILURE with failInfo badRequest, not an HTTP error.
    assert "request failed, failInfo: badRequest" in run.stdout, explain(run, scep_server)
    assert cn not in scep_server.certs_list()


def test_des_refused_where_not_allowed(scepclient_tool: str, scep_server: ScepServerProcess, tmp_path: Path) -> None:
    cn = unique_cn("scepclient-des")
    run = run_scepclient(scep_server.url(), tmp_path, CHALLENGE, cn)
    assert run.returncode == 1 and run.cert_path is None, explain(run, scep_server)
    # The default profile has allow_des off: a CertRep FAILURE with failInfo badAlg.
    assert "request failed, failInfo: badAlg" in run.stdout, explain(run, scep_server)
    assert cn not in scep_server.certs_list()
