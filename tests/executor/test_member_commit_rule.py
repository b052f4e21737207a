"""The commit rule by rules version: from version 3 only member-endorsed nodes count, and a block
needs nodes of k distinct members; before it (a ledger written earlier) every trusted node counts."""

from __future__ import annotations

from typing import Any

from machine_harness import Chain, new_machine

from conclavium.crypto.keys import PrivateKey
from conclavium.governance.constitution import default_constitution
from services.executor.ledger_machine import LedgerMachine


async def _three_nodes(chain: Chain, m: LedgerMachine, config: dict[str, Any]) -> None:
    await m.apply(*chain.block([chain.genesis_entry(config=config)]))
    await m.apply(*chain.block([chain.join_entry(1), chain.join_entry(2)]))
    await m.apply(*chain.block([chain.endorse_entry(1), chain.endorse_entry(2)]))


async def _sign_all(chain: Chain, m: LedgerMachine, nodes: range) -> None:
    sigs = [chain.sig_of(i, r) for r in m.uncommitted.values() for i in nodes]
    await m.apply(*chain.block([], sigs))


async def test_before_rules_version_3_every_trusted_node_counts() -> None:
    chain = Chain()
    m = new_machine(chain)
    await _three_nodes(chain, m, {"rules_version": 2})
    assert m.member_threshold() == 1 and m.quorum() == 2 and m.quorum_problem() is None
    await _sign_all(chain, m, range(3))
    assert not m.uncommitted


async def test_from_rules_version_3_a_commit_needs_k_members_nodes() -> None:
    chain = Chain()
    bob = PrivateKey.generate()
    members = [
        {"name": "alice", "public_key": chain.member.public_key.pem},
        {"name": "bob", "public_key": bob.public_key.pem},
    ]
    m = new_machine(chain)
    # two founders, both sign the genesis (k = 2 of 2)
    from conclavium import consortium

    config: dict[str, Any] = {
        "members": members,
        "constitution": {**default_constitution(), "auto_trust_nodes": True},
    }
    full = {**chain_config(chain), **config}
    doc = consortium.make_identity("unit", members, genesis=consortium.genesis_digest(full))
    config["consortium"] = consortium.sign(consortium.sign(doc, chain.member), bob)
    await _three_nodes(chain, m, config)
    assert m.member_threshold() == 2 and not m.signer_members()
    assert "nodes of 0 member(s)" in str(m.quorum_problem())
    await _sign_all(chain, m, range(3))
    assert m.uncommitted, "nodes no member endorsed do not commit"
    await m.apply(*chain.block([chain.member_endorse_entry(i) for i in range(3)]))  # all alice's
    assert set(m.signer_members().values()) == {chain.member.key_id}
    await _sign_all(chain, m, range(3))
    assert m.uncommitted, "three nodes of one member do not commit"
    await m.apply(*chain.block([chain.member_endorse_entry(2, member=bob)]))
    assert m.state.get("public:gov.nodes", chain.nodes[2].id)["member"] == chain.member.key_id  # one owner
    assert m.quorum_problem() is not None
    # node 2 belongs to alice already: bob cannot take it; a node bob endorses first is his
    chain.nodes.append(chain.nodes[0].__class__())
    await m.apply(*chain.block([chain.join_entry(3)]))
    await m.apply(*chain.block([chain.endorse_entry(3)]))
    await m.apply(*chain.block([chain.member_endorse_entry(3, member=bob)]))
    assert m.quorum_problem() is None and m.member_threshold() == 2
    await _sign_all(chain, m, range(4))
    assert not m.uncommitted


def chain_config(chain: Chain) -> dict[str, Any]:
    """The configuration `genesis_entry` builds before merging its `config` (what founders sign)."""
    from conclavium.node_messages import VIRTUAL_DEV_MEASUREMENT

    return {
        "users": [{"name": "u", "public_key": chain.user.public_key.pem}],
        "node_policy": {"environment": "development", "platforms": ["virtual"]},
        "measurements": [{"platform": "virtual", "measurement": VIRTUAL_DEV_MEASUREMENT}],
    }
