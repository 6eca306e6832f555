"""The receivers' helper: a delivery verifies only untouched, fresh, signed with the secret, and once."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from scep_server.challenge.webhook_signature import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    MalformedWebhookHeader,
    MissingWebhookHeader,
    ReplayedWebhookDelivery,
    StaleWebhookTimestamp,
    WebhookSignatureError,
    WebhookSignatureMismatch,
    sign,
    signed_headers,
    verify,
)

SECRET = b"receiver-shared-secret-0123456789"
BODY = b'{"version":1,"profile":"corp","transaction_id":"tx-1"}'
SENT = 1_700_000_000
DELIVERY = "6f1c2b1e-7d0a-4c1e-9a51-0d9c8e6f2a10"


def _headers(body: bytes = BODY, *, secret: bytes = SECRET, timestamp: int = SENT,
             delivery_id: str = DELIVERY) -> dict[str, str]:
    return signed_headers(secret, body, timestamp=timestamp, delivery_id=delivery_id)


def test_the_signature_is_hmac_sha256_over_timestamp_id_and_body() -> None:
    expected = hmac.new(SECRET, f"{SENT}.{DELIVERY}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, SENT, BODY, DELIVERY) == f"v1={expected}"
    assert _headers() == {TIMESTAMP_HEADER: str(SENT), DELIVERY_HEADER: DELIVERY, SIGNATURE_HEADER: f"v1={expected}"}


def test_an_authentic_fresh_delivery_verifies() -> None:
    verify(SECRET, _headers(), BODY, now=SENT + 299)
    verify(SECRET, _headers(), BODY, now=SENT - 299)  # the receiver's clock behind the sender's


def test_headers_are_found_whatever_their_case() -> None:
    lowered = {name.lower(): value for name, value in _headers().items()}
    verify(SECRET, lowered, BODY, now=SENT)


def test_a_tampered_body_is_detected() -> None:
    tampered = BODY.replace(b"corp", b"prod")
    with pytest.raises(WebhookSignatureMismatch, match="does not match"):
        verify(SECRET, _headers(), tampered, now=SENT)


def test_a_body_signed_with_another_secret_is_detected() -> None:
    with pytest.raises(WebhookSignatureMismatch):
        verify(SECRET, _headers(secret=b"some-other-secret-0123456789"), BODY, now=SENT)


def test_a_changed_timestamp_or_id_breaks_the_signature() -> None:
    moved = _headers() | {TIMESTAMP_HEADER: str(SENT + 60)}
    with pytest.raises(WebhookSignatureMismatch):
        verify(SECRET, moved, BODY, now=SENT + 60)
    renamed = _headers() | {DELIVERY_HEADER: "another-delivery"}
    with pytest.raises(WebhookSignatureMismatch):
        verify(SECRET, renamed, BODY, now=SENT)


@pytest.mark.parametrize("offset", [301, -301, 86_400])
def test_a_stale_or_future_timestamp_is_detected(offset: int) -> None:
    with pytest.raises(StaleWebhookTimestamp, match="beyond the tolerance of 300 s"):
        verify(SECRET, _headers(), BODY, now=SENT + offset)


def test_the_tolerance_is_the_receivers_choice() -> None:
    verify(SECRET, _headers(), BODY, now=SENT + 3000, tolerance=3600)
    with pytest.raises(StaleWebhookTimestamp):
        verify(SECRET, _headers(), BODY, now=SENT + 31, tolerance=30)


def test_a_replayed_delivery_id_is_detected() -> None:
    received: set[str] = set()

    def seen(delivery_id: str) -> bool:
        before = delivery_id in received
        received.add(delivery_id)
        return before

    verify(SECRET, _headers(), BODY, now=SENT, seen=seen)
    with pytest.raises(ReplayedWebhookDelivery, match=DELIVERY):
        verify(SECRET, _headers(), BODY, now=SENT + 5, seen=seen)
    verify(SECRET, _headers(delivery_id="a-new-delivery"), BODY, now=SENT + 5, seen=seen)


def test_the_replay_cache_is_only_asked_about_authentic_deliveries() -> None:
    asked: list[str] = []

    def seen(delivery_id: str) -> bool:
        asked.append(delivery_id)
        return False

    with pytest.raises(WebhookSignatureMismatch):
        verify(SECRET, _headers(), BODY + b" ", now=SENT, seen=seen)
    assert asked == []
    verify(SECRET, _headers(), BODY, now=SENT, seen=seen)
    assert asked == [DELIVERY]


@pytest.mark.parametrize("missing", [TIMESTAMP_HEADER, DELIVERY_HEADER, SIGNATURE_HEADER])
def test_a_missing_header_is_detected(missing: str) -> None:
    headers = {name: value for name, value in _headers().items() if name != missing}
    with pytest.raises(MissingWebhookHeader, match=missing):
        verify(SECRET, headers, BODY, now=SENT)


def test_an_unsigned_delivery_is_detected() -> None:
    with pytest.raises(MissingWebhookHeader, match="not signed"):
        verify(SECRET, {"Content-Type": "application/json"}, BODY, now=SENT)


@pytest.mark.parametrize(
    ("header", "value"),
    [
        (TIMESTAMP_HEADER, "2023-11-14T22:13:20Z"),
        (TIMESTAMP_HEADER, "-1"),
        (DELIVERY_HEADER, "id with spaces"),
        (SIGNATURE_HEADER, "abc"),
        (SIGNATURE_HEADER, "v1=" + "0" * 63),
        (SIGNATURE_HEADER, "v0=" + "0" * 64),
    ],
)
def test_a_malformed_header_is_detected(header: str, value: str) -> None:
    with pytest.raises(MalformedWebhookHeader):
        verify(SECRET, _headers() | {header: value}, BODY, now=SENT)


def test_one_matching_signature_among_several_verifies() -> None:
    """While a secret is rotated a sender may sign with both keys."""
    old = sign(b"the-previous-secret-0123456789", SENT, BODY, DELIVERY)
    both = _headers() | {SIGNATURE_HEADER: f"{old}, {_headers()[SIGNATURE_HEADER]}"}
    verify(SECRET, both, BODY, now=SENT)
    with pytest.raises(WebhookSignatureMismatch):
        verify(SECRET, _headers() | {SIGNATURE_HEADER: old}, BODY, now=SENT)


def test_every_refusal_is_a_webhook_signature_error() -> None:
    with pytest.raises(WebhookSignatureError):
        verify(SECRET, {}, BODY, now=SENT)
    with pytest.raises(ValueError):
        signed_headers(SECRET, BODY, timestamp=SENT, delivery_id="not/an/id")
