"""The web console at /console/: a dashboard, certificate and enrollment search, revocation, the audit log,
and the one-time challenge passwords (their pages are :mod:`scep_server.web.console_otp`'s).

Server-rendered pages (templates/console/), one stylesheet and no script (static/console/). An operator
signs in with an API token (``scep_server.service.console``: the session cookie holds the token's
SHA-256, checked again on every request, for at most 8 hours and 1 hour idle); the console needs the
``read`` scope, revoking needs ``revoke``, and minting or revoking one-time passwords ``admin``. The
cookie is HttpOnly, SameSite=Strict, limited to /console and Secure on https (behind a TLS proxy too:
``trusted_proxy_hops`` makes the app trust its X-Forwarded-Proto). Every POST carries the session's CSRF
token in a hidden field and, when the browser says where it comes from (Sec-Fetch-Site, Origin or
Referer), comes from this server; anything else is refused with 400. Every console answer carries a
strict Content-Security-Policy and no-store. Revocations go through the same
``CertificateQueries.revoke`` as the APIs, audited as the token's actor with source ``console``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import Blueprint, Response, abort, current_app, g, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from itsdangerous import BadSignature, URLSafeSerializer
from werkzeug.exceptions import HTTPException

from scep_server.service.certificates import NoSuchCertificate, Revoked, WasRevoked, parse_serial, pem
from scep_server.service.console import (
    DEFAULT_PAGE_SIZE,
    PAGE_SIZES,
    ConsoleAuth,
    ConsoleSession,
    SessionEnded,
    SignedIn,
    SignInRefused,
    audit_query,
    certificate_query,
    csrf_matches,
    enrollment_search,
    form_text,
    revocation_query,
    session_secret,
)
from scep_server.service.dashboard import FAILURE_WINDOWS, Dashboard
from scep_server.service.enrollments import FAIL_INFO_NAMES
from scep_server.service.enrollments import OUTCOMES as ENROLLMENT_OUTCOMES
from scep_server.service.reports import REPORT_STATUSES, certificate_row
from scep_server.service.revocation import REASON_NAMES, UnknownRevocationReason
from scep_server.service.tokens import Scope, TokenGrant
from scep_server.web.auth import READ_METHODS, tokens
from scep_server.web.context import runtime

__all__ = ["COOKIE_NAME", "CONSOLE_AUTH_EXTENSION", "bp", "require_scope", "signed_in_grant"]

log = logging.getLogger("scep_server.web.console")

bp = Blueprint(
    "console", __name__, url_prefix="/console", template_folder="templates", static_folder="static/console",
    static_url_path="/static",
)

COOKIE_NAME = "scep_console"
COOKIE_PATH = "/console"
COOKIE_SALT = "scep-server console session"
CSRF_FIELD = "csrf_token"
CONSOLE_AUTH_EXTENSION = "scep_server.console.auth"  # app.extensions key of the ConsoleAuth
_KEY_EXTENSION = "scep_server.console.key"
_DASHBOARD_EXTENSION = "scep_server.console.dashboard"
# Open without a session: the sign-in form, signing out (of a session that may have ended) and the stylesheet.
PUBLIC_ENDPOINTS = frozenset({"console.sign_in", "console.sign_out", "console.static"})
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
MAX_COMMENT_LENGTH = 500
ENDED_NOTICES = {
    "idle": "Your session ended after an hour without activity. Please sign in again.",
    "lifetime": "Your session ended: sessions last at most 8 hours. Please sign in again.",
    "token": "Your session ended: its token is no longer valid.",
    "signed-out": "You have signed out.",
}

T = TypeVar("T")


# -- the session, on every request --------------------------------------------------------------------


@bp.before_request
def _check_session() -> ResponseReturnValue | None:
    if request.endpoint == "console.static":
        return None
    stored = _stored_session()
    g.console_session = stored or ConsoleSession.anonymous()
    if request.method not in READ_METHODS:
        _check_form(stored)
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    resumed = _auth().resume(g.console_session)
    if isinstance(resumed, SessionEnded):
        g.console_session = ConsoleSession.anonymous()
        if request.method in READ_METHODS:
            ended = resumed.code if stored is not None and stored.signed_in else None
            return redirect(url_for("console.sign_in", ended=ended, next=request.full_path.rstrip("?")), 303)
        abort(401, description=ENDED_NOTICES.get(resumed.code, "Please sign in."))
    g.console_session = resumed.session
    g.console_grant = resumed.grant
    return None


@bp.after_request
def _write_session(response: Response) -> Response:
    session = g.get("console_session")
    if isinstance(session, ConsoleSession) and request.endpoint != "console.static":
        response.set_cookie(
            COOKIE_NAME, _serializer().dumps(session.to_cookie()), path=COOKIE_PATH, httponly=True,
            samesite="Strict", secure=_over_tls(),
        )
    return response


def _over_tls() -> bool:
    """Whether the browser reaches the console over TLS: this request came by https (directly, or as
    the trusted proxy says), or the server's public URL is https (a TLS proxy that is not trusted to
    forward the scheme, trusted_proxy_hops 0, still serves the browser https)."""
    public_url = runtime().config.public_url or ""
    return request.is_secure or public_url.lower().startswith("https://")


@bp.after_app_request
def _secure_headers(response: Response) -> Response:
    """On every answer under /console, the views' and the app's own (a 404 of an unknown page too)."""
    if request.path == COOKIE_PATH or request.path.startswith(COOKIE_PATH + "/"):
        response.headers.update(SECURITY_HEADERS)
    return response


def _stored_session() -> ConsoleSession | None:
    cookie = request.cookies.get(COOKIE_NAME)
    if not cookie:
        return None
    try:
        return ConsoleSession.from_cookie(_serializer().loads(cookie))
    except BadSignature:
        log.warning("console: a session cookie with a bad signature from %s", request.remote_addr)
        return None


def _check_form(stored: ConsoleSession | None) -> None:
    """A POST must come from a console page: this server's origin, when the browser names one, and the
    session's CSRF token. Anything else is refused before any view runs."""
    if not _same_origin():
        log.warning("console: refused a POST to %s from another origin (%s)", request.path, request.remote_addr)
        abort(400, description="This form did not come from this console.")
    if stored is None or not csrf_matches(stored.csrf, request.form.get(CSRF_FIELD)):
        log.warning("console: refused a POST to %s without its CSRF token (%s)", request.path, request.remote_addr)
        abort(400, description="The form has expired or did not come from this console. Reload the page and try "
                               "again.")


def _same_origin() -> bool:
    """Whether the request says it comes from this server's pages: ``Sec-Fetch-Site`` when the browser
    sends it (current ones do, whatever the referrer policy), and the host of the Origin header (or else
    the Referer). From pages with ``Referrer-Policy: no-referrer``, as the console's, browsers send
    ``Origin: null``, which says nothing: the CSRF token decides then."""
    fetched_from = request.headers.get("Sec-Fetch-Site")
    if fetched_from is not None and fetched_from != "same-origin":
        return False
    named = request.headers.get("Origin") or request.headers.get("Referer")
    if not named or named == "null":
        return True
    return urlsplit(named).netloc.lower() in _own_hosts()


def _own_hosts() -> set[str]:
    hosts = {request.host.lower()}
    public_url = runtime().config.public_url
    if public_url:
        hosts.add(urlsplit(public_url).netloc.lower())
    return hosts


def _serializer() -> URLSafeSerializer:
    key = current_app.extensions.get(_KEY_EXTENSION)
    if not isinstance(key, bytes):
        key = current_app.extensions[_KEY_EXTENSION] = session_secret(Path(runtime().config.data_dir))
    return URLSafeSerializer(key, salt=COOKIE_SALT)


def _auth() -> ConsoleAuth:
    """The app's ConsoleAuth, made on first use (a test may put its own, with its clock, in first)."""
    return _extension(CONSOLE_AUTH_EXTENSION, ConsoleAuth,
                      lambda: ConsoleAuth(tokens(), runtime().config.admin_token.resolve))


def _dashboard() -> Dashboard:
    return _extension(_DASHBOARD_EXTENSION, Dashboard, lambda: Dashboard(runtime().store))


def _extension(key: str, kind: type[T], make: Callable[[], T]) -> T:
    value = current_app.extensions.get(key)
    if not isinstance(value, kind):
        value = current_app.extensions[key] = make()
    return value


def signed_in_grant() -> TokenGrant:
    """The grant of the signed-in session a view runs for."""
    grant = g.get("console_grant")
    if not isinstance(grant, TokenGrant):
        raise TypeError("a console view ran without a signed-in session")
    return grant


def require_scope(scope: Scope) -> TokenGrant:
    """The signed-in session's grant, which must allow ``scope``; 403 otherwise."""
    grant = signed_in_grant()
    if not grant.allows(scope):
        log.warning("console: %s lacks the %s scope for %s", grant.actor, scope, request.path)
        abort(403, description=f"Your token ({grant.actor}) lacks the {scope} scope this needs.")
    return grant


@bp.context_processor
def _page_context() -> dict[str, Any]:
    session = g.get("console_session")
    grant = g.get("console_grant")
    return {
        "csrf_field": CSRF_FIELD,
        "csrf_token": session.csrf if isinstance(session, ConsoleSession) else "",
        "grant": grant if isinstance(grant, TokenGrant) else None,
        "may_revoke": isinstance(grant, TokenGrant) and grant.allows(Scope.REVOKE),
        "when": _when,
        "page_url": _page_url,
    }


def _when(value: str | datetime | None) -> str:
    """A time as the console shows it: UTC, to the second."""
    if value is None or value == "":
        return "–"
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


def _page_url(cursor: str) -> str:
    """This listing with the same filters, at ``cursor``."""
    # Only the listing's own filters: url_for takes keys such as _method or _external as its own options.
    args: dict[str, Any] = {key: value for key, value in request.args.items()
                            if key != "cursor" and value and not key.startswith("_")}
    return url_for(request.endpoint or "console.dashboard", **args, cursor=cursor)


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> ResponseReturnValue:
    code = exc.code or 500
    return render_template("console/error.html", code=code, title=exc.name, message=exc.description), code


@bp.errorhandler(UnknownRevocationReason)
def _unknown_reason(exc: UnknownRevocationReason) -> ResponseReturnValue:
    return render_template("console/error.html", code=400, title="Bad Request", message=str(exc)), 400


# -- signing in and out ---------------------------------------------------------------------------------


@bp.route("/sign-in", methods=["GET", "POST"])
def sign_in() -> ResponseReturnValue:
    target = _safe_next(request.values.get("next"))
    if request.method == "GET":
        if isinstance(_auth().resume(g.console_session), SignedIn):
            return redirect(target, 303)
        return render_template("console/sign_in.html", next=target,
                               notice=ENDED_NOTICES.get(request.args.get("ended", "")))
    answer = _auth().sign_in(request.form.get("token", ""))
    if isinstance(answer, SignInRefused):
        log.warning("console: refused a sign-in from %s: %s", request.remote_addr, answer.reason)
        status = 403 if answer.forbidden else 401
        return render_template("console/sign_in.html", next=target, error=answer.reason), status
    log.info("console: %s signed in from %s", answer.grant.actor, request.remote_addr)
    g.console_session = answer.session  # a new session, with a new CSRF token
    return redirect(target, 303)


@bp.post("/sign-out")
def sign_out() -> ResponseReturnValue:
    g.console_session = ConsoleSession.anonymous()
    log.info("console: signed out from %s", request.remote_addr)
    return redirect(url_for("console.sign_in", ended="signed-out"), 303)


def _safe_next(target: str | None) -> str:
    """Where to go after signing in: a console page of this server, never anywhere else."""
    if target and target.startswith(COOKIE_PATH + "/") and "//" not in target and "\\" not in target:
        return target
    return url_for("console.dashboard")


# -- the dashboard --------------------------------------------------------------------------------------


@bp.get("/")
def dashboard() -> ResponseReturnValue:
    window = request.args.get("window", "24h")
    if window not in FAILURE_WINDOWS:
        abort(400, description=f"window must be one of {', '.join(FAILURE_WINDOWS)}")
    view = _dashboard().view(window)
    return render_template("console/dashboard.html", view=view, windows=list(FAILURE_WINDOWS),
                           operations=runtime().operations.status())


# -- certificates ---------------------------------------------------------------------------------------


@bp.get("/certificates")
def certificates() -> ResponseReturnValue:
    return _listing("console/certificates.html",
                    lambda now: runtime().reports.certificate_page(certificate_query(request.args, now)),
                    row=certificate_row, statuses=REPORT_STATUSES)


@bp.get("/certificates/<serial>")
def certificate(serial: str) -> ResponseReturnValue:
    record = _certificate(serial)
    row = certificate_row(record, datetime.now(UTC)) | {"requester_ip": record.requester_ip}
    return render_template("console/certificate.html", certificate=row,
                           revoked_now=request.args.get("revoked") == "1")


@bp.get("/certificates/<serial>/pem")
def certificate_pem(serial: str) -> ResponseReturnValue:
    record = _certificate(serial)
    return Response(pem(record), mimetype="application/x-pem-file",
                    headers={"Content-Disposition": f'attachment; filename="{record.serial:x}.pem"'})


@bp.route("/certificates/<serial>/revoke", methods=["GET", "POST"])
def revoke(serial: str) -> ResponseReturnValue:
    grant = require_scope(Scope.REVOKE)
    record = _certificate(serial)
    row = certificate_row(record, datetime.now(UTC))
    if request.method == "GET":
        return render_template("console/revoke.html", certificate=row, reasons=REASON_NAMES)
    reason = request.form.get("reason", "")
    comment = " ".join(request.form.get("comment", "").split()) or None  # the audit log keeps one line
    if reason not in REASON_NAMES or (comment is not None and len(comment) > MAX_COMMENT_LENGTH):
        error = ("Choose one of the reasons listed." if reason not in REASON_NAMES
                 else f"The comment is longer than {MAX_COMMENT_LENGTH} characters.")
        return render_template("console/revoke.html", certificate=row, reasons=REASON_NAMES, error=error,
                               chosen=reason, comment=comment or ""), 400
    try:
        answer = runtime().certificates.revoke(record.serial, reason=reason, issuer=record.issuer,
                                               actor=grant.actor, source="console", comment=comment)
    except ValueError as exc:  # a comment the audit log cannot hold (a line break, a control character)
        return render_template("console/revoke.html", certificate=row, reasons=REASON_NAMES, error=str(exc),
                               chosen=reason, comment=comment or ""), 400
    match answer:
        case Revoked():
            log.info("console: %s revoked %x (%s) from %s", grant.actor, record.serial, reason, request.remote_addr)
            return redirect(url_for("console.certificate", serial=f"{record.serial:x}", revoked="1"), 303)
        case WasRevoked():
            abort(409, description="This certificate had been revoked already.")
        case NoSuchCertificate():
            abort(404, description="There is no such certificate.")


def _certificate(serial: str) -> Any:
    try:
        number = parse_serial(serial)
    except ValueError:
        abort(404, description="There is no certificate with that serial number.")
    record = runtime().certificates.show(number)
    if record is None:
        abort(404, description="There is no certificate with that serial number.")
    return record


# -- enrollments ----------------------------------------------------------------------------------------


@bp.get("/enrollments")
def enrollments() -> ResponseReturnValue:
    return _listing("console/enrollments.html",
                    lambda now: runtime().enrollments.search(enrollment_search(request.args, now)),
                    **_enrollment_choices())


def _enrollment_choices() -> dict[str, Any]:
    return {"outcomes": ENROLLMENT_OUTCOMES, "fail_infos": list(FAIL_INFO_NAMES)}


@bp.get("/enrollments/story")
def story() -> ResponseReturnValue:
    transaction_id = form_text(request.args, "transaction_id")
    if transaction_id is None:
        abort(400, description="Name the transaction (transaction_id).")
    try:
        found = runtime().enrollments.story(transaction_id, form_text(request.args, "profile"))
    except ValueError as exc:  # longer than a transactionID can be, say
        abort(400, description=str(exc))
    if found is None:
        abort(404, description="There is no such enrollment.")
    return render_template("console/story.html", story=found)



# -- the audit log and the revocations ------------------------------------------------------------------


@bp.get("/audit")
def audit() -> ResponseReturnValue:
    return _listing("console/audit.html", lambda now: runtime().reports.audit(audit_query(request.args, now)))


@bp.get("/revocations")
def revocations() -> ResponseReturnValue:
    return _listing("console/revocations.html",
                    lambda now: runtime().reports.revocations(revocation_query(request.args, now)))


# -- the search pages ---------------------------------------------------------------------------------


def _listing(
    template: str, fetch: Callable[[datetime], Any], *, row: Callable[[Any, datetime], Any] | None = None,
    **choices: Any,
) -> ResponseReturnValue:
    """A search page: ``fetch(now)`` reads the page the query string asks for (a CursorPage), ``row`` turns
    each item into what the template shows; a query the service refuses (ValueError) is the form again,
    saying why, with 400."""
    now = datetime.now(UTC)
    try:
        page = fetch(now)
    except ValueError as exc:
        return _search_page(template, error=str(exc), **choices), 400
    rows = [row(item, now) for item in page.items] if row is not None else page.items
    return _search_page(template, rows=rows, next_cursor=page.next_cursor, **choices)


def _search_page(template: str, **values: Any) -> str:
    values.setdefault("rows", [])
    values.setdefault("next_cursor", None)
    return render_template(template, form=request.args, page_sizes=PAGE_SIZES,
                           page_size=request.args.get("limit", str(DEFAULT_PAGE_SIZE)), **values)


# The one-time password pages are a module of their own (this one is long enough); importing it, last, adds
# its views to bp.
from scep_server.web import console_otp  # noqa: E402, F401
