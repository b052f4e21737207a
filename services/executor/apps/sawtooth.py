"""The Sawtooth application: batches of Sawtooth transactions, executed by the families' own
transaction processors (TPs) connected to this executor (`sawtooth_tp.py`).

An entry is one batch (`conclavium.sawtooth.batch`), atomic as in Sawtooth: every header rule is
checked again here (the gateway's check is an early filter), then each transaction runs, in order,
on a TP registered for its family and version, against the batch's view of state: the TP may read
only addresses under the transaction's declared inputs and write or delete only under its outputs.
The batch is executed when every transaction's TP answers OK; it is Invalid, writing nothing,
when one is not:

- `unknown_family`: the family and version are not approved by governance (`set_sawtooth_families`);
  decided from the ledger alone, the same on every executor;
- `invalid_transaction`: the TP answered `InvalidTransaction` (its message is kept);
- `tp_internal_error`: the TP answered `InternalError`, or something undecodable, or nothing within
  the timeout, `sawtooth_tp_attempts` times in a row (each attempt starts the transaction afresh);
- `duplicate_transaction` / `missing_dependency`: a transaction id already committed, or a
  dependency neither committed nor earlier in the batch;
- `unregistered_signer`: under the `registered` signer policy (the default; `set_sawtooth_families`
  `signers`), the batch's or a transaction's signer is not a key governance registered
  (`sawtooth_register`).

An approved family with no TP registered on this executor (or a TP that went away mid-transaction)
decides nothing: the executor stops before the block (`AppUnavailable`), raises its alarm metric,
withholds its signature, and applies the block again once a TP registers. A TP is trusted as part
of the executor (it runs inside the same TEE boundary), but not assumed deterministic: its writes,
receipt data and events are the entry's writes, so they are in the leaf's write digest, and a TP
that answers differently on two executors gives two roots at the same height, which the commit
rule reports as a fork instead of committing either.

State: `sawtooth/state` (address -> base64 data), `sawtooth/txns` (transaction id -> batch id),
`sawtooth/batches` (batch id -> transaction ids, entry id, height and the batch's bytes),
`sawtooth/blocks` (height, 12 digits -> the previous block's hash and the block's executed batch
ids), `sawtooth/receipts` (transaction id -> state changes, receipt data and events). All private
maps (encrypted at rest, digests keyed), read through this application's queries
(`sawtooth_reads.py`).
"""

from __future__ import annotations

import base64
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from conclavium import rules
from conclavium.apps import app_entry
from conclavium.block import Entry, entry_id
from conclavium.encoding import canonical_json
from conclavium.governance.model import SAWTOOTH_FAMILIES_KEY
from conclavium.sawtooth import APP, SIGNERS, SIGNERS_POLICY_KEY
from conclavium.sawtooth.batch import ADDRESS, RESOURCE_ID, BatchError, ParsedBatch, Txn, parse_batch
from conclavium.sawtooth.pb.sawtooth_pb2 import TpProcessResponse
from conclavium.tx import TxError

from .. import metrics as m
from ..sawtooth_tp import TpRouter, TpUnavailable, TxnContext
from ..tables import SERVICE, AppUnavailable
from .base import Application, Context, Namespaces, QueryError, Verdict, not_behind

STATE = "sawtooth/state"
TXNS = "sawtooth/txns"
BATCHES = "sawtooth/batches"
BLOCKS = "sawtooth/blocks"
RECEIPTS = "sawtooth/receipts"
DEFAULT_TIMEOUT_MS = 10_000
DEFAULT_ATTEMPTS = 3
MAX_LIST = 1000  # state entries per page
INVALID_INDEX = 100_000  # batch id -> entry id of recent Invalid batches (memory only, like Sawtooth's cache)


class SawtoothApp(Application):
    name = APP
    namespaces = Namespaces(public=(), private=("sawtooth/",))

    def __init__(self, router: TpRouter | None = None) -> None:
        self.router = router
        self.refused: OrderedDict[str, str] = OrderedDict()  # batch id -> entry id hex, Invalid ones

    def execute(self, ctx: Context, entry: Entry, pre: Verdict) -> bytes:
        eid = entry_id(app_entry(APP, entry.data, entry.signature)).hex()
        try:
            batch = parse_batch(entry.data)
        except BatchError as e:
            m.SAWTOOTH_BATCHES.labels("refused").inc()
            raise TxError(e.code, e.message) from None
        try:
            digest = self._execute(ctx, batch, eid)
        except TxError as e:
            self.refused[batch.id] = eid
            while len(self.refused) > INVALID_INDEX:
                self.refused.popitem(last=False)
            m.SAWTOOTH_BATCHES.labels(e.code if e.code in m.SAWTOOTH_OUTCOMES else "refused").inc()
            raise
        m.SAWTOOTH_BATCHES.labels("executed").inc()
        return digest

    def _execute(self, ctx: Context, batch: ParsedBatch, eid: str) -> bytes:
        state = ctx.state
        approved = {(f["name"], f["version"]) for f in state.get(SERVICE, SAWTOOTH_FAMILIES_KEY) or []}
        if state.get(SERVICE, SIGNERS_POLICY_KEY) != "open":
            _check_signers(state, batch)
        for i, t in enumerate(batch.txns):
            if (t.family, t.version) not in approved:
                raise TxError(
                    "unknown_family", _invalid(t, f"family {t.family[:64]} {t.version[:32]} is not run by this ledger")
                )
            if state.get(TXNS, t.id) is not None:
                raise TxError("duplicate_transaction", _invalid(t, "this transaction id is already committed"))
            earlier = {x.id for x in batch.txns[:i]}
            for d in t.dependencies:
                if d not in earlier and state.get(TXNS, d) is None:
                    raise TxError("missing_dependency", _invalid(t, f"dependency {d[:16]}... is not committed"))
        if self.router is None:
            raise AppUnavailable("this executor serves no Sawtooth TP endpoint")
        timeout = ctx.config("sawtooth_tp_timeout_ms", DEFAULT_TIMEOUT_MS) / 1000
        attempts = ctx.config("sawtooth_tp_attempts", DEFAULT_ATTEMPTS)
        state.begin()
        try:
            for t in batch.txns:
                self._run(ctx, t, timeout, attempts)
                state.put(TXNS, t.id, batch.id)
            state.put(
                BATCHES,
                batch.id,
                {
                    "txns": [t.id for t in batch.txns],
                    "entry": eid,
                    "height": ctx.block_height,
                    "raw": base64.b64encode(batch.raw).decode(),
                },
            )
            key = block_key(ctx.block_height)
            row = state.get(BLOCKS, key) or {"prev": ctx.block_prev.hex(), "batches": []}
            state.put(BLOCKS, key, {**row, "batches": [*row["batches"], batch.id]})
            digest = ctx.private_digest(state.pending_writes())
        except BaseException:
            state.rollback()
            raise
        state.commit()
        return digest

    def _run(self, ctx: Context, t: Txn, timeout: float, attempts: int) -> None:
        """One transaction on a TP until it answers OK (its writes join the batch), Invalid or
        internal errors `attempts` times (TxError), or no TP can run it (AppUnavailable)."""
        assert self.router is not None
        last = ""
        for _ in range(max(1, attempts)):
            writes: dict[str, bytes | None] = {}
            txn = _context(ctx, t, writes)
            try:
                answer = self.router.process(t.header_bytes, t.payload, t.id, txn, timeout)
            except TpUnavailable as e:
                m.SAWTOOTH_TP_UNAVAILABLE.inc()
                raise AppUnavailable(str(e)) from None
            if answer is None:
                last = "the TP did not answer in time"
                m.SAWTOOTH_TP_ATTEMPTS.labels("timeout").inc()
            elif answer.status == TpProcessResponse.OK:
                for address, value in writes.items():
                    if value is None:
                        ctx.state.delete(STATE, address)
                    else:
                        ctx.state.put(STATE, address, base64.b64encode(value).decode())
                changes = [
                    {"address": a, "type": "DELETE", "value": ""}
                    if v is None
                    else {"address": a, "type": "SET", "value": base64.b64encode(v).decode()}
                    for a, v in writes.items()
                ]
                receipt = {
                    "state_changes": changes,
                    "data": [base64.b64encode(d).decode() for d in txn.receipt_data],
                    "events": [_event_json(e) for e in txn.events],
                }
                ctx.state.put(RECEIPTS, t.id, receipt)
                return
            elif answer.status == TpProcessResponse.INVALID_TRANSACTION:
                m.SAWTOOTH_TP_ATTEMPTS.labels("invalid").inc()
                raise TxError("invalid_transaction", _invalid(t, answer.message, answer.extended_data))
            else:
                last = answer.message or "internal error"
                m.SAWTOOTH_TP_ATTEMPTS.labels("internal_error").inc()
        raise TxError("tp_internal_error", _invalid(t, f"{last} ({attempts} attempts)"))

    def queries(self) -> dict[str, Callable[[Any, dict[str, Any]], dict[str, Any]]]:
        from . import sawtooth_reads as reads  # it reads this module's maps

        return {
            "sawtooth_batch_statuses": self._batch_statuses,
            "sawtooth_state": _state_get,
            "sawtooth_state_list": _state_list,
            "sawtooth_unregistered": _unregistered,
            "sawtooth_tp_families": self._tp_families,
            **reads.QUERIES,
        }

    def _batch_statuses(self, machine: Any, req: dict[str, Any]) -> dict[str, Any]:
        """Sawtooth's statuses of batches by id: COMMITTED, INVALID (with the transaction and the
        reason), PENDING (executed, not committed yet) or UNKNOWN (not seen by this executor)."""
        ids = req.get("ids")
        if not isinstance(ids, list) or not 0 < len(ids) <= 100 or not all(isinstance(i, str) for i in ids):
            raise QueryError("invalid_ids", "ids is a list of 1 to 100 batch ids")
        out = []
        for bid in ids:
            if not RESOURCE_ID.fullmatch(bid):
                raise QueryError("invalid_id", "a batch id is 128 hex digits")
            row = machine.state.get(BATCHES, bid)
            eid = row["entry"] if row is not None else self.refused.get(bid)
            st = machine.tx_status(bytes.fromhex(eid)) if eid is not None else {"status": "Unknown"}
            item: dict[str, Any] = {"id": bid, "invalid_transactions": []}
            if st["status"] == "Committed":
                item["status"] = "COMMITTED"
            elif st["status"] == "Pending":
                item["status"] = "PENDING"
            elif st["status"] == "Invalid":
                item["status"] = "INVALID"
                item["invalid_transactions"] = [_parse_invalid(st["reason"], st["message"])]
            else:
                item["status"] = "UNKNOWN"
            out.append(item)
        return {"data": out, "head": machine.tip.hash.hex(), "height": machine.tip.height}

    def _tp_families(self, machine: Any, req: dict[str, Any]) -> dict[str, Any]:
        """Which of these (family, version) pairs governance approved and which of those have a TP
        registered on this executor: the gateway holds a batch for an approved family with no TP
        (a liveness matter, decided before ordering) instead of ordering a block every executor
        would stop at."""
        not_behind(machine, req)
        fams = req.get("families")
        if (
            not isinstance(fams, list)
            or not 0 < len(fams) <= MAX_LIST
            or not all(isinstance(f, list) and len(f) == 2 and all(isinstance(x, str) for x in f) for f in fams)
        ):
            raise QueryError("invalid_ids", f"families is a list of 1 to {MAX_LIST} [name, version] pairs")
        st = machine.state
        runs = APP in rules.applications(st, SERVICE)
        approved = {(f["name"], f["version"]) for f in st.get(SERVICE, SAWTOOTH_FAMILIES_KEY) or []} if runs else set()
        registered = self.router.registered() if self.router is not None else {}
        asked = [(n, v) for n, v in fams]
        return {
            "approved": [[n, v] for n, v in asked if (n, v) in approved],
            "registered": [[n, v] for n, v in asked if (n, v) in approved and registered.get((n, v))],
            "head": machine.tip.hash.hex(),
            "height": machine.tip.height,
        }

    def snapshot(self, state: Any) -> Any:
        return None


def _check_signers(state: Any, batch: ParsedBatch) -> None:
    """Under the `registered` signer policy (the default), the batch's signer and every
    transaction's signer are keys governance registered (`sawtooth_register`)."""
    if state.get(SIGNERS, batch.signer) is None:
        raise TxError("unregistered_signer", f"the batch signer {batch.signer} is not a registered Sawtooth signer")
    for t in batch.txns:
        if state.get(SIGNERS, t.signer) is None:
            raise TxError(
                "unregistered_signer", _invalid(t, f"the signer {t.signer} is not a registered Sawtooth signer")
            )


def block_key(height: int) -> str:
    """The `sawtooth/blocks` key of a height: fixed width, so key order is height order."""
    return f"{height:012d}"


def _context(ctx: Context, t: Txn, writes: dict[str, bytes | None]) -> TxnContext:
    """A TP's view of state for transaction `t`: the batch so far plus its own writes, limited to
    its declared inputs (reads) and outputs (writes)."""

    def readable(a: str) -> bool:
        return bool(ADDRESS.fullmatch(a)) and any(a.startswith(p) for p in t.inputs)

    def writable(a: str) -> bool:
        return bool(ADDRESS.fullmatch(a)) and any(a.startswith(p) for p in t.outputs)

    def get(a: str) -> bytes | None:
        if a in writes:
            return writes[a]
        v = ctx.state.get(STATE, a)
        return base64.b64decode(v) if v is not None else None

    def put(a: str, v: bytes) -> bool:
        if not writable(a):
            return False
        writes[a] = bytes(v)
        return True

    def delete(a: str) -> bool:
        if not writable(a):
            return False
        writes[a] = None
        return True

    return TxnContext(get=get, set=put, delete=delete, readable=readable)


def _event_json(e: Any) -> dict[str, Any]:
    return {
        "event_type": e.event_type,
        "attributes": [[a.key, a.value] for a in e.attributes],
        "data": base64.b64encode(e.data).decode(),
    }


def _invalid(t: Txn, message: str, extended: bytes = b"") -> str:
    """An Invalid entry's message: which transaction, and why (as Sawtooth's batch status gives it)."""
    body: dict[str, Any] = {"id": t.id, "message": message}
    if extended:
        body["extended_data"] = base64.b64encode(extended).decode()
    return canonical_json(body).decode()


def _parse_invalid(reason: str, message: str) -> dict[str, Any]:
    """The `invalid_transactions` item of an Invalid batch (a batch refused before any transaction
    ran, e.g. a bad signature, names no transaction)."""
    import orjson

    try:
        body = orjson.loads(message)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("id"), str):
        item = {"id": body["id"], "message": str(body.get("message", ""))}
        if isinstance(body.get("extended_data"), str):
            item["extended_data"] = body["extended_data"]
        return item
    return {"id": "", "message": f"{reason}: {message}"}


def _unregistered(machine: Any, req: dict[str, Any]) -> dict[str, Any]:
    """Which of these signer keys the signer policy refuses (none under `open`, nor on a ledger that
    does not run Sawtooth: its batches are Invalid `unknown_application` anyway): the gateway's
    early refusal of a submission, as Sawtooth's validator refuses a batch its permissions do not
    allow."""
    not_behind(machine, req)
    keys = req.get("keys")
    if not isinstance(keys, list) or not 0 < len(keys) <= MAX_LIST or not all(isinstance(k, str) for k in keys):
        raise QueryError("invalid_ids", f"keys is a list of 1 to {MAX_LIST} public keys")
    st = machine.state
    checked = APP in rules.applications(st, SERVICE) and st.get(SERVICE, SIGNERS_POLICY_KEY) != "open"
    refused = [k for k in keys if st.get(SIGNERS, k) is None] if checked else []
    return {"unregistered": refused, "head": machine.tip.hash.hex(), "height": machine.tip.height}


def _state_get(machine: Any, req: dict[str, Any]) -> dict[str, Any]:
    not_behind(machine, req)
    address = req.get("address")
    if not isinstance(address, str) or not ADDRESS.fullmatch(address):
        raise QueryError("invalid_address", "a state address is 70 lowercase hex digits")
    v = machine.state.get(STATE, address)
    return {"data": v, "head": machine.tip.hash.hex(), "height": machine.tip.height}


def _state_list(machine: Any, req: dict[str, Any]) -> dict[str, Any]:
    """State entries under an address prefix, in address order, from `start` (an address), at most
    `limit` of them; `next_position` is where the next page starts."""
    not_behind(machine, req)
    prefix, start, limit = req.get("prefix", ""), req.get("start") or "", req.get("limit", MAX_LIST)
    if not isinstance(prefix, str) or len(prefix) > 70 or not all(c in "0123456789abcdef" for c in prefix):
        raise QueryError("invalid_address", "an address prefix is lowercase hex, at most 70 digits")
    if not isinstance(start, str) or (start and not ADDRESS.fullmatch(start)):
        raise QueryError("invalid_paging", "start is a state address")
    if type(limit) is not int or not 0 < limit <= MAX_LIST:
        raise QueryError("invalid_paging", f"limit is 1 to {MAX_LIST}")
    rows = sorted((a, v) for a, v in machine.state.items(STATE) if a.startswith(prefix) and a >= start)
    page = [{"address": a, "data": v} for a, v in rows[:limit]]
    nxt = rows[limit][0] if len(rows) > limit else None
    return {"data": page, "head": machine.tip.hash.hex(), "height": machine.tip.height, "next_position": nxt}
