"""CA generations with every key on one SoftHSM2 token, configured as ``serve`` is (``ca.keys: pkcs11``).

The first CA's keys keep their plain names (``ca.key``, ``ra.key``); a staged generation's go under its
label (``<label>/ca.key``), so the two CAs share the token without a name in common, and nothing of
either is ever a file in the CA directory.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pkcs11
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from pkcs11 import Attribute, ObjectClass

from scep_server.ca import generations
from scep_server.ca.authority import CA_KEY, RA_KEY, CertificateAuthority, init_ca, rotate_ra
from scep_server.ca.generations import (
    GENERATIONS_DIR,
    activate,
    cross_signed,
    load_generations,
    read_state,
    stage_next,
)
from scep_server.ca.keys import key_matches
from scep_server.ca.keys.pkcs11_session import TokenAddress, token_session
from scep_server.config import CAConfig, KeyBackendConfig, KeyType
from scep_server.errors import CAError
from scep_server.pki.chain import is_issued_by
from scep_server.scep import envelope
from scep_server.scep.types import ContentCipher, KeyTransport
from tests.support import pki
from tests.support.softhsm import SoftHsmToken, softhsm_token

NOW = datetime.now(UTC).replace(microsecond=0)
FIRST_KEYS = {CA_KEY, RA_KEY}


@pytest.fixture
def token(tmp_path: Path) -> Iterator[SoftHsmToken]:
    with softhsm_token(tmp_path / "softhsm") as made:
        yield made


@pytest.fixture
def config(token: SoftHsmToken) -> CAConfig:
    return CAConfig(key_type=KeyType.EC, curve="P-256", keys=KeyBackendConfig("pkcs11", token.settings()))


@pytest.fixture
def ca_dir(tmp_path: Path, config: CAConfig) -> Path:
    directory = tmp_path / "ca"
    init_ca(directory, config, None, now=NOW)
    return directory


def next_label(config: CAConfig) -> str:
    return f"{config.name}-g2"


def labels_on_token(token: SoftHsmToken, object_class: ObjectClass | None = None) -> list[str]:
    """The label of every object on the token (of ``object_class`` when given), sorted, read in the
    process's session on it: the one the backend uses."""
    template = {} if object_class is None else {Attribute.CLASS: object_class}

    def read(session: pkcs11.Session) -> list[str]:
        return sorted(str(obj[Attribute.LABEL]) for obj in session.get_objects(template))

    return token_session(TokenAddress(token.module, token_label=token.label), token.pin).run(read)


def key_files(ca_dir: Path) -> list[Path]:
    return sorted(ca_dir.rglob("*.key"))


def leaf_signed_by(ca: CertificateAuthority) -> x509.Certificate:
    builder = pki.certificate_builder("CN=device", pki.new_key(pki.KeyType.P256).public_key(), ca.ca_cert.subject,
                                      ca=None, not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=30))
    return ca.ca_key.sign_certificate(builder, hashes.SHA256())  # fmt: skip


def test_a_staged_generation_keeps_its_keys_on_the_token_under_its_label(
    token: SoftHsmToken, config: CAConfig, ca_dir: Path
) -> None:
    label = next_label(config)
    staged = stage_next(ca_dir, config, None, cross_sign=True, now=NOW)
    assert staged.label == label and staged.directory == ca_dir / GENERATIONS_DIR / label
    assert key_files(ca_dir) == [], "every key is on the token, none in a file"
    expected = sorted([CA_KEY, RA_KEY, f"{label}/{CA_KEY}", f"{label}/{RA_KEY}"])
    assert labels_on_token(token, ObjectClass.PRIVATE_KEY) == expected
    assert labels_on_token(token, ObjectClass.PUBLIC_KEY) == expected

    loaded = load_generations(ca_dir, config, None, now=NOW)
    assert loaded.next is not None and loaded.next.label == label
    first, following = loaded.active.ca, loaded.next.ca
    assert following.ca_cert == staged.ca.ca_cert and following.ca_cert.subject != first.ca_cert.subject
    assert key_matches(following.ca_key, following.ca_cert) and key_matches(following.ra_key, following.ra_cert)
    assert key_matches(first.ca_key, first.ca_cert) and first.ca_key.public_key() != following.ca_key.public_key()
    device = leaf_signed_by(following)
    assert is_issued_by(device, following.ca_cert) and not is_issued_by(device, first.ca_cert)
    cross = cross_signed(loaded.next.directory)
    assert cross is not None and is_issued_by(cross, first.ca_cert), "the active CA's token key certified it"
    assert cross.public_key() == following.ca_cert.public_key()


def test_the_second_generations_rotated_ra_key_goes_on_the_token_under_its_label(
    token: SoftHsmToken, config: CAConfig, ca_dir: Path
) -> None:
    label = next_label(config)
    stage_next(ca_dir, config, None, now=NOW)
    assert activate(ca_dir, config, now=NOW) == label
    active = load_generations(ca_dir, config, None, now=NOW).active
    assert active.label == label
    rotated = rotate_ra(active.directory, active.ca, config, None, now=NOW)

    new_ra_key = f"{label}/ra-{rotated.ra_cert.serial_number:x}.key"
    assert labels_on_token(token, ObjectClass.PRIVATE_KEY) == sorted(
        [CA_KEY, RA_KEY, f"{label}/{CA_KEY}", f"{label}/{RA_KEY}", new_ra_key]
    ), "the replaced RA key stays for its grace period; the first CA's keys are untouched"
    assert key_files(ca_dir) == []
    reloaded = load_generations(ca_dir, config, None, now=NOW)
    assert reloaded.active.label == label and [gone.label for gone in reloaded.retired] == [config.name]
    ra = reloaded.active.ca
    assert ra.ra_cert == rotated.ra_cert and key_matches(ra.ra_key, ra.ra_cert) and is_issued_by(ra.ra_cert, ra.ca_cert)
    wrapped = envelope.encrypt(b"to the new RA", ra.ra_cert, ContentCipher.AES256, KeyTransport.RSA_PKCS1V15)
    assert envelope.decrypt(wrapped, ra.ra_key, ra.ra_cert).content == b"to the new RA"


def test_a_stage_refused_for_its_subject_leaves_nothing_of_the_next_generation_on_the_token(
    token: SoftHsmToken, config: CAConfig, ca_dir: Path
) -> None:
    active_subject = load_generations(ca_dir, config, None, now=NOW).active.ca.ca_cert.subject
    with pytest.raises(CAError, match="another subject"):
        stage_next(ca_dir, config, None, subject=active_subject, now=NOW)
    assert_nothing_staged(token, config, ca_dir)


def test_a_stage_failing_once_its_keys_are_made_removes_them_from_the_token(
    token: SoftHsmToken, config: CAConfig, ca_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object) -> x509.Certificate:
        raise CAError("cross-signing refused")

    # The cross certificate is made after both of the next CA's keys are on the token.
    monkeypatch.setattr(generations, "cross_certificate", refuse)
    with pytest.raises(CAError, match="cross-signing refused"):
        stage_next(ca_dir, config, None, cross_sign=True, now=NOW)
    assert_nothing_staged(token, config, ca_dir)
    monkeypatch.undo()
    assert stage_next(ca_dir, config, None, cross_sign=True, now=NOW).label == next_label(config), \
        "the same label is free again"


def assert_nothing_staged(token: SoftHsmToken, config: CAConfig, ca_dir: Path) -> None:
    label = next_label(config)
    assert labels_on_token(token, ObjectClass.PRIVATE_KEY) == sorted(FIRST_KEYS)
    leftovers = [name for name in labels_on_token(token) if name not in FIRST_KEYS]
    assert leftovers == [], f"objects of the failed stage on the token: {leftovers}"
    assert not (ca_dir / GENERATIONS_DIR / label).exists()
    assert read_state(ca_dir, config.name).next is None
    assert load_generations(ca_dir, config, None, now=NOW).next is None
