"""PKCS#10 requests (RFC 2986) and the messages around them: CSRs with odd names, keys and attributes,
GetCert, CertPoll and renewal requests, and the signers a PKCSReq can carry."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence

from asn1crypto import algos, core
from asn1crypto import cms as asn1_cms
from asn1crypto import csr as asn1_csr
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509.oid import AttributeOID, NameOID

from scep_server.pki.sans import UPN_OID
from scep_server.scep import client, message
from scep_server.scep.types import DigestAlgorithm, KeyTransport, MessageType
from tests.functional.conftest import CHALLENGE, Device
from tests.functional.hostile.messages import (
    attribute,
    csr_der,
    octets,
    raw,
    scep_attributes,
    sealed,
    sign_parts,
    tid,
    tlv,
    valid,
)
from tests.functional.hostile.support import CA_SUBJECT, Env, Sent, scep

CN = NameOID.COMMON_NAME
OU = NameOID.ORGANIZATIONAL_UNIT_NAME


def csr_with(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
              | ed448.Ed448PrivateKey, subject: x509.Name | None = None, *, challenge: str | None = CHALLENGE,
              extensions: Sequence[x509.ExtensionType] = (), sans: Sequence[x509.GeneralName] = ()) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        subject if subject is not None else x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "device-01")]))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    if challenge is not None:
        builder = builder.add_attribute(AttributeOID.CHALLENGE_PASSWORD, challenge.encode())
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey) else hashes.SHA256()
    return csr_der(builder.sign(key, algorithm))


def csr_message(make_csr: Callable[[Device], bytes], message_type: str = "19") -> Callable[[Env], bytes]:
    """A pkiMessage for the CSR ``make_csr`` builds with the (fresh) signer's key: proof of possession holds."""

    def content(env: Env, device: Device) -> bytes:
        return sealed(env, make_csr(device))

    return raw(content=content, message_type=message_type)


def make_name(*attributes: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in attributes])


def subject_csr(subject: x509.Name) -> Callable[[Env], bytes]:
    return csr_message(lambda d: csr_with(d.key, subject))


def san_csr(*sans: x509.GeneralName) -> Callable[[Env], bytes]:
    return csr_message(lambda d: csr_with(d.key, sans=sans))


def eku_csr(*ekus: x509.ObjectIdentifier) -> Callable[[Env], bytes]:
    return csr_message(lambda d: csr_with(d.key, extensions=[x509.ExtendedKeyUsage(list(ekus))]))


def ca_named_csr(make_subject: Callable[[Env], x509.Name]) -> Callable[[Env], bytes]:
    def content(env: Env, device: Device) -> bytes:
        return sealed(env, csr_with(device.key, make_subject(env)))

    return raw(content=content)


def _reassembled(device: Device, mutate: Callable[[asn1_csr.CertificationRequestInfo], None]) -> bytes:
    """A CSR changed with asn1crypto and signed again (cryptography's builder refuses such requests)."""
    info = asn1_csr.CertificationRequest.load(csr_der(device.csr()))["certification_request_info"]
    mutate(info)
    tbs = info.dump(force=True)
    return bytes(asn1_csr.CertificationRequest({
        "certification_request_info": info,
        "signature_algorithm": {"algorithm": "sha256_rsa"},
        "signature": device.key.sign(tbs, padding.PKCS1v15(), hashes.SHA256()),
    }).dump())


def csr_version(version: int) -> Callable[[Device], bytes]:
    def make(device: Device) -> bytes:
        def mutate(info: asn1_csr.CertificationRequestInfo) -> None:
            info["version"] = version

        return _reassembled(device, mutate)

    return make


def _raw_csr(device: Device, attributes: Sequence[bytes]) -> bytes:
    """The device's CSR with raw ``attributes`` (DER, any types) in place of its own, signed again: neither
    cryptography nor asn1crypto builds such requests."""
    info = asn1_csr.CertificationRequest.load(csr_der(device.csr()))["certification_request_info"]
    tbs = tlv(0x30, info["version"].dump() + info["subject"].dump() + info["subject_pk_info"].dump()
               + tlv(0xA0, b"".join(sorted(attributes))))  # DER orders a SET OF
    signature = device.key.sign(tbs, padding.PKCS1v15(), hashes.SHA256())
    algorithm = algos.SignedDigestAlgorithm({"algorithm": "sha256_rsa", "parameters": core.Null()}).dump()
    return tlv(0x30, tbs + algorithm + tlv(0x03, b"\x00" + signature))


def challenge_attribute(*values: bytes) -> Callable[[Device], bytes]:
    """A CSR whose challengePassword attribute holds ``values`` (DER, any type)."""
    return lambda device: _raw_csr(device, [attribute(AttributeOID.CHALLENGE_PASSWORD.dotted_string, *values)])


def csr_signed_by_another_key(device: Device) -> bytes:
    tbs = device.csr().tbs_certrequest_bytes
    return bytes(asn1_csr.CertificationRequest({
        "certification_request_info": asn1_csr.CertificationRequestInfo.load(tbs),
        "signature_algorithm": {"algorithm": "sha256_rsa"},
        "signature": Device().key.sign(tbs, padding.PKCS1v15(), hashes.SHA256()),
    }).dump())


def csr_signed_with_md5(device: Device) -> bytes:
    tbs = device.csr().tbs_certrequest_bytes
    return bytes(asn1_csr.CertificationRequest({
        "certification_request_info": asn1_csr.CertificationRequestInfo.load(tbs),
        "signature_algorithm": {"algorithm": "md5_rsa"},
        "signature": device.key.sign(tbs, padding.PKCS1v15(), hashes.MD5()),
    }).dump())


def csr_with_garbled_san(device: Device) -> bytes:
    """An extensionRequest whose subjectAltName extnValue is an OCTET STRING, not GeneralNames."""
    extension = tlv(0x30, core.ObjectIdentifier("2.5.29.17").dump() + octets(b"\x04\x02hi"))
    request = attribute("1.2.840.113549.1.9.14", tlv(0x30, extension))
    challenge = attribute(AttributeOID.CHALLENGE_PASSWORD.dotted_string, bytes(core.UTF8String(CHALLENGE).dump()))
    return _raw_csr(device, [challenge, request])


def upn_holding(value: bytes) -> Callable[[Env], bytes]:
    return san_csr(x509.OtherName(UPN_OID, value))


def certificate_as_csr(device: Device) -> bytes:
    return device.signer.public_bytes(serialization.Encoding.DER)


def inner_typed(message_type: MessageType, content: Callable[[Env, Device], bytes]) -> Callable[[Env], bytes]:
    return raw(content=lambda env, d: sealed(env, content(env, d)), message_type=str(int(message_type)))


def issuer_serial(issuer: Callable[[Env], x509.Name], serial: int) -> Callable[[Env, Device], bytes]:
    def content(env: Env, device: Device) -> bytes:
        name = asn1_x509.Name.load(issuer(env).public_bytes())
        return bytes(asn1_cms.IssuerAndSerialNumber({"issuer": name, "serial_number": serial}).dump())

    return content


def ca_name(env: Env) -> x509.Name:
    return env.server.ca.ca_cert.subject


def ra_name(env: Env) -> x509.Name:
    return env.server.ca.ra_cert.subject


def upper_ca_name(env: Env) -> x509.Name:
    return x509.Name.from_rfc4514_string(CA_SUBJECT.upper())


def empty_name(env: Env) -> x509.Name:
    return x509.Name([])


def get_cert(issuer: Callable[[Env], x509.Name], serial: int | Callable[[Env], int], *,
              signer: Callable[[Env], tuple[rsa.RSAPrivateKey, x509.Certificate]] | None = None,
              profile: str | None = None) -> Callable[[Env], Sent]:
    def build(env: Env) -> bytes:
        key, cert = signer(env) if signer else _a_device(env)
        number = serial(env) if callable(serial) else serial
        content = issuer_serial(issuer, number)(env, Device())
        envelope = sealed(env, content)
        return sign_parts(envelope, scep_attributes(envelope, message_type="21"), key=key, cert=cert)

    return scep(build, profile)


def _a_device(env: Env) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    device = Device()
    return device.key, device.signer


def holder_signs(env: Env) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    return env.holder.key, env.holder_cert


def holder_serial(env: Env) -> int:
    return env.holder_cert.serial_number


def cert_poll(transaction: Callable[[Env], str], *, signer: Callable[[Env], Device] | None = None,
               issuer: Callable[[Env], x509.Name] = ca_name, profile: str | None = None) -> Callable[[Env], Sent]:
    def build(env: Env) -> bytes:
        poller = signer(env) if signer else Device(common_name="holder")
        content = message.IssuerAndSubject({
            "issuer": asn1_x509.Name.load(issuer(env).public_bytes()),
            "subject": asn1_x509.Name.load(env.holder.subject.public_bytes()),
        }).dump()
        envelope = sealed(env, content)
        attributes = scep_attributes(envelope, message_type="20", transaction_id=transaction(env))
        return sign_parts(envelope, attributes, key=poller.key, cert=poller.signer)

    return scep(build, profile)


def renewal(signer: Callable[[Env], tuple[rsa.RSAPrivateKey, x509.Certificate]], profile: str | None = None,
             subject: str = "CN=holder") -> Callable[[Env], Sent]:
    def build(env: Env) -> bytes:
        key, cert = signer(env)
        csr = csr_der(client.build_csr(key, x509.Name.from_rfc4514_string(subject)))
        envelope = sealed(env, csr)
        return sign_parts(envelope, scep_attributes(envelope, message_type="17"), key=key, cert=cert)

    return scep(build, profile)


def self_signed(subject: Callable[[Env], x509.Name]) -> Callable[[Env], tuple[rsa.RSAPrivateKey, x509.Certificate]]:
    def make(env: Env) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
        device = Device()
        return device.key, client.self_signed_signer(device.key, subject(env))

    return make


def claims_our_ca(env: Env) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """A certificate naming our CA as issuer, with a serial the CA never issued, signed by its own key."""
    device = Device()
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(env.holder.subject).issuer_name(env.server.ca.ca_cert.subject)
        .public_key(device.key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
        .sign(device.key, hashes.SHA256())
    )
    return device.key, cert


def revoked_signs(env: Env) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    return env.revoked.key, env.revoked_cert


def signed_by(signer: Callable[[Env], tuple[rsa.RSAPrivateKey, x509.Certificate]]) -> Callable[[Env], bytes]:
    """A PKCSReq with a valid CSR (right challenge) for a key of its own, signed by ``signer``."""

    def build(env: Env) -> bytes:
        key, cert = signer(env)
        envelope = sealed(env, csr_with(Device().key))  # the pool never hands out one key twice in a row
        return sign_parts(envelope, scep_attributes(envelope), key=key, cert=cert)

    return build


def csr_key_in_signer_but_signed_by_another(env: Env) -> bytes:
    """The signer certificate carries the CSR's key (as a genuine device's would), the signature is another key's."""
    device, forger = Device(), Device()
    envelope = sealed(env, csr_der(device.csr()))
    return sign_parts(envelope, scep_attributes(envelope), key=forger.key, cert=device.signer)


def holder_cert_signed_by_another_key(env: Env) -> bytes:
    device = Device()
    envelope = sealed(env, csr_der(device.csr()))
    return sign_parts(envelope, scep_attributes(envelope), key=device.key, cert=env.holder_cert)


def holder_transaction_with_another_csr(env: Env) -> bytes:
    """A fresh device's valid PKCSReq (right challenge) under the holder's transactionID."""
    return env.server.pkcsreq(Device(), transaction_id=env.holder_tx).der


def signer_with_unknown_key_algorithm(env: Env) -> bytes:
    """The signer certificate's SubjectPublicKeyInfo algorithm rsaEncryption replaced by 1.2.840.113549.1.1.99."""
    device = Device()
    signer = device.signer.public_bytes(serialization.Encoding.DER)
    rsa_encryption = bytes.fromhex("06092a864886f70d010101")
    assert signer.count(rsa_encryption) == 1
    der = valid(env, device)
    assert der.count(signer) == 1
    return der.replace(signer, signer.replace(rsa_encryption, bytes.fromhex("06092a864886f70d010163")))


def get_crl_oaep_sha512_to_rsa_1024(env: Env) -> bytes:
    """A GetCRL for this CA (answered SUCCESS, the CRL enveloped to the signer with the request's key transport)
    from an RSA-1024 signer asking RSAES-OAEP-SHA-512, which cannot wrap a key for a 128-octet modulus."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    signer = client.self_signed_signer(key, make_name((CN, "tiny-signer")))
    content = issuer_serial(ca_name, 1)(env, Device())
    return client.build_pki_request(
        MessageType.GET_CRL, content, signer_cert=signer, signer_key=key, recipient=env.server.ca.ra_cert,
        transaction_id=tid(), key_transport=KeyTransport.oaep(DigestAlgorithm.SHA512),
    ).der
