"""Real SCEP clients against a real server process, all on 127.0.0.1 (servers: :mod:`tests.support.servers`).

Clients, and what each does on the wire
---------------------------------------
micromdm ``scepclient`` 2.1.0 (``run_scepclient``):
  * ``GET /scep?operation=GetCACert`` (no ``message=`` unless ``-cacert-message``), then
    ``GET ?operation=GetCACaps``, then ``POST ?operation=PKIOperation`` with
    ``Content-Type: application/octet-stream`` and the DER pkiMessage as the body. It POSTs whatever
    the capabilities say.
  * Always single DES-CBC content encryption, RSAES-PKCS1-v1_5 key transport and SHA-1 digests;
    the ``-help`` flags offer no choice. A server must allow DES for the profile this client uses.
  * It encrypts the request to every certificate in the GetCACert answer, one RecipientInfo per
    certificate (RA and CA alike); the server has to pick the RecipientInfo naming its RA.
  * PKCSReq signed by a self-signed ``CN=SCEP SIGNER,O=scep-client`` certificate; transactionID is
    the base64 SHA-1 of the public key; the CSR carries challengePassword and an empty
    extensionRequest attribute; subject ``C=<country>,O=<org>,OU=<ou>,CN=<cn>``.
  * Files: it writes ``csr.pem`` and ``self.pem`` next to ``-private-key`` and the issued certificate
    to ``-certificate`` (default ``client.pem`` next to the key). An existing ``csr.pem`` is reused
    and an existing certificate turns the request into a RenewalReq, so every run gets a fresh
    directory. Exit status 1 with the error on stdout on any failure (FAILURE CertRep included); on
    PENDING it sleeps 30 s and retries forever, hence the timeout.

certmonger 0.79.17 (``CertmongerSession`` drives the real daemon; ``scep_submit`` runs its helper):
  * The daemon runs on a private D-Bus session bus (our own bus config, so no service activation)
    with all of its state under a temporary directory (``CERTMONGER_*_DIR`` variables); ``getcert
    -s`` talks to it. Each CA operation runs ``/usr/lib/certmonger/scep-submit``, which uses libcurl.
  * ``getcert add-scep-ca`` makes the helper send ``GET ?operation=GetCACaps&message=0`` and
    ``GetCACert&message=0`` (in either order), later ``GetCACert&message=1``, ``2``, ... until an
    answer repeats one already seen or is not 200. GetCACaps is fetched again before each request.
  * From the GetCACert certificates it takes the certificate that issued none of the others as the
    RA (encryption) certificate, preferring one with keyEncipherment/dataEncipherment, and the one
    issued by none of the others as the CA root. With a single certificate (no RA) it learns no
    root, and every CertRep then fails verification unless the CA is given with ``-N``.
  * Enrollment: ``GET ?operation=PKIOperation&message=<URL-escaped base64>`` - always GET, even when
    POSTPKIOperation is advertised. The query is about 3.7 KB for a 2048-bit key and 5.7 KB for a
    4096-bit one, over gunicorn's default ``limit_request_line`` of 4094 bytes.
  * Content encryption AES-256-CBC when ``AES`` is in the capabilities, SHA-256 digests,
    RSAES-PKCS1-v1_5 key transport to the RA only. Signer: a self-signed X.509 *v1* certificate
    with the CSR's subject and a large serial; transactionID: a long decimal string.
  * CSR attributes: challengePassword, friendlyName, extensionRequest (subjectAltName from -D/-E/-A,
    basicConstraints CA:FALSE critical, subjectKeyIdentifier).
  * CertRep checks: signature verified with OpenSSL ``PKCS7_verify`` against the learned root
    (purpose errors are ignored), which needs an encapsulated content even when it is empty: a
    FAILURE or PENDING CertRep without one fails with "no content" and the request is left
    CA_UNREACHABLE. senderNonce, recipientNonce and transactionID are all required. The enveloped
    degenerate PKCS#7 is decrypted with the request's key by OpenSSL 3 without the legacy provider (certmonger
    ignores OPENSSL_CONF): a single-DES CertRep - micromdm's - ends in NEED_GUIDANCE.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from cryptography import x509

from tests.support.processes import HarnessError, client_env, spawn, stop_group, tail
from tests.support.servers import ServerProcess

SCEPCLIENT = "/usr/bin/scepclient"
CERTMONGER = "/usr/sbin/certmonger"
GETCERT = "/usr/bin/getcert"
SCEP_SUBMIT = "/usr/lib/certmonger/scep-submit"
DBUS_DAEMON = "/usr/bin/dbus-daemon"


def sha256_fingerprint(cert: x509.Certificate) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding

    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


def load_pem_certs(data: bytes | str) -> list[x509.Certificate]:
    raw = data.encode() if isinstance(data, str) else data
    if b"-----BEGIN CERTIFICATE-----" not in raw:
        return []
    return x509.load_pem_x509_certificates(raw)


def unique_cn(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# --------------------------------------------------------------------------------------------- scepclient


@dataclass(frozen=True)
class ClientRun:
    """One client run: its command, exit status, output and what it left on disk."""

    argv: list[str]
    returncode: int | None  # None: killed after the timeout
    stdout: str
    stderr: str
    workdir: Path
    cert_path: Path | None  # set only when the client wrote a certificate
    key_path: Path
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.cert_path is not None

    def certificate(self) -> x509.Certificate:
        if self.cert_path is None:
            raise AssertionError(f"no certificate was issued\n{self.describe()}")
        return x509.load_pem_x509_certificate(self.cert_path.read_bytes())

    def describe(self) -> str:
        lines = [f"$ {shlex.join(self.argv)}", f"exit status: {self.returncode}"]
        lines += [f"{k}: {v}" for k, v in self.extra.items()]
        lines += ["--- stdout", tail(self.stdout), "--- stderr", tail(self.stderr)]
        return "\n".join(lines)


def _fresh_dir(parent: Path, stem: str) -> Path:
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{stem}-", dir=parent))


def run_scepclient(
    url: str,
    tmp_path: Path,
    challenge: str | None,
    cn: str,
    *,
    organization: str = "scep-client",
    ou: str = "MDM",
    country: str = "US",
    key_size: int = 2048,
    cacert_message: str | None = None,
    extra_args: Sequence[str] = (),
    timeout: float = 60.0,
    binary: str = SCEPCLIENT,
) -> ClientRun:
    """Enroll once with micromdm ``scepclient`` in a fresh directory under ``tmp_path``.

    The client makes its own key (``key.pem``) and CSR (``csr.pem``); the certificate goes to
    ``cert.pem`` in the same directory. ``-debug`` logging (stderr) lists the GetCACert certificates.
    """
    workdir = _fresh_dir(Path(tmp_path), "scepclient")
    key_path, cert_path = workdir / "key.pem", workdir / "cert.pem"
    argv = [
        binary, "-server-url", url, "-private-key", str(key_path), "-certificate", str(cert_path),
        "-cn", cn, "-organization", organization, "-ou", ou, "-country", country,
        "-keySize", str(key_size), "-debug",
    ]  # fmt: skip
    if challenge is not None:
        argv += ["-challenge", challenge]
    if cacert_message is not None:
        argv += ["-cacert-message", cacert_message]
    argv += list(extra_args)
    try:
        done = subprocess.run(
            argv, cwd=workdir, env=client_env(), stdin=subprocess.DEVNULL,
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        returncode, stdout, stderr = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as exc:
        returncode = None
        stdout = _decode(exc.stdout)
        stderr = _decode(exc.stderr) + f"\n[killed after {timeout:.0f} s]"
    issued = cert_path if cert_path.is_file() else None
    return ClientRun(argv, returncode, stdout, stderr, workdir, issued, key_path)


def explain(run: ClientRun, server: ServerProcess | None = None, lines: int = 60) -> str:
    """A failure message: the client run and the tail of the server's log."""
    text = run.describe()
    if server is not None:
        text += f"\n--- {server.name} log\n{tail(server.log_text(), lines)}"
    return text


def _decode(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode("utf-8", errors="replace")


_CACERT_LINE = re.compile(r'msg=cacertlist number=(\d+) rdn="([^"]*)" hash_type=SHA-256 hash=([0-9a-f]{64})')


def scepclient_cacerts(run: ClientRun) -> list[tuple[str, str]]:
    """(RDN, SHA-256) of each GetCACert certificate as scepclient's debug log lists them."""
    return [(m.group(2), m.group(3)) for m in _CACERT_LINE.finditer(run.stderr)]


# --------------------------------------------------------------------------------------------- certmonger


def scep_submit(url: str, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run certmonger's SCEP helper directly, e.g. ``-c`` (GetCACaps) or ``-C`` (GetCACert)."""
    return subprocess.run(
        [SCEP_SUBMIT, "-u", url, *args], env=client_env(), stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


_BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:dir={socket_dir}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""

# getcert states after which nothing more happens without a resubmit.
_FAILED_STATES = {"CA_REJECTED", "CA_UNREACHABLE", "CA_UNCONFIGURED", "NEED_GUIDANCE"}


class CertmongerSession:
    """A private ``dbus-daemon`` plus a ``certmonger -s`` daemon whose state lives under ``tmp_path``.

    ``getcert(...)`` runs ``getcert <command> -s ...`` against it. ``add_scep_ca`` and ``request``
    wrap the two commands an administrator would type.
    """

    def __init__(self, tmp_path: Path, *, debug_level: int = 2) -> None:
        self.root = Path(tmp_path)
        self.debug_level = debug_level
        self.state = self.root / "certmonger"
        self.bus_log = self.root / "dbus-daemon.log"
        self.log_path = self.root / "certmonger.log"
        self.bus_address = ""
        self._socket_dir: str | None = None
        self._bus: subprocess.Popen[Any] | None = None
        self._daemon: subprocess.Popen[Any] | None = None
        self._requests = 0

    # -- lifecycle
    def __enter__(self) -> Self:
        try:
            self._start_bus()
            self._start_daemon()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        for proc in (self._daemon, self._bus):
            if proc is not None:
                stop_group(proc)
                if proc.stdout is not None:
                    proc.stdout.close()
        self._daemon = self._bus = None
        if self._socket_dir:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def env(self) -> dict[str, str]:
        s = self.state
        extra = {
            "DBUS_SESSION_BUS_ADDRESS": self.bus_address,
            "CERTMONGER_REQUESTS_DIR": str(s / "requests"),
            "CERTMONGER_CAS_DIR": str(s / "cas"),
            "CERTMONGER_LOCAL_CA_DIR": str(s / "local"),
            "CERTMONGER_CONFIG_DIR": str(s / "config"),
            "CERTMONGER_TMPDIR": str(s / "tmp"),
            "CERTMONGER_SYSTEM_LOCK_FILE": str(s / "lock"),
            "HOME": str(s / "home"),
            "XDG_CONFIG_HOME": str(s / "home" / ".config"),
        }
        return client_env(extra)

    def _start_bus(self) -> None:
        for tool in (DBUS_DAEMON, CERTMONGER, GETCERT, SCEP_SUBMIT):
            if not os.access(tool, os.X_OK):
                raise HarnessError(f"{tool} is missing: run .ci/install-deps.sh")
        for sub in ("requests", "cas", "local", "config", "tmp", "home"):
            (self.state / sub).mkdir(parents=True, exist_ok=True)
        # Unix socket paths are limited to ~108 bytes, so the socket lives in a short /tmp directory.
        self._socket_dir = tempfile.mkdtemp(prefix="cm-bus-", dir="/tmp" if os.path.isdir("/tmp") else None)
        config = self.state / "bus.conf"
        config.write_text(_BUS_CONFIG.format(socket_dir=self._socket_dir))
        with open(self.bus_log, "ab") as log:
            self._bus = subprocess.Popen(
                [DBUS_DAEMON, f"--config-file={config}", "--nofork", "--print-address=1"],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, start_new_session=True,
            )  # fmt: skip
        assert self._bus.stdout is not None
        line = self._bus.stdout.readline().decode().strip()
        if not line.startswith("unix:"):
            raise HarnessError(f"dbus-daemon gave no address; its log:\n{self.bus_log.read_text()}")
        self.bus_address = line

    def _start_daemon(self, timeout: float = 30.0) -> None:
        argv = [CERTMONGER, "-s", "-n", "-d", str(self.debug_level), "-p", str(self.state / "certmonger.pid")]
        self._daemon = spawn(argv, self.log_path, cwd=self.state, env=self.env())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._daemon.poll() is not None:
                raise HarnessError(f"certmonger exited ({self._daemon.returncode}):\n{tail(self.log_text())}")
            if self.getcert("list-cas", check=False).returncode == 0:
                return
            time.sleep(0.2)
        raise HarnessError(f"certmonger did not answer on the session bus:\n{tail(self.log_text())}")

    # -- getcert
    def getcert(
        self, command: str, *args: str, check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [GETCERT, command, "-s", *args], env=self.env(), stdin=subprocess.DEVNULL,
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        if check and done.returncode != 0:
            raise HarnessError(
                f"getcert {command} {shlex.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}\n"
                f"certmonger log:\n{tail(self.log_text())}"
            )
        return done

    def add_scep_ca(
        self, name: str, url: str, *, signing_ca: Path | None = None, ca_identifier: str | None = None,
        wait: float = 30.0,
    ) -> str:  # fmt: skip
        """``getcert add-scep-ca -c NAME -u URL [-N CA.pem]``; wait until its GetCACert data is in.

        Returns the ``getcert list-cas`` text for the CA (capabilities and thumbprints).
        """
        args = ["-c", name, "-u", url]
        if signing_ca is not None:
            args += ["-N", str(signing_ca)]
        if ca_identifier is not None:
            args += ["-i", ca_identifier]
        self.getcert("add-scep-ca", *args)
        deadline = time.monotonic() + wait
        listing = ""
        while time.monotonic() < deadline:
            listing = self.getcert("list-cas", "-c", name).stdout
            if "thumbprint" in listing and "ca-error" not in listing:
                return listing
            time.sleep(0.2)
        return listing

    def request(
        self,
        ca: str,
        *,
        challenge: str | None,
        subject: str,
        dns: Sequence[str] = (),
        email: Sequence[str] = (),
        ip: Sequence[str] = (),
        key_size: int = 2048,
        extra_args: Sequence[str] = (),
        timeout: float = 60.0,
    ) -> ClientRun:
        """``getcert request -c CA -f cert -k key -L challenge -N subject -D/-E/-A ...``.

        Polls ``getcert list -i ID`` until the request is MONITORING (issued and saved) or in a
        failed state, or ``timeout`` passes. Key and certificate live in a fresh directory.
        """
        self._requests += 1
        req_id = f"req{self._requests}"
        workdir = _fresh_dir(self.root, f"certmonger-{req_id}")
        key_path, cert_path = workdir / "key.pem", workdir / "cert.pem"
        args = ["-c", ca, "-I", req_id, "-f", str(cert_path), "-k", str(key_path), "-N", subject]
        args += ["-g", str(key_size)]
        if challenge is not None:
            args += ["-L", challenge]
        for flag, values in (("-D", dns), ("-E", email), ("-A", ip)):
            for value in values:
                args += [flag, value]
        args += list(extra_args)
        added = self.getcert("request", *args, check=False)
        argv = [GETCERT, "request", "-s", *args]
        status, listing = self._wait_request(req_id, timeout) if added.returncode == 0 else ("NOT_ADDED", "")
        issued = cert_path if status == "MONITORING" and cert_path.is_file() else None
        ca_error = _listing_field(listing, "ca-error")
        return ClientRun(
            argv, 0 if issued else 1, added.stdout + listing, added.stderr + tail(self.log_text(), 60),
            workdir, issued, key_path, extra={"request": req_id, "status": status, "ca-error": ca_error},
        )  # fmt: skip

    def _wait_request(self, req_id: str, timeout: float) -> tuple[str, str]:
        deadline = time.monotonic() + timeout
        status, listing = "UNKNOWN", ""
        while time.monotonic() < deadline:
            listing = self.getcert("list", "-i", req_id, check=False).stdout
            status = _listing_field(listing, "status") or "UNKNOWN"
            stuck = _listing_field(listing, "stuck") == "yes"
            if status == "MONITORING" or status in _FAILED_STATES or stuck:
                return status, listing
            time.sleep(0.2)
        return f"TIMEOUT({status})", listing

    def request_csr(self, req_id: str) -> x509.CertificateSigningRequest:
        """The CSR certmonger generated for a request, read from its request store."""
        for entry in (self.state / "requests").iterdir():
            fields = _read_store_file(entry)
            if fields.get("id") == req_id and "csr" in fields:
                return x509.load_pem_x509_csr(fields["csr"].encode())
        raise HarnessError(f"no stored CSR for request {req_id}")

    def stop_tracking(self, req_id: str) -> None:
        self.getcert("stop-tracking", "-i", req_id, check=False)


def _read_store_file(path: Path) -> dict[str, str]:
    """certmonger's ``key=value`` files; a value continues on lines that start with a space."""
    fields: dict[str, str] = {}
    key = ""
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith(" ") and key:
            fields[key] += "\n" + line[1:]
        elif "=" in line:
            key, _, value = line.partition("=")
            fields[key] = value
    return fields


def _listing_field(listing: str, name: str) -> str:
    match = re.search(rf"^\s*{re.escape(name)}: (.*)$", listing, re.M)
    return match.group(1).strip() if match else ""
