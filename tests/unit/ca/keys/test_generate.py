from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from scep_server.ca.keys.generate import curve_name, generate_private_key


@pytest.mark.parametrize(
    ("key_type", "size", "curve", "expected"),
    [
        ("rsa", 2048, "P-256", (rsa.RSAPrivateKey, 2048)),
        ("rsa", 3072, "P-256", (rsa.RSAPrivateKey, 3072)),
        ("ec", 2048, "P-256", (ec.EllipticCurvePrivateKey, 256)),
        ("ec", 2048, "P-384", (ec.EllipticCurvePrivateKey, 384)),
    ],
)
def test_generate_private_key(key_type: str, size: int, curve: str, expected: tuple[type, int]) -> None:
    key = generate_private_key(key_type, key_size=size, curve=curve)
    assert isinstance(key, expected[0])
    assert key.key_size == expected[1]


def test_a_curve_may_be_named_by_its_sec_name() -> None:
    key = generate_private_key("ec", curve="brainpoolP256r1")  # an imported CA's curve, for its responder
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "brainpoolP256r1"


@pytest.mark.parametrize(("key_type", "curve"), [("dsa", "P-256"), ("ec", "P-192"), ("ec", "nope")])
def test_generate_private_key_rejects_unknown(key_type: str, curve: str) -> None:
    with pytest.raises(ValueError, match="unsupported"):
        generate_private_key(key_type, curve=curve)


def test_curve_name() -> None:
    assert curve_name(ec.SECP384R1()) == "P-384"
    assert curve_name(ec.SECP256K1()) == "secp256k1"
