"""The JSON of the ``webhook`` challenge: the request the validator POSTs, and reading the answer.

The request (:data:`~.webhook_schema.REQUEST_SCHEMA`) describes what the CSR asks for; the answer
(:data:`~.webhook_schema.ANSWER_SCHEMA`) is read strictly: UTF-8 JSON (no NaN, no duplicate keys) holding
an object with a boolean ``allow`` and nothing but the documented keys, else it is no answer at all
(``WebhookInvalidAnswer``). An allow may narrow the request: ``sans`` names a subset of the requested
subjectAltNames (naming any other is ``WebhookWidened``), ``validity_days`` shortens the validity (the
issuance policy refuses a longer one than the profile's).
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtensionOID

from scep_server.ca.csr import describe_sans, requested
from scep_server.ca.keys.generate import curve_name
from scep_server.challenge import IssuanceNarrowing, ValidationRequest, challenge_password
from scep_server.challenge.webhook_schema import MESSAGE_TYPES, REQUEST_VERSION
from scep_server.errors import BadRequest, ChallengeRejected
from scep_server.pki.names import printable
from scep_server.pki.sans import SAN_TYPES

__all__ = [
    "DENIED",
    "INVALID_ANSWER",
    "MAX_REASON_CHARS",
    "WIDENED",
    "Answer",
    "narrowing_for",
    "read_answer",
    "request_body",
    "request_document",
]

DENIED = "WebhookDenied"
INVALID_ANSWER = "WebhookInvalidAnswer"
WIDENED = "WebhookWidened"
MAX_REASON_CHARS = 200
_ANSWER_KEYS = frozenset({"allow", "reason", "sans", "validity_days"})
# The extensions cryptography knows, by the lower-case names of ExtensionOID ("subject_alternative_name").
_EXTENSION_NAMES = {
    oid: name.lower() for name, oid in vars(ExtensionOID).items() if isinstance(oid, x509.ObjectIdentifier)
}
_ED_SIZES = {ed25519.Ed25519PublicKey: ("ed25519", 256), ed448.Ed448PublicKey: ("ed448", 456)}


@dataclass(frozen=True, slots=True)
class Answer:
    """A well-formed answer: ``sans`` as (type, value) pairs, ``reason`` already made printable and short."""

    allow: bool
    reason: str | None = None
    sans: tuple[tuple[str, str], ...] | None = None
    validity_days: int | None = None


# --- the request ---------------------------------------------------------------------------------


def request_document(request: ValidationRequest, sent_at: datetime) -> dict[str, Any]:
    """The request JSON of ``request`` (REQUEST_SCHEMA); BadRequest when the CSR's extensions cannot be read."""
    csr = request.csr
    return {
        "version": REQUEST_VERSION,
        "profile": request.profile,
        "transaction_id": request.transaction_id,
        "message_type": MESSAGE_TYPES[1] if request.renewal else MESSAGE_TYPES[0],
        "subject": csr.subject.rfc4514_string(),
        "sans": [{"type": kind, "value": value} for kind, value, _ in _requested_sans(csr)],
        "key": _key(csr),
        "requested_extensions": [_extension(extension) for extension in _extensions(csr)],
        "challenge": challenge_password(csr),
        "requester_ip": request.requester_ip,
        "sent_at": sent_at.isoformat(timespec="seconds").replace("+00:00", "Z"),
    }


def request_body(document: dict[str, Any]) -> bytes:
    """The bytes POSTed (and signed): compact ASCII JSON."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _requested_sans(csr: x509.CertificateSigningRequest) -> list[tuple[str, str, x509.GeneralName]]:
    """The CSR's subjectAltNames as (type, value, name), in order."""
    names = list(requested(csr, x509.SubjectAlternativeName) or ())
    described = describe_sans(csr)
    return [(*_split(text), name) for text, name in zip(described, names, strict=True)]


def _split(described: str) -> tuple[str, str]:
    kind, _, value = described.partition(":")
    return kind, value


def _key(csr: x509.CertificateSigningRequest) -> dict[str, Any]:
    try:
        key = csr.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return {"type": "unknown", "size": None}
    if isinstance(key, rsa.RSAPublicKey | dsa.DSAPublicKey):
        return {"type": "rsa" if isinstance(key, rsa.RSAPublicKey) else "dsa", "size": key.key_size}
    if isinstance(key, ec.EllipticCurvePublicKey):
        return {"type": "ec", "size": key.curve.key_size, "curve": curve_name(key.curve)}
    for kind, (name, size) in _ED_SIZES.items():
        if isinstance(key, kind):
            return {"type": name, "size": size}
    return {"type": "unknown", "size": None}


def _extensions(csr: x509.CertificateSigningRequest) -> x509.Extensions:
    try:
        return csr.extensions
    except ValueError as exc:
        raise BadRequest(f"the CSR's extensionRequest is malformed: {exc}") from exc


def _extension(extension: x509.Extension[x509.ExtensionType]) -> dict[str, Any]:
    described: dict[str, Any] = {"oid": extension.oid.dotted_string, "critical": extension.critical}
    name = _EXTENSION_NAMES.get(extension.oid)
    if name is not None:
        described["name"] = name
    return described


# --- the answer ----------------------------------------------------------------------------------


def read_answer(body: bytes, status: int) -> Answer:
    """The answer in ``body`` (answered with HTTP ``status``); ChallengeRejected(WebhookInvalidAnswer) otherwise."""
    document = _strict_json(body, status)
    if not isinstance(document, dict):
        _invalid(f"the webhook's answer (HTTP {status}) is JSON but not an object")
    unknown = sorted(set(document) - _ANSWER_KEYS)
    if unknown:
        keys = printable(", ".join(unknown))[:100]
        _invalid(f"the webhook's answer (HTTP {status}) has keys it may not have: {keys}")
    allow = document.get("allow")
    if not isinstance(allow, bool):
        _invalid(f"the webhook's answer (HTTP {status}) has no boolean allow")
    return Answer(allow, _reason(document), _answered_sans(document), _validity_days(document))


def _strict_json(body: bytes, status: int) -> Any:
    try:
        return json.loads(body.decode("utf-8"), object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        _invalid(f"the webhook's answer (HTTP {status}) is not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("a key appears twice")
    return dict(pairs)


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _reason(document: dict[str, Any]) -> str | None:
    reason = document.get("reason")
    if reason is None and "reason" not in document:
        return None
    if not isinstance(reason, str):
        _invalid("the webhook's answer has a reason that is not a string")
    shown = printable(reason.strip())
    return shown if len(shown) <= MAX_REASON_CHARS else shown[: MAX_REASON_CHARS - 3] + "..."


def _answered_sans(document: dict[str, Any]) -> tuple[tuple[str, str], ...] | None:
    if "sans" not in document:
        return None
    sans = document["sans"]
    if not isinstance(sans, list):
        _invalid("the webhook's answer has a sans that is not a list")
    pairs = []
    for entry in sans:
        if not isinstance(entry, dict) or set(entry) != {"type", "value"}:
            _invalid("the webhook's answer has an entry of sans that is not an object of type and value")
        kind, value = entry["type"], entry["value"]
        if kind not in SAN_TYPES or not isinstance(value, str):
            kinds = ", ".join(SAN_TYPES)
            _invalid(f"the webhook's answer has an entry of sans that is not one of {kinds} with a string")
        pairs.append((kind, value))
    return tuple(pairs)


def _validity_days(document: dict[str, Any]) -> int | None:
    if "validity_days" not in document:
        return None
    days = document["validity_days"]
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        _invalid("the webhook's answer has a validity_days that is not a whole number of at least 1")
    return days


def _invalid(detail: str) -> NoReturn:
    raise ChallengeRejected(detail, reason=INVALID_ANSWER)


# --- narrowing -----------------------------------------------------------------------------------


def narrowing_for(answer: Answer, csr: x509.CertificateSigningRequest) -> IssuanceNarrowing | None:
    """What an allow grants less than the CSR asks for; None for all of it. ChallengeRejected(WebhookWidened)
    when the answer names a subjectAltName the CSR does not ask for."""
    if answer.sans is None and answer.validity_days is None:
        return None
    sans = None
    if answer.sans is not None:
        asked = [(_comparable(kind, value), name) for kind, value, name in _requested_sans(csr)]
        granted = {_comparable(kind, value) for kind, value in answer.sans}
        widened = sorted(granted - {key for key, _ in asked})
        if widened:
            kind, value = widened[0]
            raise ChallengeRejected(
                f"the webhook granted the subjectAltName {kind}:{printable(value)[:100]}, which the request does "
                "not ask for: a webhook may only narrow the request", reason=WIDENED,
            )
        sans = tuple(name for key, name in asked if key in granted)
    return IssuanceNarrowing(sans=sans, validity_days=answer.validity_days)


def _comparable(kind: str, value: str) -> tuple[str, str]:
    """DNS names compare without case, IP addresses as addresses; everything else exactly."""
    if kind == "dns":
        return kind, value.lower()
    if kind == "ip":
        try:
            return kind, str(ipaddress.ip_address(value))
        except ValueError:
            return kind, value
    return kind, value
