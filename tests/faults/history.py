"""A Jepsen-style history of a register workload and its check against the ledger's promise.

Clients record every operation as an invocation followed by its completion, with monotonic times
and the client (process) id:

    ok    the operation took effect: a write is Committed (at `height`), a read returned `value`
          (answered at `height`);
    fail  it definitely did not take effect: a write the gateway refused or the ledger made Invalid,
          a read that returned nothing;
    info  unknown: a write submitted but never seen committed (a timeout, a connection lost).

`check(events, commits)` compares the history with what the ledger holds afterwards (`commits`:
every committed write of the workload, with its position) and returns the anomalies:

- every ok write is committed, exactly once, at the height its client was told (`lost_write`,
  `duplicate`, `wrong_height`); no write that failed is committed (`failed_write_committed`); nothing
  is committed that no client wrote (`phantom_write`);
- each register is linearizable given the ledger's order of its writes (height, index): writes
  are ordered as real time allows (`write_order`); a read returns the value of a write invoked before
  the read completed, with every write ordered before it invoked by then too (`future_read`, or
  `uncommitted_read` for a value never committed), and not overwritten by a write that completed
  before the read was invoked (`stale_read`; `read_your_writes` when that write was the reader's
  own); a read never returns an older write than one a read that completed before it returned
  (`nonmonotonic_read`);
- a read answered at height h returns the value the ledger held at h (`wrong_state`).

Each write writes a value no other write of its register writes, so a value names its write.
A history and its commits are saved as JSON (`save`) when a check fails, to be read again (`load`).
"""

from __future__ import annotations

import bisect
import json
import math
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

INVOKE, OK, FAIL, INFO = "invoke", "ok", "fail", "info"
WRITE, READ = "write", "read"


@dataclass(frozen=True)
class Event:
    process: int
    type: str  # invoke | ok | fail | info
    f: str  # write | read
    key: str
    value: Any  # a write's value (invoke and completion); a read's: None at invoke, what it read at ok
    time: float  # time.monotonic()
    tx: str | None = None  # a write's transaction hash
    height: int | None = None  # ok write: its commit height; ok read: the height it was answered at
    error: str | None = None


@dataclass(frozen=True)
class Commit:
    """A committed write of the workload, as the ledger holds it."""

    tx: str
    key: str
    value: Any
    height: int
    index: int


@dataclass(frozen=True)
class Anomaly:
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


@dataclass(frozen=True)
class Operation:
    """An invocation paired with its completion; `completed` is infinite for an info operation (it
    may take effect at any time after it was invoked)."""

    process: int
    f: str
    key: str
    value: Any
    outcome: str
    invoked: float
    completed: float
    tx: str | None
    height: int | None


class HistoryError(ValueError):
    """A history that is not well formed: a process with two operations open at once, a completion
    without an invocation, a value written twice."""


class History:
    """An append-only list of events; each process has at most one operation open at a time."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def invoke(self, process: int, f: str, key: str, value: Any = None, tx: str | None = None) -> None:
        self.events.append(Event(process, INVOKE, f, key, value, time.monotonic(), tx=tx))

    def complete(
        self,
        process: int,
        outcome: str,
        f: str,
        key: str,
        value: Any = None,
        *,
        height: int | None = None,
        error: str | None = None,
    ) -> None:
        self.events.append(Event(process, outcome, f, key, value, time.monotonic(), height=height, error=error))

    def save(self, path: Path, commits: list[Commit] | None = None) -> Path:
        save(path, self.events, commits or [])
        return path


def save(path: Path, events: list[Event], commits: list[Commit]) -> None:
    doc = {"events": [asdict(e) for e in events], "commits": [asdict(c) for c in commits]}
    path.write_text(json.dumps(doc, indent=1))


def load(path: Path) -> tuple[list[Event], list[Commit]]:
    doc = json.loads(path.read_text())
    return [Event(**e) for e in doc["events"]], [Commit(**c) for c in doc["commits"]]


def operations(events: list[Event]) -> list[Operation]:
    """Pair each invocation with its process's next completion; one still open at the end is info."""
    open_: dict[int, Event] = {}
    ops: list[Operation] = []
    for e in events:
        if e.type == INVOKE:
            if e.process in open_:
                raise HistoryError(f"process {e.process} invoked {e.f} {e.key} with an operation still open")
            open_[e.process] = e
            continue
        if e.type not in (OK, FAIL, INFO):
            raise HistoryError(f"unknown event type {e.type!r}")
        inv = open_.pop(e.process, None)
        if inv is None or (inv.f, inv.key) != (e.f, e.key):
            raise HistoryError(f"process {e.process}: {e.type} {e.f} {e.key} completes no open invocation")
        value = e.value if e.f == READ else inv.value
        completed = math.inf if e.type == INFO else e.time
        ops.append(Operation(e.process, e.f, e.key, value, e.type, inv.time, completed, inv.tx, e.height))
    for inv in open_.values():
        ops.append(Operation(inv.process, inv.f, inv.key, inv.value, INFO, inv.time, math.inf, inv.tx, None))
    return ops


def check(events: list[Event], commits: list[Commit]) -> list[Anomaly]:
    """Every anomaly of the history against the ledger's commits; an empty list means it is valid."""
    ops = operations(events)
    writes = [o for o in ops if o.f == WRITE]
    by_value: dict[tuple[str, str], Operation] = {}
    for w in writes:
        ident = (w.key, json.dumps(w.value, sort_keys=True))
        if ident in by_value:
            raise HistoryError(f"value {w.value!r} written twice to {w.key}: values must name their writes")
        by_value[ident] = w
    out = _check_commits(writes, commits)
    for key in sorted({o.key for o in ops}):
        out += _check_register(key, [o for o in ops if o.key == key], [c for c in commits if c.key == key])
    return out


def _check_commits(writes: list[Operation], commits: list[Commit]) -> list[Anomaly]:
    out: list[Anomaly] = []
    by_tx: dict[str, list[Commit]] = defaultdict(list)
    by_value: dict[tuple[str, str], list[Commit]] = defaultdict(list)
    for c in commits:
        by_tx[c.tx].append(c)
        by_value[(c.key, json.dumps(c.value, sort_keys=True))].append(c)
    for tx, cs in by_tx.items():
        if len(cs) > 1:
            out.append(Anomaly("duplicate", f"tx {tx} committed {len(cs)} times: {[(c.height, c.index) for c in cs]}"))
    for (key, value), cs in by_value.items():
        if len({c.tx for c in cs}) > 1:
            out.append(Anomaly("duplicate", f"{key}={value} committed by {len(cs)} transactions"))
    known = {w.tx for w in writes}
    for tx, cs in by_tx.items():
        if tx not in known:
            out.append(
                Anomaly("phantom_write", f"tx {tx} ({cs[0].key}={cs[0].value!r}) is committed; no client wrote it")
            )
    for w in writes:
        cs = by_tx.get(w.tx or "", [])
        if w.outcome == OK and not cs:
            out.append(Anomaly("lost_write", f"process {w.process} was told {w.key}={w.value!r} (tx {w.tx}) committed"))
        elif w.outcome == OK and w.height is not None and cs[0].height != w.height:
            out.append(
                Anomaly("wrong_height", f"tx {w.tx}: told height {w.height}, the ledger has it at {cs[0].height}")
            )
        elif w.outcome == FAIL and cs:
            out.append(Anomaly("failed_write_committed", f"tx {w.tx} ({w.key}={w.value!r}) failed, yet is committed"))
    return out


def _check_register(key: str, ops: list[Operation], commits: list[Commit]) -> list[Anomaly]:
    """Linearizability of one register, the ledger's write order given."""
    out: list[Anomaly] = []
    order = sorted({(c.height, c.index, c.tx): c for c in commits}.values(), key=lambda c: (c.height, c.index))
    write_of = {w.tx: w for w in ops if w.f == WRITE}
    rank_of_value = {json.dumps(c.value, sort_keys=True): i for i, c in enumerate(order)}
    invoked = [write_of[c.tx].invoked if c.tx in write_of else -math.inf for c in order]
    completed = [write_of[c.tx].completed if c.tx in write_of else math.inf for c in order]
    prefix_max_invoked = list(_running(invoked, max))
    suffix_min_completed = list(reversed(list(_running(list(reversed(completed)), min))))

    for i in range(len(order) - 1):
        if suffix_min_completed[i + 1] < invoked[i]:
            j = next(j for j in range(i + 1, len(order)) if completed[j] < invoked[i])
            out.append(
                Anomaly(
                    "write_order",
                    f"{key}: {order[j].value!r} completed before {order[i].value!r} was invoked, "
                    "yet the ledger orders it after",
                )
            )

    heights = [(c.height, c.index) for c in order]
    reads = [o for o in ops if o.f == READ and o.outcome == OK]
    ranks: dict[int, int] = {}
    for n, r in enumerate(reads):
        ident = json.dumps(r.value, sort_keys=True)
        rank = -1 if r.value is None else rank_of_value.get(ident)
        if rank is None:
            out.append(Anomaly("uncommitted_read", f"{key}: process {r.process} read {r.value!r}, never committed"))
            continue
        ranks[n] = rank
        if rank >= 0 and prefix_max_invoked[rank] > r.completed:
            out.append(
                Anomaly(
                    "future_read",
                    f"{key}: process {r.process} read {r.value!r}, ordered after a write invoked only after the "
                    "read completed",
                )
            )
        if rank + 1 < len(order) and suffix_min_completed[rank + 1] < r.invoked:
            later = [j for j in range(rank + 1, len(order)) if completed[j] < r.invoked]
            own = [j for j in later if write_of.get(order[j].tx) and write_of[order[j].tx].process == r.process]
            kind = "read_your_writes" if own else "stale_read"
            newer = order[(own or later)[-1]].value
            out.append(
                Anomaly(
                    kind,
                    f"{key}: process {r.process} read {r.value!r}, though {newer!r} was committed and acknowledged "
                    "before the read was invoked",
                )
            )
        if r.height is not None:
            at = bisect.bisect_right(heights, (r.height, math.inf)) - 1
            held = order[at].value if at >= 0 else None
            if held != r.value:
                out.append(
                    Anomaly(
                        "wrong_state",
                        f"{key}: process {r.process} read {r.value!r} answered at height {r.height}; the ledger "
                        f"held {held!r} there",
                    )
                )

    by_invoke = sorted(ranks, key=lambda n: reads[n].invoked)
    by_complete = sorted(ranks, key=lambda n: reads[n].completed)
    best, best_n, k = -2, -1, 0
    for n in by_invoke:
        while k < len(by_complete) and reads[by_complete[k]].completed < reads[n].invoked:
            if ranks[by_complete[k]] > best:
                best, best_n = ranks[by_complete[k]], by_complete[k]
            k += 1
        if ranks[n] < best:
            out.append(
                Anomaly(
                    "nonmonotonic_read",
                    f"{key}: process {reads[n].process} read {reads[n].value!r} after process "
                    f"{reads[best_n].process}'s read of the newer {reads[best_n].value!r} had completed",
                )
            )
    return out


def _running(xs: list[float], pick: Any) -> Any:
    acc = None
    for x in xs:
        acc = x if acc is None else pick(acc, x)
        yield acc
