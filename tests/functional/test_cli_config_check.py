"""Configuration mistakes through the real console script: ``scep-server --config F config check`` (and
``serve`` where it reads the value itself) exits 2 with one stderr line per problem, naming the key and
its value, and never a traceback; a sound configuration gets a short summary; ``init`` and ``serve``
refuse what they would refuse before they write anything."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.processes import free_port

SCEP_SERVER = Path(sys.executable).parent / "scep-server"
CHALLENGE_ENV = "CORP_CHALLENGE"
# What the processes may see of this one: no SCEP_SERVER_*, no secrets, no Microsoft variables.
PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH")


def _base(data_dir: Path) -> dict[str, Any]:
    return {
        "dev": True,
        "data_dir": str(data_dir),
        "ca": {"name": "check-ca", "key_size": 2048},
        "profiles": {"corp": {"challenge": {"type": "static", "secret": {"env": CHALLENGE_ENV}}}},
    }


@dataclass(frozen=True)
class Mistake:
    """A configuration (a change to the base one, or a file's whole text) and the problems it must give:
    one (key, shown value) per stderr line."""

    name: str
    expected: tuple[tuple[str, str], ...]
    change: Mapping[str, Any] = field(default_factory=dict)
    text: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    serve_too: bool = False


MISTAKES = [
    Mistake("an int as a word", (("profiles.corp.validity_days", '"thirty"'),),
            {"profiles": {"corp": {"validity_days": "thirty"}}}),
    Mistake("an int as a word in the ca", (("ca.key_size", '"big"'),), {"ca": {"key_size": "big"}}),
    Mistake("workers from the environment", (("SCEP_SERVER_WORKERS", '"two"'),),
            env={"SCEP_SERVER_WORKERS": "two"}, serve_too=True),
    Mistake("threads from the environment", (("SCEP_SERVER_THREADS", '"0"'),),
            env={"SCEP_SERVER_THREADS": "0"}, serve_too=True),
    Mistake("a bind without a port", (("SCEP_SERVER_BIND", '"localhost"'),),
            env={"SCEP_SERVER_BIND": "localhost"}, serve_too=True),
    Mistake("a log level from the environment", (("SCEP_SERVER_LOG_LEVEL", '"LOUD"'),),
            env={"SCEP_SERVER_LOG_LEVEL": "LOUD"}, serve_too=True),
    Mistake("a log level in the file", (("log_level", '"verbose"'),), {"log_level": "verbose"}),
    Mistake("a log format from the environment", (("SCEP_SERVER_LOG_FORMAT", '"xml"'),),
            env={"SCEP_SERVER_LOG_FORMAT": "xml"}, serve_too=True),
    Mistake("an int from the environment", (("SCEP_SERVER_MAX_BODY_BYTES", '"lots"'),),
            env={"SCEP_SERVER_MAX_BODY_BYTES": "lots"}),
    Mistake("digits and letters", (("intune.max_retries", '"3x"'),), {"intune": {"max_retries": "3x"}}),
    Mistake("a port as a word", (("intune.proxy_port", '"abc"'),), {"intune": {"proxy_port": "abc"}}),
    Mistake("a port from Microsoft's variable", (("PROXY_PORT", '"abc"'),), env={"PROXY_PORT": "abc"}),
    Mistake("a port out of range", (("intune.proxy_port", "70000"),), {"intune": {"proxy_port": 70000}}),
    Mistake("a database URL whose port is no number", (("database_url", "is not a database URL"),),
            {"database_url": "postgresql://u:p@[::1"}),
    Mistake("a boolean as a string", (("profiles.corp.allow_des", '"yes"'),),
            {"profiles": {"corp": {"allow_des": "yes"}}}),
    Mistake("dev as a string", (("dev", '"true"'),), {"dev": "true"}),
    Mistake("a boolean as an int", (("limits.header_fields", "true"),), {"limits": {"header_fields": True}}),
    Mistake("a float for an int", (("trusted_proxy_hops", "2.5"),), {"trusted_proxy_hops": 2.5}),
    Mistake("a number for a string", (("intune.tenant", "42"),), {"intune": {"tenant": 42}}),
    Mistake("a list as a scalar", (("profiles.corp.allowed_key_types", '"rsa"'),),
            {"profiles": {"corp": {"allowed_key_types": "rsa"}}}),
    Mistake("a host list as a scalar", (("intune.allowed_service_hosts", '"manage.microsoft.com"'),),
            {"intune": {"allowed_service_hosts": "manage.microsoft.com"}}),
    Mistake("a section as a scalar", (("ca", "5"),), {"ca": 5}),
    Mistake("a challenge as a scalar", (("profiles.corp.challenge", '"static"'),),
            {"profiles": {"corp": {"challenge": "static"}}}),
    Mistake("a secret as a number", (("profiles.corp.challenge.secret", "not a number"),),  # never its value
            {"profiles": {"corp": {"challenge": {"secret": 5}}}}),
    Mistake("an enum value", (("ca.key_type", '"dsa"'),), {"ca": {"key_type": "dsa"}}),
    Mistake("a timeout with a unit", (("intune.connect_timeout", '"5s"'),), {"intune": {"connect_timeout": "5s"}}),
    Mistake("below the range", (("failure_budget.max_failures", "-1"),), {"failure_budget": {"max_failures": -1}}),
    Mistake("zero days", (("profiles.corp.validity_days", "0"),), {"profiles": {"corp": {"validity_days": 0}}}),
    Mistake("a hash", (("profiles.corp.hash", '"md5"'),), {"profiles": {"corp": {"hash": "md5"}}}),
    Mistake("a URL scheme", (("public_url", '"ftp://scep.example"'),), {"public_url": "ftp://scep.example"}),
    Mistake("a distinguished name", (("ca.subject", '"no equals sign"'),), {"ca": {"subject": "no equals sign"}}),
    Mistake("unknown keys everywhere", (
        ("unknown key profiles.corp.validty_days", "did you mean validity_days?"),
        ("unknown key ca.key_sise", "did you mean key_size?"),
        ("unknown key limts", "did you mean limits?"),
    ), {"limts": {}, "ca": {"key_sise": 2048}, "profiles": {"corp": {"validty_days": 3}}}),
    Mistake("two mistakes in one profile", (
        ("profiles.corp.validity_days", '"thirty"'), ("profiles.corp.max_sans", "-1"),
    ), {"profiles": {"corp": {"validity_days": "thirty", "max_sans": -1}}}),
    Mistake("not a mapping", (("must hold a mapping of settings", '["a", "b"]'),), text="- a\n- b\n"),
    Mistake("not YAML", (("is not valid YAML", "line 2, column 1"),), text="profiles: [unclosed\n"),
]


def _environment(extra: Mapping[str, str]) -> dict[str, str]:
    env = {name: os.environ[name] for name in PASSED_ENV if name in os.environ}
    return {**env, CHALLENGE_ENV: "check-challenge", **extra}


def _write(tmp_path: Path, change: Mapping[str, Any] | None = None, *, text: str | None = None) -> Path:
    """The base configuration with ``change`` merged in (or ``text`` as it is), in ``tmp_path/scep.yaml``."""
    path = tmp_path / "scep.yaml"
    if text is None:
        text = yaml.safe_dump(_merged(_base(tmp_path / "var"), change or {}))
    path.write_text(text, encoding="utf-8")
    return path


def _merged(base: dict[str, Any], change: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in change.items():
        both_mappings = isinstance(value, Mapping) and isinstance(merged.get(key), dict)
        merged[key] = _merged(merged[key], value) if both_mappings else value
    return merged


def run_cli(tmp_path: Path, *args: str, env: Mapping[str, str] = {}) -> subprocess.CompletedProcess[str]:
    assert SCEP_SERVER.is_file(), f"the console script {SCEP_SERVER} is not installed (make deps)"
    return subprocess.run([str(SCEP_SERVER), *args], cwd=tmp_path, env=_environment(env), capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL, check=False)


def _assert_reported(done: subprocess.CompletedProcess[str], expected: tuple[tuple[str, str], ...]) -> None:
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == len(expected), done.stderr
    assert all(line.startswith("scep-server: ") for line in lines), done.stderr
    for key, value in expected:
        assert [line for line in lines if key in line and value in line], f"no line names {key} and {value}: {lines}"


def test_there_are_at_least_twenty_mistakes() -> None:
    assert len(MISTAKES) >= 20 and len({m.name for m in MISTAKES}) == len(MISTAKES)


@pytest.mark.parametrize("mistake", MISTAKES, ids=lambda m: m.name)
def test_config_check_reports_each_mistake_on_one_line(tmp_path: Path, mistake: Mistake) -> None:
    config = _write(tmp_path, mistake.change, text=mistake.text)
    _assert_reported(run_cli(tmp_path, "--config", str(config), "config", "check", env=mistake.env),
                     mistake.expected)


@pytest.mark.parametrize("mistake", [m for m in MISTAKES if m.serve_too], ids=lambda m: m.name)
def test_serve_reports_each_mistake_before_it_starts(tmp_path: Path, mistake: Mistake) -> None:
    config = _write(tmp_path, mistake.change, text=mistake.text)
    bind = [] if "SCEP_SERVER_BIND" in mistake.env else ["--bind", f"127.0.0.1:{free_port()}"]
    done = run_cli(tmp_path, "--config", str(config), "serve", "--init-if-missing", *bind, env=mistake.env)
    _assert_reported(done, mistake.expected)
    assert not (tmp_path / "var").exists()  # nothing written


def test_a_sound_configuration_gets_a_summary(tmp_path: Path) -> None:
    base = _base(tmp_path / "var")
    base["database_url"] = "postgresql+psycopg://scep:hunter2@db.example/scep?password=hunter2&sslmode=require"
    base["profiles"]["mdm"] = {"challenge": {"type": "intune", "on_validator_unavailable": "pending"}}
    base["intune"] = {"tenant": "contoso.onmicrosoft.com", "client_id": "app", "client_secret": "app-secret"}
    (tmp_path / "scep.yaml").write_text(yaml.safe_dump(base), encoding="utf-8")
    done = run_cli(tmp_path, "config", "check", "--config", "scep.yaml")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "scep.yaml: OK"
    rows = dict(line.strip().split(":", 1) for line in done.stdout.splitlines()[1:])
    assert rows["profile corp"].strip() == "static"
    assert rows["profile mdm"].strip() == "intune (pending while it is unavailable)"
    assert rows["database"].strip() == "postgresql+psycopg://scep:***@db.example/scep?sslmode=require"
    assert rows["data dir"].strip() == str(tmp_path / "var")
    assert "none yet" in rows["CA"]
    assert "hunter2" not in done.stdout + done.stderr and not (tmp_path / "var").exists()


def test_config_check_loads_an_existing_ca(tmp_path: Path) -> None:
    config = _write(tmp_path)
    assert run_cli(tmp_path, "--config", str(config), "init").returncode == 0
    done = run_cli(tmp_path, "--config", str(config), "config", "check")
    assert done.returncode == 0, done.stderr
    assert "CN=scep-server Dev CA,O=scep-server, SHA-256 " in done.stdout
    done = run_cli(tmp_path, "--config", str(config), "config", "check", env={"SCEP_CA_PASSPHRASE": "later"})
    assert done.returncode == 0, done.stderr
    assert b"ENCRYPTED" not in (tmp_path / "var" / "ca" / "ca.key").read_bytes()  # serve would; a check does not
    (tmp_path / "var" / "ca" / "ra.pem").write_text("not a certificate\n")
    done = run_cli(tmp_path, "--config", str(config), "config", "check")
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1 and "ra.pem" in done.stderr, done.stderr


def test_every_preflight_problem_at_once_and_nothing_written(tmp_path: Path) -> None:
    """What the container's ``init`` used to get wrong: no passphrase and no challenge secret, outside dev."""
    config = _write(tmp_path, {"dev": False})
    env = {CHALLENGE_ENV: "", "SCEP_SERVER_DATABASE_URL": "mysql+nosuchdriver://db/scep"}
    for command in (["config", "check"], ["init"], ["serve", "--init-if-missing"]):
        done = run_cli(tmp_path, "--config", str(config), *command, env=env)
        action = "init" if command == ["init"] else "serve"
        _assert_reported(done, (
            (f"{action} keeps the CA and RA keys encrypted at rest", "SCEP_CA_PASSPHRASE"),
            ("profile 'corp': no static challenge secret", CHALLENGE_ENV),
            ("database_url mysql+nosuchdriver://db/scep", "no database driver"),
        ))
        assert not (tmp_path / "var").exists()


def test_init_with_a_passphrase_and_a_secret_goes_ahead(tmp_path: Path) -> None:
    config = _write(tmp_path, {"dev": False})
    done = run_cli(tmp_path, "--config", str(config), "init", env={"SCEP_CA_PASSPHRASE": "a passphrase"})
    assert done.returncode == 0, done.stderr
    assert b"ENCRYPTED" in (tmp_path / "var" / "ca" / "ca.key").read_bytes()


def test_with_emulator_the_port_is_checked_and_intune_credentials_are_not(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        change = {"intune": {"tenant": "t", "client_id": "a", "authority": f"https://127.0.0.1:{port}/",
                             "ca_bundle": str(tmp_path / "emulator" / "ca.pem")},
                  "profiles": {"mdm": {"challenge": {"type": "intune"}}}}
        config = _write(tmp_path, change)
        done = run_cli(tmp_path, "--config", str(config), "config", "check", "--with-emulator")
        _assert_reported(done, ((f"cannot listen on port {port} of 127.0.0.1", "intune.authority"),))
        done = run_cli(tmp_path, "--config", str(config), "config", "check")
        _assert_reported(done, (("Intune needs intune.client_secret", "AAD_APP_KEY"), ("intune.ca_bundle", "no file")))
    done = run_cli(tmp_path, "--config", str(config), "config", "check", "--with-emulator")
    assert done.returncode == 0, done.stderr
