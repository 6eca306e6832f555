"""A CA rollover on a real ``scep-server serve`` (gunicorn, 2 workers), never restarted, seen by real
clients: micromdm ``scepclient`` enrolls before and after, ``openssl cms`` verifies GetNextCACert
against the old CA, ``openssl ocsp`` and ``openssl crl`` check each generation's revocation status.

The CLI stages and activates the next CA; the workers follow the files by themselves (within about a
second), so each step is polled for with fresh connections, which both workers answer.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtensionOID

from scep_server.ca.generations import CROSS_CERT, GENERATIONS_DIR
from scep_server.scep.client import pick_recipient
from scep_server.scep.client.nextca import read_next_ca
from scep_server.scep.nextca import NEXT_CA_CERT
from scep_server.simulator.http import ScepHttpClient
from tests.interop.harness import ClientRun, explain, load_pem_certs, run_scepclient, unique_cn
from tests.support.env import require_executables
from tests.support.processes import HOST, client_env, http_get, tail
from tests.support.servers import CHALLENGE, LEGACY_PROFILE, ScepServerProcess, server_config

pytestmark = pytest.mark.interop

CA_NAME = "scep-server-ca"  # the default ca.name of the interop config
NEXT_LABEL = f"{CA_NAME}-g2"
PICKUP_DEADLINE = 10.0  # seconds: every worker looks at the CA files and the revocations about once a second
FETCHES = 12  # fresh connections: both workers answer some
HTTP_TIMEOUT = 30.0
_Found = TypeVar("_Found")


class SelfNamedServer(ScepServerProcess):
    """``scep-server serve`` whose ``public_url`` is its own address: certificates name its CRLs."""

    def _serve_argv(self, port: int) -> list[str]:
        self.config_path.write_text(f"public_url: http://{HOST}:{port}\n{self.config_yaml}", encoding="utf-8")
        return super()._serve_argv(port)


@pytest.fixture(scope="module")
def openssl() -> str:
    path = shutil.which("openssl") or "/usr/bin/openssl"
    require_executables(path)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScepServerProcess]:
    root = tmp_path_factory.mktemp("rollover")
    with SelfNamedServer(root, server_config(root / "var"), workers=2, threads=2) as process:
        yield process


# --------------------------------------------------------------------------------------------- helpers


def server_tail(server: ScepServerProcess) -> str:
    return f"\n--- {server.name} log\n{tail(server.log_text(), 60)}"


def fresh_get(server: ScepServerProcess, path: str, **params: str) -> requests.Response:
    """GET on a connection of its own (no keep-alive), so that any worker may answer."""
    with requests.Session() as session:
        session.trust_env = False
        return session.get(server.base_url + path, params=params, headers={"Connection": "close"},
                           timeout=HTTP_TIMEOUT)


def caps(server: ScepServerProcess) -> set[str]:
    response = fresh_get(server, "/scep", operation="GetCACaps")
    assert response.status_code == 200, f"GetCACaps: HTTP {response.status_code}{server_tail(server)}"
    return set(response.text.split())


def get_ca_cert(server: ScepServerProcess) -> list[x509.Certificate]:
    session = requests.Session()
    session.trust_env = False
    session.headers["Connection"] = "close"
    with ScepHttpClient(server.url(), session=session, timeout=HTTP_TIMEOUT) as scep:
        return scep.get_ca_cert()


def wait_for(server: ScepServerProcess, what: str, probe: Callable[[], _Found | None]) -> _Found:
    """``probe``'s first answer that is not None, tried until :data:`PICKUP_DEADLINE`."""
    deadline = time.monotonic() + PICKUP_DEADLINE
    while True:
        found = probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not seen within {PICKUP_DEADLINE:.0f} s{server_tail(server)}")
        time.sleep(0.1)


def cli(server: ScepServerProcess, *args: str) -> str:
    done = server.cli(*args)
    assert done.returncode == 0, f"$ scep-server {' '.join(args)}\n{done.stdout}{done.stderr}{server_tail(server)}"
    return done.stdout


def run(openssl: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [openssl, *map(str, args)], env=client_env(), stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def shown(done: subprocess.CompletedProcess[str], server: ScepServerProcess) -> str:
    command = " ".join(map(str, done.args))
    return f"$ {command}\nexit {done.returncode}\n{done.stdout}\n{done.stderr}{server_tail(server)}"


def enroll_with_scepclient(server: ScepServerProcess, tmp_path: Path, prefix: str) -> ClientRun:
    run_ = run_scepclient(server.url(LEGACY_PROFILE), tmp_path, CHALLENGE, unique_cn(prefix), timeout=90)
    assert run_.ok, explain(run_, server)
    return run_


def write_pem(path: Path, *certificates: x509.Certificate) -> Path:
    path.write_bytes(b"".join(cert.public_bytes(Encoding.PEM) for cert in certificates))
    return path


def crl_url(cert: x509.Certificate) -> str:
    points = cert.extensions.get_extension_for_oid(ExtensionOID.CRL_DISTRIBUTION_POINTS).value
    return str(points[0].full_name[0].value)  # type: ignore[index]


def download(url: str, target: Path) -> Path:
    status, body = http_get(url, timeout=HTTP_TIMEOUT)
    assert status == 200, f"GET {url}: HTTP {status} {body[:200]!r}"
    target.write_bytes(body)
    return target


def crl_serials(openssl: str, path: Path) -> set[int]:
    done = run(openssl, "crl", "-inform", "DER", "-in", path, "-noout", "-text")
    assert done.returncode == 0, done.stderr
    return {int(serial, 16) for serial in re.findall(r"Serial Number: ([0-9A-Fa-f]+)", done.stdout)}


def verified_crl(openssl: str, server: ScepServerProcess, path: Path, issuer_pem: Path) -> Path:
    done = run(openssl, "crl", "-inform", "DER", "-in", path, "-CAfile", issuer_pem, "-noout")
    assert done.returncode == 0 and "verify OK" in done.stderr, shown(done, server)
    return path


def ocsp_query(openssl: str, server: ScepServerProcess, cert: Path, issuer: Path) -> str:
    """``openssl ocsp`` for ``cert`` of ``issuer``; its stdout once the response verifies under ``issuer``."""
    done = run(openssl, "ocsp", "-issuer", issuer, "-cert", cert, "-url", f"{server.base_url}/ocsp",
               "-CAfile", issuer, "-resp_text")  # fmt: skip
    assert done.returncode == 0 and "Response verify OK" in done.stderr, shown(done, server)
    return done.stdout


# --------------------------------------------------------------------------------------------- the rollover


def test_a_rollover_on_a_running_server_as_real_clients_see_it(
    server: ScepServerProcess, openssl: str, tmp_path: Path
) -> None:
    assert server.proc is not None
    master = server.proc.pid
    old_ca = server.ca_certificate()
    old_ca_pem = write_pem(tmp_path / "old-ca.pem", old_ca)
    old_ra = pick_recipient(get_ca_cert(server))
    assert "GetNextCACert" not in caps(server)

    before = enroll_with_scepclient(server, tmp_path, "before-rollover")
    cert_a = before.certificate()
    cert_a.verify_directly_issued_by(old_ca)
    assert crl_url(cert_a) == f"{server.base_url}/crl/{CA_NAME}.crl"

    staged_out = cli(server, "ca", "rollover", "stage", "--cross-sign")
    assert NEXT_LABEL in staged_out, staged_out
    generation_dir = server.data_dir / "ca" / GENERATIONS_DIR / NEXT_LABEL
    new_ca = x509.load_pem_x509_certificate((generation_dir / "ca.pem").read_bytes())
    new_ra = x509.load_pem_x509_certificate((generation_dir / "ra.pem").read_bytes())
    cross = x509.load_pem_x509_certificate((generation_dir / CROSS_CERT).read_bytes())
    new_ca_pem = write_pem(tmp_path / "new-ca.pem", new_ca)
    assert new_ca.subject != old_ca.subject

    wait_for(server, "GetNextCACert in GetCACaps", lambda: True if "GetNextCACert" in caps(server) else None)
    for _ in range(FETCHES):
        assert "GetNextCACert" in caps(server), f"a worker does not advertise GetNextCACert{server_tail(server)}"
    check_get_next_ca_cert(server, openssl, tmp_path, (old_ca_pem, old_ca, old_ra), expected=[new_ra, new_ca, cross])
    assert get_ca_cert(server)[:2] == [old_ra, old_ca], "staged, not active yet"

    cli(server, "ca", "rollover", "activate")
    wait_for(server, "the new RA in GetCACert", lambda: True if pick_recipient(get_ca_cert(server)) == new_ra else None)
    for _ in range(FETCHES):
        assert get_ca_cert(server)[:2] == [new_ra, new_ca], f"a worker hands out the old CA{server_tail(server)}"
    assert "GetNextCACert" not in caps(server)

    after = enroll_with_scepclient(server, tmp_path, "after-rollover")
    cert_b = after.certificate()
    check_issued_by_new_ca_only(server, openssl, after.cert_path, new_ca_pem, old_ca_pem)
    assert crl_url(cert_b) == f"{server.base_url}/crl/{NEXT_LABEL}.crl"

    revoked = cli(server, "certs", "revoke", f"{cert_a.serial_number:x}")
    assert f"{cert_a.serial_number:x}" in revoked.lower(), revoked
    assert before.cert_path is not None and after.cert_path is not None
    check_revocation_status(server, openssl, tmp_path, (before.cert_path, old_ca_pem), (after.cert_path, new_ca_pem))

    assert server.proc is not None and server.proc.poll() is None, f"the server exited{server_tail(server)}"
    assert server.proc.pid == master, "the server restarted"


def check_get_next_ca_cert(
    server: ScepServerProcess, openssl: str, tmp_path: Path, old: tuple[Path, x509.Certificate, x509.Certificate],
    *, expected: list[x509.Certificate],
) -> None:
    """GetNextCACert verifies under the old CA alone (``openssl cms``), and under the old RA alone or the
    old CA alone (``read_next_ca``); it carries the staged RA, CA and cross certificate (``expected``)."""
    old_ca_pem, old_ca, old_ra = old
    response = fresh_get(server, "/scep", operation="GetNextCACert")
    assert response.status_code == 200, f"GetNextCACert: HTTP {response.status_code} {response.text[:200]}"
    assert response.headers["Content-Type"].split(";")[0].strip() == NEXT_CA_CERT
    reply, content = tmp_path / "next-ca.der", tmp_path / "next-ca-content.der"
    reply.write_bytes(response.content)
    verified = run(openssl, "cms", "-verify", "-inform", "DER", "-in", reply, "-CAfile", old_ca_pem,
                   "-purpose", "any", "-out", content)  # fmt: skip
    assert verified.returncode == 0 and "Verification successful" in verified.stderr, shown(verified, server)
    printed = run(openssl, "pkcs7", "-inform", "DER", "-in", content, "-print_certs")
    assert printed.returncode == 0, shown(printed, server)
    carried = load_pem_certs(printed.stdout)
    for cert in expected:
        assert cert in carried, f"GetNextCACert lacks {cert.subject.rfc4514_string()}:\n{printed.stdout}"

    for signer in (old_ra, old_ca):  # signed by both current keys: trusting either one is enough
        following = read_next_ca(response.content, [signer])
        assert following.signer == signer
        assert following.ra == expected[0] and following.ca == expected[1]


def check_issued_by_new_ca_only(
    server: ScepServerProcess, openssl: str, cert: Path | None, new_ca_pem: Path, old_ca_pem: Path
) -> None:
    assert cert is not None
    under_new = run(openssl, "verify", "-CAfile", new_ca_pem, cert)
    assert under_new.returncode == 0 and f"{cert}: OK" in under_new.stdout, shown(under_new, server)
    under_old = run(openssl, "verify", "-CAfile", old_ca_pem, cert)
    assert under_old.returncode != 0, shown(under_old, server)


def check_revocation_status(
    server: ScepServerProcess, openssl: str, tmp_path: Path, old: tuple[Path, Path], new: tuple[Path, Path]
) -> None:
    """After ``certs revoke`` of the old CA's certificate: revoked in OCSP and on the old CA's CRL; the
    new CA's certificate good, and not on the new CA's CRL. Every answer verifies under its own CA."""
    (old_cert, old_ca_pem), (new_cert, new_ca_pem) = old, new
    serial_a = x509.load_pem_x509_certificate(old_cert.read_bytes()).serial_number
    status = wait_for(server, "A revoked in OCSP", lambda: _revoked_answer(openssl, server, old_cert, old_ca_pem))
    assert "Revocation Time:" in status, status
    assert f"{new_cert}: good" in ocsp_query(openssl, server, new_cert, new_ca_pem)

    def old_crl_listing_a() -> Path | None:
        path = download(f"{server.base_url}/crl/{CA_NAME}.crl", tmp_path / "old.crl")
        return path if serial_a in crl_serials(openssl, path) else None

    verified_crl(openssl, server, wait_for(server, "A on the old CA's CRL", old_crl_listing_a), old_ca_pem)
    new_cert_obj = x509.load_pem_x509_certificate(new_cert.read_bytes())
    new_crl = verified_crl(openssl, server, download(crl_url(new_cert_obj), tmp_path / "new.crl"), new_ca_pem)
    assert serial_a not in crl_serials(openssl, new_crl), "the new CA's CRL lists the old CA's certificate"


def _revoked_answer(openssl: str, server: ScepServerProcess, cert: Path, issuer: Path) -> str | None:
    answer = ocsp_query(openssl, server, cert, issuer)
    return answer if f"{cert}: revoked" in answer else None
