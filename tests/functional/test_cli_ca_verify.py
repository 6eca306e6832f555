"""``scep-server ca verify``, and what ``ca rotate-ra`` and ``ca show`` say about the RA keyring."""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path

import pytest
from cryptography import x509

from scep_server.cli import main

from .conftest import CHALLENGE, CONFIG


@pytest.fixture(autouse=True)
def _no_passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCEP_CA_PASSPHRASE", raising=False)


def config_file(directory: Path, *, dev: bool = True, name: str = "scep.yaml") -> str:
    path = directory / name
    path.write_text(CONFIG.format(data_dir=directory / "var", challenge=CHALLENGE) + ("dev: true\n" if dev else ""))
    return str(path)


def initialised(directory: Path, capsys: pytest.CaptureFixture[str]) -> str:
    config = config_file(directory)
    assert main(["--config", config, "init"]) == 0
    capsys.readouterr()
    return config


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str], str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out.splitlines(), captured.err


def ra_serial(directory: Path, name: str = "ra.pem") -> str:
    return f"{x509.load_pem_x509_certificate((directory / 'var' / 'ca' / name).read_bytes()).serial_number:x}"


def test_a_fresh_ca_verifies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = initialised(tmp_path, capsys)
    status, lines, _ = run(capsys, "--config", config, "ca", "verify", "--strict")
    assert status == 0
    assert all(line.startswith("OK      ") for line in lines[:-1]) and len(lines) > 5
    assert "OK      RA certificate: issued by the CA CN=Test Issuing CA,O=scep-server tests" in lines
    assert lines[-1].endswith("0 warning(s), 0 failed")


def test_a_missing_ca_directory_fails_without_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, lines, err = run(capsys, "--config", config_file(tmp_path), "ca", "verify")
    assert status == 1
    assert lines[0].startswith("FAIL    CA directory: no complete CA in") and lines[-1].endswith("1 failed")
    assert "Traceback" not in err


def test_a_broken_ca_directory_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = initialised(tmp_path, capsys)
    other = tmp_path / "other"
    other.mkdir()
    initialised(other, capsys)
    shutil.copy(other / "var" / "ca" / "ca.pem", tmp_path / "var" / "ca" / "ca.pem")
    status, lines, err = run(capsys, "--config", config, "ca", "verify")
    assert status == 1
    assert [line for line in lines if line.startswith("FAIL")] == [lines[0]]
    assert "does not belong to the certificate" in lines[0] and "Traceback" not in err


def test_strict_fails_on_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    initialised(tmp_path, capsys)
    # The same CA under a configuration that does not allow its unencrypted keys.
    production = config_file(tmp_path, dev=False, name="production.yaml")
    status, lines, _ = run(capsys, "--config", production, "ca", "verify")
    assert status == 0
    [warning] = [line for line in lines[:-1] if not line.startswith("OK")]
    assert warning.startswith("WARNING keys at rest: ")
    assert lines[-1].endswith("1 warning(s), 0 failed")
    assert run(capsys, "--config", production, "ca", "verify", "--strict")[0] == 1


def test_rotate_ra_says_until_when_the_previous_ra_decrypts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = initialised(tmp_path, capsys)
    old_serial = ra_serial(tmp_path)
    status, lines, _ = run(capsys, "--config", config, "ca", "rotate-ra")
    assert status == 0
    index = json.loads((tmp_path / "var" / "ca" / "ra-keyring.json").read_text())
    grace_end = datetime.fromisoformat(index["previous"][0]["usable_until"])
    new_serial = ra_serial(tmp_path, index["current"]["cert"])
    assert lines[0].startswith(f"new RA certificate serial {new_serial} valid from ")
    assert lines[1] == f"the previous RA (serial {old_serial}) keeps decrypting until {grace_end:%Y-%m-%d %H:%M:%S} UTC"


def test_rotate_ra_help_no_longer_asks_for_a_restart(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--config", config_file(tmp_path), "ca", "--help"])
    listing = " ".join(capsys.readouterr().out.split())
    assert "rotate-ra" in listing and "restart" not in listing
    assert "within seconds" in listing and "ca.ra_grace_days" in listing
    assert "verify" in listing


def test_ca_show_lists_the_previous_ra_and_the_current_ra_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = initialised(tmp_path, capsys)
    old_serial = ra_serial(tmp_path)
    assert run(capsys, "--config", config, "ca", "rotate-ra")[0] == 0
    status, lines, _ = run(capsys, "--config", config, "ca", "show")
    assert status == 0
    [previous] = [line for line in lines if line.startswith("previous RA:")]
    assert f"serial {old_serial}, decrypts until " in previous and "CN=scep-server RA" in previous
    [ra_key] = [line for line in lines if line.startswith("RA key:")]
    new_serial = [line for line in lines if line.startswith("RA serial:")][0].split()[-1]
    assert new_serial != old_serial and ra_key.endswith(f"ra-{new_serial}.key")
    assert Path(ra_key.split()[-1]).exists()
