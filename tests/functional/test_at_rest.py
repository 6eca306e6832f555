"""Finding 10: data at rest and defaults.

The data directory and what is made under it are private (0700 directories, 0600 files); CA, RA and
OCSP keys are written unencrypted only with a warning, and ``serve``/``import-ca`` refuse them outside
a dev config unless ``ca.allow_unencrypted_keys``; a passphrase configured for an unencrypted key file
encrypts it; ``serve --with-emulator`` never hands the configured client secret to the emulator, whose
admin API always needs a token.
"""

from __future__ import annotations

import datetime
import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from scep_server.ca.authority import check_keys_at_rest, load_ca
from scep_server.ca.keys import file as keys
from scep_server.ca.keys.file import load_private_key
from scep_server.cli import main
from scep_server.cli.beside import EmulatorProcess, start_beside
from scep_server.config import IntuneConfig, SecretSource, load_config
from scep_server.emulator import EmulatorServer
from scep_server.emulator.cli import describe
from scep_server.errors import CAError, ConfigError
from scep_server.runtime import build_runtime
from tests.support import pki
from tests.support.processes import free_port

from .conftest import CHALLENGE, CONFIG

PASSPHRASE = "correct horse battery staple"
KEY_FILES = ("ca.key", "ra.key")
DEV = "dev: true\n"  # unencrypted keys accepted: what init and serve refuse otherwise


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _config_file(tmp_path: Path, extra: str = "", *, data_dir: Path | None = None) -> Path:
    path = tmp_path / "scep.yaml"
    path.write_text(CONFIG.format(data_dir=data_dir or tmp_path / "var", challenge=CHALLENGE) + extra)
    return path


@pytest.fixture
def no_passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCEP_CA_PASSPHRASE", raising=False)


@pytest.fixture
def keep_umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


# --- permissions ------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("no_passphrase", "keep_umask")
def test_finding10_data_dir_and_subdirectories_are_0700_files_0600(tmp_path: Path) -> None:
    data_dir = tmp_path / "srv" / "scep" / "var"
    assert main(["--config", str(_config_file(tmp_path, DEV, data_dir=data_dir)), "init"]) == 0
    for directory in (tmp_path / "srv", tmp_path / "srv" / "scep", data_dir, data_dir / "ca"):
        assert _mode(directory) == 0o700, f"{directory} is {_mode(directory):o}"
    files = [path for path in (data_dir / "ca").iterdir() if path.is_file()]
    assert {path.name for path in files} >= {"ca.key", "ca.pem", "ra.key", "ra.pem"}
    for path in files:
        assert _mode(path) == 0o600, f"{path.name} is {_mode(path):o}"


@pytest.mark.usefixtures("no_passphrase", "keep_umask")
def test_finding10_ocsp_responder_files_and_lock_are_0600(tmp_path: Path) -> None:
    config = load_config(_config_file(tmp_path, "dev: true\n"), env={})
    assert main(["--config", str(tmp_path / "scep.yaml"), "init"]) == 0
    build_runtime(config).close()
    files = [path for path in config.ca_dir.iterdir() if path.is_file()]
    assert {path.name for path in files} >= {"ocsp.key", "ocsp.pem", ".ocsp.lock"}
    for path in files:
        assert _mode(path) == 0o600, f"{path.name} is {_mode(path):o}"


@pytest.mark.usefixtures("no_passphrase")
def test_finding10_an_existing_open_data_dir_is_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "var").mkdir()
    (tmp_path / "var").chmod(0o755)
    assert main(["--config", str(_config_file(tmp_path, DEV)), "init"]) == 0
    assert f"chmod 700 {tmp_path / 'var'}" in caplog.text
    assert _mode(tmp_path / "var") == 0o755  # not ours to change: it may be shared on purpose
    assert _mode(tmp_path / "var" / "ca") == 0o700


# --- keys at rest -----------------------------------------------------------------------------------------


@pytest.mark.usefixtures("no_passphrase")
def test_finding10_unencrypted_keys_are_written_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="scep_server.ca.keys.file")
    assert main(["--config", str(_config_file(tmp_path, DEV)), "init"]) == 0
    for name in KEY_FILES:
        assert f"{tmp_path / 'var' / 'ca' / name} unencrypted" in caplog.text
        assert b"ENCRYPTED" not in (tmp_path / "var" / "ca" / name).read_bytes()
    assert "SCEP_CA_PASSPHRASE" in caplog.text


def test_finding10_encrypted_keys_are_written_without_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SCEP_CA_PASSPHRASE", PASSPHRASE)
    caplog.set_level(logging.WARNING, logger="scep_server.ca.keys.file")
    assert main(["--config", str(_config_file(tmp_path)), "init"]) == 0
    assert "unencrypted" not in caplog.text


@pytest.mark.usefixtures("no_passphrase", "keep_umask")
def test_finding10_serve_refuses_unencrypted_keys_outside_a_dev_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(_config_file(tmp_path))
    assert main(["--config", config, "serve", "--init-if-missing", "--bind", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert "serve keeps the CA and RA keys encrypted" in err
    assert "SCEP_CA_PASSPHRASE" in err and "ca.allow_unencrypted_keys: true" in err
    assert not (tmp_path / "var" / "ca").exists()  # refused before a key was written
    assert _umask() == 0o022  # and before the process was changed


@pytest.mark.parametrize(("extra", "allowed"), [
    ("", False),
    ("dev: true\n", True),
    ("ca: {name: test-ca, key_size: 2048, allow_unencrypted_keys: true}\n", True),
    ("dev: false\n", False),
])
def test_finding10_dev_config_is_the_explicit_dev_flag(tmp_path: Path, extra: str, allowed: bool) -> None:
    text = CONFIG.format(data_dir=tmp_path / "var", challenge=CHALLENGE)
    if extra.startswith("ca:"):
        text = text.replace("ca:\n  name: test-ca\n", "ca:\n  name: test-ca\n  allow_unencrypted_keys: true\n")
    else:
        text += extra
    (tmp_path / "c.yaml").write_text(text)
    config = load_config(tmp_path / "c.yaml", env={"SCEP_SERVER_DEV": "true"})  # never from the environment
    if allowed:
        check_keys_at_rest(config, None, "serve")
    else:
        with pytest.raises(ConfigError, match="serve keeps the CA and RA keys encrypted"):
            check_keys_at_rest(config, None, "serve")
    check_keys_at_rest(config, PASSPHRASE.encode(), "serve")  # a passphrase is always enough


def test_finding10_shipped_dev_config_is_a_dev_config_and_the_example_is_not() -> None:
    root = Path(__file__).parents[2] / "config"
    env = {"TENANT": "t", "AAD_APP_ID": "a"}
    assert load_config(root / "dev.yaml", env=env).dev is True
    example = load_config(root / "example.yaml", env=env)
    assert example.dev is False and example.ca.allow_unencrypted_keys is False


@pytest.mark.parametrize("text", ["dev: yes-please\n", "ca: {allow_unencrypted_keys: 1}\n"])
def test_finding10_dev_flags_are_booleans(tmp_path: Path, text: str) -> None:
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ConfigError, match="true or false"):
        load_config(tmp_path / "c.yaml", env={})


def test_finding10_passphrase_set_later_encrypts_the_existing_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("SCEP_CA_PASSPHRASE", raising=False)
    path = _config_file(tmp_path, "dev: true\n")
    assert main(["--config", str(path), "init"]) == 0
    config = load_config(path, env={})
    build_runtime(config).close()  # the OCSP responder key too, still unencrypted
    monkeypatch.setenv("SCEP_CA_PASSPHRASE", PASSPHRASE)
    caplog.set_level(logging.WARNING, logger="scep_server.ca.keys.file")
    build_runtime(config).close()
    for name in (*KEY_FILES, "ocsp.key"):
        key_file = config.ca_dir / name
        assert b"ENCRYPTED" in key_file.read_bytes(), name
        assert _mode(key_file) == 0o600
        assert f"{key_file} was unencrypted: encrypted it" in caplog.text
    with pytest.raises(CAError, match="SCEP_CA_PASSPHRASE"):
        load_ca(config.ca_dir, config.ca, None)
    load_ca(config.ca_dir, config.ca, PASSPHRASE.encode())


def test_finding10_a_key_that_cannot_be_encrypted_in_place_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SCEP_CA_PASSPHRASE", raising=False)
    path = _config_file(tmp_path, DEV)
    assert main(["--config", str(path), "init"]) == 0
    config = load_config(path, env={})

    def read_only(target: Path, data: bytes, mode: int) -> None:
        raise CAError(f"cannot create {target}: Read-only file system")

    monkeypatch.setattr(keys, "write_atomic", read_only)
    with pytest.raises(CAError, match="unencrypted although a CA passphrase is set, and encrypting it failed"):
        load_ca(config.ca_dir, config.ca, PASSPHRASE.encode())
    assert b"ENCRYPTED" not in (config.ca_dir / "ca.key").read_bytes()


# --- import-ca --------------------------------------------------------------------------------------------


def _ca_to_import(tmp_path: Path, password: bytes) -> tuple[Path, Path, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = pki.self_signed("Imported CA", key, ca=True, not_before=now - datetime.timedelta(days=1),
                           not_after=now + datetime.timedelta(days=365))
    (tmp_path / "import.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "import.key").write_bytes(pki.private_pem(key, password))
    return tmp_path / "import.pem", tmp_path / "import.key", key


def _import_argv(config: Path, cert: Path, key: Path) -> list[str]:
    return ["--config", str(config), "import-ca", "--cert", str(cert), "--key", str(key),
            "--key-password-env", "IMPORT_KEY_PASSWORD"]


def test_finding10_import_ca_reencrypts_the_key_with_the_ca_passphrase(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key_file, key = _ca_to_import(tmp_path, b"the-import-password")
    monkeypatch.setenv("IMPORT_KEY_PASSWORD", "the-import-password")
    monkeypatch.setenv("SCEP_CA_PASSPHRASE", PASSPHRASE)
    assert main(_import_argv(_config_file(tmp_path), cert, key_file)) == 0
    stored = tmp_path / "var" / "ca" / "ca.key"
    assert b"ENCRYPTED" in stored.read_bytes() and _mode(stored) == 0o600
    assert load_private_key(stored, PASSPHRASE.encode()).private_numbers() == key.private_numbers()
    with pytest.raises(CAError, match="wrong passphrase"):
        load_private_key(stored, b"the-import-password")


@pytest.mark.usefixtures("no_passphrase")
def test_finding10_import_ca_refuses_to_store_the_key_decrypted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cert, key_file, _ = _ca_to_import(tmp_path, b"the-import-password")
    monkeypatch.setenv("IMPORT_KEY_PASSWORD", "the-import-password")
    assert main(_import_argv(_config_file(tmp_path), cert, key_file)) == 2
    err = capsys.readouterr().err
    assert "import-ca keeps the CA and RA keys encrypted" in err and "SCEP_CA_PASSPHRASE" in err
    assert not (tmp_path / "var" / "ca" / "ca.key").exists()


@pytest.mark.usefixtures("no_passphrase")
def test_finding10_import_ca_stores_unencrypted_only_when_allowed_and_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cert, key_file, _ = _ca_to_import(tmp_path, b"the-import-password")
    monkeypatch.setenv("IMPORT_KEY_PASSWORD", "the-import-password")
    config = _config_file(tmp_path)
    config.write_text(config.read_text().replace("ca:\n", "ca:\n  allow_unencrypted_keys: true\n", 1))
    assert main(_import_argv(config, cert, key_file)) == 0
    assert f"{tmp_path / 'var' / 'ca' / 'ca.key'} unencrypted" in caplog.text


# --- serve --with-emulator ----------------------------------------------------------------------------


def _token_status(emulator: EmulatorProcess, client_id: str, secret: str) -> int:
    form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret,
            "scope": f"{emulator.url}/intune-api/.default"}
    with requests.Session() as session:
        session.verify, session.trust_env = str(emulator.ca_bundle), False
        return session.post(f"{emulator.url}/{emulator.tenant}/oauth2/v2.0/token", data=form,
                            timeout=5).status_code


def _admin_status(emulator: EmulatorServer | EmulatorProcess, headers: dict[str, str]) -> int:
    with requests.Session() as session:
        session.verify, session.trust_env = str(emulator.ca_bundle), False
        return session.get(f"{emulator.url}/admin/counters", headers=headers, timeout=5).status_code


@pytest.fixture
def dev_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.delenv("INTUNE_EMULATOR_ADMIN_TOKEN", raising=False)
    yield _config_file(tmp_path, "dev: true\n")


def test_finding10_with_emulator_never_registers_the_configured_secret(
    tmp_path: Path, dev_config: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"https://127.0.0.1:{free_port()}/"
    intune = IntuneConfig(tenant="contoso.onmicrosoft.com", client_id="dev-app",
                          client_secret=SecretSource(value="the-real-entra-secret"), authority=url,
                          ca_bundle=str(tmp_path / "var" / "emulator" / "ca.pem"))
    config = replace(load_config(dev_config, env={}), intune=intune)
    emulator, served = start_beside(config)
    try:
        secret = served.intune.client_secret.resolve()
        assert secret and secret != "the-real-entra-secret" and served.intune.client_id == "dev-app"
        assert _token_status(emulator, "dev-app", "the-real-entra-secret") in (400, 401)
        assert _token_status(emulator, "dev-app", secret) == 200
        assert _admin_status(emulator, {}) == 401
        assert _admin_status(emulator, {"Authorization": f"Bearer {emulator.admin_token}"}) == 200
        assert emulator.admin_token in caplog.text  # generated, so the developer is told
        assert "the-real-entra-secret" not in caplog.text
        assert _mode(tmp_path / "var" / "emulator") == 0o700
        assert all(_mode(p) == 0o600 for p in (tmp_path / "var" / "emulator").iterdir())
    finally:
        emulator.stop()


def test_finding10_with_emulator_takes_the_admin_token_from_the_environment(
    tmp_path: Path, dev_config: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("INTUNE_EMULATOR_ADMIN_TOKEN", "chosen-admin-token")
    intune = IntuneConfig(tenant="t", client_id="a", authority=f"https://127.0.0.1:{free_port()}/",
                          ca_bundle=str(tmp_path / "emulator" / "ca.pem"))
    emulator, _ = start_beside(replace(load_config(dev_config, env={}), intune=intune))
    try:
        assert emulator.admin_token == "chosen-admin-token" and "chosen-admin-token" not in caplog.text
        assert _admin_status(emulator, {"Authorization": "Bearer chosen-admin-token"}) == 200
    finally:
        emulator.stop()


def test_finding10_with_emulator_needs_a_local_authority(dev_config: Path) -> None:
    config = load_config(dev_config, env={})
    with pytest.raises(ConfigError, match="--with-emulator needs intune.authority on https://127.0.0.1"):
        start_beside(replace(config, intune=IntuneConfig(tenant="t", client_id="a")))


def test_finding10_emulator_admin_token_is_generated_and_printed(tmp_path: Path) -> None:
    with EmulatorServer(state_dir=tmp_path / "emulator") as emulator:
        assert len(emulator.admin_token) >= 24
        assert _admin_status(emulator, {}) == 401
        assert _admin_status(emulator, {"Authorization": emulator.admin_token}) == 401  # no Bearer scheme
        assert _admin_status(emulator, {"Authorization": f"Bearer {emulator.admin_token}"}) == 200
        assert f"generated token {emulator.admin_token}" in describe(emulator, show_token=True)
    with EmulatorServer(state_dir=tmp_path / "emulator", admin_token="operator-chosen") as emulator:
        assert "operator-chosen" not in describe(emulator, show_token=False)
