"""Distinguished names from configuration strings (RFC 4514), as administrators actually write them.

``x509.Name.from_rfc4514_string`` is strict: attribute types are case-sensitive, only a few short names
are known and no space may follow a separator. OpenSSL prints ``CN = x, O = y`` and admins copy that, so
the string is first normalised (type names upper-cased, spaces around ``,`` ``+`` ``=`` dropped) and then
parsed with a table of the usual attribute names.
"""

from __future__ import annotations

import re

from cryptography import x509
from cryptography.x509.oid import NameOID

ATTRIBUTE_TYPES: dict[str, x509.ObjectIdentifier] = {
    "CN": NameOID.COMMON_NAME,
    "C": NameOID.COUNTRY_NAME,
    "L": NameOID.LOCALITY_NAME,
    "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "S": NameOID.STATE_OR_PROVINCE_NAME,
    "STREET": NameOID.STREET_ADDRESS,
    "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "DC": NameOID.DOMAIN_COMPONENT,
    "UID": NameOID.USER_ID,
    "E": NameOID.EMAIL_ADDRESS,
    "EMAIL": NameOID.EMAIL_ADDRESS,
    "EMAILADDRESS": NameOID.EMAIL_ADDRESS,
    "SERIALNUMBER": NameOID.SERIAL_NUMBER,
    "GN": NameOID.GIVEN_NAME,
    "GIVENNAME": NameOID.GIVEN_NAME,
    "SN": NameOID.SURNAME,
    "SURNAME": NameOID.SURNAME,
    "T": NameOID.TITLE,
    "TITLE": NameOID.TITLE,
    "INITIALS": NameOID.INITIALS,
    "PSEUDONYM": NameOID.PSEUDONYM,
    "POSTALCODE": NameOID.POSTAL_CODE,
    "DNQUALIFIER": NameOID.DN_QUALIFIER,
    "ORGANIZATIONIDENTIFIER": NameOID.ORGANIZATION_IDENTIFIER,
}
_UNESCAPED_TRAILING_SPACE = re.compile(r"(?<!\\)\s+$")


def parse_name(text: str) -> x509.Name:
    """Parse an RFC 4514 string (most specific RDN first, e.g. ``CN=Dev CA,O=Example``).

    Raises ``ValueError`` with a readable message when the string is not a distinguished name.
    """
    try:
        return x509.Name.from_rfc4514_string(_normalise(text), ATTRIBUTE_TYPES)
    except ValueError:
        raise ValueError(f"{text!r} is not an RFC 4514 distinguished name (like 'CN=Name,O=Org')") from None


def _normalise(text: str) -> str:
    return "".join(_normalise_part(part) for part in _split(text.strip()))


def _split(text: str) -> list[str]:
    """Split at unescaped ``,`` and ``+``, keeping the separators as their own items."""
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for char in text:
        if char in ",+" and not escaped:
            parts += ["".join(current), char]
            current = []
        else:
            current.append(char)
        escaped = char == "\\" and not escaped
    return [*parts, "".join(current)]


def _normalise_part(part: str) -> str:
    if part in (",", "+"):
        return part
    kind, equals, value = part.partition("=")
    if not equals:
        return part  # left for the strict parser to reject
    kind = kind.strip()
    if not re.fullmatch(r"\d+(\.\d+)+", kind):
        kind = kind.upper()
    return f"{kind}={_UNESCAPED_TRAILING_SPACE.sub('', value.lstrip())}"
