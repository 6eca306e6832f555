"""Our SCEP client against micromdm's ``scepserver`` 2.1.0 (Debian), a real peer on 127.0.0.1.

micromdm has no RA: its CA certificate is the only GetCACert answer, decrypts our requests and signs
the CertReps, which it always envelopes with single DES and signs with SHA-1 whatever we sent.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from scep_server.scep.client import (
    CertRep,
    build_csr,
    build_pkcsreq,
    choose_algorithms,
    parse_cert_rep,
    pick_recipient,
    self_signed_signer,
)
from scep_server.scep.types import ContentCipher, DigestAlgorithm, FailInfo, PKIStatus
from scep_server.simulator.http import ScepHttpClient, ScepHttpError
from tests.support.env import require_executables
from tests.support.servers import SCEPSERVER, MicromdmScepServer

pytestmark = pytest.mark.interop

CHALLENGE = "interop-secret"
_serial = itertools.count(1)


@pytest.fixture(scope="module")
def micromdm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MicromdmScepServer]:
    require_executables(SCEPSERVER)  # Debian package scep
    with MicromdmScepServer(tmp_path_factory.mktemp("micromdm"), challenge=CHALLENGE) as server:
        yield server


@pytest.fixture
def http(micromdm: MicromdmScepServer) -> Iterator[ScepHttpClient]:
    session = requests.Session()
    session.trust_env = False  # no proxy: loopback only
    with ScepHttpClient(micromdm.url(), session=session, timeout=30) as client:
        yield client
    session.close()


@pytest.fixture(scope="module")
def device_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _subject() -> x509.Name:
    # micromdm refuses a second certificate for a CN it issued less than 14 days ago.
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "scep-server interop"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"device-{os.getpid()}-{next(_serial)}"),
        ]
    )


def _enroll(
    http: ScepHttpClient,
    key: rsa.RSAPrivateKey,
    subject: x509.Name,
    *,
    challenge: str = CHALLENGE,
    cipher: ContentCipher = ContentCipher.AES128,
    digest: DigestAlgorithm = DigestAlgorithm.SHA256,
    method: str = "POST",
) -> tuple[CertRep, list[x509.Certificate]]:
    ca_certs = http.get_ca_cert()
    signer = self_signed_signer(key, subject)
    request = build_pkcsreq(
        build_csr(key, subject, challenge_password=challenge),
        signer_cert=signer,
        signer_key=key,
        recipient=pick_recipient(ca_certs),
        cipher=cipher,
        digest=digest,
    )
    reply = http.pki_operation(request.der, method=method)
    rep = parse_cert_rep(reply, request=request, signer_key=key, signer_cert=signer, trusted_signers=ca_certs)
    return rep, ca_certs


def test_get_ca_caps(http: ScepHttpClient) -> None:
    caps = http.get_ca_caps()
    assert {"POSTPKIOperation", "AES", "SHA-256", "SCEPStandard", "Renewal"} <= caps
    assert choose_algorithms(caps) == (ContentCipher.AES128, DigestAlgorithm.SHA256)


def test_get_ca_cert(http: ScepHttpClient, micromdm: MicromdmScepServer) -> None:
    certs = http.get_ca_cert()
    assert certs == [micromdm.ca_certificate()]
    assert pick_recipient(certs) == micromdm.ca_certificate()


@pytest.mark.parametrize("method", ["POST", "GET"])
@pytest.mark.parametrize(
    ("cipher", "digest"),
    [
        (ContentCipher.AES128, DigestAlgorithm.SHA256),
        (ContentCipher.AES256, DigestAlgorithm.SHA512),
        (ContentCipher.DES3, DigestAlgorithm.SHA1),
        (ContentCipher.DES, DigestAlgorithm.SHA384),
    ],
)
def test_enroll(
    http: ScepHttpClient,
    micromdm: MicromdmScepServer,
    device_key: rsa.RSAPrivateKey,
    cipher: ContentCipher,
    digest: DigestAlgorithm,
    method: str,
) -> None:
    subject = _subject()
    rep, ca_certs = _enroll(http, device_key, subject, cipher=cipher, digest=digest, method=method)
    assert rep.status is PKIStatus.SUCCESS, rep
    issued = rep.certificate_for(device_key.public_key())
    ca = micromdm.ca_certificate()
    issued.verify_directly_issued_by(ca)
    assert issued.subject == subject
    assert issued.issuer == ca.subject
    # micromdm answers with single DES and SHA-1, whatever the request used.
    assert (rep.content_cipher, rep.digest) == (ContentCipher.DES, DigestAlgorithm.SHA1)


def test_wrong_challenge_is_a_failure(http: ScepHttpClient, device_key: rsa.RSAPrivateKey) -> None:
    rep, _ = _enroll(http, device_key, _subject(), challenge="wrong")
    assert rep.status is PKIStatus.FAILURE
    assert rep.fail_info is FailInfo.BAD_REQUEST
    assert rep.certificates == ()


def test_aes192_is_refused_with_http_500(http: ScepHttpClient, device_key: rsa.RSAPrivateKey) -> None:
    """micromdm's pkcs7 cannot open AES-192 and says so with HTTP 500, not a CertRep badAlg."""
    with pytest.raises(ScepHttpError) as info:
        _enroll(http, device_key, _subject(), cipher=ContentCipher.AES192)
    assert info.value.status_code == 500
    assert "decrypt" in info.value.body
