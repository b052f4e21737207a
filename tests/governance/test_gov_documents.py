"""SDK helpers: proposal files and signed documents."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gov_harness import key

from conclavium import cose
from conclavium.governance import GovernanceError, document_id
from conclavium.governance.documents import (
    load_proposal_file,
    make_ballot,
    make_proposal,
    make_withdrawal,
    parse_proposal_json,
)


def test_issue_example_proposal_file(tmp_path: Path) -> None:
    pem = key("carl").public_key.pem
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"actions": [{"name": "set_user", "args": {"name": "carol", "public_key": pem}}]}))
    assert load_proposal_file(path) == [{"name": "set_user", "args": {"name": "carol", "public_key": pem}}]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('[{"name": "open_service"}]', 'exactly one key, "actions"'),
        ('{"actions": [], "extra": 1}', 'exactly one key, "actions"'),
        ('{"actions": [{"name": "nope"}]}', "unknown action 'nope'"),
        ('{"actions": [{"name": "set_commit_quorum", "args": {"quorum": 2.5}}]}', "floating-point"),
    ],
)
def test_bad_proposal_files(text: str, match: str) -> None:
    with pytest.raises(GovernanceError, match=match):
        parse_proposal_json(text)


def test_documents_carry_headers_and_ids_are_stable() -> None:
    k = key("alice")
    actions = [{"name": "open_service", "args": {}}]
    doc = make_proposal(actions, k, 1_700_000_000, ledger="L1")
    assert document_id(doc) == document_id(make_proposal(actions, k, 1_700_000_000, ledger="L1"))
    assert document_id(doc) != document_id(make_proposal(actions, k, 1_700_000_000, ledger="L2"))
    headers, payload = cose.verify1(doc, lambda kid: k.public_key)
    assert headers[cose.HDR_MSG_TYPE] == "proposal" and headers[cose.HDR_CREATED_AT] == 1_700_000_000
    assert headers[cose.HDR_LEDGER] == "L1"
    assert json.loads(payload) == {"actions": actions}
    pid = document_id(doc)
    headers, payload = cose.verify1(make_ballot(pid, False, k, 1, ledger="L1"), lambda kid: k.public_key)
    assert headers[cose.HDR_PROPOSAL_ID] == pid and json.loads(payload) == {"vote": "reject"}
    headers, payload = cose.verify1(make_withdrawal(pid, k, 1, ledger="L1"), lambda kid: k.public_key)
    assert headers[cose.HDR_MSG_TYPE] == "withdrawal" and payload == b"{}"


def test_sdk_refuses_bad_input_before_signing() -> None:
    with pytest.raises(GovernanceError, match="proposal id"):
        make_ballot("abc", True, key("alice"), 1, ledger="L1")
    with pytest.raises(GovernanceError, match="created_at"):
        make_withdrawal("00" * 32, key("alice"), -1, ledger="L1")
    with pytest.raises(GovernanceError, match="unknown action"):
        make_proposal([{"name": "x"}], key("alice"), 1, ledger="L1")
    with pytest.raises(GovernanceError, match="must name its ledger"):
        make_proposal([{"name": "open_service", "args": {}}], key("alice"), 1, ledger="")
