"""The deterministic heart of the executor: blocks in, state, leaves, roots and commits out.

Everything here depends only on the ledger's bytes (no wall clock, no randomness), so every
honest executor that reads the same stream reaches the same state, the same roots and the same
commit decisions. I/O (NATS, signing, publishing) lives in `executor.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import re
import sys
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import msgspec

from conclavium import governance, merkle, node_messages
from conclavium.block import Block, CommitSig, Entry, Kind, decode_block, entry_id, leaf_data
from conclavium.chain import Tip, next_block
from conclavium.crypto import sealing
from conclavium.crypto.keys import KeyError_, PublicKey
from conclavium.encoding import canonical_json
from conclavium.governance import queries as gov_queries
from conclavium.governance.actions import apply_actions, current_node_policy, validate_action
from conclavium.identity import CertificateError, load_cert, verify_node_certificate, verify_tx_key
from conclavium.tx import Op, TxBody, TxError, is_public_map, open_ops, opened_ops, parse_body, sealed_box

from . import ledger_clock, node_auth
from .attest import EvidenceRefused, drifted_nodes, policy_document, verify_join_evidence
from .enclave import Generation, LedgerSecrets, NodeKeys
from .receipt_index import CommittedBlock, ReceiptIndex
from .sealed_openers import SealedOpenerPool
from .state import State, write_digest
from .verifier import BatchVerifier

log = logging.getLogger("conclavium.executor")

MEMBERS = "public:gov.members"
USERS = "public:gov.users"
NODES = "public:gov.nodes"
SERVICE = "public:gov.service"
MEASUREMENTS = "public:gov.measurements"
SNAPSHOT_DIGESTS = "public:sys.snapshots"
REKEY = "public:sys.rekey"
MAP_POLICIES = governance.model.MAP_POLICIES
TX_KEYS = "tx_keys"
SECRET_GENERATION = "secret_generation"
CONFIG = "config"
CERTIFICATE = "certificate"
DEFAULT_TX_VALIDITY_MS = 120_000
MAX_RECENT_INVALID = 200_000


class NeedSecrets(Exception):
    """The block needs a generation of ledger secrets this node does not hold yet."""


@dataclass
class BlockRecord:
    height: int
    hash: bytes
    root: bytes
    quorum: int
    ts_ms: int
    leaves: list[tuple[bytes, bytes]]  # (entry id, write digest)
    signatures: dict[str, bytes] = field(default_factory=dict)
    divergent: set[str] = field(default_factory=set)
    committed: bool = False


@dataclass
class BlockOutcome:
    height: int
    invalid: list[tuple[bytes, str, str]] = field(default_factory=list)  # (entry id, code, message)
    committed: list[BlockRecord] = field(default_factory=list)
    endorsed: list[tuple[str, str]] = field(default_factory=list)  # (node id, wrapped secrets b64)
    governance: list[governance.Outcome] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    fork: str | None = None
    clamped: str | None = None  # ledger_clock.AHEAD / BEHIND when the block's timestamp was bounded


@dataclass
class _BlockStage:
    """What a block changes besides state, kept aside until all of its entries have run."""

    forget: int  # how many of the oldest replay-window blocks this block forgets
    forgotten: set[bytes]  # the ids those blocks hold: no longer replays
    executed: set[bytes] = field(default_factory=set)
    leaves: list[tuple[bytes, bytes]] = field(default_factory=list)  # (entry id, write digest)


class LedgerMachine:
    """Blocks in, state and commits out. Memory stays bounded: committed blocks go to the receipt
    index, and only entries inside the replay window are remembered for de-duplication (an older
    transaction is refused by its timestamp anyway)."""

    def __init__(
        self,
        ledger: str,
        verifier: BatchVerifier,
        index: ReceiptIndex | None = None,
        secrets: LedgerSecrets | None = None,
        node_keys: NodeKeys | None = None,
        openers: SealedOpenerPool | None = None,
    ) -> None:
        self.ledger = ledger
        self.verifier = verifier
        self.secrets = secrets
        self.node_keys = node_keys
        self.secrets_changed = False
        self._early_shares: dict[str, str] = {}  # generation -> this node's share, before its secrets
        self.openers = openers
        # Work done ahead of execution, by transaction body: each body is parsed once and its sealed
        # operations opened once, on the worker processes, while earlier blocks execute.
        self._parsed: dict[bytes, TxBody] = {}
        self._opened: dict[bytes, list[Op]] = {}
        self.index = index or ReceiptIndex(None)
        self.state = State()
        self.tip = Tip()
        self.uncommitted: OrderedDict[int, BlockRecord] = OrderedDict()
        self.last_committed: BlockRecord | None = None
        self.committed_height = 0
        self.entries_executed = 0
        # Replay window: ids of entries executed recently -> their height, and per block the time
        # after which a copy of its entries is refused by its timestamp anyway (then forgotten).
        self.recent: dict[bytes, int] = {}
        self.recent_blocks: deque[tuple[int, int, list[bytes]]] = deque()  # (forget after ms, height, ids)
        self._block_max_ts = 0
        self.recent_invalid: OrderedDict[bytes, tuple[str, str]] = OrderedDict()
        self.fork_reason: str | None = None
        self._verified: dict[tuple[bytes, bytes], tuple[str, bool]] = {}  # (entry id, signature) -> (sender, ok)
        self._keys: dict[str, PublicKey] | None = None
        self._node_keys: dict[str, PublicKey] | None = None
        # Time of the block being applied (ledger_clock.py); every time check in execution uses it.
        self.block_time = 0

    # --- views of the governance tables ---------------------------------------------------------

    @property
    def genesis_done(self) -> bool:
        return self.state.get(SERVICE, CERTIFICATE) is not None

    def service_certificate(self) -> str | None:
        return self.state.get(SERVICE, CERTIFICATE)

    def config(self, name: str, default: Any = None) -> Any:
        cfg = self.state.get(SERVICE, CONFIG) or {}
        return cfg.get(name, default)

    def participant_keys(self) -> dict[str, PublicKey]:
        """Members and users by key id; rebuilt only when those tables change."""
        if self._keys is None or {MEMBERS, USERS} & self.state.changed_maps:
            keys: dict[str, PublicKey] = {}
            for table in (MEMBERS, USERS):
                for kid, row in self.state.items(table):
                    if row.get("status", "Active") == "Active":
                        keys[kid] = PublicKey.load(row["public_key"])
            self._keys = keys
            self.state.changed_maps -= {MEMBERS, USERS}
        return self._keys

    def trusted_node_keys(self) -> dict[str, PublicKey]:
        """Nodes whose signatures count: trusted by governance and endorsed by the service."""
        if self._node_keys is None or NODES in self.state.changed_maps:
            keys = {}
            for nid, row in self.state.items(NODES):
                if row.get("status") == "Trusted" and row.get("cert"):
                    keys[nid] = PublicKey.load(row["signing_key"])
            self._node_keys = keys
            self.state.changed_maps.discard(NODES)
        return self._node_keys

    def may_read(self, caller: str, map_name: str, row: dict[str, Any]) -> bool:
        """Public maps: anyone known; private entries: their writer, and whoever the map's policy
        (set by governance) lists as a reader."""
        if is_public_map(map_name) or row.get("writer") == caller:
            return True
        policy = self.state.get(MAP_POLICIES, map_name) or {}
        return caller in policy.get("readers", [])

    def may_write(self, caller: str, map_name: str) -> bool:
        """Without a policy anyone known may write a map; a policy's `writers` list restricts it."""
        policy = self.state.get(MAP_POLICIES, map_name)
        if policy is None or policy.get("writers") is None:
            return True
        return caller in policy["writers"]

    def quorum(self) -> int:
        n = len(self.trusted_node_keys())
        configured = self.state.get(SERVICE, governance.model.COMMIT_QUORUM_KEY)
        if isinstance(configured, int) and 0 < configured <= n:
            return configured
        return n // 2 + 1 if n else 0

    # --- blocks ---------------------------------------------------------------------------------

    async def apply(self, raw: bytes, seq: int) -> tuple[Block, BlockOutcome]:
        """Apply one block from the stream, all or nothing.

        Raises ChainError if the block does not extend the chain, and NeedSecrets if it needs
        ledger secrets this node does not hold yet; either way nothing has changed, so the same
        block applied later gives the same result. Otherwise every entry ends executed or Invalid
        with a reason (an unexpected exception from one entry makes that entry Invalid
        `internal_error`), and state, replay window, invalid list, leaves and counters change
        together at the end."""
        block, bhash = next_block(self.tip, raw, self.ledger)
        self._check_keys(block)
        eids = [entry_id(e) for e in block.entries]
        sig_ok = await self._preverify(block.entries, eids)
        out = BlockOutcome(block.height)
        # From here to the commit nothing awaits, so no query ever reads a block half applied.
        self.state.begin_block()
        try:
            self.block_time, out.clamped = self._block_time(block)
            forget = self._expiring(self.block_time)
            stage = _BlockStage(forget, {eid for _, _, ids in islice(self.recent_blocks, forget) for eid in ids})
            self._block_max_ts = self.block_time
            if self.genesis_done:
                out.expired = governance.expire(self.state, governance.Context(block.height, self.block_time))
            votes = self._check_signatures(block.sigs)
            for i, entry in enumerate(block.entries):
                self._apply_entry(entry, eids[i], sig_ok[i], block, stage, out)
        except BaseException:  # NeedSecrets, or a fault of this node: the block is applied again later
            self.state.rollback_block()
            self._keys = self._node_keys = None
            raise
        self._commit_block(block, bhash, seq, stage, votes, out)
        return block, out

    def _apply_entry(
        self,
        entry: Entry,
        eid: bytes,
        pre: tuple[str, bool] | None,
        block: Block,
        stage: _BlockStage,
        out: BlockOutcome,
    ) -> None:
        """Execute one entry into the block being staged, or record it Invalid. Only NeedSecrets
        (the whole block waits) and MemoryError (a local failure, not the entry's: calling it
        Invalid would make this node diverge) leave here."""
        if eid in stage.executed or (eid in self.recent and eid not in stage.forgotten):
            return  # a resubmission: the first copy stands, this one is ignored
        marks = (len(out.governance), len(out.endorsed))
        self.state.savepoint()
        try:
            digest = self._execute(entry, pre, block, out)
        except TxError as e:
            self._refuse_entry(eid, e.code, e.message, marks, out)
            return
        except (NeedSecrets, MemoryError):
            raise
        except Exception as e:
            # Deterministic code raises the same exception on every executor for the same entry.
            log.warning("entry %s at height %d raised %r", eid.hex()[:16], block.height, e, exc_info=True)
            self._refuse_entry(eid, "internal_error", _exception_text(e), marks, out)
            return
        stage.executed.add(eid)
        stage.leaves.append((eid, digest))

    def _refuse_entry(self, eid: bytes, code: str, message: str, marks: tuple[int, int], out: BlockOutcome) -> None:
        """An Invalid entry leaves nothing behind: its writes and outcomes are dropped."""
        self.state.rollback_entry()
        del out.governance[marks[0] :], out.endorsed[marks[1] :]
        out.invalid.append((eid, code, message))

    def _commit_block(
        self,
        block: Block,
        bhash: bytes,
        seq: int,
        stage: _BlockStage,
        votes: list[tuple[BlockRecord, str, bytes, bool]],
        out: BlockOutcome,
    ) -> None:
        """Everything the block changed, at once; nothing here can fail on the block's content."""
        self.state.commit_block()
        for _ in range(stage.forget):
            _, _, ids = self.recent_blocks.popleft()
            for eid in ids:
                self.recent.pop(eid, None)
        leaves = stage.leaves
        for eid, _ in leaves:
            self.recent[eid] = block.height
        if leaves:
            validity = self.config("tx_validity_ms", DEFAULT_TX_VALIDITY_MS)
            self.recent_blocks.append((self._block_max_ts + validity, block.height, [e for e, _ in leaves]))
        for eid, code, message in out.invalid:
            self.recent_invalid[eid] = (code, message)
        while len(self.recent_invalid) > MAX_RECENT_INVALID:
            self.recent_invalid.popitem(last=False)
        self._count_signatures(votes, out)
        self.tip = Tip(block.height, bhash, seq, self.block_time)
        self.entries_executed += len(leaves)
        root = merkle.root([merkle.leaf_hash(leaf_data(e, d)) for e, d in leaves])
        rec = BlockRecord(block.height, bhash, root, self.quorum(), self.block_time, leaves)
        if leaves:
            self.uncommitted[block.height] = rec
        self._advance_commit(out)

    def _block_time(self, block: Block) -> tuple[int, str | None]:
        """Record the block's clock signatures, then bound its timestamp by them (ledger_clock.py)."""
        trusted = self.trusted_node_keys()
        ledger_clock.record(self.state, block.clocks, trusted, self.ledger)
        ref = ledger_clock.reference(self.state, trusted, self.quorum())
        tolerance = self.config("clock_tolerance_ms", ledger_clock.DEFAULT_CLOCK_TOLERANCE_MS)
        return ledger_clock.block_time(self.tip.ts_ms, block.ts_ms, ref, tolerance)

    def _expiring(self, now_ms: int) -> int:
        """How many of the oldest replay-window blocks a block at `now_ms` forgets: those whose
        every entry would now be refused as expired (a transaction's timestamp bounds when it can
        be replayed); blocks not yet committed are kept for their status."""
        n = 0
        for forget_after, height, _ in self.recent_blocks:
            if forget_after >= now_ms or height in self.uncommitted:
                break
            n += 1
        return n

    def _check_keys(self, block: Block) -> None:
        """Raise NeedSecrets, before changing anything, when the block holds operations sealed to a
        ledger key this node does not hold yet (a joining node before its secrets arrive)."""
        known = {k["id"] for k in self.state.get(SERVICE, TX_KEYS) or []}
        for e in block.entries:
            if e.kind != Kind.TX or b'"sealed":{' not in e.data:
                continue
            try:
                tx = self._parse(e.data)
            except Exception:  # refused when the entry executes, with the reason
                continue
            if tx.sealed is not None and tx.sealed.key in known:
                if self.secrets is None or self.secrets.by_id(tx.sealed.key) is None:
                    raise NeedSecrets(tx.sealed.key)

    def _parse(self, body: bytes) -> TxBody:
        """`parse_body` for this ledger, once per body (kept until the body executes)."""
        tx = self._parsed.get(body)
        if tx is None:
            tx = self._parsed[body] = parse_body(body, ledger=self.ledger)
        return tx

    def _open(self, key_id: str, box: bytes, info: bytes) -> bytes:
        gen = self.secrets.by_id(key_id) if self.secrets else None
        if gen is None:
            raise TxError("unknown_tx_key", "sealed to a key this ledger does not hold")
        try:
            return sealing.open_sealed(box, gen.tx_key, info)
        except sealing.SealError:
            raise TxError(
                "undecryptable", "the sealed payload does not open (tampered, or sealed to another key or message)"
            ) from None

    def _check_tx_key_current(self, key_id: str, block_ts: int) -> None:
        """Clients may seal to the current key, or to the one before it for one validity window."""
        keys = self.state.get(SERVICE, TX_KEYS) or []
        ids = [k["id"] for k in keys]
        if key_id not in ids:
            raise TxError("unknown_tx_key", "sealed to a key this ledger does not have; fetch /v1/service")
        i = ids.index(key_id)
        window = self.config("tx_validity_ms", DEFAULT_TX_VALIDITY_MS)
        if i < len(keys) - 1 and keys[i + 1]["from_ts"] < block_ts - window:
            raise TxError("stale_tx_key", "sealed to a retired transaction key; fetch the current one from /v1/service")

    def _private_digest(self, writes: list[tuple[str, str, Any]]) -> bytes:
        """Write digest of a transaction with private writes: keyed with the current ledger secret,
        so a receipt's digest reveals nothing about low-entropy private values."""
        gen_id = self.state.get(SERVICE, SECRET_GENERATION)
        gen = self.secrets.by_id(gen_id) if self.secrets and gen_id else None
        if gen is None:
            raise NeedSecrets(str(gen_id))
        body = canonical_json([[m, k, v] for m, k, v in writes])
        return hmac.new(gen.write_digest_key, body, hashlib.sha256).digest()

    async def preverify_blocks(self, raws: list[bytes]) -> None:
        """Verify the client signatures of blocks not applied yet, so that verification (on the
        thread pool) overlaps with executing earlier blocks. A verdict is kept by what was signed:
        the entry id (SHA-256 of the exact bytes) and the signature, with the sender key id it was
        checked for (itself read from those bytes), and `_execute_tx` uses it only when the parsed
        sender is that one. So a verdict never serves another body that carries the same
        signature, and it does not depend on how the stream was batched."""
        entries: list[Entry] = []
        for raw in raws:
            try:
                entries += decode_block(raw).entries
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
        for cache in (self._verified, self._parsed, self._opened):
            if len(cache) > 200_000:  # hints only: whatever is dropped is simply done again in order
                cache.clear()
        opening = asyncio.ensure_future(self._open_ahead(entries))
        try:
            signed = [(entry_id(e), e.signature) for e in entries]
            fresh = [i for i, what in enumerate(signed) if what not in self._verified]
            verdicts = await self._verify_senders([entries[i] for i in fresh])
            for i, verdict in zip(fresh, verdicts, strict=True):
                if verdict is not None:
                    self._verified[signed[i]] = verdict
        except Exception:  # hints only: a failure here must not stop the pipeline
            log.exception("verifying signatures ahead failed; they are verified in order instead")
        try:
            await opening
        except Exception:
            log.exception("opening sealed operations ahead failed; they are opened in order instead")

    async def _open_ahead(self, entries: list[Entry]) -> None:
        """Parse the transactions of entries not applied yet and open their sealed operations on
        the worker processes. The same key (a key id names one secret), box and context give the
        same operations when executed in order, so the result is only a cache; anything that fails
        here is done again in order, which reports why."""
        jobs: list[tuple[bytes, bytes, bytes]] = []
        bodies: list[bytes] = []
        for e in entries:
            if e.kind != Kind.TX:
                continue
            try:
                tx = self._parse(e.data)
                gen = self.secrets.by_id(tx.sealed.key) if tx.sealed and self.secrets else None
                if gen is None or self.openers is None:
                    continue
                box, info = sealed_box(tx)
            except Exception:  # done again in order, which reports why
                continue
            jobs.append((gen.tx_private, box, info))
            bodies.append(e.data)
        if not jobs:
            return
        assert self.openers is not None
        for body, plaintext in zip(bodies, await self.openers.open(jobs), strict=True):
            if plaintext is not None:
                with contextlib.suppress(Exception):
                    self._opened[body] = opened_ops(plaintext)

    async def _preverify(self, entries: list[Entry], eids: list[bytes]) -> list[tuple[str, bool] | None]:
        """Verify client signatures of the block in one batch, with the keys known at its start.
        Each result is (sender assumed, verdict); None marks an entry checked later, in order."""
        known = [self._verified.pop((eid, e.signature), None) for e, eid in zip(entries, eids, strict=True)]
        missing = [i for i, k in enumerate(known) if k is None]
        for i, verdict in zip(missing, await self._verify_senders([entries[i] for i in missing]), strict=True):
            known[i] = verdict
        return known

    async def _verify_senders(self, entries: list[Entry]) -> list[tuple[str, bool] | None]:
        """(sender guessed from the body, verdict) for client transactions whose sender is known;
        None for the rest, which execution checks in order."""
        keys = self.participant_keys()
        jobs, where = [], []
        result: list[tuple[str, bool] | None] = [None] * len(entries)
        for i, e in enumerate(entries):
            if e.kind != Kind.TX or len(e.data) < 80:
                continue
            sender = _sender_of(e.data)
            key = keys.get(sender) if sender else None
            if key is not None:
                jobs.append((key, e.signature, e.data))
                where.append((i, sender))
        if jobs:
            for (i, sender), ok in zip(where, await self.verifier.verify(jobs), strict=True):
                result[i] = (sender, ok)
        return result

    def _execute(
        self, entry: Entry, pre: tuple[str, bool] | None, block: Block, out: BlockOutcome
    ) -> bytes:
        if entry.kind == Kind.TX:
            return self._execute_tx(entry, pre, block)
        if entry.kind == Kind.NODE:
            return self._execute_node_message(entry, block, out)
        if entry.kind == Kind.GOV:
            return self._execute_governance(entry, block, out)
        raise TxError("unsupported_kind", f"entry kind {entry.kind} is not supported")

    def _execute_tx(self, entry: Entry, pre: tuple[str, bool] | None, block: Block) -> bytes:
        if not self.genesis_done:
            raise TxError("no_service", "the service has no genesis yet")
        tx = self._parsed.pop(entry.data, None)
        if tx is None:
            tx = parse_body(entry.data, ledger=self.ledger)
        validity = self.config("tx_validity_ms", DEFAULT_TX_VALIDITY_MS)
        if tx.ts < self.block_time - validity:
            raise TxError("expired", "transaction timestamp is outside the validity window")
        if tx.ts > self.block_time + validity:
            raise TxError("not_yet_valid", "transaction timestamp is in the future")
        key = self.participant_keys().get(tx.sender)
        if key is None:
            raise TxError("unknown_sender", "the sender is not a user or member of this ledger")
        if pre is not None and pre[0] == tx.sender:
            sig_ok = pre[1]
        else:
            sig_ok = key.verify(entry.signature, entry.data)
        if not sig_ok:
            raise TxError("bad_signature", "the signature does not verify with the sender's key")
        if not gov_queries.is_service_open(self.state):
            raise TxError("service_not_open", "the service accepts only governance until members open it")
        self._block_max_ts = max(self._block_max_ts, tx.ts)
        writer = sys.intern(tx.sender)
        if tx.sealed is not None:
            self._check_tx_key_current(tx.sealed.key, self.block_time)
            opened = self._opened.pop(entry.data, None)
            ops = opened if opened is not None else open_ops(tx, self._open)
        else:
            ops = tx.ops or []
            if any(not is_public_map(op.map) for op in ops):
                raise TxError("must_seal", "operations on private maps must be sealed to the transaction key")
        for op in ops:
            if not self.may_write(tx.sender, op.map):
                raise TxError("write_forbidden", "the map's policy does not let this sender write it")
        self.state.begin()
        for op in ops:
            if op.op == "put":
                self.state.put(op.map, op.key, {"value": op.value, "writer": writer})
            else:
                self.state.delete(op.map, op.key)
        if tx.sealed is None:
            return write_digest(self.state.commit())
        try:
            digest = self._private_digest(list(self.state.pending_writes()))
        except NeedSecrets:
            self.state.rollback()
            raise
        self.state.commit()
        return digest

    # --- governance ------------------------------------------------------------------------------

    def _execute_governance(self, entry: Entry, block: Block, out: BlockOutcome) -> bytes:
        if not self.genesis_done:
            raise TxError("no_service", "the service has no genesis yet")
        self.state.begin()
        outcome = governance.apply(
            self.state, entry.data, governance.Context(block.height, self.block_time, self.ledger)
        )
        if outcome.status != "Applied":
            self.state.rollback()
            raise TxError(outcome.code or "governance_refused", outcome.reason or "refused")
        out.governance.append(outcome)
        for effect in outcome.effects:
            if effect.get("type") == "rotate_ledger_secret":
                self.state.put(REKEY, "pending", {"proposal_id": effect.get("proposal_id"), "height": block.height})
        return write_digest(self.state.commit())

    # --- node messages: genesis, join, endorse --------------------------------------------------

    def _execute_node_message(self, entry: Entry, block: Block, out: BlockOutcome) -> bytes:
        try:
            msg = node_messages.decode(entry.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise TxError("invalid_node_message", f"node message does not decode: {e}") from None
        if msg.ledger != self.ledger:
            raise TxError("wrong_ledger", "node message is for another ledger")
        if isinstance(msg, node_messages.Genesis):
            key, bound = node_auth.self_signed(msg, entry)
            return self._genesis(msg, key, bound, block)
        validity = self.config("tx_validity_ms", DEFAULT_TX_VALIDITY_MS)
        if isinstance(msg, node_messages.Join):
            _, bound = node_auth.self_signed(msg, entry)
            node_auth.check_fresh(msg.ts, self.block_time, validity)
            return self._join(msg, bound, block)
        node_auth.trusted_sender(msg, entry, self.trusted_node_keys())
        if isinstance(msg, node_messages.Rekey):
            node_auth.check_rekey(msg, self.state.get(REKEY, "pending"), self.state.get(SERVICE, TX_KEYS) or [])
        node_auth.check_fresh(msg.ts, self.block_time, validity)
        if isinstance(msg, node_messages.Endorse):
            return self._endorse(msg, out)
        if isinstance(msg, node_messages.SnapshotDigest):
            return self._snapshot_digest(msg)
        return self._rekey(msg)

    def attestation_drift(self) -> list[str]:
        """Trusted nodes whose recorded claims fail the current node policy (nothing is revoked)."""
        return drifted_nodes(self.state.items(NODES), self.node_policy())

    def node_policy(self) -> dict[str, Any]:
        """The policy document the next join is judged by: node policy plus allowed measurements."""
        return policy_document(current_node_policy(self.state), list(self.state.items(MEASUREMENTS)))

    def _check_evidence(
        self, node: node_messages.NodeInfo, bound: list[bytes], node_policy: dict[str, Any], at_ms: int
    ) -> dict[str, Any]:
        policy = policy_document(node_policy, list(self.state.items(MEASUREMENTS)))
        try:
            claims = verify_join_evidence(msgspec.to_builtins(node.evidence), bound, policy, at_ms)
        except EvidenceRefused as e:
            raise TxError("attestation_refused", str(e)) from None
        if claims.get("platform") != "virtual" and policy.get("environment") == "development":
            # A node on TEE hardware must not share secrets with a ledger whose policy admits
            # virtual or debug nodes: a development policy is for development hardware only.
            raise TxError(
                "attestation_refused",
                "development_policy: a development node policy admits only virtual evidence; "
                "a ledger with TEE nodes needs a production policy",
            )
        return claims

    def _node_fields(self, node: node_messages.NodeInfo, claims: dict[str, Any], cert: str | None) -> dict[str, Any]:
        return {
            "name": node.name,
            "signing_key": node.signing_key,
            "encryption_key": node.encryption_key,
            "evidence": msgspec.to_builtins(node.evidence),
            "claims": claims,
            "cert": cert,
        }

    def _governance_node(self, node: node_messages.NodeInfo, claims: dict[str, Any]) -> dict[str, Any]:
        host_data = claims.get("host_data") or None
        return {
            "node_id": node.id,
            "public_keys": {"signing": node.signing_key, "encryption": node.encryption_key},
            "platform": claims["platform"],
            "measurement": claims["measurement"],
            **({"host_data": host_data} if host_data else {}),
        }

    def _genesis(self, msg: node_messages.Genesis, key: PublicKey, bound: list[bytes], block: Block) -> bytes:
        if self.genesis_done:
            raise TxError("genesis_exists", "the ledger already has a genesis")
        cfg = msg.config
        node_policy = cfg.get("node_policy", {})
        try:
            service_config = _service_config(cfg)
        except (TypeError, ValueError):
            raise TxError("invalid_genesis", "tx_validity_ms must be an integer") from None
        if not ledger_clock.valid_tolerance(service_config["clock_tolerance_ms"], service_config["tx_validity_ms"]):
            raise TxError("invalid_genesis", "clock_tolerance_ms must be a positive integer below tx_validity_ms")
        # No executor clock exists yet: the genesis node's signed timestamp is the first reference.
        at, _ = ledger_clock.block_time(0, block.ts_ms, msg.ts, service_config["clock_tolerance_ms"])
        try:
            service_cert = load_cert(msg.service_cert)
            endorsed = verify_node_certificate(msg.node_cert, service_cert)
        except CertificateError as e:
            raise TxError("bad_certificate", str(e)) from None
        if endorsed != key:
            raise TxError("bad_certificate", "node certificate is for another key")
        self.state.begin()
        try:
            ctx = governance.Context(block.height, at)
            allow = [
                validate_action({"name": "allow_measurement", "args": m}) for m in cfg.get("measurements", [])
            ]
            apply_actions(self.state, allow, ctx)
            claims = self._check_evidence(msg.node, bound, node_policy, at)
            governance.genesis(
                self.state,
                members=[_person(r, weight=True) for r in cfg.get("members", [])],
                users=[_person(r, weight=False) for r in cfg.get("users", [])],
                constitution=cfg.get("constitution"),
                nodes=[self._governance_node(msg.node, claims)],
            )
        except governance.GovernanceError as e:
            self.state.rollback()
            raise TxError("invalid_genesis", str(e)) from None
        except TxError:
            self.state.rollback()
            raise
        self.state.delete(SERVICE, governance.model.COMMIT_QUORUM_KEY)
        row = self.state.get(NODES, msg.node.id)
        self.state.put(NODES, msg.node.id, {**row, **self._node_fields(msg.node, claims, msg.node_cert)})
        try:
            verify_tx_key(msg.tx_key, self.ledger, msg.service_cert)
        except CertificateError as e:
            self.state.rollback()
            raise TxError("bad_tx_key", str(e)) from None
        self.state.put(SERVICE, CERTIFICATE, msg.service_cert)
        self.state.put(SERVICE, CONFIG, service_config)
        self.state.put(SERVICE, TX_KEYS, [{**msg.tx_key, "from_height": block.height, "from_ts": at}])
        self.state.put(SERVICE, SECRET_GENERATION, msg.tx_key["id"])
        ledger_clock.seed(self.state, msg.node.id, msg.ts)
        digest = write_digest(self.state.commit())
        self.block_time = at
        return digest

    def _join(self, msg: node_messages.Join, bound: list[bytes], block: Block) -> bytes:
        if not self.genesis_done:
            raise TxError("no_service", "the service has no genesis yet")
        row = self.state.get(NODES, msg.node.id)
        if row is not None:
            raise TxError("already_joined", f"node is already {row['status']}")
        claims = self._check_evidence(msg.node, bound, current_node_policy(self.state), self.block_time)
        self.state.begin()
        try:
            governance.record_node_join(
                self.state, self._governance_node(msg.node, claims), governance.Context(block.height, self.block_time)
            )
        except governance.GovernanceError as e:
            self.state.rollback()
            raise TxError("join_refused", str(e)) from None
        row = self.state.get(NODES, msg.node.id)
        self.state.put(NODES, msg.node.id, {**row, **self._node_fields(msg.node, claims, None)})
        return write_digest(self.state.commit())

    def _endorse(self, msg: node_messages.Endorse, out: BlockOutcome) -> bytes:
        row = self.state.get(NODES, msg.node)
        if row is None or row["status"] != "Trusted":
            raise TxError("not_trusted", "only a trusted node can be endorsed")
        if row.get("cert"):
            raise TxError("already_endorsed", "node is already endorsed")
        try:
            endorsed = verify_node_certificate(msg.cert, load_cert(self.state.get(SERVICE, CERTIFICATE)))
        except CertificateError as e:
            raise TxError("bad_certificate", str(e)) from None
        if endorsed.key_id != msg.node:
            raise TxError("bad_certificate", "certificate is for another node")
        self.state.begin()
        self.state.put(NODES, msg.node, {**row, "cert": msg.cert})
        out.endorsed.append((msg.node, msg.wrapped_secrets))
        if self.node_keys is not None and msg.node == self.node_keys.id and self.secrets is None:
            self._take_secrets(msg.wrapped_secrets)
        return write_digest(self.state.commit())

    def _take_secrets(self, wrapped: str) -> None:
        """This node's own ledger secrets, sealed to its encryption key in an endorsement."""
        assert self.node_keys is not None
        try:
            secrets = LedgerSecrets.open_endorsement(wrapped, self.ledger, self.node_keys)
        except (ValueError, KeyError, TypeError) as e:
            log.error("could not open the ledger secrets sent to this node: %s", e)
            return
        if not node_auth.secrets_match_certificate(secrets, self.service_certificate()):
            log.error("the ledger secrets sent to this node hold another service key than the certificate's")
            return
        self.receive_secrets(secrets)

    def receive_secrets(self, secrets: LedgerSecrets) -> None:
        """This node's ledger secrets, from its endorsement (executed, or found by `JoinScan`), plus
        the shares of generations that reached it before them."""
        self.secrets = secrets
        self.secrets_changed = True
        for generation, share in self._early_shares.items():
            self._take_share(generation, share)
        self._early_shares.clear()

    def _take_share(self, generation: str, share: str) -> None:
        """This node's share of a new generation. Whether it opens depends on this node's key, so it
        never decides the rekey's validity (that would make this node's root differ); a node that
        cannot open its share misses the generation and waits for it like a joining node. A share
        that arrives before this node's secrets (a rekey ordered before its endorsement, whose ring
        may predate the generation) is kept until they come."""
        assert self.node_keys is not None
        if self.secrets is None:
            self._early_shares[generation] = share
            return
        try:
            gen = Generation.open_share(share, self.ledger, generation, self.node_keys)
        except (ValueError, KeyError, TypeError) as e:
            log.error("this node's share of generation %s does not open: %s", generation[:16], e)
            return
        self.secrets.add(gen)
        self.secrets_changed = True

    def _rekey(self, msg: node_messages.Rekey) -> bytes:
        """Authenticated and bound to the waiting rotation by `node_auth` before this runs."""
        try:
            verify_tx_key(msg.tx_key, self.ledger, self.state.get(SERVICE, CERTIFICATE))
        except CertificateError as e:
            raise TxError("bad_tx_key", str(e)) from None
        if msg.tx_key["id"] != msg.generation:
            raise TxError("invalid_node_message", "the transaction key must belong to the new generation")
        missing = sorted(set(self.trusted_node_keys()) - set(msg.shares))
        if missing:
            raise TxError("incomplete_rekey", f"no share for trusted node(s) {', '.join(m[:16] for m in missing)}")
        if self.node_keys is not None and self.node_keys.id in msg.shares:
            self._take_share(msg.generation, msg.shares[self.node_keys.id])
        self.state.begin()
        keys = self.state.get(SERVICE, TX_KEYS) or []
        self.state.put(SERVICE, TX_KEYS, [*keys, {**msg.tx_key, "from_height": self.tip.height + 1, "from_ts": msg.ts}])
        self.state.put(SERVICE, SECRET_GENERATION, msg.generation)
        self.state.delete(REKEY, "pending")
        return write_digest(self.state.commit())

    def _snapshot_digest(self, msg: node_messages.SnapshotDigest) -> bytes:
        if not 0 < msg.height <= self.tip.height:
            raise TxError("invalid_node_message", "snapshot digest for a height not yet executed")
        key = f"{msg.height:012d}"
        row = self.state.get(SNAPSHOT_DIGESTS, key)
        if row is not None and row["digest"] != msg.digest:
            raise TxError(
                "snapshot_mismatch", f"node {msg.sender[:16]} snapshot at {msg.height} differs from the recorded digest"
            )
        nodes = sorted({*(row or {}).get("nodes", []), msg.sender})
        self.state.begin()
        self.state.put(SNAPSHOT_DIGESTS, key, {"digest": msg.digest, "nodes": nodes})
        return write_digest(self.state.commit())

    # --- commit signatures and the commit rule --------------------------------------------------

    def _check_signatures(self, sigs: list[CommitSig]) -> list[tuple[BlockRecord, str, bytes, bool]]:
        """Verify the block's commit signatures with the node keys in force at its start; returns
        (record, node, signature, agrees) for each valid one, counted when the block commits."""
        nodes = self.trusted_node_keys()
        votes = []
        for s in sigs:
            rec = self.uncommitted.get(s.height)
            if rec is None or not node_auth.commit_sig_ok(s, nodes, self.ledger):
                continue
            agrees = (s.block_hash, s.root, s.quorum) == (rec.hash, rec.root, rec.quorum)
            votes.append((rec, s.node, s.signature, agrees))
        return votes

    def _count_signatures(self, votes: list[tuple[BlockRecord, str, bytes, bool]], out: BlockOutcome) -> None:
        for rec, node, signature, agrees in votes:
            if agrees:
                rec.signatures.setdefault(node, signature)
                continue
            rec.divergent.add(node)
            if len(rec.divergent) >= max(rec.quorum, 1) and self.fork_reason is None:
                self.fork_reason = f"a quorum signed a different root at height {rec.height}: this node diverged"
                out.fork = self.fork_reason

    def _advance_commit(self, out: BlockOutcome) -> None:
        while self.uncommitted:
            rec = next(iter(self.uncommitted.values()))
            if len(rec.signatures) < rec.quorum or rec.quorum == 0:
                break
            self.uncommitted.popitem(last=False)
            rec.committed = True
            out.committed.append(rec)
            self.last_committed = rec
            self.index.add(
                CommittedBlock(rec.height, rec.hash, rec.root, rec.quorum, rec.ts_ms, rec.leaves, rec.signatures)
            )
        self.committed_height = (
            next(iter(self.uncommitted)) - 1 if self.uncommitted else self.tip.height
        )

    # --- lookups for queries --------------------------------------------------------------------

    def _pending_position(self, eid: bytes) -> tuple[int, int] | None:
        height = self.recent.get(eid)
        rec = self.uncommitted.get(height) if height is not None else None
        if rec is None:
            return None
        return height, next(i for i, (e, _) in enumerate(rec.leaves) if e == eid)

    def tx_status(self, eid: bytes) -> dict[str, Any]:
        pending = self._pending_position(eid)
        if pending is not None:
            return {"status": "Pending", "height": pending[0], "index": pending[1]}
        located = self.index.locate(eid)
        if located is not None:
            return {"status": "Committed", "height": located[0], "index": located[1]}
        invalid = self.recent_invalid.get(eid)
        if invalid is not None:
            return {"status": "Invalid", "reason": invalid[0], "message": invalid[1]}
        return {"status": "Unknown"}

    def receipt_parts(self, eid: bytes) -> tuple[CommittedBlock, int] | None:
        """The committed block holding `eid` and its index; None while pending or unknown."""
        if self._pending_position(eid) is not None:
            return None
        located = self.index.locate(eid)
        if located is None:
            return None
        block = self.index.block(located[0])
        return (block, located[1]) if block is not None else None

    # --- snapshots ------------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """Everything needed to resume after the tip, in a deterministic encoding: executors that
        snapshot at the same height produce the same bytes (so their digests can be compared)."""
        return _snap_enc.encode(
            {
                "v": 1,
                "ledger": self.ledger,
                "tip": [self.tip.height, self.tip.hash, self.tip.seq, self.tip.ts_ms],
                "maps": self.state.maps,
                "uncommitted": [
                    [r.height, r.hash, r.root, r.quorum, r.ts_ms, r.leaves, r.signatures]
                    for r in self.uncommitted.values()
                ],
                "recent": [[f, h, ids] for f, h, ids in self.recent_blocks],
                "invalid": [[e, *v] for e, v in self.recent_invalid.items()],
                "entries": self.entries_executed,
                "committed_height": self.committed_height,
            }
        )

    def restore(self, data: bytes) -> None:
        snap = _snap_dec.decode(data)
        if snap.get("v") != 1 or snap.get("ledger") != self.ledger:
            raise ValueError("snapshot is for another ledger or version")
        h, bh, seq, ts = snap["tip"]
        self.tip = Tip(h, bh, seq, ts)
        self.state = State()
        self.state.maps = snap["maps"]
        self.uncommitted = OrderedDict()
        for height, bhash, root, quorum, bts, leaves, sigs in snap["uncommitted"]:
            rec = BlockRecord(height, bhash, root, quorum, bts, [(e, d) for e, d in leaves], dict(sigs))
            self.uncommitted[height] = rec
        self.recent_blocks = deque((f, h, list(ids)) for f, h, ids in snap["recent"])
        self.recent = {eid: h for _, h, ids in self.recent_blocks for eid in ids}
        self.recent_invalid = OrderedDict((e, (a, b)) for e, a, b in snap["invalid"])
        self.entries_executed = snap["entries"]
        self.committed_height = snap["committed_height"]
        self._keys = self._node_keys = None
        last = self.index.block(self.committed_height)
        if last is not None:
            self.last_committed = BlockRecord(
                last.height, last.hash, last.root, last.quorum, last.ts_ms, last.leaves, last.signatures, committed=True
            )


_snap_enc = msgspec.msgpack.Encoder()
_snap_dec = msgspec.msgpack.Decoder()


def _sender_of(body: bytes) -> str | None:
    """A guess at the sender key id without a full parse, to batch verification. In a canonical
    body "sender" is the last string field, after the operations; a wrong guess only costs a
    second verification, because the result is used only when the parsed sender matches."""
    i = body.rfind(b'"sender":"')
    if i < 0:
        return None
    return body[i + 10 : i + 74].decode("ascii", "replace")


def _exception_text(e: Exception) -> str:
    """An unexpected exception as an Invalid entry's message: its type and words, without the
    memory addresses some reprs carry (they differ between executors), and bounded."""
    text = re.sub(r"0x[0-9a-fA-F]+", "0x…", f"{type(e).__name__}: {e}")
    text = text.encode("utf-8", "backslashreplace").decode()
    return text if len(text) <= 300 else text[:299] + "…"


def _person(row: dict[str, Any], weight: bool) -> dict[str, Any]:
    """A genesis member or user as governance records it (certificates are reduced to their key)."""
    try:
        pem = PublicKey.load(row["public_key"]).pem
    except (KeyError, KeyError_) as e:
        raise governance.GovernanceError(f"genesis identity {row.get('name')!r}: {e}") from None
    out = {"name": row["name"], "public_key": pem}
    if weight:
        out["weight"] = int(row.get("weight", 1))
    return out


def _service_config(cfg: dict[str, Any]) -> dict[str, Any]:
    return {
        "tx_validity_ms": int(cfg.get("tx_validity_ms", DEFAULT_TX_VALIDITY_MS)),
        "clock_tolerance_ms": cfg.get("clock_tolerance_ms", ledger_clock.DEFAULT_CLOCK_TOLERANCE_MS),
        "node_policy": cfg.get("node_policy", {}),
    }
