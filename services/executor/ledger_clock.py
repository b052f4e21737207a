"""Ledger time: the sequencer proposes each block's timestamp, a quorum of executors' clocks bounds it.

The sequencer is untrusted, so its timestamp alone must not decide whether a transaction has
expired or a certificate is still valid. Executors sign their local clock (`ClockSig`) and the
sequencer orders those signatures like any other intake. In block order every executor:

1. records the verified clock signatures of trusted nodes in the public table `public:sys.clocks`,
   keeping each node's latest (highest) clock;
2. takes the reference `ref`: the q-th highest of the trusted nodes' clocks, q the commit quorum
   (the latest time a commit quorum has vouched for, so fewer than q wrong clocks move nothing;
   while fewer than q nodes have a clock, the lowest of them);
3. computes the block time = max(previous block time, clamp(block.ts_ms, ref - B, ref + B)), B the
   service's `clock_tolerance_ms`.

Everything here is a function of the ledger's bytes and the state, so every honest executor reaches
the same block times whatever its own clock says. Before genesis there is no clock: the Genesis
message's signed `ts` seeds its node's clock and bounds the genesis block.
"""

from __future__ import annotations

from typing import Any, Protocol

from conclavium.block import ClockSig

from . import node_auth

CLOCKS = "public:sys.clocks"
DEFAULT_CLOCK_TOLERANCE_MS = 30_000
AHEAD = "ahead"
BEHIND = "behind"
MAX_TRIES_PER_NODE = 4


class _Verifier(Protocol):
    def verify(self, signature: bytes, data: bytes) -> bool: ...


class _Table(Protocol):
    def get(self, map_name: str, key: str) -> Any | None: ...

    def put(self, map_name: str, key: str, value: Any) -> None: ...

    def items(self, map_name: str) -> Any: ...


def record(state: _Table, clocks: list[ClockSig], trusted: dict[str, _Verifier], ledger: str) -> None:
    """Raise each trusted node's recorded clock to the highest of its valid signatures in `clocks`.

    Per node, candidates are tried from the highest down and only while they would raise its clock,
    at most MAX_TRIES_PER_NODE of them: replays cost nothing, and a block stuffed with forged clock
    signatures costs a bounded number of verifications (honest nodes send one per 200 ms at most).
    """
    by_node: dict[str, list[ClockSig]] = {}
    for c in clocks:
        if c.node in trusted:
            by_node.setdefault(c.node, []).append(c)
    for node in sorted(by_node):
        row = state.get(CLOCKS, node)
        current = row["clock_ms"] if row is not None else None
        candidates = sorted(by_node[node], key=lambda c: c.clock_ms, reverse=True)
        for c in candidates[:MAX_TRIES_PER_NODE]:
            if current is not None and c.clock_ms <= current:
                break
            if node_auth.clock_sig_ok(c, trusted, ledger):
                state.put(CLOCKS, node, {"clock_ms": c.clock_ms})
                break


def seed(state: _Table, node: str, clock_ms: int) -> None:
    """The genesis node's first clock: the `ts` of the Genesis message it signed."""
    state.put(CLOCKS, node, {"clock_ms": clock_ms})


def reference(state: _Table, trusted: dict[str, Any], quorum: int) -> int | None:
    """The q-th highest clock of the trusted nodes (the lowest while fewer than q have one);
    None before any trusted node has a clock."""
    clocks = sorted((row["clock_ms"] for node, row in state.items(CLOCKS) if node in trusted), reverse=True)
    if not clocks:
        return None
    return clocks[min(max(quorum, 1), len(clocks)) - 1]


def block_time(previous: int, proposed: int, ref: int | None, tolerance: int) -> tuple[int, str | None]:
    """(block time, AHEAD/BEHIND when the proposed timestamp was outside ref ± tolerance, else None).

    Without a reference (before genesis) the time stays where it was: nothing executes against it.
    """
    if ref is None:
        return previous, None
    clamped: str | None = None
    bounded = proposed
    if proposed > ref + tolerance:
        bounded, clamped = ref + tolerance, AHEAD
    elif proposed < ref - tolerance:
        bounded, clamped = ref - tolerance, BEHIND
    return max(previous, bounded), clamped


def valid_tolerance(value: Any, tx_validity_ms: int) -> bool:
    """B must be a positive integer below the transaction validity window: the sequencer can push
    ledger time up to B ahead of the clocks clients also follow, and a fresh transaction must stay
    valid at that time."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < tx_validity_ms
