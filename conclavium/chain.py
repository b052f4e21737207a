"""The hash-chain rule: which block may follow the current tip.

Executors apply it to every block they read, and the sequencer applies the same rule when it
re-reads the stream tail, so both skip the same foreign or malformed blocks. The block's timestamp
is not part of the rule: it is the sequencer's claim, which executors bound by their own signed
clocks when they execute the block (`services/executor/ledger_clock.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from conclavium.block import BLOCK_VERSION, GENESIS_PREV, Block, block_hash, decode_block


@dataclass
class Tip:
    """The last block of the chain; `ts_ms` is its time as the holder knows it (the sequencer's
    stamp for the sequencer, the bounded block time for an executor)."""

    height: int = 0
    hash: bytes = GENESIS_PREV
    seq: int = 0
    ts_ms: int = 0


class ChainError(ValueError):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def next_block(tip: Tip, raw: bytes, ledger: str) -> tuple[Block, bytes]:
    """Decode `raw` and check that it extends `tip`; returns the block and its hash."""
    try:
        block = decode_block(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise ChainError("malformed", "block does not decode") from None
    if block.v != BLOCK_VERSION:
        raise ChainError("version", f"unsupported block version {block.v}")
    if block.ledger != ledger:
        raise ChainError("wrong_ledger", f"block for ledger {block.ledger!r}")
    if block.height != tip.height + 1:
        raise ChainError("bad_height", f"height {block.height} does not follow {tip.height}")
    if block.prev != tip.hash:
        raise ChainError("bad_prev", f"block {block.height} does not name the previous block's hash")
    return block, block_hash(raw)
