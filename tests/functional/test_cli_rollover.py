"""``scep-server ca rollover stage|activate|status``: staging the next CA (created, imported, cross-signed),
activating it now or at a time, and one-line refusals for what cannot be done."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from scep_server.ca.authority import certificate_fingerprints
from scep_server.cli import main
from scep_server.cli.audit import cli_actor

from .conftest import CHALLENGE, CONFIG

FIRST_SUBJECT = "CN=Test Issuing CA,O=scep-server tests"
NEXT_SUBJECT = "CN=Test Issuing CA G2,O=scep-server tests"
NEXT = "test-ca-g2"
NOT_YET = "next (activates with `scep-server ca rollover activate`)"


@pytest.fixture(autouse=True)
def _no_passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCEP_CA_PASSPHRASE", raising=False)


@pytest.fixture
def config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """An initialised dev configuration."""
    path = tmp_path / "scep.yaml"
    path.write_text(CONFIG.format(data_dir=tmp_path / "var", challenge=CHALLENGE) + "dev: true\n")
    assert main(["--config", str(path), "init"]) == 0
    capsys.readouterr()
    return str(path)


def run(capsys: pytest.CaptureFixture[str], config: str, *argv: str) -> tuple[int, list[str], str]:
    status = main(["--config", config, "ca", "rollover", *argv])
    captured = capsys.readouterr()
    return status, captured.out.splitlines(), captured.err


def fields(lines: list[str]) -> dict[str, str]:
    return {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in lines)}


def blocks(lines: list[str]) -> list[dict[str, str]]:
    """``status``'s output: one block of fields per generation, separated by blank lines."""
    text = "\n".join(lines)
    return [fields(block.splitlines()) for block in text.split("\n\n")]


def one_line_error(err: str) -> str:
    """The one line a refusal prints (log records aside); no traceback."""
    assert "Traceback" not in err
    [line] = [line for line in err.splitlines() if line.startswith("scep-server: ")]
    return line


def next_ca_file(tmp_path: Path, name: str = "ca.pem") -> Path:
    return tmp_path / "var" / "ca" / "generations" / NEXT / name


def test_stage_status_activate_status(
    config: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, lines, _ = run(capsys, config, "stage")
    assert status == 0
    assert lines[0].startswith(f"staged {NEXT}: GetNextCACert hands it out")
    staged = fields(lines)
    fingerprints = certificate_fingerprints(x509.load_pem_x509_certificate(next_ca_file(tmp_path).read_bytes()))
    assert staged["label"] == NEXT and staged["subject"] == NEXT_SUBJECT
    assert staged["SHA-1 fingerprint"] == fingerprints["sha1"]
    assert staged["SHA-256 fingerprint"] == fingerprints["sha256"]
    assert staged["valid until"].endswith(" UTC") and staged["cross-signed"] == "no"
    assert "trusted certificate profile" in staged["Intune"] and "before activating" in staged["Intune"]

    status, lines, _ = run(capsys, config, "status")
    assert status == 0
    first, second = blocks(lines)
    assert (first["generation"], first["role"], first["subject"]) == ("test-ca", "active", FIRST_SUBJECT)
    assert "SHA-1 fingerprint" not in first
    assert (second["generation"], second["role"], second["subject"]) == (NEXT, NOT_YET, NEXT_SUBJECT)
    assert second["SHA-1 fingerprint"] == fingerprints["sha1"]
    assert second["SHA-256 fingerprint"] == fingerprints["sha256"]

    status, lines, err = run(capsys, config, "stage")
    assert status == 1 and lines == []
    assert one_line_error(err) == f"scep-server: generation {NEXT} is staged already: activate it first"

    status, lines, _ = run(capsys, config, "activate")
    assert status == 0 and lines == [f"{NEXT} issues new certificates from now on"]

    status, lines, _ = run(capsys, config, "status")
    first, second = blocks(lines)
    assert (first["generation"], first["role"]) == ("test-ca", "retired")
    assert (second["generation"], second["role"]) == (NEXT, "active")
    assert "SHA-1 fingerprint" not in second


def test_activate_at_a_future_time_says_when(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, config, "stage")
    status, lines, _ = run(capsys, config, "activate", "--at", "2099-01-01T09:00:00+01:00")
    assert status == 0 and lines == [f"{NEXT} issues new certificates from 2099-01-01 08:00:00 UTC"]
    first, second = blocks(run(capsys, config, "status")[1])
    assert first["role"] == "active"
    assert second["role"] == "next (activates at 2099-01-01 08:00:00 UTC)"
    assert "SHA-256 fingerprint" in second


def test_activate_at_a_past_time_activates_now(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, config, "stage")
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    status, lines, _ = run(capsys, config, "activate", "--at", past)
    assert status == 0 and lines == [f"{NEXT} issues new certificates from now on"]
    assert [block["role"] for block in blocks(run(capsys, config, "status")[1])] == ["retired", "active"]


@pytest.mark.parametrize(
    ("at", "problem"),
    [("2099-01-01T09:00:00", "has no time zone"), ("next tuesday", "is not an ISO 8601 time")],
)
def test_a_bad_activation_time_is_one_line(
    config: str, capsys: pytest.CaptureFixture[str], at: str, problem: str
) -> None:
    run(capsys, config, "stage")
    status, lines, err = run(capsys, config, "activate", "--at", at)
    assert status == 2 and lines == []
    line = one_line_error(err)
    assert line.startswith(f"scep-server: --at {at!r}") and problem in line
    assert blocks(run(capsys, config, "status")[1])[1]["role"] == NOT_YET


def test_activate_without_a_staged_ca_is_one_line(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, lines, err = run(capsys, config, "activate")
    assert status == 1 and lines == []
    assert "no CA generation is staged" in one_line_error(err)


@pytest.mark.parametrize(
    ("subject", "problem"),
    [("not a name", "is not an RFC 4514 distinguished name"), ("", "must not be empty")],
)
def test_a_bad_subject_is_one_line(
    config: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], subject: str, problem: str
) -> None:
    status, lines, err = run(capsys, config, "stage", "--subject", subject)
    assert status == 2 and lines == []
    line = one_line_error(err)
    assert line.startswith("scep-server: --subject") and problem in line
    assert not next_ca_file(tmp_path).exists()


def test_a_given_subject_names_the_next_ca(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, lines, _ = run(capsys, config, "stage", "--subject", "CN=Replacement CA,O=scep-server tests")
    assert status == 0 and fields(lines)["subject"] == "CN=Replacement CA,O=scep-server tests"


def test_cross_sign_says_where_the_cross_certificate_is(
    config: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, lines, _ = run(capsys, config, "stage", "--cross-sign")
    assert status == 0
    cross_path = next_ca_file(tmp_path, "cross-signed.pem")
    assert fields(lines)["cross-signed"] == f"yes, by {FIRST_SUBJECT} ({cross_path})"
    cross = x509.load_pem_x509_certificate(cross_path.read_bytes())
    cross.verify_directly_issued_by(x509.load_pem_x509_certificate((tmp_path / "var" / "ca" / "ca.pem").read_bytes()))
    assert blocks(run(capsys, config, "status")[1])[1]["cross-signed"] == f"yes, by {FIRST_SUBJECT} ({cross_path})"


def _ca_files(directory: Path, subject: str, password: bytes) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=400))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "next-ca.pem", directory / "next-ca.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.BestAvailableEncryption(password)))
    return cert_path, key_path


def test_stage_imports_a_next_ca_made_elsewhere(
    config: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cert_path, key_path = _ca_files(tmp_path, "Imported Next CA", b"key password")
    monkeypatch.setenv("NEXT_CA_KEY_PASSWORD", "key password")
    status, lines, _ = run(capsys, config, "stage", "--cert", str(cert_path), "--key", str(key_path),
                           "--key-password-env", "NEXT_CA_KEY_PASSWORD")
    assert status == 0
    staged = fields(lines)
    assert staged["subject"] == "CN=Imported Next CA"
    assert next_ca_file(tmp_path).read_bytes() == cert_path.read_bytes()
    assert blocks(run(capsys, config, "status")[1])[1]["subject"] == "CN=Imported Next CA"


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        (["--cert", "next-ca.pem"], "--cert and --key go together"),
        (["--chain", "chain.pem"], "--chain and --key-password-env go with --cert and --key"),
        (["--cert", "next-ca.pem", "--key", "next-ca.key", "--subject", "CN=X"], "--subject is for a created CA"),
    ],
)
def test_options_that_do_not_go_together_are_one_line(
    config: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], problem: str
) -> None:
    status, lines, err = run(capsys, config, "stage", *arguments)
    assert status == 2 and lines == []
    assert problem in one_line_error(err)
    assert not next_ca_file(tmp_path).exists()


def test_a_missing_import_file_is_one_line(config: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.pem"
    status, _, err = run(capsys, config, "stage", "--cert", str(missing), "--key", str(missing))
    assert status == 1
    assert one_line_error(err) == f"scep-server: the next CA's certificate file {missing} does not exist"


def test_rotations_and_rollovers_are_audited_as_the_cli_user(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", config, "ca", "rotate-ra"]) == 0
    assert run(capsys, config, "stage")[0] == 0
    assert run(capsys, config, "activate")[0] == 0
    assert main(["--config", config, "audit", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(row["action"], row["actor"], row["source"], row["subject"]) for row in rows] == [
        ("ca.rollover.activate", cli_actor(), "cli", f"ca=test-ca generation={NEXT}"),
        ("ca.rollover.stage", cli_actor(), "cli", f"ca=test-ca generation={NEXT}"),
        ("ca.rotate-ra", cli_actor(), "cli", "ca=test-ca generation=test-ca"),
    ]
    staged = x509.load_pem_x509_certificate(next_ca_file(Path(config).parent).read_bytes())
    assert rows[1]["detail"]["serial"] == f"{staged.serial_number:x}"
    assert rows[1]["detail"]["ca_subject"] == NEXT_SUBJECT
    assert "previous_ra_serial" in rows[2]["detail"]
    assert main(["--config", config, "audit", "verify"]) == 0


def test_a_change_that_cannot_be_audited_says_so_and_fails(
    config: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database = tmp_path / "var" / "scep-server.db"
    assert database.exists()
    database.unlink()
    database.mkdir()  # the database cannot be opened: the staging happened, its audit row cannot be written
    status, _, err = run(capsys, config, "stage")
    assert status == 1
    expected = f"scep-server: {NEXT} was staged, but it could not be written to the audit log"
    assert one_line_error(err).startswith(expected)
