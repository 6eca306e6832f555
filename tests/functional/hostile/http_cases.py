"""The HTTP table: operations, methods, paths and messages the SCEP endpoint refuses before any CMS."""

from __future__ import annotations

import base64
import os

from cryptography.hazmat.primitives import serialization
from werkzeug.test import TestResponse

from scep_server.scep import cms
from tests.functional.hostile.messages import valid, valid_wrong_challenge
from tests.functional.hostile.support import (
    BAD_REQUEST,
    CHALLENGE_TEXT,
    R_CHALLENGE,
    Case,
    Env,
    Sent,
    http,
    op,
    pki_get,
    pki_post,
    posted_in_base64,
)


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


HTTP_CASES = [
    Case("operation lower-case pkioperation", op("pkioperation", "POST", data=b"\x30\x00"),
         400, body="unsupported operation 'pkioperation'"),
    Case("operation upper-case PKIOPERATION", op("PKIOPERATION"), 400, body="unsupported operation"),
    Case("operation getcacaps in lower case", op("getcacaps"), 400, body="unsupported operation"),
    Case("operation with a trailing space", op("GetCACaps "), 400, body="unsupported operation"),
    Case("operation with a leading tab", op("\tGetCACert"), 400, body="unsupported operation"),
    Case("operation empty", op(""), 400, body="missing operation parameter"),
    Case("operation of 5000 characters, echoed at most 40", op("A" * 5000), 400, body=f"'{'A' * 40}'"),
    Case("operation with a non-ASCII letter", op("PKIOperati\u00f3n"), 400, body="unsupported operation"),
    Case("operation with a NUL", op("PKIOperation\x00"), 400, body="unsupported operation"),
    Case("operation GetNextCACert (not offered)", op("GetNextCACert"), 400, body="unsupported operation"),
    Case("operation repeated, unknown first", http("GET", "/scep?operation=Nope&operation=GetCACaps"), 400,
         body="unsupported operation 'Nope'"),
    Case("operation repeated, GetCACaps first: a PKCSReq body is ignored",
         lambda env: Sent(env.server.http.post("/scep?operation=GetCACaps&operation=PKIOperation",
                                               data=valid(env))), expect=_same_caps),
    Case("operation only in the POST form body", lambda env: Sent(env.server.http.post(
        "/scep", data={"operation": "PKIOperation"})), 400, body="missing operation parameter"),
    Case("GET message of url-safe base64 junk", pki_get(base64.urlsafe_b64encode(b"\xfb\xff\xfe" * 40).decode()),
         400, body="not decodable CMS"),
    Case("GET message base64 with spaces for '+'", pki_get("MIIB AAA " * 20), 400, body="not decodable CMS"),
    Case("GET message only padding", pki_get("===="), 400, body="message is empty"),
    Case("GET message with a character outside base64", pki_get("MIIB*AAA"), 400, body="not valid base64"),
    Case("GET message under another parameter name", http("GET", "/scep", query_string={
        "operation": "PKIOperation", "msg": "MAA="}), 400, body="needs a message parameter"),
    Case("GET message base64 of a certs-only SignedData",
         lambda env: Sent(env.server.http.get("/scep", query_string={"operation": "PKIOperation", "message":
                          base64.b64encode(cms.certs_only([env.server.ca.ca_cert])).decode()})), 400,
         body="exactly one signer"),
    Case("POST body of whitespace only", pki_post(b"  \r\n\t "), 400, body="message is empty"),
    Case("POST body base64 of junk (not starting 0x30)", pki_post(base64.b64encode(os.urandom(90))), 400),
    Case("POST body not base64 and not DER", pki_post(b"\xff\xfe<xml/>"), 400, body="not valid base64"),
    Case("POST a DER INTEGER", pki_post(b"\x02\x01\x05"), 400, body="not valid base64"),
    Case("POST a DER SEQUENCE holding only NULL", pki_post(b"\x30\x02\x05\x00"), 400, body="not decodable CMS"),
    Case("POST body base64 of a pkiMessage, read (wrong challenge)",
         posted_in_base64(valid_wrong_challenge), fail_info=BAD_REQUEST, text=CHALLENGE_TEXT,
         reason=R_CHALLENGE),
    Case("POST 20000 nested indefinite-length SEQUENCEs", pki_post(b"\x30\x80" * 20_000), 400,
         body="recursion limit"),
    Case("PUT /scep", op("PKIOperation", "PUT", data=b"\x30\x00"), 405),
    Case("DELETE /scep", op("GetCACaps", "DELETE"), 405),
    Case("PATCH /scep", op("PKIOperation", "PATCH", data=b"\x30\x00"), 405),
    Case("PUT on the NDES path", op("PKIOperation", "PUT", "/certsrv/mscep/mscep.dll"), 405),
    Case("OPTIONS /scep answers Allow and nothing else", op("PKIOperation", "OPTIONS"), expect=_allow_header),
    Case("HEAD GetCACaps has no body", op("GetCACaps", "HEAD"), expect=_head_caps),
    Case("GetCACert with a path-traversal message", http("GET", "/scep", query_string={
        "operation": "GetCACert", "message": "../../../etc/passwd"}), expect=_ca_ra_certs),
    Case("GetCACert with a 10 KB message", http("GET", "/scep", query_string={
        "operation": "GetCACert", "message": "x" * 10_000}), expect=_ca_ra_certs),
    Case("GetCACert with a message of control characters", http("GET", "/scep", query_string={
        "operation": "GetCACert", "message": "\x1b[2J\r\n\x00"}), expect=_ca_ra_certs),
    Case("GetCACert by POST with a body", op("GetCACert", "POST", data=os.urandom(64)), expect=_ca_ra_certs),
    Case("GetCACaps with a junk message", http("GET", "/scep", query_string={
        "operation": "GetCACaps", "message": "%00%ff"}), expect=_same_caps),
    Case("GetCACaps on the unknown profile DEFAULT", op("GetCACaps", path="/scep/DEFAULT"), 404,
         body="no SCEP profile named 'DEFAULT'"),
    Case("unknown profile of 3000 characters", op("GetCACaps", path="/scep/" + "p" * 3000), 404),
    Case("unknown profile with unicode", op("GetCACaps", path="/scep/d\u00e9fault"), 404),
    Case("profile path with an extra segment", op("GetCACaps", path="/scep/default/extra"), 404),
    Case("profile path with an encoded slash", op("GetCACaps", path="/scep/..%2fdefault"), 404),
    Case("PKIOperation POST to an unknown profile", pki_post(b"\x30\x00", "/scep/nope"), 404),
    Case("junk to the pkiclient.exe path", pki_post(b"\x30\x03\x02\x01\x00", "/cgi-bin/pkiclient.exe"), 400),
    Case("PKIOperation POST with an empty body but a message parameter", lambda env: Sent(env.server.http.post(
        "/scep", query_string={"operation": "PKIOperation", "message": base64.b64encode(valid(env)).decode()},
        data=b"")), 400, body="empty body"),
]
