"""The web console through Flask's test client: its headers and cookie, CSRF refusals, how sessions end
(idle, lifetime, a revoked token, signing out), the scopes, its key file, and the dashboard's counts
(SQLite here, PostgreSQL too when it is there)."""

from __future__ import annotations

import re
import stat
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask import request
from flask.testing import FlaskClient
from itsdangerous import URLSafeSerializer
from werkzeug.test import TestResponse

from scep_server.config import SecretSource, ServerConfig
from scep_server.intune.contract import ChallengeSpec
from scep_server.scep.types import PKIStatus
from scep_server.service.audit_listing import RevocationQuery
from scep_server.service.console import SESSION_KEY_FILE, ConsoleAuth, session_secret
from scep_server.service.dashboard import Dashboard
from scep_server.service.tokens import TokenService, token_hash
from scep_server.web import console, create_app
from tests.support.clocks import FakeClock
from tests.support.servers import postgres_database, postgres_url  # noqa: F401  (fixtures)

from .conftest import Device, ScepTestServer, make_config, serving
from .intune_env import IntuneEnv, enroll

TOKEN = "console-admin-token-for-tests"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
EXPECTED_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def console_config(tmp_path: Path, **overrides: object) -> ServerConfig:
    return replace(make_config(tmp_path), admin_token=SecretSource(value=TOKEN), **overrides)  # type: ignore[arg-type]


@pytest.fixture
def site(tmp_path: Path) -> Iterator[ScepTestServer]:
    with serving(console_config(tmp_path)) as started:
        yield started


def csrf_of(response: TestResponse) -> str:
    found = CSRF.search(response.get_data(as_text=True))
    assert found, response.get_data(as_text=True)
    return found[1]


def sign_in(http: FlaskClient, token: str = TOKEN, **extra: str) -> TestResponse:
    form = http.get("/console/sign-in")
    return http.post("/console/sign-in", data={"csrf_token": csrf_of(form), "token": token, **extra})


def page_csrf(http: FlaskClient, path: str = "/console/") -> str:
    return csrf_of(http.get(path))


def cookie_values(site: ScepTestServer) -> dict[str, object]:
    cookie = site.http.get_cookie(console.COOKIE_NAME, path="/console")
    assert cookie is not None
    key = (site.data_dir / SESSION_KEY_FILE).read_bytes()
    values = URLSafeSerializer(key, salt=console.COOKIE_SALT).loads(cookie.value)
    assert isinstance(values, dict)
    return values


def is_sign_in_redirect(response: TestResponse, ended: str | None = None) -> bool:
    location = response.headers.get("Location", "")
    return response.status_code == 303 and location.startswith("/console/sign-in") and (
        ended is None or f"ended={ended}" in location)


def with_clock(site: ScepTestServer, clock: FakeClock[datetime], token: str = TOKEN) -> None:
    """The console's sign-in and session checks on ``clock`` (installed before the first request)."""
    app = site.http.application
    app.extensions[console.CONSOLE_AUTH_EXTENSION] = ConsoleAuth(  # type: ignore[attr-defined]
        TokenService(site.runtime.store), lambda: token, clock=clock)


def enrolled_serial(site: ScepTestServer, name: str = "laptop-1") -> int:
    return site.enroll(Device(common_name=name)).serial_number


# -- headers and the cookie ---------------------------------------------------------------------------


def test_every_console_answer_carries_the_security_headers(site: ScepTestServer) -> None:
    answers = [site.http.get("/console/sign-in"), site.http.get("/console/static/console.css"),
               site.http.get("/console/no-such-page")]
    assert sign_in(site.http).status_code == 303
    answers += [site.http.get("/console/"), site.http.get("/console/certificates/abc")]
    assert [a.status_code for a in answers] == [200, 200, 404, 200, 404]
    for answer in answers:
        answer.close()  # the stylesheet is sent from its open file
        assert {name: answer.headers.get(name) for name in EXPECTED_HEADERS} == EXPECTED_HEADERS
    assert "Content-Security-Policy" not in site.http.get("/scep?operation=GetCACaps").headers


def test_the_session_cookie_is_strict_and_holds_the_tokens_digest_never_the_token(site: ScepTestServer) -> None:
    assert sign_in(site.http).status_code == 303
    cookie = site.http.get_cookie(console.COOKIE_NAME, path="/console")
    assert cookie is not None
    assert (cookie.http_only, cookie.same_site, cookie.path, cookie.secure) == (True, "Strict", "/console", False)
    values = cookie_values(site)
    assert values["d"] == token_hash(TOKEN)
    assert TOKEN not in cookie.value and TOKEN not in str(values)
    key_file = site.data_dir / SESSION_KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and len(key_file.read_bytes()) == 32


def test_the_cookie_is_secure_over_https_and_behind_a_trusted_tls_proxy(tmp_path: Path) -> None:
    with serving(console_config(tmp_path, trusted_proxy_hops=1)) as site:
        direct = site.http.application.test_client()
        sign_in(direct)
        assert direct.get_cookie(console.COOKIE_NAME, path="/console").secure is False  # type: ignore[union-attr]
        https = site.http.application.test_client()
        https.get("/console/sign-in", base_url="https://scep.example")
        assert https.get_cookie(console.COOKIE_NAME, domain="scep.example", path="/console").secure  # type: ignore[union-attr]
        proxied = site.http.application.test_client()
        proxied.get("/console/sign-in", headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "192.0.2.7"})
        assert proxied.get_cookie(console.COOKIE_NAME, path="/console").secure  # type: ignore[union-attr]


def test_the_cookie_is_secure_when_the_public_url_is_https_whatever_the_proxy_forwards(tmp_path: Path) -> None:
    """A TLS proxy not trusted to forward the scheme still serves the browser https: the public URL says so."""
    with serving(console_config(tmp_path, public_url="https://scep.example")) as site:
        site.http.get("/console/sign-in")
        assert site.http.get_cookie(console.COOKIE_NAME, path="/console").secure  # type: ignore[union-attr]


def test_without_a_trusted_proxy_a_forwarded_proto_is_ignored(site: ScepTestServer) -> None:
    site.http.get("/console/sign-in", headers={"X-Forwarded-Proto": "https"})
    assert site.http.get_cookie(console.COOKIE_NAME, path="/console").secure is False  # type: ignore[union-attr]


def test_a_cookie_signed_with_another_key_is_no_session(site: ScepTestServer) -> None:
    forged = URLSafeSerializer(b"k" * 32, salt=console.COOKIE_SALT).dumps(
        {"c": "x", "d": token_hash(TOKEN), "a": int(datetime.now(UTC).timestamp()),
         "s": int(datetime.now(UTC).timestamp())})
    site.http.set_cookie(console.COOKIE_NAME, forged, path="/console")
    assert is_sign_in_redirect(site.http.get("/console/"))


# -- CSRF and where a form comes from -------------------------------------------------------------------


def test_a_sign_in_without_the_forms_csrf_token_is_refused(site: ScepTestServer) -> None:
    assert site.http.post("/console/sign-in", data={"token": TOKEN}).status_code == 400
    other = site.http.application.test_client()
    foreign_token = page_csrf(other, "/console/sign-in")  # another browser's form
    site.http.get("/console/sign-in")
    refused = site.http.post("/console/sign-in", data={"token": TOKEN, "csrf_token": foreign_token})
    assert refused.status_code == 400 and "did not come from this console" in refused.get_data(as_text=True)
    assert is_sign_in_redirect(site.http.get("/console/"))


@pytest.mark.parametrize("headers, csrf", [
    ({}, None),
    ({}, "wrong"),
    ({"Origin": "https://attacker.example"}, "right"),
    ({"Referer": "https://attacker.example/page"}, "right"),
    ({"Sec-Fetch-Site": "cross-site"}, "right"),
    ({"Sec-Fetch-Site": "same-site"}, "right"),
], ids=["no-token", "wrong-token", "foreign-origin", "foreign-referer", "cross-site", "same-site"])
def test_a_revocation_that_did_not_come_from_a_console_form_is_refused(
    site: ScepTestServer, headers: dict[str, str], csrf: str | None
) -> None:
    serial = enrolled_serial(site)
    sign_in(site.http)
    form = {"reason": "keyCompromise"}
    if csrf is not None:
        form["csrf_token"] = page_csrf(site.http) if csrf == "right" else csrf
    answer = site.http.post(f"/console/certificates/{serial:x}/revoke", data=form, headers=headers)
    assert answer.status_code == 400
    assert site.runtime.certificates.show(serial).status.value == "valid"  # type: ignore[union-attr]


def test_a_console_form_revokes_audited_as_the_tokens_actor_from_the_console(site: ScepTestServer) -> None:
    serial = enrolled_serial(site)
    sign_in(site.http)
    confirm = site.http.get(f"/console/certificates/{serial:x}/revoke")
    assert confirm.status_code == 200 and 'name="reason"' in confirm.get_data(as_text=True)
    answer = site.http.post(f"/console/certificates/{serial:x}/revoke", headers={"Origin": "null"}, data={
        "csrf_token": csrf_of(confirm), "reason": "keyCompromise", "comment": "stolen"})
    assert answer.status_code == 303 and answer.headers["Location"].endswith(f"/certificates/{serial:x}?revoked=1")
    assert site.runtime.certificates.show(serial).revocation_reason == 1  # type: ignore[union-attr]
    [revocation] = site.runtime.reports.revocations(RevocationQuery()).items
    assert (revocation["actor"], revocation["source"], revocation["comment"]) == ("admin-token", "console", "stolen")
    again = site.http.post(f"/console/certificates/{serial:x}/revoke",
                           data={"csrf_token": page_csrf(site.http), "reason": "superseded"})
    assert again.status_code == 409


def test_a_revocation_needs_a_listed_reason_and_a_short_comment(site: ScepTestServer) -> None:
    serial = enrolled_serial(site)
    sign_in(site.http)
    for form in ({"reason": "removeFromCRL"}, {"reason": "unspecified", "comment": "x" * 501}):
        answer = site.http.post(f"/console/certificates/{serial:x}/revoke",
                                data={"csrf_token": page_csrf(site.http), **form})
        assert answer.status_code == 400 and 'role="alert"' in answer.get_data(as_text=True)
    assert site.runtime.certificates.show(serial).status.value == "valid"  # type: ignore[union-attr]


def test_a_comment_over_several_lines_is_kept_as_one_and_a_control_character_is_refused(site: ScepTestServer) -> None:
    serial = enrolled_serial(site)
    sign_in(site.http)
    refused = site.http.post(f"/console/certificates/{serial:x}/revoke",
                             data={"csrf_token": page_csrf(site.http), "reason": "superseded", "comment": "a\x07b"})
    assert refused.status_code == 400 and 'role="alert"' in refused.get_data(as_text=True)
    answer = site.http.post(f"/console/certificates/{serial:x}/revoke", data={
        "csrf_token": page_csrf(site.http), "reason": "superseded", "comment": "replaced by\r\n  the new laptop\n"})
    assert answer.status_code == 303
    [revocation] = site.runtime.reports.revocations(RevocationQuery()).items
    assert revocation["comment"] == "replaced by the new laptop"


def test_odd_query_strings_are_answered_not_crashed_on(site: ScepTestServer) -> None:
    app = site.http.application
    with app.test_request_context("/console/certificates?subject=x&_method=POST&_external=1&cursor=old"):
        request.url_rule = app.url_map.bind("localhost").match("/console/certificates", return_rule=True)[0]
        link = console._page_url("next")
    assert link.startswith("/console/certificates?") and "subject=x" in link and "cursor=next" in link
    assert "_method" not in link and "_external" not in link and "old" not in link
    sign_in(site.http)
    story = site.http.get("/console/enrollments/story?transaction_id=" + "T" * 300)
    assert story.status_code == 400


# -- how sessions end -----------------------------------------------------------------------------------


def test_a_session_ends_after_an_hour_without_a_request(site: ScepTestServer) -> None:
    clock = FakeClock(datetime(2026, 3, 1, 9, 0, tzinfo=UTC))
    with_clock(site, clock)
    sign_in(site.http)
    for _ in range(3):
        clock.advance(59 * 60)
        assert site.http.get("/console/").status_code == 200
    clock.advance(61 * 60)
    ended = site.http.get("/console/certificates")
    assert is_sign_in_redirect(ended, "idle")
    assert "an hour without activity" in site.http.get(ended.headers["Location"]).get_data(as_text=True)


def test_a_session_lasts_at_most_eight_hours_however_busy(site: ScepTestServer) -> None:
    clock = FakeClock(datetime(2026, 3, 1, 9, 0, tzinfo=UTC))
    with_clock(site, clock)
    sign_in(site.http)
    for _ in range(9):  # 7 h 30 min
        clock.advance(50 * 60)
        assert site.http.get("/console/").status_code == 200
    clock.advance(31 * 60)
    assert is_sign_in_redirect(site.http.get("/console/"), "lifetime")


def test_revoking_the_token_ends_its_sessions(site: ScepTestServer) -> None:
    tokens = TokenService(site.runtime.store)
    _, secret = tokens.create("ops", ["read", "revoke"], actor="cli:test", source="cli")
    assert sign_in(site.http, secret).status_code == 303
    assert "token:ops" in site.http.get("/console/").get_data(as_text=True)
    csrf = page_csrf(site.http)
    tokens.revoke("ops", actor="cli:test", source="cli")
    assert is_sign_in_redirect(site.http.get("/console/"), "token")
    serial = enrolled_serial(site)
    refused = site.http.post(f"/console/certificates/{serial:x}/revoke",
                             data={"csrf_token": csrf, "reason": "unspecified"})
    assert refused.status_code in (400, 401)  # the ended session took its CSRF token along
    assert site.runtime.certificates.show(serial).status.value == "valid"  # type: ignore[union-attr]


def test_a_changed_admin_token_ends_the_sessions_of_the_old_one(site: ScepTestServer) -> None:
    current = {"token": TOKEN}
    site.http.application.extensions[console.CONSOLE_AUTH_EXTENSION] = ConsoleAuth(  # type: ignore[attr-defined]
        TokenService(site.runtime.store), lambda: current["token"])
    sign_in(site.http)
    assert site.http.get("/console/").status_code == 200
    current["token"] = "a-new-admin-token"
    assert is_sign_in_redirect(site.http.get("/console/"), "token")


def test_signing_out_ends_the_session_in_the_browser(site: ScepTestServer) -> None:
    sign_in(site.http)
    out = site.http.post("/console/sign-out", data={"csrf_token": page_csrf(site.http)})
    assert is_sign_in_redirect(out, "signed-out")
    assert "You have signed out" in site.http.get(out.headers["Location"]).get_data(as_text=True)
    assert is_sign_in_redirect(site.http.get("/console/"))
    assert "d" not in cookie_values(site)


def test_sign_in_goes_back_only_to_console_pages(site: ScepTestServer) -> None:
    assert sign_in(site.http, next="/console/audit?actor=x").headers["Location"] == "/console/audit?actor=x"
    for elsewhere in ("https://attacker.example/", "//attacker.example/console/", "/scep", "/console/\\x"):
        answer = sign_in(site.http.application.test_client(), next=elsewhere)
        assert answer.headers["Location"] == "/console/"


# -- scopes ---------------------------------------------------------------------------------------------


def test_a_read_token_may_look_but_not_revoke(site: ScepTestServer) -> None:
    serial = enrolled_serial(site)
    _, secret = TokenService(site.runtime.store).create("viewer", ["read"], actor="cli:test", source="cli")
    assert sign_in(site.http, secret).status_code == 303
    page = site.http.get(f"/console/certificates/{serial:x}").get_data(as_text=True)
    assert re.search(r"<button[^>]*disabled[^>]*>Revoke", page) and "lacks the <code>revoke</code> scope" in page
    assert site.http.get(f"/console/certificates/{serial:x}/revoke").status_code == 403
    posted = site.http.post(f"/console/certificates/{serial:x}/revoke",
                            data={"csrf_token": page_csrf(site.http), "reason": "keyCompromise"})
    assert posted.status_code == 403
    assert site.runtime.certificates.show(serial).status.value == "valid"  # type: ignore[union-attr]


def test_a_token_without_the_read_scope_cannot_sign_in(site: ScepTestServer) -> None:
    _, secret = TokenService(site.runtime.store).create("revoker", ["revoke"], actor="cli:test", source="cli")
    refused = sign_in(site.http, secret)
    assert refused.status_code == 403 and "lacks the read scope" in refused.get_data(as_text=True)
    assert sign_in(site.http, "scep_wrong").status_code == 401
    assert is_sign_in_redirect(site.http.get("/console/"))


# -- the key the cookies are signed with ----------------------------------------------------------------


def test_every_worker_of_a_server_signs_with_the_same_key(site: ScepTestServer, tmp_path: Path) -> None:
    sign_in(site.http)
    other_worker = create_app(site.runtime.config, runtime_override=site.runtime, start_background=False)
    cookie = site.http.get_cookie(console.COOKIE_NAME, path="/console")
    assert cookie is not None
    client = other_worker.test_client()
    client.set_cookie(console.COOKIE_NAME, cookie.value, path="/console")
    assert client.get("/console/").status_code == 200

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    keys: list[bytes] = []
    threads = [threading.Thread(target=lambda: keys.append(session_secret(fresh))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(keys) == 8 and len(set(keys)) == 1 and [p.name for p in fresh.iterdir()] == [SESSION_KEY_FILE]


# -- the pages and the dashboard ------------------------------------------------------------------------


def test_every_page_answers_and_bad_filters_are_a_400_naming_them(site: ScepTestServer) -> None:
    serial = enrolled_serial(site)
    sign_in(site.http)
    pages = ["/console/", "/console/?window=14d", "/console/certificates?subject=laptop&status=valid",
             f"/console/certificates/{serial:x}", "/console/enrollments?outcome=issued", "/console/audit",
             "/console/revocations"]
    assert [site.http.get(path).status_code for path in pages] == [200] * len(pages)
    pem = site.http.get(f"/console/certificates/{serial:x}/pem")
    assert pem.get_data(as_text=True).startswith("-----BEGIN CERTIFICATE-----")
    for path, named in [("/console/certificates?status=bogus", "status"), ("/console/audit?since=yesterday", "since"),
                        ("/console/enrollments?fail_info=bad", "fail_info"), ("/console/?window=1y", "window"),
                        ("/console/revocations?limit=7", "limit")]:
        answer = site.http.get(path)
        assert answer.status_code == 400 and named in answer.get_data(as_text=True), path


def _dashboard_counts_enrollments(site: ScepTestServer) -> None:
    issued = [site.enroll(Device(common_name=f"dash-{n}")) for n in range(2)]
    refused = site.send(site.pkcsreq(Device(common_name="dash-bad"), challenge="not-the-challenge"), Device())
    assert refused.status is PKIStatus.FAILURE and len(issued) == 2
    now = datetime.now(UTC)
    later = Dashboard(site.runtime.store, now=lambda: now + timedelta(hours=3)).view()
    assert [bar.count for bar in later.issued_per_hour.bars][-4:] == [2, 0, 0, 0]
    assert [bar.count for bar in later.issued_per_day.bars].count(2) == 1 and later.issued_per_day.total == 2
    assert [(bar.label, bar.count) for bar in later.failures_by_reason.bars] == [("badRequest", 1)]
    assert later.expiring == {7: 0, 30: 0}
    gone = Dashboard(site.runtime.store, now=lambda: now + timedelta(days=15)).view("14d")
    assert gone.issued_per_day.total == 0 and gone.failures_by_reason.total == 0
    sign_in(site.http)
    page = site.http.get("/console/").get_data(as_text=True)
    assert "Certificates issued per hour, last 24 hours (UTC): 2 in all" in page
    assert re.search(r'<th scope="row">badRequest</th><td class="number">1</td>', page)


def test_the_dashboard_counts_issuance_and_failures(site: ScepTestServer) -> None:
    _dashboard_counts_enrollments(site)


@pytest.mark.postgres
def test_the_dashboard_counts_the_same_on_postgresql(tmp_path: Path, postgres_url: str) -> None:  # noqa: F811
    with serving(console_config(tmp_path, database_url=postgres_url)) as site:
        _dashboard_counts_enrollments(site)


def test_the_dashboard_charts_intunes_refusals_by_code(intune_env: IntuneEnv) -> None:
    accepted, _, _ = enroll(intune_env, subject="CN=fine")
    refused, _, _ = enroll(intune_env, spec=ChallengeSpec(subject="CN=late", expires_in=0))
    assert (accepted.status, refused.status) == (PKIStatus.SUCCESS, PKIStatus.FAILURE)
    view = Dashboard(intune_env.server.runtime.store).view()
    assert [(bar.label, bar.count) for bar in view.refusals_by_intune_code.bars] == [("ChallengeExpired", 1)]
    _, secret = TokenService(intune_env.server.runtime.store).create("ops", ["read"], actor="cli:test", source="cli")
    sign_in(intune_env.server.http, secret)
    page = intune_env.server.http.get("/console/").get_data(as_text=True)
    assert re.search(r'<th scope="row">ChallengeExpired</th><td class="number">1</td>', page)
