"""The ``pkcs11`` key backend: the CA, RA and OCSP keys live on a PKCS#11 token (an HSM, a smart card,
SoftHSM) and never leave it; the server asks the token to sign and, for the RA, to decrypt.

Its settings (the configuration's ``ca.keys.pkcs11`` section, handed over as ``KeyContext.settings``):

- ``module``: path of the token's PKCS#11 library, e.g. ``/usr/lib/softhsm/libsofthsm2.so``;
- ``token_label`` or ``slot`` (the slot ID, as ``pkcs11-tool -L`` lists it): which token, exactly one;
- ``pin``: the user PIN, a secret reference (``{env: ...}``, ``{file: ...}``, ``{value: ...}``; default
  ``{env: SCEP_PKCS11_PIN}``);
- ``objects``: per key name (``ca.key``, ``ra.key``, ``ocsp.key``) the object ``label`` (default: the
  key name) and optionally its ``id`` in hex, e.g. ``{ca.key: {label: issuing-ca, id: "01"}}``.

How the keys sign the X.509 structures cryptography builds is :mod:`.tbs`; how they sign data, decrypt,
and how a new key replaces the one of its name is :mod:`.pkcs11_key`; sessions, threads and forks are
:mod:`.pkcs11_session`. Keys generated here are made on the token, sensitive and not extractable; an
imported key (``import-ca``) is created on the token the same way and signs from memory only until then.
Keys on a token are protected by the token, so :meth:`Pkcs11Backend.check_at_rest` never refuses.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import pkcs11
from pkcs11 import ObjectClass
from pkcs11 import exceptions as p11_errors

from scep_server.ca.keys import KEY_NAMES, KeyContext, KeySpec, register
from scep_server.ca.keys.generate import PrivateKey
from scep_server.ca.keys.local import LocalKey
from scep_server.ca.keys.pem import parse_private_key
from scep_server.ca.keys.pkcs11_key import (
    KeyObjects,
    ObjectName,
    StagedObjects,
    TokenKey,
    destroy_objects,
    find_private,
    generate_on_token,
    import_to_token,
    read_public_key,
)
from scep_server.ca.keys.pkcs11_session import SETTINGS, TokenAddress, TokenSession, close_sessions, token_session
from scep_server.config import SecretSource
from scep_server.errors import CAError, ConfigError

__all__ = ["Pkcs11Backend", "Pkcs11Settings", "close_sessions"]

DEFAULT_PIN = SecretSource(env="SCEP_PKCS11_PIN")
_SETTING_KEYS = frozenset({"module", "token_label", "slot", "pin", "objects"})
_OBJECT_KEYS = frozenset({"label", "id"})
_HEX_ID = re.compile(r"[0-9A-Fa-f]{2}(?::?[0-9A-Fa-f]{2})*")
_Result = TypeVar("_Result")


@dataclass(frozen=True, slots=True)
class Pkcs11Settings:
    """The checked ``ca.keys.pkcs11`` settings: the token, its PIN and the object of each key name."""

    address: TokenAddress
    pin: str = field(repr=False)
    objects: Mapping[str, ObjectName] = field(default_factory=dict)

    def name_of(self, key_name: str, namespace: str = "") -> ObjectName:
        """The token object of a key: as ``objects`` names it for the directory's own CA, else labelled
        with the namespace and the key name (``<generation>/ca.key``)."""
        if namespace:
            return ObjectName(namespace + key_name)
        return self.objects.get(key_name) or ObjectName(key_name)

    @classmethod
    def parse(cls, raw: Mapping[str, object]) -> Pkcs11Settings:
        """The settings of a configuration section; ConfigError naming the key at fault."""
        _reject_unknown(raw, _SETTING_KEYS, SETTINGS)
        module = raw.get("module")
        if not isinstance(module, str) or not module:
            raise ConfigError(f"{SETTINGS}.module must be the path of the token's PKCS#11 library")
        return cls(_address(module, raw), _pin(raw.get("pin", DEFAULT_PIN)), _objects(raw.get("objects") or {}))


@register("pkcs11")
class Pkcs11Backend:
    """The keys of one CA on a PKCS#11 token; the CA directory keeps only the certificates."""

    def __init__(self, context: KeyContext) -> None:
        self.settings = Pkcs11Settings.parse(context.settings)
        self._namespace = context.namespace
        self._session: TokenSession = token_session(self.settings.address, self.settings.pin)

    def _name(self, key_name: str) -> ObjectName:
        return self.settings.name_of(key_name, self._namespace)

    def describe(self, name: str) -> str:
        return self._name(name).uri(self.settings.address)

    def exists(self, name: str) -> bool:
        template = self._name(name).template(ObjectClass.PRIVATE_KEY)
        # A search read to its end: an abandoned one keeps the session's find operation open.
        return self._run(lambda session: bool(list(session.get_objects(template))), f"look for {name}")

    def load(self, name: str) -> TokenKey:
        object_name, where = self._name(name), self.describe(name)

        def find(session: pkcs11.Session) -> TokenKey:
            private = find_private(session, object_name, where)
            public = read_public_key(session, private, object_name, where)
            objects = KeyObjects(object_name, where)
            objects.remember(session, private, public)
            return TokenKey(self._session, objects, public)

        return self._run(find, f"load {where}")

    def generate(self, spec: KeySpec) -> NewTokenKey:
        pending = ObjectName.pending()
        where = pending.uri(self.settings.address)

        def make(session: pkcs11.Session) -> NewTokenKey:
            private, public = generate_on_token(session, spec, pending)
            objects = KeyObjects(pending, where)
            objects.remember(session, private, public)
            return NewTokenKey(self._session, objects, public, self)

        return self._run(make, f"generate a {spec.key_type} key on the token")

    def adopt(self, data: bytes, password: bytes | None, *, source: str, hint: str) -> AdoptedKey:
        key, _ = parse_private_key(data, password, source=source, hint=hint)
        return AdoptedKey(key, self)

    def check_at_rest(self, action: str, *, allow_unprotected: bool) -> None:
        """Token keys are protected by the token (its PIN, and sensitive, non-extractable objects)."""
        return None

    def destroy(self, name: str) -> None:
        self._run(lambda session: destroy_objects(session, self._name(name)), f"destroy {self.describe(name)}")

    def staged(self, objects: KeyObjects, name: str) -> StagedObjects:
        return StagedObjects(self._session, objects, self._name(name), self.describe(name))

    def store_adopted(self, key: PrivateKey, name: str) -> StagedObjects:
        """``key`` created on the token under a pending name, to become ``name`` on commit."""
        pending = ObjectName.pending()
        self._run(lambda session: import_to_token(session, key, pending), f"import the key as {self.describe(name)}")
        return self.staged(KeyObjects(pending, pending.uri(self.settings.address), key.public_key()), name)

    def _run(self, operation: Callable[[pkcs11.Session], _Result], what: str) -> _Result:
        try:
            return self._session.run(operation)
        except p11_errors.PKCS11Error as exc:
            raise CAError(f"cannot {what}: the token answered {type(exc).__name__}") from exc


@dataclass(frozen=True, slots=True)
class NewTokenKey(TokenKey):
    """A key generated on the token under a pending name: :meth:`stage` names it on commit."""

    _backend: Pkcs11Backend = field(repr=False, compare=False)

    def stage(self, name: str) -> StagedObjects:
        return self._backend.staged(self._objects, name)


@dataclass(frozen=True, slots=True)
class AdoptedKey(LocalKey):
    """A key handed over for import, in memory: :meth:`stage` creates it on the token."""

    backend: Pkcs11Backend = field(repr=False, compare=False)

    def stage(self, name: str) -> StagedObjects:
        return self.backend.store_adopted(self._key, name)


def _address(module: str, raw: Mapping[str, object]) -> TokenAddress:
    label, slot = raw.get("token_label"), raw.get("slot")
    if (label is None) == (slot is None):
        raise ConfigError(f"{SETTINGS}: name the token by token_label or by slot (its slot ID), and by one only")
    if label is not None and (not isinstance(label, str) or not label):
        raise ConfigError(f"{SETTINGS}.token_label must be a non-empty string")
    if slot is not None and (isinstance(slot, bool) or not isinstance(slot, int) or slot < 0):
        raise ConfigError(f"{SETTINGS}.slot must be a slot ID (an integer >= 0)")
    return TokenAddress(module, token_label=label, slot=slot)


def _pin(raw: object) -> str:
    source = raw if isinstance(raw, SecretSource) else SecretSource.parse(raw, f"{SETTINGS}.pin")
    pin = source.resolve()
    if not pin:
        hint = f"set {source.env}" if source.env else f"set {SETTINGS}.pin"
        raise ConfigError(f"{SETTINGS}.pin: no PIN for the token: {hint}")
    return pin


def _objects(raw: object) -> dict[str, ObjectName]:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{SETTINGS}.objects must map key names ({', '.join(KEY_NAMES)}) to label and id")
    _reject_unknown(raw, frozenset(KEY_NAMES), f"{SETTINGS}.objects")
    return {name: _object(name, value) for name, value in raw.items()}


def _object(key_name: str, raw: object) -> ObjectName:
    where = f"{SETTINGS}.objects.{key_name}"
    if raw is None:
        return ObjectName(key_name)
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a mapping with label and id")
    _reject_unknown(raw, _OBJECT_KEYS, where)
    label, object_id = raw.get("label", key_name), raw.get("id")
    if not isinstance(label, str) or not label:
        raise ConfigError(f"{where}.label must be a non-empty string")
    if object_id is None:
        return ObjectName(label)
    if not isinstance(object_id, str) or not _HEX_ID.fullmatch(object_id):
        raise ConfigError(f"{where}.id must be hex bytes, quoted (e.g. \"01\" or \"a1:b2\")")
    return ObjectName(label, bytes.fromhex(object_id.replace(":", "")))


def _reject_unknown(raw: Mapping[str, object], known: frozenset[str], where: str) -> None:
    unknown = sorted(str(key) for key in raw if key not in known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
