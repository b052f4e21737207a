"""Every governance action, end to end through signed proposals and ballots."""

from __future__ import annotations

import pytest
from gov_harness import Gov

from conclavium.governance import Context, GovernanceError, queries, record_node_join

MEASUREMENT = "ab" * 48
HOST_DATA = "cd" * 32


def test_genesis_tables(gov: Gov) -> None:
    t = gov.tables
    assert queries.service_status(t) == "Opening"
    assert queries.commit_quorum(t) == 1
    c = queries.constitution(t)
    assert c is not None and c["version"] == 1 and c["proposal_ttl_s"] == 86400
    assert c["rules"]["default"] == {"proposers": "members", "accept": {"rule": "majority"}}
    alice = t.get("public:gov.members", gov.id("alice"))
    assert alice == {"name": "alice", "public_key": gov.pem("alice"), "weight": 1, "status": "Active"}
    assert queries.is_active_user(t, gov.id("uma"))


def test_set_member_and_new_member_votes(gov: Gov) -> None:
    gov.add_key("dave", "ES384")
    out = gov.pass_([{"name": "set_member", "args": {"name": "dave", "public_key": gov.pem("dave"), "weight": 2}}])
    assert out.proposal_state == "Accepted" and out.effects == []
    assert gov.tables.get("public:gov.members", gov.id("dave"))["weight"] == 2
    # dave now counts: 4 members, majority needs 3 approvals
    out = gov.propose("dave", [{"name": "rotate_ledger_secret", "args": {}}])
    assert out.ok, out.reason
    pid = out.proposal_id
    assert gov.vote("dave", pid).proposal_state == "Open"
    assert gov.vote("alice", pid).proposal_state == "Open"
    assert gov.vote("bob", pid).proposal_state == "Accepted"


def test_set_member_updates_weight_and_refuses_taken_name(gov: Gov) -> None:
    gov.pass_([{"name": "set_member", "args": {"name": "bob", "public_key": gov.pem("bob"), "weight": 3}}])
    assert gov.tables.get("public:gov.members", gov.id("bob"))["weight"] == 3
    gov.add_key("eve")
    out = gov.propose("alice", [{"name": "set_member", "args": {"name": "bob", "public_key": gov.pem("eve")}}])
    assert not out.ok and "name 'bob' is taken" in out.reason


def test_remove_member_by_id_and_by_name(gov: Gov) -> None:
    gov.pass_([{"name": "remove_member", "args": {"member_id": gov.id("carol")}}])
    assert gov.tables.get("public:gov.members", gov.id("carol"))["status"] == "Removed"
    gov.pass_([{"name": "remove_member", "args": {"name": "bob"}}], voters=("alice", "bob"))
    assert [m["name"] for m in queries.members(gov.tables, active_only=True).values()] == ["alice"]


def test_remove_last_member_refused(gov: Gov) -> None:
    gov.pass_([{"name": "remove_member", "args": {"name": "carol"}}])
    gov.pass_([{"name": "remove_member", "args": {"name": "bob"}}], voters=("alice", "bob"))
    out = gov.propose("alice", [{"name": "remove_member", "args": {"name": "alice"}}])
    assert not out.ok and "cannot remove the last active member" in out.reason


def test_set_and_remove_user(gov: Gov) -> None:
    gov.add_key("ursula", "ES256")
    gov.pass_([{"name": "set_user", "args": {"name": "ursula", "public_key": gov.pem("ursula")}}])
    assert queries.is_active_user(gov.tables, gov.id("ursula"))
    gov.pass_([{"name": "remove_user", "args": {"user_id": gov.id("ursula")}}])
    assert not queries.is_active_user(gov.tables, gov.id("ursula"))
    assert gov.tables.get("public:gov.users", gov.id("ursula"))["status"] == "Removed"
    out = gov.propose("alice", [{"name": "remove_user", "args": {"name": "ursula"}}])
    assert not out.ok and "no active user named 'ursula'" in out.reason


def test_member_key_cannot_become_user(gov: Gov) -> None:
    out = gov.propose("alice", [{"name": "set_user", "args": {"name": "x", "public_key": gov.pem("bob")}}])
    assert not out.ok and "active member's key" in out.reason


def test_allow_and_disallow_measurement(gov: Gov) -> None:
    gov.pass_(
        [
            {
                "name": "allow_measurement",
                "args": {"platform": "snp", "measurement": MEASUREMENT.upper(), "host_data": HOST_DATA},
            }
        ]
    )
    assert gov.tables.get("public:gov.measurements", MEASUREMENT) == {"platform": "snp", "host_data": HOST_DATA}
    assert queries.measurement_allowed(gov.tables, "snp", MEASUREMENT, HOST_DATA)
    assert not queries.measurement_allowed(gov.tables, "snp", MEASUREMENT, "00")
    assert not queries.measurement_allowed(gov.tables, "tdx", MEASUREMENT, HOST_DATA)
    wrong_platform = {"measurement": MEASUREMENT, "platform": "tdx"}
    out = gov.propose("alice", [{"name": "disallow_measurement", "args": wrong_platform}])
    assert not out.ok and "allowed for snp, not tdx" in out.reason
    gov.pass_([{"name": "disallow_measurement", "args": {"measurement": MEASUREMENT}}])
    assert gov.tables.get("public:gov.measurements", MEASUREMENT) is None


def _join(gov: Gov, node_id: str, measurement: str = MEASUREMENT) -> list[dict]:
    return record_node_join(
        gov.tables,
        {"node_id": node_id, "public_keys": {"node": "PEM-" + node_id}, "platform": "snp", "measurement": measurement},
        Context(gov.height, gov.now_s * 1000),
    )


def test_trust_and_retire_node_with_effects(gov: Gov) -> None:
    gov.pass_([{"name": "allow_measurement", "args": {"platform": "snp", "measurement": MEASUREMENT}}])
    assert _join(gov, "n1") == []
    assert gov.tables.get("public:gov.nodes", "n1")["status"] == "Pending"
    out = gov.pass_([{"name": "trust_node", "args": {"node_id": "n1"}}])
    assert out.effects == [
        {"type": "trust_node", "node_id": "n1", "public_keys": {"node": "PEM-n1"}, "proposal_id": out.proposal_id}
    ]
    assert gov.tables.get("public:gov.nodes", "n1")["status"] == "Trusted"
    _join(gov, "n2")
    gov.pass_([{"name": "trust_node", "args": {"node_id": "n2"}}])
    out = gov.pass_([{"name": "retire_node", "args": {"node_id": "n1"}}])
    assert out.effects == [{"type": "retire_node", "node_id": "n1", "proposal_id": out.proposal_id}]
    assert gov.tables.get("public:gov.nodes", "n1")["status"] == "Retired"
    out = gov.propose("alice", [{"name": "retire_node", "args": {"node_id": "n2"}}])
    assert not out.ok and "below the commit quorum" in out.reason


def test_trust_node_refused_for_unknown_or_disallowed(gov: Gov) -> None:
    out = gov.propose("alice", [{"name": "trust_node", "args": {"node_id": "ghost"}}])
    assert not out.ok and "node ghost is not known" in out.reason
    _join(gov, "n9", "11" * 48)
    out = gov.propose("alice", [{"name": "trust_node", "args": {"node_id": "n9"}}])
    assert not out.ok and "which is not allowed" in out.reason


def test_auto_trust_nodes_constitution() -> None:
    g = Gov(constitution={"auto_trust_nodes": True, "rules": {"default": {"accept": {"rule": "majority"}}}})
    g.pass_([{"name": "allow_measurement", "args": {"platform": "snp", "measurement": MEASUREMENT}}])
    effects = _join(g, "auto")
    assert effects and effects[0]["type"] == "trust_node"
    assert g.tables.get("public:gov.nodes", "auto")["status"] == "Trusted"
    assert _join(g, "other", "22" * 48) == []


def test_disallow_measurement_in_use_needs_retire_first(gov: Gov) -> None:
    gov.pass_([{"name": "allow_measurement", "args": {"platform": "snp", "measurement": MEASUREMENT}}])
    for n in ("n1", "n2"):
        _join(gov, n)
        gov.pass_([{"name": "trust_node", "args": {"node_id": n}}])
    out = gov.propose("alice", [{"name": "disallow_measurement", "args": {"measurement": MEASUREMENT}}])
    assert not out.ok and "retire them first" in out.reason


def test_set_constitution_bumps_version(gov: Gov) -> None:
    new = {"proposal_ttl_s": 3600, "rules": {"default": {"accept": {"rule": "unanimity"}}}}
    gov.pass_([{"name": "set_constitution", "args": {"constitution": new}}])
    c = queries.constitution(gov.tables)
    assert c["version"] == 2 and c["proposal_ttl_s"] == 3600
    assert c["rules"]["default"] == {"proposers": "members", "accept": {"rule": "unanimity"}}


def test_rotate_ledger_secret_effect(gov: Gov) -> None:
    out = gov.pass_([{"name": "rotate_ledger_secret", "args": {}}])
    assert out.effects == [{"type": "rotate_ledger_secret", "proposal_id": out.proposal_id}]


def test_open_service(gov: Gov) -> None:
    assert not queries.is_service_open(gov.tables)
    out = gov.pass_([{"name": "open_service", "args": {}}])
    assert out.effects == [{"type": "open_service", "proposal_id": out.proposal_id}]
    assert queries.is_service_open(gov.tables)
    out = gov.propose("alice", [{"name": "open_service"}])
    assert not out.ok and "already open" in out.reason


def test_set_commit_quorum() -> None:
    nodes = [{"node_id": f"g{i}", "public_keys": {}, "platform": "virtual", "measurement": "00"} for i in range(3)]
    g = Gov(nodes=nodes)
    out = g.pass_([{"name": "set_commit_quorum", "args": {"quorum": 2}}])
    assert out.effects[0]["quorum"] == 2 and queries.commit_quorum(g.tables) == 2
    out = g.propose("alice", [{"name": "set_commit_quorum", "args": {"quorum": 4}}])
    assert not out.ok and "exceeds the 3 trusted node(s)" in out.reason
    out = g.propose("alice", [{"name": "set_commit_quorum", "args": {"quorum": 1}}])
    assert not out.ok and out.code == "quorum_allows_forks" and "two forks" in str(out.reason)


def test_set_sawtooth_families(gov: Gov) -> None:
    fams = [{"name": "xo", "version": "1.0"}, {"name": "intkey", "version": "1.0", "tp_digest": "sha256:" + "ab" * 32}]
    out = gov.pass_([{"name": "set_sawtooth_families", "args": {"families": fams}}])
    assert out.proposal_state == "Accepted"
    assert [f["name"] for f in gov.tables.get("public:gov.service", "sawtooth_families")] == ["intkey", "xo"]
    for bad in (
        [{"name": "intkey"}],
        [{"name": "intkey", "version": "1.0", "extra": 1}],
        [{"name": "", "version": "1.0"}],
        [{"name": "intkey", "version": "1.0", "tp_digest": "md5:00"}],
        [{"name": "intkey", "version": "1.0"}, {"name": "intkey", "version": "1.0"}],
        "intkey",
    ):
        with pytest.raises(GovernanceError):  # refused when the proposal is made, as every bad action
            gov.propose("alice", [{"name": "set_sawtooth_families", "args": {"families": bad}}])


def test_sawtooth_signers_are_registered_by_governance(gov: Gov) -> None:
    fams = [{"name": "intkey", "version": "1.0"}]
    k1, k2 = "02" + "ab" * 32, "03" + "22" * 32
    gov.pass_([{"name": "set_sawtooth_families", "args": {"families": fams, "signers": "registered"}}])
    assert gov.tables.get("public:gov.service", "sawtooth_signers") == "registered"
    out = gov.pass_([{"name": "sawtooth_register", "args": {"public_keys": [k2, k1, k1]}}])
    assert out.proposal_state == "Accepted"
    assert [k for k, _ in gov.tables.items("public:sys.sawtooth.signers")] == sorted([k1, k2])
    gov.pass_([{"name": "sawtooth_register", "args": {"public_keys": [k1], "remove": True}}])
    assert [k for k, _ in gov.tables.items("public:sys.sawtooth.signers")] == [k2]
    for bad in (
        {"public_keys": []},
        {"public_keys": ["04" + "11" * 64]},  # uncompressed: Sawtooth signs with compressed keys
        {"public_keys": [k1.upper()]},
        {"public_keys": [k1], "remove": "yes"},
        {"public_keys": k1},
    ):
        with pytest.raises(GovernanceError):
            gov.propose("alice", [{"name": "sawtooth_register", "args": bad}])
    with pytest.raises(GovernanceError):
        gov.propose("alice", [{"name": "set_sawtooth_families", "args": {"families": fams, "signers": "anyone"}}])
