"""CA generations: the index, staging the next CA (created, imported, cross-signed), activating it now or
at a time, and what loading makes of a damaged index or a generation whose files are gone."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from datetime import timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from scep_server.ca.authority import CA_CERT, CA_KEY, init_ca
from scep_server.ca.generations import (
    CROSS_CERT,
    GENERATIONS_DIR,
    GenerationRecord,
    GenerationState,
    ImportedCa,
    activate,
    cross_signed,
    index_path,
    load_generations,
    next_subject,
    read_state,
    stage_next,
    write_state,
)
from scep_server.config import CAConfig, KeyType
from scep_server.errors import CAError

from .support import NOW

CONFIG = CAConfig(key_type=KeyType.EC, curve="P-256")
FIRST = CONFIG.name
SECOND = f"{CONFIG.name}-g2"
THIRD = f"{CONFIG.name}-g3"


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "ca"
    init_ca(directory, CONFIG, None, now=NOW)
    return directory


def public_der(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def common_name(name: x509.Name) -> str:
    return str(name.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def ca_made_elsewhere(tmp_path: Path, subject: str) -> ImportedCa:
    """A CA's certificate and key as another CA installation would hand them over."""
    directory = tmp_path / "elsewhere"
    init_ca(directory, dataclasses.replace(CONFIG, subject=subject), None, now=NOW)
    return ImportedCa((directory / CA_CERT).read_bytes(), (directory / CA_KEY).read_bytes())


def ca_without_key_usage(subject: str) -> ImportedCa:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=900))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return ImportedCa(cert.public_bytes(serialization.Encoding.PEM), key_pem)


def write_index(ca_dir: Path, document: object) -> None:
    index_path(ca_dir).write_text(json.dumps(document))


# The index


def test_without_an_index_the_directory_is_one_generation_named_after_the_ca(ca_dir: Path) -> None:
    assert not index_path(ca_dir).exists()
    assert read_state(ca_dir, FIRST) == GenerationState((GenerationRecord(FIRST),), FIRST)
    generations = load_generations(ca_dir, CONFIG, None, now=NOW)
    assert generations.active.label == FIRST and generations.active.directory == ca_dir
    assert generations.next is None and generations.retired == ()


def test_the_index_keeps_the_activation_time_with_its_zone(tmp_path: Path) -> None:
    at = (NOW + timedelta(days=3)).astimezone(timezone(timedelta(hours=2)))
    state = GenerationState(
        (GenerationRecord(FIRST), GenerationRecord(SECOND, f"{GENERATIONS_DIR}/{SECOND}")), FIRST, SECOND, at
    )
    write_state(tmp_path, state)
    read = read_state(tmp_path, "another name")
    assert read == state
    assert read.activate_at is not None and read.activate_at.utcoffset() == timedelta(hours=2)


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ("{not json", "malformed"),
        ({"generations": [{"label": FIRST}]}, "malformed"),  # no active generation
        ({"generations": [{"label": FIRST}, {"label": "x", "path": "../x"}], "active": FIRST}, "must live in"),
        ({"generations": [{"label": FIRST}, {"label": "x", "path": "generations/y"}], "active": FIRST}, "must live"),
        ({"generations": [{"label": "a/b", "path": "generations/a/b"}], "active": "a/b"}, "bad generation"),
        ({"generations": [{"label": FIRST}], "active": "nobody"}, "no generation 'nobody'"),
        ({"generations": [{"label": FIRST}], "active": FIRST, "next": "nobody"}, "no generation 'nobody'"),
        ({"generations": [{"label": FIRST}], "active": FIRST, "activate_at": "2030-01-01T00:00:00"}, "time zone"),
        ({"generations": [FIRST], "active": FIRST}, "must be an object"),
    ],
)
def test_a_malformed_index_is_a_ca_error(ca_dir: Path, document: object, problem: str) -> None:
    if isinstance(document, str):
        index_path(ca_dir).write_text(document)
    else:
        write_index(ca_dir, document)
    with pytest.raises(CAError, match=problem):
        read_state(ca_dir, FIRST)
    with pytest.raises(CAError):
        load_generations(ca_dir, CONFIG, None, now=NOW)


# Staging


def test_stage_next_creates_the_next_ca_under_generations_and_names_it_next(ca_dir: Path) -> None:
    active = load_generations(ca_dir, CONFIG, None, now=NOW).active
    staged = stage_next(ca_dir, CONFIG, None, now=NOW)
    assert staged.label == SECOND and staged.directory == ca_dir / GENERATIONS_DIR / SECOND
    assert (staged.directory / CA_CERT).exists() and (staged.directory / CA_KEY).exists()
    assert common_name(staged.ca.ca_cert.subject) == f"{common_name(active.ca.ca_cert.subject)} G2"
    assert public_der(staged.ca.ca_cert) != public_der(active.ca.ca_cert)
    assert staged.ca.ra_cert.issuer == staged.ca.ca_cert.subject  # the next CA has its own RA
    state = read_state(ca_dir, FIRST)
    assert (state.active, state.next, state.activate_at) == (FIRST, SECOND, None)
    assert state.record(SECOND).path == f"{GENERATIONS_DIR}/{SECOND}"


def test_load_generations_has_the_active_one_and_the_staged_one(ca_dir: Path) -> None:
    staged = stage_next(ca_dir, CONFIG, None, now=NOW)
    generations = load_generations(ca_dir, CONFIG, None, now=NOW)
    assert generations.active.label == FIRST and generations.retired == ()
    assert generations.next is not None and generations.next.label == SECOND
    assert generations.next.ca.ca_cert == staged.ca.ca_cert
    assert [generation.label for generation in generations.all()] == [FIRST, SECOND]


def test_an_explicit_subject_names_the_next_ca(ca_dir: Path) -> None:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Replacement CA")])
    assert stage_next(ca_dir, CONFIG, None, subject=subject, now=NOW).ca.ca_cert.subject == subject


def test_a_second_stage_is_refused_while_one_is_staged(ca_dir: Path) -> None:
    stage_next(ca_dir, CONFIG, None, now=NOW)
    with pytest.raises(CAError, match=f"{SECOND} is staged already"):
        stage_next(ca_dir, CONFIG, None, now=NOW)
    assert not (ca_dir / GENERATIONS_DIR / THIRD).exists()
    assert [record.label for record in read_state(ca_dir, FIRST).records] == [FIRST, SECOND]


@pytest.mark.parametrize(
    ("subject", "number", "expected"),
    [
        ("CN=X CA,O=Org", 2, "CN=X CA G2,O=Org"),
        ("CN=X CA G2,O=Org", 3, "CN=X CA G3,O=Org"),
        ("O=Org,CN=X CA", 2, "O=Org,CN=X CA G2"),
        ("CN=X CA G2", 4, "CN=X CA G2 G4"),  # only the previous generation's mark is replaced
    ],
)
def test_next_subject_marks_the_common_name_with_the_generation(subject: str, number: int, expected: str) -> None:
    name = next_subject(x509.Name.from_rfc4514_string(subject), number)
    assert name == x509.Name.from_rfc4514_string(expected)


def test_next_subject_needs_a_common_name() -> None:
    with pytest.raises(CAError, match="no common name"):
        next_subject(x509.Name.from_rfc4514_string("O=Org,C=DE"), 2)


def test_the_third_generation_follows_the_second(ca_dir: Path) -> None:
    stage_next(ca_dir, CONFIG, None, now=NOW)
    activate(ca_dir, CONFIG, now=NOW)
    third = stage_next(ca_dir, CONFIG, None, now=NOW)
    assert third.label == THIRD and third.directory == ca_dir / GENERATIONS_DIR / THIRD
    assert common_name(third.ca.ca_cert.subject).endswith(" CA G3")
    assert not common_name(third.ca.ca_cert.subject).endswith("G2 G3")
    activate(ca_dir, CONFIG, now=NOW)
    generations = load_generations(ca_dir, CONFIG, None, now=NOW)
    assert generations.active.label == THIRD
    assert [generation.label for generation in generations.retired] == [SECOND, FIRST]  # newest first


# Cross-signing


def test_cross_sign_certifies_the_next_ca_key_under_the_active_ca(ca_dir: Path) -> None:
    active = load_generations(ca_dir, CONFIG, None, now=NOW).active.ca.ca_cert
    staged = stage_next(ca_dir, CONFIG, None, cross_sign=True, now=NOW)
    assert (staged.directory / CROSS_CERT).exists()
    cross = cross_signed(staged.directory)
    assert cross is not None
    assert cross.subject == staged.ca.ca_cert.subject and cross.issuer == active.subject
    assert public_der(cross) == public_der(staged.ca.ca_cert)
    cross.verify_directly_issued_by(active)
    assert cross.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cross.not_valid_after_utc <= min(active.not_valid_after_utc, staged.ca.ca_cert.not_valid_after_utc)


def test_without_cross_sign_there_is_no_cross_certificate(ca_dir: Path) -> None:
    staged = stage_next(ca_dir, CONFIG, None, now=NOW)
    assert cross_signed(staged.directory) is None and not (staged.directory / CROSS_CERT).exists()


# Importing


def test_an_imported_ca_is_staged_as_the_next_generation(ca_dir: Path, tmp_path: Path) -> None:
    imported = ca_made_elsewhere(tmp_path, "CN=Imported Next CA,O=Elsewhere")
    staged = stage_next(ca_dir, CONFIG, None, imported=imported, cross_sign=True, now=NOW)
    assert staged.label == SECOND
    assert staged.ca.ca_cert == x509.load_pem_x509_certificate(imported.cert_pem)
    assert read_state(ca_dir, FIRST).next == SECOND
    generations = load_generations(ca_dir, CONFIG, None, now=NOW)
    assert generations.next is not None and generations.next.ca.ca_cert == staged.ca.ca_cert
    cross = cross_signed(staged.directory)
    assert cross is not None and public_der(cross) == public_der(staged.ca.ca_cert)


def test_an_import_with_the_active_subject_is_refused(ca_dir: Path, tmp_path: Path) -> None:
    imported = ca_made_elsewhere(tmp_path, CONFIG.subject)  # another key under the same name
    with pytest.raises(CAError, match="another subject than generation scep-server-ca"):
        stage_next(ca_dir, CONFIG, None, imported=imported, now=NOW)
    assert read_state(ca_dir, FIRST).next is None
    assert load_generations(ca_dir, CONFIG, None, now=NOW).next is None


def test_an_import_whose_key_is_another_is_refused(ca_dir: Path, tmp_path: Path) -> None:
    imported = ca_made_elsewhere(tmp_path, "CN=Imported Next CA")
    other_key = ca_without_key_usage("Unrelated").key_pem
    with pytest.raises(CAError, match="does not belong"):
        stage_next(ca_dir, CONFIG, None, imported=dataclasses.replace(imported, key_pem=other_key), now=NOW)
    assert read_state(ca_dir, FIRST).next is None


def test_a_refused_stage_leaves_nothing_that_blocks_the_next_stage(ca_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(CAError):
        stage_next(ca_dir, CONFIG, None, imported=ca_made_elsewhere(tmp_path, CONFIG.subject), now=NOW)
    assert stage_next(ca_dir, CONFIG, None, now=NOW).label == SECOND


def test_an_imported_ca_without_key_usage_can_be_cross_signed(ca_dir: Path) -> None:
    staged = stage_next(ca_dir, CONFIG, None, imported=ca_without_key_usage("No Usage CA"), cross_sign=True, now=NOW)
    cross = cross_signed(staged.directory)
    assert cross is not None and cross.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign


# Activating


def test_activate_now_makes_the_staged_ca_active_and_retires_the_old_one(ca_dir: Path) -> None:
    first = load_generations(ca_dir, CONFIG, None, now=NOW).active.ca.ca_cert
    stage_next(ca_dir, CONFIG, None, now=NOW)
    assert activate(ca_dir, CONFIG, now=NOW) == SECOND
    state = read_state(ca_dir, FIRST)
    assert (state.active, state.next, state.activate_at) == (SECOND, None, None)
    generations = load_generations(ca_dir, CONFIG, None, now=NOW)
    assert generations.active.label == SECOND and generations.next is None
    assert [generation.label for generation in generations.retired] == [FIRST]
    assert generations.retired[0].ca.ca_cert == first


def test_activate_without_a_staged_generation_is_refused(ca_dir: Path) -> None:
    with pytest.raises(CAError, match="no CA generation is staged"):
        activate(ca_dir, CONFIG, now=NOW)
    assert not index_path(ca_dir).exists()


def test_activate_at_a_future_time_keeps_the_active_ca_until_then(ca_dir: Path) -> None:
    at = NOW + timedelta(days=2)
    stage_next(ca_dir, CONFIG, None, now=NOW)
    assert activate(ca_dir, CONFIG, at=at, now=NOW) == SECOND
    state = read_state(ca_dir, FIRST)
    assert (state.active, state.next, state.activate_at) == (FIRST, SECOND, at)

    before = load_generations(ca_dir, CONFIG, None, now=at - timedelta(seconds=1))
    assert before.active.label == FIRST and before.next is not None and before.next.label == SECOND
    assert before.activate_at == at
    after = load_generations(ca_dir, CONFIG, None, now=at)
    assert after.active.label == SECOND and after.next is None
    assert [generation.label for generation in after.retired] == [FIRST]


def test_generations_at_switches_at_the_activation_time(ca_dir: Path) -> None:
    at = NOW + timedelta(hours=6)
    stage_next(ca_dir, CONFIG, None, now=NOW)
    activate(ca_dir, CONFIG, at=at, now=NOW)
    generations = load_generations(ca_dir, CONFIG, None, now=NOW)
    assert generations.at(at - timedelta(microseconds=1)) is generations
    later = generations.at(at)
    assert later.active.label == SECOND and later.next is None
    assert [generation.label for generation in later.retired] == [FIRST]
    assert later.at(at + timedelta(days=365)) is later


def test_activate_at_a_past_time_activates_now(ca_dir: Path) -> None:
    stage_next(ca_dir, CONFIG, None, now=NOW)
    activate(ca_dir, CONFIG, at=NOW - timedelta(minutes=1), now=NOW)
    state = read_state(ca_dir, FIRST)
    assert (state.active, state.next, state.activate_at) == (SECOND, None, None)


# Lookups and damaged generations


def test_issued_by_and_labelled_find_each_generation(ca_dir: Path) -> None:
    staged = stage_next(ca_dir, CONFIG, None, now=NOW)
    generations = load_generations(ca_dir, CONFIG, None, now=NOW)
    first = generations.active
    assert generations.issued_by(first.ca.ca_cert.subject) is first
    assert generations.issued_by(staged.ca.ca_cert.subject) is generations.next
    assert generations.issued_by(x509.Name.from_rfc4514_string("CN=Somebody Else")) is None
    assert generations.labelled(FIRST) is first and generations.labelled(SECOND) is generations.next
    assert generations.labelled("nobody") is None


def test_a_staged_generation_whose_files_are_gone_is_left_out(
    ca_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    staged = stage_next(ca_dir, CONFIG, None, now=NOW)
    shutil.rmtree(staged.directory)
    with caplog.at_level(logging.ERROR, logger="scep_server.ca.generations"):
        generations = load_generations(ca_dir, CONFIG, None, now=NOW)
    assert generations.active.label == FIRST and generations.next is None
    assert f"CA generation {SECOND} is left out" in caplog.text


def test_a_retired_generation_whose_certificate_is_gone_is_left_out(ca_dir: Path) -> None:
    stage_next(ca_dir, CONFIG, None, now=NOW)
    activate(ca_dir, CONFIG, now=NOW)
    (ca_dir / CA_CERT).unlink()
    generations = load_generations(ca_dir, CONFIG, None, now=NOW)
    assert generations.active.label == SECOND and generations.retired == ()


def test_an_active_generation_whose_files_are_gone_does_not_load(ca_dir: Path) -> None:
    staged = stage_next(ca_dir, CONFIG, None, now=NOW)
    activate(ca_dir, CONFIG, now=NOW)
    (staged.directory / CA_CERT).unlink()
    with pytest.raises(CAError, match="no complete CA"):
        load_generations(ca_dir, CONFIG, None, now=NOW)


def test_a_subject_of_a_retired_generation_is_refused(ca_dir: Path) -> None:
    first_subject = load_generations(ca_dir, CONFIG, None, now=NOW).active.ca.ca_cert.subject
    stage_next(ca_dir, CONFIG, None, now=NOW)
    activate(ca_dir, CONFIG, now=NOW)
    with pytest.raises(CAError, match=f"another subject than generation {FIRST}"):
        stage_next(ca_dir, CONFIG, None, subject=first_subject, now=NOW)
    assert not (ca_dir / "generations" / f"{CONFIG.name}-g3").exists()


def test_an_activation_whose_time_has_passed_does_not_block_the_next_stage(ca_dir: Path) -> None:
    stage_next(ca_dir, CONFIG, None, now=NOW)
    activate(ca_dir, CONFIG, at=NOW + timedelta(days=1), now=NOW)
    later = NOW + timedelta(days=2)
    third = stage_next(ca_dir, CONFIG, None, now=later)
    state = read_state(ca_dir, FIRST)
    assert (state.active, state.next) == (SECOND, third.label)


@pytest.mark.parametrize("label", ["..", ".", "a/b", ""])
def test_an_index_label_that_is_no_plain_name_is_refused(ca_dir: Path, label: str) -> None:
    records = [{"label": FIRST, "path": "."}, {"label": label, "path": f"generations/{label}"}]
    write_index(ca_dir, {"generations": records, "active": FIRST, "next": label})
    with pytest.raises(CAError, match="malformed"):
        read_state(ca_dir, FIRST)
