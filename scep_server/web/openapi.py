"""The OpenAPI 3.1 document of the admin API v1 (``/api/v1``), served at ``/api/v1/openapi.json``.

It is also the API's parameter contract: :data:`QUERY` and :data:`PATH` are what ``api_v1`` checks a request
against (an undocumented parameter is refused, a value outside its schema is refused), so the document and
the checks cannot drift apart. Response schemas are closed (``additionalProperties: false``) wherever the
shape is fixed; the tests validate real answers against them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from scep_server.config.load import PROFILE_NAME
from scep_server.service.audit_listing import REVOCATION_ACTIONS
from scep_server.service.enrollments import FAIL_INFO_NAMES
from scep_server.service.enrollments import OUTCOMES as ENROLLMENT_OUTCOMES
from scep_server.service.otp import MAX_COUNT as MAX_OTP_COUNT
from scep_server.service.otp import MAX_PATTERN_LENGTH, OtpState
from scep_server.service.paging import DEFAULT_LIMIT, MAX_CURSOR_LENGTH, MAX_LIMIT
from scep_server.service.reports import REPORT_STATUSES
from scep_server.service.revocation import REASON_NAMES
from scep_server.web import openapi_webhooks
from scep_server.web.errors import ERROR_CODES

__all__ = [
    "BASE", "COMMENT_PATTERN", "MAX_COMMENT", "OTP_PASSWORD_PATTERN", "OTP_PATTERN_PATTERN", "OTP_TTL_PATTERN", "PATH",
    "QUERY", "SCHEMAS", "Parameter", "document",
]

BASE = "/api/v1"
MAX_COMMENT = 500  # characters of a revocation comment
Schema = dict[str, Any]

# A printable character: no control character (C0, DEL, C1) and no line-breaking or bidirectional control
# (``pki.names.is_unprintable``): what a store may refuse (a NUL) or a log or terminal would show falsely.
_PRINTABLE = r"[^\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
COMMENT_PATTERN = f"^{_PRINTABLE}*$"
_SERIAL = r"^(?:0[xX])?[0-9A-Fa-f:]{1,64}$"
_THUMBPRINT = r"^(?:(?:[0-9A-Fa-f]:?){39}[0-9A-Fa-f]|(?:[0-9A-Fa-f]:?){63}[0-9A-Fa-f])$"
_TIME_FORMS = "a duration back from now (`30m`, `24h`, `7d`, `2w`) or an ISO 8601 time with its zone"
OTP_TTL_PATTERN = "^[0-9]{1,7}[smhd]$"  # a lifetime: what service.otp.parse_ttl reads, in ASCII digits only
OTP_PATTERN_PATTERN = f"^{_PRINTABLE}{{1,{MAX_PATTERN_LENGTH}}}$"  # a subject pattern: one line of printable text
OTP_PASSWORD_PATTERN = "^[A-Z2-7]{32}$"  # 20 random bytes in base32


@dataclass(frozen=True, slots=True)
class Parameter:
    """One query or path parameter: its name, what it means, and the JSON Schema its value must meet."""

    name: str
    description: str
    schema: Schema

    def openapi(self, location: str) -> dict[str, Any]:
        described: dict[str, Any] = {"name": self.name, "in": location, "description": self.description,
                                     "schema": self.schema}
        return described | ({"required": True} if location == "path" else {})


def _text(name: str, description: str, *, max_length: int = 256) -> Parameter:
    """A line of printable text."""
    pattern = f"^{_PRINTABLE}{{1,{max_length}}}$"
    return Parameter(name, description, {"type": "string", "minLength": 1, "maxLength": max_length,
                                         "pattern": pattern})


def _time(name: str, what: str) -> Parameter:
    return _text(name, f"{what}: {_TIME_FORMS}.", max_length=64)


def _enum(name: str, description: str, values: tuple[str, ...], default: str | None = None) -> Parameter:
    schema: Schema = {"type": "string", "enum": list(values)}
    return Parameter(name, description, schema | ({"default": default} if default else {}))


_CURSOR = Parameter("cursor", "The `next_cursor` of the previous page; absent for the first page.",
                    {"type": "string", "minLength": 1, "maxLength": MAX_CURSOR_LENGTH, "pattern": "^[A-Za-z0-9_-]+$"})
_LIMIT = Parameter("limit", f"Rows per page, 1 to {MAX_LIMIT}.",
                   {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT})
_PROFILE = Parameter("profile", "The SCEP profile's name.",
                     {"type": "string", "minLength": 1, "maxLength": 64, "pattern": PROFILE_NAME.pattern})
_SINCE = _time("since", "From this time on (inclusive)")
_UNTIL = _time("until", "Before this time (exclusive)")
_PAGING = (_CURSOR, _LIMIT)

QUERY: dict[str, tuple[Parameter, ...]] = {
    "list_certificates": (
        Parameter("serial", "The serial number in hex (`0x` and `:` allowed).",
                  {"type": "string", "pattern": _SERIAL}),
        _text("subject", "Part of the subject DN, any case."),
        _text("san", "Part of any subject alternative name, any case."),
        Parameter("thumbprint", "The SHA-1 (40 hex digits) or SHA-256 (64) thumbprint, any case, `:` allowed.",
                  {"type": "string", "pattern": _THUMBPRINT}),
        _PROFILE,
        _enum("status", "`valid` (neither revoked nor expired), `revoked`, or `expired` (revoked or not).",
              REPORT_STATUSES),
        _time("issued_since", "Issued from this time on"),
        _time("issued_until", "Issued before this time"),
        _time("expires_before", "Whose notAfter comes before this time"),
        _text("device_id", "The device the certificate is bound to (Intune or Entra ID device id), or for a "
              "certificate stored before device binding the Intune id of its SAN URI `IntuneDeviceId://<id>`.",
              max_length=128),
        *_PAGING,
        _enum("format", "`json` (a page) or `csv` (the page as CSV; the next cursor in `X-Next-Cursor`).",
              ("json", "csv"), "json"),
    ),
    "show_certificate": (
        _enum("format", "`json`, `pem` or `der`.", ("json", "pem", "der"), "json"),
    ),
    "revoke_certificate": (),
    "list_enrollments": (
        _SINCE, _UNTIL, _PROFILE,
        _enum("outcome", "The transaction's state.", ENROLLMENT_OUTCOMES),
        _enum("fail_info", "The SCEP failInfo of a failed transaction.", tuple(FAIL_INFO_NAMES)),
        _text("intune_code", "The code Intune answered validateRequest with (`ChallengeExpired`).", max_length=64),
        _text("requester_ip", "The requester's IP address, exactly.", max_length=64),
        _text("transaction_id", "The SCEP transactionID, exactly.", max_length=255),
        *_PAGING,
    ),
    "show_enrollment": (_PROFILE,),
    "list_revocations": (
        _SINCE, _UNTIL,
        _text("actor", "Who revoked, exactly: `token:<name>`, `admin-token`, `cli:<user>`, ..."),
        _text("source", "Through what: `api`, `cli`, `intune-sync`, `scep`, `jobs`, `console`, ...", max_length=64),
        *_PAGING,
    ),
    "list_audit": (
        _text("action", "The action, exactly (`certificate.revoke`, `outbox.retry`, ...).", max_length=64),
        _text("actor", "Who acted, exactly."),
        _text("source", "Through what, exactly (`api`, `cli`, `console`, ...).", max_length=64),
        _SINCE, _UNTIL, *_PAGING,
    ),
    "show_operations": (),
    "retry_outbox": (),
    "list_otps": (_PROFILE, *_PAGING),
    "create_otps": (),
    "revoke_otp": (),
    "openapi_document": (),
}

PATH: dict[str, tuple[Parameter, ...]] = {
    "show_certificate": (Parameter("serial", "The serial number in hex.", {"type": "string", "pattern": _SERIAL}),),
    "revoke_certificate": (Parameter("serial", "The serial number in hex.", {"type": "string", "pattern": _SERIAL}),),
    "show_enrollment": (_text("transaction_id", "The SCEP transactionID.", max_length=255),),
    "retry_outbox": (Parameter("id", "The outbox entry's id.", {"type": "integer", "minimum": 1,
                                                                  "maximum": 2**63 - 1}),),
    "revoke_otp": (Parameter("id", "The one-time password's id.", {"type": "integer", "minimum": 1,
                                                                     "maximum": 2**63 - 1}),),
}


# --- schemas -------------------------------------------------------------------------------------------------


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: Schema) -> Schema:
    if "$ref" in schema or "enum" in schema:
        return {"anyOf": [schema, {"type": "null"}]}
    return schema | {"type": [schema["type"], "null"]}


def _object(properties: dict[str, Schema]) -> Schema:
    return {"type": "object", "required": list(properties), "properties": properties, "additionalProperties": False}


def _array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


_STRING: Schema = {"type": "string"}
_TIME: Schema = {"type": "string", "format": "date-time"}
_COUNT: Schema = {"type": "integer", "minimum": 0}
_HEX_SERIAL: Schema = {"type": "string", "pattern": "^[0-9a-f]+$"}


def _certificate_fields(revocation_reason: Schema) -> dict[str, Schema]:
    return {
        "serial": _HEX_SERIAL, "subject": _STRING, "issuer": _STRING, "sans": _array(_STRING),
        "status": {"type": "string", "enum": ["valid", "revoked"]}, "profile": _STRING,
        "transaction_id": _nullable(_STRING), "not_before": _TIME, "not_after": _TIME, "issued_at": _TIME,
        "revoked_at": _nullable(_TIME), "revocation_reason": revocation_reason,
        "sha1_thumbprint": {"type": "string", "pattern": "^[0-9A-Fa-f]{40}$"},
        "sha256_thumbprint": {"type": "string", "pattern": "^[0-9A-Fa-f]{64}$"},
    }


_ROW_FIELDS = _certificate_fields(_nullable(_STRING)) | {
    "expired": {"type": "boolean"},
    # The device the certificate was bound to when it was stored (profile setting device_id), and since
    # when OCSP answers it certificateHold because that device is disabled (device_lifecycle: ocsp-only).
    "device_id": _nullable(_STRING), "device_id_kind": _nullable({"type": "string", "enum": ["intune", "entra"]}),
    "device_hold_at": _nullable(_TIME),
}
_ENROLLMENT = _object({
    "profile": _STRING, "transaction_id": _STRING, "state": {"type": "string", "enum": list(ENROLLMENT_OUTCOMES)},
    "message_type": _STRING, "requester_ip": _nullable(_STRING), "created_at": _TIME,
    "updated_at": _TIME, "fail_info": _nullable(_STRING),
    "fail_reason": _nullable(_STRING), "intune_code": _nullable(_STRING), "serial": _nullable(_HEX_SERIAL),
    "deferred": {"type": "boolean"},
})
_STEP = _object({
    "at": _TIME, "step": _STRING, "outcome": _STRING, "detail": _nullable(_STRING),
    "intune_code": _nullable(_STRING), "activity_id": _nullable(_STRING),
})
_OUTBOX_ENTRY = _object({
    "id": {"type": "integer", "minimum": 1}, "kind": _STRING, "transaction_id": _nullable(_STRING),
    "attempts": _COUNT, "created_at": _TIME, "next_attempt_at": _TIME, "dead_at": _nullable(_TIME),
    "last_error": _nullable(_STRING), "state": {"type": "string", "enum": ["pending", "dead"]},
})
_NOTIFICATION = _object({
    "id": {"type": "integer", "minimum": 1}, "kind": _STRING, "transaction_id": _nullable(_STRING),
    "state": {"type": "string", "enum": ["pending", "delivered", "dead"]}, "attempts": _COUNT, "created_at": _TIME,
    "next_attempt_at": _TIME, "delivered_at": _nullable(_TIME), "dead_at": _nullable(_TIME),
    "last_error": _nullable(_STRING), "hresult": _nullable({"type": "integer"}), "description": _nullable(_STRING),
})
_DEFERRED_ENTRY = _object({
    "profile": _STRING, "transaction_id": _STRING, "attempts": _COUNT, "next_attempt_at": _nullable(_TIME),
    "last_error": _nullable(_STRING),
})


_OTP = _object({
    "id": {"type": "integer", "minimum": 1}, "profile": _STRING, "subject_pattern": _nullable(_STRING),
    "created_at": _TIME, "expires_at": _TIME, "created_by": _STRING,
    "state": {"type": "string", "enum": [str(state) for state in OtpState],
              "description": "`unused`, `used`, or `expired` (a revoked password too: it expired when revoked)."},
    "used_at": _nullable(_TIME), "used_by_transaction": _nullable(_STRING),
})
_OTP_REQUEST: Schema = {
    "type": "object", "additionalProperties": False, "required": ["profile"],
    "properties": {
        "profile": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": PROFILE_NAME.pattern,
                    "description": "A profile whose challenge is `otp`."},
        "ttl": {"type": "string", "pattern": OTP_TTL_PATTERN, "default": "1h",
                "description": "How long the passwords are valid: a number and `s`, `m`, `h` or `d`, from `1m` to "
                               "`30d`."},
        "subject_pattern": _nullable({
            "type": "string", "minLength": 1, "maxLength": MAX_PATTERN_LENGTH, "pattern": OTP_PATTERN_PATTERN,
            "description": "A shell-style glob the request's subject (RFC 4514) or one of its subjectAltName "
                           "values must match; none (or null) binds the passwords to nothing."}),
        "count": {"type": "integer", "minimum": 1, "maximum": MAX_OTP_COUNT, "default": 1},
    },
}
_OTP_BATCH = _object({
    "passwords": {"type": "array", "minItems": 1, "maxItems": MAX_OTP_COUNT,
                  "items": {"type": "string", "pattern": OTP_PASSWORD_PATTERN},
                  "description": "The new passwords: shown only in this answer, the server keeps their SHA-256."},
    "expires_at": _TIME, "profile": _STRING, "subject_pattern": _nullable(_STRING),
})


def _page(item: str) -> Schema:
    return _object({"items": _array(_ref(item)), "next_cursor": _nullable(_STRING)})


SCHEMAS: dict[str, Schema] = {
    # A status no call documents (414, say) still gets a code: werkzeug's name of it in snake_case.
    "Error": _object({"error": _object({
        "code": {"type": "string", "pattern": "^[a-z][a-z_]*$", "examples": list(ERROR_CODES),
                 "description": "One of " + ", ".join(f"`{code}`" for code in ERROR_CODES) + " (see the responses)."},
        "message": _STRING,
    })}),
    "Certificate": _object(_ROW_FIELDS),
    "CertificateDetail": _object(_ROW_FIELDS | {"pem": {"type": "string", "pattern": "^-----BEGIN CERTIFICATE-----"}}),
    "CertificatePage": _page("Certificate"),
    # What an enrollment story names as its certificate: the stored fields, the reason as its RFC 5280 code.
    "StoredCertificate": _object(_certificate_fields(_nullable({"type": "integer", "minimum": 0, "maximum": 10}))),
    "RevokeRequest": {
        "type": "object", "additionalProperties": False,
        "properties": {
            "reason": {"type": "string", "enum": list(REASON_NAMES), "default": "unspecified"},
            "comment": _nullable({"type": "string", "maxLength": MAX_COMMENT, "pattern": COMMENT_PATTERN}),
        },
    },
    "Enrollment": _ENROLLMENT,
    "EnrollmentPage": _page("Enrollment"),
    "EnrollmentStory": _object({
        "transaction": _ref("Enrollment"), "steps": _array(_STEP),
        "certificate": _nullable(_ref("StoredCertificate")), "notifications": _array(_NOTIFICATION),
    }),
    # serial and issuer are null (and reason may be) only on an audit row edited into something else.
    "Revocation": _object({
        "serial": _nullable(_HEX_SERIAL), "issuer": _nullable(_STRING), "reason": _nullable(_STRING),
        "actor": _STRING, "source": _STRING,
        "action": {"type": "string", "enum": list(REVOCATION_ACTIONS)},
        "revoked_at": _TIME, "comment": _nullable(_STRING), "audit_id": {"type": "integer", "minimum": 1},
    }),
    "RevocationPage": _page("Revocation"),
    "AuditEntry": _object({
        "id": {"type": "integer", "minimum": 1}, "occurred_at": _TIME, "actor": _STRING, "source": _STRING,
        "action": _STRING, "subject": _nullable(_STRING), "detail": {"type": "object"},
    }),
    "AuditPage": _page("AuditEntry"),
    "Operations": _object({
        "taken_at": _TIME,
        "outbox": _object({"pending": _COUNT, "dead": _COUNT, "delivered": _COUNT,
                           "entries": _array(_OUTBOX_ENTRY)}),
        "deferred": _object({"count": _COUNT, "entries": _array(_DEFERRED_ENTRY)}),
        "revocation_sync": _object({
            "last_received_at": _nullable(_TIME), "last_processed_at": _nullable(_TIME),
            "last_uploaded_at": _nullable(_TIME), "awaiting_upload": _COUNT,
            "results": {"type": "object", "additionalProperties": _COUNT},
        }),
        "expiry": _array(_object({"credential": _STRING, "not_after": _nullable(_TIME),
                                  "days_left": _nullable({"type": "number"}), "expired": {"type": "boolean"},
                                  "problem": _nullable(_STRING)})),
    }),
    "RetryAnswer": _object({"id": {"type": "integer", "minimum": 1},
                            "state": {"type": "string", "enum": ["pending"]}}),
    "OtpRequest": _OTP_REQUEST,
    "OtpBatch": _OTP_BATCH,
    "Otp": _OTP,
    "OtpPage": _page("Otp"),
} | openapi_webhooks.SCHEMAS


# --- paths ---------------------------------------------------------------------------------------------------


def _json(schema: Schema) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description, "content": _json(_ref("Error"))}
    return answer | ({"headers": headers} if headers else {})


def _header(description: str, schema: Schema, *, required: bool = False) -> dict[str, Any]:
    return {"description": description, "schema": schema, "required": required}


_BAD_REQUEST = _error("An unknown, repeated or invalid parameter (`unknown_parameter`, `repeated_parameter`, "
                      "`invalid_parameter`) or body (`invalid_body`: outside its schema, or values the server "
                      "refuses, such as a profile without the otp challenge).")
_NOT_FOUND = _error("Not found; every path answers 404 while the API is off (no token configured).")
_RETRY_AFTER = _header("Seconds to wait before trying again.", {"type": "integer"}, required=True)
_UNAVAILABLE = _error("The store is unavailable for now.", {"Retry-After": _RETRY_AFTER})
_REFUSALS = {
    "401": _error("No valid bearer token.",
                  {"WWW-Authenticate": _header("`Bearer realm=...` (RFC 6750).", _STRING, required=True)}),
    "403": _error("The token lacks the scope this call needs."),
}


def _operation(
    operation_id: str, summary: str, scope: str | None, ok: dict[str, Any], *, ok_status: str = "200",
    **extra: Any,
) -> dict[str, Any]:
    """An operation with its parameters from :data:`PATH` and :data:`QUERY` and the answers every call can get."""
    parameters = [p.openapi("path") for p in PATH.get(operation_id, ())]
    parameters += [p.openapi("query") for p in QUERY[operation_id]]
    responses: dict[str, Any] = {ok_status: ok, "400": _BAD_REQUEST}
    if scope is not None:
        responses |= _REFUSALS
    responses |= {"404": _NOT_FOUND} | extra.pop("responses", {}) | {"503": _UNAVAILABLE}
    security = [{"bearer": [scope]}] if scope is not None else []
    described = {"operationId": operation_id, "summary": summary, "security": security, "responses": responses}
    return described | ({"parameters": parameters} if parameters else {}) | extra


def _ok(
    description: str, schema: Schema, others: dict[str, Any] | None = None, headers: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A 200 answer: JSON of ``schema``, or one of the ``others`` media types."""
    answer: dict[str, Any] = {"description": description, "content": _json(schema) | (others or {})}
    return answer | ({"headers": headers} if headers else {})


_CSV = {"schema": {"type": "string"}}
_NO_STORE = {"Cache-Control": _header("`no-store`: the passwords must not be kept by any cache.",
                                      {"type": "string", "enum": ["no-store"]}, required=True)}
_NEXT_CURSOR = {"X-Next-Cursor": _header("The cursor of the next page of a CSV export, when there is one.", _STRING)}
_REVOKE_BODY = {
    "required": False, "description": "The reason (RFC 5280 name; `unspecified` when absent) and a comment.",
    "content": _json(_ref("RevokeRequest")),
}
_PATHS: dict[str, dict[str, Any]] = {
    "/certificates": {"get": _operation(
        "list_certificates", "Search issued certificates, newest first (a page of JSON, or CSV)", "read",
        _ok("A page of certificates.", _ref("CertificatePage"), {"text/csv": _CSV}, _NEXT_CURSOR),
    )},
    "/certificates/{serial}": {"get": _operation(
        "show_certificate", "One certificate: its fields and PEM, or the certificate as PEM or DER", "read",
        _ok("The certificate.", _ref("CertificateDetail"), {
            "application/x-pem-file": {"schema": {"type": "string", "pattern": "^-----BEGIN CERTIFICATE-----"}},
            "application/pkix-cert": {"schema": {"type": "string", "contentMediaType": "application/pkix-cert"}},
        }),
    )},
    "/certificates/{serial}/revoke": {"post": _operation(
        "revoke_certificate", "Revoke a certificate (CRL and OCSP follow at once); audited as the token", "revoke",
        _ok("The certificate, revoked now.", _ref("Certificate")), requestBody=_REVOKE_BODY,
        responses={"409": _error("The certificate was revoked already."), "413": _error("The body is too large.")},
    )},
    "/enrollments": {"get": _operation(
        "list_enrollments", "Search SCEP enrollments (transactions), newest first", "read",
        _ok("A page of enrollments.", _ref("EnrollmentPage")),
    )},
    "/enrollments/{transaction_id}": {"get": _operation(
        "show_enrollment", "An enrollment's story: its steps, certificate and Intune notifications", "read",
        _ok("The enrollment.", _ref("EnrollmentStory")),
    )},
    "/revocations": {"get": _operation(
        "list_revocations", "Revocations and withdrawals from the audit log, newest first", "read",
        _ok("A page of revocations.", _ref("RevocationPage")),
    )},
    "/audit": {"get": _operation(
        "list_audit", "The audit log, newest first", "read", _ok("A page of audit entries.", _ref("AuditPage")),
    )},
    "/operations": {"get": _operation(
        "show_operations", "The Intune outbox, deferred validations, revocation sync and credential expiry", "read",
        _ok("The operational status.", _ref("Operations")),
    )},
    "/operations/outbox/{id}/retry": {"post": _operation(
        "retry_outbox", "Make a pending or dead Intune notification due now (attempts kept); audited", "admin",
        _ok("The entry is pending and due now.", _ref("RetryAnswer")),
    )},
    "/otp": {
        "get": _operation(
            "list_otps", "One-time challenge passwords, newest first (never the passwords themselves)", "read",
            _ok("A page of one-time passwords.", _ref("OtpPage")),
        ),
        "post": _operation(
            "create_otps", "Mint one-time challenge passwords for an otp profile; audited as the token", "admin",
            _ok("The new passwords, shown only now.", _ref("OtpBatch"), headers=_NO_STORE), ok_status="201",
            requestBody={"required": True, "content": _json(_ref("OtpRequest")),
                         "description": "The profile, the lifetime, a subject pattern and how many."},
            responses={"413": _error("The body is too large.")},
        ),
    },
    "/otp/{id}/revoke": {"post": _operation(
        "revoke_otp", "Make an unused one-time password expire now; audited as the token", "admin",
        _ok("The password, expired now.", _ref("Otp")),
        responses={"409": _error("The password was used or had expired already.")},
    )},
    "/openapi.json": {"get": _operation(
        "openapi_document", "This document (no token needed while the API is on)", None,
        _ok("The OpenAPI 3.1 document.", {"type": "object"}),
    )},
}


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (a new copy each time: callers may change theirs)."""
    return copy.deepcopy({
        "openapi": "3.1.0",
        "info": {
            "title": "scep-server admin API", "version": "1.0.0",
            "description": "Certificates, enrollments, revocations, the audit log, operations and one-time "
                           "challenge passwords of a scep-server. Every call but this document's needs "
                           "`Authorization: Bearer <token>`: the configured `admin_token` or a named token "
                           "(`scep-server tokens create`) with the scope the operation names (`read`, `revoke`, "
                           "or `admin` for all). Lists are paged with cursors.\n\n"
                           "The `webhook` challenge's POST to a profile's `challenge.url` is described under "
                           "`webhooks` (`challengeValidation`): its body is "
                           f"[`{openapi_webhooks.REQUEST}`](#/components/schemas/{openapi_webhooks.REQUEST}), "
                           "the answer the server acts on "
                           f"[`{openapi_webhooks.ANSWER}`](#/components/schemas/{openapi_webhooks.ANSWER}).",
        },
        "servers": [{"url": BASE}],
        "security": [{"bearer": []}],
        "paths": _PATHS,
        "webhooks": openapi_webhooks.WEBHOOKS,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "`admin_token` or a named API token."}},
        },
    })
