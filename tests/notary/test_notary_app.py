"""The notary application in the executor's deterministic core: uniqueness, conflicts naming the
consuming transaction, idempotent re-notarisation, references, time windows, tear-offs, parties."""

from __future__ import annotations

import hashlib
import json

from machine_harness import LEDGER, Chain, bootstrap
from notary_support import enable_notary, entry, fresh_ref, request

from conclavium.crypto.keys import PrivateKey
from conclavium.notary import TimeWindow, make, statement_digest
from conclavium.notary.request import NOTARY_GROUPS
from services.executor.apps.notary import CONSUMED, NOTARISED
from services.executor.ledger_machine import LedgerMachine
from services.executor.verifier import BatchVerifier


async def notary_ledger(n: int = 1) -> tuple[Chain, list[LedgerMachine]]:
    chain = Chain()
    machines = [LedgerMachine(LEDGER, BatchVerifier(1), secrets=chain.secrets) for _ in range(n)]
    await bootstrap(chain, machines[0])
    for m in machines[1:]:
        m.restore(machines[0].snapshot())
    block = chain.block(enable_notary(chain.member, LEDGER, [chain.user.key_id, chain.member.key_id], chain.ts // 1000))
    for m in machines:
        await m.apply(*block)
    return chain, machines


async def run(chain: Chain, m: LedgerMachine, entries: list, ts: int | None = None) -> dict[str, tuple[str, str]]:
    """Apply a block; returns {request entry id hex: (code, message)} of the Invalid ones."""
    _, out = await m.apply(*chain.block(entries, ts=ts))
    return {eid.hex(): (code, msg) for eid, code, msg in out.invalid}


async def test_a_request_is_notarised_and_its_inputs_consumed() -> None:
    chain, (m,) = await notary_ledger()
    a, b = fresh_ref(), fresh_ref(1)
    req, wtx = request(chain.user, LEDGER, [a, b])
    assert await run(chain, m, [entry(req)]) == {}
    assert m.state.get(CONSUMED, a) == {"tx": wtx.id.hex(), "party": chain.user.key_id}
    assert m.state.get(NOTARISED, wtx.id.hex())["inputs"] == [a, b]
    rec = m.uncommitted[m.tip.height]
    assert rec.leaves[-1] == (bytes.fromhex(req.hash), statement_digest(LEDGER, req.fields))


async def test_a_double_spend_in_one_block_names_the_consuming_transaction() -> None:
    chain, (m,) = await notary_ledger()
    shared, other = fresh_ref(), fresh_ref()
    first, wtx1 = request(chain.user, LEDGER, [shared])
    second, wtx2 = request(chain.member, LEDGER, [other, shared])
    invalid = await run(chain, m, [entry(first), entry(second)])
    code, message = invalid[second.hash]
    assert code == "conflict" and first.hash not in invalid
    detail = json.loads(message)
    assert detail == {
        "tx_id": wtx2.id.hex(),
        "consumed_states": {
            shared: {"hash_of_transaction_id": hashlib.sha256(wtx1.id).hexdigest(), "type": "INPUT_STATE"}
        },
    }
    assert m.state.get(CONSUMED, other) is None  # nothing of the refused request stays: atomic


async def test_conflicts_across_blocks_and_reference_states() -> None:
    chain, (m,) = await notary_ledger()
    a, b, c = fresh_ref(), fresh_ref(), fresh_ref()
    first, wtx1 = request(chain.user, LEDGER, [a, b])
    assert await run(chain, m, [entry(first)]) == {}
    again, _ = request(chain.member, LEDGER, [c, b])
    by_ref, _ = request(chain.member, LEDGER, [c], references=[a])
    fine, _ = request(chain.member, LEDGER, [c], references=[fresh_ref()])
    invalid = await run(chain, m, [entry(again), entry(by_ref), entry(fine)])
    consumed_b = json.loads(invalid[again.hash][1])["consumed_states"]
    assert list(consumed_b) == [b] and consumed_b[b]["type"] == "INPUT_STATE"
    consumed_a = json.loads(invalid[by_ref.hash][1])["consumed_states"]
    assert consumed_a == {a: {"hash_of_transaction_id": hashlib.sha256(wtx1.id).hexdigest(), "type": "REFERENCE_STATE"}}
    assert fine.hash not in invalid and m.state.get(CONSUMED, c) is not None


async def test_re_notarising_is_idempotent_and_a_reused_id_is_refused() -> None:
    chain, (m,) = await notary_ledger()
    a = fresh_ref()
    window = TimeWindow(None, chain.ts + 1_000)
    req, wtx = request(chain.user, LEDGER, [a], window=window)
    assert await run(chain, m, [entry(req)]) == {}
    # a new request for the same transaction, later, after its time window: the same answer
    retry = make(chain.user, LEDGER, wtx.id.hex(), [a], [], window, wtx.tear_off(NOTARY_GROUPS), ts_ms=chain.ts + 5_000)
    assert await run(chain, m, [entry(retry)], ts=chain.ts + 5_000) == {}
    rec = m.uncommitted[m.tip.height]
    assert rec.leaves[-1][1] == statement_digest(LEDGER, req.fields)
    # the identical entry again is a resubmission, ignored; another state list under that id is refused
    other = make(chain.user, LEDGER, wtx.id.hex(), [a, fresh_ref()], [], window, ts_ms=chain.ts + 5_000)
    invalid = await run(chain, m, [entry(req), entry(other)], ts=chain.ts + 5_000)
    assert invalid == {other.hash: ("tx_id_reused", invalid[other.hash][1])}


async def test_time_window_from_inclusive_until_exclusive_against_block_time() -> None:
    chain, (m,) = await notary_ledger()
    t = chain.ts + 10  # the next block's ledger time (the chain steps 10 ms a block)
    cases = {
        "before": TimeWindow(t + 1, None),
        "from_is_inclusive": TimeWindow(t, t + 100),
        "inside": TimeWindow(t - 100, t + 100),
        "until_is_exclusive": TimeWindow(None, t),
        "after": TimeWindow(t - 100, t - 1),
    }
    reqs = {name: request(chain.user, LEDGER, [fresh_ref()], window=w, ts=t)[0] for name, w in cases.items()}
    invalid = await run(chain, m, [entry(r) for r in reqs.values()])
    assert m.tip.ts_ms == t
    refused = {name for name, r in reqs.items() if r.hash in invalid}
    assert refused == {"before", "until_is_exclusive", "after"}
    assert all(invalid[reqs[n].hash][0] == "time_window_invalid" for n in refused)
    assert json.loads(invalid[reqs["before"].hash][1])["current_time"] == t


async def test_a_tampered_tear_off_is_refused() -> None:
    chain, (m,) = await notary_ledger()
    a, b = fresh_ref(), fresh_ref()
    wtx = request(chain.user, LEDGER, [a])[1]
    ftx = wtx.tear_off(NOTARY_GROUPS)
    lies = {
        "claims another input": make(chain.user, LEDGER, wtx.id.hex(), [b], [], None, ftx),
        "hides an input": make(chain.user, LEDGER, wtx.id.hex(), [a], [], None, wtx.tear_off([4])),
        "another id": make(chain.user, LEDGER, "ab" * 32, [a], [], None, ftx),
        "claims a time window": make(chain.user, LEDGER, wtx.id.hex(), [a], [], TimeWindow(0, 2**52), ftx),
    }
    doc = ftx.to_json()
    doc["groups"][0]["nonces"][0] = "00" * 32
    from conclavium.notary import FilteredTransaction

    lies["forged nonce"] = make(chain.user, LEDGER, wtx.id.hex(), [a], [], None, FilteredTransaction.from_json(doc))
    other_notary = request(chain.user, "another-ledger", [a])[1]
    lies["names another notary"] = make(
        chain.user, LEDGER, other_notary.id.hex(), [a], [], None, other_notary.tear_off(NOTARY_GROUPS)
    )
    invalid = await run(chain, m, [entry(r) for r in lies.values()])
    assert {name: invalid[r.hash][0] for name, r in lies.items()} == dict.fromkeys(lies, "bad_tear_off")
    assert m.state.get(CONSUMED, a) is None and m.state.get(CONSUMED, b) is None


async def test_only_registered_parties_with_their_own_signature() -> None:
    chain, (m,) = await notary_ledger()
    stranger = PrivateKey.generate()
    by_stranger = request(stranger, LEDGER, [fresh_ref()])[0]
    good = request(chain.user, LEDGER, [fresh_ref()])[0]
    forged = type(good)(good.body, chain.member.sign(good.body), good.fields)
    invalid = await run(chain, m, [entry(by_stranger), entry(forged)])
    assert invalid[by_stranger.hash][0] == "unknown_party" and invalid[forged.hash][0] == "bad_signature"


async def test_three_executors_agree_on_roots_and_state() -> None:
    chain, machines = await notary_ledger(3)
    shared = fresh_ref()
    reqs = [request(k, LEDGER, [shared, fresh_ref()])[0] for k in (chain.user, chain.member, chain.user)]
    block = chain.block([entry(r) for r in reqs])
    outs = [await m.apply(*block) for m in machines]
    assert len({m.uncommitted[m.tip.height].root for m in machines}) == 1
    assert len({tuple(o.invalid) for _, o in outs}) == 1 and len(outs[0][1].invalid) == 2
    assert len({m.snapshot() for m in machines}) == 1
