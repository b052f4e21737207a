"""Sawtooth batches and transactions: parsing and the validator's header rules, defined once.

A client submits a `BatchList`; each `Batch` becomes one ledger entry of the `sawtooth`
application whose payload is the batch's protobuf bytes (a batch is atomic, as in Sawtooth). The
rules, the same at the gateway (an early filter) and in every executor (which decides):

- the batch header and every transaction header parse, and carry well-formed secp256k1 keys;
- the batch signature verifies over the batch header with its `signer_public_key`;
- the header's `transaction_ids` are exactly the transactions' `header_signature`s, in order, with
  no transaction twice;
- each transaction's signature verifies over its header with the header's `signer_public_key`, its
  `batcher_public_key` is the batch's signer, and its `payload_sha512` is SHA-512 of its payload;
- inputs, outputs and dependencies are well formed (addresses or address prefixes: even-length
  lowercase hex, at most 70 characters; dependencies are transaction ids).

Whatever the bytes, parsing ends in a `BatchError` with a machine-readable code, never another
exception (tests/sawtooth/test_batch_fuzz.py).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from . import signing
from .pb.sawtooth_pb2 import Batch, BatchHeader, BatchList, TransactionHeader

MAX_BATCHES = 100  # per BatchList
MAX_TRANSACTIONS = 1000  # per batch
MAX_FIELD = 128  # family name, version and nonce length
MAX_ADDRESSES = 1000  # inputs, outputs or dependencies of one transaction
ADDRESS_LEN = 70
ADDRESS_PREFIX = re.compile(r"^(?:[0-9a-f]{2}){0,35}$")
ADDRESS = re.compile(r"^[0-9a-f]{70}$")
RESOURCE_ID = re.compile(r"^[0-9a-f]{128}$")


class BatchError(ValueError):
    """A batch or batch list that Sawtooth's validator would refuse, and why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Txn:
    """One transaction, its header parsed."""

    id: str  # the header signature
    header_bytes: bytes
    payload: bytes
    signer: str
    batcher: str
    family: str
    version: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    dependencies: tuple[str, ...]
    nonce: str


@dataclass(frozen=True)
class ParsedBatch:
    """One batch, checked: `raw` is the bytes of its ledger entry."""

    id: str  # the header signature
    signer: str
    txns: tuple[Txn, ...]
    raw: bytes


def parse_batch_list(data: bytes) -> list[ParsedBatch]:
    """The batches of a serialized `BatchList`, each checked (`check_batch`)."""
    try:
        blist = BatchList.FromString(data)
    except (DecodeError, ValueError, RecursionError):
        raise BatchError("bad_protobuf", "the BatchList could not be decoded") from None
    if not blist.batches:
        raise BatchError("no_batches", "the BatchList holds no batches")
    if len(blist.batches) > MAX_BATCHES:
        raise BatchError("too_many_batches", f"a BatchList holds at most {MAX_BATCHES} batches")
    out = []
    for i, b in enumerate(blist.batches):
        try:
            out.append(check_batch(b))
        except BatchError as e:
            raise BatchError(e.code, f"batch {i}: {e.message}") from None
    seen = set()
    for b in out:
        if b.id in seen:
            raise BatchError("duplicate_batch", f"batch {b.id[:16]}... appears twice in the BatchList")
        seen.add(b.id)
    return out


def parse_batch(data: bytes) -> ParsedBatch:
    """A batch from its entry bytes, checked (what an executor does with every Sawtooth entry)."""
    try:
        b = Batch.FromString(data)
    except (DecodeError, ValueError, RecursionError):
        raise BatchError("bad_protobuf", "the batch could not be decoded") from None
    return check_batch(b)


def check_batch(b: Batch) -> ParsedBatch:
    """The header rules of the module docstring, for one decoded batch."""
    try:
        header = BatchHeader.FromString(b.header)
    except (DecodeError, ValueError, RecursionError):
        raise BatchError("bad_batch_header", "the batch header could not be decoded") from None
    signer = header.signer_public_key
    if not signing.HEX_KEY.fullmatch(signer):
        raise BatchError("bad_public_key", "the batch signer_public_key is not a compressed secp256k1 key in hex")
    if not signing.HEX_SIG.fullmatch(b.header_signature):
        raise BatchError("bad_batch_signature", "the batch header_signature is not 128 hex digits")
    if not b.transactions:
        raise BatchError("no_transactions", "the batch holds no transactions")
    if len(b.transactions) > MAX_TRANSACTIONS:
        raise BatchError("too_many_transactions", f"a batch holds at most {MAX_TRANSACTIONS} transactions")
    ids = list(header.transaction_ids)
    if ids != [t.header_signature for t in b.transactions]:
        raise BatchError(
            "transaction_ids_mismatch", "the batch header's transaction_ids are not its transactions' signatures"
        )
    if len(set(ids)) != len(ids):
        raise BatchError("duplicate_transaction", "a transaction appears twice in the batch")
    if not signing.verify(signer, b.header_signature, b.header):
        raise BatchError("bad_batch_signature", "the batch signature does not verify with its signer_public_key")
    txns = []
    for i, t in enumerate(b.transactions):
        try:
            txns.append(_check_txn(t.header, t.header_signature, t.payload, signer))
        except BatchError as e:
            raise BatchError(e.code, f"transaction {i}: {e.message}") from None
    entry = Batch(header=b.header, header_signature=b.header_signature, transactions=b.transactions)
    return ParsedBatch(b.header_signature, signer, tuple(txns), entry.SerializeToString())


def _check_txn(header_bytes: bytes, sig: str, payload: bytes, batch_signer: str) -> Txn:
    try:
        h = TransactionHeader.FromString(header_bytes)
    except (DecodeError, ValueError, RecursionError):
        raise BatchError("bad_transaction_header", "the transaction header could not be decoded") from None
    if not signing.HEX_KEY.fullmatch(h.signer_public_key):
        raise BatchError("bad_public_key", "the signer_public_key is not a compressed secp256k1 key in hex")
    if h.batcher_public_key != batch_signer:
        raise BatchError("batcher_key_mismatch", "the batcher_public_key is not the batch's signer_public_key")
    if hashlib.sha512(payload).hexdigest() != h.payload_sha512:
        raise BatchError("payload_sha512_mismatch", "the payload_sha512 is not SHA-512 of the payload")
    if not h.family_name or any(len(f) > MAX_FIELD for f in (h.family_name, h.family_version, h.nonce)):
        raise BatchError("bad_family", f"family_name is required; name, version and nonce have at most {MAX_FIELD}")
    for field, values in (("inputs", h.inputs), ("outputs", h.outputs)):
        if len(values) > MAX_ADDRESSES:
            raise BatchError("bad_address", f"at most {MAX_ADDRESSES} {field}")
        for a in values:
            if not ADDRESS_PREFIX.fullmatch(a):
                raise BatchError("bad_address", f"{field} hold addresses or prefixes: even-length lowercase hex")
    if len(h.dependencies) > MAX_ADDRESSES or not all(RESOURCE_ID.fullmatch(d) for d in h.dependencies):
        raise BatchError("bad_dependency", "dependencies are transaction ids (128 hex digits)")
    if not signing.verify(h.signer_public_key, sig, header_bytes):
        raise BatchError("bad_transaction_signature", "the transaction signature does not verify with its signer")
    return Txn(
        sig,
        header_bytes,
        payload,
        h.signer_public_key,
        h.batcher_public_key,
        h.family_name,
        h.family_version,
        tuple(h.inputs),
        tuple(h.outputs),
        tuple(h.dependencies),
        h.nonce,
    )


def build_batch(private_key: bytes, txns: list[tuple[str, str, bytes, list[str], list[str]]]) -> Batch:
    """A signed batch of (family, version, payload, inputs, outputs) transactions signed by one key:
    what `sawtooth_signing` and the SDK's protobufs build, for our tests and tools."""
    from .pb.sawtooth_pb2 import Transaction

    pub = signing.public_key(private_key)
    out = []
    for family, version, payload, inputs, outputs in txns:
        hb = TransactionHeader(
            batcher_public_key=pub,
            signer_public_key=pub,
            family_name=family,
            family_version=version,
            inputs=inputs,
            outputs=outputs,
            payload_sha512=hashlib.sha512(payload).hexdigest(),
            nonce=os.urandom(8).hex(),
        ).SerializeToString()
        out.append(Transaction(header=hb, header_signature=signing.sign(private_key, hb), payload=payload))
    bh = BatchHeader(signer_public_key=pub, transaction_ids=[t.header_signature for t in out]).SerializeToString()
    return Batch(header=bh, header_signature=signing.sign(private_key, bh), transactions=out)
