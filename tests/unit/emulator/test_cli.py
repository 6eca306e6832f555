"""scep-intune-emulator: in the foreground until SIGTERM or the end of stdin; prints the server's configuration."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from scep_server.emulator.cli import LISTENING, run


def test_runs_until_sigterm(tmp_path: Path) -> None:
    env = {**os.environ, "AAD_APP_KEY": "cli-secret"}
    command = [sys.executable, "-m", "scep_server.emulator",
               "--port", "0", "--state-dir", str(tmp_path), "--client-id", "cli-app"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as process:
        assert process.stdout is not None
        banner = [process.stdout.readline()]
        while banner[-1] and not banner[-1].startswith("  client_secret"):
            banner.append(process.stdout.readline())
        url = banner[0].split()[4]
        with requests.Session() as session:
            session.verify, session.trust_env = str(tmp_path / "ca.pem"), False
            form = {"grant_type": "client_credentials", "client_id": "cli-app", "client_secret": "cli-secret",
                    "scope": f"{url}/intune-api/.default"}
            assert session.post(f"{url}/contoso.onmicrosoft.com/oauth2/v2.0/token", data=form, timeout=5).ok
        process.send_signal(signal.SIGTERM)
        rest = process.stdout.read()
        assert process.wait(timeout=10) == 0
    text = "".join(banner) + rest
    assert f'authority: "{url}/"' in text and 'client_id: "cli-app"' in text
    assert "client_secret: {env: AAD_APP_KEY}" in text and "cli-secret" not in text
    assert "stopped" in rest


def test_client_id_needs_a_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("AAD_APP_KEY", raising=False)
    assert run(["--state-dir", str(tmp_path), "--client-id", "x"]) == 2
    assert "AAD_APP_KEY" in capsys.readouterr().err


def test_port_in_use(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert run(["--port", str(taken.getsockname()[1]), "--state-dir", str(tmp_path)]) == 1
    assert "cannot listen" in capsys.readouterr().err


def test_stop_with_stdin_stops_when_the_parent_closes_it(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "scep_server.emulator", "--port", "0", "--state-dir", str(tmp_path),
               "--admin-token", "t", "--stop-with-stdin"]
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as process:
        assert process.stdin is not None and process.stdout is not None
        assert process.stdout.readline().startswith(LISTENING)
        process.stdin.close()  # what the parent's exit does, however it ends
        assert process.wait(timeout=10) == 0
        assert "stopped" in process.stdout.read()


def test_a_reader_gone_before_the_end_is_no_error(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "scep_server.emulator", "--port", "0", "--state-dir", str(tmp_path),
               "--admin-token", "t", "--stop-with-stdin"]
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        assert process.stdin is not None and process.stdout is not None and process.stderr is not None
        assert process.stdout.readline().startswith(LISTENING.encode())
        process.stdout.close()  # the parent was killed: nobody reads "stopped"
        process.stdin.close()
        status, errors = process.wait(timeout=10), process.stderr.read()
        assert status == 0 and b"Error" not in errors, errors
