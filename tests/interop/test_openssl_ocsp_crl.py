"""The real ``openssl ocsp`` and ``openssl crl`` against ``scep-server serve`` (gunicorn, 2 workers).

The server's ``public_url`` is its own address, so issued certificates name its OCSP responder.
Certificates are enrolled over SCEP; revocations are made from this test process through
``RevocationService`` on the server's database, so the server's workers learn of them the way they
learn of a CLI revocation: by their cross-process check, at most ``DEFAULT_CHECK_INTERVAL`` later.
"""

from __future__ import annotations

import base64
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from scep_server.config import load_config
from scep_server.scep import client
from scep_server.service.publishing import DEFAULT_CHECK_INTERVAL
from scep_server.service.revocation import RevocationService
from scep_server.simulator.http import ScepHttpClient
from scep_server.store import Store
from tests.interop.harness import unique_cn
from tests.support.env import require_executables
from tests.support.processes import HOST, client_env, http_get
from tests.support.servers import CHALLENGE, ScepServerProcess, server_config

pytestmark = pytest.mark.interop

CA_NAME = "scep-server-ca"  # the default ca.name of the interop config
# Long enough for every worker's next request to count the store's revocations again.
NOTICE_DELAY = DEFAULT_CHECK_INTERVAL + 0.3


class PublicUrlServerProcess(ScepServerProcess):
    """``scep-server serve`` whose ``public_url`` is the address it listens on.

    The port is chosen only when the server starts, so the config gets ``public_url`` then.
    """

    def _serve_argv(self, port: int) -> list[str]:
        self.config_path.write_text(f"public_url: http://{HOST}:{port}\n{self.config_yaml}", encoding="utf-8")
        return super()._serve_argv(port)


@dataclass
class Enrolled:
    cert: x509.Certificate
    path: Path

    @property
    def serial_hex(self) -> str:
        return f"{self.cert.serial_number:X}"


@pytest.fixture(scope="module")
def openssl() -> str:
    path = shutil.which("openssl") or "/usr/bin/openssl"
    require_executables(path)
    return path


@pytest.fixture(scope="module")
def server(openssl: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScepServerProcess]:
    root = tmp_path_factory.mktemp("ocsp-server")
    with PublicUrlServerProcess(root, server_config(root / "var")) as proc:
        yield proc


@pytest.fixture(scope="module")
def revocations(server: ScepServerProcess) -> Iterator[RevocationService]:
    config = load_config(server.config_path, env={})
    with Store.open(config.effective_database_url) as store:
        yield RevocationService(store, issuer=server.ca_certificate().subject.rfc4514_string())


@pytest.fixture(scope="module")
def good(server: ScepServerProcess) -> Enrolled:
    return enroll(server, "good")


def enroll(server: ScepServerProcess, prefix: str) -> Enrolled:
    """A certificate for a new key, over SCEP (PKCSReq on the default profile)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, unique_cn(prefix))])
    signer = client.self_signed_signer(key, subject)
    with ScepHttpClient(server.url()) as scep:
        authorities = scep.get_ca_cert()
        recipient = client.pick_recipient(authorities)
        csr = client.build_csr(key, subject, challenge_password=CHALLENGE)
        built = client.build_pkcsreq(csr, signer_cert=signer, signer_key=key, recipient=recipient)
        reply = client.parse_cert_rep(
            scep.pki_operation(built.der), request=built, signer_key=key, signer_cert=signer,
            trusted_signers=authorities,
        )  # fmt: skip
    cert = reply.certificate_for(key.public_key())
    path = server.tmp_path / f"{prefix}-{cert.serial_number:x}.pem"
    path.write_bytes(cert.public_bytes(Encoding.PEM))
    return Enrolled(cert, path)


def run(openssl: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [openssl, *map(str, args)], env=client_env(), stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def query(
    openssl: str, server: ScepServerProcess, *args: str | Path, url: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``openssl ocsp -issuer ca.pem ARGS -url URL -CAfile ca.pem -resp_text``, which must verify.

    ``url`` defaults to the server's ``/ocsp``.
    """
    done = run(
        openssl, "ocsp", "-issuer", server.ca_pem_path, *args, "-url", url or f"{server.base_url}/ocsp",
        "-CAfile", server.ca_pem_path, "-resp_text",
    )  # fmt: skip
    assert done.returncode == 0, explain(done, server)
    assert "Response verify OK" in done.stderr, explain(done, server)
    return done


def explain(done: subprocess.CompletedProcess[str], server: ScepServerProcess) -> str:
    tail = "\n".join(server.log_text().splitlines()[-40:])
    return f"$ {' '.join(map(str, done.args))}\n{done.stdout}\n{done.stderr}\n--- server log\n{tail}"


def fetch_crl(server: ScepServerProcess, suffix: str = "crl") -> Path:
    status, body = http_get(f"{server.base_url}/crl/{CA_NAME}.{suffix}")
    assert status == 200
    path = server.tmp_path / f"fetched-{secrets.token_hex(4)}.{suffix}"
    path.write_bytes(body)
    return path


def crl_serials(openssl: str, path: Path) -> dict[int, str]:
    """Serial -> the text of its entry, from ``openssl crl -text``."""
    done = run(openssl, "crl", "-inform", "DER", "-in", path, "-noout", "-text")
    assert done.returncode == 0, done.stderr
    entries = re.split(r"\n\s*Serial Number: ", done.stdout)[1:]
    return {int(entry.split()[0], 16): entry for entry in entries}


def test_good_certificate_with_sha1_and_sha256_cert_ids(
    openssl: str, server: ScepServerProcess, good: Enrolled
) -> None:
    for digest in ("-sha1", "-sha256"):
        done = query(openssl, server, digest, "-cert", good.path)
        assert f"{good.path}: good" in done.stdout
        assert "Responder Id:" in done.stdout and "This Update:" in done.stdout and "Next Update:" in done.stdout


def test_openssl_asks_the_responder_named_in_the_certificate(
    openssl: str, server: ScepServerProcess, good: Enrolled
) -> None:
    uri = run(openssl, "x509", "-in", good.path, "-noout", "-ocsp_uri")
    assert uri.returncode == 0, uri.stderr
    url = uri.stdout.strip()
    assert url == f"{server.base_url}/ocsp"
    done = query(openssl, server, "-cert", good.path, url=url)
    assert f"{good.path}: good" in done.stdout


def test_unknown_serial(openssl: str, server: ScepServerProcess) -> None:
    done = query(openssl, server, "-serial", f"0x{secrets.token_hex(16)}")
    assert re.search(r": unknown\n", done.stdout), done.stdout


def test_several_certificates_in_one_request(openssl: str, server: ScepServerProcess, good: Enrolled) -> None:
    other = enroll(server, "other")
    done = query(openssl, server, "-cert", good.path, "-cert", other.path, "-serial", "0x7fffffff")
    assert f"{good.path}: good" in done.stdout and f"{other.path}: good" in done.stdout
    assert "0x7fffffff: unknown" in done.stdout
    assert done.stdout.count("Cert Status:") == 3


def test_nonce_round_trip(openssl: str, server: ScepServerProcess, good: Enrolled) -> None:
    done = query(openssl, server, "-cert", good.path, "-nonce", "-req_text")
    assert "WARNING: no nonce in response" not in done.stdout + done.stderr
    nonces = re.findall(r"OCSP Nonce:\s*\n\s*([0-9A-F]+)", done.stdout)
    assert len(nonces) == 2 and nonces[0] == nonces[1], done.stdout  # the request's, then the response's
    without = query(openssl, server, "-cert", good.path, "-no_nonce")
    assert "OCSP Nonce" not in without.stdout


def test_get_request_verifies(openssl: str, server: ScepServerProcess, good: Enrolled, tmp_path: Path) -> None:
    request, response = tmp_path / "req.der", tmp_path / "resp.der"
    built = run(openssl, "ocsp", "-issuer", server.ca_pem_path, "-cert", good.path, "-no_nonce", "-reqout", request)
    assert built.returncode == 0, built.stderr
    status, body = http_get(f"{server.base_url}/ocsp/{quote(base64.b64encode(request.read_bytes()).decode(), safe='')}")
    assert status == 200
    response.write_bytes(body)
    done = run(
        openssl, "ocsp", "-issuer", server.ca_pem_path, "-cert", good.path, "-no_nonce", "-respin", response,
        "-CAfile", server.ca_pem_path,
    )  # fmt: skip
    assert done.returncode == 0 and "Response verify OK" in done.stderr, explain(done, server)
    assert f"{good.path}: good" in done.stdout


def test_crl_verifies_with_the_ca(openssl: str, server: ScepServerProcess) -> None:
    for suffix, form in (("crl", "DER"), ("pem", "PEM")):
        done = run(
            openssl, "crl", "-in", fetch_crl(server, suffix), "-inform", form, "-CAfile", server.ca_pem_path, "-noout"
        )
        assert done.returncode == 0 and "verify OK" in done.stderr, done.stderr


def test_revocation_reaches_ocsp_and_the_next_crl(
    openssl: str, server: ScepServerProcess, revocations: RevocationService
) -> None:
    victim = enroll(server, "victim")
    assert f"{victim.path}: good" in query(openssl, server, "-cert", victim.path).stdout
    assert victim.cert.serial_number not in crl_serials(openssl, fetch_crl(server))
    revocations.revoke(victim.cert.serial_number, reason="keyCompromise")
    time.sleep(NOTICE_DELAY)
    done = query(openssl, server, "-cert", victim.path)
    assert f"{victim.path}: revoked" in done.stdout
    assert "Reason: keyCompromise" in done.stdout and "Revocation Time:" in done.stdout
    crl = fetch_crl(server)
    verified = run(openssl, "crl", "-in", crl, "-inform", "DER", "-CAfile", server.ca_pem_path, "-noout")
    assert verified.returncode == 0 and "verify OK" in verified.stderr
    entry = crl_serials(openssl, crl)[victim.cert.serial_number]
    assert "X509v3 CRL Reason Code:" in entry and "Key Compromise" in entry
