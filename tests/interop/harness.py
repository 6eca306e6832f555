"""Real SCEP clients against a real server process, all on 127.0.0.1.

Servers
-------
``ScepServerProcess`` writes a YAML config, runs ``scep-server --config FILE init`` and then
``scep-server --config FILE serve --bind 127.0.0.1:PORT --workers 2 --threads 4`` (gunicorn in the
foreground) in its own process group, waits for ``GET /healthz`` to answer 200, and on exit sends
SIGTERM to the group, then SIGKILL if it is still there after a grace period.

``MicromdmScepServer`` runs micromdm's ``scepserver`` (Debian package ``scep``) the same way:
``scepserver ca -init`` then ``scepserver -depot DIR -port PORT -challenge SECRET -debug``. It is a
reference SCEP server for checking the client side of this harness and for benchmarks. It has no RA:
its CA certificate signs CertReps and decrypts requests, and it always encrypts CertReps with single
DES. It listens on all interfaces (it has no listen-address flag); everything here only connects to
127.0.0.1.

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

import contextlib
import hashlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml
from cryptography import x509

SCEPCLIENT = "/usr/bin/scepclient"
SCEPSERVER = "/usr/bin/scepserver"
CERTMONGER = "/usr/sbin/certmonger"
GETCERT = "/usr/bin/getcert"
SCEP_SUBMIT = "/usr/lib/certmonger/scep-submit"
DBUS_DAEMON = "/usr/bin/dbus-daemon"

HOST = "127.0.0.1"
CHALLENGE = "s3cret"
LEGACY_PROFILE = "legacy"  # allow_des: micromdm scepclient only speaks single DES + SHA-1
STOP_TIMEOUT = 15.0
REPO_ROOT = Path(__file__).resolve().parents[2]
_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "ftp_proxy")

# urllib honours *_proxy variables; nothing here may leave 127.0.0.1.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class HarnessError(RuntimeError):
    """A server or client could not be started, or did not become ready."""


# --------------------------------------------------------------------------------------------- helpers


def client_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for client processes: proxies removed so libcurl and Go stay on loopback."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in _PROXY_VARS}
    env["no_proxy"] = env["NO_PROXY"] = f"{HOST},localhost"
    env.update(extra or {})
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET a loopback URL without proxies; HTTP errors are returned, not raised."""
    if not url.startswith(f"http://{HOST}:"):
        raise ValueError(f"refusing to fetch a non-loopback URL: {url}")
    try:
        with _OPENER.open(url, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def sha256_fingerprint(cert: x509.Certificate) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding

    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


def load_pem_certs(data: bytes | str) -> list[x509.Certificate]:
    raw = data.encode() if isinstance(data, str) else data
    if b"-----BEGIN CERTIFICATE-----" not in raw:
        return []
    return x509.load_pem_x509_certificates(raw)


_BASE64_LINE = re.compile(r"^[A-Za-z0-9+/=]{40,}$")


def _tail(text: str, lines: int = 80) -> str:
    """The last lines of a log, without the base64 bodies certmonger logs at length."""
    kept = [line for line in text.splitlines() if not _BASE64_LINE.match(line.strip())]
    return "\n".join(kept[-lines:])


def _stop_group(proc: subprocess.Popen[Any], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM the process group led by ``proc``, SIGKILL it if it lingers; reap the leader."""
    pgid = proc.pid
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    # Workers or helpers left in the group (the leader may be gone already) are ended too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout)


def _spawn(argv: Sequence[str], log_path: Path, *, cwd: Path, env: Mapping[str, str]) -> subprocess.Popen[Any]:
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


# --------------------------------------------------------------------------------------------- servers

# `serve` keeps the CA keys encrypted at rest: the interop server runs as production does, with a passphrase.
_SERVER_CONFIG = """\
data_dir: {data_dir}
ca:
  key_passphrase: {{env: SCEP_CA_PASSPHRASE, value: "interop-ca-passphrase"}}
profiles:
  default:
    challenge: {{type: static, secret: {{value: "{challenge}"}}}}
  {legacy}:
    challenge: {{type: static, secret: {{value: "{challenge}"}}}}
    allow_des: true
"""


def server_config(data_dir: Path, challenge: str = CHALLENGE) -> str:
    """The interop config: a ``default`` profile and a DES-allowing ``legacy`` one, static challenge."""
    return _SERVER_CONFIG.format(data_dir=data_dir, challenge=challenge, legacy=LEGACY_PROFILE)


def unique_cn(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def default_server_cmd() -> list[str]:
    """How to run our CLI: $SCEP_INTEROP_SERVER_CMD, the installed console script, or the module."""
    override = os.environ.get("SCEP_INTEROP_SERVER_CMD")
    if override:
        return shlex.split(override)
    for candidate in (Path(sysconfig.get_path("scripts")) / "scep-server", Path(sys.executable).parent / "scep-server"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return [str(candidate)]
    return [sys.executable, "-c", "import sys; from scep_server.cli import main; sys.exit(main())"]


class _ServerBase:
    """Shared lifecycle: spawn, wait until ready, log access, stop the whole process group."""

    startup_timeout = 30.0
    ready_path = "/healthz"
    name = "server"

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = Path(tmp_path)
        self.tmp_path.mkdir(parents=True, exist_ok=True)
        self.log_path = self.tmp_path / f"{self.name}.log"
        self.port = 0
        self.proc: subprocess.Popen[Any] | None = None

    # -- public
    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> Self:
        try:
            self._prepare()
            self._start_with_retries()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc is not None:
            _stop_group(self.proc)
            self.proc = None

    # -- for subclasses
    def _prepare(self) -> None:
        raise NotImplementedError

    def _serve_argv(self, port: int) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str]:
        return client_env()

    # -- internals
    def _start_with_retries(self, attempts: int = 3) -> None:
        for attempt in range(1, attempts + 1):
            self.port = free_port()
            mark = len(self.log_text())
            self.proc = _spawn(self._serve_argv(self.port), self.log_path, cwd=self.tmp_path, env=self._env())
            try:
                self._wait_ready()
                return
            except HarnessError:
                recent = self.log_text()[mark:]
                self.stop()
                port_taken = "in use" in recent.lower()
                if attempt == attempts or not port_taken:
                    raise

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.startup_timeout
        url = self.base_url + self.ready_path
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise HarnessError(
                    f"{self.name} exited with status {self.proc.returncode} before it was ready; "
                    f"its log:\n{_tail(self.log_text())}"
                )
            try:
                status, _ = http_get(url, timeout=2.0)
                if status == 200:
                    return
                last = f"HTTP {status}"
            except OSError as exc:
                last = str(exc)
            time.sleep(0.1)
        raise HarnessError(
            f"{self.name} not ready at {url} after {self.startup_timeout:.0f} s ({last}); "
            f"its log:\n{_tail(self.log_text())}"
        )


class ScepServerProcess(_ServerBase):
    """Our server: ``init`` then ``serve`` under gunicorn on a free 127.0.0.1 port.

    ``config_yaml`` is written to ``tmp_path/scep-server.yaml``; a relative ``data_dir`` is relative
    to ``tmp_path`` (the server runs there). ``url(profile, path)`` builds SCEP URLs.
    """

    name = "scep-server"

    def __init__(
        self,
        tmp_path: Path,
        config_yaml: str,
        *,
        server_cmd: Sequence[str] | str | None = None,
        workers: int = 2,
        threads: int = 4,
        startup_timeout: float = 30.0,
        env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(tmp_path)
        self.config_yaml = textwrap.dedent(config_yaml)
        if isinstance(server_cmd, str):
            server_cmd = shlex.split(server_cmd)
        self.server_cmd = list(server_cmd) if server_cmd else default_server_cmd()
        self.workers = workers
        self.threads = threads
        self.startup_timeout = startup_timeout
        self.extra_env = dict(env or {})
        self.config_path = self.tmp_path / "scep-server.yaml"
        raw = yaml.safe_load(self.config_yaml) or {}
        data_dir = Path(str(raw.get("data_dir", "var")))
        self.data_dir = data_dir if data_dir.is_absolute() else self.tmp_path / data_dir

    @property
    def ca_pem_path(self) -> Path:
        return self.data_dir / "ca" / "ca.pem"

    @property
    def ra_pem_path(self) -> Path:
        return self.data_dir / "ca" / "ra.pem"

    def url(self, profile: str | None = None, path: str = "/scep") -> str:
        """``http://127.0.0.1:PORT<path>`` plus ``/<profile>`` when a profile is named."""
        return self.base_url + path + (f"/{profile}" if profile else "")

    def cli(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run ``scep-server --config FILE <args>`` and return its completed process."""
        return subprocess.run(
            [*self.server_cmd, "--config", str(self.config_path), *args],
            cwd=self.tmp_path,
            env=self._env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def certs_list(self) -> str:
        """stdout of ``scep-server certs list``; raises if the command fails."""
        done = self.cli("certs", "list")
        if done.returncode != 0:
            raise HarnessError(f"certs list failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def ca_certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.ca_pem_path.read_bytes())

    def _env(self) -> dict[str, str]:
        # SCEP_SERVER_* would override the config file; the test config must be the only input.
        env = {k: v for k, v in client_env().items() if not k.startswith("SCEP_SERVER_")}
        env["PYTHONUNBUFFERED"] = "1"
        # The checkout under test comes first, whatever copy of the package is installed.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        env.update(self.extra_env)
        return env

    def _prepare(self) -> None:
        self.config_path.write_text(self.config_yaml, encoding="utf-8")
        try:
            done = self.cli("init")
        except FileNotFoundError as exc:
            raise HarnessError(f"cannot run {self.server_cmd!r}: {exc}") from exc
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write(f"$ init (exit {done.returncode})\n{done.stdout}{done.stderr}\n")
        if done.returncode != 0:
            raise HarnessError(f"scep-server init failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        for pem in (self.ca_pem_path, self.ra_pem_path):
            if not pem.is_file():
                raise HarnessError(f"scep-server init did not create {pem}:\n{done.stdout}\n{done.stderr}")

    def _serve_argv(self, port: int) -> list[str]:
        return [
            *self.server_cmd, "--config", str(self.config_path), "serve",
            "--bind", f"{HOST}:{port}", "--workers", str(self.workers), "--threads", str(self.threads),
        ]  # fmt: skip


class MicromdmScepServer(_ServerBase):
    """micromdm ``scepserver`` with a fresh CA (``scepserver ca -init``), on a free port.

    Only ``/scep`` exists there: ``url()`` accepts a profile so the same calls work for both servers,
    and ignores it. ``ca_pem_path`` is also ``ra_pem_path``: that CA signs and decrypts.
    """

    name = "micromdm-scepserver"
    ready_path = "/scep?operation=GetCACaps"

    def __init__(
        self,
        tmp_path: Path,
        challenge: str | None = None,
        *,
        key_size: int = 2048,
        debug: bool = True,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 30.0,
        binary: str = SCEPSERVER,
    ) -> None:
        super().__init__(tmp_path)
        self.challenge = challenge
        self.key_size = key_size
        self.debug = debug
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self.binary = binary
        self.data_dir = self.tmp_path / "depot"

    @property
    def ca_pem_path(self) -> Path:
        return self.data_dir / "ca.pem"

    @property
    def ra_pem_path(self) -> Path:
        return self.ca_pem_path

    def url(self, profile: str | None = None, path: str = "/scep") -> str:
        return self.base_url + path

    def ca_certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.ca_pem_path.read_bytes())

    def _prepare(self) -> None:
        if not os.access(self.binary, os.X_OK):
            raise HarnessError(f"{self.binary} is missing: run .ci/install-deps.sh")
        argv = [self.binary, "ca", "-init", "-depot", str(self.data_dir), "-keySize", str(self.key_size)]
        done = subprocess.run(argv, cwd=self.tmp_path, capture_output=True, text=True, timeout=120)
        if done.returncode != 0 or not self.ca_pem_path.is_file():
            raise HarnessError(f"scepserver ca -init failed ({done.returncode}):\n{done.stdout}{done.stderr}")

    def _serve_argv(self, port: int) -> list[str]:
        argv = [self.binary, "-depot", str(self.data_dir), "-port", str(port)]
        if self.challenge is not None:
            argv += ["-challenge", self.challenge]
        if self.debug:
            argv.append("-debug")
        return argv + self.extra_args


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
        lines += ["--- stdout", _tail(self.stdout), "--- stderr", _tail(self.stderr)]
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


def explain(run: ClientRun, server: _ServerBase | None = None, lines: int = 60) -> str:
    """A failure message: the client run and the tail of the server's log."""
    text = run.describe()
    if server is not None:
        text += f"\n--- {server.name} log\n{_tail(server.log_text(), lines)}"
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
                _stop_group(proc)
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
        self._daemon = _spawn(argv, self.log_path, cwd=self.state, env=self.env())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._daemon.poll() is not None:
                raise HarnessError(f"certmonger exited ({self._daemon.returncode}):\n{_tail(self.log_text())}")
            if self.getcert("list-cas", check=False).returncode == 0:
                return
            time.sleep(0.2)
        raise HarnessError(f"certmonger did not answer on the session bus:\n{_tail(self.log_text())}")

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
                f"certmonger log:\n{_tail(self.log_text())}"
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
            argv, 0 if issued else 1, added.stdout + listing, added.stderr + _tail(self.log_text(), 60),
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
