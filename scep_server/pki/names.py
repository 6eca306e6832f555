"""Names: distinguished names from configuration strings, and names that are safe to certify and print.

``x509.Name.from_rfc4514_string`` is strict: attribute types are case-sensitive, only a few short names
are known and no space may follow a separator. OpenSSL prints ``CN = x, O = y`` and admins copy that, so
the string is first normalised (type names upper-cased, spaces around ``,`` ``+`` ``=`` dropped) and then
parsed with a table of the usual attribute names.

A name a device asks for ends up in terminals, logs and admin UIs. :func:`unprintable_character` finds
what a terminal would act on instead of showing (control characters C0, DEL and C1, such as ESC, CR and
LF; the line and paragraph separators; the bidirectional embedding, override and isolate controls), and
:func:`printable` escapes it for display. :func:`named_like` tells whether a name would pass for another
one (the CA's) to a person or to software that compares names loosely.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

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


# --- Printable names -------------------------------------------------------------------------------

# Not control characters (Unicode category Cc) but as disruptive on a terminal or in a log line:
# U+2028/U+2029 break lines, U+202A-U+202E and U+2066-U+2069 reorder what follows them.
_DISRUPTIVE = frozenset("\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_CONTROL_NAMES = {"\x00": "NUL", "\t": "TAB", "\n": "LF", "\r": "CR", "\x1b": "ESC", "\x7f": "DEL"}


def is_unprintable(char: str) -> bool:
    """Whether one character is a control (C0, DEL, C1) or a line-breaking or bidirectional control."""
    return unicodedata.category(char) == "Cc" or char in _DISRUPTIVE


def unprintable_character(text: str) -> str | None:
    """The first character of ``text`` that :func:`is_unprintable`, or None when there is none."""
    return next((char for char in text if is_unprintable(char)), None)


def describe_character(char: str) -> str:
    """``U+001B (ESC)``: a character as a reason can quote it without printing it."""
    name = _CONTROL_NAMES.get(char) or unicodedata.name(char, "")
    return f"U+{ord(char):04X} ({name})" if name else f"U+{ord(char):04X}"


def printable(text: str) -> str:
    """``text`` for display: every unprintable character as RFC 4514 hex escapes of its UTF-8 (``\\1B``).

    A backslash is not escaped here; in an RFC 4514 string it already is (``\\\\``), so there the result
    is unambiguous and still a valid RFC 4514 string.
    """
    if unprintable_character(text) is None:
        return text
    return "".join(_hex_escape(char) if is_unprintable(char) else char for char in text)


def _hex_escape(char: str) -> str:
    return "".join(f"\\{byte:02X}" for byte in char.encode("utf-8"))


# --- Names that pass for others --------------------------------------------------------------------


def comparable(value: str) -> str:
    """An attribute value as RFC 5280 §7.1 compares names: case-folded, whitespace collapsed and trimmed."""
    return " ".join(unicodedata.normalize("NFKC", value).casefold().split())


def _comparable_name(name: x509.Name) -> tuple[frozenset[tuple[str, str]], ...]:
    return tuple(
        frozenset((attribute.oid.dotted_string, _comparable_value(attribute.value)) for attribute in rdn)
        for rdn in name.rdns
    )


def _comparable_value(value: str | bytes) -> str:
    return comparable(value) if isinstance(value, str) else value.hex()


def common_names(name: x509.Name) -> frozenset[str]:
    """The name's commonName values, :func:`comparable`."""
    return frozenset(
        _comparable_value(attribute.value) for attribute in name.get_attributes_for_oid(NameOID.COMMON_NAME)
    )


def named_like(subject: x509.Name, others: Iterable[x509.Name]) -> x509.Name | None:
    """The first of ``others`` that ``subject`` would pass for, or None.

    ``subject`` passes for a name when both are equal compared as RFC 5280 §7.1 does (case and spacing
    ignored), or when it has a commonName equal to one of that name's: software and people that show a
    certificate by its CN would take one for the other.
    """
    mine = _comparable_name(subject)
    my_cns = common_names(subject)
    for other in others:
        if (mine and mine == _comparable_name(other)) or my_cns & common_names(other):
            return other
    return None
