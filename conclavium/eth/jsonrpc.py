"""Ethereum JSON-RPC encodings: quantities, data, block tags, logs blooms, and the error codes
libraries map to their own error types (geth's: -32000 for refused transactions, 3 for reverts)."""

from __future__ import annotations

import re
from typing import Any

from .hashing import keccak256

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL = -32603
SERVER = -32000  # geth's code for refused transactions and failed calls
REVERTED = 3  # execution reverted; data is the revert data
LIMIT_EXCEEDED = -32005

_QTY = re.compile(r"^0x(0|[1-9a-fA-F][0-9a-fA-F]{0,63})$")
_DATA = re.compile(r"^0x([0-9a-fA-F]{2})*$")
TAGS = ("latest", "pending", "safe", "finalized", "earliest")
ERROR_SELECTOR = bytes.fromhex("08c379a0")  # Error(string)
PANIC_SELECTOR = bytes.fromhex("4e487b71")  # Panic(uint256)


class RpcError(Exception):
    def __init__(self, code: int, message: str, data: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            err["data"] = self.data
        return err


def qty(n: int) -> str:
    return hex(n)


def data(b: bytes) -> str:
    return "0x" + b.hex()


def parse_qty(value: object, what: str) -> int:
    """A quantity: `0x` hex without leading zeros (integers are accepted too, as geth does not)."""
    if type(value) is int and 0 <= value < 2**256:
        return value
    if isinstance(value, str) and (_QTY.fullmatch(value) or re.fullmatch(r"^0x0[0-9a-fA-F]{1,63}$", value)):
        return int(value, 16)
    raise RpcError(INVALID_PARAMS, f"invalid argument: {what} is not a hex quantity")


def parse_data(value: object, what: str, size: int | None = None) -> bytes:
    if not isinstance(value, str) or not _DATA.fullmatch(value) or len(value) > 2 + 2 * 256 * 1024:
        raise RpcError(INVALID_PARAMS, f"invalid argument: {what} is not 0x-prefixed hex data")
    b = bytes.fromhex(value[2:])
    if size is not None and len(b) != size:
        raise RpcError(INVALID_PARAMS, f"invalid argument: {what} is not {size} bytes")
    return b


def parse_address(value: object, what: str = "address") -> str:
    return "0x" + parse_data(value, what, 20).hex()


def bloom(logs: list[tuple[str, list[str]]]) -> bytes:
    """The 2048-bit logs bloom over each log's address and topics (yellow paper, 4.3.1)."""
    bits = 0
    for address, topics in logs:
        for item in [bytes.fromhex(address[2:]), *(bytes.fromhex(t[2:]) for t in topics)]:
            h = keccak256(item)
            for i in (0, 2, 4):
                bits |= 1 << (((h[i] << 8) | h[i + 1]) & 2047)
    return bits.to_bytes(256, "big")


def revert_message(output: bytes) -> str:
    """geth's message for a revert: "execution reverted", with the Error(string) reason if any."""
    if output[:4] == ERROR_SELECTOR and len(output) >= 68:
        try:
            length = int.from_bytes(output[36:68], "big")
            reason = output[68 : 68 + length].decode("utf-8")
            return f"execution reverted: {reason}"
        except (UnicodeDecodeError, OverflowError):
            pass
    if output[:4] == PANIC_SELECTOR and len(output) == 36:
        return f"execution reverted: panic code 0x{int.from_bytes(output[4:], 'big'):x}"
    return "execution reverted"
