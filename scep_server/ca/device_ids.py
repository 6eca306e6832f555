"""The device a certificate, or the request for one, names: Intune's managed device id or the Entra ID device id.

An Intune SCEP profile can add the URI subjectAltName ``IntuneDeviceId://<id>`` (its ``{{DeviceId}}``
variable); the Entra ID device id (``{{AAD_Device_ID}}``) can travel in a URI subjectAltName with a
prefix of the administrator's choosing, or in a subject attribute or extension of a configured OID.
A profile's ``device_id`` section says which (:class:`~scep_server.config.model.DeviceIdConfig`).

Every id is a GUID, kept in its canonical lowercase form. A value that is not one, or two values that
differ, name no device: the certificate is then stored without one (and left alone by the device
lifecycle sync), with a warning in the log.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from asn1crypto import core
from cryptography import x509

from scep_server.config.model import DeviceIdConfig, DeviceIdSource
from scep_server.pki.names import printable

__all__ = ["DeviceId", "canonical_guid", "device_id_of"]

log = logging.getLogger(__name__)

_GUID = re.compile(r"^\{?([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})\}?$")
GUID_BYTES = 16
SHOWN_CHARS = 80

CertificateOrRequest = x509.Certificate | x509.CertificateSigningRequest


@dataclass(frozen=True, slots=True)
class DeviceId:
    """A device id as the store keeps it: ``value`` a lowercase GUID, ``kind`` ``intune`` or ``entra``."""

    value: str
    kind: str


def canonical_guid(text: str) -> str | None:
    """``text`` as a lowercase ``8-4-4-4-12`` GUID (braces allowed around it), or None when it is none."""
    match = _GUID.match(text.strip())
    return match.group(1).lower() if match else None


def device_id_of(obj: CertificateOrRequest, config: DeviceIdConfig, *, warn: bool = True) -> DeviceId | None:
    """The device ``obj`` names the way ``config`` says, or None (none named, not a GUID, ambiguous: logged
    as a warning unless ``warn`` is false)."""
    report = log.warning if warn else log.debug
    try:
        found = list(_candidates(obj, config))
    except ValueError as exc:  # a malformed extension: the certificate names nothing we can read
        report("device id: the %s cannot be read (%s); no device id is stored", _where(config), exc)
        return None
    guids = [canonical_guid(value) for value in found]
    bad = [value for value, guid in zip(found, guids, strict=True) if guid is None]
    if bad:
        report("device id: %s %r is not a GUID; no device id is stored", _where(config),
                    printable(bad[0])[:SHOWN_CHARS])
        return None
    distinct = sorted({guid for guid in guids if guid is not None})
    if len(distinct) > 1:
        report("device id: the %s names %d different devices; no device id is stored", _where(config),
                    len(distinct))
        return None
    return DeviceId(distinct[0], config.kind) if distinct else None


def _candidates(obj: CertificateOrRequest, config: DeviceIdConfig) -> Iterator[str]:
    if config.source is DeviceIdSource.ENTRA_OID:
        yield from _by_oid(obj, x509.ObjectIdentifier(config.oid or ""))
        return
    prefix = config.prefix.lower()
    for uri in _sans(obj).get_values_for_type(x509.UniformResourceIdentifier):
        if uri[: len(prefix)].lower() == prefix:
            yield uri[len(prefix):].rstrip("/")


def _by_oid(obj: CertificateOrRequest, oid: x509.ObjectIdentifier) -> Iterator[str]:
    """The subject attributes of type ``oid``, an extension ``oid``, and otherName SANs of type ``oid``."""
    for attribute in obj.subject.get_attributes_for_oid(oid):
        yield attribute.value if isinstance(attribute.value, str) else attribute.value.decode("latin-1")
    try:
        extension = obj.extensions.get_extension_for_oid(oid).value
    except x509.ExtensionNotFound:
        extension = None
    if isinstance(extension, x509.UnrecognizedExtension):
        yield _decoded(extension.value)
    for other in _sans(obj).get_values_for_type(x509.OtherName):
        if other.type_id == oid:
            yield _decoded(other.value)


def _sans(obj: CertificateOrRequest) -> x509.SubjectAlternativeName:
    try:
        return obj.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return x509.SubjectAlternativeName([])


def _decoded(value: bytes) -> str:
    """A GUID's text from an extension's or otherName's value: a DER string, or 16 bytes (DER OCTET STRING
    or raw) in Microsoft's GUID layout, or the text itself."""
    try:
        parsed = core.load(value, strict=True)
    except ValueError:
        parsed = None
    if isinstance(parsed, core.AbstractString):
        return str(parsed.native)
    raw = parsed.native if isinstance(parsed, core.OctetString) else value
    if isinstance(raw, bytes) and len(raw) == GUID_BYTES:
        return str(uuid.UUID(bytes_le=raw))
    return bytes(raw).decode("latin-1") if isinstance(raw, bytes) else str(raw)


def _where(config: DeviceIdConfig) -> str:
    if config.source is DeviceIdSource.ENTRA_OID:
        return f"value of OID {config.oid}"
    return f"{config.prefix} subjectAltName"
