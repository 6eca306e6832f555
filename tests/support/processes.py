"""Child processes on 127.0.0.1 for the tests: start them in a process group of their own, stop the whole
group, talk to them over loopback HTTP with no proxy in the way."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
STOP_TIMEOUT = 15.0
_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "ftp_proxy")

# urllib honours *_proxy variables; nothing here may leave 127.0.0.1.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class HarnessError(RuntimeError):
    """A server or client could not be started, or did not become ready."""


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


_BASE64_LINE = re.compile(r"^[A-Za-z0-9+/=]{40,}$")


def tail(text: str, lines: int = 80) -> str:
    """The last lines of a log, without the base64 bodies certmonger logs at length."""
    kept = [line for line in text.splitlines() if not _BASE64_LINE.match(line.strip())]
    return "\n".join(kept[-lines:])


def stop_group(proc: subprocess.Popen[Any], timeout: float = STOP_TIMEOUT) -> None:
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


def spawn(argv: Sequence[str], log_path: Path, *, cwd: Path, env: Mapping[str, str]) -> subprocess.Popen[Any]:
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
