"""The native key-value application: signed JSON bodies of put/delete operations on named maps.

Signatures are Ed25519 or P-256 by a member or user (`conclavium.tx`); operations on private maps
are sealed to the ledger's transaction key and their write digests keyed with the ledger secret,
so a receipt reveals nothing about low-entropy private values.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from typing import Any

from conclavium import query
from conclavium.apps import KV
from conclavium.block import Entry
from conclavium.governance import queries as gov_queries
from conclavium.tx import Op, TxBody, TxError, is_public_map, open_ops, opened_ops, parse_body, sealed_box

from ..state import write_digest
from ..tables import DEFAULT_TX_VALIDITY_MS, SERVICE, TX_KEYS
from .base import Application, Context, Namespaces, QueryError, SignatureJob, Verdict, not_behind

HINT_CACHE_LIMIT = 200_000


class KeyValueApp(Application):
    name = KV
    namespaces = Namespaces(public=("public:",), private=("",))

    def __init__(self) -> None:
        # Work done ahead of execution, by transaction body: each body is parsed once and its
        # sealed operations opened once, on the worker processes, while earlier blocks execute.
        self.parsed: dict[bytes, TxBody] = {}
        self.opened: dict[bytes, list[Op]] = {}

    def parse(self, ctx: Context, body: bytes) -> TxBody:
        """`parse_body` for this ledger, once per body (kept until the body executes)."""
        tx = self.parsed.get(body)
        if tx is None:
            tx = self.parsed[body] = parse_body(body, ledger=ctx.ledger)
        return tx

    def signature_jobs(self, ctx: Context, entries: list[Entry]) -> list[SignatureJob | None]:
        keys = ctx.participant_keys()
        jobs: list[SignatureJob | None] = []
        for e in entries:
            sender = _sender_of(e.data) if len(e.data) >= 80 else None
            key = keys.get(sender) if sender else None
            jobs.append((key, e.signature, e.data, sender) if key is not None and sender else None)
        return jobs

    async def prepare(self, ctx: Context, entries: list[Entry]) -> None:
        """Parse the transactions and open their sealed operations on the worker processes. The
        same key (a key id names one secret), box and context give the same operations when
        executed in order, so the result is only a cache; anything that fails here is done again
        in order, which reports why."""
        for cache in (self.parsed, self.opened):
            if len(cache) > HINT_CACHE_LIMIT:  # hints only: whatever is dropped is done again in order
                cache.clear()
        secrets, openers = ctx.secrets, ctx.openers
        jobs: list[tuple[bytes, bytes, bytes]] = []
        bodies: list[bytes] = []
        for e in entries:
            try:
                tx = self.parse(ctx, e.data)
                gen = secrets.by_id(tx.sealed.key) if tx.sealed and secrets else None
                if gen is None or openers is None:
                    continue
                box, info = sealed_box(tx)
            except Exception:  # done again in order, which reports why
                continue
            jobs.append((gen.tx_private, box, info))
            bodies.append(e.data)
        if not jobs:
            return
        for body, plaintext in zip(bodies, await openers.open(jobs), strict=True):
            if plaintext is not None:
                with contextlib.suppress(Exception):
                    self.opened[body] = opened_ops(plaintext)

    def needs_secrets(self, ctx: Context, entry: Entry, known_keys: set[str]) -> str | None:
        if b'"sealed":{' not in entry.data:
            return None
        try:
            tx = self.parse(ctx, entry.data)
        except Exception:  # refused when the entry executes, with the reason
            return None
        if tx.sealed is not None and tx.sealed.key in known_keys:
            if ctx.secrets is None or ctx.secrets.by_id(tx.sealed.key) is None:
                return tx.sealed.key
        return None

    def execute(self, ctx: Context, entry: Entry, pre: Verdict) -> bytes:
        tx = self.parsed.pop(entry.data, None)
        if tx is None:
            tx = parse_body(entry.data, ledger=ctx.ledger)
        validity = ctx.config("tx_validity_ms", DEFAULT_TX_VALIDITY_MS)
        if tx.ts < ctx.block_time - validity:
            raise TxError("expired", "transaction timestamp is outside the validity window")
        if tx.ts > ctx.block_time + validity:
            raise TxError("not_yet_valid", "transaction timestamp is in the future")
        key = ctx.participant_keys().get(tx.sender)
        if key is None:
            raise TxError("unknown_sender", "the sender is not a user or member of this ledger")
        if pre is not None and pre[0] == tx.sender:
            sig_ok = pre[1]
        else:
            sig_ok = key.verify(entry.signature, entry.data)
        if not sig_ok:
            raise TxError("bad_signature", "the signature does not verify with the sender's key")
        state = ctx.state
        if not gov_queries.is_service_open(state):
            raise TxError("service_not_open", "the service accepts only governance until members open it")
        ctx.entry_dated(tx.ts)
        writer = sys.intern(tx.sender)
        if tx.sealed is not None:
            self._check_tx_key_current(ctx, tx.sealed.key)
            opened = self.opened.pop(entry.data, None)
            ops = opened if opened is not None else open_ops(tx, ctx.open_sealed)
        else:
            ops = tx.ops or []
            if any(not is_public_map(op.map) for op in ops):
                raise TxError("must_seal", "operations on private maps must be sealed to the transaction key")
        for op in ops:
            if not ctx.may_write(tx.sender, op.map, op.key):
                raise TxError("write_forbidden", "the map's policy or the entry's writer forbids this sender")
        state.begin()
        for op in ops:
            if op.op == "put":
                state.put(op.map, op.key, {"value": op.value, "writer": writer})
            else:
                state.delete(op.map, op.key)
        if tx.sealed is None:
            return write_digest(state.commit())
        try:
            digest = ctx.private_digest(list(state.pending_writes()))
        except BaseException:
            state.rollback()
            raise
        state.commit()
        return digest

    def queries(self) -> dict[str, Callable[[Any, dict[str, Any]], dict[str, Any]]]:
        return {"get": _get, "query": _query}

    def _check_tx_key_current(self, ctx: Context, key_id: str) -> None:
        """Clients may seal to the current key, or to the one before it for one validity window."""
        keys = ctx.state.get(SERVICE, TX_KEYS) or []
        ids = [k["id"] for k in keys]
        if key_id not in ids:
            raise TxError("unknown_tx_key", "sealed to a key this ledger does not have; fetch /v1/service")
        i = ids.index(key_id)
        window = ctx.config("tx_validity_ms", DEFAULT_TX_VALIDITY_MS)
        if i < len(keys) - 1 and keys[i + 1]["from_ts"] < ctx.block_time - window:
            raise TxError("stale_tx_key", "sealed to a retired transaction key; fetch the current one from /v1/service")


def _get(machine: Any, req: dict[str, Any]) -> dict[str, Any]:
    """A public map's entry (`GET /v1/state/{map}/{key}`)."""
    not_behind(machine, req)
    map_name, key = req.get("map"), req.get("key")
    if not isinstance(map_name, str) or not isinstance(key, str):
        raise QueryError("missing_field", "map and key are required")
    if not is_public_map(map_name):
        raise QueryError("private_map", "private maps are read with a signed query (POST /v1/queries)")
    row = machine.state.get(map_name, key)
    if row is None:
        raise QueryError("not_found", "no such key")
    return {"map": map_name, "key": key, "value": row["value"] if "writer" in row else row}


def _query(machine: Any, req: dict[str, Any]) -> dict[str, Any]:
    """A signed read of any map the caller may read, answered sealed to the caller's key
    (`POST /v1/queries`). Queries are not execution: they check freshness against this node's clock."""
    not_behind(machine, req)
    q, body, sig = query.parse(req.get("query"))
    if q.ledger != machine.ledger:
        raise QueryError("wrong_ledger", "query is for another ledger")
    if abs(q.ts - int(time.time() * 1000)) > query.QUERY_VALIDITY_MS:
        raise QueryError("stale_query", "query timestamp is too far from the executor's clock")
    key = machine.participant_keys().get(q.sender)
    if key is None:
        raise QueryError("unknown_sender", "the caller is not a user or member of this ledger")
    if not key.verify(sig, body):
        raise QueryError("bad_signature", "the query signature does not verify")
    request = query.open_request(q, machine._open)
    row = machine.state.get(request.map, request.key)
    if row is None or not machine.may_read(q.sender, request.map, row):
        raise QueryError("not_found", "no entry readable by this caller")
    return query.seal_reply(q, body, {"map": request.map, "key": request.key, "value": row["value"]})


def _sender_of(body: bytes) -> str | None:
    """A guess at the sender key id without a full parse, to batch verification. In a canonical
    body "sender" is the last string field, after the operations; a wrong guess only costs a
    second verification, because the result is used only when the parsed sender matches."""
    i = body.rfind(b'"sender":"')
    if i < 0:
        return None
    return body[i + 10 : i + 74].decode("ascii", "replace")
