"""Keys on a PKCS#11 token, as :class:`~scep_server.ca.keys.Signer` and
:class:`~scep_server.ca.keys.Decrypter`, and how new keys are put in place.

Data is hashed here and the token signs the digest: ``CKM_RSA_PKCS`` over the DigestInfo (RFC 8017
§9.2), ``CKM_ECDSA`` over the bare digest, whose raw r||s becomes a DER ECDSA-Sig-Value. That needs
nothing from a token beyond the two basic mechanisms, and a CRL of a million entries is hashed here
rather than sent to the token. Builders are signed over their to-be-signed bytes (:mod:`.tbs`).

A key is found by its object label and, when configured, its ID. A new key (generated on the token,
or imported into it) is stored under a ``pending`` label first; committing it moves the key that held
the name to ``<label>.previous`` (dropping the one kept there before) and gives the new key the name.
Processes that still sign with the key just replaced keep working until they load the new one: a key
found again (after a fork, in a new session, or when its handle went stale) must have the public key
it had, and is looked for under its name and then under the previous label; a key replaced twice is
an error, never silently another signer.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote

import pkcs11
from asn1crypto import algos, core
from asn1crypto import keys as asn1_keys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.padding import MGF1, OAEP, AsymmetricPadding, PKCS1v15
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509 import ocsp
from pkcs11 import MGF, Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11_errors
from pkcs11.util.ec import encode_named_curve_parameters

from scep_server.ca.keys import KeySpec, PublicKey, SigningHash, signature_hash_for, tbs
from scep_server.ca.keys.generate import PrivateKey, check_key_type, curve_named
from scep_server.ca.keys.pkcs11_session import TokenAddress, TokenSession
from scep_server.errors import CAError

log = logging.getLogger(__name__)

PENDING_PREFIX = "pending."
PREVIOUS_SUFFIX = ".previous"
_KEY_CLASSES = (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY)
_DIGESTS: dict[str, tuple[Mechanism, MGF]] = {
    "sha1": (Mechanism.SHA_1, MGF.SHA1),
    "sha224": (Mechanism.SHA224, MGF.SHA224),
    "sha256": (Mechanism.SHA256, MGF.SHA256),
    "sha384": (Mechanism.SHA384, MGF.SHA384),
    "sha512": (Mechanism.SHA512, MGF.SHA512),
}
# Decryption failures that only say the ciphertext is wrong; anything else is worth a word in the log.
_BAD_CIPHERTEXT = (p11_errors.EncryptedDataInvalid, p11_errors.EncryptedDataLenRange, p11_errors.DataLenRange)
# The token does not do this mechanism with these parameters (SoftHSM 2.6 does OAEP with SHA-1 only).
_UNSUPPORTED = (p11_errors.ArgumentsBad, p11_errors.MechanismInvalid, p11_errors.MechanismParamInvalid)
_warned_unsupported: set[str] = set()  # said once per process: a client may send such envelopes at will
_HANDLE_GONE = (p11_errors.KeyHandleInvalid, p11_errors.ObjectHandleInvalid)
_Result = TypeVar("_Result")
# RFC 7512 §2.3: pk11-pchar beyond the unreserved characters.
_URI_SAFE = ":[]@!$'()*+,=&"


@dataclass(frozen=True, slots=True)
class ObjectName:
    """Which token objects hold a key: those with ``label`` and, when set, ``id``."""

    label: str
    id: bytes | None = None

    def template(self, object_class: ObjectClass) -> dict[Attribute, Any]:
        template: dict[Attribute, Any] = {Attribute.CLASS: object_class, Attribute.LABEL: self.label}
        if self.id is not None:
            template[Attribute.ID] = self.id
        return template

    def uri(self, address: TokenAddress) -> str:
        """The RFC 7512 URI of the private key."""
        token = f"token={_pct(address.token_label)}" if address.token_label is not None else f"slot-id={address.slot}"
        parts = [token, f"object={_pct(self.label)}"]
        if self.id is not None:
            parts.append("id=" + "".join(f"%{byte:02X}" for byte in self.id))
        return "pkcs11:" + ";".join([*parts, "type=private"])

    @property
    def previous(self) -> ObjectName:
        return ObjectName(self.label + PREVIOUS_SUFFIX)

    @classmethod
    def pending(cls) -> ObjectName:
        """A fresh name no other key has: a random label and a random 16-byte ID."""
        return cls(PENDING_PREFIX + secrets.token_hex(8), secrets.token_bytes(16))


def _pct(text: str | None) -> str:
    return quote(text or "", safe=_URI_SAFE)


class KeyObjects:
    """The objects of one key: where they are (moved by a commit), and the private key as last found.

    Only used inside :meth:`TokenSession.run`, under the module's lock.
    """

    def __init__(self, name: ObjectName, where: str, public: PublicKey | None = None) -> None:
        self.name = name
        self.where = where
        self.public = public
        self._found: tuple[pkcs11.Session, pkcs11.PrivateKey] | None = None

    def private(self, session: pkcs11.Session) -> pkcs11.PrivateKey:
        """The private key object in ``session``; CAError when it is gone or is now another key.

        Found again (a new session, a fork), a key that was replaced in the meantime is looked for
        under its name's previous label, where the replacement kept it.
        """
        if self._found is not None and self._found[0] is session:
            return self._found[1]
        if self.public is None:
            private = find_private(session, self.name, self.where)
            self.remember(session, private, read_public_key(session, private, self.name, self.where))
            return private
        for name in (self.name, self.name.previous):
            found = list(session.get_objects(name.template(ObjectClass.PRIVATE_KEY)))
            if len(found) == 1 and isinstance(found[0], pkcs11.PrivateKey):
                if _spki(read_public_key(session, found[0], name, self.where)) == _spki(self.public):
                    self.name = name
                    self.remember(session, found[0], self.public)
                    return found[0]
        raise CAError(f"{self.where} no longer holds the key this process loaded: it was replaced twice; restart")

    def remember(self, session: pkcs11.Session, private: pkcs11.PrivateKey, public: PublicKey) -> None:
        self.public, self._found = public, (session, private)

    def use(self, session: pkcs11.Session, action: Callable[[pkcs11.PrivateKey], _Result]) -> _Result:
        """``action(private key)``; once more with the key found again when its handle went stale."""
        try:
            return action(self.private(session))
        except _HANDLE_GONE:  # the object changed under this handle (another process replaced the key)
            self._found = None
            return action(self.private(session))


@dataclass(frozen=True, slots=True)
class TokenKey:
    """An RSA or EC key on a token, as a Signer (and, for RSA, a Decrypter)."""

    _session: TokenSession = field(repr=False)
    _objects: KeyObjects = field(repr=False)
    _public: PublicKey = field(repr=False)

    def public_key(self) -> PublicKey:
        return self._public

    @property
    def signature_hash(self) -> SigningHash:
        return signature_hash_for(self._public)

    def sign(self, data: bytes, algorithm: hashes.HashAlgorithm | None = None) -> bytes:
        digest_algorithm = algorithm or self.signature_hash
        if digest_algorithm.name not in _DIGESTS:
            raise ValueError(f"cannot sign with {digest_algorithm.name} on a token (supported: {', '.join(_DIGESTS)})")
        digest = _digest(digest_algorithm, data)
        if isinstance(self._public, rsa.RSAPublicKey):
            digest_info = algos.DigestInfo({
                "digest_algorithm": {"algorithm": digest_algorithm.name, "parameters": core.Null()},
                "digest": digest,
            })  # fmt: skip
            return self._sign_on_token(digest_info.dump(), Mechanism.RSA_PKCS)
        raw = self._sign_on_token(digest, Mechanism.ECDSA)
        half = len(raw) // 2
        return encode_dss_signature(int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big"))

    def sign_certificate(
        self, builder: x509.CertificateBuilder, algorithm: SigningHash | None = None
    ) -> x509.Certificate:
        return tbs.sign_certificate(builder, self, algorithm or self.signature_hash)

    def sign_crl(self, builder: x509.CertificateRevocationListBuilder) -> x509.CertificateRevocationList:
        return tbs.sign_crl(builder, self, self.signature_hash)

    def sign_ocsp_response(self, builder: ocsp.OCSPResponseBuilder) -> ocsp.OCSPResponse:
        return tbs.sign_ocsp_response(builder, self, self.signature_hash)

    def decrypt(self, ciphertext: bytes, padding: AsymmetricPadding) -> bytes:
        """RSA decryption on the token; ValueError when it fails, TypeError for an EC key."""
        if not isinstance(self._public, rsa.RSAPublicKey):
            raise TypeError("an EC key cannot decrypt: SCEP key transport needs RSA")
        mechanism, parameter = _decryption_mechanism(padding)

        def decrypt(private: pkcs11.PrivateKey) -> bytes:
            if not isinstance(private, pkcs11.DecryptMixin):
                raise CAError(f"{self._objects.where} may not decrypt (CKA_DECRYPT is false)")
            plaintext = private.decrypt(ciphertext, mechanism=mechanism, mechanism_param=parameter)
            if not isinstance(plaintext, bytes):  # only an iterable of chunks decrypts to an iterator
                raise TypeError("the token returned no plaintext")
            return plaintext

        try:
            return self._session.run(lambda session: self._objects.use(session, decrypt))
        except p11_errors.PKCS11Error as exc:
            self._report_decryption_failure(exc, padding)
            raise ValueError("the token could not decrypt the ciphertext") from None
        except CAError as exc:  # the key cannot be used at all: worth saying, as envelopes hide the reason
            log.warning("%s", exc)
            raise ValueError("the token could not decrypt the ciphertext") from None

    def _report_decryption_failure(self, error: p11_errors.PKCS11Error, padding: AsymmetricPadding) -> None:
        if isinstance(error, _BAD_CIPHERTEXT):
            return
        if not isinstance(error, _UNSUPPORTED):
            log.warning("%s could not decrypt: %s", self._objects.where, type(error).__name__)
            return
        scheme = _scheme_name(padding)
        if scheme not in _warned_unsupported:
            _warned_unsupported.add(scheme)
            log.warning("%s does not decrypt %s (%s): envelopes that use it are rejected", self._objects.where,
                        scheme, type(error).__name__)  # fmt: skip

    def _sign_on_token(self, data: bytes, mechanism: Mechanism) -> bytes:
        def sign(private: pkcs11.PrivateKey) -> bytes:
            if not isinstance(private, pkcs11.SignMixin):
                raise CAError(f"{self._objects.where} may not sign (CKA_SIGN is false)")
            return bytes(private.sign(data, mechanism=mechanism))

        try:
            return self._session.run(lambda session: self._objects.use(session, sign))
        except p11_errors.PKCS11Error as exc:
            raise CAError(f"{self._objects.where} could not sign: {type(exc).__name__}") from exc


@dataclass(frozen=True, slots=True)
class StagedObjects:
    """A key under its pending name: :meth:`commit` gives it ``final``, :meth:`discard` destroys it."""

    session: TokenSession = field(repr=False)
    objects: KeyObjects = field(repr=False)
    final: ObjectName
    final_where: str

    def commit(self) -> None:
        pending = self.objects.name
        try:
            self.session.run(lambda session: _replace(session, pending, self.final, self.final_where))
        except p11_errors.PKCS11Error as exc:
            raise CAError(f"cannot put the new key in place as {self.final_where}: {type(exc).__name__}") from exc
        self.objects.name, self.objects.where = self.final, self.final_where

    def discard(self) -> None:
        try:
            self.session.run(lambda session: _destroy(_objects_named(session, self.objects.name)))
        except p11_errors.PKCS11Error as exc:
            log.warning("could not remove the unused key %s: %s", self.objects.where, type(exc).__name__)


def find_private(session: pkcs11.Session, name: ObjectName, where: str) -> pkcs11.PrivateKey:
    """The one private key named ``name``; CAError when there is none or more than one."""
    found = list(session.get_objects(name.template(ObjectClass.PRIVATE_KEY)))
    if not found:
        raise CAError(f"{where}: no such private key on the token")
    if len(found) > 1:
        raise CAError(f"{where}: {len(found)} private keys have this label; give the key's id to pick one")
    private = found[0]
    if not isinstance(private, pkcs11.PrivateKey):
        raise CAError(f"{where} is not a private key object")
    return private


def read_public_key(session: pkcs11.Session, private: pkcs11.PrivateKey, name: ObjectName, where: str) -> PublicKey:
    """The public half of ``private``: from its own attributes for RSA, from its public key object for EC."""
    key_type = private[Attribute.KEY_TYPE]
    try:
        if key_type == KeyType.RSA:
            return _rsa_public(session, private, name)
        if key_type == KeyType.EC:
            return _ec_public(session, private, name, where)
    except (p11_errors.PKCS11Error, ValueError) as exc:
        raise CAError(f"{where}: cannot read its public key ({type(exc).__name__}: {exc})") from exc
    kind = key_type.name if isinstance(key_type, KeyType) else hex(key_type)
    raise CAError(f"{where} is a {kind} key: a CA or RA key must be RSA or EC")


def _rsa_public(session: pkcs11.Session, private: pkcs11.PrivateKey, name: ObjectName) -> rsa.RSAPublicKey:
    try:
        modulus, exponent = private[Attribute.MODULUS], private[Attribute.PUBLIC_EXPONENT]
    except p11_errors.AttributeTypeInvalid:  # not every token shows them on the private key
        public = _public_object(session, name)
        if public is None:
            raise
        modulus, exponent = public[Attribute.MODULUS], public[Attribute.PUBLIC_EXPONENT]
    return rsa.RSAPublicNumbers(int.from_bytes(exponent, "big"), int.from_bytes(modulus, "big")).public_key()


def _ec_public(
    session: pkcs11.Session, private: pkcs11.PrivateKey, name: ObjectName, where: str
) -> ec.EllipticCurvePublicKey:
    public = _public_object(session, name)
    if public is None:
        raise CAError(f"{where}: the token has no EC public key object with its label (and id)")
    curve = _curve_of(private[Attribute.EC_PARAMS])
    return ec.EllipticCurvePublicKey.from_encoded_point(curve, _ec_point(public[Attribute.EC_POINT], curve))


def _public_object(session: pkcs11.Session, name: ObjectName) -> pkcs11.Object | None:
    found = list(session.get_objects(name.template(ObjectClass.PUBLIC_KEY)))
    return found[0] if len(found) == 1 else None


def _curve_of(parameters: bytes) -> ec.EllipticCurve:
    domain = asn1_keys.ECDomainParameters.load(parameters)
    if domain.name != "named":
        raise ValueError("the key's EC parameters do not name a curve")
    return curve_named(domain.chosen.native)


def _ec_point(value: bytes, curve: ec.EllipticCurve) -> bytes:
    """CKA_EC_POINT is a DER OCTET STRING (PKCS#11 §2.3.3); some tokens give the bare point."""
    if len(value) == 1 + 2 * ((curve.key_size + 7) // 8):
        return value
    return bytes(core.OctetString.load(value).native)


# --- new keys ---------------------------------------------------------------------------------------


def generate_on_token(session: pkcs11.Session, spec: KeySpec, name: ObjectName) -> tuple[pkcs11.PrivateKey, PublicKey]:
    """A sensitive, non-extractable key pair made on the token and stored there under ``name``."""
    check_key_type(spec.key_type)
    common = {Attribute.TOKEN: True, Attribute.LABEL: name.label, Attribute.ID: name.id or b""}
    private_template = {**common, **_private_flags(spec.key_type == "rsa")}
    public_template = {**common, Attribute.PRIVATE: False, Attribute.VERIFY: True, Attribute.WRAP: False}
    if spec.key_type == "rsa":
        public_template |= {Attribute.ENCRYPT: True}
        _, private = session.generate_keypair(
            KeyType.RSA, spec.rsa_bits, store=True, public_template=public_template, private_template=private_template
        )
    else:
        public_template |= {Attribute.EC_PARAMS: _curve_parameters(curve_named(spec.curve))}
        _, private = session.generate_keypair(
            KeyType.EC, store=True, public_template=public_template, private_template=private_template
        )
    return private, read_public_key(session, private, name, name.label)


def import_to_token(session: pkcs11.Session, key: PrivateKey, name: ObjectName) -> None:
    """``key`` created on the token under ``name`` as a sensitive, non-extractable private key, and its public key."""
    common = {Attribute.TOKEN: True, Attribute.LABEL: name.label, Attribute.ID: name.id or b""}
    is_rsa = isinstance(key, rsa.RSAPrivateKey)
    public_attributes, private_attributes = (
        _rsa_attributes(key) if isinstance(key, rsa.RSAPrivateKey) else _ec_attributes(key)
    )
    public = session.create_object({
        **common, **public_attributes, Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.PRIVATE: False,
        Attribute.VERIFY: True, Attribute.ENCRYPT: is_rsa,
    })  # fmt: skip
    try:
        session.create_object({
            **common, **private_attributes, **_private_flags(is_rsa), Attribute.CLASS: ObjectClass.PRIVATE_KEY,
        })  # fmt: skip
    except p11_errors.PKCS11Error:
        public.destroy()
        raise


def _private_flags(decrypts: bool) -> dict[Attribute, Any]:
    return {
        Attribute.PRIVATE: True, Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False, Attribute.SIGN: True,
        Attribute.DECRYPT: decrypts, Attribute.UNWRAP: False, Attribute.DERIVE: False,
    }  # fmt: skip


def _rsa_attributes(key: rsa.RSAPrivateKey) -> tuple[dict[Attribute, Any], dict[Attribute, Any]]:
    numbers = key.private_numbers()
    public = {
        Attribute.KEY_TYPE: KeyType.RSA,
        Attribute.MODULUS: _big(numbers.public_numbers.n),
        Attribute.PUBLIC_EXPONENT: _big(numbers.public_numbers.e),
    }
    private = public | {
        Attribute.PRIVATE_EXPONENT: _big(numbers.d), Attribute.PRIME_1: _big(numbers.p),
        Attribute.PRIME_2: _big(numbers.q), Attribute.EXPONENT_1: _big(numbers.dmp1),
        Attribute.EXPONENT_2: _big(numbers.dmq1), Attribute.COEFFICIENT: _big(numbers.iqmp),
    }  # fmt: skip
    return public, private


def _ec_attributes(key: ec.EllipticCurvePrivateKey) -> tuple[dict[Attribute, Any], dict[Attribute, Any]]:
    parameters = _curve_parameters(key.curve)
    point = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    size = (key.curve.key_size + 7) // 8
    common = {Attribute.KEY_TYPE: KeyType.EC, Attribute.EC_PARAMS: parameters}
    public = common | {Attribute.EC_POINT: core.OctetString(point).dump()}
    private = common | {Attribute.VALUE: key.private_numbers().private_value.to_bytes(size, "big")}
    return public, private


def _curve_parameters(curve: ec.EllipticCurve) -> bytes:
    return encode_named_curve_parameters(curve.name)


def _big(number: int) -> bytes:
    return number.to_bytes((number.bit_length() + 7) // 8 or 1, "big")


# --- putting keys in place --------------------------------------------------------------------------


def _replace(session: pkcs11.Session, pending: ObjectName, final: ObjectName, where: str) -> None:
    """Drop ``final``'s previous key, keep its current one as previous, and name the pending key ``final``."""
    new = _objects_named(session, pending)
    if not any(obj[Attribute.CLASS] == ObjectClass.PRIVATE_KEY for obj in new):
        raise CAError(f"the new key for {where} is no longer on the token (it was discarded): generate another")
    _destroy(_objects_named(session, final.previous))
    _relabel(_objects_named(session, final), final.previous)
    _relabel(new, final)


def destroy_objects(session: pkcs11.Session, name: ObjectName) -> None:
    """Destroy the key pair named ``name`` and the one it replaced (``name``'s previous label)."""
    _destroy(_objects_named(session, name) + _objects_named(session, name.previous))


def _objects_named(session: pkcs11.Session, name: ObjectName) -> list[pkcs11.Object]:
    return [obj for object_class in _KEY_CLASSES for obj in session.get_objects(name.template(object_class))]


def _relabel(objects: list[pkcs11.Object], name: ObjectName) -> None:
    for obj in objects:
        obj[Attribute.LABEL] = name.label
        if name.id is not None:
            obj[Attribute.ID] = name.id


def _destroy(objects: list[pkcs11.Object]) -> None:
    for obj in objects:
        obj.destroy()


def _digest(algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    digest = hashes.Hash(algorithm)
    digest.update(data)
    return digest.finalize()


def _decryption_mechanism(padding: AsymmetricPadding) -> tuple[Mechanism, tuple[Mechanism, MGF, bytes | None] | None]:
    """The PKCS#11 mechanism (and CK_RSA_PKCS_OAEP_PARAMS) for a cryptography padding."""
    if isinstance(padding, PKCS1v15):
        return Mechanism.RSA_PKCS, None
    if isinstance(padding, OAEP) and isinstance(padding.mgf, MGF1):
        # cryptography has no public accessor for the MGF1 hash or the label.
        oaep_hash, mgf_hash = padding.algorithm.name, padding.mgf._algorithm.name
        if oaep_hash in _DIGESTS and mgf_hash in _DIGESTS:
            return Mechanism.RSA_PKCS_OAEP, (_DIGESTS[oaep_hash][0], _DIGESTS[mgf_hash][1], padding._label or None)
    raise ValueError(f"the token cannot decrypt with {padding.name}")


def _scheme_name(padding: AsymmetricPadding) -> str:
    if isinstance(padding, OAEP) and isinstance(padding.mgf, MGF1):
        return f"RSAES-OAEP with {padding.algorithm.name} and MGF1-{padding.mgf._algorithm.name}"
    return padding.name


def _spki(public_key: PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
