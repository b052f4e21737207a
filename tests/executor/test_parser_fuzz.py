"""Fuzz targets for the parsers of what untrusted parts hand an executor (hypothesis).

Each parser meets random bytes, random structures and mutations of valid input, and may only
answer with a value or its own documented error: transaction bodies (`parse_body`, `opened_ops`,
`from_json`), blocks and intake batches, node messages, COSE_Sign1 documents, signed queries,
receipts, attestation evidence (mutated real SNP, TDX and SGX evidence), and the executor's query
handler (requests arrive over NATS, so anything may come). A body the transaction parser accepts
must also be executable: its values encode canonically, so a digest can be taken.

Time budget (marker `fuzz`, deselect with `-m "not fuzz"`): 200 examples per target, about 20 s in
all on one core; CONCLAVIUM_FUZZ_SCALE=10 runs ten times as many.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import os
from pathlib import Path
from typing import Any

import cbor2
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from machine_harness import LEDGER, Chain, bootstrap

from conclavium import cose, node_messages, query, receipt
from conclavium.attestation import AttestationError, verify_evidence
from conclavium.block import Entry, IntakeBatch, Kind, decode_block, decode_intake, encode
from conclavium.chain import ChainError, Tip, next_block
from conclavium.encoding import b64e, canonical_json
from conclavium.governance import documents
from conclavium.tx import TxError, from_json, make_body, opened_ops, parse_body

pytestmark = pytest.mark.fuzz
FUZZ_SCALE = int(os.environ.get("CONCLAVIUM_FUZZ_SCALE", "1"))
FUZZ = settings(
    max_examples=200 * FUZZ_SCALE,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
    print_blob=True,
)
MSGSPEC_ERRORS = (msgspec.DecodeError, msgspec.ValidationError)
SENDER = "ab" * 32

# --- inputs ------------------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=10)
    | st.sampled_from([SENDER, LEDGER, "put", "delete", "public:t", "kv", "join", "endorse", "rekey"])
)
values = st.recursive(
    st.booleans() | st.integers(-(2**53 - 1), 2**53 - 1) | st.text(max_size=10),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
    max_leaves=6,
)
structures = st.recursive(
    scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=12
)


def _nested(depth: int, kind: str) -> bytes:
    return b"[" * depth + b"]" * depth if kind == "list" else b'{"a":' * depth + b"1" + b"}" * depth


json_texts = st.one_of(
    structures.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
    st.builds(_nested, st.sampled_from([30, 64, 200, 1100, 5000]), st.sampled_from(["list", "obj"])),
    st.sampled_from([b"1e400", b"NaN", b'"\\ud800"', b'"\xed\xa0\x80"', b"18446744073709551616", b"{}", b"[]"]),
)


def mutate(data: Any, raw: bytes) -> bytes:
    """Flip, cut, insert or splice bytes of a valid input."""
    for _ in range(data.draw(st.integers(1, 3))):
        how = data.draw(st.sampled_from(["flip", "cut", "insert", "splice"]))
        i = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if how == "flip" and raw:
            raw = raw[:i] + bytes([raw[i] ^ data.draw(st.integers(1, 255))]) + raw[i + 1 :]
        elif how == "cut":
            raw = raw[:i]
        elif how == "insert":
            raw = raw[:i] + data.draw(st.binary(min_size=1, max_size=8)) + raw[i:]
        else:
            raw = raw[:i] + data.draw(json_texts) + raw[i + 1 :]
    return raw


def valid_body(data: Any) -> bytes:
    ops = [{"op": "put", "map": "public:t", "key": "k", "value": data.draw(values)}]
    return make_body(LEDGER, SENDER, ops, 1_700_000_000_000, "00")


def tx_body(data: Any) -> bytes:
    """A body in one of three shapes: valid, valid with a field replaced by anything, mutated."""
    how = data.draw(st.sampled_from(["valid", "field", "field", "mutated", "raw"]))
    if how == "valid":
        return valid_body(data)
    if how == "raw":
        return data.draw(json_texts)
    obj = json.loads(valid_body(data))
    if how == "mutated":
        return mutate(data, canonical_json(obj))
    target = obj["ops"][0] if data.draw(st.booleans()) else obj
    target[data.draw(st.sampled_from(sorted(target)))] = "@@"
    return canonical_json(obj).replace(b'"@@"', data.draw(json_texts), 1)


# --- transaction bodies ------------------------------------------------------------------------


@FUZZ
@given(st.data())
def test_parse_body_accepts_only_executable_bodies(data: Any) -> None:
    body = tx_body(data)
    try:
        tx = parse_body(body, ledger=LEDGER)
    except TxError as e:
        assert e.code and e.message
        return
    for op in tx.ops or []:
        canonical_json([op.map, op.key, op.value])  # what the write digest takes


@FUZZ
@given(st.data())
def test_opened_ops_and_from_json(data: Any) -> None:
    obj = json.loads(valid_body(data))
    plaintext = data.draw(st.sampled_from([canonical_json(obj["ops"]), mutate(data, canonical_json(obj["ops"]))]))
    try:
        ops = opened_ops(plaintext)
    except TxError:
        pass
    else:
        canonical_json([[op.map, op.key, op.value] for op in ops])
    with_body = {"body": b64e(valid_body(data)), "signature": b64e(b"s" * 64)}
    candidate = data.draw(st.sampled_from([with_body, {**with_body, "body": "@@@"}]) | structures)
    try:
        from_json(candidate)
    except TxError:
        pass


# --- blocks, intake batches, node messages -----------------------------------------------------


def _block_raw(data: Any) -> bytes:
    chain = Chain(1)
    entries = [Entry(Kind.TX, valid_body(data), b"s" * 64), Entry(Kind.GOV, b"doc", b"")]
    raw, _ = chain.block(entries)
    return raw


@FUZZ
@given(st.data())
def test_block_and_intake_decoding(data: Any) -> None:
    raw = data.draw(st.sampled_from(["block", "intake", "bytes"]))
    if raw == "block":
        raw = mutate(data, _block_raw(data))
    elif raw == "intake":
        raw = mutate(data, encode(IntakeBatch([Entry(Kind.TX, valid_body(data), b"s")], [])))
    else:
        raw = data.draw(st.binary(max_size=300))
    for decoder in (decode_block, decode_intake):
        try:
            decoder(raw)
        except MSGSPEC_ERRORS:
            pass
    try:
        next_block(Tip(), raw, LEDGER)
    except ChainError as e:
        assert e.reason


@functools.cache
def _node_messages() -> tuple[bytes, ...]:
    """Made once: fresh keys per example would vary the messages' lengths, and with them what
    hypothesis draws for the same choices (FlakyStrategyDefinition)."""
    chain = Chain(2)
    return tuple(e.data for e in (chain.genesis_entry(), chain.join_entry(1), chain.endorse_entry(1)))


def _node_message(data: Any) -> bytes:
    return data.draw(st.sampled_from(_node_messages()))


@FUZZ
@given(st.data())
def test_node_message_decoding(data: Any) -> None:
    how = data.draw(st.sampled_from(["mutated", "field", "raw"]))
    raw = _node_message(data)
    if how == "mutated":
        raw = mutate(data, raw)
    elif how == "field":
        obj = json.loads(raw)
        cur = obj
        while True:
            k = data.draw(st.sampled_from(sorted(cur)))
            if isinstance(cur[k], dict) and cur[k] and data.draw(st.booleans()):
                cur = cur[k]
                continue
            cur[k] = "@@"
            break
        raw = canonical_json(obj).replace(b'"@@"', data.draw(json_texts), 1)
    else:
        raw = data.draw(json_texts)
    try:
        node_messages.decode(raw)
    except MSGSPEC_ERRORS:
        pass


# --- COSE governance documents -----------------------------------------------------------------

cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.binary(max_size=16) | st.text(max_size=8),
    lambda c: (
        st.lists(c, max_size=4)
        | st.dictionaries(st.integers(-5, 5) | st.text(max_size=4), c, max_size=3)
        | st.builds(cbor2.CBORTag, st.integers(0, 300), c)
    ),
    max_leaves=10,
)


def _cose_doc(data: Any) -> bytes:
    chain = Chain(1)
    return documents.make_proposal([{"name": "open_service", "args": {}}], chain.member, 1_700_000_000, ledger=LEDGER)


def _cbor(v: Any) -> bytes:
    try:
        return cbor2.dumps(v)
    except (ValueError, TypeError, OverflowError):
        return b""


@FUZZ
@given(st.data())
def test_cose_parsing(data: Any) -> None:
    how = data.draw(st.sampled_from(["mutated", "structure", "sign1", "bytes"]))
    if how == "mutated":
        doc = mutate(data, _cose_doc(data))
    elif how == "structure":
        doc = _cbor(cbor2.CBORTag(18, data.draw(cbor_values)))
    elif how == "sign1":
        parts = [
            data.draw(st.binary(max_size=8) | st.builds(_cbor, cbor_values)),
            data.draw(cbor_values),
            data.draw(cbor_values),
            data.draw(cbor_values),
        ]
        doc = _cbor(cbor2.CBORTag(18, parts))
    else:
        doc = data.draw(st.binary(max_size=200))
    try:
        cose.parse1(doc)
    except cose.CoseError:
        pass
    try:
        cose.verify1(doc, lambda kid: None)
    except cose.CoseError:
        pass


# --- queries and receipts ----------------------------------------------------------------------


@FUZZ
@given(st.data())
def test_signed_query_and_receipt_parsing(data: Any) -> None:
    body = data.draw(json_texts)
    candidate = data.draw(
        st.sampled_from([{"body": b64e(body), "signature": b64e(b"s" * 64)}, {"body": "@", "signature": ""}])
        | structures
    )
    try:
        query.parse(candidate)
    except TxError:
        pass
    r = data.draw(structures)
    if data.draw(st.booleans()):
        r = {
            "v": 1,
            "ledger": LEDGER,
            "height": data.draw(st.integers(-5, 2**70)),
            "index": 0,
            "quorum": data.draw(st.integers(-(2**70), 2**70)),
            "tx_hash": "00" * 32,
            "write_digest": "00" * 32,
            "root": "00" * 32,
            "block_hash": "00" * 32,
            "path": data.draw(structures),
            "signatures": data.draw(structures),
        }
    try:
        receipt.verify(r, "not a certificate")
    except receipt.ReceiptError:
        pass


# --- attestation evidence ----------------------------------------------------------------------


def _vectors() -> list[tuple[str, bytes, list[bytes], dict[str, bytes]]]:
    root = Path(os.environ.get("CONCLAVIUM_VECTORS", "/work/shared/attestation/vectors"))
    if not root.is_dir():
        root = Path(__file__).resolve().parents[3] / "shared" / "attestation" / "vectors"
    out = []
    for report in sorted(root.glob("snp/*/report.bin")):
        certs = [f.read_bytes() for f in sorted(report.parent.iterdir()) if f.suffix in (".der", ".pem")]
        out.append(("snp", report.read_bytes(), certs, {}))
    for platform in ("tdx", "sgx"):
        for quote in sorted((root / platform).glob("*/*.bin")):
            col = quote.parent / "collateral"
            collateral = {f.name: f.read_bytes() for f in sorted(col.iterdir())} if col.is_dir() else {}
            collateral.pop("source_collateral.json", None)
            out.append((platform, quote.read_bytes(), [], collateral))
    return out


VECTORS = _vectors()


@FUZZ
@given(st.data())
def test_attestation_evidence_parsing(data: Any) -> None:
    if not VECTORS:
        pytest.fail("no attestation vectors found; set CONCLAVIUM_VECTORS")
    platform, evidence, certs, collateral = data.draw(st.sampled_from(VECTORS))
    evidence = mutate(data, evidence)
    if certs and data.draw(st.booleans()):
        i = data.draw(st.integers(0, len(certs) - 1))
        certs = [*certs[:i], mutate(data, certs[i]), *certs[i + 1 :]]
    if collateral and data.draw(st.booleans()):
        name = data.draw(st.sampled_from(sorted(collateral)))
        collateral = {**collateral, name: mutate(data, collateral[name])}
    at = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
    try:
        verify_evidence(platform, evidence, certs=certs, collateral=collateral or None, at=at)
    except AttestationError:
        pass


# --- the executor's query handler --------------------------------------------------------------


class _Msg:
    """A NATS message as the query handler receives it (data in, one reply out)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.reply = "inbox"
        self.answer: bytes | None = None

    async def respond(self, data: bytes) -> None:
        self.answer = data


@pytest.fixture(scope="module")
def executor(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from services.executor.executor import Executor, ExecutorConfig

    ex = Executor(
        ExecutorConfig(ledger=LEDGER, name="x", data_dir=tmp_path_factory.mktemp("ex"), nats_url="nats://127.0.0.1:1")
    )
    chain = Chain()
    asyncio.run(bootstrap(chain, ex.machine))
    return ex


QUERY_TYPES = [
    "status",
    "receipt",
    "get",
    "query",
    "service",
    "gov_proposals",
    "gov_proposal",
    "gov_constitution",
    "gov_members",
    "node_attestation",
    "node_status",
    "nope",
]


@FUZZ
@given(st.data())
def test_query_handler_never_fails_internally(executor: Any, data: Any) -> None:
    from services.executor.queries import QueryHandler

    how = data.draw(st.sampled_from(["typed", "typed", "raw"]))
    if how == "typed":
        req = data.draw(
            st.dictionaries(
                st.sampled_from(["tx", "map", "key", "id", "state", "min_height", "query"]), structures, max_size=4
            )
        )
        req["type"] = data.draw(st.sampled_from(QUERY_TYPES) | structures)
        raw = json.dumps(req).encode()
    else:
        raw = data.draw(json_texts)
    msg = _Msg(raw)

    async def answer() -> None:
        handler = QueryHandler(executor)
        await handler.handle(msg)
        await handler.drain()  # signed answers are sent in batches, after the handler returns

    asyncio.run(answer())
    assert msg.answer is not None
    answer = json.loads(msg.answer)
    if isinstance(answer, dict) and "error" in answer:
        assert answer["error"]["code"] != "internal", (raw[:200], answer)
