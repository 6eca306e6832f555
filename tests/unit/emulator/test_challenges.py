from __future__ import annotations

import base64
import re
import zlib
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from scep_server.emulator import ChallengeSpec, Code
from scep_server.emulator.challenges import ChallengeClaims, ChallengeCodec, check_lifetime
from scep_server.emulator.codes import Rejection

RICH = ChallengeSpec(
    subject="CN=alice@contoso.com,OU=Sales,O=Contoso",
    sans=(("email", "alice@contoso.com"), ("upn", "alice@contoso.onmicrosoft.com")),
)
PRINTABLE_STRING = re.compile(r"^[A-Za-z0-9 '()+,\-./:=?]+$")


def test_spec_json_round_trip() -> None:
    assert ChallengeSpec.from_json(RICH.to_json()) == RICH
    assert RICH.to_json()["sans"][1] == {"type": "upn", "value": "alice@contoso.onmicrosoft.com"}


def test_spec_defaults_give_fresh_ids() -> None:
    one, two = ChallengeSpec(subject="CN=a"), ChallengeSpec(subject="CN=a")
    assert len({one.device_id, two.device_id, one.certificate_request_id, two.certificate_request_id}) == 4


def test_eku_names_become_oids() -> None:
    spec = ChallengeSpec(subject="CN=a", extended_key_usage=["client_auth", "ipsec_tunnel"])  # type: ignore[arg-type]
    assert spec.extended_key_usage == ("1.3.6.1.5.5.7.3.2", "1.3.6.1.5.5.7.3.6")


@pytest.mark.parametrize("changes", [
    {"subject": "not a name"},
    {"sans": [("ip", "10.0.0.1")]},
    {"sans": [("email", "")]},
    {"sans": ["email"]},
    {"key_usage": ["sign_everything"]},
    {"key_usage": "digital_signature"},
    {"extended_key_usage": ["client-authentication"]},
    {"key_size": "2048"},
    {"key_size": True},
    {"hash": "md5"},
    {"validity_days": 0},
    {"device_id": ""},
])
def test_spec_rejects_malformed_values(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ChallengeSpec(**{"subject": "CN=a", **changes})


@pytest.mark.parametrize("data", [
    [],
    {"sans": []},
    {"subject": "CN=a", "colour": "blue"},
    {"subject": "CN=a", "sans": {}},
    {"subject": "CN=a", "sans": [{"type": "email"}]},
])
def test_spec_from_json_rejects_malformed_objects(data: Any) -> None:
    with pytest.raises(ValueError):
        ChallengeSpec.from_json(data)


def test_challenge_is_printable_string_safe_and_short() -> None:
    challenge = ChallengeCodec().seal(RICH, 1_800_000_000)
    assert PRINTABLE_STRING.match(challenge)
    assert len(challenge) < 900


@settings(max_examples=30, deadline=None)
@given(
    cn=st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=40),
    sans=st.lists(st.tuples(st.sampled_from(["email", "upn", "dns", "uri"]),
                            st.text(alphabet="abcdefghijklmnop.@-", min_size=1, max_size=30)), max_size=4),
    key_size=st.sampled_from([1024, 2048, 3072, 4096]),
    expires_in=st.integers(min_value=-10_000, max_value=10_000),
)
def test_seal_open_round_trip(cn: str, sans: list[tuple[str, str]], key_size: int, expires_in: int) -> None:
    codec = ChallengeCodec()
    escaped = cn.replace("\\", "\\\\").replace(",", "\\,").replace("+", "\\+").replace("=", "\\=")
    try:
        spec = ChallengeSpec(subject=f"CN={escaped}", sans=tuple(sans), key_size=key_size, expires_in=expires_in)
    except ValueError:
        return  # a CN the RFC 4514 parser refuses is not what this test is about
    claims = codec.open(codec.seal(spec, 1_800_000_000.7))
    assert claims == ChallengeClaims(spec=spec, issued_at=1_800_000_000, expires_at=1_800_000_000 + expires_in)


def _rejected(codec: ChallengeCodec, challenge: str) -> Code:
    with pytest.raises(Rejection) as caught:
        codec.open(challenge)
    return caught.value.code


def test_open_refuses_what_is_not_a_challenge() -> None:
    codec = ChallengeCodec()
    sealed = base64.b64decode(codec.seal(RICH, 0))
    assert _rejected(codec, "not base64 at all!") == Code.CHALLENGE_DECODING_ERROR
    assert _rejected(codec, base64.b64encode(b"\x01short").decode()) == Code.CHALLENGE_DECODING_ERROR
    assert _rejected(codec, base64.b64encode(b"\x02" + sealed[1:]).decode()) == Code.CHALLENGE_DECODING_ERROR
    assert _rejected(codec, "A" * 9000) == Code.CHALLENGE_DECODING_ERROR


def test_open_refuses_another_emulators_or_a_tampered_challenge() -> None:
    codec = ChallengeCodec()
    assert _rejected(codec, ChallengeCodec().seal(RICH, 0)) == Code.CHALLENGE_DECRYPTION_ERROR
    sealed = bytearray(base64.b64decode(codec.seal(RICH, 0)))
    sealed[40] ^= 1
    assert _rejected(codec, base64.b64encode(bytes(sealed)).decode()) == Code.CHALLENGE_DECRYPTION_ERROR


def test_open_refuses_a_foreign_signature() -> None:
    codec = ChallengeCodec()
    forged = codec.seal(RICH, 0, signing_key=ec.generate_private_key(ec.SECP256R1()))
    assert _rejected(codec, forged) == Code.SIGNATURE_VALIDATION_FAILED


@pytest.mark.parametrize("body", [
    b"not zlib",
    zlib.compress(b"not json"),
    zlib.compress(b'{"v": 2, "spec": {"subject": "CN=a"}, "iat": 0, "exp": 1}'),
    zlib.compress(b'{"v": 1, "spec": {"subject": "CN=a"}, "iat": "0", "exp": 1}'),
    zlib.compress(b'{"v": 1, "spec": {"subject": 7}, "iat": 0, "exp": 1}'),
    zlib.compress(b'[1, 2]'),
])
def test_open_refuses_an_unreadable_signed_payload(body: bytes) -> None:
    codec = ChallengeCodec()
    assert _rejected(codec, codec.seal_body(body)) == Code.CHALLENGE_DESERIALIZATION_ERROR


def test_lifetime() -> None:
    spec = ChallengeSpec(subject="CN=a", expires_in=3600)
    claims = ChallengeClaims(spec=spec, issued_at=1000, expires_at=4600)
    check_lifetime(claims, 4599)
    with pytest.raises(Rejection, match="ChallengeExpired"):
        check_lifetime(claims, 4600)
    with pytest.raises(Rejection, match="ChallengeInvalidTimestamp"):
        check_lifetime(claims, 600)  # issued more than the allowed skew in the future
    with pytest.raises(Rejection, match="ChallengeInvalidTimestamp"):
        check_lifetime(ChallengeClaims(spec=spec, issued_at=1000, expires_at=999), 1000)
