"""The executor's deterministic core on hand-built blocks: the commit rule, divergence (fork)
detection, the chain rule and determinism across machines."""

from __future__ import annotations

from pathlib import Path

import pytest
from machine_harness import Chain, bootstrap, new_machine

from conclavium.block import CommitSig, statement
from conclavium.chain import ChainError


async def _executed(chain: Chain, machines: list, entries: list) -> tuple:
    raw, seq = chain.block(entries)
    for m in machines:
        await m.apply(raw, seq)
    rec = machines[0].uncommitted[chain.height]
    return rec


async def test_commit_needs_a_quorum_of_trusted_signatures() -> None:
    chain = Chain()
    m = new_machine(chain)
    await bootstrap(chain, m)
    rec = await _executed(chain, [m], [chain.tx("a", 1), chain.tx("b", 2)])
    assert rec.quorum == 2
    _, out = await m.apply(*chain.block([], [chain.sig_of(0, rec)]))
    assert not out.committed and m.tx_status(rec.leaves[0][0])["status"] == "Pending"
    stranger = Chain(1).nodes[0]
    stmt = statement("unit", rec.height, rec.hash, rec.root, rec.quorum, rec.ts_ms)
    forged = CommitSig(stranger.id, rec.height, rec.hash, rec.root, rec.quorum, stranger.key.sign(stmt), rec.ts_ms)
    _, out = await m.apply(*chain.block([], [forged, chain.sig_of(0, rec)]))
    assert not out.committed, "an untrusted signer and a repeated signer do not make a quorum"
    _, out = await m.apply(*chain.block([], [chain.sig_of(2, rec)]))
    assert [r.height for r in out.committed] == [rec.height]
    assert m.tx_status(rec.leaves[1][0]) == {"status": "Committed", "height": rec.height, "index": 1}


async def test_divergent_root_signed_by_a_quorum_is_a_fork() -> None:
    chain = Chain()
    m = new_machine(chain)
    await bootstrap(chain, m)
    rec = await _executed(chain, [m], [chain.tx("a", 1)])
    other_root = bytes(32)
    sigs = [chain.sig_of(i, rec, other_root) for i in (1, 2)]
    _, out = await m.apply(*chain.block([], sigs))
    assert out.fork and m.fork_reason and "diverged" in m.fork_reason
    assert not out.committed


@pytest.mark.parametrize("when", ["an hour earlier", "unsigned"])
async def test_signatures_over_another_time_do_not_commit_the_block(when: str) -> None:
    """From rules version 4 the ledger time is in the statement: a quorum's signatures over the
    right block, root and quorum but another time (or none, the statement before version 4) are
    not this node's block: nothing commits, and a quorum of them is a fork."""
    chain = Chain()
    m = new_machine(chain)
    await bootstrap(chain, m)
    rec = await _executed(chain, [m], [chain.tx("a", 1)])
    assert rec.timed and rec.signed_time() == rec.ts_ms
    chain.timed = when != "unsigned"
    sigs = [chain.sig(i, rec.height, rec.hash, rec.root, rec.quorum, rec.ts_ms - 3_600_000) for i in range(3)]
    _, out = await m.apply(*chain.block([], sigs))
    assert not out.committed and m.tx_status(rec.leaves[0][0])["status"] == "Pending"
    assert out.fork and "root or time" in out.fork


async def test_a_ledger_before_rules_version_4_signs_no_time() -> None:
    """Blocks applied under rules version 3 are signed without a time (the statement an older
    ledger's blocks replay with): a signature with a time is not one on this block."""
    chain = Chain()
    m = new_machine(chain)
    await bootstrap(chain, m, config={"rules_version": 3})
    assert not chain.timed
    rec = await _executed(chain, [m], [chain.tx("a", 1)])
    assert not rec.timed and rec.signed_time() is None
    chain.timed = True
    _, out = await m.apply(*chain.block([], [chain.sig(0, rec.height, rec.hash, rec.root, rec.quorum, rec.ts_ms)]))
    chain.timed = False
    _, out = await m.apply(*chain.block([], [chain.sig_of(1, rec)]))
    assert not out.committed, "a signature with a time does not count for a block of rules version 3"
    _, out = await m.apply(*chain.block([], [chain.sig_of(2, rec)]))
    assert [r.height for r in out.committed] == [rec.height] and out.committed[0].signatures.keys() == {
        chain.nodes[1].id,
        chain.nodes[2].id,
    }


async def test_one_divergent_signer_is_not_a_fork() -> None:
    chain = Chain()
    m = new_machine(chain)
    await bootstrap(chain, m)
    rec = await _executed(chain, [m], [chain.tx("a", 1)])
    _, out = await m.apply(*chain.block([], [chain.sig_of(1, rec, bytes(32))]))
    assert out.fork is None and m.fork_reason is None


async def test_chain_rule_refuses_without_changing_anything() -> None:
    chain = Chain()
    m = new_machine(chain)
    await bootstrap(chain, m)
    tip = m.tip
    chain.prev = bytes(32)
    with pytest.raises(ChainError) as e:
        await m.apply(*chain.block([chain.tx("b", 2)]))
    assert e.value.reason == "bad_prev" and m.tip == tip
    chain.height += 5
    with pytest.raises(ChainError) as e:
        await m.apply(*chain.block([chain.tx("c", 3)]))
    assert e.value.reason == "bad_height" and m.tip == tip
    with pytest.raises(ChainError) as e:
        await m.apply(b"\x93garbage", 99)
    assert e.value.reason == "malformed"


async def test_two_machines_reach_the_same_roots_and_snapshots() -> None:
    chain = Chain()
    a, b = new_machine(chain), new_machine(chain)
    blocks = []
    orig_apply = a.apply

    async def record(raw: bytes, seq: int):
        blocks.append((raw, seq))
        return await orig_apply(raw, seq)

    a.apply = record  # type: ignore[method-assign]
    await bootstrap(chain, a)
    for raw, seq in blocks:
        await b.apply(raw, seq)
    for i in range(5):
        await _executed(chain, [a, b], [chain.tx(f"k{i}", i), chain.tx(f"j{i}", {"v": i})])
    assert [r.root for r in a.uncommitted.values()] == [r.root for r in b.uncommitted.values()]
    assert a.snapshot() == b.snapshot()
    c = new_machine(chain)
    c.restore(a.snapshot())
    rec = await _executed(chain, [a, c], [chain.tx("after", 1)])
    assert c.uncommitted[rec.height].root == rec.root and c.snapshot() == a.snapshot()


async def test_replay_within_and_beyond_the_window() -> None:
    chain = Chain()
    m = new_machine(chain)
    await bootstrap(chain, m)
    entry = chain.tx("once", 1)
    rec = await _executed(chain, [m], [entry, entry])
    assert len(rec.leaves) == 1, "a duplicate in one block is dropped"
    await m.apply(*chain.block([], [chain.sig_of(i, rec) for i in (0, 1)]))
    raw, seq = chain.block([entry])
    _, out = await m.apply(raw, seq)
    assert chain.height not in m.uncommitted and not out.invalid, "a later copy is ignored"
    chain.ts += 10 * 60 * 1000
    _, out = await m.apply(*chain.block([entry]))
    assert [code for _, code, _ in out.invalid] == ["expired"], "outside the window the timestamp refuses it"


async def test_a_forked_executor_is_not_ready_and_stops_signing(tmp_path: Path) -> None:
    from services.executor.executor import Executor, ExecutorConfig

    ex = Executor(ExecutorConfig(ledger="unit", name="x", data_dir=tmp_path, nats_url="nats://127.0.0.1:1"))
    chain = Chain()
    await bootstrap(chain, ex.machine)
    ex.machine.fork_reason = "a quorum signed a different root at height 7: this node diverged"
    ok, reason = ex.ready()
    assert not ok and reason.startswith("fork_detected:")
    published = []
    ex._publish_intake = lambda batch, msg_id: published.append(batch)  # type: ignore[method-assign]
    await ex._sign_uncommitted()
    assert published == []


async def test_divergent_signers_survive_a_snapshot() -> None:
    """A fork is detected when a quorum signed another root, even if the executor restarted from a
    snapshot between the divergent signatures (found by the block application properties)."""
    chain = Chain()
    m = new_machine(chain)
    await bootstrap(chain, m)
    rec = await _executed(chain, [m], [chain.tx("a", 1)])
    _, out = await m.apply(*chain.block([], [chain.sig_of(1, rec, bytes(32))]))
    assert out.fork is None
    restored = new_machine(chain)
    restored.restore(m.snapshot())
    raw, seq = chain.block([], [chain.sig_of(2, rec, bytes(32))])
    for machine in (m, restored):
        _, out = await machine.apply(raw, seq)
        assert out.fork and "diverged" in out.fork
    assert restored.snapshot() == m.snapshot()


async def test_a_detected_fork_survives_a_snapshot() -> None:
    """A node that found it diverged stays stopped after restoring its snapshot, and reports the fork
    once, as the node that never restarted does (found by the block application properties)."""
    chain = Chain()
    m = new_machine(chain)
    await bootstrap(chain, m)
    rec = await _executed(chain, [m], [chain.tx("a", 1)])
    sigs = [chain.sig_of(i, rec, bytes(32)) for i in (1, 2)]
    _, out = await m.apply(*chain.block([], sigs))
    assert out.fork and m.fork_reason
    restored = new_machine(chain)
    restored.restore(m.snapshot())
    assert restored.fork_reason == m.fork_reason
    raw, seq = chain.block([], [chain.sig_of(0, rec, bytes(32))])
    for machine in (m, restored):
        _, out = await machine.apply(raw, seq)
        assert out.fork is None
    assert restored.snapshot() == m.snapshot()
