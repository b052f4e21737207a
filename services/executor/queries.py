"""Answers to queries over NATS request/reply: status, receipts, reads, service information.

Queries read the executor's state between blocks (same event loop), so an answer is always
consistent with one height. Requests and replies are JSON; errors are `{"error": {code, message}}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from conclavium import merkle, read_answer, receipt, streams, tx_key_vouch
from conclavium.attestation import AttestationError, load_policy
from conclavium.block import leaf_data
from conclavium.encoding import dumps, loads
from conclavium.governance import queries as gov_queries
from conclavium.governance import recovery as gov_recovery
from conclavium.governance.model import RECOVERY
from conclavium.tx import TxError

from . import metrics as m
from .apps.base import QueryError
from .attest import policy_failures
from .ledger_machine import LedgerMachine
from .tables import MEMBERS, NODES, SERVICE, TX_KEYS, USERS

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
    keys: Any  # .signing: the node key that signs read answers
    cfg: Any  # .name, .ledger
    store: Any  # .problems

    recovery: Any  # a RecoverySession while recovering, else None

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
    """Answers queries; an endorsed node signs its answers in batches: the answers given in one turn
    of the event loop (one under light load, as many as queued under heavy load) share one
    signature over the Merkle root of their statements (`conclavium.read_answer`), so signing
    costs one node-key signature per batch instead of one per answer."""

    def __init__(self, executor: Node) -> None:
        self.ex = executor
        self._unsigned: list[tuple[Any, read_answer.Unsigned]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._node_id: str | None = None  # derived from the node key once: it costs more than a query

    async def handle(self, msg: Any) -> None:
        kind = "malformed"
        req: dict[str, Any] | None = None
        try:
            req = _request(msg.data)
            name = req.get("type")
            handler = getattr(self, f"q_{name}", None) if isinstance(name, str) and name.isidentifier() else None
            if handler is None and isinstance(name, str):
                handler = self._application_query(name)
            if handler is None or (name != tx_key_vouch.REQUEST_TYPE and self._to_every_executor(msg)):
                kind = "unknown"  # a metric label: never the caller's text
                raise QueryError("unknown_query", f"unknown query type {str(name)[:64]!r}")
            kind = name
            if req.get(read_answer.UNENDORSED_OK) is not True and self._redirects(msg):
                raise QueryError("not_endorsed", "this node is not a trusted, endorsed node: ask another")
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
        if req is not None and self._signs(reply):
            self._unsigned.append((msg, read_answer.unsigned(self.ex.machine.tip.height, req, reply)))
            if self._flusher is None:
                self._flusher = asyncio.get_running_loop().create_task(self._sign_and_send())
            return
        if msg.reply:
            await msg.respond(dumps(reply))

    def _endorsement(self) -> tuple[str, str] | None:
        """This node's (signing key, member endorsement) while its signatures count: trusted and
        endorsed by an active member of the consortium identity, within the endorsement's validity
        (what a verifying client checks, `conclavium.endorsement`)."""
        if self._node_id is None:
            self._node_id = self.ex.node_id
        return _member_endorsed(self.ex.machine, self._node_id)

    def _to_every_executor(self, msg: Any) -> bool:
        """Whether `msg` came on the subject every executor answers: only the transaction key's
        vouches are asked there (one request must not make every node do any work)."""
        return getattr(msg, "subject", None) == streams.every_executor_subject(self.ex.cfg.ledger)

    def _redirects(self, msg: Any) -> bool:
        """Whether this node sends a read on the shared subject elsewhere (`not_endorsed`, which the
        gateway asks again): it is not endorsed (a joiner catching up or waiting for the vote, a
        retired node still running) while another node is, so its unsigned answer, which every
        verifying client refuses, is not the only one there is. With no endorsed node at all (before
        genesis, while recovering), or when the gateway found no endorsed node running
        (`unendorsed_ok`), it answers, unsigned; on its own subject it always answers."""
        if self.ex.recovery is not None or getattr(msg, "subject", None) != streams.query_subject(self.ex.cfg.ledger):
            return False
        if self._endorsement() is not None:
            return False
        machine = self.ex.machine
        return any(node != self._node_id and _member_endorsed(machine, node) for node in machine.signer_members())

    def _signs(self, reply: dict[str, Any]) -> bool:
        """Whether this answer is signed: every answer of an endorsed node, except `behind`, which
        is not an answer but a request to ask again, elsewhere (as is `not_endorsed`). A node not endorsed (yet) answers
        unsigned, and clients that verify refuse its answers."""
        if reply.get("error", {}).get("code") in ("behind", "not_endorsed"):
            return False
        if self._endorsement() is None:
            m.READ_ANSWERS.labels("no").inc()
            return False
        return True

    async def _sign_and_send(self) -> None:
        """Sign the answers queued since the last batch with one signature, and send them."""
        batch, self._unsigned, self._flusher = self._unsigned, [], None
        answers = [item.body for _, item in batch]
        endorsed = self._endorsement()
        if endorsed is None:
            m.READ_ANSWERS.labels("no").inc(len(batch))
        else:
            t0 = time.perf_counter()
            try:
                key, ledger = self.ex.keys.signing, self.ex.machine.ledger
                items = [item for _, item in batch]
                signing_key, endorsement = endorsed
                answers = read_answer.sign_batch(
                    key, endorsement, ledger, items, node=self._node_id, signing_key=signing_key
                )
                m.READ_ANSWERS.labels("yes").inc(len(batch))
            except Exception:
                log.exception("signing %d read answers failed; they go unsigned", len(batch))
                m.READ_ANSWERS.labels("no").inc(len(batch))
            m.READ_SIGN_SECONDS.observe(time.perf_counter() - t0)
            m.READ_BATCH_SIZE.observe(len(batch))
        for (msg, _), answer in zip(batch, answers, strict=True):
            if msg.reply:
                with contextlib.suppress(Exception):  # a reply subject gone away is the asker's loss only
                    await msg.respond(answer)

    async def drain(self) -> None:
        """Send what is queued (tests, and shutdown)."""
        while self._flusher is not None:
            await self._flusher

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
            if row.get("endorsement"):
                sigs.append((node, sig, row["signing_key"], row["endorsement"]))
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
            ts_ms=rec.ts_ms,
            signatures=sigs,
            time_signed=rec.timed,
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

    def q_recovery(self, _: dict[str, Any]) -> dict[str, Any]:
        """The recovery status: while recovering, what members need to hand over their share (the
        share set with each member's sealed share, this node's keys and evidence); otherwise the
        share set in force and the last recovery, from the ledger (all of it public)."""
        session = self.ex.recovery
        if session is not None:
            return session.status()
        st = self.ex.machine.state
        current = gov_recovery.share_set(st)
        return {
            "state": "running",
            "reason": "ok",
            "ledger": self.ex.machine.ledger,
            "share_set": None
            if current is None
            else {
                "id": current["id"],
                "threshold": current["threshold"],
                "height": current["height"],
                "generations": current["generations"],
                "members": {k: {"box": v["box"], "digest": v["digest"]} for k, v in current["members"].items()},
            },
            "last": st.get(RECOVERY, gov_recovery.LAST_KEY),
        }

    def q_tx_key(self, _: dict[str, Any]) -> dict[str, Any]:
        """This node's word (signed, as every answer) on the ledger's current transaction key: a
        client seals only to a key nodes of k members vouch for (`conclavium.tx_key_vouch`)."""
        if self.ex.recovery is not None:
            raise QueryError("recovering", f"the service is recovering: {self.ex.recovery.reason()}")
        row = (self.ex.machine.state.get(SERVICE, TX_KEYS) or [None])[-1]
        if row is None:
            raise QueryError("no_tx_key", "the ledger has no transaction key yet")
        return {"tx_key": row}

    def q_service(self, _: dict[str, Any]) -> dict[str, Any]:
        if self.ex.recovery is not None:
            raise QueryError("recovering", f"the service is recovering: {self.ex.recovery.reason()}")
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
                "signing_key": r.get("signing_key"),
                "member": r.get("member"),
                "member_endorsement": r.get("endorsement"),
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
            "member_threshold": machine.member_threshold(),
            "consortium": st.get(SERVICE, "consortium"),
            "height": machine.tip.height,
            "time_ms": machine.tip.ts_ms,
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


def _member_endorsed(machine: LedgerMachine, node: str) -> tuple[str, str] | None:
    """A node's (signing key, member endorsement) if its signatures count now, else None."""
    if node not in machine.signer_members():
        return None
    row = machine.state.get(NODES, node)
    if not row or row.get("status") != "Trusted" or not row.get("endorsement") or not row.get("signing_key"):
        return None
    return str(row["signing_key"]), str(row["endorsement"])
