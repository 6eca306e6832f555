"""Only ``scep_server/ca/keys/`` touches the CA's private key material (README "Architecture").

Every other server module holds keys as signers and decrypters: none may load, generate or serialise a
private key, nor name a private key type. Walked on the syntax tree of every module, so an import, a
call or an annotation all count.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import scep_server

PACKAGE = Path(scep_server.__file__).resolve().parent
FORBIDDEN_CALLS = frozenset({"load_pem_private_key", "load_der_private_key", "generate_private_key", "private_bytes"})
FORBIDDEN_NAMES = frozenset({"RSAPrivateKey", "EllipticCurvePrivateKey", "PrivateKeyTypes"})
EXEMPT = {
    "ca/keys": "the key backends: the one place that holds CA, RA and OCSP keys",
    "emulator": "the Intune emulator's own keys (a stand-in Entra ID and Intune), not the server's",
    "simulator": "the device simulator's keys: devices, not the CA",
    "scep/client": "the client side of SCEP signs with device keys, which are not CA key material",
    "scep/device_key.py": "wraps a device's key for the client side",
    # The Entra ID app's certificate key, read to hand to MSAL: an app credential, not CA key material.
    "intune/auth.py": "the Entra ID app credential for MSAL",
}


def _exempt(relative: Path) -> bool:
    text = relative.as_posix()
    return any(text == prefix or text.startswith(f"{prefix}/") for prefix in EXEMPT)


def _modules() -> list[Path]:
    return sorted(
        path for path in PACKAGE.rglob("*.py")
        if "migrations" not in path.parts and not _exempt(path.relative_to(PACKAGE))
    )  # fmt: skip


def key_material_uses(source: str) -> list[str]:
    """``line: what`` for every call, import or name of private key material in ``source``, and every read
    of another object's ``_key`` (where a local key keeps the key it wraps)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr == "_key" and not _is_self(node.value):
            found.append(f"{node.lineno}: ._key")
        for name in _names(node):
            if name in FORBIDDEN_NAMES or name in FORBIDDEN_CALLS:
                found.append(f"{getattr(node, 'lineno', '?')}: {name}")
    return found


def _is_self(node: ast.expr) -> bool:
    return isinstance(node, ast.Name) and node.id == "self"


def _names(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Attribute):
        return [node.attr]
    if isinstance(node, ast.ImportFrom | ast.Import):
        return [alias.name.rsplit(".", 1)[-1] for alias in node.names]
    return []


@pytest.mark.parametrize("path", _modules(), ids=lambda path: str(path.relative_to(PACKAGE)))
def test_no_module_outside_ca_keys_touches_private_keys(path: Path) -> None:
    uses = key_material_uses(path.read_text(encoding="utf-8"))
    assert not uses, f"{path.relative_to(PACKAGE)} handles private key material ({', '.join(uses)}): use ca/keys"


def test_every_exemption_names_an_existing_module() -> None:
    missing = [prefix for prefix in EXEMPT if not (PACKAGE / prefix).exists()]
    assert not missing, f"exempted but gone: {missing} (drop the exemption, or name where the code went)"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from cryptography.hazmat.primitives.serialization import load_pem_private_key", ["1: load_pem_private_key"]),
        ("key = rsa.generate_private_key(65537, 2048)", ["1: generate_private_key"]),
        ("pem = key.private_bytes(a, b, c)", ["1: private_bytes"]),
        ("def f(k: rsa.RSAPrivateKey) -> None: ...", ["1: RSAPrivateKey"]),
        ("from x import EllipticCurvePrivateKey as K", ["1: EllipticCurvePrivateKey"]),
        ("import a\nKeys = a.PrivateKeyTypes", ["2: PrivateKeyTypes"]),
        ("raw = runtime.ca.ca_key._key", ["1: ._key"]),
        ("self._key = connect()", []),
        ("key.public_key().public_bytes(a, b)\nsigner.sign(data)", []),
    ],
)
def test_the_walk_sees_every_form(source: str, expected: list[str]) -> None:
    assert key_material_uses(source) == expected
