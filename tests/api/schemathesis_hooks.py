"""Schemathesis hooks for the gateway's conformance run (tests/ledger/test_openapi_conformance.py).

JSON Schema cannot say what a signed body or a COSE document holds, so the document names those
strings with custom formats (services/gateway/openapi.py) and this module gives schemathesis a
strategy for each, built with the project's own producers: positive data is then a genuine
transaction, query or governance document, not a random string the gateway must refuse. Two
cross-field rules no schema states are restored on positive cases only (`map_case`): a signature
is the sender's over that very body, and a ballot or withdrawal names the proposal of its URL (and
Sawtooth's `/batches` and `/transactions` lists get no `start`, which must name an item of the
list: they are empty here);
and about half of the positive reads name an identifier that exists, so 200 answers are checked
against their schemas too.
Negative cases are left exactly as schemathesis made them.

Configured by environment (set by the test): CONCLAVIUM_ST_NET (the local network's directory).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import schemathesis
from hypothesis import strategies as st

from conclavium import consortium, query, recovery
from conclavium.crypto.keys import PrivateKey
from conclavium.encoding import b64d, b64e
from conclavium.governance import documents
from conclavium.notary import request as notary
from conclavium.sawtooth.batch import build_batch
from conclavium.sawtooth.pb.sawtooth_pb2 import BatchList
from conclavium.tx import make_body
from services.gateway.openapi import FMT_COSE, FMT_NOTARY_BODY, FMT_NOTARY_QUERY, FMT_QUERY_BODY, FMT_TX_BODY

NET = Path(os.environ["CONCLAVIUM_ST_NET"])
NETWORK = json.loads((NET / "local.json").read_text())
LEDGER: str = NETWORK.get("ledger", "local")
USER = PrivateKey.from_file(str(NET / NETWORK["users"][0]["key"]))
STRANGER = PrivateKey.generate()  # not a member: its governance documents end Invalid, changing nothing


def _get(path: str) -> Any:
    with urlopen(NETWORK["gateway_url"] + path, timeout=10) as r:
        return json.loads(r.read())


_service = _get("/v1/service")
TX_KEY = (_service["tx_key"]["id"], bytes.fromhex(_service["tx_key"]["public"])) if _service.get("tx_key") else None
# Identifiers that exist, so that reads reach their 200 answers too: committed proposals (whose ids
# are entry ids, with receipts) and the nodes.
_proposals = [p["proposal_id"] for p in _get("/v1/gov/proposals")["proposals"]]
# CONCLAVIUM_ST_KNOWN: "<tx hash> <key>" of a transaction that wrote <key> in the private map
# `conformance` and the public map `public:conformance` (the test commits it before the run).
_known_tx, KNOWN_KEY = os.environ.get("CONCLAVIUM_ST_KNOWN", " ").split(" ")
_txs = [*_proposals, *([_known_tx] if _known_tx else [])]
KNOWN: dict[tuple[str, str], list[str]] = {
    ("/v1/nodes/{id}/attestation", "id"): [n["id"] for n in _service["nodes"]],
    ("/v1/gov/proposals/{id}", "id"): _proposals,
    ("/v1/transactions/{hash}", "hash"): _txs,
    ("/v1/transactions/{hash}/receipt", "hash"): _txs,
    ("/v1/state/{map}/{key}", "map"): ["public:conformance"],
    ("/v1/state/{map}/{key}", "key"): [KNOWN_KEY] if KNOWN_KEY else [],
}

KEYS = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=24)
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53 - 1), 2**53 - 1) | st.text(max_size=24),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
).filter(lambda v: v is not None)  # a put's value is never null
OPS = st.lists(
    st.one_of(
        st.builds(lambda k, v: {"op": "put", "map": "public:conformance", "key": k, "value": v}, KEYS, VALUES),
        st.builds(lambda k: {"op": "delete", "map": "public:conformance", "key": k}, KEYS),
    ),
    min_size=1,
    max_size=4,
)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _tx_body(ops: list[dict[str, Any]]) -> str:
    return b64e(make_body(LEDGER, USER.key_id, ops, _now_ms()))


def _query_body(key: str) -> str:
    assert TX_KEY is not None, "the service has no transaction key"
    signed, _, _ = query.make(USER, LEDGER, "conformance", key, _now_ms(), TX_KEY)
    return signed["body"]


def _proposal() -> bytes:
    return documents.make_proposal([{"name": "open_service", "args": {}}], STRANGER, int(time.time()), ledger=LEDGER)


schemathesis.openapi.format(FMT_TX_BODY, OPS.map(_tx_body))
schemathesis.openapi.format(FMT_QUERY_BODY, ((st.just(KNOWN_KEY) if KNOWN_KEY else KEYS) | KEYS).map(_query_body))
STATE_REFS = st.builds(
    lambda h, i: notary.state_ref(h, i), st.binary(min_size=32, max_size=32), st.integers(0, 2**31 - 1)
)


def _notary_body(inputs: list[str], tx_id: bytes) -> str:
    """A well-formed request by the first user (who is no notary party here: executors refuse it)."""
    return b64e(notary.make(USER, LEDGER, tx_id.hex(), inputs, ts_ms=_now_ms()).body)


def _notary_query(state: str) -> str:
    return notary.make_who_consumed(USER, LEDGER, state)[0]["body"]


schemathesis.openapi.format(
    FMT_NOTARY_BODY,
    st.builds(
        _notary_body, st.lists(STATE_REFS, min_size=1, max_size=3, unique=True), st.binary(min_size=32, max_size=32)
    ),
)
schemathesis.openapi.format(FMT_NOTARY_QUERY, STATE_REFS.map(_notary_query))
schemathesis.openapi.format(FMT_COSE, st.just(None).map(lambda _: b64e(_proposal())))


def _signed(item: Any) -> Any:
    """The same transaction or query, signed by its sender over its body."""
    if isinstance(item, dict) and isinstance(item.get("body"), str):
        return {**item, "signature": b64e(USER.sign(b64d(item["body"])))}
    return item


def _document(path: str, proposal_id: str | None) -> bytes:
    now = int(time.time())
    if path.endswith("/ballots"):
        assert proposal_id is not None
        return documents.make_ballot(proposal_id.lower(), True, STRANGER, now, ledger=LEDGER)
    if path.endswith("/withdraw"):
        assert proposal_id is not None
        return documents.make_withdrawal(proposal_id.lower(), STRANGER, now, ledger=LEDGER)
    if path.endswith("/recovery-shares"):
        return recovery.share_document(STRANGER, LEDGER, "00" * 32, "00" * 32, b64e(b"sealed share"), now)
    return _proposal()


def _known(path: str, name: str, value: Any) -> Any:
    """About half of the generated identifiers (chosen by their digest) become existing ones."""
    known = KNOWN.get((path, name))
    if not known or not isinstance(value, str):
        return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()
    return known[digest[1] % len(known)] if digest[0] < 128 else value


def _sawtooth_batch_list() -> bytes:
    """A genuine, signed BatchList (one intkey transaction with a fresh key): accepted, then Invalid
    at apply when the ledger does not run the family, changing nothing."""
    key = os.urandom(32)
    address = hashlib.sha512(b"intkey").hexdigest()[:6] + hashlib.sha512(key).hexdigest()[-64:]
    b = build_batch(key, [("intkey", "1.0", b"\xa0", [address], [address])])
    return BatchList(batches=[b]).SerializeToString()


@schemathesis.hook
def map_case(ctx: Any, case: Any) -> Any:
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return case
    path = case.operation.path
    if case.method.upper() == "GET":
        case.path_parameters = {k: _known(path, k, v) for k, v in (case.path_parameters or {}).items()}
        if path in ("/batches", "/transactions") and case.query:
            # `start` names an item of the list (Sawtooth's 54 otherwise), and this ledger's lists are empty
            case.query = {k: v for k, v in case.query.items() if k != "start"}
        return case
    if path in ("/v1/transactions", "/v1/queries", "/v1/notary/who-consumed"):
        case.body = _signed(case.body)
    elif path == "/v1/notary/requests" and isinstance(case.body, dict):
        if "requests" in case.body:
            case.body = {**case.body, "requests": [_signed(r) for r in case.body.get("requests") or []]}
        else:
            case.body = _signed(case.body)
    elif path == "/v1/transactions/batch" and isinstance(case.body, dict):
        case.body = {**case.body, "transactions": [_signed(t) for t in case.body.get("transactions", [])]}
    elif path == "/batches":
        case.body = _sawtooth_batch_list()
    elif path.startswith("/v1/gov/"):
        doc = _document(path, (case.path_parameters or {}).get("id"))
        case.body = doc if case.media_type == "application/cose" else {"document": b64e(doc)}
    elif path == "/v1/nodes/{id}/endorsement":
        node = PrivateKey.generate()  # a stranger's endorsement of a node nobody knows: accepted, then Invalid
        doc = consortium.make_node_endorsement(STRANGER, LEDGER, node.public_key.pem, int(time.time()))
        case.path_parameters = {**(case.path_parameters or {}), "id": node.key_id}
        case.body = doc if case.media_type == "application/cose" else {"document": b64e(doc)}
    return case
