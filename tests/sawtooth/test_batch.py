"""Sawtooth batches: the header rules of `conclavium.sawtooth.batch`, each broken once, and the
protobuf module is what scripts/gen-sawtooth-protos.sh generates from conclavium/sawtooth/protos."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conclavium.sawtooth import signing
from conclavium.sawtooth.batch import BatchError, build_batch, parse_batch, parse_batch_list
from conclavium.sawtooth.pb.sawtooth_pb2 import Batch, BatchHeader, BatchList, Transaction, TransactionHeader

ROOT = Path(__file__).resolve().parents[2]
KEY = bytes.fromhex("11" * 32)
OTHER = bytes.fromhex("22" * 32)
ADDR = "1cf126" + "ab" * 32


def one(payload: bytes = b"p", n: int = 1) -> Batch:
    return build_batch(KEY, [("intkey", "1.0", payload + bytes([i]), [ADDR], [ADDR]) for i in range(n)])


def resign_batch(b: Batch, header: BatchHeader, key: bytes = KEY) -> Batch:
    hb = header.SerializeToString()
    return Batch(header=hb, header_signature=signing.sign(key, hb), transactions=b.transactions)


def with_txn(b: Batch, header: TransactionHeader, payload: bytes | None = None, key: bytes = KEY) -> Batch:
    """`b` with its first transaction's header replaced and signed, the batch header re-made."""
    hb = header.SerializeToString()
    t = Transaction(header=hb, header_signature=signing.sign(key, hb), payload=b.transactions[0].payload)
    if payload is not None:
        t.payload = payload
    txs = [t, *b.transactions[1:]]
    bh = BatchHeader(signer_public_key=signing.public_key(KEY), transaction_ids=[x.header_signature for x in txs])
    return resign_batch(Batch(transactions=txs), bh)


def code_of(b: Batch) -> str:
    with pytest.raises(BatchError) as e:
        parse_batch(b.SerializeToString())
    return e.value.code


def test_a_good_batch_list_parses() -> None:
    b = one(n=3)
    (p,) = parse_batch_list(BatchList(batches=[b]).SerializeToString())
    assert p.id == b.header_signature and p.signer == signing.public_key(KEY)
    assert [t.id for t in p.txns] == [t.header_signature for t in b.transactions]
    assert p.txns[0].family == "intkey" and p.txns[0].inputs == (ADDR,)
    assert parse_batch(p.raw) == p


def test_list_level_errors() -> None:
    for data, code in (
        (b"\xff\xff", "bad_protobuf"),
        (b"", "no_batches"),
        (BatchList(batches=[one(), one()]).SerializeToString(), None),
    ):
        if code is None:
            assert len(parse_batch_list(data)) == 2
            continue
        with pytest.raises(BatchError) as e:
            parse_batch_list(data)
        assert e.value.code == code
    b = one()
    with pytest.raises(BatchError) as e:
        parse_batch_list(BatchList(batches=[b, b]).SerializeToString())
    assert e.value.code == "duplicate_batch"


def test_batch_signature_and_ids() -> None:
    b = one(n=2)
    header = BatchHeader.FromString(b.header)
    forged = Batch(header=b.header, header_signature=signing.sign(OTHER, b.header), transactions=b.transactions)
    assert code_of(forged) == "bad_batch_signature"
    assert code_of(Batch(header=b.header, header_signature="zz", transactions=b.transactions)) == "bad_batch_signature"
    reordered = BatchHeader(signer_public_key=header.signer_public_key, transaction_ids=header.transaction_ids[::-1])
    assert code_of(resign_batch(b, reordered)) == "transaction_ids_mismatch"
    short = BatchHeader(signer_public_key=header.signer_public_key, transaction_ids=header.transaction_ids[:1])
    assert code_of(resign_batch(b, short)) == "transaction_ids_mismatch"
    twice = Batch(transactions=[b.transactions[0], b.transactions[0]])
    ids = [b.transactions[0].header_signature] * 2
    assert code_of(
        resign_batch(twice, BatchHeader(signer_public_key=header.signer_public_key, transaction_ids=ids))
    ) == ("duplicate_transaction")
    assert code_of(Batch(header=b"\xff", header_signature=b.header_signature)) == "bad_batch_header"
    empty = BatchHeader(signer_public_key=header.signer_public_key)
    assert code_of(resign_batch(Batch(), empty)) == "no_transactions"
    badkey = BatchHeader(signer_public_key="04" + "00" * 32, transaction_ids=header.transaction_ids)
    assert code_of(resign_batch(b, badkey)) == "bad_public_key"


def test_transaction_rules() -> None:
    b = one()
    h = TransactionHeader.FromString(b.transactions[0].header)
    parse_batch(with_txn(b, h).SerializeToString())
    other = TransactionHeader()
    other.CopyFrom(h)
    other.batcher_public_key = signing.public_key(OTHER)
    assert code_of(with_txn(b, other)) == "batcher_key_mismatch"
    assert code_of(with_txn(b, h, payload=b"changed")) == "payload_sha512_mismatch"
    bad_addr = TransactionHeader()
    bad_addr.CopyFrom(h)
    bad_addr.inputs.append("ABC")
    assert code_of(with_txn(b, bad_addr)) == "bad_address"
    long_addr = TransactionHeader()
    long_addr.CopyFrom(h)
    long_addr.outputs.append(ADDR + "00")
    assert code_of(with_txn(b, long_addr)) == "bad_address"
    dep = TransactionHeader()
    dep.CopyFrom(h)
    dep.dependencies.append("not-an-id")
    assert code_of(with_txn(b, dep)) == "bad_dependency"
    nofamily = TransactionHeader()
    nofamily.CopyFrom(h)
    nofamily.family_name = ""
    assert code_of(with_txn(b, nofamily)) == "bad_family"
    # signed by someone else than its signer_public_key
    assert code_of(with_txn(b, h, key=OTHER)) == "bad_transaction_signature"
    t = b.transactions[0]
    forged = Transaction(header=t.header, header_signature=signing.sign(OTHER, t.header), payload=t.payload)
    bh = BatchHeader(signer_public_key=signing.public_key(KEY), transaction_ids=[forged.header_signature])
    assert code_of(resign_batch(Batch(transactions=[forged]), bh)) == "bad_transaction_signature"
    assert hashlib.sha512(t.payload).hexdigest() == h.payload_sha512


def test_high_s_signatures_fail_as_in_libsecp256k1() -> None:
    """The same signature with s replaced by n - s is valid ECDSA, but libsecp256k1 (and so
    Sawtooth) refuses it: so do we, or executors and a Sawtooth validator would disagree."""
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    sig = signing.sign(KEY, b"m")
    r, s = sig[:64], int(sig[64:], 16)
    assert signing.verify(signing.public_key(KEY), sig, b"m")
    assert not signing.verify(signing.public_key(KEY), r + f"{n - s:064x}", b"m")
    assert not signing.verify("02" + "00" * 32, sig, b"m")


@pytest.mark.skipif(importlib.util.find_spec("grpc_tools") is None, reason="grpcio-tools is a dev dependency")
def test_committed_protobuf_modules_are_generated(tmp_path: Path) -> None:
    out = tmp_path / "pb"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    subprocess.run(["bash", "scripts/gen-sawtooth-protos.sh", str(out)], cwd=ROOT, check=True, env=env)
    committed = ROOT / "conclavium/sawtooth/pb"
    for f in sorted(out.glob("*_pb2.py")):
        assert f.read_text() == (committed / f.name).read_text(), f.name
    assert {f.name for f in committed.glob("*_pb2.py")} == {f.name for f in out.glob("*_pb2.py")}
