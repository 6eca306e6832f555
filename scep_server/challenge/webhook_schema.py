"""JSON Schemas (2020-12, the dialect of OpenAPI 3.1) of the ``webhook`` challenge's two documents.

:data:`REQUEST_SCHEMA` is what the server POSTs to the webhook; :data:`ANSWER_SCHEMA` is the only answer
it acts on (anything else fails closed). Both are closed (``additionalProperties: false``). They describe
exactly what :mod:`.webhook_messages` writes and accepts, and docs/webhook-challenge.md shows them with
examples. Callers that embed them (an OpenAPI document) take a :func:`copy.deepcopy`.
"""

from __future__ import annotations

from typing import Any, Final

from scep_server.pki.sans import SAN_TYPES

__all__ = ["ANSWER_SCHEMA", "DIALECT", "MESSAGE_TYPES", "REQUEST_SCHEMA", "REQUEST_VERSION", "SENT_SAN_TYPES"]

DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
REQUEST_VERSION: Final = 1
MESSAGE_TYPES: Final = ("PKCSReq", "RenewalReq")
# The kinds a CSR's subjectAltName is sent as: the five a certificate may carry, then the rest, which the
# profile's policy refuses after the webhook allowed them (``othername`` with its OID, ``dirname`` as
# RFC 4514, ``rid`` as an OID, ``other`` with its type).
SENT_SAN_TYPES: Final = (*SAN_TYPES, "othername", "dirname", "rid", "other")
KEY_TYPES: Final = ("rsa", "ec", "ed25519", "ed448", "dsa", "unknown")
_DOTTED_OID = r"^[0-9]+(\.[0-9]+)+$"


def _san(types: tuple[str, ...], description: str) -> dict[str, Any]:
    return {
        "type": "object",
        "description": description,
        "additionalProperties": False,
        "required": ["type", "value"],
        "properties": {"type": {"enum": list(types)}, "value": {"type": "string"}},
    }


REQUEST_SCHEMA: Final[dict[str, Any]] = {
    "title": "WebhookChallengeRequest",
    "description": "What the webhook challenge validator POSTs, signed (X-Scep-Webhook-Signature), for each "
                   "request it is to decide.",
    "type": "object",
    "additionalProperties": False,
    "required": ["version", "profile", "transaction_id", "message_type", "subject", "sans", "key",
                 "requested_extensions", "challenge", "requester_ip", "sent_at"],
    "properties": {
        "version": {"const": REQUEST_VERSION, "description": "The version of this document."},
        "profile": {"type": "string", "description": "The SCEP profile the request came to."},
        "transaction_id": {"type": "string", "description": "The SCEP transactionID."},
        "message_type": {"enum": list(MESSAGE_TYPES),
                         "description": "RenewalReq: signed by a valid certificate of this CA, which it renews."},
        "subject": {"type": "string", "description": "The CSR's subject, RFC 4514 (empty for none)."},
        "sans": {"type": "array", "description": "The CSR's subjectAltNames, in its order.",
                 "items": _san(SENT_SAN_TYPES, "One subjectAltName; ip values are addresses as written by "
                                               "Python's ipaddress, upn values the principal name.")},
        "key": {
            "type": "object",
            "additionalProperties": False,
            "required": ["type", "size"],
            "properties": {
                "type": {"enum": list(KEY_TYPES)},
                "size": {"type": ["integer", "null"], "minimum": 1,
                         "description": "RSA/DSA modulus bits, EC curve bits; null when unknown."},
                "curve": {"type": "string", "description": "EC only: P-256, P-384, P-521 or the SEC name."},
            },
        },
        "requested_extensions": {
            "type": "array",
            "description": "Every extension of the CSR's extensionRequest (what it asks for; the profile decides "
                           "what is granted).",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["oid", "critical"],
                "properties": {
                    "oid": {"type": "string", "pattern": _DOTTED_OID},
                    "critical": {"type": "boolean"},
                    "name": {"type": "string", "description": "The extension's name, when it is a known one."},
                },
            },
        },
        "challenge": {"type": ["string", "null"], "description": "The CSR's challengePassword, or null."},
        "requester_ip": {"type": ["string", "null"], "description": "The device's address as the server saw it."},
        "sent_at": {"type": "string", "format": "date-time", "description": "When it was sent (UTC)."},
    },
}

ANSWER_SCHEMA: Final[dict[str, Any]] = {
    "title": "WebhookChallengeAnswer",
    "description": "The webhook's answer. Only HTTP 2xx with allow: true issues; allow: false (2xx or 4xx) "
                   "refuses with the reason; anything else fails closed.",
    "type": "object",
    "additionalProperties": False,
    "required": ["allow"],
    "properties": {
        "allow": {"type": "boolean"},
        "reason": {"type": "string", "description": "Why; logged and audited (shortened to 200 characters)."},
        "sans": {"type": "array", "description": "Allow only: certify only these of the requested "
                                                 "subjectAltNames (a subset; none other may be named).",
                 "items": _san(SAN_TYPES, "One of the requested subjectAltNames, as it was sent.")},
        "validity_days": {"type": "integer", "minimum": 1,
                          "description": "Allow only: a validity of this many days, at most the profile's."},
    },
}
