"""The replay window: which entries already executed, so that a copy of one is ignored.

An entry is remembered from the block that executed it until every copy of it would be refused
by its own timestamp anyway (its application bounds how long an entry stays valid), and no longer,
so memory stays bounded. Entries found Invalid are remembered (bounded) to answer status queries.
A block changes the window all at once, at its end (`BlockStage`, then `commit`); the chain itself
(which block may follow which) is `conclavium.chain`.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Container
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

MAX_RECENT_INVALID = 200_000


@dataclass
class BlockStage:
    """What a block changes besides state, kept aside until all of its entries have run."""

    forget: int  # how many of the oldest replay-window blocks this block forgets
    forgotten: set[bytes]  # the ids those blocks hold: no longer replays
    max_ts: int  # the latest time an entry of the block was dated (at least the block time)
    executed: set[bytes] = field(default_factory=set)
    leaves: list[tuple[bytes, bytes]] = field(default_factory=list)  # (entry id, write digest)


class ReplayWindow:
    def __init__(self) -> None:
        # Ids of entries executed recently -> their height, and per block the time after which a
        # copy of its entries is refused by its timestamp anyway (then forgotten).
        self.recent: dict[bytes, int] = {}
        self.blocks: deque[tuple[int, int, list[bytes]]] = deque()  # (forget after ms, height, ids)
        self.invalid: OrderedDict[bytes, tuple[str, str]] = OrderedDict()

    def stage(self, now_ms: int, keep: Container[int]) -> BlockStage:
        """Open the window's stage for a block at `now_ms`. It forgets the oldest blocks whose
        every entry would now be refused as expired; blocks in `keep` (not yet committed) stay for
        their status."""
        n = 0
        for forget_after, height, _ in self.blocks:
            if forget_after >= now_ms or height in keep:
                break
            n += 1
        return BlockStage(n, {eid for _, _, ids in islice(self.blocks, n) for eid in ids}, now_ms)

    def seen(self, eid: bytes, stage: BlockStage) -> bool:
        """Whether `eid` is a copy of an entry executed before (in this block or the window)."""
        return eid in stage.executed or (eid in self.recent and eid not in stage.forgotten)

    def commit(self, stage: BlockStage, height: int, invalid: list[tuple[bytes, str, str]], validity_ms: int) -> None:
        for _ in range(stage.forget):
            _, _, ids = self.blocks.popleft()
            for eid in ids:
                self.recent.pop(eid, None)
        leaves = stage.leaves
        for eid, _ in leaves:
            self.recent[eid] = height
        if leaves:
            self.blocks.append((stage.max_ts + validity_ms, height, [e for e, _ in leaves]))
        for eid, code, message in invalid:
            self.invalid[eid] = (code, message)
        while len(self.invalid) > MAX_RECENT_INVALID:
            self.invalid.popitem(last=False)

    # --- snapshots ------------------------------------------------------------------------------

    def snapshot_parts(self) -> tuple[list[list[Any]], list[list[Any]]]:
        return [[f, h, ids] for f, h, ids in self.blocks], [[e, *v] for e, v in self.invalid.items()]

    def restore(self, recent: list[Any], invalid: list[Any]) -> None:
        self.blocks = deque((f, h, list(ids)) for f, h, ids in recent)
        self.recent = {eid: h for _, h, ids in self.blocks for eid in ids}
        self.invalid = OrderedDict((e, (a, b)) for e, a, b in invalid)
