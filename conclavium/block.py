"""Blocks, ledger entries, commit signatures and intake batches: the messages on NATS.

- An *entry* is one thing to order: a client transaction, a governance document or a node message,
  as `(kind, data, signature)`. Its id is SHA-256(data). A client transaction of the key-value
  application is kind 0; one of any other application is kind 3 and names its application at the
  start of its data (`conclavium.apps`), so the entry id binds the application too.
- An *intake batch* is what the gateway (entries) and the executors (commit signatures) publish to
  the intake stream: many of them per message, because per-message costs dominate.
- A *block* is what the sequencer appends to the ledger stream. Its hash is SHA-256 of its exact
  encoded bytes; each block names the previous block's hash, so the stream is a hash chain.
- A *commit signature* is a node's signature over a *statement*: (ledger, height, block hash,
  Merkle root of the block's leaves, quorum in force) and, from rules version 4
  (`conclavium.rules`), the block's ledger time. It commits to all history through the block hash,
  tells an offline verifier how many signatures make a commit, and when: a receipt's time is what
  the signers said, so nobody relaying it can move it to when a retired node still counted.
- A *clock signature* is a node's signature over its local clock: executors publish them with their
  commit signatures and as a heartbeat, and bound the ledger's time by them (`ledger_clock.py` in
  the executor), so the sequencer's timestamp can never move ledger time far from a quorum's clocks.
"""

from __future__ import annotations

import hashlib

import msgspec

BLOCK_VERSION = 2
GENESIS_PREV = bytes(32)


class Kind:
    TX = 0  # a transaction of the key-value application (`conclavium.tx`)
    GOV = 1
    NODE = 2
    APP = 3  # a client entry of a named application: data = name, 0x00, payload (`conclavium.apps`)
    ALL = (0, 1, 2, 3)
    CLIENT = (0, 3)


class Entry(msgspec.Struct, array_like=True, frozen=True):
    kind: int
    data: bytes
    signature: bytes


class CommitSig(msgspec.Struct, array_like=True, frozen=True):
    node: str
    height: int
    block_hash: bytes
    root: bytes
    quorum: int
    signature: bytes
    ts_ms: int | None = None  # the ledger time signed (rules version 4 on); None: the statement has no time


class ClockSig(msgspec.Struct, array_like=True, frozen=True):
    node: str
    clock_ms: int
    signature: bytes


class IntakeBatch(msgspec.Struct, array_like=True):
    entries: list[Entry] = []
    sigs: list[CommitSig] = []
    clocks: list[ClockSig] = []


class Block(msgspec.Struct, array_like=True):
    v: int
    ledger: str
    height: int
    prev: bytes
    ts_ms: int
    entries: list[Entry]
    sigs: list[CommitSig]
    clocks: list[ClockSig] = []


_enc = msgspec.msgpack.Encoder()
_block_dec = msgspec.msgpack.Decoder(Block)
_intake_dec = msgspec.msgpack.Decoder(IntakeBatch)


def encode(obj: msgspec.Struct) -> bytes:
    return _enc.encode(obj)


def decode_block(data: bytes) -> Block:
    return _block_dec.decode(data)


def decode_intake(data: bytes) -> IntakeBatch:
    return _intake_dec.decode(data)


def block_hash(raw: bytes) -> bytes:
    return hashlib.sha256(raw).digest()


STATEMENT_DOMAIN = b"conclavium.commit.v1\x00"
TIMED_STATEMENT_DOMAIN = b"conclavium.commit.v2\x00"


def statement(
    ledger: str, height: int, block_hash_: bytes, root: bytes, quorum: int, ts_ms: int | None = None
) -> bytes:
    """The exact bytes a node signs to vouch for a block: with `ts_ms` (the block's ledger time,
    rules version 4 on) under its own domain, so a signature over one form never verifies as the
    other."""
    if ts_ms is None:
        return STATEMENT_DOMAIN + _enc.encode([ledger, height, block_hash_, root, quorum])
    return TIMED_STATEMENT_DOMAIN + _enc.encode([ledger, height, block_hash_, root, quorum, ts_ms])


def sig_statement(sig: CommitSig, ledger: str) -> bytes:
    return statement(ledger, sig.height, sig.block_hash, sig.root, sig.quorum, sig.ts_ms)


CLOCK_DOMAIN = b"conclavium.clock.v1\x00"


def clock_statement(ledger: str, node: str, clock_ms: int) -> bytes:
    """The exact bytes a node signs to vouch for its local clock."""
    return CLOCK_DOMAIN + _enc.encode([ledger, node, clock_ms])


def leaf_data(entry_id: bytes, write_digest: bytes) -> bytes:
    """A transaction's leaf: its id and the digest of what it wrote."""
    return entry_id + write_digest


def entry_id(entry: Entry) -> bytes:
    return hashlib.sha256(entry.data).digest()
