"""Hostile input, table-driven (the second table; test_malformed.py is the first): one case per attack and
per RFC corner case, each asserting the exact HTTP status, for a CertRep the exact pkiStatus FAILURE,
failInfo and failInfoText (RFC 8894 §3.2.1.4, §3.3.2.2), for OCSP the exact response status (RFC 6960
§4.2.1), and that nothing was issued or revoked.

What the server answers, by layer:
- no CertRep possible (unknown operation, undecodable outer SignedData or SCEP attributes): HTTP 400;
- the signature or messageDigest does not verify: badMessageCheck, "message check failed";
- from the RSA step to the parsed inner content (envelope, PKCS#10, IssuerAndSerialNumber,
  IssuerAndSubject), and a PKCSReq signer that does not prove possession: badMessageCheck with the one
  envelope text (no padding oracle, RFC 3218 §2.3);
- an algorithm it does not implement: badAlg; a signingTime too far off: badTime;
- a readable request the policy or the challenge refuses: badRequest; no such certificate or transaction:
  badCertId.

Requests the server is lenient about on purpose (BER, odd but harmless fields, nonce lengths other than
16) carry a wrong challenge: the answer badRequest shows they were read, and nothing is issued. Every
CertRep case also names the cause the server logged (``reason``): the device sees one fixed text, so
that is how a case shows it failed where it meant to. Server bugs are strict xfails (``bug``).

One server for the whole module, without a failure budget (every case here fails on purpose).
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

import pytest
from asn1crypto import algos, core
from asn1crypto import cms as asn1_cms
from asn1crypto import csr as asn1_csr
from asn1crypto import ocsp as asn1_ocsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AttributeOID, ExtendedKeyUsageOID, NameOID
from werkzeug.test import TestResponse

from scep_server.ca.issue import CERTIFICATE_REQUEST_AGENT, PKINIT_CLIENT_AUTH, UPN_OID, sid_extension_value
from scep_server.config import SecretSource
from scep_server.errors import BadAlg, BadCertId, BadMessageCheck, BadRequest, BadTime, ChallengeRejected, FailInfo
from scep_server.scep import client, cms, message
from scep_server.scep.types import Attr, ContentCipher, DigestAlgorithm, KeyTransport, MessageType, PKIStatus
from scep_server.store import CertStatus

from .conftest import CHALLENGE, Device, ScepTestServer, make_config, serving

TOKEN = "hostile-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NONCE = b"0123456789abcdef"
WRONG = "not-the-challenge"
CA_SUBJECT = "CN=Hostile Issuing CA,O=scep-server tests"
CONFIG = """
data_dir: {data_dir}
failure_budget: {{max_failures: 0}}
ca:
  name: hostile-ca
  subject: "CN=Hostile Issuing CA,O=scep-server tests"
  key_size: 2048
profiles:
  default:
    challenge: {{type: static, secret: {{value: "{challenge}"}}}}
  legacy:
    challenge: {{type: static, secret: {{value: "{challenge}"}}}}
    allow_des: true
  strict:
    challenge: {{type: static, secret: {{value: "{challenge}"}}}}
    allow_sha1: false
    allow_renewal: false
    key_usage: [digital_signature]
    extended_key_usage: [client_auth]
  rsaonly:
    challenge: {{type: static, secret: {{value: "{challenge}"}}}}
    allowed_key_types: [rsa]
"""

FAILURE_TEXT = {
    FailInfo.BAD_ALG: BadAlg.public_text,
    FailInfo.BAD_MESSAGE_CHECK: cms.ENVELOPE_FAILURE_TEXT,
    FailInfo.BAD_REQUEST: BadRequest.public_text,
    FailInfo.BAD_TIME: BadTime.public_text,
    FailInfo.BAD_CERT_ID: BadCertId.public_text,
}
SIGNATURE_TEXT = BadMessageCheck.public_text  # a signature or messageDigest that does not verify
CHALLENGE_TEXT = ChallengeRejected.public_text
BAD_ALG, BAD_CHECK, BAD_REQUEST = FailInfo.BAD_ALG, FailInfo.BAD_MESSAGE_CHECK, FailInfo.BAD_REQUEST
BAD_TIME, BAD_CERT_ID = FailInfo.BAD_TIME, FailInfo.BAD_CERT_ID
MALFORMED, UNAUTHORIZED = ocsp.OCSPResponseStatus.MALFORMED_REQUEST, ocsp.OCSPResponseStatus.UNAUTHORIZED
SUCCESSFUL = ocsp.OCSPResponseStatus.SUCCESSFUL


# --- the server and what it knows before the cases run --------------------------------------------------


@dataclass
class Env:
    """The module's server and the state the cases refer to: certificates and a transaction of its own."""

    server: ScepTestServer
    holder: Device  # enrolled on the default profile; its key is nobody else's
    holder_cert: x509.Certificate
    holder_tx: str
    revoked: Device
    revoked_cert: x509.Certificate
    admin_targets: dict[str, str]  # valid certificates (hex serials) that admin cases try to revoke
    caps: bytes  # GetCACaps of the default profile, asked plainly


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    config = replace(make_config(tmp_path_factory.mktemp("hostile"), CONFIG), admin_token=SecretSource(value=TOKEN))
    with serving(config) as server:
        holder = Device(key=rsa.generate_private_key(public_exponent=65537, key_size=2048), common_name="holder")
        built = server.pkcsreq(holder, transaction_id="HOLDER-TX")
        reply = server.send(built, holder)
        assert reply.status is PKIStatus.SUCCESS
        revoked = Device(key=rsa.generate_private_key(public_exponent=65537, key_size=2048), common_name="revoked")
        revoked_cert = server.enroll(revoked)
        server.runtime.revocations.revoke(revoked_cert.serial_number, reason="keyCompromise")
        targets = {
            name: f"{server.enroll(Device(common_name=f'admin-{name}')).serial_number:x}"
            for name in ("plain", "json-truncated", "json-text")
        }
        caps = server.http.get("/scep", query_string={"operation": "GetCACaps"}).data
        yield Env(server, holder, reply.certificate_for(holder.key.public_key()), built.transaction_id, revoked,
                  revoked_cert, targets, caps)


@dataclass(frozen=True)
class Sent:
    response: TestResponse
    request: bytes | None = None  # the pkiMessage, when one was sent: its transactionID and nonce come back


@dataclass(frozen=True)
class Case:
    """A request to send and what must come back.

    200 answers are a CertRep FAILURE (``fail_info``, with ``text`` or the failInfo's fixed text), an OCSP
    response (``ocsp_status`` and for a successful one ``cert_status``), or another body ``expect`` checks.
    """

    name: str
    send: Callable[[Env], Sent]
    http_status: int = 200
    fail_info: FailInfo | None = None
    text: str | None = None
    ocsp_status: ocsp.OCSPResponseStatus | None = None
    cert_status: ocsp.OCSPCertStatus | None = None
    expect: Callable[[Env, TestResponse], None] | None = None
    body: str | None = None  # a phrase an error answer must hold
    reason: str | tuple[str, ...] | None = None  # what the server logged as the cause (one of them, for a tuple)
    bug: str | None = None  # a server bug: a strict xfail, reported


# --- HTTP ----------------------------------------------------------------------------------------------


def _http(method: str, path: str, **kwargs: object) -> Callable[[Env], Sent]:
    def send(env: Env) -> Sent:
        return Sent(env.server.http.open(path, method=method, **kwargs))  # type: ignore[arg-type]

    return send


def _op(operation: str, method: str = "GET", path: str = "/scep", **kwargs: object) -> Callable[[Env], Sent]:
    return _http(method, path, query_string={"operation": operation}, **kwargs)


def _pki_get(message_value: str) -> Callable[[Env], Sent]:
    return _http("GET", "/scep", query_string={"operation": "PKIOperation", "message": message_value})


def _pki_post(body: bytes, path: str = "/scep") -> Callable[[Env], Sent]:
    return _http("POST", f"{path}?operation=PKIOperation", data=body)


def _send(build: Callable[[Env], bytes], profile: str | None = None, *, method: str = "POST") -> Callable[[Env], Sent]:
    """POST (or GET, base64) the pkiMessage ``build`` makes to a profile."""

    def send(env: Env) -> Sent:
        der = build(env)
        path = f"/scep/{profile}" if profile else "/scep"
        if method == "GET":
            query = {"operation": "PKIOperation", "message": base64.b64encode(der).decode()}
            return Sent(env.server.http.get(path, query_string=query), der)
        return Sent(env.server.http.post(f"{path}?operation=PKIOperation", data=der), der)

    return send


def _posted_in_base64(build: Callable[[Env], bytes]) -> Callable[[Env], Sent]:
    """POST the pkiMessage as base64 text, as some clients do."""

    def send(env: Env) -> Sent:
        der = build(env)
        return Sent(env.server.http.post("/scep?operation=PKIOperation", data=base64.b64encode(der)), der)

    return send


def _same_caps(env: Env, response: TestResponse) -> None:
    assert response.mimetype == "text/plain" and response.data == env.caps


def _ca_ra_certs(env: Env, response: TestResponse) -> None:
    assert response.mimetype == "application/x-x509-ca-ra-cert"
    certs, crls = cms.read_certs_only(response.data)
    assert env.server.ca.ra_cert.public_bytes(serialization.Encoding.DER) in certs and crls == []


def _allow_header(env: Env, response: TestResponse) -> None:
    assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS", "POST"} and not response.data


def _head_caps(env: Env, response: TestResponse) -> None:
    assert response.mimetype == "text/plain" and response.data == b""


# --- building pkiMessages from parts -----------------------------------------------------------------------


def _tid() -> str:
    return uuid.uuid4().hex.upper()


def _tlv(tag: int, body: bytes) -> bytes:
    if len(body) < 0x80:
        return bytes([tag, len(body)]) + body
    size = len(body).to_bytes((len(body).bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def _attribute(oid: str, *values: bytes) -> bytes:
    """One Attribute (RFC 5652 §5.3) as DER, its values given as DER: any type, any number."""
    return _tlv(0x30, core.ObjectIdentifier(oid).dump() + _tlv(0x31, b"".join(sorted(values))))


def _printable(text: str) -> bytes:
    return bytes(core.PrintableString(text).dump())


def _octets(data: bytes) -> bytes:
    return bytes(core.OctetString(data).dump())


def _utc(when: datetime.datetime) -> bytes:
    return bytes(asn1_cms.Time({"utc_time": when}).dump())


def _digest(algorithm: DigestAlgorithm, data: bytes) -> bytes:
    h = hashes.Hash(algorithm.hash())
    h.update(data)
    return h.finalize()


Values = dict[str, list[bytes] | None]  # attribute OID -> its values as DER; None: left out


def _attributes(
    content: bytes | None, digest: DigestAlgorithm = DigestAlgorithm.SHA256, *, message_type: str = "19",
    transaction_id: str | None = None, nonce: bytes = NONCE, change: Values | None = None,
    extra: Sequence[bytes] = (),
) -> list[bytes]:
    """The signed attributes of a pkiMessage (CMS ones first), each replaceable or removable by OID."""
    values: Values = {
        Attr.CONTENT_TYPE.value: [bytes(asn1_cms.ContentType("data").dump())],
        Attr.MESSAGE_DIGEST.value: [_octets(_digest(digest, content or b""))],
        Attr.SIGNING_TIME.value: [_utc(datetime.datetime.now(datetime.UTC))],
        Attr.MESSAGE_TYPE.value: [_printable(message_type)],
        Attr.TRANSACTION_ID.value: [_printable(transaction_id or _tid())],
        Attr.SENDER_NONCE.value: [_octets(nonce)],
    }
    values.update(change or {})
    return [_attribute(oid, *found) for oid, found in values.items() if found is not None] + list(extra)


def _sign_parts(
    content: bytes | None, attributes: Sequence[bytes], *, key: rsa.RSAPrivateKey, cert: x509.Certificate,
    digest: DigestAlgorithm = DigestAlgorithm.SHA256, signed_prefix: bytes = b"\x31",
) -> bytes:
    """A ContentInfo(SignedData) over raw signed attributes, RSA PKCS#1 v1.5 over ``signed_prefix`` + SET body."""
    attrs_set = _tlv(0x31, b"".join(attributes))
    signature = key.sign(signed_prefix + attrs_set[1:], padding.PKCS1v15(), digest.hash())
    signer_info = asn1_cms.SignerInfo({
        "version": "v1",
        "sid": asn1_cms.SignerIdentifier({"issuer_and_serial_number": cms.issuer_and_serial(cert)}),
        "digest_algorithm": {"algorithm": digest.value},
        "signed_attrs": asn1_cms.CMSAttributes.load(attrs_set),
        "signature_algorithm": {"algorithm": "rsassa_pkcs1v15"},
        "signature": signature,
    })
    encap: dict[str, object] = {"content_type": "data"}
    if content is not None:
        encap["content"] = content
    signed = asn1_cms.SignedData({
        "version": "v1",
        "digest_algorithms": [{"algorithm": digest.value}],
        "encap_content_info": encap,
        "certificates": [_asn1_cert(cert)],
        "signer_infos": [signer_info],
    })
    return bytes(asn1_cms.ContentInfo({"content_type": "signed_data", "content": signed}).dump())


def _asn1_cert(cert: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))


def _envelope(env: Env, content: bytes, cipher: ContentCipher = ContentCipher.AES128,
              recipient: x509.Certificate | None = None) -> bytes:
    return cms.encrypt(content, recipient or env.server.ca.ra_cert, cipher)


def _csr_der(csr: x509.CertificateSigningRequest) -> bytes:
    return csr.public_bytes(serialization.Encoding.DER)


def _raw(
    *, device: Device | None = None, content: Callable[[Env, Device], bytes | None] | None = None,
    digest: DigestAlgorithm = DigestAlgorithm.SHA256, message_type: str = "19", transaction_id: str | None = None,
    nonce: bytes = NONCE, change: Values | None = None, extra: Sequence[bytes] = (),
    signed_prefix: bytes = b"\x31",
) -> Callable[[Env], bytes]:
    """A pkiMessage signed by a (fresh) device with its CSR in the envelope, unless ``content`` says otherwise."""

    def build(env: Env) -> bytes:
        signer = device or Device()
        body = content(env, signer) if content else _envelope(env, _csr_der(signer.csr()))
        attributes = _attributes(body, digest, message_type=message_type, transaction_id=transaction_id,
                                 nonce=nonce, change=change, extra=extra)
        return _sign_parts(body, attributes, key=signer.key, cert=signer.signer, digest=digest,
                           signed_prefix=signed_prefix)

    return build


def _wrong_challenge(env: Env, device: Device) -> bytes:
    return _envelope(env, _csr_der(device.csr(WRONG)))


def _lenient(**kwargs: object) -> Callable[[Env], bytes]:
    """Accepted as it is, but with a wrong challenge: the answer is badRequest and nothing is issued."""
    return _raw(content=_wrong_challenge, **kwargs)  # type: ignore[arg-type]


def _mutate(
    build: Callable[[Env], bytes], change: Callable[[Env, asn1_cms.SignedData], None]
) -> Callable[[Env], bytes]:
    """``build``'s pkiMessage with its SignedData changed (outside what the signature covers)."""

    def built(env: Env) -> bytes:
        info = asn1_cms.ContentInfo.load(build(env))
        change(env, info["content"])
        return bytes(info.dump(force=True))

    return built


def _valid(env: Env, device: Device | None = None, challenge: str = CHALLENGE) -> bytes:
    signer = device or Device()
    return env.server.pkcsreq(signer, challenge=challenge, transaction_id=_tid()).der


def _valid_wrong_challenge(env: Env) -> bytes:
    return _valid(env, challenge=WRONG)


def _signer_info(field: str, value: object) -> Callable[[Env, asn1_cms.SignedData], None]:
    def change(env: Env, signed: asn1_cms.SignedData) -> None:
        signed["signer_infos"][0][field] = value

    return change


def _signed_field(field: str, value: object) -> Callable[[Env, asn1_cms.SignedData], None]:
    def change(env: Env, signed: asn1_cms.SignedData) -> None:
        signed[field] = value

    return change


def _signature(transform: Callable[[bytes], bytes]) -> Callable[[Env, asn1_cms.SignedData], None]:
    def change(env: Env, signed: asn1_cms.SignedData) -> None:
        info = signed["signer_infos"][0]
        info["signature"] = transform(bytes(info["signature"].native))

    return change


def _signature_by_another_key(env: Env, signed: asn1_cms.SignedData) -> None:
    info = signed["signer_infos"][0]
    to_sign = b"\x31" + info["signed_attrs"].dump()[1:]
    info["signature"] = Device().key.sign(to_sign, padding.PKCS1v15(), hashes.SHA256())


def _second_signer(env: Env, signed: asn1_cms.SignedData) -> None:
    other = asn1_cms.ContentInfo.load(_valid(env))["content"]
    signed["signer_infos"] = [signed["signer_infos"][0], other["signer_infos"][0]]
    signed["certificates"] = list(signed["certificates"]) + list(other["certificates"])


def _certificates_of_a_stranger(env: Env, signed: asn1_cms.SignedData) -> None:
    signed["certificates"] = [_asn1_cert(Device(common_name="stranger").signer)]


def _sid_serial_plus_one(env: Env, signed: asn1_cms.SignedData) -> None:
    sid = signed["signer_infos"][0]["sid"].chosen
    sid["serial_number"] = sid["serial_number"].native + 1


def _sid_issuer_is_the_ca(env: Env, signed: asn1_cms.SignedData) -> None:
    sid = signed["signer_infos"][0]["sid"].chosen
    sid["issuer"] = asn1_x509.Name.load(env.server.ca.ca_cert.subject.public_bytes())


def _sid_key_identifier(env: Env, signed: asn1_cms.SignedData) -> None:
    signed["signer_infos"][0]["sid"] = asn1_cms.SignerIdentifier({"subject_key_identifier": os.urandom(20)})


def _outer_content_type(oid: str) -> Callable[[Env], bytes]:
    """The outer ContentInfo's contentType (RFC 5652 §3) replaced by another 9-octet pkcs-7 OID."""

    def build(env: Env) -> bytes:
        der = _valid(env)
        signed_data = bytes.fromhex("06092a864886f70d010702")
        assert der.count(signed_data) == 1
        return der.replace(signed_data, bytes(core.ObjectIdentifier(oid).dump()))

    return build


def _truncated_at(offset: int) -> Callable[[Env], bytes]:
    def build(env: Env) -> bytes:
        der = _valid(env)
        return der[: offset if offset > 0 else len(der) + offset]

    return build


def _trailing(junk: bytes) -> Callable[[Env], bytes]:
    return lambda env: _valid(env) + junk


def _indefinite_length(env: Env) -> bytes:
    """The outer ContentInfo SEQUENCE in BER indefinite-length form (RFC 5652 allows BER outside signedAttrs)."""
    der = _valid_wrong_challenge(env)
    assert der[:2] == b"\x30\x82"
    return b"\x30\x80" + der[4:] + b"\x00\x00"


def _csr_with(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
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
    return _csr_der(builder.sign(key, algorithm))


def _csr_message(make_csr: Callable[[Device], bytes], message_type: str = "19") -> Callable[[Env], bytes]:
    """A pkiMessage for the CSR ``make_csr`` builds with the (fresh) signer's key: proof of possession holds."""

    def content(env: Env, device: Device) -> bytes:
        return _envelope(env, make_csr(device))

    return _raw(content=content, message_type=message_type)


def _name(*attributes: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in attributes])


def _subject_csr(subject: x509.Name) -> Callable[[Env], bytes]:
    return _csr_message(lambda d: _csr_with(d.key, subject))


def _san_csr(*sans: x509.GeneralName) -> Callable[[Env], bytes]:
    return _csr_message(lambda d: _csr_with(d.key, sans=sans))


def _eku_csr(*ekus: x509.ObjectIdentifier) -> Callable[[Env], bytes]:
    return _csr_message(lambda d: _csr_with(d.key, extensions=[x509.ExtendedKeyUsage(list(ekus))]))


def _ca_named_csr(make_subject: Callable[[Env], x509.Name]) -> Callable[[Env], bytes]:
    def content(env: Env, device: Device) -> bytes:
        return _envelope(env, _csr_with(device.key, make_subject(env)))

    return _raw(content=content)


def _reassembled(device: Device, mutate: Callable[[asn1_csr.CertificationRequestInfo], None]) -> bytes:
    """A CSR changed with asn1crypto and signed again (cryptography's builder refuses such requests)."""
    info = asn1_csr.CertificationRequest.load(_csr_der(device.csr()))["certification_request_info"]
    mutate(info)
    tbs = info.dump(force=True)
    return bytes(asn1_csr.CertificationRequest({
        "certification_request_info": info,
        "signature_algorithm": {"algorithm": "sha256_rsa"},
        "signature": device.key.sign(tbs, padding.PKCS1v15(), hashes.SHA256()),
    }).dump())


def _csr_version(version: int) -> Callable[[Device], bytes]:
    def make(device: Device) -> bytes:
        def mutate(info: asn1_csr.CertificationRequestInfo) -> None:
            info["version"] = version

        return _reassembled(device, mutate)

    return make


def _raw_csr(device: Device, attributes: Sequence[bytes]) -> bytes:
    """The device's CSR with raw ``attributes`` (DER, any types) in place of its own, signed again: neither
    cryptography nor asn1crypto builds such requests."""
    info = asn1_csr.CertificationRequest.load(_csr_der(device.csr()))["certification_request_info"]
    tbs = _tlv(0x30, info["version"].dump() + info["subject"].dump() + info["subject_pk_info"].dump()
               + _tlv(0xA0, b"".join(sorted(attributes))))  # DER orders a SET OF
    signature = device.key.sign(tbs, padding.PKCS1v15(), hashes.SHA256())
    algorithm = algos.SignedDigestAlgorithm({"algorithm": "sha256_rsa", "parameters": core.Null()}).dump()
    return _tlv(0x30, tbs + algorithm + _tlv(0x03, b"\x00" + signature))


def _challenge_attribute(*values: bytes) -> Callable[[Device], bytes]:
    """A CSR whose challengePassword attribute holds ``values`` (DER, any type)."""
    return lambda device: _raw_csr(device, [_attribute(AttributeOID.CHALLENGE_PASSWORD.dotted_string, *values)])


def _csr_signed_by_another_key(device: Device) -> bytes:
    tbs = device.csr().tbs_certrequest_bytes
    return bytes(asn1_csr.CertificationRequest({
        "certification_request_info": asn1_csr.CertificationRequestInfo.load(tbs),
        "signature_algorithm": {"algorithm": "sha256_rsa"},
        "signature": Device().key.sign(tbs, padding.PKCS1v15(), hashes.SHA256()),
    }).dump())


def _csr_signed_with_md5(device: Device) -> bytes:
    tbs = device.csr().tbs_certrequest_bytes
    return bytes(asn1_csr.CertificationRequest({
        "certification_request_info": asn1_csr.CertificationRequestInfo.load(tbs),
        "signature_algorithm": {"algorithm": "md5_rsa"},
        "signature": device.key.sign(tbs, padding.PKCS1v15(), hashes.MD5()),
    }).dump())


def _csr_with_garbled_san(device: Device) -> bytes:
    """An extensionRequest whose subjectAltName extnValue is an OCTET STRING, not GeneralNames."""
    extension = _tlv(0x30, core.ObjectIdentifier("2.5.29.17").dump() + _octets(b"\x04\x02hi"))
    request = _attribute("1.2.840.113549.1.9.14", _tlv(0x30, extension))
    challenge = _attribute(AttributeOID.CHALLENGE_PASSWORD.dotted_string, bytes(core.UTF8String(CHALLENGE).dump()))
    return _raw_csr(device, [challenge, request])


def _upn_holding(value: bytes) -> Callable[[Env], bytes]:
    return _san_csr(x509.OtherName(UPN_OID, value))


def _certificate_as_csr(device: Device) -> bytes:
    return device.signer.public_bytes(serialization.Encoding.DER)


def _inner_typed(message_type: MessageType, content: Callable[[Env, Device], bytes]) -> Callable[[Env], bytes]:
    return _raw(content=lambda env, d: _envelope(env, content(env, d)), message_type=str(int(message_type)))


def _issuer_serial(issuer: Callable[[Env], x509.Name], serial: int) -> Callable[[Env, Device], bytes]:
    def content(env: Env, device: Device) -> bytes:
        name = asn1_x509.Name.load(issuer(env).public_bytes())
        return bytes(asn1_cms.IssuerAndSerialNumber({"issuer": name, "serial_number": serial}).dump())

    return content


def _ca_name(env: Env) -> x509.Name:
    return env.server.ca.ca_cert.subject


def _ra_name(env: Env) -> x509.Name:
    return env.server.ca.ra_cert.subject


def _upper_ca_name(env: Env) -> x509.Name:
    return x509.Name.from_rfc4514_string(CA_SUBJECT.upper())


def _empty_name(env: Env) -> x509.Name:
    return x509.Name([])


def _get_cert(issuer: Callable[[Env], x509.Name], serial: int | Callable[[Env], int], *,
              signer: Callable[[Env], tuple[rsa.RSAPrivateKey, x509.Certificate]] | None = None,
              profile: str | None = None) -> Callable[[Env], Sent]:
    def build(env: Env) -> bytes:
        key, cert = signer(env) if signer else _a_device(env)
        number = serial(env) if callable(serial) else serial
        content = _issuer_serial(issuer, number)(env, Device())
        envelope = _envelope(env, content)
        return _sign_parts(envelope, _attributes(envelope, message_type="21"), key=key, cert=cert)

    return _send(build, profile)


def _a_device(env: Env) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    device = Device()
    return device.key, device.signer


def _holder_signs(env: Env) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    return env.holder.key, env.holder_cert


def _holder_serial(env: Env) -> int:
    return env.holder_cert.serial_number


def _cert_poll(transaction: Callable[[Env], str], *, signer: Callable[[Env], Device] | None = None,
               issuer: Callable[[Env], x509.Name] = _ca_name, profile: str | None = None) -> Callable[[Env], Sent]:
    def build(env: Env) -> bytes:
        poller = signer(env) if signer else Device(common_name="holder")
        content = message.IssuerAndSubject({
            "issuer": asn1_x509.Name.load(issuer(env).public_bytes()),
            "subject": asn1_x509.Name.load(env.holder.subject.public_bytes()),
        }).dump()
        envelope = _envelope(env, content)
        attributes = _attributes(envelope, message_type="20", transaction_id=transaction(env))
        return _sign_parts(envelope, attributes, key=poller.key, cert=poller.signer)

    return _send(build, profile)


def _renewal(signer: Callable[[Env], tuple[rsa.RSAPrivateKey, x509.Certificate]], profile: str | None = None,
             subject: str = "CN=holder") -> Callable[[Env], Sent]:
    def build(env: Env) -> bytes:
        key, cert = signer(env)
        csr = _csr_der(client.build_csr(key, x509.Name.from_rfc4514_string(subject)))
        envelope = _envelope(env, csr)
        return _sign_parts(envelope, _attributes(envelope, message_type="17"), key=key, cert=cert)

    return _send(build, profile)


def _self_signed(subject: Callable[[Env], x509.Name]) -> Callable[[Env], tuple[rsa.RSAPrivateKey, x509.Certificate]]:
    def make(env: Env) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
        device = Device()
        return device.key, client.self_signed_signer(device.key, subject(env))

    return make


def _claims_our_ca(env: Env) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
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


def _revoked_signs(env: Env) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    return env.revoked.key, env.revoked_cert


def _signed_by(signer: Callable[[Env], tuple[rsa.RSAPrivateKey, x509.Certificate]]) -> Callable[[Env], bytes]:
    """A PKCSReq with a valid CSR (right challenge) for a key of its own, signed by ``signer``."""

    def build(env: Env) -> bytes:
        key, cert = signer(env)
        envelope = _envelope(env, _csr_with(Device().key))  # the pool never hands out one key twice in a row
        return _sign_parts(envelope, _attributes(envelope), key=key, cert=cert)

    return build


def _csr_key_in_signer_but_signed_by_another(env: Env) -> bytes:
    """The signer certificate carries the CSR's key (as a genuine device's would), the signature is another key's."""
    device, forger = Device(), Device()
    envelope = _envelope(env, _csr_der(device.csr()))
    return _sign_parts(envelope, _attributes(envelope), key=forger.key, cert=device.signer)


def _holder_cert_signed_by_another_key(env: Env) -> bytes:
    device = Device()
    envelope = _envelope(env, _csr_der(device.csr()))
    return _sign_parts(envelope, _attributes(envelope), key=device.key, cert=env.holder_cert)


def _holder_transaction_with_another_csr(env: Env) -> bytes:
    """A fresh device's valid PKCSReq (right challenge) under the holder's transactionID."""
    return env.server.pkcsreq(Device(), transaction_id=env.holder_tx).der


def _signer_with_unknown_key_algorithm(env: Env) -> bytes:
    """The signer certificate's SubjectPublicKeyInfo algorithm rsaEncryption replaced by 1.2.840.113549.1.1.99."""
    device = Device()
    signer = device.signer.public_bytes(serialization.Encoding.DER)
    rsa_encryption = bytes.fromhex("06092a864886f70d010101")
    assert signer.count(rsa_encryption) == 1
    der = _valid(env, device)
    assert der.count(signer) == 1
    return der.replace(signer, signer.replace(rsa_encryption, bytes.fromhex("06092a864886f70d010163")))


def _get_crl_oaep_sha512_to_rsa_1024(env: Env) -> bytes:
    """A GetCRL for this CA (answered SUCCESS, the CRL enveloped to the signer with the request's key transport)
    from an RSA-1024 signer asking RSAES-OAEP-SHA-512, which cannot wrap a key for a 128-octet modulus."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    signer = client.self_signed_signer(key, _name((CN, "tiny-signer")))
    content = _issuer_serial(_ca_name, 1)(env, Device())
    return client.build_pki_request(
        MessageType.GET_CRL, content, signer_cert=signer, signer_key=key, recipient=env.server.ca.ra_cert,
        transaction_id=_tid(), key_transport=KeyTransport.oaep(DigestAlgorithm.SHA512),
    ).der


# --- envelopes ------------------------------------------------------------------------------------------


def _enveloped(change: Callable[[Env, asn1_cms.EnvelopedData], None], *, challenge: str = CHALLENGE
               ) -> Callable[[Env, Device], bytes]:
    """The device's CSR enveloped to the RA, then changed with asn1crypto."""

    def content(env: Env, device: Device) -> bytes:
        info = asn1_cms.ContentInfo.load(_envelope(env, _csr_der(device.csr(challenge))))
        change(env, info["content"])
        return bytes(info.dump(force=True))

    return content


def _ktri(enveloped: asn1_cms.EnvelopedData) -> asn1_cms.KeyTransRecipientInfo:
    return enveloped["recipient_infos"][0].chosen


def _encrypted_key(value: Callable[[Env], bytes]) -> Callable[[Env, asn1_cms.EnvelopedData], None]:
    def change(env: Env, enveloped: asn1_cms.EnvelopedData) -> None:
        _ktri(enveloped)["encrypted_key"] = value(env)

    return change


def _wrapped(size: int) -> Callable[[Env], bytes]:
    """A content key of ``size`` bytes correctly wrapped for the RA (the content was encrypted with another)."""
    def wrap(env: Env) -> bytes:
        ra_key = env.server.ca.ra_cert.public_key()
        assert isinstance(ra_key, rsa.RSAPublicKey)
        return ra_key.encrypt(os.urandom(size), padding.PKCS1v15())

    return wrap


def _key_transport_oaep(env: Env, enveloped: asn1_cms.EnvelopedData) -> None:
    """RSAES-OAEP declared for a key wrapped with PKCS#1 v1.5."""
    _ktri(enveloped)["key_encryption_algorithm"] = {"algorithm": "rsaes_oaep"}


def _rid_serial(env: Env, enveloped: asn1_cms.EnvelopedData) -> None:
    rid = _ktri(enveloped)["rid"].chosen
    rid["serial_number"] = rid["serial_number"].native ^ 1


def _rid_key_identifier(env: Env, enveloped: asn1_cms.EnvelopedData) -> None:
    _ktri(enveloped)["rid"] = asn1_cms.RecipientIdentifier({"subject_key_identifier": os.urandom(20)})


def _content_algorithm(algorithm: dict[str, object]) -> Callable[[Env, asn1_cms.EnvelopedData], None]:
    def change(env: Env, enveloped: asn1_cms.EnvelopedData) -> None:
        enveloped["encrypted_content_info"]["content_encryption_algorithm"] = algorithm

    return change


def _iv(size: int) -> Callable[[Env, asn1_cms.EnvelopedData], None]:
    return _content_algorithm({"algorithm": "aes128_cbc", "parameters": os.urandom(size)})


def _ciphertext(transform: Callable[[bytes], bytes | None]) -> Callable[[Env, asn1_cms.EnvelopedData], None]:
    def change(env: Env, enveloped: asn1_cms.EnvelopedData) -> None:
        eci = enveloped["encrypted_content_info"]
        eci["encrypted_content"] = transform(bytes(eci["encrypted_content"].native))

    return change


def _recipients(make: Callable[[Env, asn1_cms.EnvelopedData], list[asn1_cms.RecipientInfo]]
                ) -> Callable[[Env, asn1_cms.EnvelopedData], None]:
    def change(env: Env, enveloped: asn1_cms.EnvelopedData) -> None:
        enveloped["recipient_infos"] = make(env, enveloped)

    return change


def _stranger_then_ra(env: Env, enveloped: asn1_cms.EnvelopedData) -> list[asn1_cms.RecipientInfo]:
    """A second, valid recipientInfo for the RA behind one for someone else (RFC 5652 allows several)."""
    stranger = asn1_cms.ContentInfo.load(_envelope(env, b"x", recipient=Device().signer))["content"]
    return [stranger["recipient_infos"][0], enveloped["recipient_infos"][0]]


def _garbled_ra_then_ra(env: Env, enveloped: asn1_cms.EnvelopedData) -> list[asn1_cms.RecipientInfo]:
    """Two recipientInfos for the RA, one with a garbled key: the server uses the first that matches, and the
    garbled one sorts first in the DER SET OF (its encryptedKey starts 0x0000)."""
    garbled = asn1_cms.RecipientInfo.load(enveloped["recipient_infos"][0].dump())
    garbled.chosen["encrypted_key"] = b"\x00\x00" + os.urandom(254)
    return [garbled, enveloped["recipient_infos"][0]]


def _ra_isn(env: Env) -> asn1_cms.IssuerAndSerialNumber:
    return cms.issuer_and_serial(env.server.ca.ra_cert)


def _kari(env: Env, enveloped: asn1_cms.EnvelopedData) -> list[asn1_cms.RecipientInfo]:
    return [asn1_cms.RecipientInfo({"kari": asn1_cms.KeyAgreeRecipientInfo({
        "version": "v3",
        "originator": {"issuer_and_serial_number": cms.issuer_and_serial(Device().signer)},
        "key_encryption_algorithm": {"algorithm": "aes128_wrap"},
        "recipient_encrypted_keys": [{"rid": {"issuer_and_serial_number": _ra_isn(env)}, "encrypted_key": b"k" * 24}],
    })})]


def _kekri(env: Env, enveloped: asn1_cms.EnvelopedData) -> list[asn1_cms.RecipientInfo]:
    return [asn1_cms.RecipientInfo({"kekri": asn1_cms.KEKRecipientInfo({
        "version": "v4", "kekid": {"key_identifier": b"kek-1"},
        "key_encryption_algorithm": {"algorithm": "aes128_wrap"}, "encrypted_key": b"k" * 24,
    })})]


def _pwri(env: Env, enveloped: asn1_cms.EnvelopedData) -> list[asn1_cms.RecipientInfo]:
    return [asn1_cms.RecipientInfo({"pwri": asn1_cms.PasswordRecipientInfo({
        "version": "v0", "key_encryption_algorithm": {"algorithm": "aes128_wrap"}, "encrypted_key": b"k" * 24,
    })})]


def _inner_content_type(env: Env, enveloped: asn1_cms.EnvelopedData) -> None:
    """encryptedContentInfo.contentType other than id-data (RFC 8894 §3.2.2: it MUST be data)."""
    enveloped["encrypted_content_info"]["content_type"] = "signed_data"


def _signed_as_envelope(env: Env, device: Device) -> bytes:
    """A SignedData where the pkcsPKIEnvelope's EnvelopedData belongs."""
    return cms.sign(_csr_der(device.csr()), signer_cert=device.signer, signer_key=device.key,
                    digest=DigestAlgorithm.SHA256, attributes=[])


# --- admin, OCSP --------------------------------------------------------------------------------------


def _admin(method: str, path: str | Callable[[Env], str], headers: dict[str, str] | None = None,
           **kwargs: object) -> Callable[[Env], Sent]:
    def send(env: Env) -> Sent:
        where = path(env) if callable(path) else path
        return Sent(env.server.http.open(where, method=method, headers=AUTH if headers is None else headers,
                                         **kwargs))  # type: ignore[arg-type]

    return send


def _target(name: str, suffix: str = "/revoke") -> Callable[[Env], str]:
    return lambda env: f"/admin/certificates/{env.admin_targets[name]}{suffix}"


def _revoked_path(env: Env) -> str:
    return f"/admin/certificates/{env.revoked_cert.serial_number:x}/revoke"


def _ocsp_for(env: Env, algorithm: hashes.HashAlgorithm | None = None) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(env.holder_cert, env.server.ca.ca_cert,
                                                        algorithm or hashes.SHA1())
    return builder.build().public_bytes(serialization.Encoding.DER)


def _ocsp_post(build: Callable[[Env], bytes], path: str = "/ocsp") -> Callable[[Env], Sent]:
    def send(env: Env) -> Sent:
        return Sent(env.server.http.post(path, data=build(env), content_type="application/ocsp-request"))

    return send


def _ocsp_tbs(change: Callable[[Env, asn1_ocsp.TBSRequest], None]) -> Callable[[Env], bytes]:
    def build(env: Env) -> bytes:
        request = asn1_ocsp.OCSPRequest.load(_ocsp_for(env))
        change(env, request["tbs_request"])
        return bytes(request.dump(force=True))

    return build


def _cert_id(change: Callable[[Env, asn1_ocsp.CertId], None]) -> Callable[[Env], bytes]:
    def tbs(env: Env, request: asn1_ocsp.TBSRequest) -> None:
        change(env, request["request_list"][0]["req_cert"])

    return _ocsp_tbs(tbs)


def _cert_id_field(field: str, value: object) -> Callable[[Env], bytes]:
    def change(env: Env, cert_id: asn1_ocsp.CertId) -> None:
        cert_id[field] = value

    return _cert_id(change)


def _md5_cert_id(env: Env, cert_id: asn1_ocsp.CertId) -> None:
    """Our CA's name and key hashed with MD5, which the responder does not implement."""
    ca = env.server.ca.ca_cert
    spki = ca.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    key_bits = bytes(asn1_x509.PublicKeyInfo.load(spki)["public_key"].contents[1:])
    cert_id["hash_algorithm"] = {"algorithm": "md5"}
    cert_id["issuer_name_hash"] = _md5(ca.subject.public_bytes())
    cert_id["issuer_key_hash"] = _md5(key_bits)


def _md5(data: bytes) -> bytes:
    h = hashes.Hash(hashes.MD5())
    h.update(data)
    return h.finalize()


def _cert_id_count(count: int) -> Callable[[Env], bytes]:
    def change(env: Env, request: asn1_ocsp.TBSRequest) -> None:
        one = request["request_list"][0]
        request["request_list"] = [asn1_ocsp.Request.load(one.dump()) for _ in range(count)]

    return _ocsp_tbs(change)


def _ocsp_nonce(size: int) -> Callable[[Env], bytes]:
    def change(env: Env, request: asn1_ocsp.TBSRequest) -> None:
        request["request_extensions"] = [{"extn_id": "nonce", "critical": False, "extn_value": b"n" * size}]

    return _ocsp_tbs(change)


def _ocsp_version(env: Env, request: asn1_ocsp.TBSRequest) -> None:
    request["version"] = 1


def _ocsp_serial(serial: int) -> Callable[[Env], bytes]:
    def change(env: Env, cert_id: asn1_ocsp.CertId) -> None:
        cert_id["serial_number"] = serial

    return _cert_id(change)


def _sha1_parameters_octets(env: Env) -> bytes:
    """The CertID's sha1 AlgorithmIdentifier with an empty OCTET STRING where NULL (or nothing) belongs."""
    der = _ocsp_for(env)
    with_null = bytes.fromhex("300906052b0e03021a0500")
    assert der.count(with_null) == 1
    return der.replace(with_null, bytes.fromhex("300906052b0e03021a0400"))


def _ocsp_get(encoded: Callable[[Env], str]) -> Callable[[Env], Sent]:
    return lambda env: Sent(env.server.http.get(f"/ocsp/{encoded(env)}"))


# --- the table ------------------------------------------------------------------------------------------

# The causes the server logs (the device only ever sees the fixed failInfoText).
R_CHALLENGE = "the challengePassword does not match"
R_NO_CHALLENGE = "the request has no challengePassword"  # also when it is not a DirectoryString
R_SIGNATURE = "the pkiMessage signature does not verify"
R_DIGEST = "messageDigest does not match the signed content"
R_TIME = "away from server time"
R_NOT_FOR_US = "not addressed to the expected recipient certificate"
R_UNWRAP = "the content-encryption key cannot be decrypted"
R_PADDING = "CBC padding is invalid"
R_IV = "IV or encrypted content is malformed"
R_BLOCKS = "not a whole number of cipher blocks"
R_CSR = "PKCS_REQ content: ValueError"
R_POP = "signed neither with the key of its certification request nor with a valid certificate of this CA"
R_NAMED_LIKE_RA = "named like the CA's own certificate 'CN=scep-server RA,O=scep-server'"
R_NAMED_LIKE_CA = "named like the CA's own certificate 'CN=Hostile Issuing CA,O=scep-server tests'"
NOW = datetime.datetime.now(datetime.UTC)
TRUNCATION_OFFSETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128, 512, -2, -1)

HTTP_CASES = [
    Case("operation lower-case pkioperation", _op("pkioperation", "POST", data=b"\x30\x00"),
         400, body="unsupported operation 'pkioperation'"),
    Case("operation upper-case PKIOPERATION", _op("PKIOPERATION"), 400, body="unsupported operation"),
    Case("operation getcacaps in lower case", _op("getcacaps"), 400, body="unsupported operation"),
    Case("operation with a trailing space", _op("GetCACaps "), 400, body="unsupported operation"),
    Case("operation with a leading tab", _op("\tGetCACert"), 400, body="unsupported operation"),
    Case("operation empty", _op(""), 400, body="missing operation parameter"),
    Case("operation of 5000 characters, echoed at most 40", _op("A" * 5000), 400, body=f"'{'A' * 40}'"),
    Case("operation with a non-ASCII letter", _op("PKIOperati\u00f3n"), 400, body="unsupported operation"),
    Case("operation with a NUL", _op("PKIOperation\x00"), 400, body="unsupported operation"),
    Case("operation GetNextCACert (not offered)", _op("GetNextCACert"), 400, body="unsupported operation"),
    Case("operation repeated, unknown first", _http("GET", "/scep?operation=Nope&operation=GetCACaps"), 400,
         body="unsupported operation 'Nope'"),
    Case("operation repeated, GetCACaps first: a PKCSReq body is ignored",
         lambda env: Sent(env.server.http.post("/scep?operation=GetCACaps&operation=PKIOperation",
                                               data=_valid(env))), expect=_same_caps),
    Case("operation only in the POST form body", lambda env: Sent(env.server.http.post(
        "/scep", data={"operation": "PKIOperation"})), 400, body="missing operation parameter"),
    Case("GET message of url-safe base64 junk", _pki_get(base64.urlsafe_b64encode(b"\xfb\xff\xfe" * 40).decode()),
         400, body="not decodable CMS"),
    Case("GET message base64 with spaces for '+'", _pki_get("MIIB AAA " * 20), 400, body="not decodable CMS"),
    Case("GET message only padding", _pki_get("===="), 400, body="message is empty"),
    Case("GET message with a character outside base64", _pki_get("MIIB*AAA"), 400, body="not valid base64"),
    Case("GET message under another parameter name", _http("GET", "/scep", query_string={
        "operation": "PKIOperation", "msg": "MAA="}), 400, body="needs a message parameter"),
    Case("GET message base64 of a certs-only SignedData",
         lambda env: Sent(env.server.http.get("/scep", query_string={"operation": "PKIOperation", "message":
                          base64.b64encode(cms.certs_only([env.server.ca.ca_cert])).decode()})), 400,
         body="exactly one signer"),
    Case("POST body of whitespace only", _pki_post(b"  \r\n\t "), 400, body="message is empty"),
    Case("POST body base64 of junk (not starting 0x30)", _pki_post(base64.b64encode(os.urandom(90))), 400),
    Case("POST body not base64 and not DER", _pki_post(b"\xff\xfe<xml/>"), 400, body="not valid base64"),
    Case("POST a DER INTEGER", _pki_post(b"\x02\x01\x05"), 400, body="not valid base64"),
    Case("POST a DER SEQUENCE holding only NULL", _pki_post(b"\x30\x02\x05\x00"), 400, body="not decodable CMS"),
    Case("POST body base64 of a pkiMessage, read (wrong challenge)",
         _posted_in_base64(_valid_wrong_challenge), fail_info=BAD_REQUEST, text=CHALLENGE_TEXT,
         reason=R_CHALLENGE),
    Case("POST 20000 nested indefinite-length SEQUENCEs", _pki_post(b"\x30\x80" * 20_000), 400,
         body="recursion limit"),
    Case("PUT /scep", _op("PKIOperation", "PUT", data=b"\x30\x00"), 405),
    Case("DELETE /scep", _op("GetCACaps", "DELETE"), 405),
    Case("PATCH /scep", _op("PKIOperation", "PATCH", data=b"\x30\x00"), 405),
    Case("PUT on the NDES path", _op("PKIOperation", "PUT", "/certsrv/mscep/mscep.dll"), 405),
    Case("OPTIONS /scep answers Allow and nothing else", _op("PKIOperation", "OPTIONS"), expect=_allow_header),
    Case("HEAD GetCACaps has no body", _op("GetCACaps", "HEAD"), expect=_head_caps),
    Case("GetCACert with a path-traversal message", _http("GET", "/scep", query_string={
        "operation": "GetCACert", "message": "../../../etc/passwd"}), expect=_ca_ra_certs),
    Case("GetCACert with a 10 KB message", _http("GET", "/scep", query_string={
        "operation": "GetCACert", "message": "x" * 10_000}), expect=_ca_ra_certs),
    Case("GetCACert with a message of control characters", _http("GET", "/scep", query_string={
        "operation": "GetCACert", "message": "\x1b[2J\r\n\x00"}), expect=_ca_ra_certs),
    Case("GetCACert by POST with a body", _op("GetCACert", "POST", data=os.urandom(64)), expect=_ca_ra_certs),
    Case("GetCACaps with a junk message", _http("GET", "/scep", query_string={
        "operation": "GetCACaps", "message": "%00%ff"}), expect=_same_caps),
    Case("GetCACaps on the unknown profile DEFAULT", _op("GetCACaps", path="/scep/DEFAULT"), 404,
         body="no SCEP profile named 'DEFAULT'"),
    Case("unknown profile of 3000 characters", _op("GetCACaps", path="/scep/" + "p" * 3000), 404),
    Case("unknown profile with unicode", _op("GetCACaps", path="/scep/d\u00e9fault"), 404),
    Case("profile path with an extra segment", _op("GetCACaps", path="/scep/default/extra"), 404),
    Case("profile path with an encoded slash", _op("GetCACaps", path="/scep/..%2fdefault"), 404),
    Case("PKIOperation POST to an unknown profile", _pki_post(b"\x30\x00", "/scep/nope"), 404),
    Case("junk to the pkiclient.exe path", _pki_post(b"\x30\x03\x02\x01\x00", "/cgi-bin/pkiclient.exe"), 400),
    Case("PKIOperation POST with an empty body but a message parameter", lambda env: Sent(env.server.http.post(
        "/scep", query_string={"operation": "PKIOperation", "message": base64.b64encode(_valid(env)).decode()},
        data=b"")), 400, body="empty body"),
]

OUTER_CASES = [
    Case("outer contentType id-data", _send(_outer_content_type("1.2.840.113549.1.7.1")), 400,
         body="not a SignedData"),
    Case("outer contentType id-digestedData", _send(_outer_content_type("1.2.840.113549.1.7.5")), 400,
         body="not a SignedData"),
    Case("outer contentType an unassigned pkcs-7 OID", _send(_outer_content_type("1.2.840.113549.1.7.9")), 400,
         body="not a SignedData"),
    *(Case(f"truncated at {offset}", _send(_truncated_at(offset)), 400) for offset in TRUNCATION_OFFSETS),
    Case("trailing NUL octet", _send(_trailing(b"\x00")), 400),
    Case("trailing second ContentInfo", _send(lambda env: _valid(env) + _valid(env)), 400),
    Case("BER indefinite-length outer SEQUENCE, read (wrong challenge)", _send(_indefinite_length),
         fail_info=BAD_REQUEST, text=CHALLENGE_TEXT, reason=R_CHALLENGE),
    Case("SignedData version 99, read (wrong challenge)",
         _send(_mutate(lambda env: _valid_wrong_challenge(env), _signed_field("version", 99))),
         fail_info=BAD_REQUEST, text=CHALLENGE_TEXT, reason=R_CHALLENGE),
    Case("SignedData with content but no signerInfos",
         _send(_mutate(_valid, _signed_field("signer_infos", []))), 400, body="found 0"),
    Case("two signers of different devices", _send(_mutate(_valid, _second_signer)), 400, body="found 2"),
    Case("certificates SET empty", _send(_mutate(_valid, _signed_field("certificates", []))), 400,
         body="signer's certificate is not in the pkiMessage"),
    Case("certificates field absent", _send(_mutate(_valid, _signed_field("certificates", None))), 400,
         body="signer's certificate is not in the pkiMessage"),
    Case("certificate of a stranger only", _send(_mutate(_valid, _certificates_of_a_stranger)), 400,
         body="signer's certificate is not in the pkiMessage"),
    Case("sid serial off by one", _send(_mutate(_valid, _sid_serial_plus_one)), 400,
         body="signer's certificate is not in the pkiMessage"),
    Case("sid issuer is the CA's name", _send(_mutate(_valid, _sid_issuer_is_the_ca)), 400,
         body="signer's certificate is not in the pkiMessage"),
    Case("sid a subjectKeyIdentifier no certificate has", _send(_mutate(_valid, _sid_key_identifier)), 400,
         body="signer's certificate is not in the pkiMessage"),
    Case("digestAlgorithms SHA-512, signer SHA-256: read (wrong challenge)",
         _send(_mutate(lambda env: _valid_wrong_challenge(env),
                       _signed_field("digest_algorithms", [{"algorithm": "sha512"}]))),
         fail_info=BAD_REQUEST, text=CHALLENGE_TEXT, reason=R_CHALLENGE),
    Case("digestAlgorithms empty: read (wrong challenge)",
         _send(_mutate(lambda env: _valid_wrong_challenge(env), _signed_field("digest_algorithms", []))),
         fail_info=BAD_REQUEST, text=CHALLENGE_TEXT, reason=R_CHALLENGE),
    Case("signer digest MD5", _send(_mutate(_valid, _signer_info("digest_algorithm", {"algorithm": "md5"}))),
         fail_info=BAD_ALG, reason="digest algorithm is not supported"),
    Case("signer digest SHA-224", _send(_mutate(_valid, _signer_info("digest_algorithm", {"algorithm": "sha224"}))),
         fail_info=BAD_ALG, reason="digest algorithm is not supported"),
    Case("signer digest SHA3-256",
         _send(_mutate(_valid, _signer_info("digest_algorithm", {"algorithm": "sha3_256"}))), fail_info=BAD_ALG,
         reason="digest algorithm is not supported"),
    Case("signer digest an unknown OID",
         _send(_mutate(_valid, _signer_info("digest_algorithm", {"algorithm": "1.2.3.4.5"}))), fail_info=BAD_ALG,
         reason="digest algorithm is not supported"),
    Case("SHA-1 GetCRL on a profile without allow_sha1", _send(lambda env: _sha1_get_crl(env), "strict"),
         fail_info=BAD_ALG, reason="SHA-1 message digests are disabled"),
    Case("signatureAlgorithm an unknown OID",
         _send(_mutate(_valid, _signer_info("signature_algorithm", {"algorithm": "1.2.3.4.5"}))), fail_info=BAD_ALG,
         reason="Signature algorithm not known for 1.2.3.4.5"),
    Case("signatureAlgorithm DSA for an RSA key",
         _send(_mutate(_valid, _signer_info("signature_algorithm", {"algorithm": "sha256_dsa"}))), fail_info=BAD_ALG,
         reason="sha256_dsa is not supported for this key"),
    Case("signatureAlgorithm ECDSA for an RSA key",
         _send(_mutate(_valid, _signer_info("signature_algorithm", {"algorithm": "sha256_ecdsa"}))),
         fail_info=BAD_ALG, reason="sha256_ecdsa is not supported for this key"),
    Case("signatureAlgorithm RSASSA-PSS without its required parameters",
         _send(_mutate(_valid, _signer_info("signature_algorithm", {"algorithm": "rsassa_pss"}))), fail_info=BAD_ALG,
         reason="RSASSA-PSS needs its parameters"),
    Case("signatureAlgorithm RSASSA-PSS over a PKCS#1 v1.5 signature", _send(_mutate(_valid, _signer_info(
        "signature_algorithm", {"algorithm": "rsassa_pss", "parameters": {
            "hash_algorithm": {"algorithm": "sha256"},
            "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": {"algorithm": "sha256"}},
            "salt_length": 32}}))), fail_info=BAD_CHECK, text=SIGNATURE_TEXT, reason=R_SIGNATURE),
    Case("signatureAlgorithm RSASSA-PSS with an MD5 MGF", _send(_mutate(_valid, _signer_info(
        "signature_algorithm", {"algorithm": "rsassa_pss", "parameters": {
            "hash_algorithm": {"algorithm": "sha256"},
            "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": {"algorithm": "md5"}},
            "salt_length": 32}}))), fail_info=BAD_ALG, reason="'md5' is not a valid DigestAlgorithm"),
    Case("signature truncated by one octet", _send(_mutate(_valid, _signature(lambda s: s[:-1]))),
         fail_info=BAD_CHECK, text=SIGNATURE_TEXT, reason=R_SIGNATURE),
    Case("signature empty", _send(_mutate(_valid, _signature(lambda s: b""))), fail_info=BAD_CHECK,
         text=SIGNATURE_TEXT, reason=R_SIGNATURE),
    Case("signature all zero", _send(_mutate(_valid, _signature(lambda s: bytes(len(s))))), fail_info=BAD_CHECK,
         text=SIGNATURE_TEXT, reason=R_SIGNATURE),
    Case("signature one octet longer", _send(_mutate(_valid, _signature(lambda s: s + b"\x00"))),
         fail_info=BAD_CHECK, text=SIGNATURE_TEXT, reason=R_SIGNATURE),
    Case("signature by another key", _send(_mutate(_valid, _signature_by_another_key)), fail_info=BAD_CHECK,
         text=SIGNATURE_TEXT, reason=R_SIGNATURE),
    Case("signature over the [0]-tagged attributes instead of the SET", _send(_raw(signed_prefix=b"\xa0")),
         fail_info=BAD_CHECK, text=SIGNATURE_TEXT, reason=R_SIGNATURE),
    Case("messageDigest missing", _send(_raw(change={Attr.MESSAGE_DIGEST.value: None})), fail_info=BAD_CHECK,
         text=SIGNATURE_TEXT, reason=R_DIGEST),
    Case("messageDigest of other content, properly signed",
         _send(_raw(change={Attr.MESSAGE_DIGEST.value: [_octets(_digest(DigestAlgorithm.SHA256, b"other"))]})),
         fail_info=BAD_CHECK, text=SIGNATURE_TEXT, reason=R_DIGEST),
    Case("messageDigest of SHA-1 length", _send(_raw(change={Attr.MESSAGE_DIGEST.value: [_octets(b"\x00" * 20)]})),
         fail_info=BAD_CHECK, text=SIGNATURE_TEXT, reason=R_DIGEST),
    Case("messageDigest empty", _send(_raw(change={Attr.MESSAGE_DIGEST.value: [_octets(b"")]})),
         fail_info=BAD_CHECK, text=SIGNATURE_TEXT, reason=R_DIGEST),
    Case("messageDigest an INTEGER", _send(_raw(change={Attr.MESSAGE_DIGEST.value: [b"\x02\x01\x01"]})), 400,
         body="not decodable CMS"),
    Case("contentType attribute id-signedData", _send(_raw(change={
        Attr.CONTENT_TYPE.value: [bytes(asn1_cms.ContentType("signed_data").dump())]})), fail_info=BAD_CHECK,
         text=SIGNATURE_TEXT, reason="contentType attribute does not match"),
    Case("contentType attribute id-envelopedData", _send(_raw(change={
        Attr.CONTENT_TYPE.value: [bytes(asn1_cms.ContentType("enveloped_data").dump())]})), fail_info=BAD_CHECK,
         text=SIGNATURE_TEXT, reason="contentType attribute does not match"),
    Case("contentType attribute with two values", _send(_raw(change={Attr.CONTENT_TYPE.value: [
        bytes(asn1_cms.ContentType("data").dump()), bytes(asn1_cms.ContentType("data").dump())]})), 400,
         body="exactly one value"),
    Case("no signed attributes at all", _send(lambda env: _no_signed_attributes(env)), 400,
         body="no signed attributes"),
    Case("messageType 0 (reserved)", _send(_raw(message_type="0")), fail_info=BAD_REQUEST,
         reason="messageType 0 is not supported"),
    Case("messageType 1", _send(_raw(message_type="1")), fail_info=BAD_REQUEST,
         reason="messageType 1 is not supported"),
    Case("messageType 2", _send(_raw(message_type="2")), fail_info=BAD_REQUEST,
         reason="messageType 2 is not supported"),
    Case("messageType 5", _send(_raw(message_type="5")), fail_info=BAD_REQUEST,
         reason="messageType 5 is not supported"),
    Case("messageType 999", _send(_raw(message_type="999")), fail_info=BAD_REQUEST,
         reason="messageType 999 is not supported"),
    Case("messageType 1000 (four digits)", _send(_raw(message_type="1000")), 400, body="usable messageType"),
    Case("messageType -1", _send(_raw(message_type="-1")), 400, body="usable messageType"),
    Case("messageType empty", _send(_raw(message_type="")), 400, body="usable messageType"),
    Case("messageType '19 ' with a space", _send(_raw(message_type="19 ")), 400, body="usable messageType"),
    Case("messageType '+19'", _send(_raw(message_type="+19")), 400, body="usable messageType"),
    Case("messageType superscript two (str.isdigit, not int)", _send(_raw(message_type="\u00b2")), 400,
         body="usable messageType"),
    Case("messageType '019' with a leading zero, read (wrong challenge)", _send(_lenient(message_type="019")),
         fail_info=BAD_REQUEST, text=CHALLENGE_TEXT, reason=R_CHALLENGE),
    Case("messageType an INTEGER", _send(_raw(change={Attr.MESSAGE_TYPE.value: [b"\x02\x01\x13"]})), 400,
         body="not a valid PrintableString"),
    Case("messageType a UTF8String", _send(_raw(change={Attr.MESSAGE_TYPE.value: [
        bytes(core.UTF8String("19").dump())]})), 400, body="not a valid PrintableString"),
    Case("messageType with two values", _send(_raw(change={Attr.MESSAGE_TYPE.value: [
        _printable("19"), _printable("21")]})), 400, body="exactly one value"),
    Case("messageType attribute twice", _send(_raw(extra=[_attribute(Attr.MESSAGE_TYPE.value, _printable("21"))])),
         400, body="appears twice"),
    Case("senderNonce attribute twice", _send(_raw(extra=[_attribute(Attr.SENDER_NONCE.value, _octets(NONCE))])),
         400, body="appears twice"),
    Case("messageDigest attribute twice", _send(_raw(extra=[_attribute(Attr.MESSAGE_DIGEST.value,
                                                                        _octets(b"\x00" * 32))])),
         400, body="appears twice"),
    Case("signingTime attribute twice", _send(_raw(extra=[_attribute(Attr.SIGNING_TIME.value, _utc(NOW))])),
         400, body="appears twice"),
    Case("transactionID empty", _send(_raw(change={Attr.TRANSACTION_ID.value: [_printable("")]})), 400,
         body="usable transactionID"),
    Case("transactionID of 10 KB", _send(_raw(transaction_id="T" * 10_240)), 400, body="usable transactionID"),
    Case("transactionID of 129 characters", _send(_raw(transaction_id="T" * 129)), 400,
         body="usable transactionID"),
    Case("transactionID of 128 characters, read (wrong challenge)",
         _send(_lenient(transaction_id=uuid.uuid4().hex * 4)), fail_info=BAD_REQUEST, text=CHALLENGE_TEXT,
         reason=R_CHALLENGE),
    Case("transactionID with ESC and CRLF, echoed as sent (wrong challenge)",
         _send(_lenient(transaction_id="tx\x1b[2J\r\nforged " + uuid.uuid4().hex)), fail_info=BAD_REQUEST,
         text=CHALLENGE_TEXT, reason=R_CHALLENGE),
    Case("transactionID a UTF8String", _send(_raw(change={Attr.TRANSACTION_ID.value: [
        bytes(core.UTF8String("tx-utf8").dump())]})), 400, body="not a valid PrintableString"),
    Case("transactionID an OCTET STRING", _send(_raw(change={Attr.TRANSACTION_ID.value: [_octets(b"tx-octets")]})),
         400, body="not a valid PrintableString"),
    Case("transactionID with two values", _send(_raw(change={Attr.TRANSACTION_ID.value: [
        _printable("A"), _printable("B")]})), 400, body="exactly one value"),
    Case("senderNonce of 0 octets", _send(_raw(nonce=b"")), 400, body="usable senderNonce"),
    Case("senderNonce of 7 octets", _send(_raw(nonce=b"1234567")), 400, body="usable senderNonce"),
    Case("senderNonce of 65 octets", _send(_raw(nonce=b"n" * 65)), 400, body="usable senderNonce"),
    *(Case(f"senderNonce of {size} octets, read and echoed (wrong challenge)", _send(_lenient(nonce=b"n" * size)),
           fail_info=BAD_REQUEST, text=CHALLENGE_TEXT, reason=R_CHALLENGE) for size in (8, 15, 17, 64)),
    Case("senderNonce a PrintableString", _send(_raw(change={Attr.SENDER_NONCE.value: [
        _printable("0123456789abcdef")]})), 400, body="not a valid OctetString"),
    Case("senderNonce an INTEGER", _send(_raw(change={Attr.SENDER_NONCE.value: [
        bytes(core.Integer(1 << 100).dump())]})), 400, body="not a valid OctetString"),
    Case("signingTime three days ahead", _send(_raw(change={Attr.SIGNING_TIME.value: [
        _utc(NOW + datetime.timedelta(days=3))]})), fail_info=BAD_TIME, reason=R_TIME),
    Case("signingTime 25 hours ago", _send(_raw(change={Attr.SIGNING_TIME.value: [
        _utc(NOW - datetime.timedelta(hours=25))]})), fail_info=BAD_TIME, reason=R_TIME),
    Case("signingTime 1950 (UTCTime's first year)", _send(_raw(change={Attr.SIGNING_TIME.value: [
        _utc(datetime.datetime(1950, 1, 1, tzinfo=datetime.UTC))]})), fail_info=BAD_TIME,
         reason="signingTime 1950-01-01T00:00:00+00:00 is more than"),
    Case("signingTime 2049 (UTCTime's last year)", _send(_raw(change={Attr.SIGNING_TIME.value: [
        _utc(datetime.datetime(2049, 12, 31, tzinfo=datetime.UTC))]})), fail_info=BAD_TIME,
         reason="signingTime 2049-12-31T00:00:00+00:00 is more than"),
    Case("signingTime a GeneralizedTime in 2100", _send(_raw(change={Attr.SIGNING_TIME.value: [
        bytes(asn1_cms.Time({"generalized_time": datetime.datetime(2100, 1, 1, tzinfo=datetime.UTC)}).dump())]})),
         fail_info=BAD_TIME, reason="signingTime 2100-01-01T00:00:00+00:00 is more than"),
    Case("signingTime an OCTET STRING", _send(_raw(change={Attr.SIGNING_TIME.value: [_octets(b"yesterday")]})),
         400, body="not decodable CMS"),
    Case("signingTime a zone-less GeneralizedTime in 1999", _send(_raw(change={Attr.SIGNING_TIME.value: [
        b"\x18\x0e19991231235959"]})), fail_info=BAD_TIME, reason="signingTime 1999-12-31T23:59:59+00:00 is more than"),
    Case("signingTime a GeneralizedTime in the year 0000", _send(_raw(change={Attr.SIGNING_TIME.value: [
        b"\x18\x0f00000101000000Z"]})), fail_info=BAD_TIME, reason="signingTime lies in the year 0"),
    Case("signer certificate with an unknown public key algorithm", _send(_signer_with_unknown_key_algorithm),
         fail_info=BAD_ALG, reason="the signer's public key uses an unsupported algorithm"),
    Case("signingTime absent, read (wrong challenge)", _send(_lenient(change={Attr.SIGNING_TIME.value: None})),
         fail_info=BAD_REQUEST, text=CHALLENGE_TEXT, reason=R_CHALLENGE),
    Case("eContent absent (detached): no pkcsPKIEnvelope", _send(_raw(content=lambda env, d: None)),
         fail_info=BAD_REQUEST, reason="carries no pkcsPKIEnvelope"),
    Case("eContent empty", _send(_raw(content=lambda env, d: b"")), fail_info=BAD_CHECK,
         reason="pkcsPKIEnvelope is not decodable"),
    Case("GET with a SHA-512-signed message, read (wrong challenge)",
         _send(_lenient(digest=DigestAlgorithm.SHA512), method="GET"), fail_info=BAD_REQUEST, text=CHALLENGE_TEXT,
         reason=R_CHALLENGE),
]


def _sha1_get_crl(env: Env) -> bytes:
    device = Device()
    return client.build_get_crl(_ca_name(env), 1, signer_cert=device.signer, signer_key=device.key,
                                recipient=env.server.ca.ra_cert, digest=DigestAlgorithm.SHA1).der


def _no_signed_attributes(env: Env) -> bytes:
    info = asn1_cms.ContentInfo.load(_valid(env))
    info["content"]["signer_infos"][0]["signed_attrs"] = None
    return bytes(info.dump(force=True))


ENVELOPE_CASES = [
    Case("encrypted to the CA certificate, not the RA",
         _send(_raw(content=lambda env, d: _envelope(env, _csr_der(d.csr()), recipient=env.server.ca.ca_cert))),
         fail_info=BAD_CHECK, reason=R_NOT_FOR_US),
    Case("recipient serial of the RA with one bit flipped", _send(_raw(content=_enveloped(_rid_serial))),
         fail_info=BAD_CHECK, reason=R_NOT_FOR_US),
    Case("recipient a subjectKeyIdentifier the RA does not have", _send(_raw(content=_enveloped(_rid_key_identifier))),
         fail_info=BAD_CHECK, reason=R_NOT_FOR_US),
    Case("wrapped content key empty", _send(_raw(content=_enveloped(_encrypted_key(lambda env: b"")))),
         fail_info=BAD_CHECK, reason=R_UNWRAP),
    Case("wrapped content key longer than the RSA modulus",
         _send(_raw(content=_enveloped(_encrypted_key(lambda env: os.urandom(257))))), fail_info=BAD_CHECK,
         reason=R_UNWRAP),
    Case("wrapped content key all 0xff", _send(_raw(content=_enveloped(_encrypted_key(lambda env: b"\xff" * 256)))),
         fail_info=BAD_CHECK, reason=R_UNWRAP),
    Case("wrapped content key of 15 octets for AES-128", _send(_raw(content=_enveloped(_encrypted_key(_wrapped(15))))),
         fail_info=BAD_CHECK, reason="content-encryption key has 15 bytes, not 16"),
    Case("wrapped content key of 32 octets for AES-128", _send(_raw(content=_enveloped(_encrypted_key(_wrapped(32))))),
         fail_info=BAD_CHECK, reason="content-encryption key has 32 bytes, not 16"),
    Case("right-size content key, but not the one used", _send(_raw(content=_enveloped(_encrypted_key(_wrapped(16))))),
         fail_info=BAD_CHECK, reason=(R_PADDING, R_CSR)),
    Case("RSAES-OAEP declared for a PKCS#1 v1.5 wrapped key", _send(_raw(content=_enveloped(_key_transport_oaep))),
         fail_info=BAD_CHECK, reason=R_UNWRAP),
    Case("content cipher RC2", _send(_raw(content=_enveloped(_content_algorithm({
        "algorithm": "rc2", "parameters": {"rc2_parameter_version": 58, "iv": os.urandom(8)}})))), fail_info=BAD_ALG,
         reason="content encryption rc2 is not supported"),
    Case("content cipher RC4", _send(_raw(content=_enveloped(_content_algorithm({"algorithm": "rc4"})))),
         fail_info=BAD_ALG, reason="content encryption rc4 is not supported"),
    Case("content cipher AES-128-GCM", _send(_raw(content=_enveloped(_content_algorithm({
        "algorithm": "aes128_gcm", "parameters": core.Any.load(_tlv(0x30, _octets(os.urandom(12)) + b"\x02\x01\x10"))
    })))),
         fail_info=BAD_ALG, reason="content encryption aes128_gcm is not supported"),
    Case("content cipher AES-128-ECB", _send(_raw(content=_enveloped(_content_algorithm({"algorithm": "aes128_ecb"})))),
         fail_info=BAD_ALG, reason="content encryption aes128_ecb is not supported"),
    Case("content cipher an unknown OID", _send(_raw(content=_enveloped(_content_algorithm({
        "algorithm": "1.3.6.1.4.1.99999.1", "parameters": core.OctetString(os.urandom(16))})))), fail_info=BAD_ALG,
         reason="content encryption 1.3.6.1.4.1.99999.1 is not supported"),
    Case("DES on the legacy profile with garbage inside",
         _send(_raw(content=lambda env, d: _envelope(env, os.urandom(40), ContentCipher.DES)), "legacy"),
         fail_info=BAD_CHECK, reason=R_CSR),
    Case("IV of 8 octets for AES", _send(_raw(content=_enveloped(_iv(8)))), fail_info=BAD_CHECK, reason=R_IV),
    Case("IV of 0 octets", _send(_raw(content=_enveloped(_iv(0)))), fail_info=BAD_CHECK, reason=R_IV),
    Case("IV of 32 octets", _send(_raw(content=_enveloped(_iv(32)))), fail_info=BAD_CHECK, reason=R_IV),
    Case("IV absent", _send(_raw(content=_enveloped(_content_algorithm({"algorithm": "aes128_cbc"})))),
         fail_info=BAD_CHECK, reason=R_IV),
    Case("ciphertext one octet short", _send(_raw(content=_enveloped(_ciphertext(lambda c: c[:-1])))),
         fail_info=BAD_CHECK, reason=R_BLOCKS),
    Case("ciphertext without its last block", _send(_raw(content=_enveloped(_ciphertext(lambda c: c[:-16])))),
         fail_info=BAD_CHECK, reason=(R_PADDING, R_CSR)),
    Case("ciphertext with an extra random block", _send(_raw(content=_enveloped(_ciphertext(
        lambda c: c + os.urandom(16))))), fail_info=BAD_CHECK, reason=(R_PADDING, R_CSR)),
    Case("ciphertext empty", _send(_raw(content=_enveloped(_ciphertext(lambda c: b"")))), fail_info=BAD_CHECK,
         reason=R_BLOCKS),
    Case("ciphertext absent", _send(_raw(content=_enveloped(_ciphertext(lambda c: None)))), fail_info=BAD_CHECK,
         reason=R_IV),
    Case("no recipientInfos", _send(_raw(content=_enveloped(_recipients(lambda env, e: [])))), fail_info=BAD_CHECK,
         reason=R_NOT_FOR_US),
    Case("a stranger's recipientInfo before the RA's, read (wrong challenge)",
         _send(_raw(content=_enveloped(_recipients(_stranger_then_ra), challenge=WRONG))), fail_info=BAD_REQUEST,
         text=CHALLENGE_TEXT, reason=R_CHALLENGE),
    Case("two recipientInfos for the RA, the first garbled",
         _send(_raw(content=_enveloped(_recipients(_garbled_ra_then_ra)))), fail_info=BAD_CHECK,
         reason=("the content-encryption key", R_PADDING, R_CSR)),  # implicit rejection: any key length
    Case("KeyAgreeRecipientInfo only", _send(_raw(content=_enveloped(_recipients(_kari)))), fail_info=BAD_CHECK,
         reason=R_NOT_FOR_US),
    Case("KEKRecipientInfo only", _send(_raw(content=_enveloped(_recipients(_kekri)))), fail_info=BAD_CHECK,
         reason=R_NOT_FOR_US),
    Case("PasswordRecipientInfo only", _send(_raw(content=_enveloped(_recipients(_pwri)))), fail_info=BAD_CHECK,
         reason=R_NOT_FOR_US),
    Case("encryptedContentInfo contentType id-signedData", _send(_raw(content=_enveloped(_inner_content_type))),
         fail_info=BAD_CHECK, reason="the encrypted content is not of type data"),
    Case("pkcsPKIEnvelope is a SignedData", _send(_raw(content=_signed_as_envelope)), fail_info=BAD_CHECK,
         reason="pkcsPKIEnvelope is not an EnvelopedData"),
    Case("pkcsPKIEnvelope is random octets", _send(_raw(content=lambda env, d: os.urandom(200))), fail_info=BAD_CHECK,
         reason="pkcsPKIEnvelope is not decodable"),
    Case("PKCSReq whose envelope holds an IssuerAndSerialNumber",
         _send(_raw(content=lambda env, d: _envelope(env, _issuer_serial(_ca_name, 5)(env, d)))), fail_info=BAD_CHECK,
         reason=R_CSR),
    Case("GetCert whose envelope holds a CSR", _send(_inner_typed(MessageType.GET_CERT, lambda env, d: _csr_der(
        d.csr()))), fail_info=BAD_CHECK, reason="GET_CERT content: ValueError"),
    Case("CertPoll whose envelope holds a CSR", _send(_inner_typed(MessageType.CERT_POLL, lambda env, d: _csr_der(
        d.csr()))), fail_info=BAD_CHECK, reason="CERT_POLL content: ValueError"),
    Case("GetCRL whose envelope is empty", _send(_inner_typed(MessageType.GET_CRL, lambda env, d: b"")),
         fail_info=BAD_CHECK, reason="GET_CRL content: ValueError"),
]


def _dsa_csr(env: Env) -> bytes:
    key = dsa.generate_private_key(key_size=1024)
    csr = (x509.CertificateSigningRequestBuilder().subject_name(env.holder.subject)
           .add_attribute(AttributeOID.CHALLENGE_PASSWORD, CHALLENGE.encode()).sign(key, hashes.SHA256()))
    return _csr_der(csr)


def _held(csr: Callable[[Env], bytes]) -> Callable[[Env], bytes]:
    def build(env: Env) -> bytes:
        content = _envelope(env, csr(env))
        return _sign_parts(content, _attributes(content), key=env.holder.key, cert=env.holder_cert)

    return build


def _own_rsa_key(bits: int) -> Callable[[Env], bytes]:
    """A PKCSReq signed by the key of its CSR (possession proved), that key of ``bits`` bits."""
    return lambda env: _raw(device=Device(key=rsa.generate_private_key(public_exponent=65537, key_size=bits)))(env)


def _rsa(bits: int) -> Callable[[Env], bytes]:
    return lambda env: _csr_with(rsa.generate_private_key(public_exponent=65537, key_size=bits), env.holder.subject)


def _ec(curve: ec.EllipticCurve) -> Callable[[Env], bytes]:
    return lambda env: _csr_with(ec.generate_private_key(curve), env.holder.subject)


OU = NameOID.ORGANIZATIONAL_UNIT_NAME
CN = NameOID.COMMON_NAME

CSR_CASES = [
    Case("a certificate where the CSR belongs", _send(_csr_message(_certificate_as_csr)), fail_info=BAD_CHECK,
         reason=R_CSR),
    Case("the CSR in PEM", _send(_csr_message(lambda d: d.csr().public_bytes(serialization.Encoding.PEM))),
         fail_info=BAD_CHECK, reason=R_CSR),
    Case("the CSR with a trailing octet", _send(_csr_message(lambda d: _csr_der(d.csr()) + b"\x00")),
         fail_info=BAD_CHECK, reason="ExtraData"),
    Case("the CSR truncated", _send(_csr_message(lambda d: _csr_der(d.csr())[:-20])), fail_info=BAD_CHECK,
         reason="ShortData"),
    Case("the CSR empty", _send(_csr_message(lambda d: b"")), fail_info=BAD_CHECK, reason="ShortData"),
    Case("CSR signed by another key", _send(_csr_message(_csr_signed_by_another_key)), fail_info=BAD_CHECK,
         reason="certification request signature does not verify"),
    Case("CSR signed with MD5", _send(_csr_message(_csr_signed_with_md5)), fail_info=BAD_CHECK,
         reason="certification request signature does not verify"),
    Case("CSR version 1 (v2)", _send(_csr_message(_csr_version(1))), fail_info=BAD_CHECK,
         reason="1 is not a valid CSR version"),
    Case("CSR version -1", _send(_csr_message(_csr_version(-1))), fail_info=BAD_CHECK,
         reason="PKCS_REQ content: ValueError: error parsing asn1 value"),
    Case("CSR with a garbled subjectAltName extension", _send(_csr_message(_csr_with_garbled_san)),
         fail_info=BAD_CHECK, reason="PKCS_REQ content: ValueError"),
    Case("CSR subject over 2048 characters", _send(_subject_csr(_name(*[(OU, "u" * 60)] * 40))), fail_info=BAD_CHECK,
         reason="the subject is longer than 2048 characters"),
    Case("no challengePassword", _send(_csr_message(lambda d: _csr_with(d.key, challenge=None))),
         fail_info=BAD_REQUEST, text=CHALLENGE_TEXT, reason="the request has no challengePassword"),
    Case("challenge empty", _send(_csr_message(lambda d: _csr_with(d.key, challenge=""))), fail_info=BAD_REQUEST,
         text=CHALLENGE_TEXT, reason=R_CHALLENGE),
    Case("challenge with a trailing space", _send(_csr_message(lambda d: _csr_with(d.key, challenge=CHALLENGE + " "))),
         fail_info=BAD_REQUEST, text=CHALLENGE_TEXT, reason=R_CHALLENGE),
    Case("challenge in upper case", _send(_csr_message(lambda d: _csr_with(d.key, challenge=CHALLENGE.upper()))),
         fail_info=BAD_REQUEST, text=CHALLENGE_TEXT, reason=R_CHALLENGE),
    Case("challenge a prefix of the secret", _send(_csr_message(lambda d: _csr_with(d.key, challenge=CHALLENGE[:-1]))),
         fail_info=BAD_REQUEST, text=CHALLENGE_TEXT, reason=R_CHALLENGE),
    Case("challenge followed by NUL", _send(_csr_message(lambda d: _csr_with(d.key, challenge=CHALLENGE + "\x00"))),
         fail_info=BAD_REQUEST, text=CHALLENGE_TEXT, reason=R_CHALLENGE),
    Case("challenge of 10 KB", _send(_csr_message(lambda d: _csr_with(d.key, challenge="c" * 10_240))),
         fail_info=BAD_REQUEST, text=CHALLENGE_TEXT, reason=R_CHALLENGE),
    Case("challenge an INTEGER", _send(_csr_message(_challenge_attribute(b"\x02\x01\x07"))), fail_info=BAD_REQUEST,
         text=CHALLENGE_TEXT, reason=R_NO_CHALLENGE),
    Case("challenge an OCTET STRING of the secret", _send(_csr_message(_challenge_attribute(
        _octets(CHALLENGE.encode())))), fail_info=BAD_REQUEST, text=CHALLENGE_TEXT, reason=R_NO_CHALLENGE),
    Case("challenge a BMPString of another secret", _send(_csr_message(_challenge_attribute(
        bytes(core.BMPString(WRONG).dump())))), fail_info=BAD_REQUEST, text=CHALLENGE_TEXT, reason=R_CHALLENGE),
    Case("challengePassword with two values", _send(_csr_message(_challenge_attribute(
        bytes(core.UTF8String(CHALLENGE).dump()), bytes(core.UTF8String(WRONG).dump())))), fail_info=BAD_CHECK,
         reason="Only single-valued attributes are supported"),
    Case("challengePassword with no value", _send(_csr_message(_challenge_attribute())), fail_info=BAD_CHECK,
         reason="Only single-valued attributes are supported"),
    Case("RSA 1536 key signing its own request", _send(_own_rsa_key(1536)), fail_info=BAD_REQUEST,
         reason="the RSA key has 1536 bits: this profile needs at least 2048"),
    Case("CSR for an RSA 1536 key, signed by another key (no possession)", _send(_csr_message(lambda d: _csr_with(
        rsa.generate_private_key(public_exponent=65537, key_size=1536)))), fail_info=BAD_CHECK, reason=R_POP),
    Case("RSA 1536 key, possession proved by our certificate", _send(_held(_rsa(1536))), fail_info=BAD_REQUEST,
         reason="the RSA key has 1536 bits"),
    Case("RSA 1024 key, possession proved by our certificate", _send(_held(_rsa(1024))), fail_info=BAD_REQUEST,
         reason="the RSA key has 1024 bits"),
    Case("EC secp256k1 key (curve not allowed)", _send(_held(_ec(ec.SECP256K1()))), fail_info=BAD_REQUEST,
         reason="curve secp256k1 is not allowed"),
    Case("EC P-256 key on an RSA-only profile", _send(_held(_ec(ec.SECP256R1())), "rsaonly"), fail_info=BAD_REQUEST,
         reason="EC keys are not allowed by this profile"),
    Case("Ed25519 key, possession proved by our certificate",
         _send(_held(lambda env: _csr_with(ed25519.Ed25519PrivateKey.generate(), env.holder.subject))),
         fail_info=BAD_ALG, reason="Ed25519 keys are not supported"),
    Case("Ed448 key, possession proved by our certificate",
         _send(_held(lambda env: _csr_with(ed448.Ed448PrivateKey.generate(), env.holder.subject))), fail_info=BAD_ALG,
         reason="Ed448 keys are not supported"),
    Case("DSA key, possession proved by our certificate", _send(_held(_dsa_csr)), fail_info=BAD_ALG,
         reason="DSA keys are not supported"),
    Case("empty subject and no subjectAltName", _send(_subject_csr(x509.Name([]))), fail_info=BAD_REQUEST,
         reason="there is nothing to certify"),
    Case("subject of about 600 characters", _send(_subject_csr(_name(*[(OU, "u" * 60)] * 10))),
         fail_info=BAD_REQUEST, reason="(max_subject_length)"),
    *(Case(f"{label} in the CN", _send(_subject_csr(_name((CN, f"pc{char}01")))), fail_info=BAD_REQUEST,
           reason=f"CN contains the control character U+{ord(char):04X}")
      for label, char in (("NUL", "\x00"), ("DEL", "\x7f"), ("BEL", "\x07"), ("TAB", "\t"), ("C1 CSI", "\x9b"),
                          ("U+202E RLO", "\u202e"), ("U+2028 LINE SEPARATOR", "\u2028"))),
    Case("control character in an OU", _send(_subject_csr(_name((CN, "pc-01"), (OU, "ops\x1b[31m")))),
         fail_info=BAD_REQUEST, reason="OU contains the control character U+001B (ESC)"),
    Case("subject equal to the RA's", _send(_ca_named_csr(_ra_name)), fail_info=BAD_REQUEST, reason=R_NAMED_LIKE_RA),
    Case("CN of the RA under another O", _send(_ca_named_csr(lambda env: _name(
        (CN, str(env.server.ca.ra_cert.subject.get_attributes_for_oid(CN)[0].value)), (NameOID.ORGANIZATION_NAME, "x"))
    )), fail_info=BAD_REQUEST, reason=R_NAMED_LIKE_RA),
    Case("the CA's CN as a second CN", _send(_subject_csr(_name((CN, "device-9"), (CN, "Hostile Issuing CA")))),
         fail_info=BAD_REQUEST, reason=R_NAMED_LIKE_CA),
    Case("the CA's CN in full-width letters", _send(_subject_csr(_name((CN, "\uff28\uff4f\uff53\uff54\uff49\uff4c"
                                                                          "\uff45 Issuing CA")))),
         fail_info=BAD_REQUEST, reason=R_NAMED_LIKE_CA),
    Case("100 DNS subjectAltNames", _send(_san_csr(*[x509.DNSName(f"h{i}.example") for i in range(100)])),
         fail_info=BAD_REQUEST, reason="asks for 100 subjectAltNames"),
    Case("21 IP subjectAltNames", _send(_san_csr(*[x509.IPAddress(ipaddress.ip_address(
        f"192.0.2.{i}")) for i in range(1, 22)])), fail_info=BAD_REQUEST, reason="asks for 21 subjectAltNames"),
    Case("registeredID subjectAltName", _send(_san_csr(x509.RegisteredID(x509.ObjectIdentifier("1.2.3.4")))),
         fail_info=BAD_REQUEST, reason="of type rid is not supported"),
    Case("directoryName subjectAltName", _send(_san_csr(x509.DirectoryName(_name((CN, "Administrator"))))),
         fail_info=BAD_REQUEST, reason="of type dirname is not supported"),
    Case("otherName of an unknown type", _send(_san_csr(x509.OtherName(
        x509.ObjectIdentifier("1.3.6.1.4.1.99999.7"), bytes(core.UTF8String("x").dump())))), fail_info=BAD_REQUEST,
         reason="of type othername 1.3.6.1.4.1.99999.7 is not supported"),
    Case("UPN holding an INTEGER", _send(_upn_holding(b"\x02\x01\x01")), fail_info=BAD_REQUEST,
         reason="UPN subjectAltName does not hold a string"),
    Case("UPN holding a UTF8String with ESC", _send(_upn_holding(bytes(core.UTF8String("admin\x1b@corp").dump()))),
         fail_info=BAD_REQUEST, reason="upn subjectAltName contains the control character U+001B"),
    Case("SID URI subjectAltName with an upper-case prefix", _send(_san_csr(x509.UniformResourceIdentifier(
        "TAG:MICROSOFT.COM,2022-09-14:SID:S-1-5-21-1-2-3-500"))), fail_info=BAD_REQUEST,
         reason="URI subjectAltName: this profile does not certify SIDs"),
    Case("SID extension on a profile without allow_sid_extension", _send(_csr_message(lambda d: _csr_with(
        d.key, extensions=[sid_extension_value("S-1-5-21-1004336348-1177238915-682003330-500")]))),
         fail_info=BAD_REQUEST, reason="SID extension (1.3.6.1.4.1.311.25.2): this profile does not certify SIDs"),
    Case("DNS subjectAltName of 300 characters", _send(_san_csr(x509.DNSName("a" * 296 + ".com"))),
         fail_info=BAD_REQUEST, reason="dns subjectAltName has 300 characters"),
    Case("URI subjectAltName of 300 characters", _send(_san_csr(x509.UniformResourceIdentifier(
        "https://example.com/" + "p" * 280))), fail_info=BAD_REQUEST, reason="uri subjectAltName has 300 characters"),
    Case("email subjectAltName of 300 characters", _send(_san_csr(x509.RFC822Name("u" * 288 + "@example.com"))),
         fail_info=BAD_REQUEST, reason="email subjectAltName has 300 characters"),
    Case("DNS subjectAltName with ESC", _send(_san_csr(x509.DNSName("a\x1b[2J.example"))), fail_info=BAD_REQUEST,
         reason="dns subjectAltName contains the control character U+001B"),
    Case("IP subjectAltName that is a network", _send(_san_csr(x509.IPAddress(
        ipaddress.ip_network("10.0.0.0/8")))), fail_info=BAD_REQUEST, reason="must be one address, not a network"),
    Case("EKU anyExtendedKeyUsage alone", _send(_eku_csr(ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE)),
         fail_info=BAD_REQUEST, reason="usage anyExtendedKeyUsage (2.5.29.37.0)"),
    Case("EKU Certificate Request Agent alone", _send(_eku_csr(CERTIFICATE_REQUEST_AGENT)), fail_info=BAD_REQUEST,
         reason="(1.3.6.1.4.1.311.20.2.1), which is granted only"),
    Case("EKU Smartcard Logon alone", _send(_eku_csr(ExtendedKeyUsageOID.SMARTCARD_LOGON)), fail_info=BAD_REQUEST,
         reason="(1.3.6.1.4.1.311.20.2.2), which is granted only"),
    Case("EKU OCSPSigning alone", _send(_eku_csr(ExtendedKeyUsageOID.OCSP_SIGNING)), fail_info=BAD_REQUEST,
         reason="(1.3.6.1.5.5.7.3.9), which is granted only"),
    Case("EKU PKINIT client", _send(_eku_csr(PKINIT_CLIENT_AUTH)), fail_info=BAD_REQUEST,
         reason="(1.3.6.1.5.2.3.4), which is granted only"),
    Case("EKU PKINIT KDC", _send(_eku_csr(ExtendedKeyUsageOID.KERBEROS_PKINIT_KDC)), fail_info=BAD_REQUEST,
         reason="(1.3.6.1.5.2.3.5), which is granted only"),
    Case("EKU emailProtection", _send(_eku_csr(ExtendedKeyUsageOID.EMAIL_PROTECTION)), fail_info=BAD_REQUEST,
         reason="(1.3.6.1.5.5.7.3.4): this profile grants client_auth"),
    Case("EKU timeStamping", _send(_eku_csr(ExtendedKeyUsageOID.TIME_STAMPING)), fail_info=BAD_REQUEST,
         reason="(1.3.6.1.5.5.7.3.8): this profile grants client_auth"),
    Case("EKU an unknown OID", _send(_eku_csr(x509.ObjectIdentifier("1.3.6.1.4.1.99999.3"))), fail_info=BAD_REQUEST,
         reason="(1.3.6.1.4.1.99999.3): this profile grants client_auth"),
    Case("EKU serverAuth beside clientAuth", _send(_eku_csr(ExtendedKeyUsageOID.CLIENT_AUTH,
                                                          ExtendedKeyUsageOID.SERVER_AUTH)), fail_info=BAD_REQUEST,
         reason="(1.3.6.1.5.5.7.3.1): this profile grants client_auth"),
    Case("EKU codeSigning on the legacy profile", _send(_eku_csr(ExtendedKeyUsageOID.CODE_SIGNING), "legacy"),
         fail_info=BAD_REQUEST, reason="(1.3.6.1.5.5.7.3.3): this profile grants client_auth"),
    Case("EKU Certificate Request Agent on the RSA-only profile", _send(_eku_csr(CERTIFICATE_REQUEST_AGENT),
                                                                        "rsaonly"), fail_info=BAD_REQUEST,
         reason="(1.3.6.1.4.1.311.20.2.1), which is granted only"),
    Case("basicConstraints CA:TRUE with a wrong challenge", _send(_csr_message(lambda d: _csr_with(
        d.key, challenge=WRONG, extensions=[x509.BasicConstraints(ca=True, path_length=None)]))),
         fail_info=BAD_REQUEST, text=CHALLENGE_TEXT, reason=R_CHALLENGE),
]

POP_CASES = [
    Case("signer certificate with the CSR's key, signature by another key",
         _send(_csr_key_in_signer_but_signed_by_another), fail_info=BAD_CHECK, text=SIGNATURE_TEXT, reason=R_SIGNATURE),
    Case("our holder's certificate as signer, signature by another key", _send(_holder_cert_signed_by_another_key),
         fail_info=BAD_CHECK, text=SIGNATURE_TEXT, reason=R_SIGNATURE),
    Case("PKCSReq signed by a self-signed certificate with the CA's subject",
         _send(_signed_by(_self_signed(_ca_name))), fail_info=BAD_CHECK, reason=R_POP),
    Case("PKCSReq signed by a certificate claiming our CA as issuer", _send(_signed_by(_claims_our_ca)),
         fail_info=BAD_CHECK, reason=R_POP),
    Case("PKCSReq signed by our revoked certificate", _send(_signed_by(_revoked_signs)),
         fail_info=BAD_CHECK, reason=R_POP),
    Case("RenewalReq signed by a self-signed certificate", _renewal(_self_signed(lambda env: env.holder.subject)),
         fail_info=BAD_REQUEST, reason="RenewalReq must be signed by a certificate this CA issued"),
    Case("RenewalReq signed by a certificate claiming our CA as issuer", _renewal(_claims_our_ca),
         fail_info=BAD_REQUEST, reason="RenewalReq must be signed by a certificate this CA issued"),
    Case("RenewalReq signed by our revoked certificate", _renewal(_revoked_signs), fail_info=BAD_REQUEST,
         reason="is revoked"),
    Case("RenewalReq by the holder for another subject", _renewal(_holder_signs, subject="CN=administrator"),
         fail_info=BAD_REQUEST, reason="a renewal must keep the subject"),
    Case("PKCSReq of another device under the holder's transactionID", _send(_holder_transaction_with_another_csr),
         fail_info=BAD_REQUEST, reason="already used for a different certification request"),
    Case("GetCRL from an RSA-1024 signer asking RSAES-OAEP-SHA-512", _send(_get_crl_oaep_sha512_to_rsa_1024),
         fail_info=BAD_ALG, reason="cannot be wrapped with rsaes_oaep for this RSA key"),
    Case("RenewalReq on a profile without renewal", _renewal(_holder_signs, "strict"), fail_info=BAD_REQUEST,
         reason="renewal is disabled for profile strict"),
    Case("RenewalReq to another profile than the signer's", _renewal(_holder_signs, "legacy"), fail_info=BAD_REQUEST,
         reason="was issued for profile default"),
    Case("CertPoll for an unknown transaction", _cert_poll(lambda env: "NEVER-" + _tid()), fail_info=BAD_CERT_ID,
         reason="no transaction 'NEVER-"),
    Case("CertPoll for the holder's transaction on another profile",
         _cert_poll(lambda env: env.holder_tx, signer=lambda env: env.holder, profile="legacy"),
         fail_info=BAD_CERT_ID, reason="no transaction 'HOLDER-TX' in profile legacy"),
    Case("CertPoll for the holder's transaction by a foreign issuer name, signed by the holder",
         _cert_poll(lambda env: env.holder_tx, signer=lambda env: env.holder,
                    issuer=lambda env: _name((CN, "Other CA"))), fail_info=BAD_CERT_ID,
         reason="issuer 'CN=Other CA' is not this CA"),
    Case("CertPoll for an unknown transaction, foreign issuer",
         _cert_poll(lambda env: _tid(), issuer=lambda env: _name((CN, "Other CA"))), fail_info=BAD_CERT_ID,
         reason="in profile default"),
    Case("GetCert serial 2^159 (storable, never issued)", _get_cert(_ca_name, 1 << 159), fail_info=BAD_CERT_ID,
         reason="no certificate with serial 8000000000000000000000000000000000000000"),
    Case("GetCert serial 2^160 - 1", _get_cert(_ca_name, (1 << 160) - 1), fail_info=BAD_CERT_ID,
         reason="no certificate with serial ffffffffffffffffffffffffffffffffffffffff"),
    Case("GetCert serial -2^64", _get_cert(_ca_name, -(1 << 64)), fail_info=BAD_CERT_ID,
         reason="serial -18446744073709551616 is not a serial number this CA issues"),
    Case("GetCert serial 1", _get_cert(_ca_name, 1), fail_info=BAD_CERT_ID, reason="no certificate with serial 1'"),
    Case("GetCert for the holder's serial by the RA's name", _get_cert(_ra_name, _holder_serial,
                                                                        signer=_holder_signs), fail_info=BAD_CERT_ID,
         reason="issuer 'CN=scep-server RA,O=scep-server' is not this CA"),
    Case("GetCert for the holder's serial by the CA's name in upper case",
         _get_cert(_upper_ca_name, _holder_serial, signer=_holder_signs), fail_info=BAD_CERT_ID,
         reason="issuer 'CN=HOSTILE ISSUING CA,O=SCEP-SERVER TESTS' is not this CA"),
    Case("GetCert with an empty issuer", _get_cert(_empty_name, _holder_serial, signer=_holder_signs),
         fail_info=BAD_CERT_ID, reason="issuer '' is not this CA"),
    Case("GetCert for the holder's certificate on another profile",
         _get_cert(_ca_name, _holder_serial, signer=_holder_signs, profile="legacy"), fail_info=BAD_CERT_ID,
         reason="belongs to profile default, not legacy"),
    Case("GetCert for the holder's certificate by a self-signed signer with its subject",
         _get_cert(_ca_name, _holder_serial, signer=_self_signed(lambda env: env.holder.subject)),
         fail_info=BAD_CERT_ID, reason="is not the GetCert signer's own"),
    Case("GetCRL for the RA's name", _send(_inner_typed(MessageType.GET_CRL, _issuer_serial(_ra_name, 1))),
         fail_info=BAD_CERT_ID, reason="issuer 'CN=scep-server RA,O=scep-server' is not this CA"),
    Case("GetCRL with an empty issuer", _send(_inner_typed(MessageType.GET_CRL, _issuer_serial(_empty_name, 1))),
         fail_info=BAD_CERT_ID, reason="issuer '' is not this CA"),
    Case("GetCRL for the CA's name in upper case",
         _send(_inner_typed(MessageType.GET_CRL, _issuer_serial(_upper_ca_name, 1))), fail_info=BAD_CERT_ID,
         reason="issuer 'CN=HOSTILE ISSUING CA,O=SCEP-SERVER TESTS' is not this CA"),
]

ADMIN_CASES = [
    Case("admin without Authorization", _admin("GET", "/admin/certificates", headers={}), 401,
         body="valid bearer token is required"),
    Case("admin Bearer with a wrong token", _admin("GET", "/admin/certificates", {"Authorization": "Bearer nope"}),
         401),
    Case("admin Bearer with the token upper-cased", _admin("GET", "/admin/certificates", {
        "Authorization": f"Bearer {TOKEN.upper()}"}), 401),
    Case("admin Bearer with the token less its last character", _admin("GET", "/admin/certificates", {
        "Authorization": f"Bearer {TOKEN[:-1]}"}), 401),
    Case("admin token in a query parameter", _admin("GET", f"/admin/certificates?access_token={TOKEN}", {}), 401),
    Case("admin token in another header", _admin("GET", "/admin/certificates", {"X-Api-Key": TOKEN}), 401),
    Case("admin two Bearer credentials in one header", _admin("GET", "/admin/certificates", {
        "Authorization": f"Bearer {TOKEN}, Bearer other"}), 401),
    Case("admin revoke with a wrong token", _admin("POST", _target("plain"), {"Authorization": "Bearer x"},
                                                   json={"reason": "keyCompromise"}), 401),
    *(Case(f"admin limit {limit!r}", _admin("GET", "/admin/certificates", query_string={"limit": limit}), 400,
           body="limit must be 1-1000") for limit in ("1e3", "0x10", "+5", "\uff11", "5 ", "1" * 30)),
    Case("admin status filter unknown", _admin("GET", "/admin/certificates", query_string={"status": "bogus"}), 400,
         body="status must be valid or revoked"),
    Case("admin status filter in upper case", _admin("GET", "/admin/certificates", query_string={"status": "VALID"}),
         400, body="status must be valid or revoked"),
    Case("admin revoke with truncated JSON", _admin("POST", _target("json-truncated"),
                                                    data='{"reason": "keyCompromise"',
                                                    content_type="application/json"), 400,
         body="the body must be JSON"),
    Case("admin revoke with a JSON object sent as text/plain, unknown reason", _admin(
        "POST", _target("json-text"), data='{"reason": "nonsense"}', content_type="text/plain"), 400,
         body="reason must be one of"),
    Case("admin revoke with a form body", _admin("POST", _target("json-text"), data={"reason": "keyCompromise"}),
         400, body="the body must be JSON"),
    Case("admin revoke with a body that is not UTF-8", _admin("POST", _target("json-text"), data=b"\xff\xfe{",
                                                             content_type="application/json"), 400,
         body="the body must be JSON"),
    Case("admin revoke reason unknown", _admin("POST", _target("plain"), json={"reason": "becauseISaySo"}), 400,
         body="reason must be one of"),
    Case("admin revoke reason removeFromCRL", _admin("POST", _target("plain"), json={"reason": "removeFromCRL"}),
         400, body="reason must be one of"),
    Case("admin revoke reason as a number string", _admin("POST", _target("plain"), json={"reason": "1"}), 400,
         body="reason must be one of"),
    Case("admin revoke an unknown serial", _admin("POST", "/admin/certificates/1234abcd/revoke", json={}), 404,
         body="no such certificate"),
    Case("admin revoke an already revoked certificate", _admin("POST", _revoked_path, json={}), 409),
    *(Case(f"admin serial {serial!r}", _admin("POST", f"/admin/certificates/{serial}/revoke", json={}), 400,
           body="hexadecimal, positive and at most 20 octets")
      for serial in ("xyz", "0", "-1", "f" * 41, "%20")),
    Case("admin revoke with JSON nested 100000 deep", _admin("POST", _target("plain"), data="[" * 100_000,
                                                             content_type="application/json"), 400,
         body="the body must be JSON"),
    Case("admin revoke reason an infinite number", _admin("POST", _target("plain"), data='{"reason": 1e999}',
                                                          content_type="application/json"), 400,
         body="reason must be one of"),
    Case("admin show with a serial of 5000 hex digits", _admin("GET", "/admin/certificates/" + "f" * 5000), 400,
         body="hexadecimal"),
    Case("admin show with a serial that is not hex", _admin("GET", "/admin/certificates/not-hex"), 400,
         body="hexadecimal"),
    Case("admin DELETE a certificate", _admin("DELETE", _target("plain", "")), 405),
    Case("admin revoke by GET", _admin("GET", _target("plain")), 405),
]

OCSP_CASES = [
    Case("OCSP random octets", _ocsp_post(lambda env: os.urandom(300)), ocsp_status=MALFORMED),
    Case("OCSP 20000 nested indefinite-length SEQUENCEs", _ocsp_post(lambda env: b"\x30\x80" * 20_000),
         ocsp_status=MALFORMED),
    Case("OCSP request truncated by one octet", _ocsp_post(lambda env: _ocsp_for(env)[:-1]), ocsp_status=MALFORMED),
    Case("OCSP request truncated to half", _ocsp_post(lambda env: _ocsp_for(env)[: len(_ocsp_for(env)) // 2]),
         ocsp_status=MALFORMED),
    Case("OCSP request with a trailing octet", _ocsp_post(lambda env: _ocsp_for(env) + b"\x00"), ocsp_status=MALFORMED),
    Case("OCSP request version v2", _ocsp_post(_ocsp_tbs(_ocsp_version)), ocsp_status=MALFORMED),
    Case("OCSP request with no CertID", _ocsp_post(_cert_id_count(0)), ocsp_status=MALFORMED),
    Case("OCSP request with 21 CertIDs", _ocsp_post(_cert_id_count(21)), ocsp_status=MALFORMED),
    Case("OCSP nonce of 0 octets", _ocsp_post(_ocsp_nonce(0)), ocsp_status=MALFORMED),
    Case("OCSP CertID hashed with MD5", _ocsp_post(_cert_id(_md5_cert_id)), ocsp_status=UNAUTHORIZED),
    Case("OCSP CertID SHA-256 with SHA-1-sized hashes",
         _ocsp_post(_cert_id_field("hash_algorithm", {"algorithm": "sha256"})), ocsp_status=MALFORMED),
    Case("OCSP CertID hash parameters an empty OCTET STRING", _ocsp_post(_sha1_parameters_octets),
         ocsp_status=MALFORMED),
    Case("OCSP CertID with a negative serial", _ocsp_post(_ocsp_serial(-5)), ocsp_status=MALFORMED),
    Case("OCSP CertID for an unknown issuer", _ocsp_post(_cert_id_field("issuer_key_hash", os.urandom(20))),
         ocsp_status=UNAUTHORIZED),
    Case("OCSP CertID for our issuer, serial 0", _ocsp_post(_ocsp_serial(0)), ocsp_status=SUCCESSFUL,
         cert_status=ocsp.OCSPCertStatus.UNKNOWN),
    Case("OCSP CertID for our issuer, a 200-bit serial", _ocsp_post(_ocsp_serial(1 << 200)), ocsp_status=SUCCESSFUL,
         cert_status=ocsp.OCSPCertStatus.UNKNOWN),
    Case("OCSP CertID for our issuer, a serial never issued", _ocsp_post(_ocsp_serial(0x5EED)), ocsp_status=SUCCESSFUL,
         cert_status=ocsp.OCSPCertStatus.UNKNOWN),
    Case("OCSP junk POSTed to /ocsp/", _ocsp_post(lambda env: b"\x30\x80\x00\x00", "/ocsp/"), ocsp_status=MALFORMED),
    Case("OCSP GET of base64 zeros", _ocsp_get(lambda env: "AAAA"), ocsp_status=MALFORMED),
    Case("OCSP GET with a percent-encoded junk path", _ocsp_get(lambda env: "%25%25%25"), ocsp_status=MALFORMED),
    Case("OCSP GET of a path longer than the body limit", _ocsp_get(lambda env: "A" * 400_000), ocsp_status=MALFORMED),
    Case("OCSP GET /ocsp without a request", _http("GET", "/ocsp"), 405),
    Case("OCSP PUT", _http("PUT", "/ocsp", data=b"\x30\x00"), 405),
]

CASES = HTTP_CASES + OUTER_CASES + ENVELOPE_CASES + CSR_CASES + POP_CASES + ADMIN_CASES + OCSP_CASES


def _params(cases: Sequence[Case]) -> list[object]:
    return [
        pytest.param(case, id=case.name, marks=[pytest.mark.xfail(strict=True, reason=case.bug)] if case.bug else [])
        for case in cases
    ]


# --- the test -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", _params(CASES))
def test_hostile_input_gets_the_exact_answer_and_nothing_is_issued(
    env: Env, case: Case, caplog: pytest.LogCaptureFixture
) -> None:
    store = env.server.runtime.store
    issued, revoked = store.count_certificates(), store.count_certificates(status=CertStatus.REVOKED)
    sent = case.send(env)
    response = sent.response
    textual = (response.mimetype or "").startswith("text/")
    shown = response.get_data(as_text=True)[:300] if textual else response.mimetype
    assert response.status_code == case.http_status, shown
    if case.body is not None:
        assert case.body in response.get_data(as_text=True)
    if response.status_code >= 400 and response.status_code != 409:
        assert response.mimetype == "text/plain"
    if case.fail_info is not None:
        _check_cert_rep(env, sent, case.fail_info, case.text or FAILURE_TEXT[case.fail_info])
        if case.reason is not None:
            reasons = (case.reason,) if isinstance(case.reason, str) else case.reason
            assert any(reason in caplog.text for reason in reasons), caplog.text[-600:]
    if case.ocsp_status is not None:
        _check_ocsp(response, case.ocsp_status, case.cert_status)
    if case.expect is not None:
        case.expect(env, response)
    assert store.count_certificates() == issued, "a certificate was issued"
    assert store.count_certificates(status=CertStatus.REVOKED) == revoked, "a certificate was revoked"


def _check_cert_rep(env: Env, sent: Sent, fail_info: FailInfo, text: str) -> None:
    """A CertRep FAILURE (RFC 8894 §3.3.2.2) signed by the RA, for this request, without an envelope."""
    response = sent.response
    assert response.mimetype == "application/x-pki-message"
    reply = cms.parse_signed(response.data)
    reply.verify()
    assert reply.signer.der == env.server.ca.ra_cert.public_bytes(serialization.Encoding.DER)
    assert reply.attribute(Attr.MESSAGE_TYPE, core.PrintableString) == str(int(MessageType.CERT_REP))
    assert reply.attribute(Attr.PKI_STATUS, core.PrintableString) == PKIStatus.FAILURE.value
    assert (reply.attribute(Attr.FAIL_INFO, core.PrintableString), reply.attribute(
        Attr.FAIL_INFO_TEXT, core.UTF8String)) == (str(int(fail_info)), text)
    assert not reply.content  # the pkcsPKIEnvelope MUST be omitted
    assert sent.request is not None
    _, context = message.read_envelope(sent.request)
    assert reply.attribute(Attr.TRANSACTION_ID, core.PrintableString) == context.transaction_id
    assert reply.attribute(Attr.RECIPIENT_NONCE, core.OctetString) == context.sender_nonce


def _check_ocsp(response: TestResponse, status: ocsp.OCSPResponseStatus,
                cert_status: ocsp.OCSPCertStatus | None) -> None:
    assert response.mimetype == "application/ocsp-response"
    answer = ocsp.load_der_ocsp_response(response.data)
    assert answer.response_status is status
    if status is ocsp.OCSPResponseStatus.SUCCESSFUL:
        assert answer.certificate_status is cert_status
    else:
        assert cert_status is None and response.headers["Cache-Control"] == "no-store"


def test_the_table_is_complete() -> None:
    """At least 160 distinct cases; every 200 answer is checked for what it carries."""
    assert len(CASES) >= 160
    assert len({case.name for case in CASES}) == len(CASES)
    for case in CASES:
        checks = [case.fail_info is not None, case.ocsp_status is not None, case.expect is not None]
        assert sum(checks) == (1 if case.http_status == 200 else 0), case.name
        assert (case.reason is not None) == (case.fail_info is not None and case.bug is None), case.name


def test_basic_constraints_ca_true_is_never_granted(env: Env) -> None:
    """A CSR asking for CA:TRUE (and keyCertSign) with the right challenge gets a leaf: the request is ignored,
    not refused (ca/issue.py), so this one is outside the table, where nothing may be issued."""
    device = Device(common_name="wants-to-be-a-ca")
    csr = x509.load_der_x509_csr(_csr_with(device.key, device.subject, extensions=[
        x509.BasicConstraints(ca=True, path_length=None),
        x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                      data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                      encipher_only=False, decipher_only=False),
    ]))
    before = env.server.issued_count()
    cert = env.server.enroll(device, csr=csr, transaction_id=_tid())
    assert env.server.issued_count() == before + 1
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert not usage.key_cert_sign and not usage.crl_sign
