"""Multi-action proposals apply all their actions or none."""

from __future__ import annotations

from gov_harness import Gov, key

from conclavium.governance import Context, record_node_join

CARL = {"name": "set_user", "args": {"name": "carl", "public_key": key("carl").public_key.pem}}
M = "ab" * 48


def test_all_actions_applied_together_with_effects_in_order(gov: Gov) -> None:
    out = gov.pass_([CARL, {"name": "allow_measurement", "args": {"platform": "tdx", "measurement": M}},
                     {"name": "open_service", "args": {}}, {"name": "rotate_ledger_secret", "args": {}}])
    assert out.proposal_state == "Accepted"
    assert [e["type"] for e in out.effects] == ["open_service", "rotate_ledger_secret"]
    assert gov.tables.get("public:gov.users", key("carl").key_id)["status"] == "Active"
    assert gov.tables.get("public:gov.measurements", M) is not None


def test_failure_at_acceptance_applies_nothing_and_marks_failed(gov: Gov) -> None:
    gov.pass_([{"name": "allow_measurement", "args": {"platform": "snp", "measurement": M}}])
    record_node_join(gov.tables, {"node_id": "n1", "public_keys": {}, "platform": "snp", "measurement": M},
                     Context(gov.height, gov.now_s * 1000))
    first = gov.propose("alice", [CARL, {"name": "trust_node", "args": {"node_id": "n1"}}]).proposal_id
    gov.pass_([{"name": "retire_node", "args": {"node_id": "n1"}}], proposer="bob")
    gov.vote("alice", first)
    out = gov.vote("bob", first)
    assert out.ok and out.proposal_state == "Failed"
    assert "action 1 (trust_node)" in out.reason and "Retired" in out.reason
    assert out.effects == []
    assert gov.tables.get("public:gov.users", key("carl").key_id) is None
    p = gov.proposal(first)
    assert p["state"] == "Failed" and "only a Pending node can be trusted" in p["failure"]
    assert gov.tables.get("public:gov.nodes", "n1")["status"] == "Retired"


def test_dry_run_at_proposal_time_sees_earlier_actions(gov: Gov) -> None:
    before = gov.tables.canonical()
    out = gov.propose("alice", [{"name": "remove_member", "args": {"name": n}} for n in ("bob", "carol", "alice")])
    assert not out.ok and "action 2 (remove_member): cannot remove the last active member" in out.reason
    assert gov.tables.canonical() == before
    # the same removals without the last one are fine
    ok = gov.propose("alice", [{"name": "remove_member", "args": {"name": n}} for n in ("bob", "carol")])
    assert ok.ok, ok.reason
