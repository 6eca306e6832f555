"""pkcsPKIEnvelopes (RFC 8894 §3.2.2, the CMS EnvelopedData of RFC 5652 §6) with one part changed:
recipients, key transport, content encryption, IV and ciphertext."""

from __future__ import annotations

import os
from collections.abc import Callable

from asn1crypto import cms as asn1_cms
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from scep_server.scep import cms
from scep_server.scep.device_key import DeviceKey
from scep_server.scep.types import DigestAlgorithm
from tests.functional.conftest import CHALLENGE, Device
from tests.functional.hostile.messages import csr_der, sealed
from tests.functional.hostile.support import Env


def reenveloped(change: Callable[[Env, asn1_cms.EnvelopedData], None], *, challenge: str = CHALLENGE
               ) -> Callable[[Env, Device], bytes]:
    """The device's CSR enveloped to the RA, then changed with asn1crypto."""

    def content(env: Env, device: Device) -> bytes:
        info = asn1_cms.ContentInfo.load(sealed(env, csr_der(device.csr(challenge))))
        change(env, info["content"])
        return bytes(info.dump(force=True))

    return content


def _ktri(enveloped: asn1_cms.EnvelopedData) -> asn1_cms.KeyTransRecipientInfo:
    return enveloped["recipient_infos"][0].chosen


def encrypted_key(value: Callable[[Env], bytes]) -> Callable[[Env, asn1_cms.EnvelopedData], None]:
    def change(env: Env, enveloped: asn1_cms.EnvelopedData) -> None:
        _ktri(enveloped)["encrypted_key"] = value(env)

    return change


def wrapped(size: int) -> Callable[[Env], bytes]:
    """A content key of ``size`` bytes correctly wrapped for the RA (the content was encrypted with another)."""
    def wrap(env: Env) -> bytes:
        ra_key = env.server.ca.ra_cert.public_key()
        assert isinstance(ra_key, rsa.RSAPublicKey)
        return ra_key.encrypt(os.urandom(size), padding.PKCS1v15())

    return wrap


def key_transport_oaep(env: Env, enveloped: asn1_cms.EnvelopedData) -> None:
    """RSAES-OAEP declared for a key wrapped with PKCS#1 v1.5."""
    _ktri(enveloped)["key_encryption_algorithm"] = {"algorithm": "rsaes_oaep"}


def rid_serial(env: Env, enveloped: asn1_cms.EnvelopedData) -> None:
    rid = _ktri(enveloped)["rid"].chosen
    rid["serial_number"] = rid["serial_number"].native ^ 1


def rid_key_identifier(env: Env, enveloped: asn1_cms.EnvelopedData) -> None:
    _ktri(enveloped)["rid"] = asn1_cms.RecipientIdentifier({"subject_key_identifier": os.urandom(20)})


def content_algorithm(algorithm: dict[str, object]) -> Callable[[Env, asn1_cms.EnvelopedData], None]:
    def change(env: Env, enveloped: asn1_cms.EnvelopedData) -> None:
        enveloped["encrypted_content_info"]["content_encryption_algorithm"] = algorithm

    return change


def iv(size: int) -> Callable[[Env, asn1_cms.EnvelopedData], None]:
    return content_algorithm({"algorithm": "aes128_cbc", "parameters": os.urandom(size)})


def ciphertext(transform: Callable[[bytes], bytes | None]) -> Callable[[Env, asn1_cms.EnvelopedData], None]:
    def change(env: Env, enveloped: asn1_cms.EnvelopedData) -> None:
        eci = enveloped["encrypted_content_info"]
        eci["encrypted_content"] = transform(bytes(eci["encrypted_content"].native))

    return change


def recipients(make: Callable[[Env, asn1_cms.EnvelopedData], list[asn1_cms.RecipientInfo]]
                ) -> Callable[[Env, asn1_cms.EnvelopedData], None]:
    def change(env: Env, enveloped: asn1_cms.EnvelopedData) -> None:
        enveloped["recipient_infos"] = make(env, enveloped)

    return change


def stranger_then_ra(env: Env, enveloped: asn1_cms.EnvelopedData) -> list[asn1_cms.RecipientInfo]:
    """A second, valid recipientInfo for the RA behind one for someone else (RFC 5652 allows several)."""
    stranger = asn1_cms.ContentInfo.load(sealed(env, b"x", recipient=Device().signer))["content"]
    return [stranger["recipient_infos"][0], enveloped["recipient_infos"][0]]


def garbled_ra_then_ra(env: Env, enveloped: asn1_cms.EnvelopedData) -> list[asn1_cms.RecipientInfo]:
    """Two recipientInfos for the RA, one with a garbled key: the server uses the first that matches, and the
    garbled one sorts first in the DER SET OF (its encryptedKey starts 0x0000)."""
    garbled = asn1_cms.RecipientInfo.load(enveloped["recipient_infos"][0].dump())
    garbled.chosen["encrypted_key"] = b"\x00\x00" + os.urandom(254)
    return [garbled, enveloped["recipient_infos"][0]]


def _ra_isn(env: Env) -> asn1_cms.IssuerAndSerialNumber:
    return cms.issuer_and_serial(env.server.ca.ra_cert)


def kari(env: Env, enveloped: asn1_cms.EnvelopedData) -> list[asn1_cms.RecipientInfo]:
    return [asn1_cms.RecipientInfo({"kari": asn1_cms.KeyAgreeRecipientInfo({
        "version": "v3",
        "originator": {"issuer_and_serial_number": cms.issuer_and_serial(Device().signer)},
        "key_encryption_algorithm": {"algorithm": "aes128_wrap"},
        "recipient_encrypted_keys": [{"rid": {"issuer_and_serial_number": _ra_isn(env)}, "encrypted_key": b"k" * 24}],
    })})]


def kekri(env: Env, enveloped: asn1_cms.EnvelopedData) -> list[asn1_cms.RecipientInfo]:
    return [asn1_cms.RecipientInfo({"kekri": asn1_cms.KEKRecipientInfo({
        "version": "v4", "kekid": {"key_identifier": b"kek-1"},
        "key_encryption_algorithm": {"algorithm": "aes128_wrap"}, "encrypted_key": b"k" * 24,
    })})]


def pwri(env: Env, enveloped: asn1_cms.EnvelopedData) -> list[asn1_cms.RecipientInfo]:
    return [asn1_cms.RecipientInfo({"pwri": asn1_cms.PasswordRecipientInfo({
        "version": "v0", "key_encryption_algorithm": {"algorithm": "aes128_wrap"}, "encrypted_key": b"k" * 24,
    })})]


def inner_content_type(env: Env, enveloped: asn1_cms.EnvelopedData) -> None:
    """encryptedContentInfo.contentType other than id-data (RFC 8894 §3.2.2: it MUST be data)."""
    enveloped["encrypted_content_info"]["content_type"] = "signed_data"


def signed_as_envelope(env: Env, device: Device) -> bytes:
    """A SignedData where the pkcsPKIEnvelope's EnvelopedData belongs."""
    return cms.sign(csr_der(device.csr()), signer_cert=device.signer, signer_key=DeviceKey(device.key),
                    digest=DigestAlgorithm.SHA256, attributes=[])
