"""Fuzz the Sawtooth batch parser: random bytes, random protobuf structures and mutations of a
valid BatchList end in a batch list or a `BatchError` with a code, never another exception.

Time budget (marker `fuzz`): 300 examples per target, a few seconds on one core;
CONCLAVIUM_FUZZ_SCALE=10 runs ten times as many.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conclavium.sawtooth.batch import BatchError, build_batch, parse_batch, parse_batch_list
from conclavium.sawtooth.pb.sawtooth_pb2 import Batch, BatchHeader, BatchList, Transaction, TransactionHeader

pytestmark = pytest.mark.fuzz
FUZZ = settings(
    max_examples=300 * int(os.environ.get("CONCLAVIUM_FUZZ_SCALE", "1")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
KEY = bytes.fromhex("33" * 32)
ADDR = "1cf126" + "cd" * 32
GOOD = BatchList(
    batches=[build_batch(KEY, [("intkey", "1.0", b"x", [ADDR], [ADDR]), ("intkey", "1.0", b"y", [ADDR], [ADDR])])]
).SerializeToString()


def outcome(data: bytes) -> str:
    try:
        parse_batch_list(data)
    except BatchError as e:
        assert e.code and e.message
        return e.code
    return "ok"


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes(data: bytes) -> None:
    outcome(data)
    try:
        parse_batch(data)
    except BatchError:
        pass


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(GOOD) - 1), st.integers(0, 255)), min_size=1, max_size=8))
def test_mutations_of_a_valid_list(flips: list[tuple[int, int]]) -> None:
    data = bytearray(GOOD)
    for pos, val in flips:
        data[pos] = val
    result = outcome(bytes(data))
    if bytes(data) != GOOD and result == "ok":
        # a mutation that still parses may only have touched what no rule covers (field tags are
        # re-encoded: a changed unknown field, the trace flag) -- never the signed bytes
        (b,) = parse_batch_list(bytes(data))
        assert b.raw == parse_batch_list(GOOD)[0].raw


strings = st.text(max_size=140) | st.sampled_from([ADDR, "1cf126", "", "02" + "ab" * 32])
headers = st.builds(
    TransactionHeader,
    batcher_public_key=strings,
    signer_public_key=strings,
    family_name=strings,
    family_version=strings,
    inputs=st.lists(strings, max_size=3),
    outputs=st.lists(strings, max_size=3),
    dependencies=st.lists(strings, max_size=2),
    nonce=strings,
    payload_sha512=strings,
)


@FUZZ
@given(st.lists(st.tuples(headers, st.binary(max_size=32), strings), min_size=0, max_size=3), strings, strings)
def test_random_structures(txns: list[tuple[TransactionHeader, bytes, str]], signer: str, sig: str) -> None:
    ts = [Transaction(header=h.SerializeToString(), header_signature=s, payload=p) for h, p, s in txns]
    bh = BatchHeader(signer_public_key=signer, transaction_ids=[t.header_signature for t in ts])
    data = BatchList(batches=[Batch(header=bh.SerializeToString(), header_signature=sig, transactions=ts)])
    assert outcome(data.SerializeToString()) != "ok"  # nothing here carries a valid signature
