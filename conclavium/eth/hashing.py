"""Keccak-256 (Ethereum's pre-standard SHA-3) and the addresses derived from it."""

from __future__ import annotations

from Crypto.Hash import keccak


def keccak256(data: bytes) -> bytes:
    return keccak.new(data=data, digest_bits=256).digest()


EMPTY_CODE_HASH = keccak256(b"")


def address_hex(raw: bytes) -> str:
    """The lowercase `0x` form the ledger's maps and JSON-RPC answers use."""
    return "0x" + raw.hex()


def checksum_address(raw: bytes) -> str:
    """EIP-55 mixed-case form, as wallets and web3.py want addresses handed to them."""
    lower = raw.hex()
    digest = keccak256(lower.encode()).hex()
    return "0x" + "".join(c.upper() if int(d, 16) >= 8 else c for c, d in zip(lower, digest[:40], strict=True))
