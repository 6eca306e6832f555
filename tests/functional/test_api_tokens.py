"""Named API tokens: made with ``scep-server tokens`` on the server's own database, scoped on the admin
API, revoked at once, audited by name, and never stored in clear."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from scep_server.cli import main
from scep_server.cli.audit import cli_actor
from scep_server.config import SecretSource

from .conftest import Device, ScepTestServer, make_config, serving

TOKEN = "configured-admin-token"


@pytest.fixture
def tokened(tmp_path: Path) -> Iterator[ScepTestServer]:
    with serving(replace(make_config(tmp_path), admin_token=SecretSource(value=TOKEN))) as started:
        yield started


def _cli(tmp_path: Path, *args: str) -> int:
    return main(["--config", str(tmp_path / "scep-server.yaml"), *args])


def _create(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, *scopes: str) -> str:
    capsys.readouterr()
    assert _cli(tmp_path, "tokens", "create", name, *[f"--scope={scope}" for scope in scopes]) == 0
    secret = capsys.readouterr().out.splitlines()[-1]
    assert secret.startswith("scep_") and " " not in secret
    return secret


def _auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def _revoke(server: ScepTestServer, serial: int, secret: str) -> int:
    answer = server.http.post(f"/admin/certificates/{serial:x}/revoke", json={}, headers=_auth(secret))
    return answer.status_code


def test_scopes_decide_what_a_token_may_do(
    tokened: ScepTestServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    serial = tokened.enroll(Device(common_name="scoped")).serial_number
    reader = _create(tmp_path, capsys, "reader", "read")
    revoker = _create(tmp_path, capsys, "revoker", "revoke")
    listing = tokened.http.get("/admin/certificates", headers=_auth(reader))
    assert listing.status_code == 200 and len(listing.get_json()["certificates"]) == 1
    assert _revoke(tokened, serial, reader) == 403
    assert tokened.http.get("/admin/certificates", headers=_auth(revoker)).status_code == 403
    assert _revoke(tokened, serial, revoker) == 200
    assert tokened.http.get("/admin/certificates", headers=_auth(TOKEN)).status_code == 200
    assert tokened.http.get("/admin/certificates", headers=_auth(reader + "x")).status_code == 401

    capsys.readouterr()
    assert _cli(tmp_path, "audit", "list", "--json") == 0
    revocations = [row for row in json.loads(capsys.readouterr().out) if row["action"] == "certificate.revoke"]
    assert [(row["actor"], row["source"]) for row in revocations] == [("token:revoker", "api")]


def test_admin_scope_and_admin_token_do_everything(
    tokened: ScepTestServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = tokened.enroll(Device(common_name="first")).serial_number
    second = tokened.enroll(Device(common_name="second")).serial_number
    admin = _create(tmp_path, capsys, "ops", "admin")
    assert tokened.http.get(f"/admin/certificates/{first:x}", headers=_auth(admin)).status_code == 200
    assert _revoke(tokened, first, admin) == 200
    assert _revoke(tokened, second, TOKEN) == 200
    capsys.readouterr()
    assert _cli(tmp_path, "audit", "list", "--json") == 0
    actors = [row["actor"] for row in json.loads(capsys.readouterr().out) if row["action"] == "certificate.revoke"]
    assert actors == ["admin-token", "token:ops"]  # newest first


def test_a_revoked_token_is_refused_at_once(
    tokened: ScepTestServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reader = _create(tmp_path, capsys, "reader", "read")
    assert tokened.http.get("/admin/certificates", headers=_auth(reader)).status_code == 200
    assert _cli(tmp_path, "tokens", "revoke", "reader") == 0
    assert tokened.http.get("/admin/certificates", headers=_auth(reader)).status_code == 401
    assert _cli(tmp_path, "tokens", "revoke", "reader") == 1
    assert _cli(tmp_path, "tokens", "revoke", "nobody") == 1


def test_creating_and_revoking_tokens_is_audited_as_the_cli_user(
    tokened: ScepTestServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = _create(tmp_path, capsys, "reader", "read")
    assert _cli(tmp_path, "tokens", "revoke", "reader") == 0
    assert _cli(tmp_path, "tokens", "revoke", "reader") == 1  # already revoked: nothing more to audit
    capsys.readouterr()
    assert _cli(tmp_path, "audit", "list", "--json") == 0
    output = capsys.readouterr().out
    rows = [row for row in json.loads(output) if row["action"].startswith("token.")]
    assert [(row["action"], row["actor"], row["source"], row["subject"]) for row in rows] == [
        ("token.revoke", cli_actor(), "cli", "token=reader"),
        ("token.create", cli_actor(), "cli", "token=reader"),
    ]
    assert secret not in output and secret[len("scep_"):] not in output
    assert _cli(tmp_path, "audit", "verify") == 0


def test_a_named_token_turns_the_api_on_without_admin_token(
    server: ScepTestServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert server.http.get("/admin/certificates").status_code == 404
    reader = _create(tmp_path, capsys, "reader", "read")
    assert server.http.get("/admin/certificates", headers=_auth(reader)).status_code == 200
    assert server.http.get("/admin/certificates", headers=_auth("scep_wrong")).status_code == 401


def test_listing_shows_tokens_but_never_their_secrets(
    tokened: ScepTestServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = _create(tmp_path, capsys, "reader", "read", "revoke")
    tokened.http.get("/admin/certificates", headers=_auth(secret))
    assert _cli(tmp_path, "tokens", "revoke", "reader") == 0
    capsys.readouterr()
    assert _cli(tmp_path, "tokens", "list", "--json") == 0
    out = capsys.readouterr().out
    (listed,) = json.loads(out)
    assert (listed["name"], listed["scopes"], listed["prefix"]) == ("reader", ["read", "revoke"], secret[:8])
    assert listed["last_used_at"] is not None and listed["revoked_at"] is not None
    assert secret not in out
    assert _cli(tmp_path, "tokens", "list") == 0
    table = capsys.readouterr().out
    assert "reader" in table and secret not in table

    with sqlite3.connect(tokened.data_dir / "scep-server.db") as conn:
        rows = conn.execute("SELECT * FROM api_tokens").fetchall()
    assert rows and not any(secret in str(value) or secret[8:] in str(value) for row in rows for value in row)


@pytest.mark.parametrize(
    ("args", "status"),
    [
        (["create", "x"], 2),
        (["create", "x", "--scope", "write"], 2),
        (["create", "bad name", "--scope", "read"], 2),
        (["create", "", "--scope", "read"], 2),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tokened: ScepTestServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], status: int
) -> None:
    capsys.readouterr()
    assert _cli(tmp_path, "tokens", *args) == status
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("scep-server: ")]  # not the log
    assert len(errors) == 1 and "Traceback" not in captured.err
    assert captured.out == ""


def test_a_duplicate_name_is_exit_1(
    tokened: ScepTestServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _create(tmp_path, capsys, "ops", "admin")
    assert _cli(tmp_path, "tokens", "create", "ops", "--scope", "read") == 1
    assert "exists already" in capsys.readouterr().err
