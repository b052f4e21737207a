"""Quorum-safe replacement of executors, one step at a time (issue 22, "Quorum-safe, governed upgrades").

A governed upgrade replaces every executor that runs the old build: add one executor running the new
build, wait until the ledger trusts it and it has caught up, retire one old executor, repeat. This
module decides the next step from what is observed, and nothing else: it is pure, so the safety rule
is tested on its own (tests/operator/test_rolling.py) and the reconciler only carries steps out.

The commit rule is a parameter (`Quorum`): today the ledger counts nodes (a commit needs `k` trusted
executors' signatures); once commits need `k` distinct members, the same function counts members.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class RollNode:
    """An executor as the roll sees it."""

    name: str
    member: str
    current: bool  # runs the target build (new image and allowed measurement)
    trusted: bool  # the ledger trusts it
    caught_up: bool  # its pod is ready and it executes at the ledger's committed height
    retiring: bool = False  # a retirement is under way (retire_node proposed or accepted)

    @property
    def signs(self) -> bool:
        """It can contribute a commit signature now."""
        return self.trusted and self.caught_up and not self.retiring


# Can these executors (each trusted, caught up, not retiring) reach the commit quorum together?
Quorum = Callable[[Sequence[RollNode]], bool]


@dataclass(frozen=True)
class Step:
    action: str  # "add": one more executor running the new build for `member`; "retire": retire `node`
    member: str
    node: str | None = None


def node_quorum(k: int) -> Quorum:
    """The ledger's rule today: `k` trusted executors sign (`commitQuorum`)."""
    return lambda nodes: len(nodes) >= k


def member_quorum(k: int) -> Quorum:
    """Commits that need signatures from `k` distinct members."""
    return lambda nodes: len({n.member for n in nodes}) >= k


def ledger_quorum(quorum: int, k: int) -> Quorum:
    """The ledger's commit rule as `GET /v1/service` states it: `quorum` nodes of at least `k` distinct
    members (docs/confidentiality.md, "Receipts that need k members")."""
    return lambda nodes: len(nodes) >= max(quorum, 1) and len({n.member for n in nodes}) >= k


def next_to_roll(nodes: Sequence[RollNode], quorum: Quorum, wanted: Mapping[str, int]) -> Step | None:
    """The next safe step, or None (done, or waiting). `wanted`: each member's executor count (spec).

    None while: a retirement is under way; a new executor is not yet trusted and caught up (so at most
    one untrusted new executor exists at a time); the quorum is already unreachable (no step can help
    before the signers are back); or a member is over its count but every retirement of one of its
    old executors would leave the quorum unreachable. Otherwise: retire an old executor of a member
    that is over its count (it has its replacement), if the others can still commit without it; else
    add one new executor for the member with the most old ones (members are at most one over).
    """
    if any(n.retiring for n in nodes):
        return None
    if any(n.current and not (n.trusted and n.caught_up) for n in nodes):
        return None
    signers = [n for n in nodes if n.signs]
    if not quorum(signers):
        return None
    old = sorted((n for n in nodes if not n.current), key=lambda n: (n.member, n.name))
    if not old:
        return None
    have: dict[str, int] = {}
    for n in nodes:
        have[n.member] = have.get(n.member, 0) + 1
    over = [n for n in old if have[n.member] > wanted.get(n.member, 0)]
    for n in over:
        if quorum([s for s in signers if s.name != n.name]):
            return Step("retire", n.member, n.name)
    if over:
        return None  # the replacement is ready but no retirement is safe yet: adding more would not help
    olds: dict[str, int] = {}
    for n in old:
        olds[n.member] = olds.get(n.member, 0) + 1
    member = min(olds, key=lambda m: (-olds[m], m))
    return Step("add", member)


def waiting_for(nodes: Sequence[RollNode], quorum: Quorum) -> tuple[str, str]:
    """Why `next_to_roll` returned None for a roll that is not finished: (reason, message)."""
    retiring = sorted(n.name for n in nodes if n.retiring)
    if retiring:
        return "WaitingForRetirement", f"waiting until {', '.join(retiring)} is retired"
    fresh = sorted(n.name for n in nodes if n.current and not (n.trusted and n.caught_up))
    if fresh:
        return "WaitingForNewExecutor", f"waiting until {', '.join(fresh)} is trusted and caught up"
    signers = [n for n in nodes if n.signs]
    if not quorum(signers):
        return "QuorumUnreachable", f"only {len(signers)} executor(s) can sign now: no step until the quorum is back"
    return "RetirementUnsafe", "retiring any old executor now would leave the commit quorum unreachable"
