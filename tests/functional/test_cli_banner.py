"""What ``serve`` prints once before gunicorn's logs (``make run``): the profiles' SCEP URLs, the CA's
download URL and fingerprints, the data dir and, with the emulator, its URL and a simulator command that
works. Checked against the real server under gunicorn, the real emulator and the real simulator."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from scep_server.cli.banner import base_url, scep_url
from tests.support.processes import HarnessError, free_port, http_get, spawn, stop_group, tail

SCEP_SERVER = Path(sys.executable).parent / "scep-server"
DEV_CONFIG = Path(__file__).parents[2] / "config" / "dev.yaml"
CHALLENGE = "banner-challenge"
HEADER = "scep-server serving on "
STARTUP_TIMEOUT = 60.0


def _environment() -> dict[str, str]:
    kept = {k: v for k, v in os.environ.items() if not k.startswith(("SCEP_", "INTUNE_EMULATOR_", "AAD_"))}
    return {**kept, "SCEP_CHALLENGE": CHALLENGE, "PYTHONUNBUFFERED": "1"}


@contextmanager
def _serving(tmp_path: Path, config: Path, port: int, *extra: str) -> Iterator[Path]:
    """``serve --init-if-missing`` under gunicorn until it answers /healthz; its log (stdout and stderr)."""
    log = tmp_path / "serve.log"
    argv = [str(SCEP_SERVER), "--config", str(config), "serve", "--init-if-missing", "--bind", f"127.0.0.1:{port}",
            "--workers", "1", *extra]
    proc = spawn(argv, log, cwd=tmp_path, env=_environment())
    try:
        _wait_ready(proc, port, log)
        yield log
    finally:
        stop_group(proc)


def _wait_ready(proc: subprocess.Popen[Any], port: int, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise HarnessError(f"serve exited with {proc.returncode}:\n{tail(log.read_text())}")
        try:
            if http_get(f"http://127.0.0.1:{port}/healthz", timeout=2.0)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise HarnessError(f"serve not ready on port {port}:\n{tail(log.read_text())}")


def _banner(log: Path) -> tuple[dict[str, str], list[str]]:
    """The banner's rows (key -> value) and the log's lines."""
    lines = log.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(HEADER))
    rows: dict[str, str] = {}
    for line in lines[start + 1:]:
        if not line.startswith("  "):
            break
        key, _, value = line.strip().partition(": ")
        rows[key.rstrip(":")] = value.strip()
    return rows, lines


def _colon_hex(digest: bytes) -> str:
    return ":".join(f"{byte:02X}" for byte in digest)


def test_the_banner_says_where_to_enroll_and_what_to_trust(tmp_path: Path) -> None:
    config = tmp_path / "scep.yaml"
    config.write_text(yaml.safe_dump({
        "dev": True, "data_dir": "var", "ca": {"name": "banner-ca", "key_size": 2048},
        "profiles": {name: {"challenge": {"secret": {"env": "SCEP_CHALLENGE"}}} for name in ("default", "corp")},
    }), encoding="utf-8")
    port = free_port()
    with _serving(tmp_path, config, port) as log:
        rows, lines = _banner(log)
        base = f"http://127.0.0.1:{port}"
        assert lines.count(f"{HEADER}{base}") == 1
        assert rows["SCEP URL (default)"] == f"{base}/scep/default/pkiclient.exe"
        assert rows["SCEP URL (corp)"] == f"{base}/scep/corp/pkiclient.exe"
        for profile in ("default", "corp"):
            status, caps = http_get(f"{rows[f'SCEP URL ({profile})']}?operation=GetCACaps")
            assert status == 200 and b"POSTPKIOperation" in caps
        ca = x509.load_pem_x509_certificate((tmp_path / "var" / "ca" / "ca.pem").read_bytes())
        assert rows["CA SHA-1 fingerprint"] == _colon_hex(ca.fingerprint(hashes.SHA1()))
        assert rows["CA SHA-256 fingerprint"] == _colon_hex(ca.fingerprint(hashes.SHA256()))
        status, der = http_get(rows["CA certificate"])
        assert status == 200 and x509.load_der_x509_certificate(der) == ca
        assert rows["data dir"] == str(tmp_path / "var")
        assert "Intune emulator" not in rows and "try" not in rows
    banner_at = lines.index(f"{HEADER}{base}")
    gunicorn_at = next(i for i, line in enumerate(lines) if "Starting gunicorn" in line)
    assert banner_at < gunicorn_at


def test_with_the_emulator_the_banner_gives_a_simulator_command_that_works(tmp_path: Path) -> None:
    port, emulator_port = free_port(), free_port()
    config = tmp_path / "dev.yaml"  # make run's configuration, on free ports
    config.write_text(DEV_CONFIG.read_text(encoding="utf-8").replace("127.0.0.1:8443", f"127.0.0.1:{emulator_port}")
                      .replace("127.0.0.1:8080", f"127.0.0.1:{port}"), encoding="utf-8")
    with _serving(tmp_path, config, port, "--with-emulator") as log:
        rows, _ = _banner(log)
        assert rows["Intune emulator"] == f"https://127.0.0.1:{emulator_port}"
        assert rows["SCEP URL (intune)"] == f"http://127.0.0.1:{port}/scep/intune/pkiclient.exe"
        command = shlex.split(rows["try"])
        assert Path(command[0]).name == "scep-simulator"
        done = subprocess.run([*command, "--profile", "sn-format-common-name"], cwd=tmp_path, env=_environment(),
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "1/1 devices passed" in done.stdout


def test_urls_from_binds() -> None:
    assert base_url("127.0.0.1:8080") == "http://127.0.0.1:8080"
    assert base_url("0.0.0.0:8080") == "http://127.0.0.1:8080"  # every interface: loopback is one of them
    assert base_url("[::]:8080") == "http://[::1]:8080"
    assert base_url("unix:/run/scep.sock") == "unix:/run/scep.sock"
    assert scep_url("http://h:1", "corp") == "http://h:1/scep/corp/pkiclient.exe"
