"""EmulatorServer: TLS, stop/start on the same port, sharing one emulator, settings for a server."""

from __future__ import annotations

import ipaddress
import socket
import time
from pathlib import Path

import pytest
import requests
import yaml
from cryptography import x509

from scep_server.config import load_config
from scep_server.emulator import EmulatorServer, IntuneEmulator

from .helpers import intune_headers, validate_body

OPENID = "/contoso.onmicrosoft.com/v2.0/.well-known/openid-configuration"
DISCOVERY = "/graph/v1.0/servicePrincipals/appId=0000000a-0000-0000-c000-000000000000/endpoints"


def _token(session: requests.Session, server: EmulatorServer, resource: str, client: tuple[str, str]) -> str:
    form = {"grant_type": "client_credentials", "client_id": client[0], "client_secret": client[1],
            "scope": f"{resource}/.default"}
    response = session.post(f"{server.url}/{server.emulator.tenant}/oauth2/v2.0/token", data=form, timeout=5)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def test_tls_is_verified_with_the_emulators_ca(server: EmulatorServer, session: requests.Session) -> None:
    assert session.get(f"{server.url}{OPENID}", timeout=5).status_code == 200
    assert session.get(f"https://localhost:{server.port}{OPENID}", timeout=5).status_code == 200
    with requests.Session() as system_store:
        system_store.trust_env = False
        with pytest.raises(requests.exceptions.SSLError):
            system_store.get(f"{server.url}{OPENID}", timeout=5)
    certificate = x509.load_pem_x509_certificate((server.ca_bundle.parent / "server.pem").read_bytes())
    sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert (server.ca_bundle.parent / "server-key.pem").stat().st_mode & 0o077 == 0


def test_stop_and_start_on_the_same_port(server: EmulatorServer, session: requests.Session) -> None:
    url = server.url
    assert session.get(f"{url}{OPENID}", timeout=5).ok  # leaves a keep-alive connection open
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 2 and not server.running
    with pytest.raises(requests.exceptions.ConnectionError):
        session.get(f"{url}{OPENID}", timeout=2)
    server.start()
    assert server.url == url and server.running
    assert session.get(f"{url}{OPENID}", timeout=5).ok
    server.start()  # already running: nothing happens


def test_a_silent_client_does_not_block_others(server: EmulatorServer, session: requests.Session) -> None:
    with socket.create_connection(("127.0.0.1", server.port)):
        assert session.get(f"{server.url}{OPENID}", timeout=5).ok


def test_two_servers_share_one_emulator(tmp_path: Path, session: requests.Session, server: EmulatorServer) -> None:
    client = server.register_client()
    # Same state_dir, so the same TLS CA: one session verifies both servers.
    with EmulatorServer(server.emulator, state_dir=tmp_path / "emulator") as moved:
        server.emulator.set_service_uri("ScepRequestValidationFEService", f"{moved.url}/intune/scep")
        graph_token = _token(session, server, f"{server.url}/graph", client)
        discovered = session.get(f"{server.url}{DISCOVERY}", headers={"Authorization": f"Bearer {graph_token}"},
                                 timeout=5).json()["value"]
        scep = next(e["uri"] for e in discovered if e["providerName"] == "ScepRequestValidationFEService")
        assert scep == f"{moved.url}/intune/scep"
        intune_token = _token(session, server, f"{server.url}/intune-api", client)
        answer = session.post(f"{scep}/ScepActions/validateRequest", json=validate_body("MIIB"),
                              headers=intune_headers(intune_token), timeout=5)
        assert answer.status_code == 200 and answer.json()["code"] == "CertificateRequestDecodingFailed"


def test_settings_configure_a_server(server: EmulatorServer, tmp_path: Path) -> None:
    client_id, secret = server.register_client("my-app", "my-secret")
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump({"intune": server.settings()}))
    intune = load_config(config_file, env={}).intune
    assert (intune.tenant, intune.client_id, intune.client_secret.resolve()) == (
        "contoso.onmicrosoft.com", "my-app", "my-secret")
    assert intune.authority == f"{server.url}/"
    assert intune.graph_resource_url == f"{server.url}/graph/"
    assert intune.intune_resource_url == f"{server.url}/intune-api/"
    assert intune.ca_bundle == str(server.ca_bundle)


def test_tls_files_are_reused_while_valid(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = EmulatorServer(state_dir=state).ca_bundle.read_bytes()
    assert EmulatorServer(state_dir=state).ca_bundle.read_bytes() == first
    (state / "server-key.pem").write_text("garbage")
    assert EmulatorServer(state_dir=state).ca_bundle.read_bytes() != first


def test_url_needs_a_start_and_an_explicit_port_is_used(tmp_path: Path) -> None:
    server = EmulatorServer(IntuneEmulator(), state_dir=tmp_path)
    with pytest.raises(RuntimeError):
        _ = server.url
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with EmulatorServer(port=port, state_dir=tmp_path) as fixed:
        assert fixed.url == f"https://127.0.0.1:{port}"
    server.stop()  # never started: nothing to do
