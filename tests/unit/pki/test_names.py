from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from scep_server.pki.names import parse_name


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("CN=Dev CA,O=Example", "CN=Dev CA,O=Example"),
        ("CN = Dev CA, O = Example", "CN=Dev CA,O=Example"),
        ("cn=dev ca,o=example,c=DE", "CN=dev ca,O=example,C=DE"),
        ("CN=Acme\\, Inc.,O=Acme", "CN=Acme\\, Inc.,O=Acme"),
        ("CN=trailing\\ ,O=x", "CN=trailing\\ ,O=x"),
        ("CN=a+UID=b,DC=example,DC=com", "CN=a+UID=b,DC=example,DC=com"),
        ("2.5.4.3=by oid", "CN=by oid"),
        ("  CN=padded  ", "CN=padded"),
        ("", ""),
    ],
)
def test_parse_name(text: str, expected: str) -> None:
    assert parse_name(text).rfc4514_string() == expected


def test_parse_name_knows_common_attribute_names() -> None:
    name = parse_name("emailAddress=ca@example.com,serialNumber=42,GN=Ada,SN=Lovelace,title=CA,OU=PKI")
    oids = [attribute.oid for attribute in name]
    assert oids == [
        NameOID.ORGANIZATIONAL_UNIT_NAME,
        NameOID.TITLE,
        NameOID.SURNAME,
        NameOID.GIVEN_NAME,
        NameOID.SERIAL_NUMBER,
        NameOID.EMAIL_ADDRESS,
    ]
    assert name.get_attributes_for_oid(NameOID.EMAIL_ADDRESS)[0].value == "ca@example.com"


def test_parse_name_order_matches_rfc4514() -> None:
    name = parse_name("CN=leaf,O=org")
    assert name.rdns[0] == x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "org")])


@pytest.mark.parametrize("text", ["no equals", "FOO=bar", "CN=a,,O=b", "=x"])
def test_parse_name_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not an RFC 4514 distinguished name"):
        parse_name(text)
