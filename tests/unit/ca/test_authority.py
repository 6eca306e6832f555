"""The CA on disk (scep_server/ca/authority.py): init, load, rotate the RA, and import an existing CA."""

from __future__ import annotations

import os
import re
import stat
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from scep_server.ca import certfiles
from scep_server.ca.authority import (
    CA_CERT,
    CA_KEY,
    CHAIN,
    RA_CERT,
    RA_KEY,
    CertificateAuthority,
    ca_exists,
    import_ca,
    init_ca,
    load_ca,
    rotate_ra,
)
from scep_server.ca.keys import key_matches
from scep_server.ca.keys.generate import PrivateKey, generate_private_key
from scep_server.config import CAConfig
from scep_server.errors import CAError, ConfigError
from scep_server.files import StagedFile
from tests.support import pki

from .support import CA_KINDS, NOW


@pytest.fixture(params=list(CA_KINDS))
def config(request: pytest.FixtureRequest) -> CAConfig:
    return CA_KINDS[request.param]


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def ext(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.Extension[x509.ExtensionType]:
    return cert.extensions.get_extension_for_class(kind)


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_cert(
    subject: str,
    key: PrivateKey,
    issuer: tuple[x509.Certificate, PrivateKey] | None = None,
    *,
    ca: bool = True,
    key_usage: x509.KeyUsage | None = None,
    not_after: datetime = NOW + timedelta(days=3650),
) -> x509.Certificate:
    profile = {"ca": ca, "usage": key_usage, "not_before": NOW - timedelta(days=30), "not_after": not_after}
    if issuer is None:
        return pki.self_signed(subject, key, **profile)
    return pki.CA(*issuer).issue(subject, key=key, **profile).cert


class Hierarchy:
    """A root and an intermediate made outside scep-server, to import."""

    def __init__(self) -> None:
        self.root_key = generate_private_key("ec", curve="P-384")
        self.root = make_cert("CN=Test Root,O=Example", self.root_key)
        self.sub_key = generate_private_key("rsa", key_size=2048)
        self.sub = make_cert(
            "CN=Test Issuing CA,O=Example",
            self.sub_key,
            (self.root, self.root_key),
            key_usage=pki.key_usage("key_cert_sign", "crl_sign"),
        )


@pytest.fixture(scope="module")
def hierarchy() -> Hierarchy:
    return Hierarchy()


# --- init / load ----------------------------------------------------------------------------------


def test_init_creates_private_encrypted_files(tmp_path: Path, config: CAConfig) -> None:
    ca_dir = tmp_path / "var" / "ca"
    ca = init_ca(ca_dir, config, b"s3cret", now=NOW)
    assert mode(ca_dir) == 0o700
    for name in (CA_KEY, RA_KEY):
        assert mode(ca_dir / name) == 0o600
        assert (ca_dir / name).read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert not (ca_dir / CHAIN).exists()
    assert ca_exists(ca_dir)
    assert ca.name == config.name
    assert ca.chain == ()


def test_init_without_passphrase_stores_plain_keys(tmp_path: Path) -> None:
    init_ca(tmp_path / "ca", CA_KINDS["p256"], None, now=NOW)
    assert (tmp_path / "ca" / CA_KEY).read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert load_ca(tmp_path / "ca", CA_KINDS["p256"], None).ca_cert.subject.rfc4514_string()


def test_ca_certificate_properties(tmp_path: Path, config: CAConfig) -> None:
    ca = init_ca(tmp_path / "ca", config, None, now=NOW)
    cert = ca.ca_cert
    assert ca.issuer_name == "CN=scep-server Dev CA,O=scep-server"
    assert cert.issuer == cert.subject
    cert.verify_directly_issued_by(cert)
    constraints = ext(cert, x509.BasicConstraints)
    assert constraints.critical and constraints.value == x509.BasicConstraints(ca=True, path_length=None)
    key_usage = ext(cert, x509.KeyUsage)
    assert key_usage.critical
    assert key_usage.value == pki.key_usage("digital_signature", "key_cert_sign", "crl_sign")
    ski = ext(cert, x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(ca.ca_key.public_key())
    aki = ext(cert, x509.AuthorityKeyIdentifier).value
    assert isinstance(aki, x509.AuthorityKeyIdentifier) and isinstance(ski, x509.SubjectKeyIdentifier)
    assert aki.key_identifier == ski.digest
    assert cert.not_valid_after_utc == NOW + timedelta(days=config.validity_days)
    assert cert.not_valid_before_utc <= NOW
    expected_hash = "sha384" if config.key_type == "ec" and config.curve == "P-384" else "sha256"
    assert cert.signature_hash_algorithm is not None
    assert cert.signature_hash_algorithm.name == expected_hash
    public = ca.ca_key.public_key()
    if config.key_type == "rsa":
        assert isinstance(public, rsa.RSAPublicKey) and public.key_size == config.key_size
    else:
        assert isinstance(public, ec.EllipticCurvePublicKey)
        assert public.curve.key_size == int(config.curve[2:])


def test_ra_certificate_properties(tmp_path: Path, config: CAConfig) -> None:
    ca = init_ca(tmp_path / "ca", config, None, now=NOW)
    ra = ca.ra_cert
    ra_public = ca.ra_key.public_key()
    assert isinstance(ra_public, rsa.RSAPublicKey) and ra_public.key_size == 2048
    assert key_matches(ca.ra_key, ra)
    assert ra.issuer == ca.ca_cert.subject
    assert ra.subject.rfc4514_string() == config.ra_subject
    ra.verify_directly_issued_by(ca.ca_cert)
    key_usage = ext(ra, x509.KeyUsage)
    assert key_usage.critical
    assert key_usage.value == pki.key_usage("digital_signature", "key_encipherment")
    constraints = ext(ra, x509.BasicConstraints)
    assert constraints.critical and constraints.value == x509.BasicConstraints(ca=False, path_length=None)
    aki = ext(ra, x509.AuthorityKeyIdentifier).value
    ca_ski = ext(ca.ca_cert, x509.SubjectKeyIdentifier).value
    assert isinstance(aki, x509.AuthorityKeyIdentifier) and isinstance(ca_ski, x509.SubjectKeyIdentifier)
    assert aki.key_identifier == ca_ski.digest
    assert ra.not_valid_after_utc == NOW + timedelta(days=config.ra_validity_days)


def test_ra_never_outlives_the_ca(tmp_path: Path) -> None:
    config = CAConfig(key_type="ec", validity_days=30, ra_validity_days=730)
    ca = init_ca(tmp_path / "ca", config, None, now=NOW)
    assert ca.ra_cert.not_valid_after_utc == ca.ca_cert.not_valid_after_utc


def test_load_round_trip(tmp_path: Path, config: CAConfig) -> None:
    created = init_ca(tmp_path / "ca", config, b"pw", now=NOW)
    loaded = load_ca(tmp_path / "ca", config, b"pw")
    assert loaded.ca_cert == created.ca_cert and loaded.ra_cert == created.ra_cert
    assert key_matches(loaded.ca_key, created.ca_cert) and key_matches(loaded.ra_key, created.ra_cert)
    assert loaded.chain == ()


def test_load_without_passphrase_names_the_variable(tmp_path: Path) -> None:
    init_ca(tmp_path / "ca", CA_KINDS["p256"], b"pw", now=NOW)
    with pytest.raises(CAError, match="SCEP_CA_PASSPHRASE"):
        load_ca(tmp_path / "ca", CA_KINDS["p256"], None)
    with pytest.raises(CAError, match="wrong passphrase"):
        load_ca(tmp_path / "ca", CA_KINDS["p256"], b"nope")


def test_init_refuses_an_existing_ca(tmp_path: Path) -> None:
    init_ca(tmp_path / "ca", CA_KINDS["p256"], None, now=NOW)
    before = (tmp_path / "ca" / CA_KEY).read_bytes()
    with pytest.raises(CAError, match="already holds a CA"):
        init_ca(tmp_path / "ca", CA_KINDS["p256"], None, now=NOW)
    assert (tmp_path / "ca" / CA_KEY).read_bytes() == before


def test_init_into_an_existing_empty_directory(tmp_path: Path) -> None:
    assert not ca_exists(tmp_path)
    init_ca(tmp_path, CA_KINDS["p256"], None, now=NOW)
    assert ca_exists(tmp_path)


def test_init_accepts_openssl_style_subjects(tmp_path: Path) -> None:
    config = CAConfig(key_type="ec", subject="cn = Acme Issuing CA , o = Acme\\, Inc., c=DE", ra_subject="CN=RA")
    ca = init_ca(tmp_path / "ca", config, None, now=NOW)
    assert ca.issuer_name == "CN=Acme Issuing CA,O=Acme\\, Inc.,C=DE"


@pytest.mark.parametrize("subject", ["", "no equals sign", "XYZ=unknown attribute"])
def test_init_rejects_bad_subjects(tmp_path: Path, subject: str) -> None:
    with pytest.raises(ConfigError, match="ca.subject"):
        init_ca(tmp_path / "ca", CAConfig(key_type="ec", subject=subject), None, now=NOW)
    assert not ca_exists(tmp_path / "ca")


@pytest.mark.parametrize("missing", [CA_KEY, CA_CERT, RA_KEY, RA_CERT])
def test_load_reports_missing_files(tmp_path: Path, missing: str) -> None:
    init_ca(tmp_path / "ca", CA_KINDS["p256"], None, now=NOW)
    (tmp_path / "ca" / missing).unlink()
    with pytest.raises(CAError, match=f"missing {re.escape(missing)}"):
        load_ca(tmp_path / "ca", CA_KINDS["p256"], None)


def test_load_detects_a_foreign_ra(tmp_path: Path) -> None:
    init_ca(tmp_path / "one", CA_KINDS["p256"], None, now=NOW)
    init_ca(tmp_path / "two", CA_KINDS["p256"], None, now=NOW)
    for name in (RA_KEY, RA_CERT):
        (tmp_path / "one" / name).write_bytes((tmp_path / "two" / name).read_bytes())
    with pytest.raises(CAError, match="not issued by the CA"):
        load_ca(tmp_path / "one", CA_KINDS["p256"], None)


def test_load_detects_mismatched_keys(tmp_path: Path) -> None:
    init_ca(tmp_path / "one", CA_KINDS["p256"], None, now=NOW)
    init_ca(tmp_path / "two", CA_KINDS["p256"], None, now=NOW)
    (tmp_path / "one" / CA_KEY).write_bytes((tmp_path / "two" / CA_KEY).read_bytes())
    with pytest.raises(CAError, match="does not belong"):
        load_ca(tmp_path / "one", CA_KINDS["p256"], None)
    (tmp_path / "two" / RA_KEY).write_bytes((tmp_path / "one" / RA_KEY).read_bytes())
    with pytest.raises(CAError, match="ra.key does not belong"):
        load_ca(tmp_path / "two", CA_KINDS["p256"], None)


# --- CertificateAuthority -------------------------------------------------------------------------


def test_getcacert_of_a_self_signed_ca(tmp_path: Path) -> None:
    ca = init_ca(tmp_path / "ca", CA_KINDS["p256"], None, now=NOW)
    assert ca.getcacert_certificates(include_root=True) == [ca.ra_cert, ca.ca_cert]
    assert ca.getcacert_certificates(include_root=False) == [ca.ra_cert, ca.ca_cert]


def test_getcacert_of_a_subordinate_ca(tmp_path: Path, hierarchy: Hierarchy) -> None:
    ca = import_sub(tmp_path, hierarchy)
    assert ca.getcacert_certificates(include_root=True) == [ca.ra_cert, hierarchy.sub, hierarchy.root]
    assert ca.getcacert_certificates(include_root=False) == [ca.ra_cert, hierarchy.sub]


def test_fingerprints(tmp_path: Path) -> None:
    ca = init_ca(tmp_path / "ca", CA_KINDS["p256"], None, now=NOW)
    prints = ca.fingerprints()
    assert re.fullmatch(r"([0-9A-F]{2}:){19}[0-9A-F]{2}", prints["sha1"])
    assert re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", prints["sha256"])
    assert prints["sha256"].replace(":", "") == ca.ca_cert.fingerprint(hashes.SHA256()).hex().upper()


def test_ra_expires_within(tmp_path: Path) -> None:
    ca = init_ca(tmp_path / "ca", CAConfig(key_type="ec", ra_validity_days=100), None, now=NOW)
    assert not ca.ra_expires_within(timedelta(days=30), now=NOW)
    assert ca.ra_expires_within(timedelta(days=30), now=NOW + timedelta(days=71))
    assert ca.ra_expires_within(timedelta(0), now=NOW + timedelta(days=200))


def test_repr_hides_keys(tmp_path: Path) -> None:
    ca = init_ca(tmp_path / "ca", CA_KINDS["p256"], None, now=NOW)
    assert "key" not in repr(ca)


# --- rotate_ra ------------------------------------------------------------------------------------


def test_rotate_ra(tmp_path: Path, config: CAConfig) -> None:
    old = init_ca(tmp_path / "ca", config, b"pw", now=NOW)
    rotated_at = NOW + timedelta(days=600)
    new = rotate_ra(tmp_path / "ca", old, config, b"pw", now=rotated_at)
    assert new.ca_cert == old.ca_cert and new.chain == old.chain
    assert new.ra_cert != old.ra_cert and not key_matches(new.ra_key, old.ra_cert)
    assert new.ra_cert.not_valid_after_utc == rotated_at + timedelta(days=config.ra_validity_days)
    new.ra_cert.verify_directly_issued_by(old.ca_cert)
    loaded = load_ca(tmp_path / "ca", config, b"pw", now=rotated_at)
    assert loaded.ra_cert == new.ra_cert and key_matches(loaded.ra_key, new.ra_cert)
    # The replaced RA keeps its key and decrypts for the grace period, then drops out of the keyring.
    (previous,) = loaded.ra_keyring.previous
    assert previous.cert == old.ra_cert and key_matches(previous.key, old.ra_cert)
    assert previous.usable_until == rotated_at + timedelta(days=config.ra_grace_days)
    assert loaded.ra_keyring.find(old.ra_cert.issuer, old.ra_cert.serial_number, rotated_at) == previous
    after_grace = rotated_at + timedelta(days=config.ra_grace_days, seconds=1)
    assert loaded.ra_keyring.find(old.ra_cert.issuer, old.ra_cert.serial_number, after_grace) is None
    assert load_ca(tmp_path / "ca", config, b"pw", now=after_grace).ra_keyring.previous == ()
    new_files = loaded.ra_keyring.current.files
    assert mode(tmp_path / "ca" / new_files.key) == 0o600
    assert sorted(p.name for p in (tmp_path / "ca").iterdir() if not p.name.startswith(".")) == sorted(
        [CA_KEY, CA_CERT, RA_KEY, RA_CERT, "ra-keyring.json", new_files.cert, new_files.key]
    )


def test_a_second_rotation_destroys_the_ra_whose_grace_is_over(tmp_path: Path) -> None:
    config = CA_KINDS["p256"]
    first = init_ca(tmp_path / "ca", config, None, now=NOW)
    second = rotate_ra(tmp_path / "ca", first, config, None, now=NOW)
    later = NOW + timedelta(days=config.ra_grace_days + 1)
    third = rotate_ra(tmp_path / "ca", load_ca(tmp_path / "ca", config, None, now=later), config, None, now=later)
    assert [ra.cert for ra in third.ra_keyring.previous] == [second.ra_cert]
    assert not (tmp_path / "ca" / RA_KEY).exists() and not (tmp_path / "ca" / RA_CERT).exists()
    reloaded = load_ca(tmp_path / "ca", config, None, now=later)
    assert reloaded.ra_cert == third.ra_cert and [ra.cert for ra in reloaded.ra_keyring.previous] == [second.ra_cert]


def test_rotate_ra_failure_leaves_the_old_keyring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = CA_KINDS["p256"]
    old = init_ca(tmp_path / "ca", config, None, now=NOW)
    real_stage = certfiles.stage

    def failing_stage(path: Path, data: bytes, file_mode: int) -> StagedFile:
        if path.name.startswith("ra-"):
            raise CAError("disk full")
        return real_stage(path, data, file_mode)

    monkeypatch.setattr(certfiles, "stage", failing_stage)
    with pytest.raises(CAError, match="disk full"):
        rotate_ra(tmp_path / "ca", old, config, None, now=NOW)
    assert load_ca(tmp_path / "ca", config, None).ra_cert == old.ra_cert
    listed = sorted(p.name for p in (tmp_path / "ca").iterdir() if not p.name.startswith("."))
    assert listed == sorted([CA_KEY, CA_CERT, RA_KEY, RA_CERT])


# --- import_ca ------------------------------------------------------------------------------------


def import_sub(
    tmp_path: Path,
    hierarchy: Hierarchy,
    *,
    cert_pem: bytes | None = None,
    key: bytes | None = None,
    key_password: bytes | None = None,
    chain_pem: bytes | None = b"",
    passphrase: bytes | None = None,
    now: datetime = NOW,
) -> CertificateAuthority:
    return import_ca(
        tmp_path / "ca",
        CAConfig(name="imported"),
        cert_pem=pem(hierarchy.sub) if cert_pem is None else cert_pem,
        key_pem=pki.private_pem(hierarchy.sub_key) if key is None else key,
        key_password=key_password,
        chain_pem=pem(hierarchy.root) if chain_pem == b"" else chain_pem,
        passphrase=passphrase,
        now=now,
    )


def test_import_with_a_chain(tmp_path: Path, hierarchy: Hierarchy) -> None:
    ca = import_sub(
        tmp_path,
        hierarchy,
        key=pki.private_pem(hierarchy.sub_key, b"transport"),
        key_password=b"transport",
        passphrase=b"at rest",
    )
    assert ca.name == "imported"
    assert ca.ca_cert == hierarchy.sub and ca.chain == (hierarchy.root,)
    ca.ra_cert.verify_directly_issued_by(hierarchy.sub)
    assert (tmp_path / "ca" / CA_KEY).read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert mode(tmp_path / "ca" / CA_KEY) == 0o600
    loaded = load_ca(tmp_path / "ca", CAConfig(name="imported"), b"at rest")
    assert loaded.chain == (hierarchy.root,) and loaded.ra_cert == ca.ra_cert
    with pytest.raises(CAError, match="wrong passphrase"):
        load_ca(tmp_path / "ca", CAConfig(), b"transport")


def test_load_detects_a_broken_chain_file(tmp_path: Path, hierarchy: Hierarchy) -> None:
    import_sub(tmp_path, hierarchy)
    other = make_cert("CN=Elsewhere", generate_private_key("ec", curve="P-256"))
    (tmp_path / "ca" / CHAIN).write_bytes(pem(other))
    with pytest.raises(CAError, match="chain.pem is out of order"):
        load_ca(tmp_path / "ca", CAConfig(), None)


def test_import_a_full_chain_file(tmp_path: Path, hierarchy: Hierarchy) -> None:
    ca = import_sub(tmp_path, hierarchy, cert_pem=pem(hierarchy.sub) + pem(hierarchy.root), chain_pem=None)
    assert ca.chain == (hierarchy.root,)


def test_import_orders_a_three_level_chain(tmp_path: Path, hierarchy: Hierarchy) -> None:
    middle_key = generate_private_key("ec", curve="P-256")
    middle = make_cert("CN=Middle,O=Example", middle_key, (hierarchy.root, hierarchy.root_key))
    low_key = generate_private_key("ec", curve="P-256")
    low = make_cert("CN=Low,O=Example", low_key, (middle, middle_key))
    ca = import_ca(
        tmp_path / "ca",
        CAConfig(),
        cert_pem=pem(low),
        key_pem=pki.private_pem(low_key),
        key_password=None,
        chain_pem=pem(hierarchy.root) + pem(middle) + pem(low),
        passphrase=None,
        now=NOW,
    )
    assert ca.chain == (middle, hierarchy.root)
    assert ca.getcacert_certificates(include_root=False) == [ca.ra_cert, low, middle]
    assert load_ca(tmp_path / "ca", CAConfig(), None).chain == (middle, hierarchy.root)


def test_import_a_self_signed_ca(tmp_path: Path, hierarchy: Hierarchy) -> None:
    root_pem = pki.private_pem(hierarchy.root_key)
    ca = import_sub(tmp_path, hierarchy, cert_pem=pem(hierarchy.root), key=root_pem, chain_pem=None)
    assert ca.chain == () and not (tmp_path / "ca" / CHAIN).exists()
    assert ca.getcacert_certificates(include_root=False) == [ca.ra_cert, hierarchy.root]
    assert ca.ra_cert.signature_hash_algorithm is not None
    assert ca.ra_cert.signature_hash_algorithm.name == "sha384"


def test_import_without_the_root(tmp_path: Path, hierarchy: Hierarchy) -> None:
    ca = import_sub(tmp_path, hierarchy, chain_pem=None)
    assert ca.chain == ()
    assert ca.getcacert_certificates(include_root=False) == [ca.ra_cert, hierarchy.sub]


def test_import_rejects_a_key_mismatch(tmp_path: Path, hierarchy: Hierarchy) -> None:
    with pytest.raises(CAError, match="does not belong to the CA certificate"):
        import_sub(tmp_path, hierarchy, key=pki.private_pem(hierarchy.root_key))
    assert not ca_exists(tmp_path / "ca")


def test_import_rejects_an_encrypted_key_without_password(tmp_path: Path, hierarchy: Hierarchy) -> None:
    with pytest.raises(CAError, match="encrypted but no passphrase"):
        import_sub(tmp_path, hierarchy, key=pki.private_pem(hierarchy.sub_key, b"pw"))


def test_import_rejects_a_non_ca_certificate(tmp_path: Path, hierarchy: Hierarchy) -> None:
    key = generate_private_key("ec", curve="P-256")
    leaf = make_cert("CN=leaf", key, (hierarchy.sub, hierarchy.sub_key), ca=False)
    with pytest.raises(CAError, match="not a CA certificate"):
        import_sub(tmp_path, hierarchy, cert_pem=pem(leaf), key=pki.private_pem(key))


def test_import_rejects_a_ca_without_key_cert_sign(tmp_path: Path, hierarchy: Hierarchy) -> None:
    key = generate_private_key("ec", curve="P-256")
    cert = make_cert("CN=odd", key, (hierarchy.root, hierarchy.root_key), key_usage=pki.key_usage("crl_sign"))
    with pytest.raises(CAError, match="keyCertSign"):
        import_sub(tmp_path, hierarchy, cert_pem=pem(cert), key=pki.private_pem(key))


def test_import_rejects_an_expired_ca(tmp_path: Path, hierarchy: Hierarchy) -> None:
    with pytest.raises(CAError, match="expired"):
        import_sub(tmp_path, hierarchy, now=NOW + timedelta(days=4000))


def test_import_rejects_a_not_yet_valid_ca(tmp_path: Path, hierarchy: Hierarchy) -> None:
    with pytest.raises(CAError, match="not valid before"):
        import_sub(tmp_path, hierarchy, now=NOW - timedelta(days=60))


def test_import_rejects_an_unrelated_chain_certificate(tmp_path: Path, hierarchy: Hierarchy) -> None:
    other_key = generate_private_key("ec", curve="P-256")
    other_root = make_cert("CN=Other Root", other_key)
    with pytest.raises(CAError, match="broken chain: CN=Other Root did not issue"):
        import_sub(tmp_path, hierarchy, chain_pem=pem(other_root))


def test_import_rejects_a_chain_with_a_bad_signature(tmp_path: Path, hierarchy: Hierarchy) -> None:
    impostor_key = generate_private_key("ec", curve="P-384")
    impostor = make_cert("CN=Test Root,O=Example", impostor_key)
    with pytest.raises(CAError, match="signature of CN=Test Issuing CA,O=Example does not verify"):
        import_sub(tmp_path, hierarchy, chain_pem=pem(impostor))


def test_import_rejects_a_non_ca_in_the_chain(tmp_path: Path) -> None:
    top_key = generate_private_key("ec", curve="P-256")
    top = make_cert("CN=Top", top_key, ca=False)
    low_key = generate_private_key("ec", curve="P-256")
    low = make_cert("CN=Low", low_key, (top, top_key))
    with pytest.raises(CAError, match="the chain certificate \\(CN=Top\\) is not a CA"):
        import_ca(
            tmp_path / "ca",
            CAConfig(),
            cert_pem=pem(low),
            key_pem=pki.private_pem(low_key),
            key_password=None,
            chain_pem=pem(top),
            passphrase=None,
            now=NOW,
        )


def test_import_rejects_extra_certificates_above_a_root(tmp_path: Path, hierarchy: Hierarchy) -> None:
    with pytest.raises(CAError, match="broken chain"):
        import_sub(
            tmp_path,
            hierarchy,
            cert_pem=pem(hierarchy.root),
            key=pki.private_pem(hierarchy.root_key),
            chain_pem=pem(hierarchy.sub),
        )


def test_import_refuses_an_existing_ca(tmp_path: Path, hierarchy: Hierarchy) -> None:
    init_ca(tmp_path / "ca", CA_KINDS["p256"], None, now=NOW)
    with pytest.raises(CAError, match="already holds a CA"):
        import_sub(tmp_path, hierarchy)


def test_import_rejects_unreadable_input(tmp_path: Path, hierarchy: Hierarchy) -> None:
    with pytest.raises(CAError, match="the CA certificate does not hold"):
        import_sub(tmp_path, hierarchy, cert_pem=b"garbage")
    with pytest.raises(CAError, match="the CA key does not hold"):
        import_sub(tmp_path, hierarchy, key=b"garbage")
