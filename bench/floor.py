"""The crypto floor: the cryptography an enrollment cannot avoid, in a process per core, no HTTP, no DB.

Written with pyca/cryptography directly, not with the project's ``scep``/``ca`` functions: those also
build and parse the CMS structures with asn1crypto, which is part of the cost the floor is there to
separate out. One operation is what the server must do for a PKCSReq:

1. verify the request's signature (the device key, RSA-2048, SHA-256 over the signed attributes);
2. RA decrypt: unwrap the content key (RSA-2048 PKCS#1 v1.5 key transport) and AES-128-CBC decrypt the CSR;
3. verify the CSR's signature;
4. sign the certificate (RSA-2048 CA, SHA-256; basicConstraints, keyUsage, extendedKeyUsage, SKI, AKI);
5. envelope it to the device (AES-128-CBC, RSA public key transport);
6. sign the CertRep (RA key, SHA-256 over ~250 bytes of signed attributes).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import padding as asym
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bench.report import Kind, Row, percentile

_PKCS1 = asym.PKCS1v15()
# (RA key, CA key, CA cert, device key, wrapped key, IV, encrypted CSR, signed attributes, their signature)
_Material = tuple[bytes, bytes, bytes, bytes, bytes, bytes, bytes, bytes, bytes]


def _key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def _der(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())  # fmt: skip


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _aes(key: bytes, iv: bytes, data: bytes) -> bytes:
    padder = padding.PKCS7(128).padder()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return encryptor.update(padder.update(data) + padder.finalize()) + encryptor.finalize()


def material() -> _Material:
    """Keys, a CA certificate and one enveloped CSR, made once in the parent."""
    ra, ca, device = _key(), _key(), _key()
    now = datetime.now(UTC)
    ca_cert = (x509.CertificateBuilder().subject_name(_name("floor CA")).issuer_name(_name("floor CA"))
               .public_key(ca.public_key()).serial_number(1).not_valid_before(now).not_valid_after(now + timedelta(1))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).sign(ca, hashes.SHA256()))
    csr = x509.CertificateSigningRequestBuilder().subject_name(_name("floor device")).sign(device, hashes.SHA256())
    cek, iv = os.urandom(16), os.urandom(16)
    encrypted = _aes(cek, iv, csr.public_bytes(serialization.Encoding.DER))
    attributes = os.urandom(250)
    signature = device.sign(attributes, _PKCS1, hashes.SHA256())
    return (_der(ra), _der(ca), ca_cert.public_bytes(serialization.Encoding.DER), _der(device),
            ra.public_key().encrypt(cek, _PKCS1), iv, encrypted, attributes, signature)  # fmt: skip


def _load(der: bytes) -> rsa.RSAPrivateKey:
    key = serialization.load_der_private_key(der, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def _issue(csr: x509.CertificateSigningRequest, ca: rsa.RSAPrivateKey, ca_cert: x509.Certificate) -> bytes:
    now = datetime.now(UTC)
    usage = x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                          data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                          encipher_only=False, decipher_only=False)  # fmt: skip
    cert = (x509.CertificateBuilder().subject_name(csr.subject).issuer_name(ca_cert.subject)
            .public_key(csr.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(csr.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.public_key()), critical=False)
            .sign(ca, hashes.SHA256()))  # fmt: skip
    return cert.public_bytes(serialization.Encoding.DER)


def _work(job: tuple[_Material, float]) -> tuple[int, float, float, list[float]]:
    """Enrollments' crypto for ``seconds``: (operations, wall seconds, CPU seconds, per-operation seconds)."""
    (ra_der, ca_der, ca_cert_der, device_der, wrapped, iv, encrypted, attributes, signature), seconds = job
    ra, ca, device = _load(ra_der), _load(ca_der), _load(device_der)
    ca_cert, device_public = x509.load_der_x509_certificate(ca_cert_der), device.public_key()
    times: list[float] = []
    cpu, began = time.process_time(), time.monotonic()
    while (now := time.monotonic()) - began < seconds:
        device_public.verify(signature, attributes, _PKCS1, hashes.SHA256())
        decryptor = Cipher(algorithms.AES(ra.decrypt(wrapped, _PKCS1)), modes.CBC(iv)).decryptor()
        unpadder = padding.PKCS7(128).unpadder()
        plain = decryptor.update(encrypted) + decryptor.finalize()
        csr = x509.load_der_x509_csr(unpadder.update(plain) + unpadder.finalize())
        if not csr.is_signature_valid:
            raise RuntimeError("the floor's CSR does not verify")
        issued = _issue(csr, ca, ca_cert)
        cek = os.urandom(16)
        _aes(cek, os.urandom(16), issued)
        device_public.encrypt(cek, _PKCS1)
        ra.sign(attributes + issued[:32], _PKCS1, hashes.SHA256())
        times.append(time.monotonic() - now)
    return len(times), time.monotonic() - began, time.process_time() - cpu, times


def measure(pool: ProcessPoolExecutor, workers: int, seconds: float) -> Row:
    made = material()
    results = list(pool.map(_work, [(made, seconds)] * workers))
    ops = sum(r[0] for r in results)
    rate = sum(r[0] / r[1] for r in results)
    times = [t for r in results for t in r[3]]
    row = Row("floor", f"crypto floor ({workers} processes, pyca/cryptography)", Kind.FLOOR, unit="ops/s",
              rate=rate, p50=percentile(times, 50), p99=percentile(times, 99), ok=ops,
              server_ms=sum(r[2] for r in results) / ops * 1000 if ops else None)  # fmt: skip
    row.notes.append("no HTTP, no DB; latency = one operation in one process")
    return row
