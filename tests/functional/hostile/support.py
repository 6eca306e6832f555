"""What the hostile-input tables share: the server's configuration, the case and its environment, how a
case sends its request, and the causes the server logs."""

from __future__ import annotations

import base64
import datetime
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509 import ocsp
from werkzeug.test import TestResponse

from scep_server.errors import BadAlg, BadCertId, BadMessageCheck, BadRequest, BadTime, ChallengeRejected, FailInfo
from scep_server.scep import envelope
from tests.functional.conftest import Device, ScepTestServer

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
    FailInfo.BAD_MESSAGE_CHECK: envelope.ENVELOPE_FAILURE_TEXT,
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


# --- a case and what it runs against ---------------------------------------------------------------------------------


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


# --- sending --------------------------------------------------------------------------------------------


def http(method: str, path: str, **kwargs: object) -> Callable[[Env], Sent]:
    def send(env: Env) -> Sent:
        return Sent(env.server.http.open(path, method=method, **kwargs))  # type: ignore[arg-type]

    return send


def op(operation: str, method: str = "GET", path: str = "/scep", **kwargs: object) -> Callable[[Env], Sent]:
    return http(method, path, query_string={"operation": operation}, **kwargs)


def pki_get(message_value: str) -> Callable[[Env], Sent]:
    return http("GET", "/scep", query_string={"operation": "PKIOperation", "message": message_value})


def pki_post(body: bytes, path: str = "/scep") -> Callable[[Env], Sent]:
    return http("POST", f"{path}?operation=PKIOperation", data=body)


def scep(build: Callable[[Env], bytes], profile: str | None = None, *, method: str = "POST") -> Callable[[Env], Sent]:
    """POST (or GET, base64) the pkiMessage ``build`` makes to a profile."""

    def send(env: Env) -> Sent:
        der = build(env)
        path = f"/scep/{profile}" if profile else "/scep"
        if method == "GET":
            query = {"operation": "PKIOperation", "message": base64.b64encode(der).decode()}
            return Sent(env.server.http.get(path, query_string=query), der)
        return Sent(env.server.http.post(f"{path}?operation=PKIOperation", data=der), der)

    return send


def posted_in_base64(build: Callable[[Env], bytes]) -> Callable[[Env], Sent]:
    """POST the pkiMessage as base64 text, as some clients do."""

    def send(env: Env) -> Sent:
        der = build(env)
        return Sent(env.server.http.post("/scep?operation=PKIOperation", data=base64.b64encode(der)), der)

    return send


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
