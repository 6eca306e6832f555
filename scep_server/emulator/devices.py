"""Intune's managed devices and Entra ID's devices: what the admin API changes and Graph shows.

A device created through the admin API is both an Intune ``managedDevice`` and the Entra ID ``device``
it is joined as, linked as Graph links them: the managed device's ``azureADDeviceId`` is the Entra
device's ``deviceId`` (not its object ``id``). Afterwards each side changes on its own, as in the real
services: deleting the device in Intune leaves its Entra device, and the reverse.

Entra ID changes are tracked for Graph's delta query (``devices/delta``): every change (creation,
property change, deletion) takes the next number of one sequence. A delta round snapshots what it
answers and pages through it with skip tokens; its last page hands out a delta token remembering the
sequence number the round was computed at. The next round answers the devices changed since then, as
they are now, and those deleted since as ``{"id", "@removed": {"reason"}}``: ``deleted`` for a device
gone for good, ``changed`` for one deleted but restorable (Graph's two reasons). Skip and delta tokens
are opaque and may be used again (a client retrying after a 429 repeats its link); delta tokens last
seven days on the emulator's clock, as Graph's identity delta links do, after which (or for a token
this emulator never issued) Graph answers 400 ``syncStateNotFound``.

Not locked by its owner: ``DeviceDirectory`` has its own lock.
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from scep_server.emulator.odata import GraphQueryError, matches, selected
from scep_server.intune.contract import ChallengeSpec

MANAGEMENT_STATES = ("managed", "retirePending", "retireFailed", "wipePending", "wipeFailed", "unhealthy",
                     "deletePending", "retireIssued", "wipeIssued", "wipeCanceled", "retireCanceled", "discovered")
DELTA_TOKEN_LIFETIME = 7 * 86400
DEFAULT_PAGE_SIZE = 100
INTUNE_DEVICE_ID_URI = "IntuneDeviceId://{}"  # the SAN URI an Intune SCEP profile adds for the device
_MAX_SESSIONS = 1000
SYNC_STATE_NOT_FOUND = ("The sync state generation is not found. The delta token is expired and data must be "
                        "synchronized again.")


class UnknownDevice(LookupError):
    """No device has that id (admin API: 404)."""


class DeviceStateError(ValueError):
    """The change does not apply to the device as it is, e.g. it is already deleted (admin API: 409)."""


def graph_time(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(slots=True)
class ManagedDevice:
    """An Intune managedDevice (the properties a CA's lifecycle check reads, and a few more)."""

    id: str
    device_name: str
    operating_system: str
    os_version: str
    azure_ad_device_id: str
    user_principal_name: str
    enrolled: float
    management_state: str = "managed"

    def to_graph(self) -> dict[str, Any]:
        user_id = str(uuid.uuid5(uuid.NAMESPACE_URL, self.user_principal_name)) if self.user_principal_name else ""
        return {"id": self.id, "userId": user_id, "deviceName": self.device_name,
                "managedDeviceOwnerType": "company", "managementState": self.management_state,
                "enrolledDateTime": graph_time(self.enrolled), "lastSyncDateTime": graph_time(self.enrolled),
                "operatingSystem": self.operating_system, "osVersion": self.os_version,
                "complianceState": "compliant", "managementAgent": "mdm", "azureADRegistered": True,
                "azureADDeviceId": self.azure_ad_device_id, "deviceRegistrationState": "registered",
                "userPrincipalName": self.user_principal_name, "emailAddress": self.user_principal_name}


@dataclass(slots=True)
class EntraDevice:
    """An Entra ID device: ``id`` is its directory object id, ``device_id`` the id the device holds."""

    id: str
    device_id: str
    display_name: str
    operating_system: str
    os_version: str
    registered: float
    account_enabled: bool = True

    def to_graph(self) -> dict[str, Any]:
        return {"id": self.id, "deviceId": self.device_id, "accountEnabled": self.account_enabled,
                "displayName": self.display_name, "operatingSystem": self.operating_system,
                "operatingSystemVersion": self.os_version, "trustType": "AzureAd",
                "registrationDateTime": graph_time(self.registered), "deletedDateTime": None}


MANAGED_DEVICE_PROPERTIES = tuple(ManagedDevice("", "", "", "", "", "", 0).to_graph())
ENTRA_DEVICE_PROPERTIES = tuple(EntraDevice("", "", "", "", "", 0).to_graph())


@dataclass(slots=True)
class _Link:
    """One device as the admin API created it; ``entra_removal`` is the delta reason once deleted in Entra."""

    intune_device_id: str
    entra_device_id: str
    entra_object_id: str
    name: str
    os: str
    entra_removal: str | None = None


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing or a delta round: its entities and the token of the next page or round."""

    items: list[dict[str, Any]]
    skip_token: str | None = None
    delta_token: str | None = None


@dataclass(frozen=True, slots=True)
class _Session:
    kind: str  # "delta" or the listing's name: a skip token only continues what it was issued for
    items: list[dict[str, Any]]
    size: int
    sequence: int = 0
    select: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class _DeltaToken:
    sequence: int
    select: tuple[str, ...] | None
    issued: float


@dataclass(slots=True)
class _Changes:
    """Entra ID's change log: the sequence number of each object's last change, deletions with their reason."""

    sequence: int = 0
    changed: dict[str, int] = field(default_factory=dict)
    removed: dict[str, tuple[int, str]] = field(default_factory=dict)

    def touch(self, object_id: str) -> None:
        self.sequence += 1
        self.changed[object_id] = self.sequence

    def remove(self, object_id: str, reason: str) -> None:
        self.sequence += 1
        self.changed.pop(object_id, None)
        self.removed[object_id] = (self.sequence, reason)


class DeviceDirectory:
    """Intune's managed devices and Entra ID's devices in memory, with Entra ID's change log."""

    def __init__(self, clock: Callable[[], float], *, page_size: int = DEFAULT_PAGE_SIZE) -> None:
        self.clock = clock
        self.page_size = page_size
        self._lock = threading.Lock()
        self._links: list[_Link] = []
        self._managed: dict[str, ManagedDevice] = {}
        self._entra: dict[str, EntraDevice] = {}
        self._changes = _Changes()
        self._sessions: dict[str, _Session] = {}
        self._delta_tokens: dict[str, _DeltaToken] = {}

    # --- the admin API ---

    def create(
        self, name: str, os: str, *, intune_device_id: str | None = None, entra_device_id: str | None = None,
        os_version: str = "", user_principal_name: str = "",
    ) -> dict[str, Any]:
        """A managed device and its Entra device (ids generated when not given); returns its admin view."""
        intune_id = _guid("intune device id", intune_device_id)
        entra_id = _guid("entra device id", entra_device_id)
        if not name or not os:
            raise ValueError("a device needs a name and an os")
        now = self.clock()
        with self._lock:
            taken = {i for link in self._links for i in (link.intune_device_id, link.entra_device_id)}
            if intune_id in taken or entra_id in taken:
                raise DeviceStateError("a device with that id already exists")
            link = _Link(intune_id, entra_id, str(uuid.uuid4()), name, os)
            self._links.append(link)
            self._managed[intune_id] = ManagedDevice(intune_id, name, os, os_version, entra_id, user_principal_name,
                                                     enrolled=now)
            self._entra[link.entra_object_id] = EntraDevice(link.entra_object_id, entra_id, name, os, os_version,
                                                            registered=now)
            self._changes.touch(link.entra_object_id)
            return self._view(link)

    def views(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._view(link) for link in self._links]

    def get(self, device: str) -> dict[str, Any]:
        """The admin view of the device named by its Intune id, Entra device id or Entra object id."""
        with self._lock:
            return self._view(self._find(device))

    def intune_device_id(self, device: str) -> str:
        with self._lock:
            return self._find(device).intune_device_id

    def delete_intune(self, device: str) -> dict[str, Any]:
        """The device is deleted in Intune: Graph answers 404 for its managedDevice from now on."""
        with self._lock:
            link = self._find(device)
            self._managed_of(link)
            del self._managed[link.intune_device_id]
            return self._view(link)

    def set_management_state(self, device: str, state: str) -> dict[str, Any]:
        """E.g. ``retirePending`` (an admin retired the device) or ``wipePending``."""
        if state not in MANAGEMENT_STATES:
            raise ValueError(f"managementState must be one of {', '.join(MANAGEMENT_STATES)}")
        with self._lock:
            link = self._find(device)
            self._managed_of(link).management_state = state
            return self._view(link)

    def delete_entra(self, device: str, *, restorable: bool = False) -> dict[str, Any]:
        """The device is deleted in Entra ID: 404 from Graph, ``@removed`` in the next delta round."""
        with self._lock:
            link = self._find(device)
            self._entra_of(link)
            del self._entra[link.entra_object_id]
            link.entra_removal = "changed" if restorable else "deleted"
            self._changes.remove(link.entra_object_id, link.entra_removal)
            return self._view(link)

    def set_account_enabled(self, device: str, enabled: bool) -> dict[str, Any]:
        """Disable or re-enable the Entra device (``accountEnabled``); a change even when it was already so."""
        with self._lock:
            link = self._find(device)
            self._entra_of(link).account_enabled = enabled
            self._changes.touch(link.entra_object_id)
            return self._view(link)

    def forget_delta_tokens(self) -> None:
        """Every skip and delta token issued so far answers syncStateNotFound from now on."""
        with self._lock:
            self._sessions.clear()
            self._delta_tokens.clear()

    # --- Graph ---

    def managed_device(self, device_id: str) -> dict[str, Any] | None:
        with self._lock:
            managed = self._managed.get(device_id.lower())
            return None if managed is None else managed.to_graph()

    def managed_devices(self, terms: list[tuple[str, str]] | None, select: tuple[str, ...] | None,
                        size: int) -> Page:
        with self._lock:
            graph = [d.to_graph() for d in self._managed.values()]
            items = [selected(d, select) for d in graph if matches(d, terms)]
            return self._page(_Session("managedDevices", items, size))

    def entra_device(self, *, object_id: str | None = None, device_id: str | None = None) -> dict[str, Any] | None:
        with self._lock:
            for entra in self._entra.values():
                if entra.id == (object_id or "").lower() or entra.device_id == (device_id or "").lower():
                    return entra.to_graph()
            return None

    def entra_devices(self, terms: list[tuple[str, str]] | None, select: tuple[str, ...] | None, size: int) -> Page:
        with self._lock:
            graph = [d.to_graph() for d in self._entra.values()]
            items = [selected(d, select) for d in graph if matches(d, terms)]
            return self._page(_Session("devices", items, size))

    def next_page(self, kind: str, skip_token: str) -> Page:
        """The page after the one that handed out ``skip_token`` (as large as the first page)."""
        with self._lock:
            session = self._sessions.get(skip_token)
            if session is None or session.kind != kind:
                code = "syncStateNotFound" if kind == "delta" else "BadRequest"
                raise GraphQueryError(SYNC_STATE_NOT_FOUND if kind == "delta" else "The $skiptoken is not valid.",
                                      code)
            return self._page(session)

    def delta(self, delta_token: str | None, select: tuple[str, ...] | None, size: int) -> Page:
        """A delta round: every device (no token), nothing (``latest``), or what changed since ``delta_token``."""
        with self._lock:
            if delta_token is None:
                items = [selected(d.to_graph(), select) for d in self._entra.values()]
                session = _Session("delta", items, size, self._changes.sequence, select)
            elif delta_token == "latest":
                session = _Session("delta", [], size, self._changes.sequence, select)
            else:
                token = self._delta_tokens.get(delta_token)
                if token is None or self.clock() >= token.issued + DELTA_TOKEN_LIFETIME:
                    raise GraphQueryError(SYNC_STATE_NOT_FOUND, "syncStateNotFound")
                session = _Session("delta", self._changed_since(token.sequence, token.select), size,
                                   self._changes.sequence, token.select)
            return self._page(session)

    # --- inside the lock ---

    def _changed_since(self, sequence: int, select: tuple[str, ...] | None) -> list[dict[str, Any]]:
        changes = [(n, object_id) for object_id, n in self._changes.changed.items() if n > sequence]
        changes += [(n, object_id) for object_id, (n, _) in self._changes.removed.items() if n > sequence]
        items = []
        for _, object_id in sorted(changes):
            entra = self._entra.get(object_id)
            if entra is not None:
                items.append(selected(entra.to_graph(), select))
            else:
                items.append({"id": object_id, "@removed": {"reason": self._changes.removed[object_id][1]}})
        return items

    def _page(self, session: _Session) -> Page:
        items, rest = session.items[: session.size], session.items[session.size :]
        if rest:
            return Page(items, skip_token=self._remember(self._sessions, dataclasses.replace(session, items=rest)))
        if session.kind != "delta":
            return Page(items)
        token = _DeltaToken(session.sequence, session.select, self.clock())
        return Page(items, delta_token=self._remember(self._delta_tokens, token))

    @staticmethod
    def _remember(store: dict[str, Any], value: Any) -> str:
        token = secrets.token_urlsafe(24)
        store[token] = value
        while len(store) > _MAX_SESSIONS:
            del store[next(iter(store))]
        return token

    def _find(self, device: str) -> _Link:
        wanted = device.lower()
        for link in self._links:
            if wanted in (link.intune_device_id, link.entra_device_id, link.entra_object_id):
                return link
        raise UnknownDevice(f"no device {device!r}")

    def _managed_of(self, link: _Link) -> ManagedDevice:
        managed = self._managed.get(link.intune_device_id)
        if managed is None:
            raise DeviceStateError(f"the device {link.intune_device_id} is deleted in Intune")
        return managed

    def _entra_of(self, link: _Link) -> EntraDevice:
        entra = self._entra.get(link.entra_object_id)
        if entra is None:
            raise DeviceStateError(f"the device {link.entra_device_id} is deleted in Entra ID")
        return entra

    def _view(self, link: _Link) -> dict[str, Any]:
        managed, entra = self._managed.get(link.intune_device_id), self._entra.get(link.entra_object_id)
        return {"intuneDeviceId": link.intune_device_id, "entraDeviceId": link.entra_device_id,
                "entraObjectId": link.entra_object_id, "name": link.name, "os": link.os,
                "managementState": managed.management_state if managed else None,
                "accountEnabled": entra.account_enabled if entra else None,
                "intuneDeleted": managed is None, "entraDeleted": entra is None, "entraRemoval": link.entra_removal}


def device_challenge_spec(spec: ChallengeSpec, intune_device_id: str) -> ChallengeSpec:
    """``spec`` for the device: its Intune id as the challenge's device id, and the SAN URI
    ``IntuneDeviceId://<id>`` an Intune SCEP profile adds (once)."""
    uri = ("uri", INTUNE_DEVICE_ID_URI.format(intune_device_id))
    sans = spec.sans if uri in spec.sans else (*spec.sans, uri)
    return dataclasses.replace(spec, device_id=intune_device_id, sans=sans)


def _guid(name: str, value: str | None) -> str:
    if value is None:
        return str(uuid.uuid4())
    try:
        return str(uuid.UUID(value))
    except (ValueError, TypeError, AttributeError):
        raise ValueError(f"the {name} must be a GUID, not {value!r}") from None
