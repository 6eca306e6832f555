"""The console's one-time challenge passwords (/console/otp): the list with each password's state, a form
that mints passwords for an otp profile, and revocation with a confirmation page.

Listing needs the session's ``read`` scope; minting and revoking need ``admin``, as in the admin API
(without it the form is shown disabled, with the reason). New passwords are shown once, in the answer to
the form's POST: never in a URL, never again (the store keeps their SHA-256 only), and, like every console
page, sent with ``Cache-Control: no-store``. Both changes go through ``OtpService``, audited as the token's
actor with source ``console``; the CSRF and origin checks of :mod:`scep_server.web.console` guard their
forms like every other.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import abort, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from scep_server.errors import InvalidInput, NotFound
from scep_server.service.console import DEFAULT_PAGE_SIZE, PAGE_SIZES, form_text
from scep_server.service.otp import MAX_COUNT, OtpService, parse_ttl
from scep_server.service.tokens import Scope
from scep_server.web.console import bp, require_scope, signed_in_grant
from scep_server.web.otp import otp_page, otp_row, otp_service

__all__: list[str] = []

log = logging.getLogger("scep_server.web.console")

SOURCE = "console"
DEFAULT_TTL = "1h"
MAX_ROW_ID = 2**63 - 1
_WHOLE_NUMBER = re.compile(r"[0-9]{1,3}")  # ASCII digits only: int() also reads "²" and "١"
_ROW_ID = re.compile(r"[1-9][0-9]{0,18}")


@bp.get("/otp")
def otp_passwords() -> ResponseReturnValue:
    return _otp_page(request.args)


@bp.post("/otp")
def mint_otps() -> ResponseReturnValue:
    grant = require_scope(Scope.ADMIN)
    now = datetime.now(UTC)
    try:
        profile, ttl, pattern, count = _mint_form(request.form)
        passwords = otp_service(now).create(profile, ttl, pattern, count, actor=grant.actor, source=SOURCE)
    except InvalidInput as exc:
        return _otp_page({}, status=400, mint=request.form, mint_error=str(exc))
    log.info("console: %s minted %d one-time password(s) of %s from %s", grant.actor, count, profile,
             request.remote_addr)
    return render_template("console/otp_minted.html", passwords=passwords, profile=profile,
                           subject_pattern=pattern, expires_at=now + ttl)


@bp.route(f"/otp/<int(min=1, max={MAX_ROW_ID}):otp_id>/revoke", methods=["GET", "POST"])
def revoke_otp(otp_id: int) -> ResponseReturnValue:
    grant = require_scope(Scope.ADMIN)
    service = otp_service(datetime.now(UTC))
    if request.method == "GET":
        return render_template("console/otp_revoke.html", password=_password(service, otp_id))
    try:
        _, changed = service.revoke(otp_id, actor=grant.actor, source=SOURCE)
    except NotFound:
        abort(404, description="There is no such one-time password.")
    if not changed:
        abort(409, description="This one-time password was used or had expired already.")
    log.info("console: %s revoked one-time password %d from %s", grant.actor, otp_id, request.remote_addr)
    return redirect(url_for("console.otp_passwords", revoked=otp_id), 303)


def _otp_page(filters: Any, status: int = 200, **extra: Any) -> tuple[str, int]:
    """The list (filtered by profile, paged) and the mint form, answered with ``status``; 400 with the
    forms alone when a filter is bad."""
    service = otp_service(datetime.now(UTC))
    values: dict[str, Any] = {
        "form": filters, "rows": [], "next_cursor": None, "page_sizes": PAGE_SIZES,
        "page_size": filters.get("limit", str(DEFAULT_PAGE_SIZE)), "profiles": service.profiles,
        "may_mint": signed_in_grant().allows(Scope.ADMIN), "max_count": MAX_COUNT,
        "mint": {"ttl": DEFAULT_TTL, "count": "1"},
        "revoked": _revoked_notice(),
    } | extra
    try:
        page = otp_page(service, profile=_listed_profile(filters, service), cursor=form_text(filters, "cursor"),
                        limit=_page_size(filters))
    except ValueError as exc:
        return render_template("console/otp.html", **values, error=str(exc)), 400
    listed = {"rows": page.items, "next_cursor": page.next_cursor}
    return render_template("console/otp.html", **values | listed), status


def _revoked_notice() -> str | None:
    """The id a revocation redirected here with, to confirm it; nothing else a link may carry is shown."""
    value = request.args.get("revoked", "") if request.method == "GET" else ""
    return value if _ROW_ID.fullmatch(value) else None


def _mint_form(form: Any) -> tuple[str, timedelta, str | None, int]:
    """The profile, lifetime, subject pattern and count of the mint form; ``InvalidInput`` saying what is
    wrong (the use case checks the ranges and the profile)."""
    profile = form_text(form, "profile")
    if profile is None:
        raise InvalidInput("Choose a profile.")
    count = form_text(form, "count") or "1"
    if not _WHOLE_NUMBER.fullmatch(count):
        raise InvalidInput(f"The count is a whole number from 1 to {MAX_COUNT}.")
    return profile, parse_ttl(form_text(form, "ttl") or DEFAULT_TTL), form_text(form, "subject_pattern"), int(count)


def _listed_profile(filters: Any, service: OtpService) -> str | None:
    profile = form_text(filters, "profile")
    if profile is not None and profile not in service.profiles:
        raise ValueError(f"profile must be one of {', '.join(service.profiles) or 'the otp profiles (none)'}")
    return profile


def _page_size(filters: Any) -> int:
    value = form_text(filters, "limit")
    if value is None:
        return DEFAULT_PAGE_SIZE
    if value not in {str(size) for size in PAGE_SIZES}:
        raise ValueError(f"limit must be one of {', '.join(str(size) for size in PAGE_SIZES)}")
    return int(value)


def _password(service: OtpService, otp_id: int) -> dict[str, Any]:
    """The password ``otp_id`` as a row; 404 when there is none."""
    # The newest password with an id up to otp_id (the listing pages by id, and has no lookup of one).
    found = service.list(before_id=otp_id + 1 if otp_id < MAX_ROW_ID else None, limit=1)
    if not found or found[0].id != otp_id:
        abort(404, description="There is no such one-time password.")
    return otp_row(service, found[0])
