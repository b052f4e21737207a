"""`next_to_roll`: the pure decision behind quorum-safe executor replacement (operator/rolling.py).

Properties over random clusters (hypothesis), and whole rolls simulated step by step for the node
rule the ledger has today and the member rule it is moving to.
"""

from __future__ import annotations

from collections.abc import Sequence

from conclavium_operator.rolling import (
    RollNode,
    Step,
    ledger_quorum,
    member_quorum,
    next_to_roll,
    node_quorum,
    waiting_for,
)
from hypothesis import given, settings
from hypothesis import strategies as st

NODES = st.lists(
    st.builds(
        RollNode,
        name=st.sampled_from([f"n{i}" for i in range(8)]),
        member=st.sampled_from(["a", "b", "c"]),
        current=st.booleans(),
        trusted=st.booleans(),
        caught_up=st.booleans(),
        retiring=st.booleans(),
    ),
    max_size=8,
    unique_by=lambda n: n.name,
)


def signers(nodes: Sequence[RollNode]) -> list[RollNode]:
    return [n for n in nodes if n.signs]


@settings(max_examples=400, deadline=None)
@given(nodes=NODES, k=st.integers(1, 4), by_members=st.booleans(), extra=st.integers(0, 1))
def test_no_step_ever_leaves_the_quorum_unreachable(
    nodes: list[RollNode], k: int, by_members: bool, extra: int
) -> None:
    quorum = member_quorum(k) if by_members else node_quorum(k)
    wanted = {m: max(0, sum(1 for n in nodes if n.member == m) - extra) for m in "abc"}
    step = next_to_roll(nodes, quorum, wanted)
    if step is None:
        return
    assert quorum(signers(nodes)), "no step while the quorum is already lost"
    assert not any(n.retiring for n in nodes), "one retirement at a time"
    assert not any(n.current and not (n.trusted and n.caught_up) for n in nodes), "one untrusted new node at most"
    if step.action == "retire":
        victim = next(n for n in nodes if n.name == step.node)
        assert not victim.current
        assert quorum([n for n in signers(nodes) if n.name != step.node]), "the rest can still commit"
    else:
        assert step.action == "add" and any(not n.current and n.member == step.member for n in nodes)


def test_nothing_to_do_when_every_executor_runs_the_new_build() -> None:
    nodes = [RollNode(f"a{i}", "a", current=True, trusted=True, caught_up=True) for i in range(3)]
    assert next_to_roll(nodes, node_quorum(2), {"a": 3}) is None


def test_a_lost_quorum_blocks_every_step() -> None:
    nodes = [
        RollNode("a0", "a", current=False, trusted=True, caught_up=False),
        RollNode("b0", "b", current=False, trusted=True, caught_up=True),
        RollNode("c0", "c", current=False, trusted=True, caught_up=False),
    ]
    assert next_to_roll(nodes, node_quorum(2), {"a": 1, "b": 1, "c": 1}) is None


def test_a_retirement_that_would_break_the_quorum_waits_instead() -> None:
    # Three members, commit quorum 3 executors: a's replacement is ready but c's executor is down, so
    # retiring a0 would leave 2 signers. Nothing happens until c0 is back.
    nodes = [
        RollNode("a0", "a", current=False, trusted=True, caught_up=True),
        RollNode("a1", "a", current=True, trusted=True, caught_up=True),
        RollNode("b0", "b", current=False, trusted=True, caught_up=True),
        RollNode("c0", "c", current=False, trusted=True, caught_up=False),
    ]
    wanted = {"a": 1, "b": 1, "c": 1}
    assert next_to_roll(nodes, node_quorum(3), wanted) is None
    back = [*nodes[:3], RollNode("c0", "c", current=False, trusted=True, caught_up=True)]
    assert next_to_roll(back, node_quorum(3), wanted) == Step("retire", "a", "a0")


def test_counting_members_keeps_a_member_with_one_executor_from_being_emptied() -> None:
    # Commits need 3 distinct members: a's new executor counts for a only once it signs; retiring a's
    # old one is safe (a still signs through a1), retiring b's only executor is not.
    nodes = [
        RollNode("a0", "a", current=False, trusted=True, caught_up=True),
        RollNode("a1", "a", current=True, trusted=True, caught_up=True),
        RollNode("b0", "b", current=False, trusted=True, caught_up=True),
        RollNode("c0", "c", current=False, trusted=True, caught_up=True),
    ]
    assert next_to_roll(nodes, member_quorum(3), {"a": 1, "b": 1, "c": 1}) == Step("retire", "a", "a0")
    without_a1 = [n for n in nodes if n.name != "a1"]
    assert next_to_roll(without_a1, member_quorum(3), {"a": 1, "b": 1, "c": 1}) == Step("add", "a")


def roll(wanted: dict[str, int], quorum_k: int, by_members: bool) -> list[Step]:
    """Run a whole roll: each add joins untrusted, becomes trusted and caught up on the next poll;
    each retire goes. Checks the quorum after every poll and returns the steps taken."""
    quorum = member_quorum(quorum_k) if by_members else node_quorum(quorum_k)
    nodes = [RollNode(f"{m}-old-{i}", m, False, True, True) for m, count in wanted.items() for i in range(count)]
    steps: list[Step] = []
    for poll in range(100):
        assert quorum(signers(nodes)), f"quorum lost at poll {poll}: {nodes}"
        assert sum(1 for n in nodes if n.current and not n.trusted) <= 1
        nodes = [RollNode(n.name, n.member, n.current, True, True) if n.current else n for n in nodes]
        step = next_to_roll(nodes, quorum, wanted)
        if step is None:
            break
        steps.append(step)
        if step.action == "add":
            nodes.append(RollNode(f"{step.member}-new-{poll}", step.member, True, False, False))
        else:
            nodes = [n for n in nodes if n.name != step.node]
    assert all(n.current for n in nodes), nodes
    assert {m: sum(1 for n in nodes if n.member == m) for m in wanted} == wanted
    return steps


def test_a_three_member_roll_adds_and_retires_one_executor_at_a_time() -> None:
    steps = roll({"a": 1, "b": 1, "c": 1}, 2, by_members=False)
    assert [s.action for s in steps] == ["add", "retire"] * 3
    assert sorted(s.node for s in steps if s.action == "retire") == ["a-old-0", "b-old-0", "c-old-0"]


def test_rolls_finish_under_the_member_rule_and_with_several_executors_per_member() -> None:
    assert len(roll({"a": 2, "b": 1, "c": 1}, 3, by_members=True)) == 8
    assert len(roll({"a": 2, "b": 2, "c": 2}, 4, by_members=False)) == 12


def test_the_ledger_rule_needs_both_the_node_quorum_and_k_distinct_members() -> None:
    a0, a1 = (RollNode(f"a{i}", "a", current=False, trusted=True, caught_up=True) for i in range(2))
    b0 = RollNode("b0", "b", current=False, trusted=True, caught_up=True)
    assert not ledger_quorum(2, 2)([a0, a1]), "two nodes of one member"
    assert ledger_quorum(2, 2)([a0, b0])
    assert not ledger_quorum(3, 2)([a0, b0]), "two members but fewer nodes than the quorum"
    assert not ledger_quorum(0, 1)([]), "a quorum of 0 still needs a signer"


def test_waiting_says_why() -> None:
    quorum = node_quorum(2)
    ready = [RollNode(f"{m}0", m, current=False, trusted=True, caught_up=True) for m in "abc"]
    new = RollNode("a1", "a", current=True, trusted=True, caught_up=False)
    assert waiting_for([*ready, new], quorum)[0] == "WaitingForNewExecutor"
    retiring = RollNode("b0", "b", current=False, trusted=True, caught_up=True, retiring=True)
    assert waiting_for([ready[0], retiring, ready[2]], quorum)[0] == "WaitingForRetirement"
    down = [RollNode(n.name, n.member, False, True, caught_up=n.member == "a") for n in ready]
    assert next_to_roll(down, quorum, {"a": 1, "b": 1, "c": 1}) is None
    assert waiting_for(down, quorum)[0] == "QuorumUnreachable"
