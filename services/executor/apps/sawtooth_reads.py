"""Reads of the Sawtooth application's chain: blocks, batches, transactions and receipts, answered
from this executor's state and receipt index as Sawtooth's REST API shapes them
(`conclavium.sawtooth.rest`), through the application interface like every query (so an endorsed
executor signs the answer, as it signs `/state`'s).

A Sawtooth block here is a committed ledger block that holds at least one executed Sawtooth batch
(docs/sawtooth.md, "Blocks"): its id is the ledger block's hash, its number the ledger height.
Only what is committed is listed: a batch executed in a block not yet committed is not in any
block yet, as in Sawtooth, where a batch is in a block only once the block is on the chain. Lists
run newest block first, batches and transactions in block order within a block.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterator
from typing import Any

from conclavium.sawtooth import rest
from conclavium.sawtooth.batch import RESOURCE_ID
from conclavium.sawtooth.pb.sawtooth_pb2 import Batch

from .base import QueryError
from .sawtooth import BATCHES, BLOCKS, MAX_LIST, RECEIPTS, TXNS

BLOCK_ID = re.compile(r"^[0-9a-f]{64}$")
MAX_RECEIPTS = 100


def _committed_to(machine: Any, req: dict[str, Any]) -> None:
    """Read-your-commits: these reads list only what is committed, so an executor that has not
    seen the commit at the height the caller (or the gateway) knows of yet says so, and the
    gateway asks again (an executor can have executed a block before it sees it committed)."""
    wanted = req.get("min_height")
    if isinstance(wanted, int) and machine.committed_height < wanted:
        raise QueryError("behind", f"this executor has not seen height {wanted} committed yet")


def _head(machine: Any) -> dict[str, Any]:
    return {"head": machine.tip.hash.hex(), "height": machine.tip.height}


def _limit(req: dict[str, Any]) -> int:
    limit = req.get("limit", rest.DEFAULT_STATE_PAGE)
    if type(limit) is not int or not 0 < limit <= MAX_LIST:
        raise QueryError("invalid_paging", f"limit is 1 to {MAX_LIST}")
    return limit


def _committed_blocks(machine: Any) -> list[tuple[int, dict[str, Any]]]:
    """(height, row) of the committed blocks holding Sawtooth batches, newest first."""
    top = machine.committed_height
    rows = ((int(k), row) for k, row in machine.state.items(BLOCKS))
    return sorted(((h, row) for h, row in rows if h <= top), key=lambda x: x[0], reverse=True)


def _batch(machine: Any, bid: str) -> tuple[Batch, dict[str, Any]] | None:
    """A committed batch and its row (a row written before batches kept their bytes has neither
    height nor bytes: not listed)."""
    row = machine.state.get(BATCHES, bid)
    if row is None or "raw" not in row or row["height"] > machine.committed_height:
        return None
    return Batch.FromString(base64.b64decode(row["raw"])), row


def _block(machine: Any, height: int, row: dict[str, Any]) -> dict[str, Any] | None:
    rec = machine.index.block(height)
    if rec is None:  # a node restored from a snapshot has no receipts for the blocks before it
        return None
    batches = [b for b, _ in filter(None, (_batch(machine, bid) for bid in row["batches"]))]
    return rest.block_json(height, rec.hash.hex(), row["prev"], rec.root.hex(), batches)


def _page(ids: Iterator[str], start: str | None, limit: int) -> tuple[list[str], str | None]:
    """At most `limit` ids from `start` (an id in the list) on, and the id the next page starts at."""
    page: list[str] = []
    started = start is None
    for i in ids:
        if not started:
            if i != start:
                continue
            started = True
        if len(page) == limit:
            return page, i
        page.append(i)
    if not started:
        raise QueryError("invalid_paging", "start is not in the list")
    return page, None


def _start_id(req: dict[str, Any]) -> str | None:
    start = req.get("start")
    if start is not None and not (isinstance(start, str) and RESOURCE_ID.fullmatch(start)):
        raise QueryError("invalid_paging", "start is a batch or transaction id (a next_position)")
    return start


def blocks(machine: Any, req: dict[str, Any]) -> dict[str, Any]:
    _committed_to(machine, req)
    limit, start = _limit(req), req.get("start")
    if start is not None and (type(start) is not int or start < 0):
        raise QueryError("invalid_paging", "start is a block number")
    rows = [(h, row) for h, row in _committed_blocks(machine) if start is None or h <= start]
    data = [b for b in (_block(machine, h, row) for h, row in rows[:limit]) if b is not None]
    nxt = rows[limit][0] if len(rows) > limit else None
    return {"data": data, "next_position": nxt, **_head(machine)}


def block(machine: Any, req: dict[str, Any]) -> dict[str, Any]:
    _committed_to(machine, req)
    bid = req.get("id")
    if not isinstance(bid, str) or not BLOCK_ID.fullmatch(bid):
        raise QueryError("invalid_id", "a block id is 64 hex digits (the ledger block's hash)")
    height = machine.index.height_of(bytes.fromhex(bid))
    row = machine.state.get(BLOCKS, f"{height:012d}") if height is not None else None
    found = _block(machine, height, row) if row is not None and height is not None else None
    if found is None:
        raise QueryError("not_found", "no committed block with Sawtooth batches has this id")
    return {"data": found, **_head(machine)}


def _batch_ids(machine: Any) -> Iterator[str]:
    for _, row in _committed_blocks(machine):
        yield from row["batches"]


def batches(machine: Any, req: dict[str, Any]) -> dict[str, Any]:
    _committed_to(machine, req)
    page, nxt = _page(_batch_ids(machine), _start_id(req), _limit(req))
    data = [b for b in (_batch_json(machine, i) for i in page) if b is not None]
    return {"data": data, "next_position": nxt, **_head(machine)}


def _batch_json(machine: Any, bid: str) -> dict[str, Any] | None:
    found = _batch(machine, bid)
    return rest.batch_json(found[0]) if found is not None else None


def _one(
    machine: Any, req: dict[str, Any], what: str, find: Callable[[Any, str], dict[str, Any] | None]
) -> dict[str, Any]:
    """One committed batch or transaction by its id (128 hex digits)."""
    _committed_to(machine, req)
    rid = req.get("id")
    if not isinstance(rid, str) or not RESOURCE_ID.fullmatch(rid):
        raise QueryError("invalid_id", f"a {what} id is 128 hex digits")
    found = find(machine, rid)
    if found is None:
        raise QueryError("not_found", f"no committed {what} has this id")
    return {"data": found, **_head(machine)}


def batch(machine: Any, req: dict[str, Any]) -> dict[str, Any]:
    return _one(machine, req, "batch", _batch_json)


def _txn_ids(machine: Any) -> Iterator[str]:
    for bid in _batch_ids(machine):
        row = machine.state.get(BATCHES, bid)
        if row is not None:
            yield from row["txns"]


def _transaction(machine: Any, tid: str) -> dict[str, Any] | None:
    bid = machine.state.get(TXNS, tid)
    found = _batch(machine, bid) if bid is not None else None
    if found is None:
        return None
    return next((rest.transaction_json(t) for t in found[0].transactions if t.header_signature == tid), None)


def transactions(machine: Any, req: dict[str, Any]) -> dict[str, Any]:
    _committed_to(machine, req)
    page, nxt = _page(_txn_ids(machine), _start_id(req), _limit(req))
    data = [t for t in (_transaction(machine, i) for i in page) if t is not None]
    return {"data": data, "next_position": nxt, **_head(machine)}


def transaction(machine: Any, req: dict[str, Any]) -> dict[str, Any]:
    return _one(machine, req, "transaction", _transaction)


def receipts(machine: Any, req: dict[str, Any]) -> dict[str, Any]:
    """Sawtooth's transaction receipts: state changes, events and receipt data of committed
    transactions (an id without one is `not_found`, naming it)."""
    _committed_to(machine, req)
    ids = req.get("ids")
    if not isinstance(ids, list) or not 0 < len(ids) <= MAX_RECEIPTS:
        raise QueryError("invalid_ids", f"ids is a list of 1 to {MAX_RECEIPTS} transaction ids")
    out = []
    for tid in ids:
        if not isinstance(tid, str) or not RESOURCE_ID.fullmatch(tid):
            raise QueryError("invalid_id", "a transaction id is 128 hex digits")
        bid = machine.state.get(TXNS, tid)
        row = machine.state.get(RECEIPTS, tid) if bid is not None and _batch(machine, bid) is not None else None
        if row is None:
            raise QueryError("not_found", tid)
        out.append(
            {
                "transaction_id": tid,
                "state_changes": row.get("state_changes", []),
                "events": [
                    {
                        "event_type": e["event_type"],
                        "attributes": [{"key": k, "value": v} for k, v in e["attributes"]],
                        "data": e["data"],
                    }
                    for e in row["events"]
                ],
                "data": row["data"],
            }
        )
    return {"data": out, **_head(machine)}


QUERIES: dict[str, Callable[[Any, dict[str, Any]], dict[str, Any]]] = {
    "sawtooth_blocks": blocks,
    "sawtooth_block": block,
    "sawtooth_batches": batches,
    "sawtooth_batch": batch,
    "sawtooth_transactions": transactions,
    "sawtooth_transaction": transaction,
    "sawtooth_receipts": receipts,
}
