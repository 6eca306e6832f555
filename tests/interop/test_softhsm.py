"""Our server with the CA, RA and OCSP responder keys on a SoftHSM2 token, against the real clients.

One ``scep-server init`` + ``serve`` (gunicorn, 2 workers) for the module, ``ca.keys`` of type ``pkcs11``
with the PIN in an environment variable. micromdm ``scepclient`` (single DES, so the RA decrypts with
the token's key) and certmonger enroll; ``openssl ocsp`` verifies the delegated responder's answers
(``ocsp.key`` on the token); after ``certs revoke`` (a CLI process logging in to the token besides the
workers) ``openssl ocsp`` sees the revocation and ``openssl crl`` verifies the CRL the CA key signed.
``ca show`` names a ``pkcs11:`` URI for each key, the token holds the three keys as sensitive,
never-extractable objects matching the certificates, and no private key is anywhere under the data dir.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pkcs11
import pytest
import requests
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID
from pkcs11 import Attribute, ObjectClass

from scep_server.ca.keys.pkcs11_session import TokenAddress, token_session
from scep_server.scep import client
from scep_server.service.publishing import DEFAULT_CHECK_INTERVAL
from scep_server.simulator.http import ScepHttpClient
from tests.interop.harness import CertmongerSession, ClientRun, explain, run_scepclient, unique_cn
from tests.support.env import require_executables
from tests.support.processes import client_env, http_get
from tests.support.servers import CHALLENGE, LEGACY_PROFILE, ScepServerProcess
from tests.support.softhsm import SoftHsmToken, softhsm_token

pytestmark = pytest.mark.interop

PIN_VARIABLE = "SCEP_INTEROP_PKCS11_PIN"
CA_NAME = "hsm-interop-ca"
# Key name -> (token object label, CKA_ID in hex or None, the certificate of the key in the CA dir).
OBJECTS = {
    "ca.key": ("interop-issuing-ca", "c0:01", "ca.pem"),
    "ra.key": ("interop-scep-ra", None, "ra.pem"),
    "ocsp.key": ("interop-ocsp-responder", None, "ocsp.pem"),
}
SHOW_LABELS = {"ca.key": "CA key", "ra.key": "RA key", "ocsp.key": "OCSP key"}
# Long enough for every worker's next request to count the store's revocations again.
NOTICE_DELAY = DEFAULT_CHECK_INTERVAL + 0.3
PARALLEL = 8  # gunicorn's 2 workers x 4 threads


def _objects_yaml() -> str:
    lines = []
    for name, (label, object_id, _) in OBJECTS.items():
        id_part = f', id: "{object_id}"' if object_id else ""
        lines.append(f"        {name}: {{label: {label}{id_part}}}")
    return "\n".join(lines)


def hsm_config(data_dir: Path, token: SoftHsmToken) -> str:
    """Static-challenge ``default`` and DES-allowing ``legacy`` profiles, every key on ``token``."""
    return f"""\
data_dir: {data_dir}
ca:
  name: {CA_NAME}
  keys:
    type: pkcs11
    pkcs11:
      module: {token.module}
      token_label: {token.label}
      pin: {{env: {PIN_VARIABLE}}}
      objects:
{_objects_yaml()}
profiles:
  default:
    challenge: {{type: static, secret: {{value: "{CHALLENGE}"}}}}
  {LEGACY_PROFILE}:
    challenge: {{type: static, secret: {{value: "{CHALLENGE}"}}}}
    allow_des: true
"""


@dataclass(frozen=True)
class Issued:
    """A certificate a real client obtained, saved as PEM for openssl."""

    cert: x509.Certificate
    path: Path
    key_path: Path
    requested_cn: str

    @property
    def serial_hex(self) -> str:
        return f"{self.cert.serial_number:x}"

    def common_name(self) -> str:
        return str(self.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)

    def matches_client_key(self) -> bool:
        key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
        return self.cert.public_key() == key.public_key()


@pytest.fixture(scope="module")
def token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHsmToken]:
    with softhsm_token(tmp_path_factory.mktemp("softhsm"), label="scep-interop") as made:
        yield made


@pytest.fixture(scope="module")
def openssl() -> str:
    path = shutil.which("openssl") or "/usr/bin/openssl"
    require_executables(path)
    return path


@pytest.fixture(scope="module")
def server(token: SoftHsmToken, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScepServerProcess]:
    root = tmp_path_factory.mktemp("hsm-server")
    env = {"SOFTHSM2_CONF": os.environ["SOFTHSM2_CONF"], PIN_VARIABLE: token.pin}
    with ScepServerProcess(root, hsm_config(root / "var", token), env=env, startup_timeout=60.0) as proc:
        yield proc


@pytest.fixture(scope="module")
def scepclient_cert(
    scepclient_tool: str, server: ScepServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Issued:
    cn = unique_cn("hsm-scepclient")
    run = run_scepclient(server.url(LEGACY_PROFILE), tmp_path_factory.mktemp("scepclient"), CHALLENGE, cn,
                         organization="Interop Org")  # fmt: skip
    return _issued(run, server, cn)


@pytest.fixture(scope="module")
def certmonger_cert(certmonger: CertmongerSession, server: ScepServerProcess) -> Issued:
    certmonger.add_scep_ca("hsm-ca", server.url())
    cn = unique_cn("hsm-certmonger")
    run = certmonger.request("hsm-ca", challenge=CHALLENGE, subject=f"CN={cn},O=Interop Org",
                             dns=[f"{cn}.example.test"])  # fmt: skip
    return _issued(run, server, cn)


def _issued(run: ClientRun, server: ScepServerProcess, cn: str) -> Issued:
    assert run.ok, explain(run, server)
    assert run.cert_path is not None
    return Issued(run.certificate(), run.cert_path, run.key_path, cn)


def cert_in_ca_dir(server: ScepServerProcess, file_name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((server.data_dir / "ca" / file_name).read_bytes())


def run_openssl(openssl: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [openssl, *map(str, args)], env=client_env(), stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def openssl_failure(done: subprocess.CompletedProcess[str], server: ScepServerProcess) -> str:
    tail = "\n".join(server.log_text().splitlines()[-40:])
    return f"$ {' '.join(map(str, done.args))}\n{done.stdout}\n{done.stderr}\n--- server log\n{tail}"


def ocsp_query(openssl: str, server: ScepServerProcess, response: Path, *args: str | Path) -> str:
    """``openssl ocsp`` for ``args`` against the server, which must verify against ca.pem; its stdout."""
    ca_pem = server.ca_pem_path
    done = run_openssl(openssl, "ocsp", "-issuer", ca_pem, *args, "-url", f"{server.base_url}/ocsp",
                       "-CAfile", ca_pem, "-respout", response, "-resp_text")  # fmt: skip
    assert done.returncode == 0, openssl_failure(done, server)
    assert "Response verify OK" in done.stderr, openssl_failure(done, server)
    return done.stdout


def fetch_crl(server: ScepServerProcess, tmp_path: Path) -> Path:
    status, body = http_get(f"{server.base_url}/crl/{CA_NAME}.crl")
    assert status == 200, body[:200]
    path = tmp_path / "fetched.crl"
    path.write_bytes(body)
    return path


def _attributes(session: pkcs11.Session, label: str, object_id: str | None) -> dict[str, object]:
    key_id = bytes.fromhex(object_id.replace(":", "")) if object_id else None
    private = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label, id=key_id)
    public = session.get_key(object_class=ObjectClass.PUBLIC_KEY, label=label, id=key_id)
    return {
        "sensitive": private[Attribute.SENSITIVE],
        "extractable": private[Attribute.EXTRACTABLE],
        "never_extractable": private[Attribute.NEVER_EXTRACTABLE],
        "modulus": int.from_bytes(public[Attribute.MODULUS], "big"),
    }


def token_objects(token: SoftHsmToken) -> dict[str, dict[str, object]]:
    """Per key name, what the token says of its private key and the modulus of its public key."""
    session = token_session(TokenAddress(token.module, token_label=token.label), token.pin)
    return session.run(lambda s: {name: _attributes(s, label, object_id)
                                  for name, (label, object_id, _) in OBJECTS.items()})  # fmt: skip


# --------------------------------------------------------------------------------------------- enrollment


def test_scepclient_enrolls_with_des_through_the_token_ra(scepclient_cert: Issued, server: ScepServerProcess) -> None:
    scepclient_cert.cert.verify_directly_issued_by(server.ca_certificate())
    assert scepclient_cert.common_name() == scepclient_cert.requested_cn
    assert scepclient_cert.matches_client_key()
    assert scepclient_cert.requested_cn in server.certs_list()


def test_certmonger_enrolls(certmonger_cert: Issued, server: ScepServerProcess) -> None:
    certmonger_cert.cert.verify_directly_issued_by(server.ca_certificate())
    assert certmonger_cert.common_name() == certmonger_cert.requested_cn
    assert certmonger_cert.matches_client_key()
    san = certmonger_cert.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [f"{certmonger_cert.requested_cn}.example.test"]
    assert certmonger_cert.requested_cn in server.certs_list()


# --------------------------------------------------------------------------------------------- OCSP and CRL


def test_openssl_ocsp_verifies_the_token_responders_answer(
    openssl: str, server: ScepServerProcess, scepclient_cert: Issued, certmonger_cert: Issued, tmp_path: Path
) -> None:
    response_path = tmp_path / "response.der"
    text = ocsp_query(openssl, server, response_path, "-cert", scepclient_cert.path, "-cert", certmonger_cert.path)
    assert f"{scepclient_cert.path}: good" in text and f"{certmonger_cert.path}: good" in text, text
    response = ocsp.load_der_ocsp_response(response_path.read_bytes())
    responder = cert_in_ca_dir(server, "ocsp.pem")
    # Signed by the delegated responder (ocsp.key), not by the CA key.
    assert response.certificates == [responder]
    assert response.responder_key_hash == x509.SubjectKeyIdentifier.from_public_key(responder.public_key()).digest


def test_revocation_reaches_openssl_ocsp_and_the_signed_crl(
    openssl: str, server: ScepServerProcess, certmonger_cert: Issued, tmp_path: Path
) -> None:
    revoked = server.cli("certs", "revoke", certmonger_cert.serial_hex, "--reason", "keyCompromise")
    assert revoked.returncode == 0, f"{revoked.stdout}\n{revoked.stderr}"
    time.sleep(NOTICE_DELAY)
    text = ocsp_query(openssl, server, tmp_path / "response.der", "-cert", certmonger_cert.path)
    assert f"{certmonger_cert.path}: revoked" in text and "Reason: keyCompromise" in text, text
    crl = fetch_crl(server, tmp_path)
    verified = run_openssl(openssl, "crl", "-in", crl, "-inform", "DER", "-CAfile", server.ca_pem_path, "-noout")
    assert verified.returncode == 0 and "verify OK" in verified.stderr, openssl_failure(verified, server)
    listed = run_openssl(openssl, "crl", "-in", crl, "-inform", "DER", "-noout", "-text")
    assert re.search(rf"Serial Number: 0*{certmonger_cert.serial_hex.upper()}\b", listed.stdout), listed.stdout


def enroll_with_our_client(server: ScepServerProcess) -> x509.Certificate:
    """A certificate for a new key, over SCEP (PKCSReq, AES, on the default profile)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, unique_cn("hsm-parallel"))])
    signer = client.self_signed_signer(key, subject)
    with ScepHttpClient(server.url()) as scep:
        authorities = scep.get_ca_cert()
        csr = client.build_csr(key, subject, challenge_password=CHALLENGE)
        recipient = client.pick_recipient(authorities)
        built = client.build_pkcsreq(csr, signer_cert=signer, signer_key=key, recipient=recipient)
        reply = client.parse_cert_rep(
            scep.pki_operation(built.der), request=built, signer_key=key, signer_cert=signer,
            trusted_signers=authorities,
        )  # fmt: skip
    return reply.certificate_for(key.public_key())


def ocsp_status_with_nonce(server: ScepServerProcess, cert: x509.Certificate) -> ocsp.OCSPCertStatus:
    """POST an OCSP request with a fresh nonce (never a cached answer); the verified status."""
    ca, nonce = server.ca_certificate(), secrets.token_bytes(16)
    request = (ocsp.OCSPRequestBuilder().add_certificate(cert, ca, hashes.SHA256())
               .add_extension(x509.OCSPNonce(nonce), critical=False).build())  # fmt: skip
    with requests.Session() as http:
        http.trust_env = False
        answer = http.post(f"{server.base_url}/ocsp", data=request.public_bytes(serialization.Encoding.DER),
                           headers={"Content-Type": "application/ocsp-request"}, timeout=30)  # fmt: skip
    assert answer.status_code == 200, answer.text[:200]
    response = ocsp.load_der_ocsp_response(answer.content)
    assert response.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == nonce
    responder = cert_in_ca_dir(server, "ocsp.pem")
    algorithm = response.signature_hash_algorithm
    assert algorithm is not None
    public = responder.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    public.verify(response.signature, response.tbs_response_bytes, padding.PKCS1v15(), algorithm)
    return response.certificate_status


def test_parallel_enrollments_and_ocsp_answers_share_the_token(server: ScepServerProcess) -> None:
    # Both workers and their threads decrypt and sign on the token at once.
    with ThreadPoolExecutor(PARALLEL) as pool:
        issued = list(pool.map(lambda _: enroll_with_our_client(server), range(PARALLEL)))
        statuses = list(pool.map(lambda cert: ocsp_status_with_nonce(server, cert), issued))
    ca = server.ca_certificate()
    for cert in issued:
        cert.verify_directly_issued_by(ca)
    assert len({cert.serial_number for cert in issued}) == PARALLEL
    assert statuses == [ocsp.OCSPCertStatus.GOOD] * PARALLEL


# --------------------------------------------------------------------------------------------- where the keys are


def test_ca_show_names_the_token_objects(server: ScepServerProcess, token: SoftHsmToken) -> None:
    done = server.cli("ca", "show")
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    shown = dict(re.findall(r"^(CA key|RA key|OCSP key)\s*:?\s+(\S+)\s*$", done.stdout, re.M))
    for name, (label, object_id, _) in OBJECTS.items():
        uri = shown.get(SHOW_LABELS[name], "")
        assert uri.startswith(f"pkcs11:token={token.label};object={label};"), done.stdout
        assert uri.endswith(";type=private"), done.stdout
        if object_id:
            assert ";id=" + "".join(f"%{byte}" for byte in object_id.upper().split(":")) + ";" in uri, done.stdout


def test_the_token_holds_every_key_unextractable(
    openssl: str, server: ScepServerProcess, token: SoftHsmToken, tmp_path: Path
) -> None:
    ocsp_query(openssl, server, tmp_path / "response.der", "-serial", "0x7fffffff")  # the responder exists now
    found = token_objects(token)
    for name, (_, _, cert_file) in OBJECTS.items():
        public = cert_in_ca_dir(server, cert_file).public_key()
        assert isinstance(public, rsa.RSAPublicKey)
        assert found[name]["modulus"] == public.public_numbers().n, name
        assert found[name] == {"sensitive": True, "extractable": False, "never_extractable": True,
                               "modulus": public.public_numbers().n}, name  # fmt: skip


def test_no_private_key_under_the_data_dir(openssl: str, server: ScepServerProcess, tmp_path: Path) -> None:
    # Every key in use first: the RA at init, the OCSP responder on a query, the CA on a CRL.
    ocsp_query(openssl, server, tmp_path / "response.der", "-serial", "0x7ffffffe")
    fetch_crl(server, tmp_path)
    files = [path for path in server.data_dir.rglob("*") if path.is_file()]
    assert any(path.name == "ca.pem" for path in files) and any(path.suffix == ".db" for path in files), files
    assert not [path for path in files if path.suffix == ".key"]
    for path in files:
        data = path.read_bytes()
        assert b"PRIVATE KEY" not in data, path
        assert not _is_der_private_key(data), path


def _is_der_private_key(data: bytes) -> bool:
    try:
        serialization.load_der_private_key(data, password=None)
    except TypeError:  # encrypted: a private key all the same
        return True
    except (ValueError, UnsupportedAlgorithm):
        return False
    return True
