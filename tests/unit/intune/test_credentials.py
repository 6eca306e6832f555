"""When the app's credential expires: the certificate file, or the secret's endDateTime as Graph lists it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from scep_server.config import IntuneConfig, SecretSource
from scep_server.errors import ConfigError, IntuneProtocolError
from scep_server.intune.credentials import (
    AppCredential,
    app_credential_kind,
    application_url,
    certificate_not_after,
    secret_not_after_from,
)

from .double import ThrowawayPKI

SECRET = "Abc~the-rest-of-the-secret"


def _password(hint: str, end: str) -> dict[str, Any]:
    return {"keyId": "k", "displayName": "d", "hint": hint, "secretText": None, "endDateTime": end}


def test_the_configured_secret_is_found_by_its_hint() -> None:
    body = {"passwordCredentials": [_password("Xyz", "2026-01-01T00:00:00Z"),
                                    _password("Abc", "2027-03-04T05:06:07.1234567Z")]}
    assert secret_not_after_from(body, SECRET) == datetime(2027, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)


def test_of_two_matching_secrets_the_earlier_expiry_is_reported() -> None:
    body = {"passwordCredentials": [_password("Abc", "2028-01-01T00:00:00Z"), _password("Abc", "2027-01-01T00:00:00Z")]}
    assert secret_not_after_from(body, SECRET) == datetime(2027, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(("body", "message"), [
    ({}, "without a 'passwordCredentials' list"),
    ([], "without a 'passwordCredentials' list"),
    ({"passwordCredentials": []}, "none of the app's 0 client secrets"),
    ({"passwordCredentials": [_password("Xyz", "2026-01-01T00:00:00Z")]}, "none of the app's 1 client secrets"),
    ({"passwordCredentials": [{"hint": "Abc"}]}, "has no endDateTime"),
    ({"passwordCredentials": [_password("Abc", "next tuesday")]}, "is not ISO 8601"),
])
def test_unusable_answers_say_why(body: Any, message: str) -> None:
    with pytest.raises(IntuneProtocolError, match=message):
        secret_not_after_from(body, SECRET)


def test_a_time_without_an_offset_is_utc() -> None:
    body = {"passwordCredentials": [_password("Abc", "2027-01-01T00:00:00")]}
    assert secret_not_after_from(body, SECRET) == datetime(2027, 1, 1, tzinfo=UTC)


def test_the_application_is_addressed_by_its_client_id() -> None:
    config = IntuneConfig(tenant="t", client_id="1111-2222", graph_resource_url="https://graph.example/")
    assert application_url(config) == "https://graph.example/v1.0/applications(appId='1111-2222')"


def test_which_credential_the_app_uses(pki: ThrowawayPKI) -> None:
    secret = IntuneConfig(tenant="t", client_id="c", client_secret=SecretSource(value="s"))
    assert app_credential_kind(secret) == AppCredential("client_secret")
    certificate = IntuneConfig(tenant="t", client_id="c", client_secret=SecretSource(value="s"),
                               client_certificate=str(pki.app_cert_path), client_key=str(pki.app_key_path))
    assert app_credential_kind(certificate) == AppCredential("client_certificate", str(pki.app_cert_path))
    assert app_credential_kind(IntuneConfig()) is None
    assert app_credential_kind(IntuneConfig(tenant="t", client_id="c", client_secret=SecretSource())) is None


def test_certificate_not_after(pki: ThrowawayPKI, tmp_path: Path) -> None:
    assert certificate_not_after(str(pki.app_cert_path)) == pki.app_certificate.not_valid_after_utc
    with pytest.raises(ConfigError, match="cannot read"):
        certificate_not_after(str(tmp_path / "missing.pem"))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(ConfigError, match="is not a PEM certificate"):
        certificate_not_after(str(garbage))
