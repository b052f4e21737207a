"""Public-key sealing: HPKE (RFC 9180) base mode, X25519 + HKDF-SHA256 + AES-256-GCM.

One construction serves every case where something is encrypted to a key holder: ledger secrets
wrapped to a joining node, and (later) client payloads sealed to the transaction key. The `info`
argument binds the ciphertext to its context (purpose and header), so a ciphertext cannot be moved
to another context. Uses `cryptography`'s own HPKE implementation rather than our own.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric import x25519

SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


class SealError(ValueError):
    """A sealed box that does not open: wrong key, wrong context, or tampered bytes."""


def generate_key() -> x25519.X25519PrivateKey:
    return x25519.X25519PrivateKey.generate()


def public_bytes(key: x25519.X25519PrivateKey | x25519.X25519PublicKey) -> bytes:
    pub = key.public_key() if isinstance(key, x25519.X25519PrivateKey) else key
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def private_bytes(key: x25519.X25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def load_private(raw: bytes) -> x25519.X25519PrivateKey:
    return x25519.X25519PrivateKey.from_private_bytes(raw)


def load_public(raw: bytes) -> x25519.X25519PublicKey:
    if len(raw) != 32:
        raise SealError("X25519 public key must be 32 bytes")
    return x25519.X25519PublicKey.from_public_bytes(raw)


def seal(plaintext: bytes, recipient: bytes | x25519.X25519PublicKey, info: bytes) -> bytes:
    """Encrypt to `recipient`; the result is the encapsulated key followed by the ciphertext."""
    pub = load_public(recipient) if isinstance(recipient, bytes) else recipient
    return SUITE.encrypt(plaintext, pub, info=info)


def open_sealed(sealed: bytes, key: x25519.X25519PrivateKey, info: bytes) -> bytes:
    try:
        return SUITE.decrypt(sealed, key, info=info)
    except (InvalidTag, ValueError) as e:
        raise SealError("sealed payload does not open with this key and context") from e
