"""The layout's rules, checked on the code itself: the import contracts in .importlinter, the module size
limit and the one exception tree (README "Architecture")."""

from __future__ import annotations

import ast
import importlib
import inspect
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import scep_server

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = Path(scep_server.__file__).resolve().parent
MAX_MODULE_LINES = 500
# The dev tools stand apart from the server (own console scripts, own error types); private exceptions
# never leave their module.
OUTSIDE_THE_TREE = ("emulator", "simulator")


def _modules() -> list[Path]:
    return sorted(path for path in PACKAGE.rglob("*.py") if "migrations" not in path.parts)


def test_the_import_contracts_hold() -> None:
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint_imports, "import-linter is a dev dependency: make deps installs it"
    result = subprocess.run(
        [lint_imports, "--config", str(ROOT / ".importlinter"), "--no-cache"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


@pytest.mark.parametrize("path", _modules(), ids=lambda path: str(path.relative_to(PACKAGE)))
def test_no_module_is_over_the_size_limit(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.relative_to(PACKAGE)} has {lines} lines; split it by concern"


def _module_name(path: Path) -> str:
    parts = ("scep_server", *path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _exception_classes(path: Path) -> list[str]:
    module = importlib.import_module(_module_name(path))
    return [
        name for name, value in vars(module).items()
        if inspect.isclass(value) and issubclass(value, Exception)
        and value.__module__ == module.__name__ and not name.startswith("_")
    ]


def test_every_exception_is_in_or_drawn_in_the_error_tree() -> None:
    errors = PACKAGE / "errors.py"
    drawing = ast.get_docstring(ast.parse(errors.read_text(encoding="utf-8"))) or ""
    missing = [
        f"{path.relative_to(PACKAGE)}: {name}"
        for path in _modules()
        if path != errors and not set(path.relative_to(PACKAGE).parts) & set(OUTSIDE_THE_TREE)
        for name in _exception_classes(path)
        if name not in drawing
    ]
    assert not missing, "exceptions outside errors.py's drawn tree: " + ", ".join(missing)
