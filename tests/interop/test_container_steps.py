"""The container's steps without a container engine (none runs here): read from the Dockerfile, then done.

- the build stage's ``pip install`` line, run as written (into a fresh environment instead of
  ``--prefix``) on the files its COPY lines name, with the same interpreter version;
- the final stage's ENV, then the ENTRYPOINT and CMD, run as the image's unprivileged user (uid 10001)
  in a data directory that user owns, on a SCEP_SERVER_BIND other than the image's default;
- the HEALTHCHECK command, which must find the server there (and fail once it is gone).

So a Dockerfile whose install misses the lock, whose default command cannot start, or whose health
check asks a fixed port fails here.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.env import require_executables
from tests.support.processes import free_port, http_get, spawn, stop_group

pytestmark = pytest.mark.interop

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
IMAGE_UID = 10001
SETPRIV = "/usr/bin/setpriv"
SYSTEM_PYTHON = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"


@dataclass
class Stage:
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, name: str) -> list[str]:
        return [argument for instruction, argument in self.instructions if instruction == name]

    def last(self, name: str) -> str:
        found = self.all(name)
        assert found, f"the Dockerfile's stage has no {name}"
        return found[-1]


def parse_dockerfile(text: str) -> list[Stage]:
    """The stages of a Dockerfile as (instruction, argument) lists, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", text)
    stages: list[Stage] = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, argument = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append(Stage())
        assert stages, "an instruction before FROM"
        stages[-1].instructions.append((instruction.upper(), argument.strip()))
    return stages


def env_pairs(argument: str) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in shlex.split(argument))


def exec_form(argument: str) -> list[str]:
    value = json.loads(argument)
    assert isinstance(value, list) and all(isinstance(part, str) for part in value), argument
    return value


def healthcheck_command(argument: str) -> list[str]:
    """The command of ``HEALTHCHECK [--options] CMD ...`` (exec form, or shell form run by /bin/sh -c)."""
    _, _, command = argument.partition("CMD ")
    command = command.strip()
    return exec_form(command) if command.startswith("[") else ["/bin/sh", "-c", command]


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    found = parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))
    assert len(found) == 2, "a build stage and the runtime stage"
    return found


@pytest.fixture(scope="module")
def image_root() -> Iterator[Path]:
    """A directory the image's user can traverse (pytest's own tmp dirs are private to their owner)."""
    root = Path(tempfile.mkdtemp(prefix="scep-container-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def installed(stages: list[Stage], image_root: Path) -> Path:
    """The build stage's files and pip install, into a fresh environment; its bin directory."""
    require_executables(SYSTEM_PYTHON)
    build = stages[0]
    source = image_root / "src"
    source.mkdir()
    for copy in build.all("COPY"):
        *names, _ = shlex.split(copy)
        for name in names:
            origin = REPO / name
            (shutil.copytree if origin.is_dir() else shutil.copy)(origin, source / origin.name)
    install = next(run for run in build.all("RUN") if "pip install" in run)
    arguments = shlex.split(install)
    assert arguments[:2] == ["pip", "install"], install
    assert any(arg == "-c" or arg.startswith("--constraint") for arg in arguments), "the lock is used"
    environment = image_root / "usr-local"
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", str(environment)], check=True, timeout=300)
    # The same arguments, except where they go: the environment instead of --prefix, and the download
    # cache kept (it changes nothing installed, only how often the same wheels are fetched).
    kept = [arg for arg in arguments[2:] if not arg.startswith("--prefix") and arg != "--no-cache-dir"]
    done = subprocess.run(
        [str(environment / "bin" / "pip"), "install", "--quiet", *kept],
        cwd=source, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return environment / "bin"


def _as_image_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv  # already unprivileged
    require_executables(SETPRIV)
    return [SETPRIV, f"--reuid={IMAGE_UID}", f"--regid={IMAGE_UID}", "--clear-groups", "--", *argv]


def test_the_image_steps_install_start_unprivileged_and_pass_the_healthcheck(
    stages: list[Stage], installed: Path, image_root: Path
) -> None:
    runtime = stages[1]
    assert runtime.last("USER") in ("scep", str(IMAGE_UID))
    assert f"--uid {IMAGE_UID}" in " ".join(runtime.all("RUN")), "the image's user has the documented uid"
    env: dict[str, str] = {}
    for argument in runtime.all("ENV"):
        env.update(env_pairs(argument))
    data_dir = Path(env["SCEP_SERVER_DATA_DIR"].replace("/var/lib/scep-server", str(image_root / "data"), 1))
    data_dir.mkdir(mode=0o700)
    if os.geteuid() == 0:
        os.chown(data_dir, IMAGE_UID, IMAGE_UID)
    port = free_port()
    assert env["SCEP_SERVER_BIND"].endswith(":8080")
    env.update({
        "SCEP_SERVER_DATA_DIR": str(data_dir),
        "SCEP_SERVER_BIND": f"0.0.0.0:{port}",  # not the image's default: the health check must follow it
        "SCEP_CA_PASSPHRASE": "container-steps-ca-passphrase",
        "SCEP_CHALLENGE": "container-steps-challenge",
        "PATH": f"{installed}:/usr/bin:/bin",
        "HOME": str(data_dir),
    })  # fmt: skip
    command = exec_form(runtime.last("ENTRYPOINT")) + exec_form(runtime.last("CMD"))
    check = healthcheck_command(runtime.last("HEALTHCHECK"))
    log = image_root / "server.log"
    proc = spawn(_as_image_user(command), log, cwd=data_dir, env=env)
    try:
        _wait_healthy(check, env, data_dir, proc, log)
        status, body = http_get(f"http://127.0.0.1:{port}/scep?operation=GetCACaps", timeout=5.0)
        assert status == 200 and b"POSTPKIOperation" in body
        owners = {path.stat().st_uid for path in data_dir.rglob("*")}
        assert owners == {os.geteuid() if os.geteuid() != 0 else IMAGE_UID}, "everything is the image user's"
        key = data_dir / "ca" / "ca.key"
        assert b"ENCRYPTED PRIVATE KEY" in key.read_bytes() and key.stat().st_mode & 0o077 == 0
        if env.get("SCEP_SERVER_LOG_FORMAT") == "json":
            lines = [line for line in log.read_text().splitlines() if line.startswith("{")]
            assert lines and all(isinstance(json.loads(line), dict) for line in lines)
    finally:
        stop_group(proc)
    failed = _run(check, env, data_dir)
    assert failed.returncode != 0, "the health check fails once the server is gone"


def _run(check: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_as_image_user(check), env=env, cwd=cwd, capture_output=True, text=True, timeout=30)


def _wait_healthy(check: list[str], env: dict[str, str], cwd: Path, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    last = None
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the server exited ({proc.returncode}):\n{log.read_text()[-4000:]}"
        last = _run(check, env, cwd)
        if last.returncode == 0:
            return
        time.sleep(0.5)
    raise AssertionError(f"never healthy: {last.stderr if last else ''}\n{log.read_text()[-4000:]}")
