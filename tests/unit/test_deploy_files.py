"""The deployment examples in deploy/ agree with the server: the compose config loads, every secret it reads
is one the compose file mounts, and the proxies let through what the server accepts."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from scep_server.config import LimitsConfig, ServerConfig, load_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SECRETS_DIR = "/run/secrets/"


def _secret_files(raw: object) -> set[str]:
    """Every ``/run/secrets/NAME`` the configuration names, as NAME."""
    return set(re.findall(re.escape(SECRETS_DIR) + r"([\w.-]+)", yaml.safe_dump(raw)))


def test_the_compose_config_loads_and_its_secrets_are_mounted() -> None:
    config_path = DEPLOY / "compose" / "scep-server.yaml"
    config = load_config(config_path, env={})
    assert config.effective_database_url.startswith("postgresql+psycopg://")
    assert config.trusted_proxy_hops == 1 and config.log_format == "json"
    compose = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())
    service = compose["services"]["scep-server"]
    mounted = set(service["secrets"])
    wanted = _secret_files(yaml.safe_load(config_path.read_text()))
    assert wanted and wanted <= mounted, f"read but not mounted: {wanted - mounted}"
    assert mounted <= set(compose["secrets"]), "every mounted secret is declared"
    assert "/etc/scep-server/scep-server.yaml" in service["environment"]["SCEP_SERVER_CONFIG"]


def test_the_compose_stop_grace_period_outlasts_gunicorns_graceful_timeout() -> None:
    from scep_server.serve import GRACEFUL_TIMEOUT_SECONDS

    compose = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())
    grace = compose["services"]["scep-server"]["stop_grace_period"]
    assert int(grace.removesuffix("s")) > GRACEFUL_TIMEOUT_SECONDS


def _size(text: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([kKmM]?)[bB]?", text).groups()  # type: ignore[union-attr]
    return int(number) * {"": 1, "k": 1024, "m": 1024 * 1024}[unit.lower()]


def test_nginx_lets_through_the_longest_request_line_and_body_the_server_reads() -> None:
    conf = (DEPLOY / "nginx" / "scep-server.conf").read_text()
    buffers = re.search(r"large_client_header_buffers\s+\d+\s+(\w+);", conf)
    body = re.search(r"client_max_body_size\s+(\w+);", conf)
    assert buffers and body
    assert _size(buffers.group(1)) > LimitsConfig().request_line_bytes
    assert _size(body.group(1)) >= ServerConfig().max_body_bytes
    assert "X-Forwarded-For" in conf and "X-Request-Id" in conf


def test_caddy_lets_through_the_largest_body_the_server_reads() -> None:
    caddyfile = (DEPLOY / "caddy" / "Caddyfile").read_text()
    size = re.search(r"max_size\s+(\w+)", caddyfile)
    assert size and _size(size.group(1)) >= ServerConfig().max_body_bytes
    assert "X-Request-Id" in caddyfile
