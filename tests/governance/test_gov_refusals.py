"""Hostile and mistaken documents are refused with a clear reason and change nothing."""

from __future__ import annotations

import cbor2
import pytest
from gov_harness import LEDGER, Gov, key

from conclavium import cose
from conclavium.governance import apply
from conclavium.governance.documents import make_ballot, make_proposal, make_withdrawal

ROTATE = [{"name": "rotate_ledger_secret", "args": {}}]
BOUND = {cose.HDR_LEDGER: LEDGER}  # hand-made documents name the harness's ledger like the SDK's
ADD_USER = [{"name": "set_user", "args": {"name": "carl", "public_key": key("carl").public_key.pem}}]


def refused(g: Gov, document: bytes, match: str) -> None:
    """The document is Invalid with a reason matching `match`, and the tables did not change."""
    before = g.tables.canonical()
    out = g.submit(document)
    assert out.status == "Invalid", out
    assert out.reason is not None and match in out.reason, out.reason
    assert out.effects == []
    assert g.tables.canonical() == before


def _open(g: Gov, actions: list = ADD_USER) -> str:
    out = g.propose("alice", actions)
    assert out.ok, out.reason
    assert out.proposal_id is not None
    return out.proposal_id


def test_forged_signature(gov: Gov) -> None:
    mallory = key("mallory")
    headers = {**BOUND, cose.HDR_MSG_TYPE: "proposal", cose.HDR_CREATED_AT: gov.now_s}
    doc = cose.sign1(b'{"actions":[]}', mallory, headers)
    tagged = cbor2.loads(doc)
    protected = cbor2.loads(tagged.value[0])
    protected[4] = gov.id("alice").encode()  # claim to be alice, keep mallory's signature
    pbytes = cbor2.dumps(protected, canonical=True)
    sig = mallory.sign(cose.sig_structure(pbytes, tagged.value[2]))
    refused(gov, cbor2.dumps(cbor2.CBORTag(18, [pbytes, {}, tagged.value[2], sig])), "bad signature")


def test_altered_payload(gov: Gov) -> None:
    doc = make_proposal(ROTATE, gov.keys["alice"], gov.now_s, ledger=LEDGER)
    tagged = cbor2.loads(doc)
    altered = cbor2.dumps(cbor2.CBORTag(18, [tagged.value[0], {}, b'{"actions":[{"name":"open_service"}]}',
                                             tagged.value[3]]))
    refused(gov, altered, "bad signature")


def test_unknown_signer(gov: Gov) -> None:
    refused(gov, make_proposal(ROTATE, key("stranger"), gov.now_s, ledger=LEDGER), "unknown signer key id")


def test_user_cannot_propose_or_vote(gov: Gov) -> None:
    refused(gov, make_proposal(ROTATE, gov.keys["uma"], gov.now_s, ledger=LEDGER), "is a user (uma), not a member")
    pid = _open(gov)
    refused(gov, make_ballot(pid, True, gov.keys["uma"], gov.now_s, ledger=LEDGER), "users cannot submit a ballot")


def test_ballot_by_removed_member(gov: Gov) -> None:
    pid = _open(gov)
    gov.pass_([{"name": "remove_member", "args": {"name": "carol"}}])
    refused(gov, make_ballot(pid, True, gov.keys["carol"], gov.now_s, ledger=LEDGER), "no longer a member")
    refused(gov, make_proposal(ROTATE, gov.keys["carol"], gov.now_s, ledger=LEDGER), "no longer a member")


def test_replayed_ballot_and_duplicate_vote(gov: Gov) -> None:
    pid = _open(gov)
    ballot = make_ballot(pid, True, gov.keys["bob"], gov.now_s, ledger=LEDGER)
    assert gov.submit(ballot).proposal_state == "Open"
    refused(gov, ballot, "already voted approve")
    refused(gov, make_ballot(pid, False, gov.keys["bob"], gov.now_s + 1, ledger=LEDGER), "ballots are final")


def test_replayed_proposal(gov: Gov) -> None:
    doc = make_proposal(ROTATE, gov.keys["alice"], gov.now_s, ledger=LEDGER)
    assert gov.submit(doc).ok
    refused(gov, doc, "already submitted (replay)")


def test_ballot_on_closed_proposal(gov: Gov) -> None:
    pid = _open(gov)
    gov.vote("alice", pid)
    assert gov.vote("bob", pid).proposal_state == "Accepted"
    refused(gov, make_ballot(pid, True, gov.keys["carol"], gov.now_s, ledger=LEDGER), "is Accepted: no more ballots")
    refused(gov, make_withdrawal(pid, gov.keys["alice"], gov.now_s, ledger=LEDGER), "no more withdrawals")


def test_ballot_on_unknown_proposal(gov: Gov) -> None:
    refused(gov, make_ballot("00" * 32, True, gov.keys["bob"], gov.now_s, ledger=LEDGER), "unknown proposal")


def test_expired_proposal() -> None:
    g = Gov(constitution={"proposal_ttl_s": 600, "rules": {"default": {"accept": {"rule": "majority"}}}})
    pid = _open(g)
    g.vote("alice", pid)
    g.now_s += 600
    ballot = make_ballot(pid, True, g.keys["bob"], g.now_s, ledger=LEDGER)
    # past the deadline even before expire() ran for this block: refused, nothing applied
    before = g.tables.canonical()
    out = apply(g.tables, ballot, g.ctx)
    assert out.status == "Invalid" and "expired at" in out.reason
    assert g.tables.canonical() == before
    # the next block expires it first; the ballot then meets a closed proposal
    out = g.submit(ballot)
    assert out.status == "Invalid" and "is Expired: no more ballots" in out.reason
    assert g.proposal(pid)["state"] == "Expired"
    assert g.tables.get("public:gov.users", key("carl").key_id) is None


def test_expire_without_block_ballot() -> None:
    from conclavium.governance import Context, expire

    g = Gov(constitution={"proposal_ttl_s": 600, "rules": {"default": {"accept": {"rule": "majority"}}}})
    pid = _open(g)
    opened = g.proposal(pid)["opened_at_ms"]
    assert expire(g.tables, Context(g.height + 1, opened + 599_999)) == []
    assert expire(g.tables, Context(g.height + 1, opened + 600_000)) == [pid]
    assert g.proposal(pid)["state"] == "Expired" and g.proposal(pid)["final_height"] == g.height + 1


def test_created_at_outside_replay_window(gov: Gov) -> None:
    stale = make_proposal(ROTATE, gov.keys["alice"], gov.now_s - 3601, ledger=LEDGER)
    refused(gov, stale, "outside the 3600 s replay window")
    refused(gov, make_proposal(ROTATE, gov.keys["alice"], gov.now_s + 3601, ledger=LEDGER), "replay window")


def test_withdrawal(gov: Gov) -> None:
    pid = _open(gov)
    refused(gov, make_withdrawal(pid, gov.keys["bob"], gov.now_s, ledger=LEDGER), "only the proposer")
    out = gov.withdraw("alice", pid)
    assert out.ok and out.proposal_state == "Withdrawn"
    refused(gov, make_ballot(pid, True, gov.keys["bob"], gov.now_s, ledger=LEDGER), "is Withdrawn")


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b'{"actions":[{"name":"make_coffee","args":{}}]}', "unknown action 'make_coffee'"),
        (b'{"actions":[]}', "non-empty list"),
        (b'{"actions":[{"name":"set_user","args":{"name":"x"}}]}', "missing argument(s) public_key"),
        (b'{"actions":[{"name":"set_commit_quorum","args":{"quorum":1.0}}]}', "floating-point"),
        (b'{"actions":[{"name":"set_commit_quorum","args":{"quorum":true}}]}', "quorum must be an integer"),
        (b'{"actions":[{"name":"open_service","args":{"now":1}}]}', "unknown argument(s) now"),
        (b'{"actions":[],"actions":[]}', "duplicate JSON key"),
        (b'{"actions":[{"name":"allow_measurement","args":{"platform":"sev","measurement":"00"}}]}',
         "platform must be one of"),
        (b'{"actions":[{"name":"allow_measurement","args":{"platform":"tdx","measurement":"xyz"}}]}',
         "even-length hex"),
        (b'{"actions":[{"name":"remove_member","args":{"member_id":"00","name":"bob"}}]}', "exactly one of"),
        (b'not json', "not valid JSON"),
        (b'{"actions":[{"name":"set_member","args":{"name":"x","public_key":"-----BEGIN PRIVATE KEY-----"}}]}',
         "PRIVATE key"),
    ],
)
def test_malformed_proposals(gov: Gov, payload: bytes, match: str) -> None:
    headers = {**BOUND, cose.HDR_MSG_TYPE: "proposal", cose.HDR_CREATED_AT: gov.now_s}
    refused(gov, cose.sign1(payload, gov.keys["alice"], headers), match)


def test_one_bad_action_invalidates_the_whole_proposal(gov: Gov) -> None:
    payload = (b'{"actions":[{"name":"open_service","args":{}},'
               b'{"name":"set_commit_quorum","args":{"quorum":0}}]}')
    headers = {**BOUND, cose.HDR_MSG_TYPE: "proposal", cose.HDR_CREATED_AT: gov.now_s}
    refused(gov, cose.sign1(payload, gov.keys["alice"], headers), "action 1: set_commit_quorum")


@pytest.mark.parametrize(
    ("headers", "match"),
    [
        ({**BOUND, cose.HDR_MSG_TYPE: "vote", cose.HDR_CREATED_AT: 1}, "must be one of proposal, ballot, withdrawal"),
        ({**BOUND, cose.HDR_MSG_TYPE: "proposal"}, "created_at must be a non-negative integer"),
        ({**BOUND, cose.HDR_MSG_TYPE: "ballot", cose.HDR_CREATED_AT: 1}, "needs conclavium.gov.msg.proposal_id"),
        ({**BOUND, cose.HDR_MSG_TYPE: "proposal", cose.HDR_CREATED_AT: 1, cose.HDR_PROPOSAL_ID: "00" * 32},
         "must not carry"),
    ],
)
def test_bad_headers(gov: Gov, headers: dict, match: str) -> None:
    refused(gov, cose.sign1(b"{}", gov.keys["alice"], headers), match)


def test_bad_ballot_payload(gov: Gov) -> None:
    pid = _open(gov)
    headers = {**BOUND, cose.HDR_MSG_TYPE: "ballot", cose.HDR_CREATED_AT: gov.now_s, cose.HDR_PROPOSAL_ID: pid}
    refused(gov, cose.sign1(b'{"vote":"maybe"}', gov.keys["bob"], headers), 'must be "approve" or "reject"')


def test_garbage_is_invalid_not_an_exception(gov: Gov) -> None:
    for junk in (b"", b"\x00", b"\xd2\x80", b"\xd2" * 5000, cbor2.dumps(cbor2.CBORTag(18, "x"))):
        out = apply(gov.tables, junk, gov.ctx)
        assert out.status == "Invalid" and out.reason


def test_every_single_byte_corruption_is_refused(gov: Gov) -> None:
    pid = _open(gov)
    ballot = make_ballot(pid, True, gov.keys["bob"], gov.now_s, ledger=LEDGER)
    before = gov.tables.canonical()
    for i in range(len(ballot)):
        for mask in (0x01, 0x80, 0xFF):
            corrupted = bytearray(ballot)
            corrupted[i] ^= mask
            out = apply(gov.tables, bytes(corrupted), gov.ctx)
            assert out.status == "Invalid" and out.reason, (i, mask)
    for cut in range(len(ballot)):
        assert apply(gov.tables, ballot[:cut], gov.ctx).status == "Invalid"
    assert gov.tables.canonical() == before
    assert apply(gov.tables, ballot, gov.ctx).ok
