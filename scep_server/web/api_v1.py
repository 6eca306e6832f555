"""The admin API v1 (``/api/v1``): certificates, enrollments, revocations, the audit log, operations and
one-time challenge passwords.

Described by the OpenAPI 3.1 document of :mod:`scep_server.web.openapi`, served at ``/api/v1/openapi.json``
(without a token, while the API is on). Every other call needs a bearer token with the scope the document
names (see :mod:`scep_server.web.auth`). A request is checked against the document first: a parameter it
does not list is 400 ``unknown_parameter``, one given twice 400 ``repeated_parameter``, a value outside its
schema 400 ``invalid_parameter``; so are the values the use cases refuse (a ``ValueError`` naming the
parameter). Every error is JSON (``scep_server.web.errors``). Lists are paged by cursor: a page's
``next_cursor`` is the next page's ``cursor``, null on the last one.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn, TypeGuard, TypeVar

from flask import Blueprint, Response, abort, jsonify, request
from werkzeug.exceptions import NotFound

from scep_server.errors import InvalidInput
from scep_server.service.certificates import NoSuchCertificate, Revoked, WasRevoked, parse_serial, pem
from scep_server.service.enrollments import EnrollmentSearch
from scep_server.service.otp import parse_ttl
from scep_server.service.reports import (
    CERTIFICATE_COLUMNS,
    AuditQuery,
    CertificateQuery,
    ReportStatus,
    RevocationQuery,
    certificate_row,
    parse_time,
    to_csv,
)
from scep_server.service.revocation import REASON_NAMES
from scep_server.service.tokens import Scope
from scep_server.web import auth, openapi
from scep_server.web.context import runtime
from scep_server.web.errors import problem
from scep_server.web.openapi import COMMENT_PATTERN, MAX_COMMENT, PATH, QUERY, SCHEMAS, Parameter
from scep_server.web.otp import otp_page, otp_row, otp_service

log = logging.getLogger("scep_server.web.api_v1")

bp = Blueprint("api_v1", __name__, url_prefix=openapi.BASE)
T = TypeVar("T")

SCOPES = {  # every other GET: read; a write not listed here needs admin (a new one fails closed)
    "revoke_certificate": Scope.REVOKE, "retry_outbox": Scope.ADMIN, "create_otps": Scope.ADMIN,
    "revoke_otp": Scope.ADMIN,
}
PUBLIC = frozenset({"openapi_document"})
_INTEGER = re.compile(r"-?[0-9]{1,20}")  # ASCII digits only: int() also reads "²" and "١"
_BODY_FIELDS = ("reason", "comment")
_OTP_FIELDS: dict[str, Any] = SCHEMAS["OtpRequest"]["properties"]


@bp.before_request
def _authenticate() -> None:
    operation = _operation()
    if operation in PUBLIC:
        if not auth.api_is_on():
            raise NotFound()
        return
    auth.require(SCOPES.get(operation, Scope.READ if request.method in auth.READ_METHODS else Scope.ADMIN))


def _operation() -> str:
    return (request.endpoint or "").rpartition(".")[2]


# --- parameters ----------------------------------------------------------------------------------------------


class Arguments:
    """A request's query parameters, checked against the operation's documented ones."""

    def __init__(self, operation: str) -> None:
        documented = {parameter.name: parameter for parameter in QUERY[operation]}
        for name in request.args:
            if name not in documented:
                known = ", ".join(documented) or "none"
                _refuse("unknown_parameter", f"unknown parameter {_shown(name)}; this call takes: {known}")
            if len(request.args.getlist(name)) > 1:
                _refuse("repeated_parameter", f"parameter {name} is given more than once")
        given = request.args
        self._values = {
            name: _conforming(parameter, given[name]) if name in given else parameter.schema.get("default")
            for name, parameter in documented.items()
        }
        self._now = datetime.now(UTC)

    @property
    def now(self) -> datetime:
        return self._now

    def text(self, name: str) -> str | None:
        value = self._values[name]
        return value if isinstance(value, str) else None

    def number(self, name: str) -> int:
        value = self._values[name]
        if not isinstance(value, int):
            raise TypeError(f"{name} is not an integer parameter")
        return value

    def time(self, name: str) -> datetime | None:
        text = self.text(name)
        return None if text is None else _parsed(lambda: parse_time(text, name, now=self._now))


def _conforming(parameter: Parameter, raw: str) -> str | int:
    """``raw`` as its schema types it; 400 ``invalid_parameter`` unless it meets the schema."""
    schema = parameter.schema
    if schema["type"] == "integer":
        if not _INTEGER.fullmatch(raw) or not schema["minimum"] <= int(raw) <= schema["maximum"]:
            _invalid(parameter, raw, f"a whole number from {schema['minimum']} to {schema['maximum']}")
        return int(raw)
    if "enum" in schema and raw not in schema["enum"]:
        _invalid(parameter, raw, "one of " + ", ".join(schema["enum"]))
    if not schema.get("minLength", 0) <= len(raw) <= schema.get("maxLength", len(raw)):
        _invalid(parameter, raw, f"{schema.get('minLength', 0)} to {schema['maxLength']} characters")
    if "pattern" in schema and not re.fullmatch(_unanchored(schema["pattern"]), raw):
        _invalid(parameter, raw, parameter.description.rstrip("."))
    return raw


def _path_value(operation: str, name: str, raw: str) -> str | int:
    (parameter,) = [p for p in PATH[operation] if p.name == name]
    return _conforming(parameter, raw)


def _invalid(parameter: Parameter, raw: str, expected: str) -> NoReturn:
    _refuse("invalid_parameter", f"{parameter.name} {_shown(raw)} is not valid: expected {expected}")


def _refuse(code: str, message: str) -> NoReturn:
    abort(problem(400, code, message))


def _shown(value: str) -> str:
    """A value quoted for a message, cut short: the answer need not echo a long request back."""
    return repr(value if len(value) <= 64 else value[:64] + "...")


def _parsed(call: Callable[[], T]) -> T:
    """``call()``; a ``ValueError`` (which names the parameter) is 400 ``invalid_parameter``."""
    try:
        return call()
    except ValueError as exc:
        _refuse("invalid_parameter", str(exc))


def _serial(raw: str, operation: str) -> int:
    (parameter,) = PATH[operation]
    value = str(_conforming(parameter, raw))
    try:
        return parse_serial(value)
    except ValueError:
        _invalid(parameter, raw, "a positive hexadecimal serial number of at most 20 octets")


def _page(items: list[Any], next_cursor: str | None) -> Response:
    return jsonify({"items": items, "next_cursor": next_cursor})


# --- certificates --------------------------------------------------------------------------------------------


@bp.get("/certificates")
def list_certificates() -> Response:
    args = Arguments("list_certificates")
    status = args.text("status")
    query = CertificateQuery(
        serial=args.text("serial"), subject=args.text("subject"), san=args.text("san"),
        thumbprint=args.text("thumbprint"), profile=args.text("profile"),
        status=ReportStatus(status) if status else None, issued_since=args.time("issued_since"),
        issued_until=args.time("issued_until"), expires_before=args.time("expires_before"),
        device_id=args.text("device_id"), cursor=args.text("cursor"), limit=args.number("limit"),
    )
    page = _parsed(lambda: runtime().reports.certificate_page(query))
    rows = [certificate_row(record, args.now) for record in page.items]
    if args.text("format") == "csv":
        headers = {"Content-Disposition": 'attachment; filename="certificates.csv"'}
        if page.next_cursor is not None:
            headers["X-Next-Cursor"] = page.next_cursor
        return Response(to_csv(rows, CERTIFICATE_COLUMNS), mimetype="text/csv", headers=headers)
    return _page(rows, page.next_cursor)


@bp.get("/certificates/<serial>")
def show_certificate(serial: str) -> Response:
    args = Arguments("show_certificate")
    record = runtime().certificates.show(_serial(serial, "show_certificate"))
    if record is None:
        abort(404, description="no such certificate")
    match args.text("format"):
        case "pem":
            return Response(pem(record), mimetype="application/x-pem-file",
                            headers={"Content-Disposition": f'attachment; filename="{record.serial:x}.pem"'})
        case "der":
            return Response(record.der, mimetype="application/pkix-cert",
                            headers={"Content-Disposition": f'attachment; filename="{record.serial:x}.cer"'})
        case _:
            return jsonify(certificate_row(record, args.now) | {"pem": pem(record)})


@bp.post("/certificates/<serial>/revoke")
def revoke_certificate(serial: str) -> Response:
    args = Arguments("revoke_certificate")
    number = _serial(serial, "revoke_certificate")
    reason, comment = _revocation(_json_body())
    answer = _parsed(lambda: runtime().certificates.revoke(
        number, reason=reason, actor=auth.actor(), source="api", comment=comment
    ))
    match answer:
        case Revoked(certificate=record):
            log.info("admin API v1: revoked %x (%s) for %s by %s", number, reason, request.remote_addr, auth.actor())
            return jsonify(certificate_row(record, args.now))
        case WasRevoked():
            return problem(409, "conflict", f"certificate {number:x} was revoked already")
        case NoSuchCertificate():
            abort(404, description="no such certificate")


def _json_body() -> Any:
    """The body read as JSON whatever its Content-Type; ``{}`` when empty; 400 ``invalid_body`` when it is not
    JSON (a body that cannot be read must not be taken for "no reason given")."""
    data = request.get_data(cache=True)
    if not data:
        return {}
    try:
        return json.loads(data)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser goes
        abort(problem(400, "invalid_body", 'the body must be JSON such as {"reason": "keyCompromise"}'))


def _revocation(body: Any) -> tuple[str, str | None]:
    """The reason and comment of a revoke body (the RevokeRequest schema); 400 ``invalid_body`` otherwise."""
    if not isinstance(body, dict):
        _bad_body('the body must be a JSON object such as {"reason": "keyCompromise"}')
    unknown = sorted(set(body) - set(_BODY_FIELDS))
    if unknown:
        _bad_body(f"unknown field {_shown(unknown[0])}; a revocation takes: {', '.join(_BODY_FIELDS)}")
    reason, comment = body.get("reason", "unspecified"), body.get("comment")
    if not isinstance(reason, str) or reason not in REASON_NAMES:
        _bad_body(f"reason must be one of {', '.join(REASON_NAMES)}")
    if comment is not None and not _is_comment(comment):
        _bad_body(f"comment must be one line of at most {MAX_COMMENT} printable characters")
    return reason, comment


def _is_comment(value: object) -> bool:
    """Whether a JSON value is a comment the audit log can keep; a lone surrogate (JSON allows ``\\ud800``)
    is no text."""
    if not isinstance(value, str) or len(value) > MAX_COMMENT:
        return False
    return re.fullmatch(_unanchored(COMMENT_PATTERN), value) is not None and _encodes(value)


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _unanchored(pattern: str) -> str:
    """A JSON Schema pattern (``^...$``, searched for) as ``re.fullmatch`` takes it: Python's ``$`` also
    matches before a final newline."""
    return pattern.removeprefix("^").removesuffix("$")


def _bad_body(message: str) -> NoReturn:
    abort(problem(400, "invalid_body", message))


# --- enrollments, revocations, audit ----------------------------------------------------------------------


@bp.get("/enrollments")
def list_enrollments() -> Response:
    args = Arguments("list_enrollments")
    search = EnrollmentSearch(
        since=args.time("since"), until=args.time("until"), profile=args.text("profile"),
        outcome=args.text("outcome"), fail_info=args.text("fail_info"), intune_code=args.text("intune_code"),
        requester_ip=args.text("requester_ip"), transaction_id=args.text("transaction_id"),
        cursor=args.text("cursor"), limit=args.number("limit"),
    )
    page = _parsed(lambda: runtime().enrollments.search(search))
    return _page(page.items, page.next_cursor)


@bp.get("/enrollments/<path:transaction_id>")
def show_enrollment(transaction_id: str) -> Response:
    args = Arguments("show_enrollment")
    wanted = str(_path_value("show_enrollment", "transaction_id", transaction_id))
    story = _parsed(lambda: runtime().enrollments.story(wanted, args.text("profile")))
    if story is None:
        abort(404, description="no such enrollment")
    return jsonify(story)


@bp.get("/revocations")
def list_revocations() -> Response:
    args = Arguments("list_revocations")
    query = RevocationQuery(
        since=args.time("since"), until=args.time("until"), actor=args.text("actor"), source=args.text("source"),
        cursor=args.text("cursor"), limit=args.number("limit"),
    )
    page = _parsed(lambda: runtime().reports.revocations(query))
    return _page(page.items, page.next_cursor)


@bp.get("/audit")
def list_audit() -> Response:
    args = Arguments("list_audit")
    query = AuditQuery(
        action=args.text("action"), actor=args.text("actor"), source=args.text("source"), since=args.time("since"),
        until=args.time("until"), cursor=args.text("cursor"), limit=args.number("limit"),
    )
    page = _parsed(lambda: runtime().reports.audit(query))
    return _page(page.items, page.next_cursor)


# --- one-time challenge passwords --------------------------------------------------------------------------


@bp.get("/otp")
def list_otps() -> Response:
    args = Arguments("list_otps")
    service = otp_service(args.now)
    page = _parsed(lambda: otp_page(service, profile=args.text("profile"), cursor=args.text("cursor"),
                                    limit=args.number("limit")))
    return _page(page.items, page.next_cursor)


@bp.post("/otp")
def create_otps() -> Response:
    args = Arguments("create_otps")
    profile, ttl, pattern, count = _otp_request(_json_body())
    try:
        passwords = otp_service(args.now).create(profile, ttl, pattern, count, actor=auth.actor(), source="api")
    except InvalidInput as exc:  # a profile without the otp challenge, a lifetime out of range
        _bad_body(str(exc))
    log.info("admin API v1: %d one-time password(s) of %s minted by %s", count, profile, auth.actor())
    answer = jsonify({"passwords": passwords, "expires_at": (args.now + ttl).isoformat(), "profile": profile,
                      "subject_pattern": pattern})
    answer.status_code = 201
    answer.headers["Cache-Control"] = "no-store"
    return answer


@bp.post("/otp/<otp_id>/revoke")
def revoke_otp(otp_id: str) -> Response:
    args = Arguments("revoke_otp")
    number = int(_path_value("revoke_otp", "id", otp_id))
    service = otp_service(args.now)
    record, changed = service.revoke(number, actor=auth.actor(), source="api")  # none: NotFound, a 404
    if not changed:
        return problem(409, "conflict", f"one-time password {number} was used or had expired already")
    log.info("admin API v1: one-time password %d revoked by %s", number, auth.actor())
    return jsonify(otp_row(service, record))


def _otp_request(body: Any) -> tuple[str, timedelta, str | None, int]:
    """The profile, lifetime, subject pattern and count of a mint body (the OtpRequest schema); 400
    ``invalid_body`` otherwise."""
    if not isinstance(body, dict):
        _bad_body('the body must be a JSON object such as {"profile": "kiosks", "ttl": "1h"}')
    unknown = sorted(set(body) - set(_OTP_FIELDS))
    if unknown:
        _bad_body(f"unknown field {_shown(unknown[0])}; minting takes: {', '.join(_OTP_FIELDS)}")
    profile, ttl, pattern = body.get("profile"), body.get("ttl", "1h"), body.get("subject_pattern")
    if not _conforms(profile, _OTP_FIELDS["profile"]):
        _bad_body("profile must name a profile with the otp challenge")
    if not _conforms(ttl, _OTP_FIELDS["ttl"]):
        _bad_body("ttl must be a number and s, m, h or d, from 1m to 30d (like 15m or 1h)")
    if pattern is not None and not _conforms(pattern, _OTP_FIELDS["subject_pattern"]):
        maximum = _OTP_FIELDS["subject_pattern"]["maxLength"]
        _bad_body(f"subject_pattern must be one line of 1 to {maximum} printable characters, or null")
    return profile, parse_ttl(ttl), pattern, _otp_count(body.get("count", 1))


def _otp_count(value: Any) -> int:
    schema = _OTP_FIELDS["count"]
    if isinstance(value, float) and value.is_integer():  # JSON Schema counts 2.0 as an integer
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not schema["minimum"] <= value <= schema["maximum"]:
        _bad_body(f"count must be a whole number from {schema['minimum']} to {schema['maximum']}")
    return value


def _conforms(value: object, schema: dict[str, Any]) -> TypeGuard[str]:
    """Whether a JSON value is text that meets a string schema's length and pattern (and is text at all)."""
    if not isinstance(value, str):
        return False
    if not schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", len(value)):
        return False
    return re.fullmatch(_unanchored(schema["pattern"]), value) is not None and _encodes(value)


# --- operations, the document ------------------------------------------------------------------------------


@bp.get("/operations")
def show_operations() -> Response:
    Arguments("show_operations")
    return jsonify(runtime().operations.status())


@bp.post("/operations/outbox/<outbox_id>/retry")
def retry_outbox(outbox_id: str) -> Response:
    Arguments("retry_outbox")
    number = int(_path_value("retry_outbox", "id", outbox_id))
    if not _parsed(lambda: runtime().operations.retry_outbox(number, actor=auth.actor(), source="api")):
        abort(404, description=f"no pending or dead outbox entry {number}")
    log.info("admin API v1: outbox entry %d made due by %s", number, auth.actor())
    return jsonify({"id": number, "state": "pending"})


@bp.get("/openapi.json")
def openapi_document() -> Response:
    Arguments("openapi_document")
    return jsonify(openapi.document())
