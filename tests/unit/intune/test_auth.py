"""The Entra ID app's credentials and its MSAL application (intune-api.md §2), without the network."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from scep_server.config import IntuneConfig, SecretSource
from scep_server.errors import ConfigError, IntuneAuthError
from scep_server.intune.auth import AppTokens, app_credential, normalise_scope, secret_strings
from scep_server.intune.transport import build_session

from .double import CLIENT_ID, SECRET, TENANT, CloudDouble, ThrowawayPKI

SCOPE = "https://api.manage.microsoft.com/.default"


def _config(**overrides: object) -> IntuneConfig:
    values: dict[str, object] = {"tenant": TENANT, "client_id": CLIENT_ID, "client_secret": SecretSource(value=SECRET)}
    return IntuneConfig(**{**values, **overrides})  # type: ignore[arg-type]


class FakeApp:
    """Stands in for msal.ConfidentialClientApplication and records how it was built."""

    built: list[dict[str, object]] = []

    def __init__(self, client_id: str, **kwargs: object) -> None:
        FakeApp.built.append({"client_id": client_id, **kwargs})
        self.dropped = 0

    def acquire_token_for_client(self, scopes: list[str]) -> dict[str, object]:
        return {"access_token": f"token-for-{scopes[0]}"}

    def remove_tokens_for_client(self) -> None:
        self.dropped += 1


@pytest.fixture
def fake_msal(monkeypatch: pytest.MonkeyPatch) -> type[FakeApp]:
    FakeApp.built = []
    monkeypatch.setattr("scep_server.intune.auth.msal.ConfidentialClientApplication", FakeApp)
    return FakeApp


def test_scopes_are_normalised() -> None:
    assert normalise_scope("https://api.manage.microsoft.com/") == "https://api.manage.microsoft.com/.default"
    assert normalise_scope("https://api.manage.microsoft.com") == "https://api.manage.microsoft.com/.default"
    assert normalise_scope("https://graph.microsoft.us//") == "https://graph.microsoft.us/.default"


def test_the_secret_is_the_credential() -> None:
    assert app_credential(_config()) == SECRET


def test_missing_credentials_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="AAD_APP_KEY"):
        app_credential(_config(client_secret=SecretSource()))
    with pytest.raises(ConfigError, match="TENANT and AAD_APP_ID"):
        app_credential(_config(tenant=None))


def test_certificate_credential_carries_key_certificate_and_passphrase(pki: ThrowawayPKI) -> None:
    credential = app_credential(_config(
        client_certificate=str(pki.app_cert_path), client_key=str(pki.app_encrypted_key_path),
        client_key_password=SecretSource(value=pki.app_key_password),
    ))
    assert isinstance(credential, dict)
    assert credential["public_certificate"] == pki.app_cert_path.read_text()
    assert credential["private_key"] == pki.app_encrypted_key_path.read_text()
    assert credential["passphrase"] == pki.app_key_password


def test_bad_key_password_is_a_config_error(pki: ThrowawayPKI) -> None:
    config = _config(client_certificate=str(pki.app_cert_path), client_key=str(pki.app_encrypted_key_path),
                     client_key_password=SecretSource(value="wrong"))
    with pytest.raises(ConfigError, match="client_key") as caught:
        app_credential(config)
    assert "wrong" not in str(caught.value)


def test_unreadable_or_swapped_files_are_config_errors(pki: ThrowawayPKI, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        app_credential(_config(client_certificate=str(tmp_path / "absent.pem"), client_key=str(pki.app_key_path)))
    with pytest.raises(ConfigError, match="is not a PEM certificate"):
        app_credential(_config(client_certificate=str(pki.app_key_path), client_key=str(pki.app_key_path)))


def test_secret_strings_cover_the_percent_encoded_proxy_password() -> None:
    config = _config(proxy_password=SecretSource(value="p@ss word"))
    assert secret_strings(config, SECRET) == (SECRET, "p@ss word", "p%40ss%20word")


def test_redact_masks_every_secret(fake_msal: type[FakeApp]) -> None:
    tokens = AppTokens(_config(proxy_password=SecretSource(value="pw/1")), requests.Session(), [SCOPE])
    assert tokens.redact(f"failed with {SECRET} via http://u:pw%2F1@proxy and pw/1") == (
        "failed with *** via http://u:***@proxy and ***"
    )


@pytest.mark.parametrize(("authority", "instance_discovery"), [
    ("https://login.microsoftonline.us/", None),  # a Microsoft cloud: MSAL may look the authority up
    ("https://127.0.0.1:8443/", False),  # anything else (the emulator): it must not ask Microsoft
])
def test_one_msal_app_built_on_first_use(
    fake_msal: type[FakeApp], authority: str, instance_discovery: bool | None
) -> None:
    session = requests.Session()
    tokens = AppTokens(_config(authority=authority), session, [SCOPE])
    assert fake_msal.built == []
    assert tokens.acquire(SCOPE, "activity") == {"access_token": f"token-for-{SCOPE}"}
    tokens.acquire(SCOPE, "activity")
    tokens.drop("activity")
    (options,) = fake_msal.built
    assert options["authority"] == f"{authority}{TENANT}"
    assert options["http_client"] is session and options["client_credential"] == SECRET
    assert options.get("instance_discovery") is instance_discovery


def test_an_unusable_authority_is_an_auth_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise ValueError(f"Unable to get authority configuration ({SECRET})\nsecond line")

    monkeypatch.setattr("scep_server.intune.auth.msal.ConfidentialClientApplication", refuse)
    tokens = AppTokens(_config(), requests.Session(), [SCOPE])
    with pytest.raises(IntuneAuthError, match="intune.authority") as caught:
        tokens.acquire(SCOPE, "activity-1")
    assert caught.value.activity_id == "activity-1"
    assert SECRET not in str(caught.value) and "second line" not in str(caught.value)


def test_real_msal_against_the_double(cloud: CloudDouble) -> None:
    config = _config(authority=cloud.url, ca_bundle=str(cloud.pki.ca_bundle))
    session = build_session(config)
    scope = f"{cloud.url}.default"
    tokens = AppTokens(config, session, [scope])
    first = tokens.acquire(scope, "activity")
    assert first["access_token"] == tokens.acquire(scope, "activity")["access_token"]  # cached
    assert cloud.token_requests == {scope: 1}
    tokens.drop("activity")
    tokens.acquire(scope, "activity")
    assert cloud.token_requests == {scope: 2}
