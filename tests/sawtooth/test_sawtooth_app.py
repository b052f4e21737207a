"""The Sawtooth application in the executor's deterministic core, with the Sawtooth SDK's processor
runtime (Python 3.9) running the intkey TP against a real `TpRouter`: batches applied or Invalid
with the TP's message, atomic batches, families governance did not approve, a missing TP (the block
waits, nothing is decided), duplicates and dependencies.

Time budget: about 20 s (each test starts a TP process: ~2 s on the shared machine).
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import cbor2
import pytest
from machine_harness import LEDGER, Chain, bootstrap
from sawtooth_support import INTKEY, address, batch, enable_sawtooth, entry, intkey_tp, intkey_txn, need_sdk
from sawtooth_support import wait_registered as registered

from services.executor.apps import default_apps
from services.executor.apps.sawtooth import STATE, TXNS
from services.executor.ledger_machine import LedgerMachine
from services.executor.sawtooth_tp import TpRouter
from services.executor.tables import AppUnavailable
from services.executor.verifier import BatchVerifier

KEY = bytes.fromhex("44" * 32)


async def sawtooth_ledger(router: TpRouter, families: list | None = None) -> tuple[Chain, LedgerMachine]:
    chain = Chain()
    m = LedgerMachine(LEDGER, BatchVerifier(1), secrets=chain.secrets, apps=default_apps(router))
    await bootstrap(chain, m, config={"sawtooth_tp_timeout_ms": 3000})
    await m.apply(*chain.block(enable_sawtooth(chain.member, LEDGER, chain.ts // 1000, families or INTKEY)))
    return chain, m


async def run(chain: Chain, m: LedgerMachine, entries: list) -> dict[str, tuple[str, str]]:
    _, out = await m.apply(*chain.block(entries))
    return {eid.hex(): (code, msg) for eid, code, msg in out.invalid}


def value(m: LedgerMachine, name: str) -> int | None:
    raw = m.state.get(STATE, address(name))
    return None if raw is None else cbor2.loads(base64.b64decode(raw))[name]


@pytest.fixture
def router():
    need_sdk()
    r = TpRouter("tcp://127.0.0.1:*")
    yield r
    r.close()


async def test_intkey_set_inc_dec_and_an_invalid_dec(router: TpRouter, tmp_path: Path) -> None:
    chain, m = await sawtooth_ledger(router)
    with intkey_tp(router.endpoint, tmp_path):
        registered(router)
        b1, b2 = batch(KEY, intkey_txn("set", "a", 5)), batch(KEY, intkey_txn("inc", "a", 3))
        assert await run(chain, m, [entry(b1), entry(b2)]) == {}
        assert value(m, "a") == 8
        assert m.state.get(TXNS, b1.transactions[0].header_signature) == b1.header_signature
        bad = batch(KEY, intkey_txn("dec", "a", 9))
        invalid = await run(chain, m, [entry(bad)])
        ((code, message),) = invalid.values()
        detail = json.loads(message)
        assert code == "invalid_transaction" and detail["id"] == bad.transactions[0].header_signature
        assert "below 0" in detail["message"]
        assert value(m, "a") == 8
        statuses = m.apps["sawtooth"].queries()["sawtooth_batch_statuses"]
        answer = statuses(m, {"ids": [b1.header_signature, bad.header_signature, "ab" * 64]})
        assert [d["status"] for d in answer["data"]] == ["PENDING", "INVALID", "UNKNOWN"]
        assert answer["data"][1]["invalid_transactions"][0]["id"] == bad.transactions[0].header_signature


async def test_a_batch_with_one_bad_transaction_commits_nothing(router: TpRouter, tmp_path: Path) -> None:
    chain, m = await sawtooth_ledger(router)
    with intkey_tp(router.endpoint, tmp_path):
        registered(router)
        mixed = batch(KEY, intkey_txn("set", "x", 1), intkey_txn("set", "y", 2), intkey_txn("inc", "nobody", 1))
        invalid = await run(chain, m, [entry(mixed)])
        ((code, message),) = invalid.values()
        assert code == "invalid_transaction" and json.loads(message)["id"] == mixed.transactions[2].header_signature
        assert value(m, "x") is None and value(m, "y") is None
        assert m.state.get(TXNS, mixed.transactions[0].header_signature) is None
        # the same names in a good batch: later transactions see the earlier ones' writes
        good = batch(KEY, intkey_txn("set", "x", 1), intkey_txn("inc", "x", 41))
        assert await run(chain, m, [entry(good)]) == {}
        assert value(m, "x") == 42
        # the same transaction again (in a new batch) is a duplicate
        again = batch(KEY)
        again.transactions.append(good.transactions[0])
        again = _rebatch(again)
        ((code, _),) = (await run(chain, m, [entry(again)])).values()
        assert code == "duplicate_transaction"


def _rebatch(b) -> object:
    from conclavium.sawtooth import signing
    from conclavium.sawtooth.pb.sawtooth_pb2 import Batch, BatchHeader

    bh = BatchHeader(
        signer_public_key=signing.public_key(KEY), transaction_ids=[t.header_signature for t in b.transactions]
    )
    raw = bh.SerializeToString()
    return Batch(header=raw, header_signature=signing.sign(KEY, raw), transactions=b.transactions)


async def test_an_unapproved_family_is_invalid_and_a_missing_tp_stops_the_block(
    router: TpRouter, tmp_path: Path
) -> None:
    chain, m = await sawtooth_ledger(router)
    other = batch(KEY, ("xo", "1.0", b"game,create,", ["5b7349"], ["5b7349"]))
    ((code, _),) = (await run(chain, m, [entry(other)])).values()
    assert code == "unknown_family"  # decided from the ledger alone, with or without a TP
    b = batch(KEY, intkey_txn("set", "late", 7))
    block = chain.block([entry(b)])
    height = m.tip.height
    with pytest.raises(AppUnavailable):
        await m.apply(*block)  # no intkey TP registered here: this node waits, it decides nothing
    assert m.tip.height == height and value(m, "late") is None
    with intkey_tp(router.endpoint, tmp_path):
        registered(router)
        _, out = await m.apply(*block)  # the same block, once the TP is there
        assert out.invalid == [] and value(m, "late") == 7


async def test_a_tp_killed_mid_block_leaves_state_as_it_was(router: TpRouter, tmp_path: Path) -> None:
    chain, m = await sawtooth_ledger(router)
    with intkey_tp(router.endpoint, tmp_path) as tp:
        registered(router)
        assert await run(chain, m, [entry(batch(KEY, intkey_txn("set", "k", 1)))]) == {}
        tp.kill()
        tp.wait()
        block = chain.block([entry(batch(KEY, intkey_txn("inc", "k", 1), intkey_txn("inc", "k", 1)))])
        with pytest.raises(AppUnavailable):
            await m.apply(*block)
        assert value(m, "k") == 1
    with intkey_tp(router.endpoint, tmp_path / "again"):
        registered(router)
        _, out = await m.apply(*block)
        assert out.invalid == [] and value(m, "k") == 3


async def test_sawtooth_state_is_in_the_snapshot_a_restarted_executor_loads(router: TpRouter, tmp_path: Path) -> None:
    chain, m = await sawtooth_ledger(router)
    with intkey_tp(router.endpoint, tmp_path):
        registered(router)
        b = batch(KEY, intkey_txn("set", "kept", 11))
        assert await run(chain, m, [entry(b)]) == {}
    restarted = LedgerMachine(LEDGER, BatchVerifier(1), secrets=chain.secrets, apps=default_apps(router))
    restarted.restore(m.snapshot())
    assert value(restarted, "kept") == 11
    assert restarted.state.get(TXNS, b.transactions[0].header_signature) == b.header_signature
    statuses = restarted.apps["sawtooth"].queries()["sawtooth_batch_statuses"]
    assert statuses(restarted, {"ids": [b.header_signature]})["data"][0]["status"] in ("PENDING", "COMMITTED")


async def test_only_registered_signers_under_the_registered_policy(router: TpRouter, tmp_path: Path) -> None:
    """The default signer policy: a batch signed by a key governance did not register is Invalid
    `unregistered_signer`, naming the key (and the transaction, when a transaction's signer is the
    one); the same batch by a registered key runs."""
    from conclavium.sawtooth import signing
    from conclavium.sawtooth.pb.sawtooth_pb2 import Batch, Transaction, TransactionHeader

    chain = Chain()
    m = LedgerMachine(LEDGER, BatchVerifier(1), secrets=chain.secrets, apps=default_apps(router))
    await bootstrap(chain, m, config={"sawtooth_tp_timeout_ms": 3000})
    mine = signing.public_key(KEY)
    await m.apply(*chain.block(enable_sawtooth(chain.member, LEDGER, chain.ts // 1000, INTKEY, signers=[mine])))
    stranger = bytes.fromhex("55" * 32)
    with intkey_tp(router.endpoint, tmp_path):
        registered(router)
        theirs = batch(stranger, intkey_txn("set", "s", 1))
        ((code, message),) = (await run(chain, m, [entry(theirs)])).values()
        assert code == "unregistered_signer" and signing.public_key(stranger) in message
        # a registered batcher carrying a transaction a stranger signed: Invalid, naming it
        family, version, payload, inputs, outputs = intkey_txn("set", "s", 1)
        header = TransactionHeader(
            batcher_public_key=mine,
            signer_public_key=signing.public_key(stranger),
            family_name=family,
            family_version=version,
            inputs=inputs,
            outputs=outputs,
            payload_sha512=hashlib.sha512(payload).hexdigest(),
            nonce="1",
        ).SerializeToString()
        inner = Transaction(header=header, header_signature=signing.sign(stranger, header), payload=payload)
        carried = _rebatch(Batch(transactions=[inner]))
        ((code, message),) = (await run(chain, m, [entry(carried)])).values()
        assert code == "unregistered_signer" and json.loads(message)["id"] == inner.header_signature
        ok = batch(KEY, intkey_txn("set", "s", 1))
        assert await run(chain, m, [entry(ok)]) == {} and value(m, "s") == 1
        statuses = m.apps["sawtooth"].queries()["sawtooth_batch_statuses"]
        (item,) = statuses(m, {"ids": [theirs.header_signature]})["data"]
        assert (
            item["status"] == "INVALID"
            and "not a registered Sawtooth signer" in item["invalid_transactions"][0]["message"]
        )
