"""A device's own private key as the client side of SCEP uses it: it signs requests and opens replies.

This is the requester's key, generated or held by the device (or the simulator, or a test), not CA key
material: the CA's keys stay behind :mod:`scep_server.ca.keys`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.padding import AsymmetricPadding, PKCS1v15

__all__ = ["DeviceKey"]


@dataclass(frozen=True, slots=True)
class DeviceKey:
    """An RSA or EC key as a :class:`~scep_server.scep.cms.CmsSigner` and, for RSA, a
    :class:`~scep_server.scep.envelope.CmsDecrypter`."""

    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = field(repr=False)

    def public_key(self) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
        return self.key.public_key()

    def sign(self, data: bytes, algorithm: hashes.HashAlgorithm) -> bytes:
        """PKCS#1 v1.5 for RSA, a DER ECDSA-Sig-Value for EC."""
        if isinstance(self.key, rsa.RSAPrivateKey):
            return self.key.sign(data, PKCS1v15(), algorithm)
        return self.key.sign(data, ec.ECDSA(algorithm))

    def decrypt(self, ciphertext: bytes, padding: AsymmetricPadding) -> bytes:
        """RSA decryption; TypeError for an EC key, which cannot decrypt."""
        if not isinstance(self.key, rsa.RSAPrivateKey):
            raise TypeError("an EC key cannot decrypt: SCEP key transport needs RSA")
        return self.key.decrypt(ciphertext, padding)
