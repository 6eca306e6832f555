"""A :class:`~scep_server.ca.keys.Signer` and :class:`~scep_server.ca.keys.Decrypter` over a private key
held in this process: cryptography signs the builders itself (its fast path), and signs raw data for
the structures asn1crypto builds."""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.padding import AsymmetricPadding, PKCS1v15
from cryptography.x509 import ocsp

from scep_server.ca.keys import PublicKey, SigningHash, signature_hash_for
from scep_server.ca.keys.generate import PrivateKey


@dataclass(frozen=True, slots=True)
class LocalKey:
    """An RSA or EC private key in memory, as a Signer (and, for RSA, a Decrypter)."""

    _key: PrivateKey = field(repr=False)  # private: holders of a Signer never see the key itself

    def public_key(self) -> PublicKey:
        return self._key.public_key()

    @property
    def signature_hash(self) -> SigningHash:
        return signature_hash_for(self._key.public_key())

    def sign(self, data: bytes, algorithm: hashes.HashAlgorithm | None = None) -> bytes:
        digest = algorithm or self.signature_hash
        if isinstance(self._key, rsa.RSAPrivateKey):
            return self._key.sign(data, PKCS1v15(), digest)
        return self._key.sign(data, ec.ECDSA(digest))

    def sign_certificate(
        self, builder: x509.CertificateBuilder, algorithm: SigningHash | None = None
    ) -> x509.Certificate:
        return builder.sign(self._key, algorithm or self.signature_hash)

    def sign_crl(self, builder: x509.CertificateRevocationListBuilder) -> x509.CertificateRevocationList:
        return builder.sign(self._key, self.signature_hash)

    def sign_ocsp_response(self, builder: ocsp.OCSPResponseBuilder) -> ocsp.OCSPResponse:
        return builder.sign(self._key, self.signature_hash)

    def decrypt(self, ciphertext: bytes, padding: AsymmetricPadding) -> bytes:
        """RSA decryption; TypeError for an EC key, which cannot decrypt."""
        if not isinstance(self._key, rsa.RSAPrivateKey):
            raise TypeError("an EC key cannot decrypt: SCEP key transport needs RSA")
        return self._key.decrypt(ciphertext, padding)
