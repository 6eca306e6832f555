"""subjectAltName kinds a certificate can carry, and the Microsoft names inside them.

A UPN is an otherName (RFC 5280 §4.2.1.6) of type szOID_NT_PRINCIPAL_NAME holding a UTF8String. A
Windows account's SID may travel as a URI subjectAltName with :data:`SID_URI_PREFIX` (Microsoft's strong
certificate mapping, KB5014754), next to or instead of the SID extension.
"""

from __future__ import annotations

from cryptography import x509

__all__ = ["SAN_TYPES", "SID_URI_PREFIX", "UPN_OID"]

# The names configuration and policy use for the kinds: DNS name, rfc822Name, UPN, URI, IP address.
SAN_TYPES = ("dns", "email", "upn", "uri", "ip")
UPN_OID = x509.ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")  # szOID_NT_PRINCIPAL_NAME
SID_URI_PREFIX = "tag:microsoft.com,2022-09-14:sid:"
