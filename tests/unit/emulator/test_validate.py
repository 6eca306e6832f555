"""Every validateRequest answer (intune-api.md §5), through IntuneEmulator.validate."""

from __future__ import annotations

import base64
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey as RSAKey
from cryptography.x509.name import _ASN1Type

from scep_server.emulator import Code, IntuneEmulator
from scep_server.intune.contract import ChallengeSpec
from tests.support.clocks import FakeClock

from .helpers import build_csr, csr_for

SPEC = ChallengeSpec(
    subject="CN=alice@contoso.com,O=Contoso",
    sans=(("email", "alice@contoso.com"), ("upn", "alice@contoso.onmicrosoft.com")),
)


def _validate(emulator: IntuneEmulator, spec: ChallengeSpec, key: Any, transaction_id: str = "tid-1",
              **changes: Any) -> str:
    challenge = changes.pop("challenge", None) or emulator.mint_challenge(spec)
    code, _ = emulator.validate(transaction_id, csr_for(spec, key, challenge, **changes))
    return code


def test_matching_request_succeeds_and_is_recorded(emulator: IntuneEmulator, device_key: RSAKey) -> None:
    code, description = emulator.validate("tid-1", csr_for(SPEC, device_key, emulator.mint_challenge(SPEC)))
    assert (code, description) == ("Success", "")
    [record] = emulator.validations
    assert record["transactionId"] == "tid-1" and record["code"] == "Success"
    assert record["certificateRequestId"] == SPEC.certificate_request_id
    assert record["deviceId"] == SPEC.device_id and record["userId"] == SPEC.user_id


@pytest.mark.parametrize("csr", ["", "not base64!", base64.b64encode(b"\x30\x03\x02\x01\x00").decode()])
def test_undecodable_request(emulator: IntuneEmulator, csr: str) -> None:
    assert emulator.validate("tid-1", csr)[0] == Code.CERTIFICATE_REQUEST_DECODING_FAILED


def test_request_with_line_breaks_in_its_base64_is_read(emulator: IntuneEmulator, device_key: RSAKey) -> None:
    csr = csr_for(SPEC, device_key, emulator.mint_challenge(SPEC))
    wrapped = "\n".join(csr[i:i + 64] for i in range(0, len(csr), 64))
    assert emulator.validate("tid-1", wrapped)[0] == Code.SUCCESS


def test_request_whose_signature_does_not_verify(emulator: IntuneEmulator, device_key: RSAKey) -> None:
    der = bytearray(base64.b64decode(csr_for(SPEC, device_key, emulator.mint_challenge(SPEC))))
    der[-1] ^= 0xFF
    assert emulator.validate("tid-1", base64.b64encode(bytes(der)).decode())[0] == Code.SIGNATURE_VALIDATION_FAILED


def test_challenge_password_missing(emulator: IntuneEmulator, device_key: RSAKey) -> None:
    assert emulator.validate("tid-1", csr_for(SPEC, device_key, None))[0] == Code.CHALLENGE_PASSWORD_MISSING
    assert emulator.validate("tid-1", csr_for(SPEC, device_key, " "))[0] == Code.CHALLENGE_PASSWORD_MISSING


def test_bmpstring_challenge_password_is_read(emulator: IntuneEmulator, device_key: RSAKey) -> None:
    csr = csr_for(SPEC, device_key, emulator.mint_challenge(SPEC), challenge_tag=_ASN1Type.BMPString)
    assert emulator.validate("tid-1", csr)[0] == Code.SUCCESS


def test_challenge_decoding_decryption_signature_deserialization(
    emulator: IntuneEmulator, device_key: RSAKey, clock: FakeClock[float]
) -> None:
    other = IntuneEmulator(clock=clock)
    forged = emulator.codec.seal(SPEC, clock(), signing_key=ec.generate_private_key(ec.SECP256R1()))
    cases = {
        "not-a-challenge": Code.CHALLENGE_DECODING_ERROR,
        other.mint_challenge(SPEC): Code.CHALLENGE_DECRYPTION_ERROR,
        forged: Code.SIGNATURE_VALIDATION_FAILED,
        emulator.codec.seal_body(b"garbage"): Code.CHALLENGE_DESERIALIZATION_ERROR,
    }
    for challenge, expected in cases.items():
        assert _validate(emulator, SPEC, device_key, challenge=challenge) == expected


def test_expired_and_future_challenges(emulator: IntuneEmulator, device_key: RSAKey, clock: FakeClock[float]) -> None:
    challenge = emulator.mint_challenge(SPEC)
    clock.advance(SPEC.expires_in)
    assert _validate(emulator, SPEC, device_key, challenge=challenge) == Code.CHALLENGE_EXPIRED
    clock.advance(10_000)
    future = emulator.mint_challenge(SPEC)
    clock.advance(-10_000)
    assert _validate(emulator, SPEC, device_key, challenge=future) == Code.CHALLENGE_INVALID_TIMESTAMP


def test_specs_minted_expired_or_invalid(emulator: IntuneEmulator, device_key: RSAKey) -> None:
    assert _validate(emulator, ChallengeSpec(subject="CN=a", expires_in=0), device_key) == Code.CHALLENGE_EXPIRED
    invalid = ChallengeSpec(subject="CN=a", expires_in=-1)
    assert _validate(emulator, invalid, device_key) == Code.CHALLENGE_INVALID_TIMESTAMP


@pytest.mark.parametrize(("field", "code"), [
    ("device_id", Code.BAD_DEVICE_ID_IN_CHALLENGE),
    ("user_id", Code.BAD_USER_ID_IN_CHALLENGE),
    ("certificate_request_id", Code.BAD_CERTIFICATE_REQUEST_ID_IN_CHALLENGE),
])
def test_ids_that_are_not_guids(emulator: IntuneEmulator, device_key: RSAKey, field: str, code: Code) -> None:
    spec = ChallengeSpec(**{**_fields(SPEC), field: "not-a-guid"})
    assert _validate(emulator, spec, device_key) == code


@pytest.mark.parametrize(("changes", "code"), [
    ({"subject": ""}, Code.SUBJECT_NAME_MISSING),
    ({"subject": "CN=bob@contoso.com,O=Contoso"}, Code.SUBJECT_NAME_MISMATCH),
    ({"subject": "O=Contoso,CN=alice@contoso.com"}, Code.SUBJECT_NAME_MISMATCH),
    ({"sans": ()}, Code.SUBJECT_ALT_NAME_MISSING),
    ({"sans": (("email", "alice@contoso.com"),)}, Code.SUBJECT_ALT_NAME_MISMATCH),
    ({"sans": (("email", "alice@contoso.com"), ("upn", "mallory@contoso.onmicrosoft.com"))},
     Code.SUBJECT_ALT_NAME_MISMATCH),
    ({"sans": (("email", "alice@contoso.com"), ("email", "alice@contoso.onmicrosoft.com"))},
     Code.SUBJECT_ALT_NAME_MISMATCH),
    ({"sans": (*SPEC.sans, ("dns", "alice.contoso.com"))}, Code.SUBJECT_ALT_NAME_MISMATCH),
    ({"key_usage": ("digital_signature",)}, Code.KEY_USAGE_MISMATCH),
    ({"key_usage": None}, Code.KEY_USAGE_MISMATCH),
    ({"key_usage": ("digital_signature", "key_encipherment", "key_cert_sign")}, Code.KEY_USAGE_MISMATCH),
    ({"ekus": None}, Code.ENHANCED_KEY_USAGE_MISSING),
    ({"ekus": ("1.3.6.1.5.5.7.3.1",)}, Code.ENHANCED_KEY_USAGE_MISMATCH),
    ({"ekus": ("1.3.6.1.5.5.7.3.2", "1.3.6.1.5.5.7.3.1")}, Code.ENHANCED_KEY_USAGE_MISMATCH),
    ({"hash_name": "sha384"}, Code.SIGNATURE_VALIDATION_FAILED),
    ({"hash_name": "sha1"}, Code.SIGNATURE_VALIDATION_FAILED),
])
def test_request_that_does_not_match_the_profile(
    emulator: IntuneEmulator, device_key: RSAKey, changes: dict[str, Any], code: Code
) -> None:
    assert _validate(emulator, SPEC, device_key, **changes) == code


def test_san_comparison_ignores_order_and_case(emulator: IntuneEmulator, device_key: RSAKey) -> None:
    swapped = (("upn", "Alice@Contoso.onmicrosoft.com"), ("email", "ALICE@contoso.com"))
    assert _validate(emulator, SPEC, device_key, sans=swapped) == Code.SUCCESS


def test_key_length(emulator: IntuneEmulator, device_key: RSAKey) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    assert _validate(emulator, SPEC, ec_key) == Code.KEY_LENGTH_MISMATCH
    assert _validate(emulator, ChallengeSpec(subject="CN=a", key_size=256), ec_key) == Code.SUCCESS
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    assert _validate(emulator, ChallengeSpec(subject="CN=a"), small) == Code.KEY_LENGTH_MISMATCH
    assert _validate(emulator, ChallengeSpec(subject="CN=a", key_size=1024), small) == Code.SUCCESS


def test_profile_variants_from_the_acceptance_matrix(emulator: IntuneEmulator, device_key: RSAKey) -> None:
    specs = [
        ChallengeSpec(subject="CN=alice", sans=(("upn", "alice@contoso.com"),), key_usage=("digital_signature",)),
        ChallengeSpec(subject="CN=alice,E=alice@contoso.com", key_usage=("key_encipherment",)),
        ChallengeSpec(subject="CN=356938035643809", extended_key_usage=("1.3.6.1.5.5.7.3.6",)),  # IMEI, IPsec tunnel
        ChallengeSpec(subject="SERIALNUMBER=C02XK0XXJG5H,CN=device", hash="sha1"),
        ChallengeSpec(subject="", sans=(("dns", "device.contoso.com"), ("uri", "urn:device:1"))),
        ChallengeSpec(subject="CN=alice", extended_key_usage=()),
    ]
    for number, spec in enumerate(specs):
        assert _validate(emulator, spec, device_key, transaction_id=f"tid-{number}") == Code.SUCCESS, spec


def test_challenge_is_single_use(emulator: IntuneEmulator, device_key: RSAKey) -> None:
    challenge = emulator.mint_challenge(SPEC)
    assert _validate(emulator, SPEC, device_key, "tid-1", challenge=challenge, subject="CN=wrong") != Code.SUCCESS
    assert _validate(emulator, SPEC, device_key, "tid-2", challenge=challenge) == Code.SUCCESS  # failures do not bind
    assert _validate(emulator, SPEC, device_key, "tid-2", challenge=challenge) == Code.SUCCESS  # the device retries
    reused = _validate(emulator, SPEC, device_key, "tid-3", challenge=challenge)
    assert reused == Code.BAD_CERTIFICATE_REQUEST_ID_IN_CHALLENGE
    assert [v["transactionId"] for v in emulator.validations] == ["tid-1", "tid-2", "tid-2", "tid-3"]


def test_untargeted_profile(emulator: IntuneEmulator, device_key: RSAKey) -> None:
    challenge = emulator.mint_challenge(SPEC)
    emulator.untarget(SPEC.certificate_request_id)
    assert _validate(emulator, SPEC, device_key, challenge=challenge) == Code.SCEP_PROFILE_NO_LONGER_TARGETED


def test_forced_code_is_answered_and_recorded(emulator: IntuneEmulator, device_key: RSAKey) -> None:
    csr = csr_for(SPEC, device_key, emulator.mint_challenge(SPEC))
    assert emulator.validate("tid-1", csr, forced_code="RegisteredKeyMismatch")[0] == "RegisteredKeyMismatch"
    assert emulator.validations[-1]["code"] == "RegisteredKeyMismatch"


def test_descriptions_never_contain_the_challenge(emulator: IntuneEmulator, device_key: RSAKey) -> None:
    challenge = emulator.mint_challenge(SPEC)
    for changes in ({}, {"subject": "CN=x"}, {"sans": ()}, {"hash_name": "sha384"}):
        emulator.validate("tid-1", csr_for(SPEC, device_key, challenge, **changes))
    assert all(challenge not in str(v) for v in emulator.validations)


def test_csr_without_subject_for_a_subjectless_profile(emulator: IntuneEmulator, device_key: RSAKey) -> None:
    spec = ChallengeSpec(subject="", sans=(("upn", "alice@contoso.com"),))
    assert _validate(emulator, spec, device_key) == Code.SUCCESS
    assert _validate(emulator, spec, device_key, subject="CN=alice") == Code.SUBJECT_NAME_MISMATCH


def test_build_csr_helper_sanity(device_key: RSAKey) -> None:
    assert base64.b64decode(build_csr(device_key, subject="CN=a"))[:1] == b"\x30"


def _fields(spec: ChallengeSpec) -> dict[str, Any]:
    return {name: getattr(spec, name) for name in ChallengeSpec.__dataclass_fields__}


def test_concurrent_validations_bind_the_challenge_once(emulator: IntuneEmulator, device_key: RSAKey) -> None:
    challenge = emulator.mint_challenge(SPEC)
    csr = csr_for(SPEC, device_key, challenge)
    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(pool.map(lambda n: emulator.validate(f"tid-{n}", csr)[0], range(16)))
    assert codes.count(Code.SUCCESS) == 1
    assert codes.count(Code.BAD_CERTIFICATE_REQUEST_ID_IN_CHALLENGE) == 15
    assert len(emulator.validations) == 16
