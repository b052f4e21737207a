"""Sawtooth's signatures: secp256k1 ECDSA over SHA-256 of the signed bytes, 64-byte compact (r || s)
in lowercase hex, public keys as 33-byte compressed points in hex (`sawtooth_signing`).

Verification calls libsecp256k1 (through coincurve) exactly as Sawtooth's validator does: the compact
signature is parsed as is and verified, so a high-S signature fails here as it fails there.
"""

from __future__ import annotations

import hashlib
import re

import coincurve
from coincurve._libsecp256k1 import ffi, lib
from coincurve.context import GLOBAL_CONTEXT

HEX_KEY = re.compile(r"^(02|03)[0-9a-f]{64}$")
HEX_SIG = re.compile(r"^[0-9a-f]{128}$")


def verify(public_key_hex: str, signature_hex: str, message: bytes) -> bool:
    """True when `signature_hex` is a valid signature of `message` by `public_key_hex`. Any malformed
    key or signature is simply False (never an exception: the input is a client's)."""
    if not HEX_KEY.fullmatch(public_key_hex) or not HEX_SIG.fullmatch(signature_hex):
        return False
    try:
        key = coincurve.PublicKey(bytes.fromhex(public_key_hex))
    except (ValueError, TypeError):
        return False
    sig = ffi.new("secp256k1_ecdsa_signature *")
    if not lib.secp256k1_ecdsa_signature_parse_compact(GLOBAL_CONTEXT.ctx, sig, bytes.fromhex(signature_hex)):
        return False
    digest = hashlib.sha256(message).digest()
    return bool(lib.secp256k1_ecdsa_verify(GLOBAL_CONTEXT.ctx, sig, digest, key.public_key))


def sign(private_key: bytes, message: bytes) -> str:
    """A Sawtooth signature (for tests and tools; clients sign with their own `sawtooth_signing`)."""
    der = coincurve.PrivateKey(private_key).sign(message, hasher=lambda m: hashlib.sha256(m).digest())
    sig = ffi.new("secp256k1_ecdsa_signature *")
    if not lib.secp256k1_ecdsa_signature_parse_der(GLOBAL_CONTEXT.ctx, sig, der, len(der)):
        raise ValueError("libsecp256k1 refused its own signature")
    out = ffi.new("unsigned char[64]")
    lib.secp256k1_ecdsa_signature_serialize_compact(GLOBAL_CONTEXT.ctx, out, sig)
    return bytes(ffi.buffer(out, 64)).hex()


def public_key(private_key: bytes) -> str:
    """The compressed public key of `private_key`, in hex."""
    return coincurve.PrivateKey(private_key).public_key.format(compressed=True).hex()
