"""The consortium identity document and node endorsements on their own (conclavium/consortium.py):
what a version must carry and who must sign it."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from conclavium import consortium
from conclavium.consortium import IdentityError
from conclavium.crypto.keys import PrivateKey

KEYS = [PrivateKey.generate() for _ in range(3)]


def _v1(threshold: int | None = None) -> dict[str, Any]:
    members = [{"name": n, "public_key": k.public_key.pem} for n, k in zip(("a", "b", "c"), KEYS, strict=True)]
    doc = consortium.make_identity("L", members, threshold, genesis="11" * 32)
    for k in KEYS[:2]:
        doc = consortium.sign(doc, k)
    return doc


def _code(fn: Any, *args: Any) -> str:
    with pytest.raises(IdentityError) as e:
        fn(*args)
    return e.value.code


def test_genesis_needs_its_threshold_of_founders() -> None:
    doc = _v1()
    assert consortium.verify_genesis(doc, "L").threshold == 2
    one = {**doc, "signatures": doc["signatures"][:1]}
    assert _code(consortium.verify_genesis, one) == "insufficient_signatures"
    twice = {**doc, "signatures": [doc["signatures"][0]] * 2}
    assert _code(consortium.verify_genesis, twice) == "insufficient_signatures"
    assert _code(consortium.verify_genesis, doc, "other") == "wrong_ledger"
    tampered = copy.deepcopy(doc)
    tampered["identity"]["threshold"] = 3
    assert _code(consortium.verify_genesis, tampered) == "insufficient_signatures"


def test_threshold_is_never_below_a_majority() -> None:
    assert _code(_v1, 1) == "threshold_too_low"
    assert _code(_v1, 4) == "malformed"


def test_next_version_needs_the_previous_members_threshold() -> None:
    current = consortium.verify_genesis(_v1())
    stranger = PrivateKey.generate()
    nxt = consortium.next_identity(_v1(), retired_nodes=[{"node": "ab" * 32, "after_height": 7}])
    assert _code(consortium.verify_next, current, consortium.sign(nxt, KEYS[0])) == "insufficient_signatures"
    assert _code(consortium.verify_next, current, consortium.sign(consortium.sign(nxt, KEYS[0]), stranger)) == (
        "insufficient_signatures"
    )
    signed = consortium.sign(consortium.sign(nxt, KEYS[0]), KEYS[2])
    v2 = consortium.verify_next(current, signed)
    assert v2.version == 2 and not v2.counts("ab" * 32, 8) and v2.counts("ab" * 32, 7)
    # a version 3 that drops the retirement, skips a number or names another previous is refused
    dropped = consortium.next_identity(signed, retired_nodes=[])
    dropped = consortium.sign(consortium.sign(dropped, KEYS[0]), KEYS[1])
    assert _code(consortium.verify_next, v2, dropped) == "retirement_dropped"
    assert _code(consortium.verify_next, current, dropped) == "not_next_version"
    assert consortium.verify_chain([_v1(), signed]).digest == v2.digest


def test_members_after_follows_a_proposals_member_actions() -> None:
    body = _v1()["identity"]
    dave = PrivateKey.generate()
    add = [{"name": "set_member", "args": {"name": "dave", "public_key": dave.public_key.pem, "weight": 2}}]
    after = consortium.members_after(body, add)
    assert after is not None and {m["name"] for m in after} == {"a", "b", "c", "dave"}
    gone = consortium.members_after(body, [{"name": "remove_member", "args": {"name": "b"}}])
    assert gone is not None and {m["name"] for m in gone} == {"a", "c"}
    assert consortium.members_after(body, [{"name": "open_service", "args": {}}]) is None


def test_node_endorsement_names_its_member_key_and_validity() -> None:
    node = PrivateKey.generate()
    doc = consortium.make_node_endorsement(KEYS[1], "L", node.public_key.pem, 1000, 2000)
    members = {k.key_id: k.public_key for k in KEYS}
    e = consortium.read_node_endorsement(doc, members, "L")
    assert (e.member, e.node) == (KEYS[1].key_id, node.key_id)
    assert e.valid_at(1_500_000) and not e.valid_at(2_000_000) and not e.valid_at(999_999)
    assert _code(consortium.read_node_endorsement, doc, {KEYS[0].key_id: KEYS[0].public_key}, "L") == "unknown_member"
    assert _code(consortium.read_node_endorsement, doc, members, "M") == "wrong_ledger"
    bad = bytearray(doc)
    bad[-3] ^= 1
    assert _code(consortium.read_node_endorsement, bytes(bad), members, "L") == "bad_endorsement"
