"""The admin API table: authentication, paths and bodies of the revocation endpoint."""

from __future__ import annotations

from collections.abc import Callable

from tests.functional.hostile.support import AUTH, TOKEN, Case, Env, Sent


def _admin(method: str, path: str | Callable[[Env], str], headers: dict[str, str] | None = None,
           **kwargs: object) -> Callable[[Env], Sent]:
    def send(env: Env) -> Sent:
        where = path(env) if callable(path) else path
        return Sent(env.server.http.open(where, method=method, headers=AUTH if headers is None else headers,
                                         **kwargs))  # type: ignore[arg-type]

    return send


def _target(name: str, suffix: str = "/revoke") -> Callable[[Env], str]:
    return lambda env: f"/admin/certificates/{env.admin_targets[name]}{suffix}"


def _revoked_path(env: Env) -> str:
    return f"/admin/certificates/{env.revoked_cert.serial_number:x}/revoke"


ADMIN_CASES = [
    Case("admin without Authorization", _admin("GET", "/admin/certificates", headers={}), 401,
         body="valid bearer token is required"),
    Case("admin Bearer with a wrong token", _admin("GET", "/admin/certificates", {"Authorization": "Bearer nope"}),
         401),
    Case("admin Bearer with the token upper-cased", _admin("GET", "/admin/certificates", {
        "Authorization": f"Bearer {TOKEN.upper()}"}), 401),
    Case("admin Bearer with the token less its last character", _admin("GET", "/admin/certificates", {
        "Authorization": f"Bearer {TOKEN[:-1]}"}), 401),
    Case("admin token in a query parameter", _admin("GET", f"/admin/certificates?access_token={TOKEN}", {}), 401),
    Case("admin token in another header", _admin("GET", "/admin/certificates", {"X-Api-Key": TOKEN}), 401),
    Case("admin two Bearer credentials in one header", _admin("GET", "/admin/certificates", {
        "Authorization": f"Bearer {TOKEN}, Bearer other"}), 401),
    Case("admin revoke with a wrong token", _admin("POST", _target("plain"), {"Authorization": "Bearer x"},
                                                   json={"reason": "keyCompromise"}), 401),
    *(Case(f"admin limit {limit!r}", _admin("GET", "/admin/certificates", query_string={"limit": limit}), 400,
           body="limit must be 1-1000") for limit in ("1e3", "0x10", "+5", "\uff11", "5 ", "1" * 30)),
    Case("admin status filter unknown", _admin("GET", "/admin/certificates", query_string={"status": "bogus"}), 400,
         body="status must be valid or revoked"),
    Case("admin status filter in upper case", _admin("GET", "/admin/certificates", query_string={"status": "VALID"}),
         400, body="status must be valid or revoked"),
    Case("admin revoke with truncated JSON", _admin("POST", _target("json-truncated"),
                                                    data='{"reason": "keyCompromise"',
                                                    content_type="application/json"), 400,
         body="the body must be JSON"),
    Case("admin revoke with a JSON object sent as text/plain, unknown reason", _admin(
        "POST", _target("json-text"), data='{"reason": "nonsense"}', content_type="text/plain"), 400,
         body="reason must be one of"),
    Case("admin revoke with a form body", _admin("POST", _target("json-text"), data={"reason": "keyCompromise"}),
         400, body="the body must be JSON"),
    Case("admin revoke with a body that is not UTF-8", _admin("POST", _target("json-text"), data=b"\xff\xfe{",
                                                             content_type="application/json"), 400,
         body="the body must be JSON"),
    Case("admin revoke reason unknown", _admin("POST", _target("plain"), json={"reason": "becauseISaySo"}), 400,
         body="reason must be one of"),
    Case("admin revoke reason removeFromCRL", _admin("POST", _target("plain"), json={"reason": "removeFromCRL"}),
         400, body="reason must be one of"),
    Case("admin revoke reason as a number string", _admin("POST", _target("plain"), json={"reason": "1"}), 400,
         body="reason must be one of"),
    Case("admin revoke an unknown serial", _admin("POST", "/admin/certificates/1234abcd/revoke", json={}), 404,
         body="no such certificate"),
    Case("admin revoke an already revoked certificate", _admin("POST", _revoked_path, json={}), 409),
    *(Case(f"admin serial {serial!r}", _admin("POST", f"/admin/certificates/{serial}/revoke", json={}), 400,
           body="hexadecimal, positive and at most 20 octets")
      for serial in ("xyz", "0", "-1", "f" * 41, "%20")),
    Case("admin revoke with JSON nested 100000 deep", _admin("POST", _target("plain"), data="[" * 100_000,
                                                             content_type="application/json"), 400,
         body="the body must be JSON"),
    Case("admin revoke reason an infinite number", _admin("POST", _target("plain"), data='{"reason": 1e999}',
                                                          content_type="application/json"), 400,
         body="reason must be one of"),
    Case("admin show with a serial of 5000 hex digits", _admin("GET", "/admin/certificates/" + "f" * 5000), 400,
         body="hexadecimal"),
    Case("admin show with a serial that is not hex", _admin("GET", "/admin/certificates/not-hex"), 400,
         body="hexadecimal"),
    Case("admin DELETE a certificate", _admin("DELETE", _target("plain", "")), 405),
    Case("admin revoke by GET", _admin("GET", _target("plain")), 405),
]
