"""Signing webhook deliveries, and verifying them on the receiving side.

Every POST of the ``webhook`` challenge validator carries three headers:

- ``X-Scep-Webhook-Timestamp``: when it was sent, in Unix seconds;
- ``X-Scep-Webhook-Id``: the delivery's own id (a UUID), for the receiver's replay cache;
- ``X-Scep-Webhook-Signature``: ``v1=<hex HMAC-SHA256>`` keyed with the profile's shared secret, over
  ``<timestamp> "." <id> "." <body>`` (the exact bytes of the body).

The id is signed along with the timestamp and the body, so a captured delivery cannot be sent again under
a fresh id to get past a replay cache, and the timestamp bounds how long a receiver must remember ids.
The HMAC is the standard library's :mod:`hmac` (RFC 2104) over :mod:`hashlib`'s SHA-256.

A receiver calls :func:`verify` with the headers and the raw body before it parses anything. This module
needs nothing beyond the standard library and :mod:`scep_server.errors`, so that a receiver in Python can
use it as it is.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Callable, Mapping

from scep_server.errors import ScepServerError

__all__ = [
    "DEFAULT_TOLERANCE",
    "DELIVERY_HEADER",
    "SIGNATURE_HEADER",
    "SIGNATURE_VERSION",
    "TIMESTAMP_HEADER",
    "MalformedWebhookHeader",
    "MissingWebhookHeader",
    "ReplayedWebhookDelivery",
    "StaleWebhookTimestamp",
    "WebhookSignatureError",
    "WebhookSignatureMismatch",
    "sign",
    "signed_headers",
    "verify",
]

TIMESTAMP_HEADER = "X-Scep-Webhook-Timestamp"
DELIVERY_HEADER = "X-Scep-Webhook-Id"
SIGNATURE_HEADER = "X-Scep-Webhook-Signature"
SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE = 300  # seconds a delivery's timestamp may be off the receiver's clock, either way
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_DELIVERY_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
_SIGNATURE = re.compile(r"[0-9a-f]{64}")


class WebhookSignatureError(ScepServerError):
    """A webhook delivery that must not be trusted; the message says why (never the secret)."""


class MissingWebhookHeader(WebhookSignatureError):
    """A signature header is absent: the delivery is unsigned."""


class MalformedWebhookHeader(WebhookSignatureError):
    """A signature header is not in its format."""


class StaleWebhookTimestamp(WebhookSignatureError):
    """The timestamp is further from the receiver's clock than the tolerance (an old or a held-back delivery)."""


class WebhookSignatureMismatch(WebhookSignatureError):
    """The signature is not the HMAC of this timestamp, id and body under this secret."""


class ReplayedWebhookDelivery(WebhookSignatureError):
    """The delivery id was seen before: the same delivery, sent again."""


def sign(secret: bytes, timestamp: int, body: bytes, delivery_id: str) -> str:
    """The ``X-Scep-Webhook-Signature`` value of one delivery: ``v1=<hex HMAC-SHA256>``."""
    signed = f"{timestamp}.{delivery_id}.".encode("ascii") + body
    return f"{SIGNATURE_VERSION}={hmac.new(secret, signed, hashlib.sha256).hexdigest()}"


def signed_headers(secret: bytes, body: bytes, *, timestamp: int, delivery_id: str) -> dict[str, str]:
    """The three headers of a delivery of ``body`` (what the validator sends)."""
    if not _TIMESTAMP.fullmatch(str(timestamp)) or not _DELIVERY_ID.fullmatch(delivery_id):
        raise ValueError("a delivery needs a non-negative Unix timestamp and an id of [A-Za-z0-9._-]")
    return {
        TIMESTAMP_HEADER: str(timestamp),
        DELIVERY_HEADER: delivery_id,
        SIGNATURE_HEADER: sign(secret, timestamp, body, delivery_id),
    }


def verify(
    secret: bytes,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float | None = None,
    tolerance: int = DEFAULT_TOLERANCE,
    seen: Callable[[str], bool] | None = None,
) -> None:
    """Return when ``body`` with ``headers`` is an authentic, fresh delivery; raise a WebhookSignatureError.

    ``headers`` are looked up case-insensitively. ``now`` is the receiver's clock (Unix seconds; default the
    system's); a timestamp more than ``tolerance`` seconds before or after it is refused. ``seen``, called
    only once the signature verified, answers whether the delivery id was received before (and records it),
    so that a delivery replayed within the tolerance is refused too; remembering ids for twice the tolerance
    is enough. The signature is compared in constant time.
    """
    values = {name.lower(): value for name, value in headers.items()}
    timestamp = _timestamp(_header(values, TIMESTAMP_HEADER))
    delivery_id = _delivery_id(_header(values, DELIVERY_HEADER))
    offered = _signatures(_header(values, SIGNATURE_HEADER))
    _check_fresh(timestamp, time.time() if now is None else now, tolerance)
    expected = sign(secret, timestamp, body, delivery_id).partition("=")[2]
    # Every offered v1 value is compared (no early exit), so the time taken does not tell which matched.
    matches = [hmac.compare_digest(expected.encode("ascii"), value.encode("ascii")) for value in offered]
    if not any(matches):
        raise WebhookSignatureMismatch(
            "the signature does not match this body, timestamp and delivery id under the shared secret"
        )
    if seen is not None and seen(delivery_id):
        raise ReplayedWebhookDelivery(f"delivery {delivery_id} was received before: a replay")


def _header(values: Mapping[str, str], name: str) -> str:
    value = values.get(name.lower())
    if value is None:
        raise MissingWebhookHeader(f"the {name} header is missing: the delivery is not signed")
    return value.strip()


def _timestamp(text: str) -> int:
    if not _TIMESTAMP.fullmatch(text):
        raise MalformedWebhookHeader(f"{TIMESTAMP_HEADER} must be Unix seconds (decimal digits)")
    return int(text)


def _delivery_id(text: str) -> str:
    if not _DELIVERY_ID.fullmatch(text):
        raise MalformedWebhookHeader(f"{DELIVERY_HEADER} must be 1 to 128 characters of [A-Za-z0-9._-]")
    return text


def _signatures(text: str) -> list[str]:
    """The v1 values of the signature header (``v1=<hex>``, several separated by commas)."""
    values = []
    for entry in text.split(","):
        version, equals, value = entry.strip().partition("=")
        if not equals:
            raise MalformedWebhookHeader(f"{SIGNATURE_HEADER} must be {SIGNATURE_VERSION}=<hex HMAC-SHA256>")
        if version == SIGNATURE_VERSION:
            if not _SIGNATURE.fullmatch(value):
                raise MalformedWebhookHeader(f"a {SIGNATURE_VERSION} signature is 64 lower-case hex digits")
            values.append(value)
    if not values:
        raise MalformedWebhookHeader(f"{SIGNATURE_HEADER} holds no {SIGNATURE_VERSION} signature")
    return values


def _check_fresh(timestamp: int, now: float, tolerance: int) -> None:
    offset = now - timestamp
    if abs(offset) > tolerance:
        when = f"{offset:.0f} s old" if offset > 0 else f"{-offset:.0f} s in the future"
        raise StaleWebhookTimestamp(f"the delivery's timestamp is {when}, beyond the tolerance of {tolerance} s")
