"""The emulator's sealed challenges: seal, open, and the validateRequest code of each way one can be wrong."""

from __future__ import annotations

import base64
import re
import zlib

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from scep_server.emulator import Code
from scep_server.emulator.challenges import ChallengeClaims, ChallengeCodec, check_lifetime
from scep_server.emulator.codes import Rejection
from scep_server.intune.contract import ChallengeSpec

RICH = ChallengeSpec(
    subject="CN=alice@contoso.com,OU=Sales,O=Contoso",
    sans=(("email", "alice@contoso.com"), ("upn", "alice@contoso.onmicrosoft.com")),
)
PRINTABLE_STRING = re.compile(r"^[A-Za-z0-9 '()+,\-./:=?]+$")


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
