"""New RSA and EC private keys, and the names of the curves."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec, rsa

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

CURVES: dict[str, type[ec.EllipticCurve]] = {
    "P-256": ec.SECP256R1,
    "P-384": ec.SECP384R1,
    "P-521": ec.SECP521R1,
}
_CURVE_NAMES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
# By SEC name: a responder key follows its CA onto whatever curve an imported CA key uses.
_SEC_CURVES: dict[str, type[ec.EllipticCurve]] = {
    curve.name: curve
    for curve in (
        ec.SECP256R1, ec.SECP384R1, ec.SECP521R1, ec.SECP256K1, ec.SECP224R1, ec.SECP192R1,
        ec.BrainpoolP256R1, ec.BrainpoolP384R1, ec.BrainpoolP512R1,
    )
}  # fmt: skip


def curve_name(curve: ec.EllipticCurve) -> str:
    """The NIST name (``P-256``) of a curve, or its SEC name when it has no NIST one."""
    return _CURVE_NAMES.get(curve.name, curve.name)


def curve_named(curve: str) -> ec.EllipticCurve:
    """The curve of a NIST (``P-256``) or SEC (``secp256r1``) name; ValueError for another name."""
    kind = CURVES.get(curve) or _SEC_CURVES.get(curve)
    if kind is None:
        raise ValueError(f"unsupported curve {curve!r} (supported: {', '.join(CURVES)})")
    return kind()


def check_key_type(key_type: str) -> None:
    """ValueError unless ``key_type`` is ``rsa`` or ``ec``."""
    if key_type not in ("rsa", "ec"):
        raise ValueError(f"unsupported key type {key_type!r} (supported: rsa, ec)")


def generate_private_key(key_type: str, *, key_size: int = 3072, curve: str = "P-256") -> PrivateKey:
    """A new RSA (``key_size`` bits, e = 65537) or EC (``curve``: a NIST or SEC name) private key."""
    check_key_type(key_type)
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    return ec.generate_private_key(curve_named(curve))
