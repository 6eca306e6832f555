"""One-time challenge passwords through the admin API v1: minted once (never listed or audited again),
listed with their state as enrollments use them, revoked, behind the admin scope, and refused as JSON
errors when the body or a parameter is not what the document says."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import TestResponse

from scep_server.config import SecretSource
from scep_server.scep.types import PKIStatus
from scep_server.service.reports import AuditQuery
from scep_server.service.tokens import TokenService

from .conftest import CONFIG, Device, ScepTestServer, make_config, serving
from .test_api_v1 import AUTH, TOKEN, documented, error_code

PROFILE = "kiosks"
WITH_OTP_PROFILES = CONFIG + f"""  {PROFILE}:
    challenge: {{{{type: otp}}}}
  lobby:
    challenge: {{{{type: otp}}}}
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ScepTestServer]:
    with serving(replace(make_config(tmp_path, WITH_OTP_PROFILES), admin_token=SecretSource(value=TOKEN))) as started:
        yield started


def mint(server: ScepTestServer, headers: dict[str, str] = AUTH, **body: Any) -> TestResponse:
    return server.http.post("/api/v1/otp", json={"profile": PROFILE, **body}, headers=headers)


def listed(server: ScepTestServer, **query: str) -> list[dict[str, Any]]:
    body = documented(server.http.get("/api/v1/otp", query_string=query, headers=AUTH), "/otp")
    items: list[dict[str, Any]] = body["items"]
    return items


def token(server: ScepTestServer, name: str, *scopes: str) -> dict[str, str]:
    _, secret = TokenService(server.runtime.store).create(name, list(scopes), actor="cli:test", source="cli")
    return {"Authorization": f"Bearer {secret}"}


def enroll_with(server: ScepTestServer, password: str, common_name: str = "kiosk-01") -> tuple[PKIStatus, str]:
    device = Device(common_name=common_name)
    built = server.pkcsreq(device, challenge=password, transaction_id=uuid.uuid4().hex.upper())
    reply = server.send(built, device, profile=PROFILE)
    return reply.status, reply.transaction_id


def audited(server: ScepTestServer, action: str) -> list[dict[str, Any]]:
    return server.runtime.reports.audit(AuditQuery(action=action)).items


# --- minting -------------------------------------------------------------------------------------------------


def test_minting_answers_the_passwords_once_uncached_and_audits_the_token(server: ScepTestServer) -> None:
    before = datetime.now(UTC)
    answer = mint(server, ttl="15m", count=3, subject_pattern="CN=kiosk-*")
    body = documented(answer, "/otp", "post")
    assert answer.status_code == 201 and answer.headers["Cache-Control"] == "no-store"
    assert len(set(body["passwords"])) == 3
    assert (body["profile"], body["subject_pattern"]) == (PROFILE, "CN=kiosk-*")
    expires_at = datetime.fromisoformat(body["expires_at"])
    assert before + timedelta(minutes=15) <= expires_at <= datetime.now(UTC) + timedelta(minutes=15)

    rows = listed(server)
    assert [row["expires_at"] for row in rows] == [body["expires_at"]] * 3
    assert {(row["state"], row["created_by"], row["subject_pattern"]) for row in rows} == {
        ("unused", "admin-token", "CN=kiosk-*")}
    [created] = audited(server, "otp.create")
    assert (created["actor"], created["source"], created["detail"]["count"]) == ("admin-token", "api", 3)
    seen_again = server.http.get("/api/v1/otp", headers=AUTH).get_data(as_text=True) + str(created)
    assert not any(password in seen_again for password in body["passwords"])


def test_a_minted_password_enrolls_once(server: ScepTestServer) -> None:
    [password] = documented(mint(server), "/otp", "post")["passwords"]
    assert enroll_with(server, password)[0] is PKIStatus.SUCCESS
    assert enroll_with(server, password, "kiosk-02")[0] is PKIStatus.FAILURE


def test_by_default_one_password_lives_an_hour(server: ScepTestServer) -> None:
    before = datetime.now(UTC)
    body = documented(mint(server), "/otp", "post")
    assert len(body["passwords"]) == 1 and body["subject_pattern"] is None
    expires_at = datetime.fromisoformat(body["expires_at"])
    assert before + timedelta(hours=1) <= expires_at <= datetime.now(UTC) + timedelta(hours=1)


def test_a_named_admin_token_mints_as_itself(server: ScepTestServer) -> None:
    assert mint(server, token(server, "ops", "admin")).status_code == 201
    [row] = listed(server)
    assert row["created_by"] == "token:ops"
    assert audited(server, "otp.create")[0]["actor"] == "token:ops"


# --- listing and state ---------------------------------------------------------------------------------------


def test_the_list_shows_who_used_a_password_and_when(server: ScepTestServer) -> None:
    used, spare = documented(mint(server, count=2), "/otp", "post")["passwords"]
    status, transaction_id = enroll_with(server, used)
    assert status is PKIStatus.SUCCESS
    rows = listed(server)
    by_state = {row["state"]: row for row in rows}
    assert set(by_state) == {"used", "unused"}
    assert by_state["used"]["used_by_transaction"] == transaction_id
    assert datetime.fromisoformat(by_state["used"]["used_at"]) <= datetime.now(UTC)
    assert (by_state["unused"]["used_at"], by_state["unused"]["used_by_transaction"]) == (None, None)
    assert spare not in str(rows)


def test_the_list_pages_newest_first_and_filters_by_profile(server: ScepTestServer) -> None:
    assert mint(server, count=3).status_code == 201
    assert mint(server, profile="lobby", count=2).status_code == 201
    ids: list[int] = []
    cursor: str | None = None
    while True:
        body = documented(server.http.get("/api/v1/otp", headers=AUTH, query_string={
            "limit": "2", **({"cursor": cursor} if cursor else {})}), "/otp")
        ids += [row["id"] for row in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(ids) == 5 and ids == sorted(ids, reverse=True)
    assert [row["profile"] for row in listed(server, profile="lobby")] == ["lobby", "lobby"]
    assert documented(server.http.get("/api/v1/otp", headers=AUTH, query_string={"limit": "5"}),
                      "/otp")["next_cursor"] is None


# --- revoking ------------------------------------------------------------------------------------------------


def test_revoking_expires_an_unused_password_once_and_audits_it(server: ScepTestServer) -> None:
    [password] = documented(mint(server), "/otp", "post")["passwords"]
    [row] = listed(server)
    revoked = server.http.post(f"/api/v1/otp/{row['id']}/revoke", headers=AUTH)
    body = documented(revoked, "/otp/{id}/revoke", "post")
    assert revoked.status_code == 200 and (body["id"], body["state"]) == (row["id"], "expired")
    assert enroll_with(server, password)[0] is PKIStatus.FAILURE
    again = server.http.post(f"/api/v1/otp/{row['id']}/revoke", headers=AUTH)
    assert again.status_code == 409 and error_code(again, "/otp/{id}/revoke", "post") == "conflict"
    [entry] = audited(server, "otp.revoke")
    assert (entry["actor"], entry["source"], entry["subject"]) == ("admin-token", "api", f"otp={row['id']}")


def test_a_used_password_cannot_be_revoked(server: ScepTestServer) -> None:
    [password] = documented(mint(server), "/otp", "post")["passwords"]
    assert enroll_with(server, password)[0] is PKIStatus.SUCCESS
    [row] = listed(server)
    answer = server.http.post(f"/api/v1/otp/{row['id']}/revoke", headers=AUTH)
    assert answer.status_code == 409 and listed(server)[0]["state"] == "used"


@pytest.mark.parametrize(("otp_id", "status", "code"), [
    ("4711", 404, "not_found"), ("0", 400, "invalid_parameter"), ("abc", 400, "invalid_parameter"),
])
def test_revoking_what_is_not_there(server: ScepTestServer, otp_id: str, status: int, code: str) -> None:
    answer = server.http.post(f"/api/v1/otp/{otp_id}/revoke", headers=AUTH)
    assert answer.status_code == status and error_code(answer, "/otp/{id}/revoke", "post") == code


# --- scopes --------------------------------------------------------------------------------------------------


def test_minting_and_revoking_need_the_admin_scope_listing_read(server: ScepTestServer) -> None:
    assert mint(server).status_code == 201
    [row] = listed(server)
    for scopes in (("read",), ("read", "revoke")):
        headers = token(server, "-".join(scopes), *scopes)
        refused = mint(server, headers)
        assert refused.status_code == 403 and error_code(refused, "/otp", "post") == "forbidden"
        revoke = server.http.post(f"/api/v1/otp/{row['id']}/revoke", headers=headers)
        assert revoke.status_code == 403
        assert server.http.get("/api/v1/otp", headers=headers).status_code == 200
    assert server.http.get("/api/v1/otp", headers=token(server, "revoker", "revoke")).status_code == 403
    assert mint(server, {}).status_code == 401
    assert [r["state"] for r in listed(server)] == ["unused"]


# --- bad input -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [
    {"profile": "default"},  # a profile with another challenge
    {"profile": "no-such-profile"},
    {},
    {"profile": PROFILE, "ttl": "0m"},
    {"profile": PROFILE, "ttl": "31d"},
    {"profile": PROFILE, "ttl": "1H"},
    {"profile": PROFILE, "ttl": " 1h"},
    {"profile": PROFILE, "ttl": 3600},
    {"profile": PROFILE, "count": 0},
    {"profile": PROFILE, "count": 101},
    {"profile": PROFILE, "count": True},
    {"profile": PROFILE, "count": "3"},
    {"profile": PROFILE, "count": 1.5},
    {"profile": PROFILE, "subject_pattern": ""},
    {"profile": PROFILE, "subject_pattern": "CN=a\nCN=b"},
    {"profile": PROFILE, "subject_pattern": "x" * 513},
    {"profile": PROFILE, "subject_pattern": "\ud800"},
    {"profile": PROFILE, "expires": "1h"},
    [PROFILE],
    None,
], ids=lambda body: repr(body)[:40])
def test_a_body_outside_the_schema_or_the_limits_is_400_invalid_body(server: ScepTestServer, body: Any) -> None:
    answer = server.http.post("/api/v1/otp", json=body, headers=AUTH)
    assert answer.status_code == 400 and error_code(answer, "/otp", "post") == "invalid_body", answer.get_json()
    assert listed(server) == []


def test_a_body_that_is_not_json_is_400(server: ScepTestServer) -> None:
    answer = server.http.post("/api/v1/otp", data=b"profile=kiosks", headers=AUTH)
    assert answer.status_code == 400 and error_code(answer, "/otp", "post") == "invalid_body"


def test_a_profile_without_the_otp_challenge_is_named_in_the_refusal(server: ScepTestServer) -> None:
    message = server.http.post("/api/v1/otp", json={"profile": "default"}, headers=AUTH).get_json()["error"]["message"]
    assert "default" in message and "kiosks, lobby" in message


def test_the_largest_batch_and_the_longest_lifetime_are_accepted(server: ScepTestServer) -> None:
    body = documented(mint(server, count=100, ttl="30d"), "/otp", "post")
    assert len(body["passwords"]) == 100 and len(listed(server, limit="1000")) == 100


@pytest.mark.parametrize(("query", "named"), [
    ({"limit": "0"}, "limit"), ({"cursor": "not-a-cursor"}, "cursor"), ({"profile": "bad name"}, "profile"),
    ({"state": "unused"}, "state"),
])
def test_bad_list_parameters_are_400_naming_them(server: ScepTestServer, query: dict[str, str], named: str) -> None:
    answer = server.http.get("/api/v1/otp", query_string=query, headers=AUTH)
    assert answer.status_code == 400 and error_code(answer, "/otp") in ("invalid_parameter", "unknown_parameter")
    assert named in answer.get_json()["error"]["message"]
