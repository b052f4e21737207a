"""`status.proposal` and the Votes column, counted as the ledger counts; waits are not logged as failures."""

from __future__ import annotations

import logging

from conclavium_operator.errors import WaitingIsNotAFailure
from conclavium_operator.votes import column, required, view

SERVICE = {"members": [{"id": "k1", "name": "alpha"}, {"id": "k2", "name": "beta"}, {"id": "k3", "name": "gamma"}]}


def test_view_counts_only_active_members_and_names_the_pending_ones() -> None:
    proposal = {
        "proposal_id": "p1",
        "actions": [{"name": "set_member", "args": {}}],
        "state": "Open",
        "ballots": {"k1": "approve", "k3": "reject", "gone": "approve"},
        "accept": [{"rule": "majority"}],
        "expires_at_ms": 1_800_000_000_000,
    }
    v = view(proposal, SERVICE)
    assert v == {
        "id": "p1",
        "action": "set_member",
        "state": "Open",
        "approvals": 1,
        "rejections": 1,
        "required": 2,
        "pendingVoters": ["beta"],
        "expiresAt": "2027-01-15T08:00:00Z",
    }
    assert column(v) == "1/2 (1 no)"


def test_required_follows_the_constitution_rules() -> None:
    assert required([{"rule": "majority"}], 4) == 3
    assert required([{"rule": "unanimity"}], 4) == 4
    assert required([{"rule": "k_of_n", "k": 5}], 3) == 3, "k_of_n with fewer members needs all"
    assert required([{"rule": "majority"}, {"rule": "k_of_n", "k": 4}], 5) == 4
    assert required([{"rule": "weighted", "num": 2, "den": 3}], 3) is None
    assert "required" not in view({"proposal_id": "p", "accept": [{"rule": "weighted"}]}, SERVICE)


def test_waits_are_logged_as_info_and_real_failures_stay_errors() -> None:
    f = WaitingIsNotAFailure()
    wait = logging.LogRecord(
        "kopf.objects", logging.ERROR, "", 0, "Handler 'x' failed temporarily: %s", ("waiting for the vote",), None
    )
    assert f.filter(wait) and wait.levelno == logging.INFO
    fail = logging.LogRecord(
        "kopf.objects", logging.ERROR, "", 0, "Handler 'x' failed temporarily: %s", ("403 Forbidden",), None
    )
    assert f.filter(fail) and fail.levelno == logging.ERROR
