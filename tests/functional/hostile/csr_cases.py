"""The PKCS#10 table: requests that are unreadable, or that the issuance policy refuses."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import AttributeOID, ExtendedKeyUsageOID, NameOID

from scep_server.ca.csr import sid_extension_value
from scep_server.pki.usages import CERTIFICATE_REQUEST_AGENT, PKINIT_CLIENT_AUTH
from tests.functional.conftest import CHALLENGE, Device
from tests.functional.hostile.csrs import (
    CN,
    OU,
    ca_named_csr,
    certificate_as_csr,
    challenge_attribute,
    csr_message,
    csr_signed_by_another_key,
    csr_signed_with_md5,
    csr_version,
    csr_with,
    csr_with_garbled_san,
    eku_csr,
    make_name,
    ra_name,
    san_csr,
    subject_csr,
    upn_holding,
)
from tests.functional.hostile.messages import csr_der, octets, raw, scep_attributes, sealed, sign_parts
from tests.functional.hostile.support import (
    BAD_ALG,
    BAD_CHECK,
    BAD_REQUEST,
    CHALLENGE_TEXT,
    R_CHALLENGE,
    R_CSR,
    R_NAMED_LIKE_CA,
    R_NAMED_LIKE_RA,
    R_NO_CHALLENGE,
    R_POP,
    WRONG,
    Case,
    Env,
    scep,
)


def _dsa_csr(env: Env) -> bytes:
    key = dsa.generate_private_key(key_size=1024)
    csr = (x509.CertificateSigningRequestBuilder().subject_name(env.holder.subject)
           .add_attribute(AttributeOID.CHALLENGE_PASSWORD, CHALLENGE.encode()).sign(key, hashes.SHA256()))
    return csr_der(csr)


def _held(csr: Callable[[Env], bytes]) -> Callable[[Env], bytes]:
    def build(env: Env) -> bytes:
        content = sealed(env, csr(env))
        return sign_parts(content, scep_attributes(content), key=env.holder.key, cert=env.holder_cert)

    return build


def _own_rsa_key(bits: int) -> Callable[[Env], bytes]:
    """A PKCSReq signed by the key of its CSR (possession proved), that key of ``bits`` bits."""
    return lambda env: raw(device=Device(key=rsa.generate_private_key(public_exponent=65537, key_size=bits)))(env)


def _rsa(bits: int) -> Callable[[Env], bytes]:
    return lambda env: csr_with(rsa.generate_private_key(public_exponent=65537, key_size=bits), env.holder.subject)


def _ec(curve: ec.EllipticCurve) -> Callable[[Env], bytes]:
    return lambda env: csr_with(ec.generate_private_key(curve), env.holder.subject)


CSR_CASES = [
    Case("a certificate where the CSR belongs", scep(csr_message(certificate_as_csr)), fail_info=BAD_CHECK,
         reason=R_CSR),
    Case("the CSR in PEM", scep(csr_message(lambda d: d.csr().public_bytes(serialization.Encoding.PEM))),
         fail_info=BAD_CHECK, reason=R_CSR),
    Case("the CSR with a trailing octet", scep(csr_message(lambda d: csr_der(d.csr()) + b"\x00")),
         fail_info=BAD_CHECK, reason="ExtraData"),
    Case("the CSR truncated", scep(csr_message(lambda d: csr_der(d.csr())[:-20])), fail_info=BAD_CHECK,
         reason="ShortData"),
    Case("the CSR empty", scep(csr_message(lambda d: b"")), fail_info=BAD_CHECK, reason="ShortData"),
    Case("CSR signed by another key", scep(csr_message(csr_signed_by_another_key)), fail_info=BAD_CHECK,
         reason="certification request signature does not verify"),
    Case("CSR signed with MD5", scep(csr_message(csr_signed_with_md5)), fail_info=BAD_CHECK,
         reason="certification request signature does not verify"),
    Case("CSR version 1 (v2)", scep(csr_message(csr_version(1))), fail_info=BAD_CHECK,
         reason="1 is not a valid CSR version"),
    Case("CSR version -1", scep(csr_message(csr_version(-1))), fail_info=BAD_CHECK,
         reason="PKCS_REQ content: ValueError: error parsing asn1 value"),
    Case("CSR with a garbled subjectAltName extension", scep(csr_message(csr_with_garbled_san)),
         fail_info=BAD_CHECK, reason="PKCS_REQ content: ValueError"),
    Case("CSR subject over 2048 characters", scep(subject_csr(make_name(*[(OU, "u" * 60)] * 40))), fail_info=BAD_CHECK,
         reason="the subject is longer than 2048 characters"),
    Case("no challengePassword", scep(csr_message(lambda d: csr_with(d.key, challenge=None))),
         fail_info=BAD_REQUEST, text=CHALLENGE_TEXT, reason="the request has no challengePassword"),
    Case("challenge empty", scep(csr_message(lambda d: csr_with(d.key, challenge=""))), fail_info=BAD_REQUEST,
         text=CHALLENGE_TEXT, reason=R_CHALLENGE),
    Case("challenge with a trailing space", scep(csr_message(lambda d: csr_with(d.key, challenge=CHALLENGE + " "))),
         fail_info=BAD_REQUEST, text=CHALLENGE_TEXT, reason=R_CHALLENGE),
    Case("challenge in upper case", scep(csr_message(lambda d: csr_with(d.key, challenge=CHALLENGE.upper()))),
         fail_info=BAD_REQUEST, text=CHALLENGE_TEXT, reason=R_CHALLENGE),
    Case("challenge a prefix of the secret", scep(csr_message(lambda d: csr_with(d.key, challenge=CHALLENGE[:-1]))),
         fail_info=BAD_REQUEST, text=CHALLENGE_TEXT, reason=R_CHALLENGE),
    Case("challenge followed by NUL", scep(csr_message(lambda d: csr_with(d.key, challenge=CHALLENGE + "\x00"))),
         fail_info=BAD_REQUEST, text=CHALLENGE_TEXT, reason=R_CHALLENGE),
    Case("challenge of 10 KB", scep(csr_message(lambda d: csr_with(d.key, challenge="c" * 10_240))),
         fail_info=BAD_REQUEST, text=CHALLENGE_TEXT, reason=R_CHALLENGE),
    Case("challenge an INTEGER", scep(csr_message(challenge_attribute(b"\x02\x01\x07"))), fail_info=BAD_REQUEST,
         text=CHALLENGE_TEXT, reason=R_NO_CHALLENGE),
    Case("challenge an OCTET STRING of the secret", scep(csr_message(challenge_attribute(
        octets(CHALLENGE.encode())))), fail_info=BAD_REQUEST, text=CHALLENGE_TEXT, reason=R_NO_CHALLENGE),
    Case("challenge a BMPString of another secret", scep(csr_message(challenge_attribute(
        bytes(core.BMPString(WRONG).dump())))), fail_info=BAD_REQUEST, text=CHALLENGE_TEXT, reason=R_CHALLENGE),
    Case("challengePassword with two values", scep(csr_message(challenge_attribute(
        bytes(core.UTF8String(CHALLENGE).dump()), bytes(core.UTF8String(WRONG).dump())))), fail_info=BAD_CHECK,
         reason="Only single-valued attributes are supported"),
    Case("challengePassword with no value", scep(csr_message(challenge_attribute())), fail_info=BAD_CHECK,
         reason="Only single-valued attributes are supported"),
    Case("RSA 1536 key signing its own request", scep(_own_rsa_key(1536)), fail_info=BAD_REQUEST,
         reason="the RSA key has 1536 bits: this profile needs at least 2048"),
    Case("CSR for an RSA 1536 key, signed by another key (no possession)", scep(csr_message(lambda d: csr_with(
        rsa.generate_private_key(public_exponent=65537, key_size=1536)))), fail_info=BAD_CHECK, reason=R_POP),
    Case("RSA 1536 key, possession proved by our certificate", scep(_held(_rsa(1536))), fail_info=BAD_REQUEST,
         reason="the RSA key has 1536 bits"),
    Case("RSA 1024 key, possession proved by our certificate", scep(_held(_rsa(1024))), fail_info=BAD_REQUEST,
         reason="the RSA key has 1024 bits"),
    Case("EC secp256k1 key (curve not allowed)", scep(_held(_ec(ec.SECP256K1()))), fail_info=BAD_REQUEST,
         reason="curve secp256k1 is not allowed"),
    Case("EC P-256 key on an RSA-only profile", scep(_held(_ec(ec.SECP256R1())), "rsaonly"), fail_info=BAD_REQUEST,
         reason="EC keys are not allowed by this profile"),
    Case("Ed25519 key, possession proved by our certificate",
         scep(_held(lambda env: csr_with(ed25519.Ed25519PrivateKey.generate(), env.holder.subject))),
         fail_info=BAD_ALG, reason="Ed25519 keys are not supported"),
    Case("Ed448 key, possession proved by our certificate",
         scep(_held(lambda env: csr_with(ed448.Ed448PrivateKey.generate(), env.holder.subject))), fail_info=BAD_ALG,
         reason="Ed448 keys are not supported"),
    Case("DSA key, possession proved by our certificate", scep(_held(_dsa_csr)), fail_info=BAD_ALG,
         reason="DSA keys are not supported"),
    Case("empty subject and no subjectAltName", scep(subject_csr(x509.Name([]))), fail_info=BAD_REQUEST,
         reason="there is nothing to certify"),
    Case("subject of about 600 characters", scep(subject_csr(make_name(*[(OU, "u" * 60)] * 10))),
         fail_info=BAD_REQUEST, reason="(max_subject_length)"),
    *(Case(f"{label} in the CN", scep(subject_csr(make_name((CN, f"pc{char}01")))), fail_info=BAD_REQUEST,
           reason=f"CN contains the control character U+{ord(char):04X}")
      for label, char in (("NUL", "\x00"), ("DEL", "\x7f"), ("BEL", "\x07"), ("TAB", "\t"), ("C1 CSI", "\x9b"),
                          ("U+202E RLO", "\u202e"), ("U+2028 LINE SEPARATOR", "\u2028"))),
    Case("control character in an OU", scep(subject_csr(make_name((CN, "pc-01"), (OU, "ops\x1b[31m")))),
         fail_info=BAD_REQUEST, reason="OU contains the control character U+001B (ESC)"),
    Case("subject equal to the RA's", scep(ca_named_csr(ra_name)), fail_info=BAD_REQUEST, reason=R_NAMED_LIKE_RA),
    Case("CN of the RA under another O", scep(ca_named_csr(lambda env: make_name(
        (CN, str(env.server.ca.ra_cert.subject.get_attributes_for_oid(CN)[0].value)), (NameOID.ORGANIZATION_NAME, "x"))
    )), fail_info=BAD_REQUEST, reason=R_NAMED_LIKE_RA),
    Case("the CA's CN as a second CN", scep(subject_csr(make_name((CN, "device-9"), (CN, "Hostile Issuing CA")))),
         fail_info=BAD_REQUEST, reason=R_NAMED_LIKE_CA),
    Case("the CA's CN in full-width letters", scep(subject_csr(make_name((CN, "\uff28\uff4f\uff53\uff54\uff49\uff4c"
                                                                          "\uff45 Issuing CA")))),
         fail_info=BAD_REQUEST, reason=R_NAMED_LIKE_CA),
    Case("100 DNS subjectAltNames", scep(san_csr(*[x509.DNSName(f"h{i}.example") for i in range(100)])),
         fail_info=BAD_REQUEST, reason="asks for 100 subjectAltNames"),
    Case("21 IP subjectAltNames", scep(san_csr(*[x509.IPAddress(ipaddress.ip_address(
        f"192.0.2.{i}")) for i in range(1, 22)])), fail_info=BAD_REQUEST, reason="asks for 21 subjectAltNames"),
    Case("registeredID subjectAltName", scep(san_csr(x509.RegisteredID(x509.ObjectIdentifier("1.2.3.4")))),
         fail_info=BAD_REQUEST, reason="of type rid is not supported"),
    Case("directoryName subjectAltName", scep(san_csr(x509.DirectoryName(make_name((CN, "Administrator"))))),
         fail_info=BAD_REQUEST, reason="of type dirname is not supported"),
    Case("otherName of an unknown type", scep(san_csr(x509.OtherName(
        x509.ObjectIdentifier("1.3.6.1.4.1.99999.7"), bytes(core.UTF8String("x").dump())))), fail_info=BAD_REQUEST,
         reason="of type othername 1.3.6.1.4.1.99999.7 is not supported"),
    Case("UPN holding an INTEGER", scep(upn_holding(b"\x02\x01\x01")), fail_info=BAD_REQUEST,
         reason="UPN subjectAltName does not hold a string"),
    Case("UPN holding a UTF8String with ESC", scep(upn_holding(bytes(core.UTF8String("admin\x1b@corp").dump()))),
         fail_info=BAD_REQUEST, reason="upn subjectAltName contains the control character U+001B"),
    Case("SID URI subjectAltName with an upper-case prefix", scep(san_csr(x509.UniformResourceIdentifier(
        "TAG:MICROSOFT.COM,2022-09-14:SID:S-1-5-21-1-2-3-500"))), fail_info=BAD_REQUEST,
         reason="URI subjectAltName: this profile does not certify SIDs"),
    Case("SID extension on a profile without allow_sid_extension", scep(csr_message(lambda d: csr_with(
        d.key, extensions=[sid_extension_value("S-1-5-21-1004336348-1177238915-682003330-500")]))),
         fail_info=BAD_REQUEST, reason="SID extension (1.3.6.1.4.1.311.25.2): this profile does not certify SIDs"),
    Case("DNS subjectAltName of 300 characters", scep(san_csr(x509.DNSName("a" * 296 + ".com"))),
         fail_info=BAD_REQUEST, reason="dns subjectAltName has 300 characters"),
    Case("URI subjectAltName of 300 characters", scep(san_csr(x509.UniformResourceIdentifier(
        "https://example.com/" + "p" * 280))), fail_info=BAD_REQUEST, reason="uri subjectAltName has 300 characters"),
    Case("email subjectAltName of 300 characters", scep(san_csr(x509.RFC822Name("u" * 288 + "@example.com"))),
         fail_info=BAD_REQUEST, reason="email subjectAltName has 300 characters"),
    Case("DNS subjectAltName with ESC", scep(san_csr(x509.DNSName("a\x1b[2J.example"))), fail_info=BAD_REQUEST,
         reason="dns subjectAltName contains the control character U+001B"),
    Case("IP subjectAltName that is a network", scep(san_csr(x509.IPAddress(
        ipaddress.ip_network("10.0.0.0/8")))), fail_info=BAD_REQUEST, reason="must be one address, not a network"),
    Case("EKU anyExtendedKeyUsage alone", scep(eku_csr(ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE)),
         fail_info=BAD_REQUEST, reason="usage anyExtendedKeyUsage (2.5.29.37.0)"),
    Case("EKU Certificate Request Agent alone", scep(eku_csr(CERTIFICATE_REQUEST_AGENT)), fail_info=BAD_REQUEST,
         reason="(1.3.6.1.4.1.311.20.2.1), which is granted only"),
    Case("EKU Smartcard Logon alone", scep(eku_csr(ExtendedKeyUsageOID.SMARTCARD_LOGON)), fail_info=BAD_REQUEST,
         reason="(1.3.6.1.4.1.311.20.2.2), which is granted only"),
    Case("EKU OCSPSigning alone", scep(eku_csr(ExtendedKeyUsageOID.OCSP_SIGNING)), fail_info=BAD_REQUEST,
         reason="(1.3.6.1.5.5.7.3.9), which is granted only"),
    Case("EKU PKINIT client", scep(eku_csr(PKINIT_CLIENT_AUTH)), fail_info=BAD_REQUEST,
         reason="(1.3.6.1.5.2.3.4), which is granted only"),
    Case("EKU PKINIT KDC", scep(eku_csr(ExtendedKeyUsageOID.KERBEROS_PKINIT_KDC)), fail_info=BAD_REQUEST,
         reason="(1.3.6.1.5.2.3.5), which is granted only"),
    Case("EKU emailProtection", scep(eku_csr(ExtendedKeyUsageOID.EMAIL_PROTECTION)), fail_info=BAD_REQUEST,
         reason="(1.3.6.1.5.5.7.3.4): this profile grants client_auth"),
    Case("EKU timeStamping", scep(eku_csr(ExtendedKeyUsageOID.TIME_STAMPING)), fail_info=BAD_REQUEST,
         reason="(1.3.6.1.5.5.7.3.8): this profile grants client_auth"),
    Case("EKU an unknown OID", scep(eku_csr(x509.ObjectIdentifier("1.3.6.1.4.1.99999.3"))), fail_info=BAD_REQUEST,
         reason="(1.3.6.1.4.1.99999.3): this profile grants client_auth"),
    Case("EKU serverAuth beside clientAuth", scep(eku_csr(ExtendedKeyUsageOID.CLIENT_AUTH,
                                                          ExtendedKeyUsageOID.SERVER_AUTH)), fail_info=BAD_REQUEST,
         reason="(1.3.6.1.5.5.7.3.1): this profile grants client_auth"),
    Case("EKU codeSigning on the legacy profile", scep(eku_csr(ExtendedKeyUsageOID.CODE_SIGNING), "legacy"),
         fail_info=BAD_REQUEST, reason="(1.3.6.1.5.5.7.3.3): this profile grants client_auth"),
    Case("EKU Certificate Request Agent on the RSA-only profile", scep(eku_csr(CERTIFICATE_REQUEST_AGENT),
                                                                        "rsaonly"), fail_info=BAD_REQUEST,
         reason="(1.3.6.1.4.1.311.20.2.1), which is granted only"),
    Case("basicConstraints CA:TRUE with a wrong challenge", scep(csr_message(lambda d: csr_with(
        d.key, challenge=WRONG, extensions=[x509.BasicConstraints(ca=True, path_length=None)]))),
         fail_info=BAD_REQUEST, text=CHALLENGE_TEXT, reason=R_CHALLENGE),
]
