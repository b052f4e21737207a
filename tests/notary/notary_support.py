"""Building notarisation requests and Corda-style transactions for the notary's tests."""

from __future__ import annotations

import hashlib
import os
from typing import Any

from conclavium.apps import app_entry
from conclavium.block import Entry, Kind
from conclavium.crypto.keys import PrivateKey
from conclavium.governance import documents
from conclavium.notary import Request, TimeWindow, WireTransaction, make, state_ref, transaction_groups
from conclavium.notary.request import NOTARY_GROUPS


def fresh_ref(index: int = 0) -> str:
    return state_ref(os.urandom(32), index)


def corda_tx(
    ledger: str, inputs: list[str], references: list[str] | None = None, window: TimeWindow | None = None
) -> WireTransaction:
    """A transaction with these states, an output and a command (opaque bytes), a random salt."""
    groups = transaction_groups(inputs, references or [], window, ledger, outputs=[os.urandom(40)], commands=[b"Move"])
    return WireTransaction(groups, os.urandom(32))


def request(
    key: PrivateKey,
    ledger: str,
    inputs: list[str],
    references: list[str] | None = None,
    window: TimeWindow | None = None,
    *,
    ts: int | None = None,
    tear_off: bool = True,
    wtx: WireTransaction | None = None,
) -> tuple[Request, WireTransaction]:
    wtx = wtx or corda_tx(ledger, inputs, references, window)
    ftx = wtx.tear_off(NOTARY_GROUPS) if tear_off else None
    return make(key, ledger, wtx.id.hex(), inputs, references, window, ftx, ts_ms=ts), wtx


def entry(req: Request) -> Entry:
    return app_entry("notary", req.body, req.signature)


def enable_notary(member: PrivateKey, ledger: str, parties: list[str], at_s: int) -> list[Entry]:
    """A proposal enabling the notary for `parties`, and one member's ballot (enough for one member)."""
    actions: list[dict[str, Any]] = [
        {"name": "set_applications", "args": {"applications": ["kv", "notary"]}},
        {"name": "set_notary_parties", "args": {"parties": parties}},
    ]
    doc = documents.make_proposal(actions, member, at_s, ledger=ledger)
    ballot = documents.make_ballot(hashlib.sha256(doc).hexdigest(), True, member, at_s, ledger=ledger)
    return [Entry(Kind.GOV, doc, b""), Entry(Kind.GOV, ballot, b"")]
