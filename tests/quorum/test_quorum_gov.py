"""Quorum party keys are registered by governance, each tied to an active user or member and to
the member whose executors serve it (docs/quorum.md)."""

from __future__ import annotations

import base64

import pytest
from gov_harness import Gov

from conclavium.governance import GovernanceError

A = base64.b64encode(b"\x01" * 32).decode()
B = base64.b64encode(b"\x02" * 32).decode()


@pytest.fixture
def gov() -> Gov:
    return Gov()


def test_party_keys_are_registered_and_removed_by_governance(gov: Gov) -> None:
    alice, uma = gov.id("alice"), gov.id("uma")
    out = gov.pass_(
        [
            {"name": "set_quorum_party", "args": {"public_key": A, "owner": uma, "member": alice}},
            {"name": "set_quorum_party", "args": {"public_key": B, "owner": alice, "member": alice}},
        ]
    )
    assert out.proposal_state == "Accepted"
    assert gov.tables.get("public:gov.service", "quorum_parties") == {
        A: {"owner": uma, "member": alice},
        B: {"owner": alice, "member": alice},
    }
    gov.pass_([{"name": "set_quorum_party", "args": {"public_key": A, "remove": True}}])
    assert list(gov.tables.get("public:gov.service", "quorum_parties")) == [B]


@pytest.mark.parametrize(
    "args",
    [
        {"public_key": A[:-1], "owner": "OWNER", "member": "MEMBER"},  # not 32 bytes
        {"public_key": A.replace("=", ""), "owner": "OWNER", "member": "MEMBER"},  # not canonical
        {"public_key": A, "owner": "OWNER"},  # no member
        {"public_key": A, "owner": "OWNER", "member": "MEMBER", "extra": 1},
        {"public_key": A, "remove": "yes"},
        {"public_key": A, "owner": "OWNER", "member": "uma"},  # a user is not a member
        {"public_key": A, "owner": "nobody", "member": "MEMBER"},  # unknown owner
        {"public_key": A, "remove": True},  # not registered
    ],
)
def test_bad_party_registrations_are_refused(gov: Gov, args: dict[str, object]) -> None:
    ids = {"OWNER": gov.id("uma"), "MEMBER": gov.id("alice"), "uma": gov.id("uma"), "nobody": "ab" * 32}
    resolved = {k: ids.get(v, v) if isinstance(v, str) else v for k, v in args.items()}
    try:
        out = gov.propose("alice", [{"name": "set_quorum_party", "args": resolved}])
    except GovernanceError:
        return  # refused by shape
    assert not out.ok and "quorum party" in (out.reason or ""), out  # refused by the dry run against the state
