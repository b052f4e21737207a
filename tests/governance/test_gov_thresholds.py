"""Acceptance and rejection rules: majority, unanimity, k-of-n, weighted; constitution changes."""

from __future__ import annotations

from typing import Any

import pytest
from gov_harness import Gov

from conclavium.governance import GovernanceError
from conclavium.governance.constitution import evaluate, validate_constitution

ROTATE = [{"name": "rotate_ledger_secret", "args": {}}]


def _constitution(accept: dict[str, Any], **per_action: dict[str, Any]) -> dict[str, Any]:
    rules: dict[str, Any] = {"default": {"accept": accept}}
    rules.update({name: {"accept": rule} for name, rule in per_action.items()})
    return {"rules": rules}


def _votes(g: Gov, pid: str, votes: list[tuple[str, bool]]) -> list[str | None]:
    states = []
    for name, approve in votes:
        out = g.vote(name, pid, approve)
        assert out.ok, out.reason
        states.append(out.proposal_state)
    return states


def _members(n: int, weights: list[int] | None = None) -> dict[str, int]:
    return {f"m{i}": (weights[i] if weights else 1) for i in range(n)}


def test_majority_accepts_with_more_than_half() -> None:
    g = Gov(_members(4))
    pid = g.propose("m0", ROTATE).proposal_id
    assert _votes(g, pid, [("m0", True), ("m1", True), ("m2", True)]) == ["Open", "Open", "Accepted"]


def test_majority_rejects_once_impossible() -> None:
    g = Gov(_members(4))
    pid = g.propose("m0", ROTATE).proposal_id
    assert _votes(g, pid, [("m1", False), ("m0", True), ("m2", False)]) == ["Open", "Open", "Rejected"]
    assert g.proposal(pid)["final_height"] == g.height


def test_unanimity() -> None:
    g = Gov(_members(3), constitution=_constitution({"rule": "unanimity"}))
    pid = g.propose("m0", ROTATE).proposal_id
    assert _votes(g, pid, [("m0", True), ("m1", True), ("m2", True)]) == ["Open", "Open", "Accepted"]
    pid = g.propose("m1", ROTATE).proposal_id
    assert _votes(g, pid, [("m0", True), ("m2", False)]) == ["Open", "Rejected"]


def test_k_of_n() -> None:
    g = Gov(_members(5), constitution=_constitution({"rule": "k_of_n", "k": 2}))
    pid = g.propose("m0", ROTATE).proposal_id
    assert _votes(g, pid, [("m3", True), ("m4", True)]) == ["Open", "Accepted"]
    pid = g.propose("m0", ROTATE).proposal_id
    # 2 of 5: rejected only when 4 reject (fewer than 2 could still approve)
    assert _votes(g, pid, [("m0", False), ("m1", False), ("m2", False), ("m3", False)]) == [
        "Open", "Open", "Open", "Rejected"]


def test_weighted_threshold() -> None:
    g = Gov(_members(4, [5, 3, 1, 1]), constitution=_constitution({"rule": "weighted", "num": 2, "den": 3}))
    pid = g.propose("m0", ROTATE).proposal_id
    # total 10, needs >= 20/3 i.e. 7: 5 alone is not enough, 5+1 = 6 is not, 5+1+1 = 7 is
    assert _votes(g, pid, [("m0", True), ("m2", True), ("m3", True)]) == ["Open", "Open", "Accepted"]
    pid = g.propose("m0", ROTATE).proposal_id
    # the heavy member rejecting leaves at most 5 of 10: impossible
    assert _votes(g, pid, [("m0", False)]) == ["Rejected"]
    pid = g.propose("m0", ROTATE).proposal_id
    assert _votes(g, pid, [("m0", True), ("m1", True)]) == ["Open", "Accepted"]


def test_multi_action_needs_strictest_rule() -> None:
    c = _constitution({"rule": "majority"}, set_constitution={"rule": "unanimity"})
    g = Gov(_members(3), constitution=c)
    actions = [*ROTATE, {"name": "set_constitution", "args": {"constitution": c}}]
    pid = g.propose("m0", actions).proposal_id
    assert g.proposal(pid)["accept"] == [{"rule": "majority"}, {"rule": "unanimity"}]
    assert _votes(g, pid, [("m0", True), ("m1", True), ("m2", True)]) == ["Open", "Open", "Accepted"]
    pid = g.propose("m0", actions).proposal_id
    assert _votes(g, pid, [("m0", True), ("m1", True), ("m2", False)]) == ["Open", "Open", "Rejected"]


def test_constitution_change_applies_only_to_later_proposals() -> None:
    g = Gov(_members(3))
    before = g.propose("m0", ROTATE).proposal_id
    tighten = {"rules": {"default": {"accept": {"rule": "unanimity"}}}}
    out = g.pass_([{"name": "set_constitution", "args": {"constitution": tighten}}], proposer="m1")
    assert out.proposal_state == "Accepted"
    after = g.propose("m0", ROTATE).proposal_id
    assert g.proposal(before)["constitution_version"] == 1
    assert g.proposal(after)["constitution_version"] == 2
    assert _votes(g, after, [("m0", True), ("m1", True)]) == ["Open", "Open"]
    assert _votes(g, before, [("m0", True), ("m1", True)]) == ["Open", "Accepted"]
    assert _votes(g, after, [("m2", True)]) == ["Accepted"]


def test_proposers_restricted_by_constitution() -> None:
    g = Gov(_members(3))
    c = {"rules": {"default": {"accept": {"rule": "majority"}},
                   "open_service": {"proposers": [g.id("m0")], "accept": {"rule": "majority"}}}}
    g.pass_([{"name": "set_constitution", "args": {"constitution": c}}], proposer="m0")
    out = g.propose("m1", [{"name": "open_service", "args": {}}])
    assert not out.ok and "may not propose open_service" in out.reason
    assert g.propose("m0", [{"name": "open_service", "args": {}}]).ok


def test_removed_members_ballots_stop_counting() -> None:
    g = Gov(_members(4))
    pid = g.propose("m0", ROTATE).proposal_id
    assert _votes(g, pid, [("m3", True), ("m0", True)]) == ["Open", "Open"]
    g.pass_([{"name": "remove_member", "args": {"name": "m3"}}], proposer="m1", voters=("m0", "m1", "m2"))
    # 3 active members now, m3's approval no longer counts: m0 + m1 make the majority
    assert _votes(g, pid, [("m1", True)]) == ["Accepted"]


@pytest.mark.parametrize(
    ("rules", "ballots", "state"),
    [
        ([{"rule": "majority"}], {"a": "approve", "b": "approve"}, "Accepted"),
        ([{"rule": "majority"}], {"a": "approve", "b": "reject"}, "Open"),
        ([{"rule": "majority"}], {"a": "reject", "b": "reject"}, "Rejected"),
        ([{"rule": "k_of_n", "k": 9}], {"a": "approve", "b": "approve", "c": "approve"}, "Accepted"),
        ([{"rule": "weighted", "num": 1, "den": 2}], {"a": "approve"}, "Open"),
        ([{"rule": "weighted", "num": 1, "den": 2}], {"c": "approve"}, "Accepted"),
        ([{"rule": "weighted", "num": 1, "den": 1}], {"a": "reject"}, "Rejected"),
        ([{"rule": "majority"}, {"rule": "unanimity"}], {"a": "approve", "b": "approve"}, "Open"),
        ([{"rule": "majority"}], {"zz": "approve", "a": "approve"}, "Open"),
    ],
)
def test_evaluate_table(rules: list[dict[str, Any]], ballots: dict[str, str], state: str) -> None:
    members = {"a": {"status": "Active", "weight": 1}, "b": {"status": "Active", "weight": 1},
               "c": {"status": "Active", "weight": 2}, "zz": {"status": "Removed", "weight": 9}}
    assert evaluate(rules, members, ballots) == state


@pytest.mark.parametrize(
    ("constitution", "match"),
    [
        ({}, "default"),
        ({"rules": {"default": {"accept": {"rule": "supermajority"}}}}, "accept.rule must be one of"),
        ({"rules": {"default": {"accept": {"rule": "k_of_n"}}}}, "k must be an integer"),
        ({"rules": {"default": {"accept": {"rule": "weighted", "num": 3, "den": 2}}}}, "num must be"),
        ({"rules": {"default": {"accept": {"rule": "majority"}}, "fly": {"accept": {"rule": "majority"}}}},
         "unknown action 'fly'"),
        ({"rules": {"default": {"accept": {"rule": "majority"}}}, "proposal_ttl_s": 1}, "proposal_ttl_s"),
        ({"rules": {"default": {"accept": {"rule": "majority"}, "proposers": ["bob"]}}}, "not a member id"),
        ({"rules": {"default": {"accept": {"rule": "majority"}}}, "version": 7}, "unknown field"),
    ],
)
def test_constitution_validation(constitution: dict[str, Any], match: str) -> None:
    with pytest.raises(GovernanceError, match=match):
        validate_constitution(constitution)
