"""CA generations: the CA that issues, the next one a rollover staged (RFC 8894 §3.5.2, GetNextCACert),
and the ones it replaced, which keep answering OCSP and publishing CRLs for what they issued.

On disk, in the CA directory: ``ca-generations.json`` lists every generation (its label and directory)
and names the active one, the staged next one and, optionally, when the next one becomes active. The
first generation is the CA directory itself, labelled with ``ca.name``; each later one lives in
``generations/<label>/`` with the same files (``ca.pem``, the RA keyring, ``ocsp.pem``, ...), its keys
under ``<label>/`` on a shared token. Without the index the directory holds one generation. The index is
replaced in one rename, after everything it names is in place.

A generation's label names its URLs (``/crl/<label>.crl``, ``/ca/<label>.crt``). The subjects of two
generations differ, so an issuer name tells which generation issued a certificate.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from scep_server.ca.authority import (
    CA_CERT,
    CA_KEY,
    RA_KEY,
    CertificateAuthority,
    generation_namespace,
    import_ca,
    init_ca,
    key_backend,
    load_ca,
)
from scep_server.ca.certfiles import load_single_certificate, parse_certificates, save_certificate
from scep_server.ca.material import MATERIAL_BACKDATE
from scep_server.ca.ra_keyring import index_path as keyring_index
from scep_server.config import CAConfig
from scep_server.errors import CAError
from scep_server.files import CERT_FILE_MODE, make_private_dir, write_atomic

log = logging.getLogger(__name__)

GENERATIONS_INDEX = "ca-generations.json"
GENERATIONS_DIR = "generations"
CROSS_CERT = "cross-signed.pem"  # the next CA's key certified by the CA it follows
_HOME = "."
_FORMAT = 1
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # a URL path segment and a directory name


@dataclass(frozen=True, slots=True)
class GenerationRecord:
    """One generation as the index lists it: its label and its directory relative to the CA directory."""

    label: str
    path: str = _HOME
    activated_at: datetime | None = None  # when it became (or becomes) the issuer; None: the first one

    @property
    def is_first(self) -> bool:
        return self.path == _HOME

    def directory(self, ca_dir: Path) -> Path:
        return ca_dir if self.is_first else ca_dir / self.path


@dataclass(frozen=True, slots=True)
class GenerationState:
    """The index: every generation in the order made, the active one, the staged one, and its time."""

    records: tuple[GenerationRecord, ...]
    active: str
    next: str | None = None
    activate_at: datetime | None = None

    def record(self, label: str) -> GenerationRecord:
        found = next((record for record in self.records if record.label == label), None)
        if found is None:
            raise CAError(f"{GENERATIONS_INDEX} names no generation {label!r}")
        return found

    def settled(self, now: datetime) -> GenerationState:
        """The state with an activation whose time has come carried out."""
        if self.next is None or self.active_label(now) == self.active:
            return self
        return replace(self, active=self.next, next=None, activate_at=None)

    def activating(self, at: datetime) -> GenerationState:
        """The staged generation recorded as the issuer from ``at``."""
        records = tuple(replace(record, activated_at=at) if record.label == self.next else record
                        for record in self.records)
        return replace(self, records=records)

    def active_label(self, now: datetime) -> str:
        """The generation that issues at ``now``: the staged one once its activation time has come."""
        if self.next is not None and self.activate_at is not None and now >= self.activate_at:
            return self.next
        return self.active

    def retired(self, now: datetime) -> tuple[str, ...]:
        """The generations before the active one at ``now``, newest first."""
        active = self.active_label(now)
        labels = [record.label for record in self.records]
        return tuple(reversed(labels[: labels.index(active)]))


@dataclass(frozen=True, slots=True)
class Generation:
    """A loaded generation: its CA and where its files are."""

    ca: CertificateAuthority
    directory: Path
    # A retired generation's RAs open requests (from devices that cached it) until this time: its
    # successor's activation plus ca.ra_grace_days. None: no limit but the RA certificates' own.
    decrypts_until: datetime | None = None

    @property
    def label(self) -> str:
        return self.ca.generation

    def decrypts(self, now: datetime) -> bool:
        return self.decrypts_until is None or now < self.decrypts_until


@dataclass(frozen=True, slots=True)
class Generations:
    """The generations a process serves with: ``active`` issues, ``next`` is what GetNextCACert hands
    out, ``retired`` (newest first) still answer for the certificates they issued."""

    active: Generation
    next: Generation | None = None
    retired: tuple[Generation, ...] = ()
    activate_at: datetime | None = field(default=None, compare=False)
    ra_grace: timedelta = field(default=timedelta(days=7), compare=False)

    @classmethod
    def single(cls, ca: CertificateAuthority, directory: Path) -> Generations:
        return cls(Generation(ca, directory))

    def all(self) -> tuple[Generation, ...]:
        """Active first, then the retired ones, then the staged one."""
        return (self.active, *self.retired, *((self.next,) if self.next else ()))

    def at(self, now: datetime) -> Generations:
        """As of ``now``: the staged generation active once its activation time has passed."""
        if self.next is None or self.activate_at is None or now < self.activate_at:
            return self
        replaced = replace(self.active, decrypts_until=self.activate_at + self.ra_grace)
        return Generations(self.next, None, (replaced, *self.retired), ra_grace=self.ra_grace)

    def decrypting(self, now: datetime) -> tuple[Generation, ...]:
        """The generations whose RAs open requests at ``now``: the active one, and those it replaced
        within their grace period. Never the staged one: it is announced, not in use."""
        return (self.active, *(generation for generation in self.retired if generation.decrypts(now)))

    def issued_by(self, issuer: x509.Name) -> Generation | None:
        """The generation whose CA subject is ``issuer``."""
        return next((generation for generation in self.all() if generation.ca.ca_cert.subject == issuer), None)

    def labelled(self, label: str) -> Generation | None:
        return next((generation for generation in self.all() if generation.label == label), None)


def index_path(ca_dir: Path) -> Path:
    return ca_dir / GENERATIONS_INDEX


def read_state(ca_dir: Path, ca_name: str) -> GenerationState:
    """The index of ``ca_dir``; one generation labelled ``ca_name`` when there is none."""
    path = index_path(ca_dir)
    if not path.exists():
        return GenerationState((GenerationRecord(ca_name),), ca_name)
    try:
        document = json.loads(path.read_bytes())
        records = tuple(_record(entry) for entry in document["generations"])
        if len({record.label for record in records}) != len(records):
            raise ValueError("a generation label appears twice")
        state = GenerationState(records, document["active"], document.get("next"), _time(document.get("activate_at")))
        for label in (state.active, state.next):
            if label is not None:
                state.record(label)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CAError(f"{path} is unreadable or malformed: {exc}") from exc
    return state


def write_state(ca_dir: Path, state: GenerationState) -> None:
    document = {
        "format": _FORMAT,
        "generations": [
            {"label": record.label, "path": record.path,
             "activated_at": record.activated_at.isoformat() if record.activated_at else None}
            for record in state.records
        ],
        "active": state.active,
        "next": state.next,
        "activate_at": state.activate_at.isoformat() if state.activate_at else None,
    }
    write_atomic(index_path(ca_dir), json.dumps(document, indent=2).encode() + b"\n", CERT_FILE_MODE)


def load_generations(
    ca_dir: Path, config: CAConfig, passphrase: bytes | None, *, now: datetime | None = None
) -> Generations:
    """Every generation of ``ca_dir``. The active one must load; a staged or retired one that does not is
    logged and left out (it would only serve GetNextCACert, or old certificates' status)."""
    moment = now or datetime.now(UTC)
    grace = timedelta(days=config.ra_grace_days)
    state = read_state(ca_dir, config.name)
    active = _load(ca_dir, state.record(state.active), config, passphrase, moment)
    others = {record.label: _load_or_none(ca_dir, record, config, passphrase, moment)
              for record in state.records if record.label != state.active}
    position = state.records.index(state.record(state.active))
    retired: list[Generation] = []
    for record, successor in reversed(list(zip(state.records[:position], state.records[1:position + 1], strict=True))):
        generation = others.get(record.label)
        if generation is not None:
            until = successor.activated_at + grace if successor.activated_at else None
            retired.append(replace(generation, decrypts_until=until))
    staged = others.get(state.next) if state.next else None
    return Generations(active, staged, tuple(retired), state.activate_at, grace).at(moment)


def issuer_names(ca_dir: Path, ca_name: str, *, now: datetime | None = None) -> list[str]:
    """Every generation's CA subject (RFC 4514, as the store keys certificates), the issuing one first,
    read from the certificates alone: no key is loaded."""
    state = read_state(ca_dir, ca_name)
    active = state.active_label(now or datetime.now(UTC))
    ordered = [state.record(active), *(record for record in state.records if record.label != active)]
    names = []
    for record in ordered:
        path = record.directory(ca_dir) / CA_CERT
        if path.exists():
            names.append(load_single_certificate(path).subject.rfc4514_string())
    if not names:
        raise CAError(f"no CA certificate in {ca_dir}")
    return names


def watched_files(ca_dir: Path, config: CAConfig) -> Iterator[Path]:
    """The files whose change means the generations must be loaded again: the index and each keyring."""
    yield index_path(ca_dir)
    try:
        state = read_state(ca_dir, config.name)
    except CAError:
        return
    for record in state.records:
        yield keyring_index(record.directory(ca_dir))


def stage_next(
    ca_dir: Path,
    config: CAConfig,
    passphrase: bytes | None,
    *,
    subject: x509.Name | None = None,
    cross_sign: bool = False,
    imported: ImportedCa | None = None,
    now: datetime | None = None,
) -> Generation:
    """Create (or import) the next CA in ``generations/<label>/`` and stage it: GetNextCACert hands it
    out from now on; :func:`activate` makes it the issuer. With ``cross_sign`` the active CA also
    certifies the next CA's key (``cross-signed.pem``), for clients that only trust the active one."""
    moment = now or datetime.now(UTC)
    state = read_state(ca_dir, config.name).settled(moment)
    if state.next is not None:
        raise CAError(f"generation {state.next} is staged already: activate it first")
    active = _load(ca_dir, state.record(state.active), config, passphrase, moment).ca
    number, label = _free_label(ca_dir, config, state)
    record = GenerationRecord(label, f"{GENERATIONS_DIR}/{label}")
    directory = record.directory(ca_dir)
    if imported is None:
        subject = subject or next_subject(active.ca_cert.subject, number)
    else:
        subject = parse_certificates(imported.cert_pem, source="the next CA certificate")[0].subject
    _check_new_subject(ca_dir, state, subject)
    make_private_dir(directory.parent)
    try:
        ca = _make_next(directory, config, passphrase, label, subject, imported, moment)
        if cross_sign:
            save_certificate(directory / CROSS_CERT, cross_certificate(active, ca.ca_cert, moment))
        write_state(ca_dir, replace(state, records=(*state.records, record), next=label, activate_at=None))
    except BaseException:
        _remove_unstaged(directory, config, label)
        raise
    log.warning("CA generation %s staged (subject %s); GetNextCACert hands it out", label, ca.issuer_name)
    return Generation(ca, directory)


def _free_label(ca_dir: Path, config: CAConfig, state: GenerationState) -> tuple[int, str]:
    """The next generation's number and label (``<ca.name>-g<n>``, the name reduced to a plain URL
    segment), skipping any whose directory or token keys exist without the index naming them (a stage
    that failed half-way, a restored backup): those are never overwritten."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", config.name).strip("-._")[:80] or "ca"
    number = len(state.records) + 1
    while True:
        label = f"{base}-g{number}"
        taken = {record.label for record in state.records}
        directory = ca_dir / GENERATIONS_DIR / label
        keys = key_backend(directory, None, config.keys, namespace=generation_namespace(label))
        if label not in taken and not directory.exists() and not keys.exists(CA_KEY):
            return number, label
        number += 1


def _make_next(
    directory: Path, config: CAConfig, passphrase: bytes | None, label: str, subject: x509.Name,
    imported: ImportedCa | None, now: datetime,
) -> CertificateAuthority:
    if imported is None:
        return init_ca(directory, config, passphrase, now=now, label=label, subject=subject)
    return import_ca(directory, config, cert_pem=imported.cert_pem, key_pem=imported.key_pem,
                     key_password=imported.key_password, chain_pem=imported.chain_pem, passphrase=passphrase,
                     now=now, label=label)


def _check_new_subject(ca_dir: Path, state: GenerationState, subject: x509.Name) -> None:
    """An issuer name must tell the generations apart: the next CA's subject is none of theirs."""
    for record in state.records:
        path = record.directory(ca_dir) / CA_CERT
        if path.exists() and load_single_certificate(path).subject == subject:
            raise CAError(f"the next CA must have another subject than generation {record.label} "
                          f"({subject.rfc4514_string()}): an issuer name tells the generations apart")


def _remove_unstaged(directory: Path, config: CAConfig, label: str) -> None:
    """What a failed stage wrote: the directory (the index never named it) and the keys on a token."""
    keys = key_backend(directory, None, config.keys, namespace=generation_namespace(label))
    for name in (CA_KEY, RA_KEY):
        with contextlib.suppress(CAError, OSError):
            keys.destroy(name)
    shutil.rmtree(directory, ignore_errors=True)


def activate(ca_dir: Path, config: CAConfig, *, at: datetime | None = None, now: datetime | None = None) -> str:
    """Make the staged generation the issuer, now or at ``at``; its label."""
    moment = now or datetime.now(UTC)
    state = read_state(ca_dir, config.name).settled(moment)
    if state.next is None:
        raise CAError("no CA generation is staged: run `scep-server ca rollover stage` first")
    if at is not None and at > moment:
        write_state(ca_dir, replace(state.activating(at), activate_at=at))
    else:
        write_state(ca_dir, replace(state.activating(moment), active=state.next, next=None, activate_at=None))
    return state.next


def cross_signed(directory: Path) -> x509.Certificate | None:
    path = directory / CROSS_CERT
    return load_single_certificate(path) if path.exists() else None


@dataclass(frozen=True, slots=True)
class ImportedCa:
    """The next CA's certificate and key, made elsewhere (``ca rollover stage --cert --key``)."""

    cert_pem: bytes
    key_pem: bytes = field(repr=False)
    key_password: bytes | None = field(default=None, repr=False)
    chain_pem: bytes | None = None


def next_subject(subject: x509.Name, number: int) -> x509.Name:
    """``subject`` with its common name marked as generation ``number`` (``CN=Corp CA G2``)."""
    attributes: list[x509.NameAttribute[str | bytes]] = []
    marked = False
    for attribute in subject:
        if attribute.oid == NameOID.COMMON_NAME and not marked:
            base = str(attribute.value).removesuffix(f" G{number - 1}")
            attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, f"{base} G{number}"))
            marked = True
        else:
            attributes.append(attribute)
    if not marked:
        raise CAError("the active CA's subject has no common name: give the next CA's subject (--subject)")
    return x509.Name(attributes)


def cross_certificate(issuer: CertificateAuthority, subject_ca: x509.Certificate, now: datetime) -> x509.Certificate:
    """A CA certificate for ``subject_ca``'s name and key, issued by ``issuer`` (RFC 5280 §3.2's cross
    certificate), valid while both are."""
    public_key = subject_ca.public_key()
    not_after = min(subject_ca.not_valid_after_utc, issuer.ca_cert.not_valid_after_utc)
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    issuer_ski = x509.SubjectKeyIdentifier.from_public_key(issuer.ca_cert.public_key())
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject_ca.subject)
        .issuer_name(issuer.ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - MATERIAL_BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_ca_key_usage(subject_ca), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski), critical=False)
    )
    return issuer.ca_key.sign_certificate(builder)


def _ca_key_usage(cert: x509.Certificate) -> x509.KeyUsage:
    """The CA's own keyUsage, or what a CA needs when it has none (an imported certificate may not)."""
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
        )


def _load(
    ca_dir: Path, record: GenerationRecord, config: CAConfig, passphrase: bytes | None, now: datetime
) -> Generation:
    directory = record.directory(ca_dir)
    ca = load_ca(directory, config, passphrase, label="" if record.is_first else record.label, now=now)
    return Generation(ca, directory)


def _load_or_none(
    ca_dir: Path, record: GenerationRecord, config: CAConfig, passphrase: bytes | None, now: datetime
) -> Generation | None:
    try:
        return _load(ca_dir, record, config, passphrase, now)
    except CAError as exc:
        log.error("CA generation %s is left out: %s", record.label, exc)
        return None


def _record(entry: object) -> GenerationRecord:
    if not isinstance(entry, dict):
        raise TypeError("a generation must be an object")
    label, path = entry["label"], entry.get("path", _HOME)
    if not isinstance(label, str) or not isinstance(path, str) or not label:  # the first: ca.name, as it is
        raise ValueError(f"bad generation {label!r} at {path!r}")
    if path != _HOME and not _LABEL.fullmatch(label):  # a directory name: no '..', no odd characters
        raise ValueError(f"bad generation {label!r} at {path!r}")
    if path != _HOME and path != f"{GENERATIONS_DIR}/{label}":
        raise ValueError(f"generation {label!r} must live in {GENERATIONS_DIR}/{label}, not {path!r}")
    return GenerationRecord(label, path, _time(entry.get("activated_at")))


def _time(text: object) -> datetime | None:
    if text is None:
        return None
    if not isinstance(text, str):
        raise TypeError("activate_at must be a string")
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError("activate_at must carry a time zone")
    return moment

