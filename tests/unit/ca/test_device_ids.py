"""The device id a certificate or CSR names: Intune's SAN URI, an Entra ID SAN URI, or an OID's value."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from scep_server.ca.device_ids import DeviceId, canonical_guid, device_id_of
from scep_server.config.model import DeviceIdConfig, DeviceIdSource

DEVICE = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
ENTRA_OID = "1.2.840.113556.1.5.284.2"
_KEY = ec.generate_private_key(ec.SECP256R1())


def _certificate(*, sans: tuple[x509.GeneralName, ...] = (), common_name: str = "device",
                 extension: x509.ExtensionType | None = None) -> x509.Certificate:
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(_KEY.public_key())
               .serial_number(1).not_valid_before(now).not_valid_after(now + timedelta(days=1)))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    if extension is not None:
        builder = builder.add_extension(extension, critical=False)
    return builder.sign(_KEY, hashes.SHA256())


def _uri(value: str) -> x509.UniformResourceIdentifier:
    return x509.UniformResourceIdentifier(value)


def test_guids_are_kept_lowercase_and_anything_else_is_none() -> None:
    assert canonical_guid(DEVICE.upper()) == DEVICE
    assert canonical_guid("{" + DEVICE + "}") == DEVICE
    assert canonical_guid(DEVICE.replace("-", "")) is None
    assert canonical_guid("not-a-guid") is None


def test_the_intune_san_uri_names_the_managed_device() -> None:
    certificate = _certificate(sans=(x509.DNSName("device.example"), _uri(f"IntuneDeviceId://{DEVICE.upper()}")))
    assert device_id_of(certificate, DeviceIdConfig()) == DeviceId(DEVICE, "intune")
    assert device_id_of(_certificate(sans=(x509.DNSName("device.example"),)), DeviceIdConfig()) is None


def test_a_value_that_is_not_a_guid_is_ignored_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    certificate = _certificate(sans=(_uri("IntuneDeviceId://device-42"),))
    with caplog.at_level(logging.WARNING):
        assert device_id_of(certificate, DeviceIdConfig()) is None
    assert "'device-42' is not a GUID" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert device_id_of(certificate, DeviceIdConfig(), warn=False) is None
    assert caplog.text == ""


def test_two_different_devices_name_none() -> None:
    other = str(uuid.uuid4())
    certificate = _certificate(sans=(_uri(f"IntuneDeviceId://{DEVICE}"), _uri(f"IntuneDeviceId://{other}")))
    assert device_id_of(certificate, DeviceIdConfig()) is None
    twice = _certificate(sans=(_uri(f"IntuneDeviceId://{DEVICE}"), _uri(f"intunedeviceid://{DEVICE.upper()}")))
    assert device_id_of(twice, DeviceIdConfig()) == DeviceId(DEVICE, "intune")


def test_an_entra_san_uri_with_its_prefix() -> None:
    certificate = _certificate(sans=(_uri(f"IntuneDeviceId://{uuid.uuid4()}"), _uri(f"urn:entra:device:{DEVICE}")))
    config = DeviceIdConfig(source=DeviceIdSource.ENTRA_SAN_URI, uri_prefix="urn:entra:device:")
    assert device_id_of(certificate, config) == DeviceId(DEVICE, "entra")
    default = _certificate(sans=(_uri(f"EntraDeviceId://{DEVICE}"),))
    assert device_id_of(default, DeviceIdConfig(source=DeviceIdSource.ENTRA_SAN_URI)) == DeviceId(DEVICE, "entra")


def test_an_oid_names_the_entra_device_in_the_subject() -> None:
    config = DeviceIdConfig(source=DeviceIdSource.ENTRA_OID, oid="2.5.4.3")
    assert device_id_of(_certificate(common_name=DEVICE), config) == DeviceId(DEVICE, "entra")
    assert device_id_of(_certificate(common_name="laptop"), config) is None


@pytest.mark.parametrize("value", [
    uuid.UUID(DEVICE).bytes_le,  # 16 raw bytes, Microsoft's GUID layout
    core.OctetString(uuid.UUID(DEVICE).bytes_le).dump(),
    core.UTF8String(DEVICE).dump(),
], ids=["raw", "octet-string", "utf8-string"])
def test_an_oid_names_the_entra_device_in_an_extension(value: bytes) -> None:
    config = DeviceIdConfig(source=DeviceIdSource.ENTRA_OID, oid=ENTRA_OID)
    extension = x509.UnrecognizedExtension(x509.ObjectIdentifier(ENTRA_OID), value)
    assert device_id_of(_certificate(extension=extension), config) == DeviceId(DEVICE, "entra")


def test_an_oid_names_the_entra_device_in_an_other_name() -> None:
    config = DeviceIdConfig(source=DeviceIdSource.ENTRA_OID, oid=ENTRA_OID)
    other = x509.OtherName(x509.ObjectIdentifier(ENTRA_OID), core.UTF8String(DEVICE).dump())
    assert device_id_of(_certificate(sans=(other,)), config) == DeviceId(DEVICE, "entra")


def test_a_csr_names_its_device_the_same_way() -> None:
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "device")]))
           .add_extension(x509.SubjectAlternativeName([_uri(f"IntuneDeviceId://{DEVICE}")]), critical=False)
           .sign(_KEY, hashes.SHA256()))
    assert device_id_of(csr, DeviceIdConfig()) == DeviceId(DEVICE, "intune")
