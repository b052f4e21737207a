"""Properties of the notary's uniqueness over random request sequences (hypothesis, marker fuzz):
the executor's answers and state equal a plain model of Corda's uniqueness rules, every consumed
state names a notarised transaction that had it as an input, no state is ever consumed by two
transactions, and a second executor given the same blocks reaches the same roots and state.

Budget: 60 examples of up to 6 blocks (a few seconds); CONCLAVIUM_FUZZ_SCALE=10 runs ten times as many.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from machine_harness import LEDGER, Chain, bootstrap
from notary_support import enable_notary, entry

from conclavium.notary import TimeWindow, make
from conclavium.notary.request import state_ref
from services.executor.apps.notary import CONSUMED, NOTARISED
from services.executor.ledger_machine import LedgerMachine
from services.executor.verifier import BatchVerifier

pytestmark = pytest.mark.fuzz
FUZZ_SCALE = int(os.environ.get("CONCLAVIUM_FUZZ_SCALE", "1"))
STATES = [state_ref(bytes([i]) * 32, i % 3) for i in range(8)]
TX_IDS = [bytes([0xA0 + i]) * 32 for i in range(6)]

REQUEST = st.fixed_dictionaries(
    {
        "party": st.integers(0, 1),
        "tx": st.integers(0, len(TX_IDS) - 1),
        "inputs": st.lists(st.sampled_from(STATES), min_size=1, max_size=3, unique=True),
        "references": st.lists(st.sampled_from(STATES), max_size=2, unique=True),
        "window": st.none() | st.tuples(st.integers(-30, 30) | st.none(), st.integers(-30, 30) | st.none()),
    }
)
BLOCKS = st.lists(st.lists(REQUEST, min_size=1, max_size=5), min_size=1, max_size=6)


class Model:
    """Corda's uniqueness rules, written as plainly as possible."""

    def __init__(self) -> None:
        self.consumed: dict[str, str] = {}
        self.notarised: dict[str, tuple[list[str], list[str], Any]] = {}

    def apply(self, tx: str, inputs: list[str], refs: list[str], window: TimeWindow | None, now: int) -> str | None:
        tw = window.to_json() if window else None
        if tx in self.notarised:
            return None if self.notarised[tx] == (inputs, refs, tw) else "tx_id_reused"
        if any(s in self.consumed for s in inputs + refs):
            return "conflict"
        if window is not None and not window.contains(now):
            return "time_window_invalid"
        for s in inputs:
            self.consumed[s] = tx
        self.notarised[tx] = (inputs, refs, tw)
        return None


def _window(spec: Any, now: int) -> TimeWindow | None:
    if spec is None or spec == (None, None):
        return None
    lo, hi = (now + spec[0] if spec[0] is not None else None), (now + spec[1] if spec[1] is not None else None)
    if lo is not None and hi is not None and lo >= hi:
        return None
    return TimeWindow(lo, hi)


_START: dict[str, Any] = {}


async def _start() -> tuple[Chain, bytes, tuple[int, bytes, int, int]]:
    """One bootstrapped ledger with the notary enabled, made once: each example restores it."""
    if not _START:
        chain = Chain()
        m = LedgerMachine(LEDGER, BatchVerifier(1), secrets=chain.secrets)
        await bootstrap(chain, m)
        parties = [chain.user.key_id, chain.member.key_id]
        await m.apply(*chain.block(enable_notary(chain.member, LEDGER, parties, chain.ts // 1000)))
        _START.update(chain=chain, snap=m.snapshot(), pos=(chain.height, chain.prev, chain.ts, chain.seq))
    return _START["chain"], _START["snap"], _START["pos"]


async def run_example(blocks: list[list[dict[str, Any]]]) -> None:
    chain, snap, pos = await _start()
    chain.height, chain.prev, chain.ts, chain.seq = pos
    a, b = (LedgerMachine(LEDGER, BatchVerifier(1), secrets=chain.secrets) for _ in range(2))
    a.restore(snap)
    b.restore(snap)
    keys = [chain.user, chain.member]
    model = Model()
    for specs in blocks:
        now = chain.ts + 10  # the next block's time
        reqs, expected = [], []
        for spec in specs:
            refs = [s for s in spec["references"] if s not in spec["inputs"]]
            window = _window(spec["window"], now)
            tx = TX_IDS[spec["tx"]].hex()
            reqs.append(make(keys[spec["party"]], LEDGER, tx, spec["inputs"], refs, window, ts_ms=now))
            expected.append(model.apply(tx, spec["inputs"], refs, window, now))
        raw = chain.block([entry(r) for r in reqs])
        _, out_a = await a.apply(*raw)
        _, out_b = await b.apply(*raw)
        got = {eid.hex(): code for eid, code, _ in out_a.invalid}
        for r, want in zip(reqs, expected, strict=True):
            assert got.get(r.hash) == want, (r.fields, got.get(r.hash), want)
        assert out_a.invalid == out_b.invalid
        roots = [m.uncommitted[m.tip.height].root if m.tip.height in m.uncommitted else None for m in (a, b)]
        assert roots[0] == roots[1]
    consumed = dict(a.state.items(CONSUMED))
    assert {s: row["tx"] for s, row in consumed.items()} == model.consumed
    for s, row in consumed.items():
        assert s in a.state.get(NOTARISED, row["tx"])["inputs"]
    assert a.state.maps == b.state.maps


@settings(
    max_examples=60 * FUZZ_SCALE,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
@given(BLOCKS)
def test_uniqueness_matches_the_model(blocks: list[list[dict[str, Any]]]) -> None:
    asyncio.run(run_example(blocks))
