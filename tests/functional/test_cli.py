"""The scep-server console script: init, import-ca, ca show/rotate-ra, certs list/show/revoke, the dev tools'
old subcommands, and the emulator ``serve --with-emulator`` starts beside the server."""

from __future__ import annotations

import argparse
import datetime
import os
import select
import socket
import stat
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from scep_server.cli import main
from scep_server.cli.beside import EmulatorProcess, start_beside, state_dir
from scep_server.cli.serve import ServeOptions, default_workers, serve_options
from scep_server.cli.tools import EMULATOR_STATE_DIR
from scep_server.config import IntuneConfig, SecretSource, ServerConfig, load_config
from scep_server.errors import ConfigError
from scep_server.runtime import build_runtime
from scep_server.web import create_app
from tests.support import pki
from tests.support.processes import free_port

from .conftest import CHALLENGE, CONFIG, Device, ScepTestServer


def _config_file(tmp_path: Path, extra: str = "dev: true\n") -> Path:
    path = tmp_path / "scep.yaml"
    path.write_text(CONFIG.format(data_dir=tmp_path / "var", challenge=CHALLENGE) + extra)
    return path


def test_init_creates_private_keys_and_prints_fingerprints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config_file(tmp_path)
    assert main(["--config", str(config), "init"]) == 0
    out = capsys.readouterr().out
    assert "SHA-1 fingerprint:" in out and "SHA-256 fingerprint:" in out
    for name in ("ca.key", "ra.key"):
        mode = stat.S_IMODE((tmp_path / "var" / "ca" / name).stat().st_mode)
        assert mode == 0o600, f"{name} has mode {mode:o}"
    assert (tmp_path / "var" / "scep-server.db").exists()


def test_init_twice_refuses_unless_if_missing(tmp_path: Path) -> None:
    config = str(_config_file(tmp_path))
    assert main(["--config", config, "init"]) == 0
    before = (tmp_path / "var" / "ca" / "ca.pem").read_bytes()
    assert main(["--config", config, "init"]) == 1
    assert main(["--config", config, "init", "--if-missing"]) == 0
    assert (tmp_path / "var" / "ca" / "ca.pem").read_bytes() == before


def test_passphrase_encrypts_keys_and_is_required_to_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(_config_file(tmp_path))
    monkeypatch.setenv("SCEP_CA_PASSPHRASE", "correct horse")
    assert main(["--config", config, "init"]) == 0
    assert b"ENCRYPTED" in (tmp_path / "var" / "ca" / "ca.key").read_bytes()
    monkeypatch.delenv("SCEP_CA_PASSPHRASE")
    capsys.readouterr()
    assert main(["--config", config, "ca", "show"]) == 2
    assert "SCEP_CA_PASSPHRASE" in capsys.readouterr().err


def test_import_existing_ca_with_chain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SCEP_CA_PASSPHRASE", "import passphrase")  # import-ca never stores the key decrypted
    now = datetime.datetime.now(datetime.UTC)
    root_key, sub_key = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP256R1())
    profile = {"usage": None, "key_identifier": True, "not_before": now - datetime.timedelta(days=1),
               "not_after": now + datetime.timedelta(days=900)}
    root_ca = pki.CA.root("Imported Root", key=root_key, hash_algorithm=hashes.SHA384(), **profile)
    root, sub = root_ca.cert, root_ca.child("Imported Issuing CA", key=sub_key, **profile).cert
    (tmp_path / "sub.pem").write_bytes(sub.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "root.pem").write_bytes(root.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "sub.key").write_bytes(sub_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    config = _config_file(tmp_path)
    assert main([
        "--config", str(config), "import-ca", "--cert", str(tmp_path / "sub.pem"),
        "--key", str(tmp_path / "sub.key"), "--chain", str(tmp_path / "root.pem"),
    ]) == 0
    out = capsys.readouterr().out
    assert "Imported Issuing CA" in out
    # Intune's trusted-certificate profile carries the root: ca show names it and its fingerprints.
    assert "root subject:" in out and "Imported Root" in out
    root_sha256 = ":".join(f"{b:02X}" for b in root.fingerprint(hashes.SHA256()))
    assert f"root SHA-256:         {root_sha256}" in out
    assert f"CA key:               {tmp_path / 'var' / 'ca' / 'ca.key'}" in out

    runtime = build_runtime(load_config(config, env={}))
    try:
        server = ScepTestServer(runtime, create_app(runtime.config, runtime_override=runtime).test_client(),
                                tmp_path / "var")
        cert = server.enroll(Device(common_name="under-imported-ca"))
        cert.verify_directly_issued_by(sub)
        assert server.http.get("/scep?operation=GetCACert").status_code == 200
        assert runtime.ca.getcacert_certificates(True)[-1] == root
    finally:
        runtime.close()


def test_rotate_ra_replaces_the_ra(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(_config_file(tmp_path))
    main(["--config", config, "init"])
    capsys.readouterr()
    assert main(["--config", config, "ca", "show"]) == 0
    before = _field(capsys.readouterr().out, "RA serial")
    assert main(["--config", config, "ca", "rotate-ra"]) == 0
    capsys.readouterr()
    assert main(["--config", config, "ca", "show"]) == 0
    shown = capsys.readouterr().out
    assert _field(shown, "RA serial") != before
    assert before in shown  # the previous RA, still decrypting in its grace period


def _field(output: str, name: str) -> str:
    line = next(line for line in output.splitlines() if line.startswith(name))
    return line[len(name):].strip(" :")


def test_certs_list_and_show(server: ScepTestServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cert = server.enroll(Device(common_name="listed-device"))
    config = tmp_path / "scep-server.yaml"  # written by the server fixture
    serial = f"{cert.serial_number:x}"
    assert main(["--config", str(config), "certs", "list"]) == 0
    listing = capsys.readouterr().out
    assert serial in listing and "CN=listed-device" in listing
    assert main(["--config", str(config), "certs", "show", serial]) == 0
    shown = capsys.readouterr().out
    assert "CN=listed-device" in shown and "valid" in shown
    assert main(["--config", str(config), "certs", "show", serial, "--pem"]) == 0
    pem = capsys.readouterr().out.encode()
    assert x509.load_pem_x509_certificate(pem) == cert
    assert main(["--config", str(config), "certs", "show", "abcdef"]) == 1


def test_bad_config_is_reported_not_raised(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("profiles: {p: {hash: md5}}\n")
    assert main(["--config", str(bad), "ca", "show"]) == 2
    assert "hash" in capsys.readouterr().err


def test_certs_revoke_once_then_conflict(
    server: ScepTestServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cert = server.enroll(Device(common_name="to-revoke"))
    config = str(tmp_path / "scep-server.yaml")
    serial = f"{cert.serial_number:x}"
    assert main(["--config", config, "certs", "revoke", serial, "--reason", "keyCompromise"]) == 0
    assert f"revoked {serial}" in capsys.readouterr().out
    assert main(["--config", config, "certs", "revoke", serial]) == 1
    assert "already revoked" in capsys.readouterr().err
    record = server.runtime.store.get_certificate(cert.serial_number)
    assert record is not None and record.revocation_reason == 1
    assert main(["--config", config, "certs", "revoke", "abcdef01"]) == 1


def test_the_dev_tools_old_subcommands_run_their_console_scripts(capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", "ignored.yaml", "simulate", "--list"]) == 0
    assert "sn-format-imei" in capfd.readouterr().out
    assert main(["intune-emulator", "--client-id", "app-without-secret"]) == 2  # the emulator's own status
    assert "scep-intune-emulator: --client-id needs" in capfd.readouterr().err


# --- serve --with-emulator: the emulator as a child process ------------------------------------------------


def _beside_config(tmp_path: Path, port: int) -> ServerConfig:
    intune = IntuneConfig(tenant="contoso.onmicrosoft.com", client_id="dev-app",
                          client_secret=SecretSource(env="SERVER_ONLY_SECRET"), authority=f"https://127.0.0.1:{port}/",
                          ca_bundle=str(tmp_path / "emulator" / "ca.pem"))
    return replace(load_config(_config_file(tmp_path, "dev: true\n"), env={}), intune=intune)


def test_with_emulator_the_child_gets_none_of_the_servers_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERVER_ONLY_SECRET", "the-real-entra-secret")
    monkeypatch.setenv("SCEP_CA_PASSPHRASE", "the-ca-passphrase")
    emulator, served = _started(tmp_path)
    try:
        environ = Path(f"/proc/{emulator.process.pid}/environ").read_bytes()
        assert b"the-real-entra-secret" not in environ and b"the-ca-passphrase" not in environ
        assert f"AAD_APP_KEY={served.intune.client_secret.resolve()}".encode() in environ.split(b"\0")
        assert served.intune.client_secret.resolve() != "the-real-entra-secret"
    finally:
        emulator.stop()
    assert emulator.process.returncode == 0  # SIGTERM: it stopped in its own way


def test_with_emulator_the_child_ends_when_the_server_goes_away(tmp_path: Path) -> None:
    emulator, _ = _started(tmp_path)
    try:
        assert emulator.process.stdin is not None
        emulator.process.stdin.close()  # what the server's end does, however it ends
        assert emulator.process.wait(timeout=10) == 0
    finally:
        emulator.stop()


def test_with_emulator_only_the_starting_process_stops_it(tmp_path: Path) -> None:
    emulator, _ = _started(tmp_path)
    try:
        replace(emulator, owner=os.getpid() + 1).stop()  # a forked gunicorn worker on its way out
        assert emulator.process.poll() is None
    finally:
        emulator.stop()
    assert emulator.process.poll() is not None


def test_with_emulator_a_taken_port_is_reported(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"the Intune emulator cannot listen on port {port} of 127.0.0.1"):
            start_beside(_beside_config(tmp_path, port))
    assert not (tmp_path / "emulator").exists()  # refused before the emulator was started


def _started(tmp_path: Path) -> tuple[EmulatorProcess, ServerConfig]:
    return start_beside(_beside_config(tmp_path, free_port()))


def test_with_emulator_serve_names_a_taken_port_on_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = _config_file(tmp_path, f"dev: true\nintune: {{authority: 'https://127.0.0.1:{port}/'}}\n")
        argv = ["serve", "--init-if-missing", "--with-emulator", "--bind", f"127.0.0.1:{free_port()}"]
        assert main(["--config", str(config), *argv]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"scep-server: --with-emulator: the Intune emulator cannot listen on port {port} of 127.0.0.1 "
                   "(intune.authority): Address already in use; stop what listens there, or point "
                   "intune.authority at another port"]
    assert not (tmp_path / "var").exists()


# --- the dev tools outside the checkout, and where the emulator keeps its CA ----------------------------


def test_simulate_without_the_emulators_ca_says_so_on_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # not the checkout: no var/emulator/ca.pem
    assert main(["simulate", "--profile", "all"]) == 2
    assert main(["simulate", "--ca-bundle", str(tmp_path / "absent.pem")]) == 2
    err = capfd.readouterr().err.splitlines()
    assert err == [
        f"scep-server simulate: no Intune emulator CA at var/emulator/ca.pem (under {tmp_path}): run it where "
        "`make run` (serve --with-emulator) runs, or pass --ca-bundle <the emulator's state dir>/ca.pem",
        f"scep-server simulate: no Intune emulator CA at {tmp_path / 'absent.pem'}: run it where "
        "`make run` (serve --with-emulator) runs, or pass --ca-bundle <the emulator's state dir>/ca.pem",
    ]
    assert main(["simulate", "--list"]) == 0  # needs no emulator


def test_intune_emulator_keeps_its_ca_where_simulate_and_dev_yaml_look(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dev = yaml.safe_load((Path(__file__).parents[2] / "config" / "dev.yaml").read_text(encoding="utf-8"))
    assert Path(dev["intune"]["ca_bundle"]) == EMULATOR_STATE_DIR / "ca.pem"
    assert state_dir(load_config(None, env={})) == EMULATOR_STATE_DIR  # serve --with-emulator, data_dir var
    command = [sys.executable, "-c", "import sys; from scep_server.cli import main; sys.exit(main())",
               "intune-emulator", "--port", "0"]
    with subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, text=True) as emulator:
        try:
            assert emulator.stdout is not None
            ready, _, _ = select.select([emulator.stdout], [], [], 30)
            assert ready and emulator.stdout.readline().startswith("Intune emulator listening on ")
            assert (tmp_path / EMULATOR_STATE_DIR / "ca.pem").is_file()
        finally:
            emulator.terminate()


# --- serve's own options ------------------------------------------------------------------------------


def test_default_workers_without_cpu_affinity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)  # macOS, Windows
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    assert default_workers() == 3
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert default_workers() == 2
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert default_workers() == 8


def test_serve_options_come_from_arguments_then_the_environment() -> None:
    env = {"SCEP_SERVER_BIND": "0.0.0.0:9000", "SCEP_SERVER_WORKERS": "3", "SCEP_SERVER_THREADS": " 16 "}
    assert serve_options(None, env) == ServeOptions("0.0.0.0:9000", 3, 16)
    given = argparse.Namespace(bind="unix:/run/scep.sock", workers=5, threads=None)
    assert serve_options(given, env) == ServeOptions("unix:/run/scep.sock", 5, 16)
    assert serve_options(None, {}) == ServeOptions("127.0.0.1:8080", None, None)
    with pytest.raises(ConfigError) as refused:
        serve_options(None, {"SCEP_SERVER_BIND": "host:http", "SCEP_SERVER_WORKERS": "-1",
                             "SCEP_SERVER_THREADS": "2000"})
    assert str(refused.value).splitlines() == [
        'SCEP_SERVER_BIND must be HOST:PORT (a port up to 65535) or unix:PATH, not "host:http"',
        'SCEP_SERVER_WORKERS must be a whole number from 1 to 1024, not "-1"',
        'SCEP_SERVER_THREADS must be a whole number from 1 to 1024, not "2000"',
    ]


def test_the_tools_are_not_started_with_a_log_level_they_cannot_use(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SCEP_SERVER_LOG_LEVEL", "LOUD")
    assert main(["simulate", "--list"]) == 2
    assert capfd.readouterr().err.splitlines() == [
        'scep-server simulate: SCEP_SERVER_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL '
        '(in any case), not "LOUD"'
    ]
