"""The console as an operator uses it, in headless Chromium: sign in, read the dashboard the simulated
devices filled, find a device, read its enrollment's story, revoke its certificate and see OCSP say so,
sign out; mint a one-time password and see it listed; and what must be refused: a POST without the CSRF
token, a form on another site, no token, a token without the revoke scope. No page may make the browser
log an error (a CSP violation is one)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from playwright.sync_api import Page, expect

from scep_server.simulator.runner import DeviceResult

from .conftest import OTP_PROFILE, ConsolePage, ConsoleStack, screenshot

pytestmark = pytest.mark.browser
ATTACKER = "http://attacker.test"


def _sign_in(page: Page, stack: ConsoleStack, token: str) -> None:
    page.goto(stack.url)
    expect(page).to_have_url(re.compile(r"/console/sign-in"))
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Dashboard", level=1)).to_be_visible()


def _common_name(result: DeviceResult) -> str:
    return x509.Name.from_rfc4514_string(result.subject).get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value


def _open_certificate(page: Page, result: DeviceResult) -> str:
    """Search the device by its subject's common name and open its only certificate; its serial (hex)."""
    page.get_by_role("navigation", name="Console sections").get_by_role("link", name="Certificates").click()
    page.get_by_label("Subject contains").fill(str(_common_name(result)))
    page.get_by_role("button", name="Search").click()
    rows = page.get_by_role("table").locator("tbody tr")
    expect(rows).to_have_count(1)
    serial = f"{result.certificates[0].serial_number:x}"
    rows.get_by_role("link", name=serial).click()
    expect(page.get_by_role("heading", name=f"Certificate {serial}", level=1)).to_be_visible()
    return serial


def _ocsp_status(stack: ConsoleStack, cert: x509.Certificate) -> ocsp.OCSPResponse:
    request = ocsp.OCSPRequestBuilder().add_certificate(cert, stack.server.ca_certificate(), hashes.SHA256()).build()
    with requests.Session() as http:
        http.trust_env = False  # loopback only, never through a proxy
        answer = http.post(stack.server.base_url + "/ocsp", data=request.public_bytes(Encoding.DER),
                           headers={"Content-Type": "application/ocsp-request"}, timeout=10)
    assert answer.status_code == 200
    return ocsp.load_der_ocsp_response(answer.content)


def _chart_rows(page: Page, name: str) -> dict[str, int]:
    """A dashboard chart's table of numbers: label -> count."""
    figure = page.get_by_role("figure", name=re.compile(name))
    figure.get_by_text("Table of the numbers").click()
    rows = figure.locator("tbody tr")
    labels = rows.locator("th").all_inner_texts()
    counts = rows.locator("td").all_inner_texts()
    return {label.strip(): int(count) for label, count in zip(labels, counts, strict=True)}


def test_an_operator_finds_a_device_reads_its_story_and_revokes_it(
    stack: ConsoleStack, tab: ConsolePage, tmp_path: Path
) -> None:
    page = tab.page
    _sign_in(page, stack, stack.admin_token)

    issued = sum(len(result.certificates) for result in stack.issued)
    expect(page.get_by_role("figure", name=re.compile("issued per hour"))).to_contain_text(f"{issued} in all")
    expect(page.get_by_role("figure", name=re.compile("issued per day"))).to_contain_text(f"{issued} in all")
    expect(page.get_by_role("img", name=re.compile("Certificates issued per hour"))).to_be_visible()
    assert screenshot(page, tmp_path, "dashboard").stat().st_size > 10_000
    assert _chart_rows(page, "Failed requests by reason").get("badRequest", 0) >= len(stack.refused)
    assert _chart_rows(page, "Challenges Intune refused").get("ChallengeDecryptionError") == 1

    device = stack.issued[0]
    serial = _open_certificate(page, device)
    expect(page.get_by_text(device.subject, exact=True)).to_be_visible()
    expect(page.locator(".badge.valid")).to_be_visible()
    screenshot(page, tmp_path, "certificate")

    page.get_by_role("link", name="Transaction story").click()
    expect(page.get_by_role("heading", name=f"Enrollment {device.transaction_ids[0]}")).to_be_visible()
    steps = page.get_by_role("list").filter(has=page.locator(".step")).locator(".step-name").all_text_contents()
    assert [s for s in steps if s in ("received", "validated", "issued")] == ["received", "validated", "issued"]
    page.get_by_role("link", name=serial).click()

    page.get_by_role("link", name="Revoke…").click()
    expect(page.get_by_role("heading", name=f"Revoke certificate {serial}?")).to_be_visible()
    page.get_by_label("Reason").select_option("keyCompromise")
    page.get_by_label(re.compile("Comment")).fill("laptop reported stolen")
    page.get_by_role("button", name="Revoke certificate").click()
    expect(page.get_by_role("status")).to_contain_text("The certificate is revoked")
    expect(page.locator(".badge.revoked")).to_be_visible()

    answer = _ocsp_status(stack, device.certificates[0])
    assert answer.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert answer.revocation_reason is x509.ReasonFlags.key_compromise

    page.get_by_role("link", name="Revocations").first.click()
    row = page.get_by_role("row").filter(has_text=serial)
    expect(row).to_contain_text("admin-token")
    expect(row).to_contain_text("console")
    expect(row).to_contain_text("laptop reported stolen")

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("status")).to_contain_text("You have signed out")
    page.goto(stack.url + "audit")
    expect(page).to_have_url(re.compile(r"/console/sign-in\?next=/console/audit"))
    assert tab.errors == []


def test_an_operator_mints_a_one_time_password_and_sees_it_listed(
    stack: ConsoleStack, tab: ConsolePage, tmp_path: Path
) -> None:
    page = tab.page
    _sign_in(page, stack, stack.admin_token)
    page.get_by_role("navigation", name="Console sections").get_by_role("link", name="One-time passwords").click()
    expect(page.get_by_role("heading", name="One-time passwords", level=1)).to_be_visible()
    mint = page.locator("form", has=page.get_by_role("button", name="Mint passwords"))
    mint.get_by_label("Profile").select_option(OTP_PROFILE)
    mint.get_by_label("Valid for").fill("15m")
    mint.get_by_label(re.compile("Subject pattern")).fill("CN=kiosk-browser-*")
    mint.get_by_label("How many").fill("1")
    mint.get_by_role("button", name="Mint passwords").click()

    expect(page.get_by_role("heading", name="New one-time passwords", level=1)).to_be_visible()
    password = page.locator("ol.passwords code").inner_text()
    assert re.fullmatch(r"[A-Z2-7]{32}", password), password
    assert password not in page.url
    page.screenshot(path=str(tmp_path / "otp-minted.png"))  # the test's own record, not one of the docs' pictures
    page.get_by_role("link", name="Back to the one-time passwords").click()
    row = page.get_by_role("row").filter(has_text="CN=kiosk-browser-*")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("unused")
    expect(row).to_contain_text(OTP_PROFILE)
    expect(row).to_contain_text("admin-token")
    expect(row.get_by_role("link", name=re.compile("Revoke"))).to_be_visible()
    assert password not in page.content()
    page.screenshot(path=str(tmp_path / "otp.png"))
    assert tab.errors == []


def test_a_post_without_the_csrf_token_is_refused(stack: ConsoleStack, tab: ConsolePage) -> None:
    page = tab.page
    _sign_in(page, stack, stack.admin_token)
    device = stack.issued[1]
    revoke = f"{stack.url}certificates/{device.certificates[0].serial_number:x}/revoke"
    # The browser's own cookie jar: the session cookie goes along, the form's token does not.
    missing = page.request.post(revoke, form={"reason": "keyCompromise"})
    wrong = page.request.post(revoke, form={"reason": "keyCompromise", "csrf_token": "not-the-token"})
    assert (missing.status, wrong.status) == (400, 400)
    assert "did not come from this console" in missing.text()
    assert _ocsp_status(stack, device.certificates[0]).certificate_status is ocsp.OCSPCertStatus.GOOD


def test_a_form_on_another_site_cannot_revoke(stack: ConsoleStack, tab: ConsolePage) -> None:
    page = tab.page
    _sign_in(page, stack, stack.admin_token)
    device = stack.issued[2]
    revoke = f"{stack.url}certificates/{device.certificates[0].serial_number:x}/revoke"
    forged = (f'<form method="post" action="{revoke}"><input name="reason" value="keyCompromise">'
              f'<input name="csrf_token" value="guessed"><button>win a prize</button></form>')
    page.route(f"{ATTACKER}/**", lambda route: route.fulfill(body=forged, content_type="text/html"))
    page.goto(f"{ATTACKER}/prize")
    with page.expect_response(revoke) as posted:
        page.get_by_role("button", name="win a prize").click()
    assert posted.value.status == 400
    assert _ocsp_status(stack, device.certificates[0]).certificate_status is ocsp.OCSPCertStatus.GOOD


def test_without_a_token_the_console_shows_only_the_sign_in_form(stack: ConsoleStack, tab: ConsolePage) -> None:
    page = tab.page
    page.goto(stack.url + "certificates")
    expect(page).to_have_url(re.compile(r"/console/sign-in\?next=/console/certificates"))
    expect(page.get_by_role("navigation", name="Console sections")).to_have_count(0)
    page.get_by_label("API token").fill("scep_not-a-token-this-server-made")
    with page.expect_response(lambda response: response.request.method == "POST") as posted:
        page.get_by_role("button", name="Sign in").click()
    assert posted.value.status == 401
    expect(page.get_by_role("alert")).to_contain_text("not a valid API token")
    assert page.request.get(stack.url + "audit").url.startswith(stack.url + "sign-in")
    revoke = f"{stack.url}certificates/{stack.issued[0].certificates[0].serial_number:x}/revoke"
    assert page.request.post(revoke, form={"reason": "unspecified"}).status == 400


def test_a_read_only_token_sees_revocation_disabled(stack: ConsoleStack, tab: ConsolePage) -> None:
    page = tab.page
    _sign_in(page, stack, stack.read_token)
    expect(page.get_by_text("Signed in as token:viewer")).to_be_visible()
    device = stack.issued[3]
    serial = _open_certificate(page, device)
    expect(page.get_by_role("button", name="Revoke…")).to_be_disabled()
    expect(page.get_by_text("lacks the revoke scope")).to_be_visible()
    assert tab.errors == []
    answer = page.goto(f"{stack.url}certificates/{serial}/revoke")
    assert answer is not None and answer.status == 403
    expect(page.get_by_role("alert")).to_contain_text("lacks the revoke scope")


def test_the_console_works_from_the_keyboard(stack: ConsoleStack, tab: ConsolePage) -> None:
    page = tab.page
    page.goto(stack.url)
    expect(page.get_by_label("API token")).to_be_focused()  # autofocus, applied once the page has rendered
    page.keyboard.type(stack.admin_token)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Dashboard", level=1)).to_be_visible()
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to main content")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("main#main")).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.locator("main summary").first).to_be_focused()  # the hourly chart's table of numbers
    page.keyboard.press("Enter")
    expect(page.locator("main details").first).to_have_attribute("open", "")
    headers = page.request.get(stack.url).headers
    assert headers["content-security-policy"].startswith("default-src 'self'")
    assert (headers["x-frame-options"], headers["cache-control"]) == ("DENY", "no-store")
