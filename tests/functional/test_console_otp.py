"""The console's one-time passwords page through Flask's test client: minting shows the passwords once and
nowhere else, the list follows their state, revocation asks first, every form needs its CSRF token, and
minting and revoking need the admin scope."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from werkzeug.test import TestResponse

from scep_server.config import SecretSource
from scep_server.scep.types import PKIStatus
from scep_server.service.reports import AuditQuery
from scep_server.service.tokens import TokenService

from .conftest import CONFIG, Device, ScepTestServer, make_config, serving
from .test_console import EXPECTED_HEADERS, TOKEN, console_config, csrf_of, page_csrf, sign_in

PROFILE = "kiosks"
WITH_OTP_PROFILES = CONFIG + f"""  {PROFILE}:
    challenge: {{{{type: otp}}}}
  lobby:
    challenge: {{{{type: otp}}}}
"""
PASSWORD = re.compile(r"\b[A-Z2-7]{32}\b")
ROW = re.compile(r'<td class="number">(\d+)</td>\s*<td><span class="badge (\w+)">')


@pytest.fixture
def site(tmp_path: Path) -> Iterator[ScepTestServer]:
    config = replace(make_config(tmp_path, WITH_OTP_PROFILES), admin_token=SecretSource(value=TOKEN))
    with serving(config) as started:
        yield started


def mint(site: ScepTestServer, **fields: str) -> TestResponse:
    form = {"csrf_token": page_csrf(site.http, "/console/otp"), "profile": PROFILE, "ttl": "1h", "count": "1"}
    return site.http.post("/console/otp", data=form | fields)


def minted(answer: TestResponse) -> list[str]:
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return PASSWORD.findall(answer.get_data(as_text=True))


def rows(site: ScepTestServer, query: str = "") -> dict[int, str]:
    """The listed passwords' ids and states."""
    page = site.http.get(f"/console/otp{query}")
    assert page.status_code == 200
    return {int(otp_id): state for otp_id, state in ROW.findall(page.get_data(as_text=True))}


def enroll_with(site: ScepTestServer, password: str) -> tuple[PKIStatus, str]:
    device = Device(common_name="kiosk-01")
    built = site.pkcsreq(device, challenge=password, transaction_id=uuid.uuid4().hex.upper())
    reply = site.send(built, device, profile=PROFILE)
    return reply.status, reply.transaction_id


def audited(site: ScepTestServer, action: str) -> list[dict[str, object]]:
    return site.runtime.reports.audit(AuditQuery(action=action)).items


def signed_in_with(site: ScepTestServer, *scopes: str) -> None:
    _, secret = TokenService(site.runtime.store).create("-".join(scopes), list(scopes), actor="cli:test",
                                                        source="cli")
    assert sign_in(site.http, secret).status_code == 303


# -- the page and minting ---------------------------------------------------------------------------------


def test_the_page_is_in_the_navigation_and_offers_the_otp_profiles(site: ScepTestServer) -> None:
    sign_in(site.http)
    assert 'href="/console/otp">One-time passwords' in site.http.get("/console/").get_data(as_text=True)
    page = site.http.get("/console/otp")
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and 'aria-current="page">One-time passwords' in text
    profile_select = text[text.index('id="m-profile"'):text.index("</select>", text.index('id="m-profile"'))]
    assert re.findall(r'<option value="([^"]+)"', profile_select) == [PROFILE, "lobby"]
    assert "No one-time password matches." in text and "<fieldset disabled" not in text


def test_minting_shows_the_passwords_once_and_they_enroll(site: ScepTestServer) -> None:
    sign_in(site.http)
    answer = mint(site, count="2", ttl="15m", subject_pattern="CN=kiosk-*")
    passwords = minted(answer)
    assert len(set(passwords)) == 2 and "Location" not in answer.headers
    assert {name: answer.headers.get(name) for name in EXPECTED_HEADERS} == EXPECTED_HEADERS  # no-store
    assert "CN=kiosk-*" in answer.get_data(as_text=True)

    listing = site.http.get("/console/otp").get_data(as_text=True)
    assert not PASSWORD.search(listing) and listing.count("admin-token") >= 2
    assert sorted(rows(site).values()) == ["unused", "unused"]
    [created] = audited(site, "otp.create")
    assert (created["actor"], created["source"]) == ("admin-token", "console")
    assert not any(password in str(created) for password in passwords)

    status, transaction_id = enroll_with(site, passwords[0])
    assert status is PKIStatus.SUCCESS
    assert sorted(rows(site).values()) == ["unused", "used"]
    assert f"transaction_id={transaction_id}" in site.http.get("/console/otp").get_data(as_text=True)


@pytest.mark.parametrize("fields", [
    {"ttl": "0m"}, {"ttl": "forever"}, {"ttl": "31d"}, {"count": "0"}, {"count": "101"}, {"count": "two"},
    {"count": "²"}, {"profile": "default"}, {"profile": ""}, {"subject_pattern": "CN=a\x07"},
], ids=repr)
def test_a_bad_mint_form_is_a_400_that_keeps_it_and_mints_nothing(site: ScepTestServer, fields: dict[str, str]) -> None:
    sign_in(site.http)
    answer = mint(site, **fields)
    text = answer.get_data(as_text=True)
    assert answer.status_code == 400 and 'role="alert"' in text and not PASSWORD.search(text)
    kept = {"ttl": "1h", "count": "1"} | {name: fields[name] for name in ("ttl", "count") if name in fields}
    assert all(re.search(f'name="{name}"[^>]* value="{re.escape(value)}"', text) for name, value in kept.items())
    assert rows(site) == {}


def test_bad_filters_are_a_400_naming_them(site: ScepTestServer) -> None:
    sign_in(site.http)
    mint(site, count="2")
    mint(site, profile="lobby")
    assert len(rows(site, "?profile=lobby")) == 1 and len(rows(site)) == 3
    for query, named in [("?profile=default", "profile"), ("?limit=7", "limit"), ("?cursor=xyz", "cursor")]:
        answer = site.http.get(f"/console/otp{query}")
        assert answer.status_code == 400 and named in answer.get_data(as_text=True), query


def test_without_an_otp_profile_there_is_nothing_to_mint_for(tmp_path: Path) -> None:
    with serving(console_config(tmp_path)) as site:
        sign_in(site.http)
        text = site.http.get("/console/otp").get_data(as_text=True)
        assert "No profile uses the <code>otp</code> challenge" in text and 'id="m-profile"' not in text
        assert mint(site).status_code == 400


# -- revoking ---------------------------------------------------------------------------------------------


def test_revoking_asks_first_then_expires_the_password_audited(site: ScepTestServer) -> None:
    sign_in(site.http)
    [password] = minted(mint(site))
    [(otp_id, _)] = rows(site).items()
    assert f'href="/console/otp/{otp_id}/revoke"' in site.http.get("/console/otp").get_data(as_text=True)
    confirm = site.http.get(f"/console/otp/{otp_id}/revoke")
    assert confirm.status_code == 200 and "Revoke password" in confirm.get_data(as_text=True)
    assert rows(site) == {otp_id: "unused"}  # asking changed nothing
    done = site.http.post(f"/console/otp/{otp_id}/revoke", data={"csrf_token": csrf_of(confirm)})
    assert done.status_code == 303 and done.headers["Location"] == f"/console/otp?revoked={otp_id}"
    assert f"One-time password {otp_id} is revoked" in site.http.get(done.headers["Location"]).get_data(as_text=True)
    assert rows(site) == {otp_id: "expired"}
    assert enroll_with(site, password)[0] is PKIStatus.FAILURE
    [entry] = audited(site, "otp.revoke")
    assert (entry["actor"], entry["source"]) == ("admin-token", "console")
    again = site.http.post(f"/console/otp/{otp_id}/revoke", data={"csrf_token": page_csrf(site.http)})
    assert again.status_code == 409
    assert site.http.get("/console/otp/4711/revoke").status_code == 404
    assert site.http.post("/console/otp/4711/revoke", data={"csrf_token": page_csrf(site.http)}).status_code == 404


# -- CSRF and scopes --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("headers", "csrf"), [
    ({}, None), ({}, "wrong"), ({"Origin": "https://attacker.example"}, "right"),
    ({"Sec-Fetch-Site": "cross-site"}, "right"),
], ids=["no-token", "wrong-token", "foreign-origin", "cross-site"])
def test_forms_that_did_not_come_from_the_console_are_refused(
    site: ScepTestServer, headers: dict[str, str], csrf: str | None
) -> None:
    sign_in(site.http)
    minted(mint(site))
    [otp_id] = rows(site)
    token = {} if csrf is None else {"csrf_token": page_csrf(site.http) if csrf == "right" else csrf}
    forged_mint = site.http.post("/console/otp", data={"profile": PROFILE, "ttl": "1h", "count": "5", **token},
                                 headers=headers)
    forged_revoke = site.http.post(f"/console/otp/{otp_id}/revoke", data=token, headers=headers)
    assert (forged_mint.status_code, forged_revoke.status_code) == (400, 400)
    assert not PASSWORD.search(forged_mint.get_data(as_text=True))
    assert rows(site) == {otp_id: "unused"}


@pytest.mark.parametrize("scopes", [("read",), ("read", "revoke")])
def test_without_the_admin_scope_the_form_is_disabled_and_changes_are_403(
    site: ScepTestServer, scopes: tuple[str, ...]
) -> None:
    sign_in(site.http)
    minted(mint(site))
    [otp_id] = rows(site)
    viewer = site.http.application.test_client()
    site.http = viewer  # the other operator's browser
    signed_in_with(site, *scopes)
    page = viewer.get("/console/otp").get_data(as_text=True)
    assert "<fieldset disabled" in page and "lacks the <code>admin</code> scope" in page
    assert f"/console/otp/{otp_id}/revoke" not in page
    assert mint(site).status_code == 403
    assert viewer.get(f"/console/otp/{otp_id}/revoke").status_code == 403
    assert viewer.post(f"/console/otp/{otp_id}/revoke", data={"csrf_token": page_csrf(viewer)}).status_code == 403
    assert rows(site) == {otp_id: "unused"}


def test_the_revocation_notice_shows_only_an_id(site: ScepTestServer) -> None:
    sign_in(site.http)
    page = site.http.get("/console/otp?revoked=call+0800+to+restore+it").get_data(as_text=True)
    assert "is revoked" not in page and "0800" not in page
    assert "One-time password 12 is revoked" in site.http.get("/console/otp?revoked=12").get_data(as_text=True)
