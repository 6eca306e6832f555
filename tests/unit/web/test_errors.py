"""The one error handler: each branch of the exception tree gets its HTTP answer, and only that."""

from __future__ import annotations

import logging

import pytest
from flask import Flask, abort
from flask.testing import FlaskClient

from scep_server.errors import (
    BadRequest,
    IntuneAuthError,
    IntuneUnavailable,
    InvalidInput,
    PayloadTooLarge,
    RequestError,
    StoreError,
    StoreUnavailable,
    Unavailable,
    ValidatorUnavailable,
)
from scep_server.service.revocation import REASON_NAMES, UnknownRevocationReason
from scep_server.store import CertificateNotFound, TransactionNotPending
from scep_server.web import errors


def _app(exc: BaseException) -> FlaskClient:
    app = Flask("test_errors")

    @app.get("/raise")
    def raising() -> str:
        raise exc

    @app.get("/missing")
    def missing() -> str:
        abort(404, description="no such thing")

    errors.register(app)
    return app.test_client()


@pytest.mark.parametrize(
    ("exc", "status", "body"),
    [
        (RequestError("missing operation parameter"), 400, "missing operation parameter"),
        (PayloadTooLarge("message parameter exceeds 10 bytes"), 413, "message parameter exceeds 10 bytes"),
        (UnknownRevocationReason("removeFromCRL"), 400, f"reason must be one of {', '.join(REASON_NAMES)}"),
        (ValidatorUnavailable("Intune timed out"), 503, "service temporarily unavailable"),
        (StoreError("database is locked"), 503, "service temporarily unavailable"),
        (StoreUnavailable("connection lost"), 503, "service temporarily unavailable"),
        (IntuneUnavailable("Intune answered 503", status=503), 503, "service temporarily unavailable"),
        (Unavailable("the transaction was taken over"), 503, "service temporarily unavailable"),
        # Not-found and conflicts are their own branch: never an outage, even though the store raises them.
        (CertificateNotFound(0x1F, "CN=CA"), 404, "no certificate with serial 1f issued by CN=CA"),
        (TransactionNotPending("default", "tx-1", None), 409, "transaction 'tx-1' of profile 'default' does not exist"),
        (InvalidInput("limit must be 1-1000"), 400, "limit must be 1-1000"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else None,
)
def test_each_branch_has_its_answer(exc: Exception, status: int, body: str) -> None:
    response = _app(exc).get("/raise")
    assert response.status_code == status and response.mimetype == "text/plain"
    assert response.get_data(as_text=True) == body + "\n"


def test_outages_say_when_to_come_back() -> None:
    assert _app(ValidatorUnavailable("throttled", retry_after=7.5)).get("/raise").headers["Retry-After"] == "7"
    assert _app(ValidatorUnavailable("down")).get("/raise").headers["Retry-After"] == str(errors.UPSTREAM_RETRY_AFTER)
    assert _app(StoreError("locked")).get("/raise").headers["Retry-After"] == str(errors.STORE_RETRY_AFTER)


def test_outage_details_stay_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="scep_server.web"):
        response = _app(StoreError("password=hunter2 rejected")).get("/raise")
    assert "hunter2" not in response.get_data(as_text=True)
    assert "hunter2" in caplog.text


def test_flask_http_errors_keep_their_status_and_description() -> None:
    http = _app(RuntimeError("unused"))
    assert (http.get("/missing").status_code, http.get("/missing").get_data(as_text=True)) == (404, "no such thing\n")
    assert http.post("/raise").status_code == 405
    assert http.get("/nowhere").status_code == 404


@pytest.mark.parametrize(
    "exc",
    [RuntimeError("bug"), KeyError("x"), BadRequest("a PKIFailure is answered inside the protocol"),
     IntuneAuthError("an admin must act: not an outage that goes away")],
    ids=lambda exc: type(exc).__name__,
)
def test_anything_else_is_a_logged_500(exc: Exception, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="scep_server.web"):
        response = _app(exc).get("/raise")
    assert (response.status_code, response.get_data(as_text=True)) == (500, "internal error\n")
    assert "unexpected error" in caplog.text and caplog.records[-1].exc_info is not None
