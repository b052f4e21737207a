"""The ledger's time bound (services/executor/ledger_clock.py): block time follows a commit quorum's
signed clocks, whatever the sequencer stamps and whatever a minority of executors' clocks say."""

from __future__ import annotations

import pytest
from machine_harness import LEDGER, Chain, bootstrap, new_machine

from conclavium.block import ClockSig
from services.executor import ledger_clock
from services.executor.ledger_clock import AHEAD, BEHIND, CLOCKS, DEFAULT_CLOCK_TOLERANCE_MS
from services.executor.state import State

B = DEFAULT_CLOCK_TOLERANCE_MS
TEN_YEARS_MS = 10 * 365 * 24 * 3600 * 1000


class _Key:
    """Stands for a node's public key: signatures are `ok` or not."""

    def verify(self, signature: bytes, data: bytes) -> bool:
        return signature == b"ok"


def test_block_time_is_the_stamp_inside_the_bound_and_the_bound_outside() -> None:
    ref = 1_000_000
    assert ledger_clock.block_time(0, ref + 5, ref, B) == (ref + 5, None)
    assert ledger_clock.block_time(0, ref + TEN_YEARS_MS, ref, B) == (ref + B, AHEAD)
    assert ledger_clock.block_time(0, ref - TEN_YEARS_MS, ref, B) == (ref - B, BEHIND)
    assert ledger_clock.block_time(ref + B, ref, ref, B) == (ref + B, None), "never goes back"
    assert ledger_clock.block_time(7, 12345, None, B) == (7, None), "no reference: time stays"


def test_reference_is_the_quorum_th_highest_clock_of_trusted_nodes() -> None:
    state = State()
    trusted = {"a": _Key(), "b": _Key(), "c": _Key()}
    ledger_clock.record(
        state,
        [ClockSig("a", 100, b"ok"), ClockSig("b", 200, b"ok"), ClockSig("c", 10**15, b"ok"), ClockSig("x", 9, b"ok")],
        trusted,
        LEDGER,
    )
    assert ledger_clock.reference(state, trusted, 2) == 200, "one clock far ahead moves nothing"
    assert ledger_clock.reference(state, trusted, 3) == 100
    assert state.get(CLOCKS, "x") is None, "an untrusted node's clock is not recorded"
    ledger_clock.record(state, [ClockSig("b", 150, b"ok"), ClockSig("a", 10**15, b"forged")], trusted, LEDGER)
    assert state.get(CLOCKS, "b") == {"clock_ms": 200}, "a node's clock never goes back"
    assert state.get(CLOCKS, "a") == {"clock_ms": 100}, "a bad signature is ignored"
    assert ledger_clock.reference(state, {"a": _Key()}, 2) == 100, "fewer clocks than q: the lowest"
    assert ledger_clock.reference(State(), trusted, 2) is None


def test_a_block_stuffed_with_forged_clocks_costs_a_bounded_number_of_verifications() -> None:
    class Counting(_Key):
        calls = 0

        def verify(self, signature: bytes, data: bytes) -> bool:
            Counting.calls += 1
            return super().verify(signature, data)

    state = State()
    forged = [ClockSig("a", 10**12 + i, b"forged") for i in range(10_000)]
    ledger_clock.record(state, [ClockSig("a", 500, b"ok"), *forged], {"a": Counting()}, LEDGER)
    assert Counting.calls == ledger_clock.MAX_TRIES_PER_NODE and state.get(CLOCKS, "a") is None
    ledger_clock.record(state, [ClockSig("a", 500, b"ok"), ClockSig("a", 400, b"ok")], {"a": Counting()}, LEDGER)
    assert state.get(CLOCKS, "a") == {"clock_ms": 500}, "the highest valid one wins"


async def test_a_block_dated_ten_years_ahead_executes_at_the_bound_and_the_ledger_goes_on() -> None:
    chain = Chain()
    m = new_machine(chain)
    await bootstrap(chain, m)
    _, out = await m.apply(*chain.block([chain.tx("future", 1)], ts=chain.ts + TEN_YEARS_MS))
    assert out.clamped == AHEAD and m.tip.ts_ms == chain.ts + B
    assert not out.invalid, "a fresh transaction is still valid at ref + B"
    _, out = await m.apply(*chain.block([chain.tx("next", 2)]))
    assert out.clamped is None and not out.invalid and m.tip.ts_ms == chain.ts - 10 + B


async def test_a_block_dated_far_behind_is_clamped_up() -> None:
    chain = Chain()
    m = new_machine(chain)
    await bootstrap(chain, m)
    before = m.tip.ts_ms
    _, out = await m.apply(*chain.block([chain.tx("past", 1)], ts=chain.ts - TEN_YEARS_MS))
    assert out.clamped == BEHIND and m.tip.ts_ms == max(before, chain.ts - B) == before
    assert not out.invalid
    chain.ts += 5 * B
    _, out = await m.apply(*chain.block([chain.tx("later", 1)], ts=chain.ts - TEN_YEARS_MS))
    assert out.clamped == BEHIND and m.tip.ts_ms == chain.ts - B, "held back, time still follows the clocks"
    assert not out.invalid


async def test_a_minority_of_lying_clocks_moves_nothing() -> None:
    chain = Chain()
    m = new_machine(chain)
    await bootstrap(chain, m)
    t = chain.ts + 10  # the next block's time on the chain's (honest) clock
    ahead = t + TEN_YEARS_MS
    liars = [chain.clock(0, t), chain.clock(1, t), chain.clock(2, ahead)]
    _, out = await m.apply(*chain.block([chain.tx("a", 1)], clocks=liars, ts=ahead))
    assert out.clamped == AHEAD and m.tip.ts_ms == t + B
    assert not out.invalid
    behind = chain.ts - TEN_YEARS_MS
    _, out = await m.apply(*chain.block([chain.tx("b", 2)], clocks=[chain.clock(2, behind)], ts=behind))
    assert out.clamped == BEHIND and not out.invalid, "a stale clock cannot pull the time back either"


async def test_a_quorum_of_clocks_moves_the_time_and_expires_old_transactions() -> None:
    chain = Chain()
    m = new_machine(chain)
    await bootstrap(chain, m)
    old = chain.tx("old", 1)
    chain.ts += 10 * 60 * 1000
    _, out = await m.apply(*chain.block([old], clocks=[chain.clock(0, chain.ts + 10)]))
    assert out.clamped == AHEAD and not out.invalid, "one node's clock alone does not move the time"
    _, out = await m.apply(*chain.block([chain.tx("old2", 1, ts=chain.ts - 10 * 60 * 1000)]))
    assert [code for _, code, _ in out.invalid] == ["expired"], "two of three clocks do"


async def test_executors_with_different_skews_reach_the_same_times_roots_and_snapshots() -> None:
    """The machines are the same code; what differs between executors is their clocks, and those
    only reach execution as signatures in the blocks, which every executor reads alike."""
    chain = Chain()
    a, b = new_machine(chain), new_machine(chain)
    blocks: list[tuple[bytes, int]] = []
    orig = a.apply

    async def record(raw: bytes, seq: int):  # type: ignore[no-untyped-def]
        blocks.append((raw, seq))
        return await orig(raw, seq)

    a.apply = record  # type: ignore[method-assign]
    await bootstrap(chain, a)
    for raw, seq in blocks:
        await b.apply(raw, seq)
    skews = [4_000, -7_000, 45_000]
    times: list[tuple[int, int]] = []
    for i in range(6):
        t = chain.ts + 10
        clocks = [chain.clock(n, t + skews[n]) for n in range(3)]
        stamp = t + (TEN_YEARS_MS if i == 3 else 0)
        raw, seq = chain.block([chain.tx(f"k{i}", i)], clocks=clocks, ts=stamp)
        _, out_a = await a.apply(raw, seq)
        _, out_b = await b.apply(raw, seq)
        assert out_a.clamped == out_b.clamped and not out_a.invalid
        times.append((a.tip.ts_ms, b.tip.ts_ms))
    assert all(x == y for x, y in times)
    assert times[3][0] == chain.ts - 20 + skews[0] + B, "ref is the 2nd highest clock: the +4 s node's"
    assert [r.root for r in a.uncommitted.values()] == [r.root for r in b.uncommitted.values()]
    assert a.snapshot() == b.snapshot()
    c = new_machine(chain)
    c.restore(a.snapshot())
    assert c.state.maps[CLOCKS] == a.state.maps[CLOCKS], "the clocks are part of the snapshot"
    raw, seq = chain.block([chain.tx("after", 1)], clocks=[], ts=chain.ts + TEN_YEARS_MS)
    await a.apply(raw, seq)
    await c.apply(raw, seq)
    assert c.tip.ts_ms == a.tip.ts_ms and c.snapshot() == a.snapshot()


async def test_genesis_is_bounded_by_its_signed_timestamp() -> None:
    chain = Chain()
    m = new_machine(chain)
    signed = chain.ts + 10
    _, out = await m.apply(*chain.block([chain.genesis_entry(at=signed)], clocks=[], ts=signed + TEN_YEARS_MS))
    assert not out.invalid and m.tip.ts_ms == signed + B
    assert m.state.get(CLOCKS, chain.nodes[0].id) == {"clock_ms": signed}


@pytest.mark.parametrize("tolerance", [0, -1, 120_000, "30000", True, 1.5])
async def test_a_genesis_with_a_bad_tolerance_is_invalid(tolerance: object) -> None:
    chain = Chain()
    m = new_machine(chain)
    _, out = await m.apply(*chain.block([chain.genesis_entry(config={"clock_tolerance_ms": tolerance})]))
    assert [code for _, code, _ in out.invalid] == ["invalid_genesis"] and not m.genesis_done


async def test_a_genesis_with_a_bad_validity_window_is_invalid() -> None:
    chain = Chain()
    m = new_machine(chain)
    _, out = await m.apply(*chain.block([chain.genesis_entry(config={"tx_validity_ms": "soon"})]))
    assert [code for _, code, _ in out.invalid] == ["invalid_genesis"] and not m.genesis_done


async def test_a_genesis_may_set_the_tolerance() -> None:
    chain = Chain()
    m = new_machine(chain)
    await bootstrap(chain, m, config={"clock_tolerance_ms": 5_000})
    _, out = await m.apply(*chain.block([], ts=chain.ts + 6_000))
    assert out.clamped == AHEAD and m.tip.ts_ms == chain.ts + 5_000
