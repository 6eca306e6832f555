"""No test skips on its own: a missing tool or service goes through tests/support/env.py, which skips on a
developer's machine and fails in CI. This walks the syntax tree of every module under tests/.

A skip that is truly about the platform, not about something CI can install, goes in ``ALLOWED`` with the
reason it was accepted.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
ENV = TESTS / "support" / "env.py"
SKIPS = frozenset({
    "pytest.skip", "pytest.importorskip", "pytest.mark.skip", "pytest.mark.skipif",
    "unittest.skip", "unittest.skipIf", "unittest.skipUnless", "unittest.SkipTest",
})  # fmt: skip
# (module relative to tests/, the call) -> why it may skip; reviewed, none needed so far.
ALLOWED: dict[tuple[str, str], str] = {}


def _dotted(node: ast.AST) -> str | None:
    """``pytest.mark.skipif`` for that attribute chain; None for anything that is not a plain name chain."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


def skips_in(source: str) -> list[tuple[int, str]]:
    """(line, what) for every use of a skip in ``source``, however it was imported."""
    tree = ast.parse(source)
    aliases: dict[str, str] = {}
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases.update({alias.asname or alias.name: alias.name for alias in node.names})
        elif isinstance(node, ast.ImportFrom) and node.module:
            aliases.update({alias.asname or alias.name: f"{node.module}.{alias.name}" for alias in node.names})
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute | ast.Name) and not isinstance(getattr(node, "ctx", None), ast.Store):
            dotted = _dotted(node)
            if dotted is None:
                continue
            head, _, rest = dotted.partition(".")
            resolved = ".".join(filter(None, (aliases.get(head, head), rest)))
            if resolved in SKIPS:
                found.append((node.lineno, resolved))
    return sorted(set(found))


def _modules() -> list[Path]:
    return sorted(path for path in TESTS.rglob("*.py") if path != ENV)


def test_no_module_skips_outside_the_environment_helpers() -> None:
    offenders = [
        f"{path.relative_to(TESTS)}:{line}: {what}"
        for path in _modules()
        for line, what in skips_in(path.read_text(encoding="utf-8"))
        if (str(path.relative_to(TESTS)), what) not in ALLOWED
    ]
    assert not offenders, "skip through tests/support/env.py (require, require_tool) instead: " + "; ".join(offenders)


def test_every_allowed_skip_is_still_there() -> None:
    present = {
        (str(path.relative_to(TESTS)), what) for path in _modules() for _, what in skips_in(path.read_text("utf-8"))
    }
    assert set(ALLOWED) <= present, f"stale entries in ALLOWED: {sorted(set(ALLOWED) - present)}"


SPELLINGS = {
    "call": ("import pytest\npytest.skip('x')\n", ["pytest.skip"]),
    "skipif mark": ("import pytest\npytestmark = pytest.mark.skipif(True, reason='x')\n", ["pytest.mark.skipif"]),
    "skip decorator": ("import pytest\n@pytest.mark.skip\ndef test_x(): ...\n", ["pytest.mark.skip"]),
    "importorskip": ("import pytest\nyaml = pytest.importorskip('yaml')\n", ["pytest.importorskip"]),
    "module alias": ("import pytest as pt\npt.skip('x')\n", ["pytest.skip"]),
    "imported name": ("from pytest import skip\nskip('x')\n", ["pytest.skip"]),
    "imported mark": ("from pytest import mark\n@mark.skipif(True, reason='x')\ndef test_x(): ...\n",
                      ["pytest.mark.skipif"]),
    "unittest": ("import unittest\nraise unittest.SkipTest('x')\n", ["unittest.SkipTest"]),
    "xfail and a variable": ("import pytest\npytest.xfail('x')\nskip = 1\n", []),
    "a string": ("text = 'pytest.skip(x)'\n", []),
}


@pytest.mark.parametrize("case", list(SPELLINGS))
def test_the_walk_finds_every_spelling_of_a_skip(case: str) -> None:
    source, expected = SPELLINGS[case]
    assert [what for _, what in skips_in(source)] == expected
