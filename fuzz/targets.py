"""The fuzz targets: one ``bytes`` in, an outcome label out, or an exception that is a finding.

The property is the one the web layer relies on: decoding a pkiMessage ends in a ScepError (HTTP 400 or
a CertRep FAILURE) or in a request whose content was parsed; reading an OCSP request ends in an
OCSPResponse, malformedRequest at worst. Any other exception, or a :class:`PropertyViolation`, is a
bug. Hangs are caught by the driver (libFuzzer's ``-timeout``, the smoke tests' time bound).

Depths of the envelope decoder:

* ``envelope_raw``: the bytes are the whole pkiMessage (read_envelope, then open_request);
* ``envelope_attributes``: the bytes are records of signed attributes (see
  :func:`fuzz.messages.attributes_from_records`), signed by the device;
* ``envelope_pkcs``: the bytes are the pkcsPKIEnvelope of a signed PKCSReq;
* ``envelope_content``: the bytes are what a genuine envelope decrypts to (the first byte picks the
  messageType and content cipher).
"""

from __future__ import annotations

import base64
from collections.abc import Callable

from asn1crypto import ocsp as asn1_ocsp
from cryptography.x509 import ocsp

from scep_server.ca.ocsp import MalformedOcspRequest, parse_request
from scep_server.challenge import challenge_password
from scep_server.errors import RequestError, ScepError
from scep_server.scep import message
from scep_server.scep.cms import SignedMessage
from scep_server.scep.message import (
    CertificateRequest,
    CertPoll,
    DecodeOptions,
    GetCert,
    GetCrl,
    PkiRequest,
    ReplyContext,
)
from scep_server.scep.types import MessageType
from scep_server.web.ocsp import decode_get_request

from . import material, messages

ACCEPTED = "accepted"
UNREADABLE = "unreadable"  # read_envelope: RequestError, no CertRep possible
PROFILE = DecodeOptions()  # a profile's defaults: no single DES, SHA-1 allowed
PERMISSIVE = DecodeOptions(allow_des=True)  # lets DES-enveloped content reach the content parsers

Target = Callable[[bytes], str]


class PropertyViolation(AssertionError):
    """The code under test answered, but not as its contract says."""


def _require(condition: bool, what: str) -> None:
    if not condition:
        raise PropertyViolation(what)


# --- the envelope decoder ------------------------------------------------------------------------


def envelope_raw(data: bytes) -> str:
    return _decode(data, PROFILE)


def envelope_attributes(data: bytes) -> str:
    return _decode(messages.sign_attributes(messages.attributes_from_records(data)), PROFILE)


def envelope_pkcs(data: bytes) -> str:
    outcome = _decode(messages.sign_envelope(data), PROFILE)
    _require(outcome != UNREADABLE, "a well-formed signed pkiMessage was refused without a CertRep")
    return outcome


def envelope_content(data: bytes) -> str:
    if not data:
        return UNREADABLE
    kind = messages.REQUEST_KINDS[data[0] % len(messages.REQUEST_KINDS)]
    cipher = messages.CIPHERS[data[0] // len(messages.REQUEST_KINDS) % len(messages.CIPHERS)]
    outcome = _decode(messages.request_with_content(kind, data[1:], cipher), PERMISSIVE)
    _require(outcome != UNREADABLE, "a well-formed signed pkiMessage was refused without a CertRep")
    return outcome


def _decode(der: bytes, options: DecodeOptions) -> str:
    """What EnrollmentService.pki_operation does before it dispatches the request."""
    try:
        signed, context = message.read_envelope(der)
    except RequestError:
        return UNREADABLE
    return _open(signed, context, options)


def _open(signed: SignedMessage, context: ReplyContext, options: DecodeOptions) -> str:
    ca = material.scep_ca()
    try:
        request = message.open_request(signed, context, ra_key=ca.ra_key, ra_cert=ca.ra_cert, options=options)
    except ScepError as exc:
        return type(exc).__name__
    _check_parsed(request)
    return ACCEPTED


def _check_parsed(request: PkiRequest) -> None:
    """An accepted request carries the parsed content its messageType calls for, readable downstream."""
    kinds = {CertificateRequest: (MessageType.PKCS_REQ, MessageType.RENEWAL_REQ), CertPoll: (MessageType.CERT_POLL,),
             GetCert: (MessageType.GET_CERT,), GetCrl: (MessageType.GET_CRL,)}
    _require(request.context.message_type in kinds[type(request)], f"{type(request).__name__} for another type")
    if isinstance(request, CertificateRequest):
        challenge_password(request.csr)


# --- the OCSP responder --------------------------------------------------------------------------


def ocsp_request(data: bytes) -> str:
    """parse_request raises only MalformedOcspRequest; respond always answers an OCSPResponse whose status
    is the one it reports (malformedRequest exactly when the request does not parse); GET decoding never
    raises and round-trips URL-safe base64."""
    try:
        parse_request(data)
        parsed = True
    except MalformedOcspRequest:
        parsed = False
    answer = material.ocsp_responder().respond(data)
    encoded = asn1_ocsp.OCSPResponse.load(answer.der, strict=True)["response_status"].native
    _require(encoded == _ASN1_STATUS[answer.status], f"the answer says {answer.status.name}, its DER {encoded}")
    malformed = answer.status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    _require(malformed is not parsed, f"parse_request and respond disagree: parsed={parsed}, {answer.status.name}")
    _check_get_decoding(data)
    return answer.status.name


_ASN1_STATUS = {
    ocsp.OCSPResponseStatus.SUCCESSFUL: "successful",
    ocsp.OCSPResponseStatus.MALFORMED_REQUEST: "malformed_request",
    ocsp.OCSPResponseStatus.INTERNAL_ERROR: "internal_error",
    ocsp.OCSPResponseStatus.TRY_LATER: "try_later",
    ocsp.OCSPResponseStatus.SIG_REQUIRED: "sign_required",
    ocsp.OCSPResponseStatus.UNAUTHORIZED: "unauthorized",
}


def _check_get_decoding(data: bytes) -> None:
    encoded = base64.urlsafe_b64encode(data).decode().rstrip("=")
    _require(decode_get_request(encoded) == data, "a GET path in URL-safe base64 does not decode to the request")
    _require(isinstance(decode_get_request(data.decode("latin-1")), bytes), "GET decoding returned no bytes")


TARGETS: dict[str, Target] = {
    "envelope_raw": envelope_raw,
    "envelope_attributes": envelope_attributes,
    "envelope_pkcs": envelope_pkcs,
    "envelope_content": envelope_content,
    "ocsp_request": ocsp_request,
}
