"""One-time challenge passwords through real PKIOperations: minted with ``scep-server otp create`` on the
server's own database, used once, refused when expired, used, another profile's or bound to a subject
pattern the request does not match (which leaves them usable by one that does)."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import AttributeOID
from sqlalchemy import update

from scep_server.challenge.otp import otp_hash
from scep_server.cli import main
from scep_server.cli.audit import cli_actor
from scep_server.errors import FailInfo
from scep_server.scep import client
from scep_server.scep.types import PKIStatus
from scep_server.store.tables import otp_challenges

from .conftest import Device, ScepTestServer, make_config, serving

CONFIG = """
data_dir: {data_dir}
ca:
  name: otp-ca
  subject: "CN=OTP Issuing CA,O=scep-server tests"
  key_size: 2048
profiles:
  default:
    challenge: {{type: static, secret: {{value: "{challenge}"}}}}
  otp:
    challenge: {{type: otp}}
  otp2:
    challenge: {{type: otp}}
  dns-only:
    challenge: {{type: otp}}
    allowed_san_types: [dns]
"""
PASSWORD = re.compile(r"[A-Z2-7]{32}")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ScepTestServer]:
    with serving(make_config(tmp_path, CONFIG)) as started:
        yield started


def mint(tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str, profile: str = "otp") -> list[str]:
    """``otp create`` with ``args``; the passwords it printed (its last lines, as many as asked for)."""
    count = int(args[args.index("--count") + 1]) if "--count" in args else 1
    capsys.readouterr()
    assert otp_cli(tmp_path, "create", "--profile", profile, *args) == 0
    lines = capsys.readouterr().out.splitlines()
    passwords = lines[-count:]
    assert all(PASSWORD.fullmatch(password) for password in passwords), lines
    assert not PASSWORD.fullmatch(lines[-count - 1])
    return passwords


def otp_cli(tmp_path: Path, *args: str) -> int:
    return main(["--config", str(tmp_path / "scep-server.yaml"), "otp", *args])


def request(
    server: ScepTestServer, password: str | None, *, profile: str = "otp", common_name: str = "device-01",
    sans: Sequence[x509.GeneralName] = (),
) -> client.CertRep:
    device = Device(common_name=common_name)
    builder = x509.CertificateSigningRequestBuilder().subject_name(device.subject)
    if password is not None:
        builder = builder.add_attribute(AttributeOID.CHALLENGE_PASSWORD, password.encode())
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    csr = builder.sign(device.key, hashes.SHA256())
    built = server.pkcsreq(device, csr=csr, transaction_id=uuid.uuid4().hex.upper())
    return server.send(built, device, profile=profile)


def refused(server: ScepTestServer, reply: client.CertRep) -> str:
    """Assert a badRequest refusal; the reason the server recorded for it."""
    assert reply.status is PKIStatus.FAILURE and reply.fail_info is FailInfo.BAD_REQUEST, reply.fail_info_text
    [latest, *_] = server.runtime.store.list_operations(transaction_id=reply.transaction_id)
    return latest.detail or ""


def succeeded(reply: client.CertRep) -> None:
    assert reply.status is PKIStatus.SUCCESS, (reply.fail_info, reply.fail_info_text)


def test_a_password_works_once(server: ScepTestServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    [password] = mint(tmp_path, capsys)
    first = request(server, password, common_name="device-01")
    succeeded(first)
    assert "was used already" in refused(server, request(server, password, common_name="device-02"))
    assert server.issued_count() == 1
    [record] = server.runtime.store.list_operations(transaction_id=first.transaction_id)
    assert record.outcome == "SUCCESS"


def test_create_prints_each_password_alone_on_its_own_line_last_and_each_works(
    server: ScepTestServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    passwords = mint(tmp_path, capsys, "--count", "3", "--ttl", "15m")
    assert len(set(passwords)) == 3
    for n, password in enumerate(passwords):
        succeeded(request(server, password, common_name=f"device-{n}"))
    assert server.issued_count() == 3


def test_minting_and_use_are_audited_without_the_secrets(
    server: ScepTestServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    passwords = mint(tmp_path, capsys, "--count", "2", "--ttl", "2h")
    reply = request(server, passwords[0])
    succeeded(reply)
    rows = {row.action: row for row in server.runtime.store.list_audit()}
    created, used = rows["otp.create"], rows["otp.use"]
    assert (created.actor, created.source) == (cli_actor(), "cli")
    assert '"count":2' in created.detail and '"ttl_seconds":7200' in created.detail
    assert f'"transaction_id":"{reply.transaction_id}"' in used.detail
    everything = "".join(row.detail + row.subject for row in server.runtime.store.list_audit())
    assert not any(secret in everything or otp_hash(secret) in everything for secret in passwords)
    assert server.runtime.store.verify_audit().intact


def test_an_expired_password_is_refused(
    server: ScepTestServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    [password] = mint(tmp_path, capsys, "--ttl", "1m")
    with server.runtime.store.engine.begin() as conn:  # as if the minute had passed
        conn.execute(update(otp_challenges).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    assert "has expired" in refused(server, request(server, password))
    assert server.issued_count() == 0


def test_a_pattern_mismatch_is_refused_and_leaves_the_password_to_a_matching_request(
    server: ScepTestServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    [password] = mint(tmp_path, capsys, "--subject-pattern", "CN=kiosk-*")
    detail = refused(server, request(server, password, common_name="laptop-01"))
    assert "subject pattern 'CN=kiosk-*'" in detail
    succeeded(request(server, password, common_name="kiosk-07"))
    assert "was used already" in refused(server, request(server, password, common_name="kiosk-08"))


def test_a_pattern_may_match_a_subject_alternative_name(
    server: ScepTestServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    [password] = mint(tmp_path, capsys, "--subject-pattern", "CN=pc-42|*.fleet.example")
    other = [x509.DNSName("printer.example")]
    refused(server, request(server, password, common_name="pc-42", sans=other))
    beside = [x509.DNSName("printer.example"), x509.DNSName("pc-42.fleet.example")]  # one foreign name beside
    refused(server, request(server, password, common_name="pc-42", sans=beside))
    fleet = [x509.DNSName("pc-42.fleet.example")]
    succeeded(request(server, password, common_name="pc-42", sans=fleet))


def test_a_password_is_its_profiles_only(
    server: ScepTestServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    [password] = mint(tmp_path, capsys, profile="otp2")
    assert "not a one-time password of this profile" in refused(server, request(server, password, profile="otp"))
    succeeded(request(server, password, profile="otp2"))


def test_a_request_without_a_password_or_with_an_unknown_one_is_refused(server: ScepTestServer) -> None:
    assert "no challengePassword" in refused(server, request(server, None))
    assert "not a one-time password" in refused(server, request(server, "A" * 32))


def test_a_request_the_policy_refuses_gives_its_password_back(
    server: ScepTestServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    [password] = mint(tmp_path, capsys, profile="dns-only")
    email = [x509.RFC822Name("someone@example.com")]
    assert "allowed_san_types" in refused(server, request(server, password, profile="dns-only", sans=email))
    succeeded(request(server, password, profile="dns-only", sans=[x509.DNSName("ok.example")]))
    actions = [row.action for row in sorted(server.runtime.store.list_audit(), key=lambda row: row.id)]
    assert actions == ["otp.create", "otp.use", "otp.release", "otp.use", "certificate.issue"]


@pytest.mark.parametrize(
    "args",
    [
        ["--profile", "default"],  # a static profile
        ["--profile", "nope"],
        ["--profile", "otp", "--count", "0"],
        ["--profile", "otp", "--count", "101"],
        ["--profile", "otp", "--ttl", "30s"],
        ["--profile", "otp", "--ttl", "31d"],
        ["--profile", "otp", "--ttl", "soon"],
        ["--profile", "otp", "--subject-pattern", ""],
    ],
)
def test_bad_create_arguments_are_one_line_and_exit_2(
    server: ScepTestServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    capsys.readouterr()
    assert otp_cli(tmp_path, "create", *args) == 2
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("scep-server: ")]
    assert len(errors) == 1 and "Traceback" not in captured.err
    assert captured.out == ""
    assert server.runtime.store.list_audit() == []


def test_list_shows_states_and_revoke_expires_an_unused_password(
    server: ScepTestServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    used, kept = mint(tmp_path, capsys, "--count", "2")
    succeeded(request(server, used))
    capsys.readouterr()
    assert otp_cli(tmp_path, "list", "--json") == 0
    listed = capsys.readouterr().out
    assert used not in listed and kept not in listed
    states = {row["id"]: row["state"] for row in json.loads(listed)}
    assert sorted(states.values()) == ["unused", "used"]
    unused_id = next(otp_id for otp_id, state in states.items() if state == "unused")
    assert otp_cli(tmp_path, "revoke", str(unused_id)) == 0
    assert otp_cli(tmp_path, "revoke", str(unused_id)) == 1  # nothing left to revoke
    assert "has expired" in refused(server, request(server, kept))
