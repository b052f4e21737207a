"""Signing keys: the one place that knows how Conclavium signs and verifies.

Identities (members, users, nodes, the service) are public keys. A key id is the hex SHA-256 of
the key's DER SubjectPublicKeyInfo, so it is the same whether the key arrives raw or in an X.509
certificate. Signatures are raw: Ed25519's 64 bytes, ECDSA's fixed-length r||s (as COSE uses).

Ed25519 verification goes through PyNaCl (libsodium) on every executor: it is twice as fast as
`cryptography` here, and all executors must apply the same acceptance rule for edge-case
signatures or they would disagree on a block.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

import nacl.bindings
import nacl.exceptions
import nacl.signing
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

Algorithm = Literal["Ed25519", "ES256", "ES384"]
ALGORITHMS: tuple[Algorithm, ...] = ("Ed25519", "ES256", "ES384")

_CURVES: dict[str, tuple[type[ec.EllipticCurve], hashes.HashAlgorithm, int]] = {
    "ES256": (ec.SECP256R1, hashes.SHA256(), 32),
    "ES384": (ec.SECP384R1, hashes.SHA384(), 48),
}


class KeyError_(ValueError):
    """A key or certificate that cannot be used (wrong type, malformed, unsupported curve)."""


def _alg_of_public(key: object) -> Algorithm:
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(key, ec.EllipticCurvePublicKey):
        if isinstance(key.curve, ec.SECP256R1):
            return "ES256"
        if isinstance(key.curve, ec.SECP384R1):
            return "ES384"
    raise KeyError_(f"unsupported key type {type(key).__name__}")


@dataclass(frozen=True, eq=False)
class PublicKey:
    """A verifying key. Build with `PublicKey.load` (PEM/DER key or certificate) or `from_spki`."""

    alg: Algorithm
    spki: bytes
    _key: object = field(repr=False)
    _ed25519_raw: bytes | None = field(default=None, repr=False)  # libsodium verifies these fastest

    @classmethod
    def from_crypto(cls, key: object) -> PublicKey:
        alg = _alg_of_public(key)
        spki = key.public_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        raw = None
        if alg == "Ed25519":
            raw = key.public_bytes(  # type: ignore[attr-defined]
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
        return cls(alg, spki, key, raw)

    @classmethod
    def from_spki(cls, spki: bytes) -> PublicKey:
        try:
            return cls.from_crypto(serialization.load_der_public_key(spki))
        except (ValueError, TypeError) as e:
            raise KeyError_(f"malformed public key: {e}") from e

    @classmethod
    def load(cls, data: bytes | str) -> PublicKey:
        """Load a public key or certificate, PEM or DER."""
        if isinstance(data, str):
            data = data.encode()
        try:
            if b"-----BEGIN CERTIFICATE-----" in data:
                return cls.from_crypto(x509.load_pem_x509_certificate(data).public_key())
            if b"-----BEGIN" in data:
                if b"PRIVATE KEY" in data:
                    return PrivateKey.load(data).public_key
                return cls.from_crypto(serialization.load_pem_public_key(data))
            try:
                return cls.from_crypto(serialization.load_der_public_key(data))
            except ValueError:
                return cls.from_crypto(x509.load_der_x509_certificate(data).public_key())
        except KeyError_:
            raise
        except (ValueError, TypeError) as e:
            raise KeyError_(f"cannot load public key: {e}") from e

    @property
    def key_id(self) -> str:
        return hashlib.sha256(self.spki).hexdigest()

    @property
    def pem(self) -> str:
        return self._key.public_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()

    @property
    def crypto_key(self) -> object:
        return self._key

    def verify(self, signature: bytes, data: bytes) -> bool:
        """True when `signature` is this key's raw signature over `data`; never raises."""
        try:
            if self._ed25519_raw is not None:
                if len(signature) != 64:
                    return False
                # the low-level call: `VerifyKey.verify` adds ~8 µs of checks and copies (13 %)
                nacl.bindings.crypto_sign_open(signature + data, self._ed25519_raw)
                return True
            _, digest, size = _CURVES[self.alg]
            if len(signature) != 2 * size:
                return False
            r = int.from_bytes(signature[:size], "big")
            s = int.from_bytes(signature[size:], "big")
            self._key.verify(encode_dss_signature(r, s), data, ec.ECDSA(digest))  # type: ignore[attr-defined]
            return True
        except (nacl.exceptions.BadSignatureError, InvalidSignature, ValueError):
            return False

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and other.spki == self.spki

    def __hash__(self) -> int:
        return hash(self.spki)


@dataclass(frozen=True, eq=False)
class PrivateKey:
    """A signing key. Only its owner's process ever holds one."""

    alg: Algorithm
    _key: object = field(repr=False)
    _nacl: nacl.signing.SigningKey | None = field(default=None, repr=False)

    @classmethod
    def generate(cls, alg: Algorithm = "Ed25519") -> PrivateKey:
        if alg == "Ed25519":
            return cls._wrap(ed25519.Ed25519PrivateKey.generate())
        if alg in _CURVES:
            return cls._wrap(ec.generate_private_key(_CURVES[alg][0]()))
        raise KeyError_(f"unsupported algorithm {alg}")

    @classmethod
    def _wrap(cls, key: object) -> PrivateKey:
        alg = _alg_of_public(key.public_key())  # type: ignore[attr-defined]
        nacl_key = None
        if alg == "Ed25519":
            raw = key.private_bytes(  # type: ignore[attr-defined]
                serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
            )
            nacl_key = nacl.signing.SigningKey(raw)
        return cls(alg, key, nacl_key)

    @classmethod
    def load(cls, data: bytes | str) -> PrivateKey:
        if isinstance(data, str):
            data = data.encode()
        try:
            if b"-----BEGIN" in data:
                key = serialization.load_pem_private_key(data, password=None)
            else:
                key = serialization.load_der_private_key(data, password=None)
        except (ValueError, TypeError) as e:
            raise KeyError_(f"cannot load private key: {e}") from e
        return cls._wrap(key)

    @classmethod
    def from_file(cls, path: str) -> PrivateKey:
        with open(path, "rb") as f:
            return cls.load(f.read())

    @property
    def pem(self) -> bytes:
        return self._key.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    @property
    def public_key(self) -> PublicKey:
        return PublicKey.from_crypto(self._key.public_key())  # type: ignore[attr-defined]

    @property
    def key_id(self) -> str:
        return self.public_key.key_id

    @property
    def crypto_key(self) -> object:
        return self._key

    def sign(self, data: bytes) -> bytes:
        if self._nacl is not None:
            return self._nacl.sign(data).signature
        _, digest, size = _CURVES[self.alg]
        der = self._key.sign(data, ec.ECDSA(digest))  # type: ignore[attr-defined]
        r, s = decode_dss_signature(der)
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()
