"""Development accounts for a local network, like anvil's: secp256k1 keys written in clear to the
network's directory (development only), funded by the members' vote that enables Ethereum."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import coincurve

from .hashing import checksum_address, keccak256

DEV_BALANCE = 10_000 * 10**18


def address_of(private_key: bytes) -> str:
    """The account's address, EIP-55 checksummed (as anvil prints them)."""
    public = coincurve.PrivateKey(private_key).public_key.format(compressed=False)[1:]
    return checksum_address(keccak256(public)[12:])


def create(path: Path, count: int) -> list[dict[str, str]]:
    keys = [os.urandom(32) for _ in range(count)]
    accounts = [{"address": address_of(k), "private_key": "0x" + k.hex()} for k in keys]
    path.write_text(json.dumps(accounts, indent=2))
    path.chmod(0o600)
    return accounts


def load(path: Path) -> list[dict[str, Any]]:
    return list(json.loads(path.read_text()))
