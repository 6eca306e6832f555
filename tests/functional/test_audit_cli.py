"""``scep-server audit verify|list`` on a server's own database: enrollments and revocations made through
the server, the admin API, the CLI and Intune's requests are each audited with their actor, and
``audit verify`` fails once a row is edited or deleted behind the server's back."""

from __future__ import annotations

import json
import os
import pwd
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from scep_server.cli import main
from scep_server.cli.audit import cli_actor
from scep_server.config import SecretSource
from scep_server.intune.client import IntuneClient
from scep_server.runtime import revocation_sync
from scep_server.scep.types import PKIStatus

from .conftest import Device, ScepTestServer, make_config, serving
from .intune_env import IntuneEnv, enroll

TOKEN = "audit-admin-token"


@pytest.fixture
def audited(tmp_path: Path) -> Iterator[ScepTestServer]:
    """A server with the admin API on; the CLI reads its config at ``tmp_path / "scep-server.yaml"``."""
    with serving(replace(make_config(tmp_path), admin_token=SecretSource(value=TOKEN))) as started:
        yield started


def _cli(tmp_path: Path, *args: str) -> int:
    return main(["--config", str(tmp_path / "scep-server.yaml"), *args])


def _audit_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    capsys.readouterr()
    assert _cli(tmp_path, "audit", "list", "--json") == 0
    rows: list[dict[str, Any]] = json.loads(capsys.readouterr().out)
    return rows[::-1]  # oldest first


def _edit(database: Path, statement: str) -> None:
    with sqlite3.connect(database) as conn:
        conn.execute(statement)


def _enroll_and_revoke(server: ScepTestServer, tmp_path: Path) -> tuple[int, int]:
    by_api = server.enroll(Device(common_name="audited-api")).serial_number
    by_cli = server.enroll(Device(common_name="audited-cli")).serial_number
    answer = server.http.post(f"/admin/certificates/{by_api:x}/revoke", json={"reason": "keyCompromise"},
                              headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200
    assert _cli(tmp_path, "certs", "revoke", f"{by_cli:x}", "--reason", "superseded") == 0
    return by_api, by_cli


def test_every_change_is_audited_with_its_actor_and_verify_passes(
    audited: ScepTestServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    by_api, by_cli = _enroll_and_revoke(audited, tmp_path)
    issuer = audited.ca.issuer_name
    rows = _audit_rows(tmp_path, capsys)
    assert [(r["id"], r["actor"], r["source"], r["action"], r["subject"]) for r in rows] == [
        (1, "server", "scep", "certificate.issue", f"serial={by_api:x} issuer={issuer}"),
        (2, "server", "scep", "certificate.issue", f"serial={by_cli:x} issuer={issuer}"),
        (3, "admin-token", "api", "certificate.revoke", f"serial={by_api:x} issuer={issuer}"),
        (4, cli_actor(), "cli", "certificate.revoke", f"serial={by_cli:x} issuer={issuer}"),
    ]
    assert [sorted(r["detail"]) for r in rows[:2]] == [["profile", "transaction_id"]] * 2
    assert {r["detail"]["profile"] for r in rows[:2]} == {"default"}
    assert [r["detail"] for r in rows[2:]] == [{"reason": "keyCompromise"}, {"reason": "superseded"}]

    assert _cli(tmp_path, "audit", "verify") == 0
    out = capsys.readouterr().out
    assert out.splitlines() == ["audit chain intact: 4 rows", f"head hash: {rows[-1]['hash']}"]


def test_verify_fails_once_a_row_is_edited_in_the_database(
    audited: ScepTestServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _enroll_and_revoke(audited, tmp_path)
    _edit(audited.data_dir / "scep-server.db", "UPDATE audit_log SET actor = 'someone-else' WHERE id = 3")
    capsys.readouterr()
    assert _cli(tmp_path, "audit", "verify") == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        "scep-server: audit chain broken at row 3: its contents do not match its hash: the row was changed"
    )


@pytest.mark.parametrize(("deleted", "named"), [(2, "at row 3: row 2 was deleted before it"),
                                                (4, "at row 4: the head names row 4: row 4 was deleted")])
def test_verify_fails_once_a_row_is_deleted_from_the_database(
    audited: ScepTestServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], deleted: int, named: str
) -> None:
    _enroll_and_revoke(audited, tmp_path)
    _edit(audited.data_dir / "scep-server.db", f"DELETE FROM audit_log WHERE id = {deleted}")
    capsys.readouterr()
    assert _cli(tmp_path, "audit", "verify") == 1
    assert f"audit chain broken {named}" in capsys.readouterr().err


def test_audit_list_prints_a_table_newest_first(
    audited: ScepTestServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _enroll_and_revoke(audited, tmp_path)
    capsys.readouterr()
    assert _cli(tmp_path, "audit", "list", "--limit", "2") == 0
    header, *lines = capsys.readouterr().out.splitlines()
    assert header.split()[:5] == ["ID", "TIME", "(UTC)", "ACTOR", "SOURCE"]
    assert [line.split()[0] for line in lines] == ["4", "3"]
    assert "admin-token" in lines[1] and "certificate.revoke" in lines[1] and '{"reason":"keyCompromise"}' in lines[1]


def test_the_cli_actor_is_the_account_of_the_uid_not_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USER", "mallory")
    monkeypatch.setenv("LOGNAME", "mallory")
    assert cli_actor() == f"cli:{pwd.getpwuid(os.getuid()).pw_name}"

    def no_account(uid: int) -> pwd.struct_passwd:
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.setattr(pwd, "getpwuid", no_account)
    assert cli_actor() == f"cli:uid={os.getuid()}"


def test_audit_commands_refuse_an_unmigrated_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_config(tmp_path)
    (tmp_path / "var").mkdir()
    for command in (["audit", "verify"], ["audit", "list"]):
        assert _cli(tmp_path, *command) == 2
        assert "schema is not current" in capsys.readouterr().err


def test_audit_list_refuses_a_limit_below_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_config(tmp_path)
    with pytest.raises(SystemExit) as exited:
        _cli(tmp_path, "audit", "list", "--limit", "0")
    assert exited.value.code == 2 and "must be at least 1" in capsys.readouterr().err


def test_intune_revocations_are_audited_with_their_request_context(intune_env: IntuneEnv) -> None:
    reply, device, _ = enroll(intune_env, subject="CN=audited-intune")
    assert reply.status is PKIStatus.SUCCESS
    cert = reply.certificate_for(device.key.public_key())
    runtime = intune_env.server.runtime
    context = intune_env.state.queue_revocation(f"{cert.serial_number:X}", runtime.ca.issuer_name)
    client = IntuneClient(intune_env.config.intune)
    try:
        revocation_sync(intune_env.config, runtime.store, client, runtime.revocations).run_safely()
    finally:
        client.close()
    rows = list(reversed(runtime.store.list_audit()))
    assert [(r.actor, r.source, r.action) for r in rows] == [
        ("server", "scep", "certificate.issue"), (f"intune:{context}", "intune-sync", "certificate.revoke"),
    ]
    assert runtime.store.verify_audit().intact
