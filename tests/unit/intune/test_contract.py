"""The Intune contract: ``ChallengeSpec``, what a profile asks of a device, in Python and in JSON."""

from __future__ import annotations

from typing import Any

import pytest

from scep_server.intune.contract import ChallengeSpec

RICH = ChallengeSpec(
    subject="CN=alice@contoso.com,OU=Sales,O=Contoso",
    sans=(("email", "alice@contoso.com"), ("upn", "alice@contoso.onmicrosoft.com")),
)


def test_spec_json_round_trip() -> None:
    assert ChallengeSpec.from_json(RICH.to_json()) == RICH
    assert RICH.to_json()["sans"][1] == {"type": "upn", "value": "alice@contoso.onmicrosoft.com"}


def test_spec_defaults_give_fresh_ids() -> None:
    one, two = ChallengeSpec(subject="CN=a"), ChallengeSpec(subject="CN=a")
    assert len({one.device_id, two.device_id, one.certificate_request_id, two.certificate_request_id}) == 4


def test_eku_names_become_oids() -> None:
    spec = ChallengeSpec(subject="CN=a", extended_key_usage=["client_auth", "ipsec_tunnel"])  # type: ignore[arg-type]
    assert spec.extended_key_usage == ("1.3.6.1.5.5.7.3.2", "1.3.6.1.5.5.7.3.6")


@pytest.mark.parametrize("changes", [
    {"subject": "not a name"},
    {"sans": [("ip", "10.0.0.1")]},
    {"sans": [("email", "")]},
    {"sans": ["email"]},
    {"key_usage": ["sign_everything"]},
    {"key_usage": "digital_signature"},
    {"extended_key_usage": ["client-authentication"]},
    {"key_size": "2048"},
    {"key_size": True},
    {"hash": "md5"},
    {"validity_days": 0},
    {"device_id": ""},
])
def test_spec_rejects_malformed_values(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ChallengeSpec(**{"subject": "CN=a", **changes})


@pytest.mark.parametrize("data", [
    [],
    {"sans": []},
    {"subject": "CN=a", "colour": "blue"},
    {"subject": "CN=a", "sans": {}},
    {"subject": "CN=a", "sans": [{"type": "email"}]},
])
def test_spec_from_json_rejects_malformed_objects(data: Any) -> None:
    with pytest.raises(ValueError):
        ChallengeSpec.from_json(data)
