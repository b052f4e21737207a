"""The notary application: Corda-style uniqueness and time windows, run by the consortium.

A request (`conclavium.notary.request`) is signed by a notary party that governance registered
(`set_notary_parties`). Executed in ledger order, it is notarised when none of its inputs and
references was consumed by another transaction and the block's ledger time lies in its time
window; its inputs are then consumed, all of them in the same entry (an Invalid entry writes
nothing). A request for a transaction id already notarised with the same states is answered the
same again (Corda's idempotent re-notarisation), without checking the time window a second time.

Its answer: notarised requests are executed entries whose write digest is the notarisation
statement, so their receipt is the consortium's signature (a quorum of attested executors)
over the transaction id; refused ones are Invalid with a reason (`conflict` with Corda's
`NotaryError.Conflict` as its message, `time_window_invalid`, ...).

State: `notary/consumed` (StateRef -> consuming tx id and requesting party) and `notary/tx`
(tx id -> what it was notarised with). Both are private maps (encrypted at rest; the `/` keeps
the key-value application out: its map names cannot hold one), readable only through this
application's queries.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from conclavium.block import Entry
from conclavium.crypto.keys import PublicKey
from conclavium.encoding import canonical_json
from conclavium.governance import queries as gov_queries
from conclavium.governance.model import NOTARY_PARTIES_KEY
from conclavium.notary import request as nr
from conclavium.tx import TxError

from .. import metrics as m
from ..tables import DEFAULT_TX_VALIDITY_MS, SERVICE
from .base import Application, Context, Namespaces, QueryError, SignatureJob, Verdict, not_behind

CONSUMED = "notary/consumed"
NOTARISED = "notary/tx"
PARSED_CACHE_LIMIT = 200_000


class NotaryApp(Application):
    name = nr.NOTARY_APP
    namespaces = Namespaces(public=(), private=("notary/",))

    def __init__(self) -> None:
        self.parsed: dict[bytes, nr.Request] = {}  # by body: parsed once, for the batch verifier

    def _parse(self, ctx: Context, entry: Entry) -> nr.Request:
        req = self.parsed.pop(entry.data, None)
        if req is None or req.signature != entry.signature:
            req = nr.parse(entry.data, entry.signature, ctx.ledger)
        return req

    def signature_jobs(self, ctx: Context, entries: list[Entry]) -> list[SignatureJob | None]:
        if len(self.parsed) > PARSED_CACHE_LIMIT:  # a cache only: what is dropped is parsed again
            self.parsed.clear()
        keys = ctx.participant_keys()
        jobs: list[SignatureJob | None] = []
        for e in entries:
            try:
                req = self.parsed[e.data] = nr.parse(e.data, e.signature, ctx.ledger)
            except Exception:  # a hint only: refused in order, with the reason
                jobs.append(None)
                continue
            key = keys.get(req.fields.party)
            jobs.append((key, e.signature, e.data, req.fields.party) if key is not None else None)
        return jobs

    def execute(self, ctx: Context, entry: Entry, pre: Verdict) -> bytes:
        try:
            return self._execute(ctx, entry, pre)
        except TxError as e:
            outcome = e.code if e.code in ("conflict", "time_window_invalid") else "refused"
            m.NOTARY_OUTCOMES[outcome].inc()
            raise

    def _execute(self, ctx: Context, entry: Entry, pre: Verdict) -> bytes:
        try:
            req = self._parse(ctx, entry)
        except nr.RequestError as e:
            raise TxError(e.code, e.message) from None
        f = req.fields
        validity = ctx.config("tx_validity_ms", DEFAULT_TX_VALIDITY_MS)
        if f.ts < ctx.block_time - validity:
            raise TxError("expired", "the request's timestamp is outside the validity window")
        if f.ts > ctx.block_time + validity:
            raise TxError("not_yet_valid", "the request's timestamp is in the future")
        state = ctx.state
        if not gov_queries.is_service_open(state):
            raise TxError("service_not_open", "the service accepts only governance until members open it")
        key = _party_key(ctx, f.party)
        if key is None:
            raise TxError("unknown_party", "the requester is not a notary party of this ledger (set_notary_parties)")
        ok = pre[1] if pre is not None and pre[0] == f.party else key.verify(entry.signature, entry.data)
        if not ok:
            raise TxError("bad_signature", "the signature does not verify with the party's key")
        ctx.entry_dated(f.ts)
        try:
            nr.check_filtered(req)
        except nr.RequestError as e:
            raise TxError(e.code, e.message) from None
        digest = nr.statement_digest(ctx.ledger, f)
        window = f.time_window.to_json() if f.time_window is not None else None
        done = state.get(NOTARISED, f.tx_id)
        if done is not None:
            if (done["inputs"], done["references"], done["time_window"]) != (f.inputs, f.references, window):
                raise TxError("tx_id_reused", "this transaction id was notarised with other states or time window")
            m.NOTARY_OUTCOMES["repeat"].inc()
            return digest  # the same answer again; nothing to write
        consumed: dict[str, dict[str, str]] = {}
        for kind, refs in (("INPUT_STATE", f.inputs), ("REFERENCE_STATE", f.references)):
            for ref in refs:
                row = state.get(CONSUMED, ref)
                if row is not None:
                    consumed[ref] = nr.consumption_details(row["tx"], kind)
                    m.NOTARY_CONFLICTS_BY_TYPE[kind].inc()
        if consumed:
            raise TxError("conflict", nr.conflict_message(f.tx_id, consumed))
        if f.time_window is not None and not f.time_window.contains(ctx.block_time):
            detail = {"current_time": ctx.block_time, "time_window": window}
            raise TxError("time_window_invalid", canonical_json(detail).decode())
        state.begin()
        for ref in f.inputs:
            state.put(CONSUMED, ref, {"tx": f.tx_id, "party": f.party})
        state.put(
            NOTARISED,
            f.tx_id,
            {"party": f.party, "inputs": f.inputs, "references": f.references, "time_window": window},
        )
        state.commit()
        m.NOTARY_OUTCOMES["notarised"].inc()
        return digest

    def queries(self) -> dict[str, Callable[[Any, dict[str, Any]], dict[str, Any]]]:
        return {"notary_request": _request_status, "notary_who_consumed": _who_consumed}


def _party_key(ctx: Any, party: str) -> PublicKey | None:
    """The party's key, if governance registered it and it is an active member or user."""
    if party not in (ctx.state.get(SERVICE, NOTARY_PARTIES_KEY) or []):
        return None
    return ctx.participant_keys().get(party)


def _request_status(machine: Any, req: dict[str, Any]) -> dict[str, Any]:
    """A request's status (`GET /v1/notary/requests/{hash}`), with a refusal's Corda error parsed."""
    text = req.get("tx")
    try:
        eid = bytes.fromhex(text) if isinstance(text, str) else b""
    except ValueError:
        eid = b""
    if len(eid) != 32:
        raise QueryError("invalid_hash", "a request hash is 64 hex digits")
    st = machine.tx_status(eid)
    if st["status"] == "Invalid":
        detail = nr.parse_error(st["reason"], st["message"])
        if detail is not None:
            st["notary_error"] = detail
    return st


def _who_consumed(machine: Any, req: dict[str, Any]) -> dict[str, Any]:
    """Which transaction consumed a state, sealed to the asking party: the consuming transaction's
    id only to the party that had it notarised; any other party learns what a conflict would tell
    it (SHA-256 of that id), the gateway nothing. Queries are not ordered: their timestamp is
    checked against this executor's clock."""
    not_behind(machine, req)
    try:
        q, body, sig = nr.parse_who_consumed(req.get("query"))
    except nr.RequestError as e:
        raise QueryError(e.code, e.message) from None
    if q.ledger != machine.ledger:
        raise QueryError("wrong_ledger", "the query is for another ledger")
    if abs(q.ts - int(time.time() * 1000)) > nr.QUERY_VALIDITY_MS:
        raise QueryError("stale_query", "the query's timestamp is too far from the executor's clock")
    key = _party_key(machine, q.party)
    if key is None:
        raise QueryError("unknown_party", "the caller is not a notary party of this ledger")
    if not key.verify(sig, body):
        raise QueryError("bad_signature", "the query signature does not verify")
    row = machine.state.get(CONSUMED, q.state)
    answer: dict[str, Any] = {"state": q.state, "consumed": row is not None, "height": machine.tip.height}
    if row is not None:
        answer.update(nr.consumption_details(row["tx"], "INPUT_STATE"))
        del answer["type"]
        if row["party"] == q.party:
            answer["tx_id"] = row["tx"]
    try:
        return nr.seal_answer(q, body, answer)
    except nr.RequestError as e:
        raise QueryError(e.code, e.message) from None
