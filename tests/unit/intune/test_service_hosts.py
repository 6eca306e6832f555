"""Finding 9: a Graph-discovered Intune service URL is only called on an allow-listed https host.

The double serves discovery, tokens and Intune on one port; its TLS certificate names both 127.0.0.1 and
localhost, so pointing discovery at ``https://localhost:PORT/`` reaches the very same double: the only
difference the client sees is the host name, which is what the allow-list decides on.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from scep_server.cli import main
from scep_server.config import IntuneConfig, load_config
from scep_server.errors import ConfigError, IntuneProtocolError
from scep_server.intune.discovery import host_allowed, service_url_problem

from .conftest import Harness
from .double import CLIENT_ID, INTUNE_APP_ID, INTUNE_RESOURCE, SECRET, TENANT, CloudDouble, Scripted

VALIDATE = "ScepActions/validateRequest"
MakeClient = Callable[..., Harness]


def _localhost(cloud: CloudDouble) -> str:
    return cloud.url.replace("127.0.0.1", "localhost")


# --- the rule --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("host", "allowed"), [
    ("manage.microsoft.com", True),
    ("fef.msua06.manage.microsoft.com", True),
    ("FEF.MSUA06.Manage.Microsoft.COM.", True),
    ("evilmanage.microsoft.com", False),
    ("manage.microsoft.com.evil.example", False),
    ("microsoft.com", False),
    ("127.0.0.1", False),
])
def test_finding9_default_allows_the_public_cloud_intune_hosts_only(host: str, allowed: bool) -> None:
    assert IntuneConfig().allowed_service_hosts == ("manage.microsoft.com",)
    assert host_allowed(host, IntuneConfig().allowed_service_hosts) is allowed


def test_finding9_ip_entries_match_only_themselves() -> None:
    assert host_allowed("127.0.0.1", ["127.0.0.1"])
    assert not host_allowed("x.127.0.0.1", ["127.0.0.1"])
    assert not host_allowed("127.0.0.10", ["127.0.0.1"])


@pytest.mark.parametrize(("uri", "expected"), [
    ("https://fef.msua06.manage.microsoft.com/ScepRequestValidationFEService", None),
    ("https://fef.msua06.manage.microsoft.com:443/x", None),
    ("http://fef.msua06.manage.microsoft.com/x", "does not use https"),
    ("https://attacker.example/x", "host attacker.example is not in intune.allowed_service_hosts"),
    ("https://fef.manage.microsoft.com@attacker.example/x", "not a plain https URL"),
    ("https://attacker.example\\@fef.manage.microsoft.com/x", "not a plain https URL"),
    ("https://fef.manage.microsoft.com:99999/x", "not a valid URL"),
    ("https://fef.manage.micros\u043eft.com/x", "not a plain https URL"),
    ("https:///x", "not a plain https URL"),
])
def test_finding9_service_url_problem(uri: str, expected: str | None) -> None:
    problem = service_url_problem(uri, ["manage.microsoft.com"])
    assert problem == expected if expected is None else expected in (problem or "")


# --- the client ------------------------------------------------------------------------------------------


def test_finding9_discovered_host_not_allowlisted(
    make_client: MakeClient, cloud: CloudDouble, csr_der: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    cloud.use_intune_at(_localhost(cloud))
    harness = make_client(allowed_service_hosts=("127.0.0.1",))
    with pytest.raises(IntuneProtocolError) as info:
        harness.client.validate_request("tx-1", csr_der)
    assert "host localhost" in info.value.detail and "intune.allowed_service_hosts" in info.value.detail
    assert "ScepRequestValidationFEService" in info.value.detail
    assert cloud.calls == []  # neither the token nor the CSR went there
    assert cloud.token_requests[f"{INTUNE_RESOURCE}.default"] == 0  # not even fetched
    assert "refusing the ScepRequestValidationFEService URL" in caplog.text


def test_finding9_allowlisted_host_is_called(make_client: MakeClient, cloud: CloudDouble, csr_der: bytes) -> None:
    cloud.use_intune_at(_localhost(cloud))
    harness = make_client(allowed_service_hosts=("localhost",))
    assert harness.client.validate_request("tx-1", csr_der).succeeded
    assert len(cloud.calls) == 1 and cloud.calls[0]["headers"]["Authorization"].startswith("Bearer ")


def test_finding9_default_config_refuses_a_discovered_test_host(
    make_client: MakeClient, cloud: CloudDouble, csr_der: bytes
) -> None:
    harness = make_client(allowed_service_hosts=IntuneConfig().allowed_service_hosts)
    with pytest.raises(IntuneProtocolError, match=r"host 127\.0\.0\.1 is not in intune\.allowed_service_hosts"):
        harness.client.download_revocation_requests()
    assert cloud.calls == []


def test_finding9_plain_http_service_is_refused_by_name(
    make_client: MakeClient, cloud: CloudDouble, csr_der: bytes
) -> None:
    cloud.services["ScepRequestValidationFEService"] = cloud.url.replace("https://", "http://") + "scep"
    with pytest.raises(IntuneProtocolError, match="does not use https"):
        make_client().client.validate_request("tx-1", csr_der)
    assert cloud.calls == []


def test_finding9_redirects_from_an_allowed_host_are_not_followed(
    make_client: MakeClient, cloud: CloudDouble, csr_der: bytes
) -> None:
    elsewhere = f"{_localhost(cloud)}scep/{VALIDATE}"
    cloud.script[VALIDATE].append(Scripted(307, {}, headers={"Location": elsewhere}))
    with pytest.raises(IntuneProtocolError, match="HTTP 307"):
        make_client().client.validate_request("tx-1", csr_der)
    assert len(cloud.calls) == 1


def test_finding9_refusal_is_not_retried_and_keeps_discovery(
    make_client: MakeClient, cloud: CloudDouble, csr_der: bytes
) -> None:
    cloud.use_intune_at(_localhost(cloud))
    harness = make_client()
    for _ in range(3):
        with pytest.raises(IntuneProtocolError):
            harness.client.validate_request("tx-1", csr_der)
    assert harness.sleeps == [] and len(cloud.discovery_requests) == 1


# --- configuration ---------------------------------------------------------------------------------------


def test_finding9_allowed_service_hosts_from_yaml(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("intune: {allowed_service_hosts: ['*.Manage.Microsoft.US', manage.microsoft.com.]}\n")
    assert load_config(path, env={}).intune.allowed_service_hosts == ("manage.microsoft.us", "manage.microsoft.com")


@pytest.mark.parametrize("value", ["manage.microsoft.com", "[]", "['https://manage.microsoft.com']",
                                   "['manage.microsoft.com:443']", "['manage.microsoft.com/x']"])
def test_finding9_allowed_service_hosts_must_be_host_names(tmp_path: Path, value: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"intune: {{allowed_service_hosts: {value}}}\n")
    with pytest.raises(ConfigError, match="intune.allowed_service_hosts"):
        load_config(path, env={})


# --- `scep-server intune check` --------------------------------------------------------------------------


def _check_config(tmp_path: Path, cloud: CloudDouble, allowed: list[str]) -> Path:
    intune = {"tenant": TENANT, "client_id": CLIENT_ID, "client_secret": SECRET, "authority": cloud.url,
              "graph_resource_url": cloud.url, "intune_resource_url": INTUNE_RESOURCE,
              "intune_app_id": INTUNE_APP_ID, "ca_bundle": str(cloud.pki.ca_bundle),
              "allowed_service_hosts": allowed}
    path = tmp_path / "check.yaml"
    path.write_text(f"data_dir: {tmp_path / 'var'}\nintune: {json.dumps(intune)}\n")
    return path


def test_finding9_intune_check_reports_a_refused_host(
    tmp_path: Path, cloud: CloudDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    cloud.use_intune_at(_localhost(cloud))
    assert main(["--config", str(_check_config(tmp_path, cloud, ["127.0.0.1"])), "intune", "check"]) == 1
    out, err = capsys.readouterr()
    assert "ScepRequestValidationFEService: https://localhost:" in out and "REFUSED" in out
    assert "host localhost is not in intune.allowed_service_hosts (127.0.0.1)" in err
    assert cloud.calls == []


def test_finding9_intune_check_passes_on_allowed_hosts(
    tmp_path: Path, cloud: CloudDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(_check_config(tmp_path, cloud, ["127.0.0.1"])), "intune", "check"]) == 0
    out = capsys.readouterr().out
    assert "ScepRequestValidationFEService: https://127.0.0.1:" in out and "REFUSED" not in out
    assert "PkiConnectorFEService: https://127.0.0.1:" in out


def test_finding9_intune_check_reports_a_missing_service(
    tmp_path: Path, cloud: CloudDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    cloud.services = {"ScepRequestValidationFEService": f"{cloud.url}scep"}
    assert main(["--config", str(_check_config(tmp_path, cloud, ["127.0.0.1"])), "intune", "check"]) == 1
    assert "PkiConnectorFEService: MISSING" in capsys.readouterr().err
