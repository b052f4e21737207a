"""Governance documents name their ledger: another ledger's document (same member keys) is refused."""

from __future__ import annotations

import dataclasses

import cbor2
from gov_harness import LEDGER, Gov

from conclavium import cose
from conclavium.governance import apply
from conclavium.governance.documents import make_ballot, make_proposal, make_withdrawal

ROTATE = [{"name": "rotate_ledger_secret", "args": {}}]


def refused_as(g: Gov, document: bytes, code: str, match: str) -> None:
    before = g.tables.canonical()
    out = g.submit(document)
    assert (out.status, out.code) == ("Invalid", code), out
    assert out.reason is not None and match in out.reason, out.reason
    assert g.tables.canonical() == before


def test_every_document_type_from_another_ledger_is_refused(gov: Gov) -> None:
    alice, bob = gov.keys["alice"], gov.keys["bob"]
    refused_as(gov, make_proposal(ROTATE, alice, gov.now_s, ledger="other"), "wrong_ledger", "for ledger 'other'")
    pid = gov.propose("alice", ROTATE).proposal_id
    assert pid is not None
    ballot = make_ballot(pid, True, bob, gov.now_s, ledger="other")
    refused_as(gov, ballot, "wrong_ledger", f"this is ledger {LEDGER!r}")
    refused_as(gov, make_withdrawal(pid, alice, gov.now_s, ledger="other"), "wrong_ledger", "for ledger 'other'")
    assert gov.vote("bob", pid).proposal_state == "Open"  # the same member's ballot for this ledger counts


def test_a_ballot_replayed_from_a_twin_ledger_does_not_count() -> None:
    """Two ledgers governed by the same member keys: a ballot cast on one is refused on the other,
    even though the proposal it names exists on both (same actions, same proposer)."""
    one, two = Gov(), Gov()
    two.ledger = "twin"
    pid_one = one.propose("alice", ROTATE).proposal_id
    pid_two = two.propose("alice", ROTATE).proposal_id
    assert pid_one is not None and pid_one != pid_two, "the ledger is part of the signed bytes, so of the id"
    ballot = make_ballot(pid_two, True, two.keys["bob"], two.now_s, ledger="twin")
    assert two.submit(ballot).ok
    forged = make_ballot(pid_one, True, one.keys["bob"], one.now_s, ledger="twin")
    refused_as(one, forged, "wrong_ledger", "for ledger 'twin'")
    refused_as(one, ballot, "wrong_ledger", "for ledger 'twin'")  # the twin's very bytes, replayed


def test_document_without_the_ledger_header_is_refused(gov: Gov) -> None:
    headers = {cose.HDR_MSG_TYPE: "proposal", cose.HDR_CREATED_AT: gov.now_s}
    doc = cose.sign1(b'{"actions":[{"name":"rotate_ledger_secret","args":{}}]}', gov.keys["alice"], headers)
    refused_as(gov, doc, "missing_ledger", "does not name its ledger")


def test_ledger_header_of_another_type_is_refused(gov: Gov) -> None:
    for value in (LEDGER.encode(), 7, [LEDGER], ""):
        headers = {cose.HDR_MSG_TYPE: "proposal", cose.HDR_CREATED_AT: gov.now_s, cose.HDR_LEDGER: value}
        doc = cose.sign1(b'{"actions":[]}', gov.keys["alice"], headers)
        refused_as(gov, doc, "wrong_ledger", "is for ledger")


def test_ledger_moved_to_the_unprotected_header_is_refused(gov: Gov) -> None:
    """Only the protected header is signed: a ledger id outside it names nothing."""
    headers = {cose.HDR_MSG_TYPE: "proposal", cose.HDR_CREATED_AT: gov.now_s}
    signed = cbor2.loads(cose.sign1(b'{"actions":[]}', gov.keys["alice"], headers))
    protected, _, payload, sig = signed.value
    moved = cbor2.dumps(cbor2.CBORTag(18, [protected, {cose.HDR_LEDGER: LEDGER}, payload, sig]))
    refused_as(gov, moved, "missing_ledger", "does not name its ledger")


def test_rewriting_the_ledger_header_breaks_the_signature(gov: Gov) -> None:
    doc = make_proposal(ROTATE, gov.keys["alice"], gov.now_s, ledger="other")
    tagged = cbor2.loads(doc)
    protected = cbor2.loads(tagged.value[0])
    protected[cose.HDR_LEDGER] = LEDGER
    rewritten = cbor2.dumps(cbor2.CBORTag(18, [cbor2.dumps(protected, canonical=True), {}, *tagged.value[2:]]))
    out = gov.submit(rewritten)
    assert out.status == "Invalid" and out.reason is not None and "bad signature" in out.reason


def test_without_a_ledger_in_the_context_nothing_applies(gov: Gov) -> None:
    doc = make_proposal(ROTATE, gov.keys["alice"], gov.now_s, ledger=LEDGER)
    out = apply(gov.tables, doc, dataclasses.replace(gov.ctx, ledger=None))
    assert (out.status, out.code) == ("Invalid", "wrong_ledger")
    assert gov.submit(doc).ok
