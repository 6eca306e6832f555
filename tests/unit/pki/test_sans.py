"""subjectAltName kinds and the Microsoft names in them."""

from __future__ import annotations

from asn1crypto import core
from cryptography import x509

from scep_server.pki.sans import SAN_TYPES, SID_URI_PREFIX, UPN_OID


def test_san_types_are_the_kinds_a_certificate_carries() -> None:
    assert SAN_TYPES == ("dns", "email", "upn", "uri", "ip")


def test_upn_is_an_other_name_of_microsofts_principal_name_oid() -> None:
    assert UPN_OID.dotted_string == "1.3.6.1.4.1.311.20.2.3"
    upn = x509.OtherName(UPN_OID, core.UTF8String("alice@contoso.com").dump())
    (found,) = x509.SubjectAlternativeName([upn]).get_values_for_type(x509.OtherName)
    assert found.type_id == UPN_OID
    assert core.UTF8String.load(found.value).native == "alice@contoso.com"


def test_sid_uri_prefix_is_the_strong_mapping_tag() -> None:
    uri = f"{SID_URI_PREFIX}S-1-5-21-1-2-3-500"
    assert uri.startswith("tag:microsoft.com,2022-09-14:sid:")
    assert x509.UniformResourceIdentifier(uri).value.removeprefix(SID_URI_PREFIX) == "S-1-5-21-1-2-3-500"
