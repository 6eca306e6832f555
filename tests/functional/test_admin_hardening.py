"""Findings 7 and 11 on the admin API: malformed input is 400 (never 500), and only ``Bearer <token>`` counts."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from scep_server.config import SecretSource
from scep_server.web.admin import bearer_token_matches

from .conftest import Device, ScepTestServer, make_config, serving

TOKEN = "hardening-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def admin_server(tmp_path: Path) -> Iterator[ScepTestServer]:
    with serving(replace(make_config(tmp_path), admin_token=SecretSource(value=TOKEN))) as started:
        yield started


@pytest.fixture
def serial(admin_server: ScepTestServer) -> str:
    return f"{admin_server.enroll(Device(common_name='hardening')).serial_number:x}"


# --- finding 7: ?limit= and JSON bodies -----------------------------------------------------------------


@pytest.mark.parametrize("limit", ["abc", "\u00b2", "\u0661\u0660", "-1", "10.5", "", " 5", "0", "1001", "99999"])
def test_finding7_non_numeric_or_out_of_range_limit_is_400(admin_server: ScepTestServer, limit: str) -> None:
    response = admin_server.http.get("/admin/certificates", query_string={"limit": limit}, headers=AUTH)
    assert response.status_code == 400
    assert "limit must be 1-1000" in response.get_data(as_text=True)


@pytest.mark.parametrize("limit", ["1", "1000", "0100"])
def test_finding7_valid_limits_are_accepted(admin_server: ScepTestServer, serial: str, limit: str) -> None:
    response = admin_server.http.get("/admin/certificates", query_string={"limit": limit}, headers=AUTH)
    assert response.status_code == 200 and [c["serial"] for c in response.get_json()["certificates"]] == [serial]


@pytest.mark.parametrize("body", [["keyCompromise"], [], "keyCompromise", 1, True, {"reason": 1},
                                  {"reason": ["keyCompromise"]}, {"reason": None}])
def test_finding7_json_body_that_is_not_an_object_is_400(admin_server: ScepTestServer, serial: str,
                                                          body: Any) -> None:
    response = admin_server.http.post(f"/admin/certificates/{serial}/revoke", json=body, headers=AUTH)
    assert response.status_code == 400
    shown = admin_server.http.get(f"/admin/certificates/{serial}", headers=AUTH).get_json()
    assert shown["status"] == "valid"  # nothing was revoked


@pytest.mark.parametrize(("data", "content_type"), [
    ('{"reason": "keyCompromise"', "application/json"),  # truncated
    ("reason=keyCompromise", "application/x-www-form-urlencoded"),
    ('{"reason": "keyCompromise"}x', "text/plain"),
    (b"\xff\xfe", "application/json"),
])
def test_finding7_body_that_is_not_json_is_400_and_revokes_nothing(admin_server: ScepTestServer, serial: str,
                                                                    data: str | bytes, content_type: str) -> None:
    response = admin_server.http.post(f"/admin/certificates/{serial}/revoke", data=data,
                                      content_type=content_type, headers=AUTH)
    assert response.status_code == 400 and "must be JSON" in response.get_data(as_text=True)
    shown = admin_server.http.get(f"/admin/certificates/{serial}", headers=AUTH).get_json()
    assert shown["status"] == "valid"


def test_finding7_a_json_reason_counts_whatever_the_content_type(admin_server: ScepTestServer, serial: str) -> None:
    response = admin_server.http.post(f"/admin/certificates/{serial}/revoke", data='{"reason": "keyCompromise"}',
                                      content_type="text/plain", headers=AUTH)
    assert response.status_code == 200 and response.get_json()["status"] == "revoked"
    shown = admin_server.http.get(f"/admin/certificates/{serial}", headers=AUTH).get_json()
    assert shown["revocation_reason"] == 1  # keyCompromise (RFC 5280 §5.3.1)


def test_finding7_no_body_or_null_still_revokes_as_unspecified(admin_server: ScepTestServer, serial: str) -> None:
    response = admin_server.http.post(f"/admin/certificates/{serial}/revoke", data="null",
                                      content_type="application/json", headers=AUTH)
    assert response.status_code == 200 and response.get_json()["status"] == "revoked"


# --- finding 11: the Bearer scheme ------------------------------------------------------------------------


@pytest.mark.parametrize("authorization", [TOKEN, f" {TOKEN}", f"Basic {TOKEN}", f"Token {TOKEN}", f"Bearer{TOKEN}",
                                           f"Bearer {TOKEN}x", "Bearer", "Bearer ", ""])
def test_finding11_token_without_the_bearer_scheme_is_refused(admin_server: ScepTestServer,
                                                               authorization: str) -> None:
    response = admin_server.http.get("/admin/certificates", headers={"Authorization": authorization})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert TOKEN not in response.get_data(as_text=True)


@pytest.mark.parametrize("authorization", [f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER {TOKEN}"])
def test_finding11_bearer_scheme_is_case_insensitive(admin_server: ScepTestServer, authorization: str) -> None:
    assert admin_server.http.get("/admin/certificates", headers={"Authorization": authorization}).status_code == 200


def test_finding11_token_comparison_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import hmac

    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert not bearer_token_matches(f"Basic {TOKEN}", TOKEN)  # compared even when the scheme is wrong
    assert bearer_token_matches(f"Bearer {TOKEN}", TOKEN)
    assert compared == [(TOKEN.encode(), TOKEN.encode())] * 2
