"""The SCEP endpoint (RFC 8894 §4): GetCACaps, GetCACert, GetNextCACert, PKIOperation by GET and POST.

Served at ``/scep`` and ``/scep/<profile>``, and at the paths devices and MDMs use out of habit:
``/cgi-bin/pkiclient.exe`` (RFC 8894's example), ``/certsrv/mscep/mscep.dll`` and
``/certsrv/mscep/mscep.dll/pkiclient.exe`` (NDES). Windows appends ``/pkiclient.exe`` to whatever
URL the profile names, so every path also answers with that suffix.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import time
from collections.abc import Callable

from flask import Blueprint, Response, abort, current_app, request

from scep_server import logs, metrics
from scep_server.errors import PayloadTooLarge, RequestError
from scep_server.scep import cms
from scep_server.scep.nextca import NEXT_CA_CERT
from scep_server.service.outcome import OperationStatus, Outcome
from scep_server.service.profile import Profile
from scep_server.service.rollover import next_ca_response, next_ca_staged
from scep_server.web.backpressure import BUSY_RETRY_AFTER, OperationSlots
from scep_server.web.budget import FailureBudget
from scep_server.web.context import runtime

log = logging.getLogger("scep_server.web.scep")

bp = Blueprint("scep", __name__)

DEFAULT_PROFILE = "default"
DEFAULT_PATHS = (
    "/scep",
    "/scep/pkiclient.exe",
    "/cgi-bin/pkiclient.exe",
    "/certsrv/mscep/mscep.dll",
    "/certsrv/mscep/mscep.dll/pkiclient.exe",
)
PKI_MESSAGE = "application/x-pki-message"
_BASE64_JUNK = re.compile(r"[\r\n\t]")
BUDGET_EXTENSION = "scep_server.failure_budget"  # app.extensions key of the per-process FailureBudget
SLOTS_EXTENSION = "scep_server.operation_slots"  # app.extensions key of the per-process OperationSlots
# Outcomes that spend the requester's failure budget: the one envelope failure, bad signatures.
_BUDGET_FAILURE = OperationStatus.FAILURE_BAD_MESSAGE_CHECK
_ENROLLMENT_TYPES = frozenset({"PKCS_REQ", "RENEWAL_REQ"})
_RESULTS = {429: "throttled", 503: "busy"}  # the scep_requests result of an answer refused before the service


def _default_profile() -> Response:
    return _handle(DEFAULT_PROFILE)


def _named_profile(profile: str) -> Response:
    return _handle(profile)


for _index, _path in enumerate(DEFAULT_PATHS):
    bp.add_url_rule(_path, endpoint=f"default_{_index}", view_func=_default_profile, methods=["GET", "POST"])
bp.add_url_rule("/scep/<profile>", view_func=_named_profile, methods=["GET", "POST"])
bp.add_url_rule(
    "/scep/<profile>/pkiclient.exe", endpoint="named_pkiclient", view_func=_named_profile, methods=["GET", "POST"]
)


def _handle(profile_name: str) -> Response:
    profile = runtime().profiles.get(profile_name)
    if profile is None:
        abort(404, description=f"no SCEP profile named {profile_name!r}")
    logs.bind(profile=profile.name)  # until the request ends (web/request_ids.py starts each one afresh)
    operation = request.args.get("operation", "")
    handler = _OPERATIONS.get(operation)
    if handler is None:
        metrics.SCEP_REQUESTS.labels(profile.name, "unknown", "rejected").inc()
        raise RequestError(f"unsupported operation {operation[:40]!r}" if operation else "missing operation parameter")
    try:
        response = handler(profile)
    except Exception:
        metrics.SCEP_REQUESTS.labels(profile.name, operation, "error").inc()
        raise
    result = _RESULTS.get(response.status_code, "answered")
    metrics.SCEP_REQUESTS.labels(profile.name, operation, result).inc()
    return response


def capabilities(profile: Profile, *, next_ca: bool = False) -> list[str]:
    """What this profile really does, with the exact-case keywords clients match (RFC 8894 §3.5.2);
    ``next_ca``: a rollover has staged the next CA (GetNextCACert)."""
    caps = ["AES", "DES3", "POSTPKIOperation"] if profile.decode.allow_3des else ["AES", "POSTPKIOperation"]
    if next_ca:
        caps.append("GetNextCACert")
    if profile.allow_renewal:
        caps.append("Renewal")
    if profile.decode.allow_sha1:
        caps.append("SHA-1")
    caps += ["SHA-256", "SHA-512", "SCEPStandard"]
    return caps


def _get_ca_caps(profile: Profile) -> Response:
    staged = next_ca_staged(runtime().authority.generations())
    return Response("\n".join(capabilities(profile, next_ca=staged)), mimetype="text/plain")


def _get_ca_cert(profile: Profile) -> Response:
    """The RA and the CA chain as a degenerate PKCS#7 (RFC 8894 §4.2.1.2); ``message`` is ignored."""
    current = runtime()
    certificates = current.ca.getcacert_certificates(current.config.ca.include_root_in_getcacert)
    return Response(cms.certs_only(certificates), mimetype="application/x-x509-ca-ra-cert")


def _get_next_ca_cert(profile: Profile) -> Response:
    """The next CA and RA, signed by the current ones (RFC 8894 §4.7); 400, as for any operation not
    offered, when no rollover is staged (GetCACaps advertises it only then)."""
    current = runtime()
    include_root = current.config.ca.include_root_in_getcacert
    reply = next_ca_response(current.authority.generations(), include_root=include_root)
    if reply is None:
        raise RequestError("unsupported operation 'GetNextCACert': no CA rollover is staged")
    return Response(reply, mimetype=NEXT_CA_CERT)


def _pki_operation(profile: Profile) -> Response:
    client = request.remote_addr  # the X-Forwarded-For hop when trusted_proxy_hops is set (ProxyFix)
    budget = _failure_budget()
    wait = budget.retry_after(client)
    if wait is not None:
        log.warning("PKIOperation refused: failure budget spent profile=%s ip=%s retry_after=%ds",
                    profile.name, client, wait)
        metrics.PKIOPERATION_REJECTED.labels(profile.name, "failure_budget").inc()
        return Response("too many failed PKIOperations from this address; retry later\n", status=429,
                        mimetype="text/plain", headers={"Retry-After": str(wait)})
    with _operation_slots().slot(profile.name) as admitted:
        if not admitted:
            return _busy(profile)
        with metrics.PKIOPERATIONS_IN_PROGRESS.labels(profile.name).track_inprogress():
            return _answer(profile, client, budget)


def _answer(profile: Profile, client: str | None, budget: FailureBudget) -> Response:
    der = _message_from_post() if request.method == "POST" else _message_from_query()
    current = runtime()
    started = time.perf_counter()
    outcome = current.service.pki_operation(profile, der, client)
    metrics.PKI_OPERATION_SECONDS.labels(profile.name).observe(time.perf_counter() - started)
    metrics.PKI_OPERATIONS.labels(profile.name, outcome.message_type, outcome.status).inc()
    if outcome.message_type in _ENROLLMENT_TYPES:
        metrics.ENROLLMENTS.labels(profile.name, _enrollment_outcome(outcome)).inc()
    if outcome.status is _BUDGET_FAILURE:
        budget.record_failure(client)
    if outcome.issued:
        metrics.CERTIFICATES_ISSUED.labels(profile.name).inc()
    return Response(outcome.reply, mimetype=PKI_MESSAGE)


def _enrollment_outcome(outcome: Outcome) -> str:
    if outcome.issued:
        return "issued"
    if outcome.status is OperationStatus.SUCCESS:
        return "resent"
    return "pending" if outcome.status is OperationStatus.PENDING else "failed"


def _busy(profile: Profile) -> Response:
    """Every slot of the profile is taken in this worker: the client is to come back shortly."""
    log.info("PKIOperation refused: profile=%s has max_concurrent_operations=%s in progress",
             profile.name, _operation_slots().cap(profile.name))
    metrics.PKIOPERATION_REJECTED.labels(profile.name, "busy").inc()
    return Response(f"profile {profile.name} is busy: too many PKIOperations in progress; "
                    f"retry in {BUSY_RETRY_AFTER} seconds\n", status=503, mimetype="text/plain",
                    headers={"Retry-After": str(BUSY_RETRY_AFTER)})


def _operation_slots() -> OperationSlots:
    """This worker process's PKIOperation slots (see :mod:`.backpressure`), made on first use."""
    slots = current_app.extensions.get(SLOTS_EXTENSION)
    if slots is None:
        created = OperationSlots.from_config(runtime().config)
        slots = current_app.extensions.setdefault(SLOTS_EXTENSION, created)
    assert isinstance(slots, OperationSlots)
    return slots


def _failure_budget() -> FailureBudget:
    """This worker process's failure budget (see :mod:`.budget`), made on first use."""
    budget = current_app.extensions.get(BUDGET_EXTENSION)
    if budget is None:
        created = FailureBudget.from_config(runtime().config.failure_budget)
        budget = current_app.extensions.setdefault(BUDGET_EXTENSION, created)
    assert isinstance(budget, FailureBudget)
    return budget


_OPERATIONS: dict[str, Callable[[Profile], Response]] = {
    "GetCACaps": _get_ca_caps,
    "GetCACert": _get_ca_cert,
    "GetNextCACert": _get_next_ca_cert,
    "PKIOperation": _pki_operation,
}


def _message_from_post() -> bytes:
    body = request.get_data(cache=False)
    if not body:
        raise RequestError("PKIOperation POST has an empty body")
    if body[:1] == b"\x30":
        return body
    # Some clients POST the message base64-encoded; a DER SEQUENCE always starts with 0x30.
    return _decode_base64(body.decode("latin-1"))


def _message_from_query() -> bytes:
    encoded = request.args.get("message")
    if not encoded:
        raise RequestError("PKIOperation GET needs a message parameter")
    limit = runtime().config.max_body_bytes
    if len(encoded) > limit * 4 // 3 + 4:
        raise PayloadTooLarge(f"message parameter exceeds {limit} bytes")
    return _decode_base64(encoded)


def _decode_base64(text: str) -> bytes:
    """Decode leniently: macOS leaves '+' unescaped (it arrives as a space), some send URL-safe base64,
    some wrap lines or drop the padding."""
    cleaned = _BASE64_JUNK.sub("", text).strip().replace(" ", "+").replace("-", "+").replace("_", "/")
    cleaned = cleaned.rstrip("=")
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        decoded = base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError("PKIOperation message is not valid base64") from None
    if not decoded:
        raise RequestError("PKIOperation message is empty")
    return decoded
