"""Finding 12 (dependencies): every third-party import is declared, the floors exclude releases with
published vulnerabilities, and the lock satisfies the floors."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "scep_server"

# First releases past the advisories (or the API) that matter to this server.
REQUIRED_FLOORS = {
    "cryptography": "44.0.1",  # hazmat.decrepit (43) and the OpenSSL fix of CVE-2024-12797
    "gunicorn": "23.0.0",  # request smuggling: CVE-2024-1135, CVE-2024-6827 (27 for the worker)
    "requests": "2.32.4",  # CVE-2024-35195, CVE-2024-47081
    "flask": "3.1.1",  # CVE-2025-47278
    "werkzeug": "3.0.6",  # CVE-2024-49766, CVE-2024-49767
    "urllib3": "2.5.0",  # CVE-2025-50181, CVE-2025-50182
    "pyjwt": "2.10.1",  # CVE-2024-53861
}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = [Requirement(text) for text in project["dependencies"]]
    return {_canonical(req.name): req for req in requirements}


def _imported_top_level_modules() -> set[str]:
    modules: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return modules - set(sys.stdlib_module_names) - {"scep_server"}


def _locked() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[_canonical(name)] = Version(version.strip())
    return pins


def test_finding12_every_third_party_import_is_declared() -> None:
    distributions = importlib.metadata.packages_distributions()
    declared = _declared()
    optional = {"psycopg"}  # the PostgreSQL driver is the `postgres` extra, imported by SQLAlchemy only
    missing = []
    for module in sorted(_imported_top_level_modules()):
        owners = {_canonical(dist) for dist in distributions.get(module, [module])}
        if not owners & (declared.keys() | optional):
            missing.append(f"{module} (from {', '.join(sorted(owners))})")
    assert missing == []


@pytest.mark.parametrize("name", sorted(REQUIRED_FLOORS))
def test_finding12_floor_excludes_vulnerable_releases(name: str) -> None:
    floors = [Version(spec.version) for spec in _declared()[name].specifier if spec.operator == ">="]
    assert floors, f"{name} has no >= floor"
    assert max(floors) >= Version(REQUIRED_FLOORS[name])


def test_lock_satisfies_every_declared_requirement() -> None:
    locked = _locked()
    for name, requirement in _declared().items():
        assert name in locked, f"{name} is declared but not locked in constraints.txt"
        assert requirement.specifier.contains(locked[name]), f"{name}=={locked[name]} breaks {requirement}"
