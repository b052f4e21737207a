"""Answers to queries over NATS request/reply: status, receipts, reads, service information.

Queries read the executor's state between blocks (same event loop), so an answer is always
consistent with one height. Requests and replies are JSON; errors are `{"error": {code, message}}`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, Protocol

from conclavium import merkle, receipt
from conclavium.attestation import AttestationError, load_policy
from conclavium.block import leaf_data
from conclavium.encoding import dumps, loads
from conclavium.governance import queries as gov_queries
from conclavium.tx import TxError

from . import metrics as m
from .apps.base import QueryError
from .attest import policy_failures
from .ledger_machine import LedgerMachine
from .tables import MEMBERS, NODES, SERVICE, USERS

log = logging.getLogger("conclavium.executor")


def _tx_id(req: dict[str, Any]) -> bytes:
    tx = req.get("tx")
    try:
        eid = bytes.fromhex(tx) if isinstance(tx, str) else b""
    except ValueError:
        eid = b""
    if len(eid) != 32:
        raise QueryError("invalid_hash", "a transaction hash is 64 hex digits")
    return eid


class Node(Protocol):
    """What queries read of the node that answers them (the executor; no import of it here)."""

    machine: LedgerMachine
    node_id: str
    cfg: Any  # .name
    store: Any  # .problems

    def ready(self) -> tuple[bool, str]: ...

    def is_signer(self) -> bool: ...


def _request(data: bytes) -> dict[str, Any]:
    """A query request is a JSON object; anything else (from anyone on NATS) is refused."""
    try:
        req = loads(data)
    except ValueError:  # orjson.JSONDecodeError
        req = None
    if not isinstance(req, dict):
        raise QueryError("malformed", "a query request is a JSON object")
    return req


class QueryHandler:
    def __init__(self, executor: Node) -> None:
        self.ex = executor

    async def handle(self, msg: Any) -> None:
        kind = "malformed"
        try:
            req = _request(msg.data)
            name = req.get("type")
            handler = getattr(self, f"q_{name}", None) if isinstance(name, str) and name.isidentifier() else None
            if handler is None and isinstance(name, str):
                handler = self._application_query(name)
            if handler is None:
                kind = "unknown"  # a metric label: never the caller's text
                raise QueryError("unknown_query", f"unknown query type {str(name)[:64]!r}")
            kind = name
            reply = handler(req)
            m.QUERIES.labels(kind, "ok").inc()
        except QueryError as e:
            reply = {"error": {"code": e.code, "message": e.message}}
            m.QUERIES.labels(kind, e.code).inc()
        except TxError as e:
            reply = {"error": {"code": e.code, "message": e.message}}
            m.QUERIES.labels(kind, e.code).inc()
        except Exception as e:
            log.exception("query failed")
            reply = {"error": {"code": "internal", "message": type(e).__name__}}
            m.QUERIES.labels(kind, "internal").inc()
        if msg.reply:
            await msg.respond(dumps(reply))

    def q_status(self, req: dict[str, Any]) -> dict[str, Any]:
        return self.ex.machine.tx_status(_tx_id(req))

    def q_receipt(self, req: dict[str, Any]) -> dict[str, Any]:
        machine = self.ex.machine
        eid = _tx_id(req)
        parts = machine.receipt_parts(eid)
        if parts is None:
            st = machine.tx_status(eid)
            if st["status"] == "Pending":
                raise QueryError("pending", "the transaction is not committed yet")
            raise QueryError("not_found", f"no committed transaction with this hash ({st['status']})")
        rec, index = parts
        leaves = [merkle.leaf_hash(leaf_data(e, d)) for e, d in rec.leaves]
        tree = merkle.levels(leaves)
        sigs = []
        for node, sig in rec.signatures.items():
            row = machine.state.get(NODES, node) or {}
            if row.get("cert"):
                sigs.append((node, sig, row["cert"]))
        return receipt.build(
            ledger=machine.ledger,
            height=rec.height,
            index=index,
            tx_hash=eid,
            write_digest=rec.leaves[index][1],
            path=merkle.inclusion_path(tree, index),
            root=rec.root,
            block_hash=rec.hash,
            quorum=rec.quorum,
            signatures=sigs,
        )

    def _application_query(self, name: str) -> Callable[[dict[str, Any]], dict[str, Any]] | None:
        """A query an application answers (the key-value application's `get` and `query`)."""
        machine = self.ex.machine
        for app in machine.apps.values():
            handler = app.queries().get(name)
            if handler is not None:
                return functools.partial(handler, machine)
        return None

    def _not_behind(self, req: dict[str, Any]) -> None:
        """Read-your-writes: a caller that saw its write at height h asks for a state at least that new."""
        wanted = req.get("min_height")
        if isinstance(wanted, int) and self.ex.machine.tip.height < wanted:
            raise QueryError("behind", f"this executor has not reached height {wanted} yet")

    def q_service(self, _: dict[str, Any]) -> dict[str, Any]:
        machine = self.ex.machine
        st = machine.state

        def people(table: str) -> list[dict[str, Any]]:
            return [
                {"id": k, "name": r["name"], "public_key": r["public_key"], "weight": r.get("weight", 1)}
                for k, r in st.items(table)
                if r.get("status", "Active") == "Active"
            ]

        nodes = [
            {
                "id": k,
                "name": r.get("name", ""),
                "status": r["status"],
                "endorsed": bool(r.get("cert")),
                "platform": r.get("platform"),
                "measurement": r.get("measurement"),
                "cert": r.get("cert"),
            }
            for k, r in st.items(NODES)
        ]
        return {
            "ledger": machine.ledger,
            "service_cert": st.get(SERVICE, "certificate"),
            "status": gov_queries.service_status(st),
            "tx_key": (st.get(SERVICE, "tx_keys") or [None])[-1],
            "constitution": gov_queries.constitution(st),
            "members": people(MEMBERS),
            "users": people(USERS),
            "nodes": nodes,
            "quorum": machine.quorum(),
            "height": machine.tip.height,
            "committed_height": machine.committed_height,
        }

    def q_gov_proposals(self, req: dict[str, Any]) -> dict[str, Any]:
        self._not_behind(req)
        state = req.get("state")
        return {"proposals": gov_queries.proposals(self.ex.machine.state, state if isinstance(state, str) else None)}

    def q_gov_proposal(self, req: dict[str, Any]) -> dict[str, Any]:
        self._not_behind(req)
        p = gov_queries.proposal(self.ex.machine.state, str(req.get("id")))
        if p is None:
            raise QueryError("not_found", "no such proposal")
        return p

    def q_gov_constitution(self, req: dict[str, Any]) -> dict[str, Any]:
        self._not_behind(req)
        c = gov_queries.constitution(self.ex.machine.state)
        if c is None:
            raise QueryError("not_found", "no constitution yet")
        return c

    def q_gov_members(self, req: dict[str, Any]) -> dict[str, Any]:
        self._not_behind(req)
        st = self.ex.machine.state
        members = [{"id": k, **v} for k, v in gov_queries.members(st).items()]
        return {"members": members, "service": gov_queries.service_status(st)}

    def q_node_attestation(self, req: dict[str, Any]) -> dict[str, Any]:
        row = self.ex.machine.state.get(NODES, str(req.get("id")))
        if row is None:
            raise QueryError("not_found", "no such node")
        try:
            failures = policy_failures(row, load_policy(self.ex.machine.node_policy())) if row.get("claims") else []
        except AttestationError as e:
            failures = [{"check": e.check, "message": e.message}]
        return {
            "node_id": req["id"],
            "status": row["status"],
            "evidence": row.get("evidence"),
            "claims": row.get("claims"),
            # What the current node policy would refuse in this node's recorded evidence (drift).
            "policy_failures": failures,
        }

    def q_node_status(self, _: dict[str, Any]) -> dict[str, Any]:
        ex, machine = self.ex, self.ex.machine
        last = machine.last_committed
        ok, reason = ex.ready()
        return {
            "name": ex.cfg.name,
            "node_id": ex.node_id,
            "executed_height": machine.tip.height,
            "committed_height": machine.committed_height,
            "root": last.root.hex() if last else None,
            "block_hash": last.hash.hex() if last else None,
            "signer": ex.is_signer(),
            "ready": ok,
            "reason": reason,
            "fork": machine.fork_reason,
            "refused_files": ex.store.problems,
        }
