"""What applying a block produces: its record for the commit rule, and its outcome for the executor."""

from __future__ import annotations

from dataclasses import dataclass, field

from conclavium import governance


@dataclass
class BlockRecord:
    height: int
    hash: bytes
    root: bytes
    quorum: int
    ts_ms: int
    leaves: list[tuple[bytes, bytes]]  # (entry id, write digest)
    signatures: dict[str, bytes] = field(default_factory=dict)
    divergent: set[str] = field(default_factory=set)
    committed: bool = False
    timed: bool = False  # applied under rules version 4 on: commit signatures cover ts_ms

    def signed_time(self) -> int | None:
        """The time a commit signature on this block states, None when its statement has none."""
        return self.ts_ms if self.timed else None


@dataclass
class BlockOutcome:
    height: int
    invalid: list[tuple[bytes, str, str]] = field(default_factory=list)  # (entry id, code, message)
    committed: list[BlockRecord] = field(default_factory=list)
    endorsed: list[tuple[str, str]] = field(default_factory=list)  # (node id, wrapped secrets b64)
    governance: list[governance.Outcome] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    fork: str | None = None
    clamped: str | None = None  # ledger_clock.AHEAD / BEHIND when the block's timestamp was bounded
    recovered: bool = False  # a recovery completed in this block (recovery_entries.py)
