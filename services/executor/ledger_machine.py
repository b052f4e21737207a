"""The deterministic heart of the executor: blocks in, state, leaves, roots and commits out.

Everything here depends only on the ledger's bytes (no wall clock, no randomness), so every
honest executor that reads the same stream reaches the same state, the same roots and the same
commit decisions. I/O (NATS, signing, publishing) lives in `executor.py`.

A block goes through the steps of `LedgerMachine.apply`, each in its own module:

- order: the block must extend the chain (`conclavium.chain`); copies of entries already executed
  are ignored (`replay_window.py`); the block's time is bounded by executors' clocks
  (`ledger_clock.py`);
- verify: client signatures in one batch, ahead of execution where possible (the applications say
  which, `apps/`), node messages by `node_auth.py`;
- apply: each entry by what it is, against the block's staged state (`state.py`): a client entry
  by its application (`apps/`), a governance document (`governance_entries.py`), a node message
  (`node_entries.py`); each ends executed, with a leaf, or Invalid with a reason;
- sign and commit: the block's Merkle root over its leaves, the commit signatures it carries
  counted by the commit rule (`commit_rule.py`); the executor signs the root (`executor.py`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import msgspec

from conclavium import governance, merkle, rules
from conclavium.apps import KV, AppEntryError, split
from conclavium.block import Block, Entry, Kind, decode_block, entry_id, leaf_data
from conclavium.chain import Tip, next_block
from conclavium.crypto import sealing
from conclavium.crypto.keys import PublicKey
from conclavium.encoding import canonical_json
from conclavium.tx import TxError

from . import commit_rule, ledger_clock
from .apps import Application, default_apps
from .enclave import Generation, LedgerSecrets, NodeKeys
from .governance_entries import GovernanceEntries
from .node_entries import NodeEntries
from .outcome import BlockOutcome, BlockRecord
from .receipt_index import CommittedBlock, ReceiptIndex
from .replay_window import MAX_RECENT_INVALID, BlockStage, ReplayWindow
from .sealed_openers import SealedOpenerPool
from .state import State
from .tables import (
    CERTIFICATE,
    CONFIG,
    DEFAULT_TX_VALIDITY_MS,
    MAP_POLICIES,
    MEASUREMENTS,
    MEMBERS,
    NODES,
    REKEY,
    SECRET_GENERATION,
    SERVICE,
    SNAPSHOT_DIGESTS,
    TX_KEYS,
    USERS,
    AppUnavailable,
    NeedSecrets,
    UnsupportedRules,
)
from .verifier import BatchVerifier

__all__ = [
    "CERTIFICATE",
    "CONFIG",
    "DEFAULT_TX_VALIDITY_MS",
    "MAP_POLICIES",
    "MAX_RECENT_INVALID",
    "MEASUREMENTS",
    "MEMBERS",
    "NODES",
    "REKEY",
    "SECRET_GENERATION",
    "SERVICE",
    "SNAPSHOT_DIGESTS",
    "TX_KEYS",
    "USERS",
    "BlockOutcome",
    "BlockRecord",
    "LedgerMachine",
    "NeedSecrets",
    "UnsupportedRules",
]

log = logging.getLogger("conclavium.executor")


class LedgerMachine(NodeEntries, GovernanceEntries):
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
        apps: Sequence[Application] | None = None,
        rules_versions: frozenset[int] = rules.IMPLEMENTED,
    ) -> None:
        self.ledger = ledger
        self.verifier = verifier
        self.secrets = secrets
        self.node_keys = node_keys
        self.secrets_changed = False
        self._early_shares: dict[str, str] = {}  # generation -> this node's share, before its secrets
        self.openers = openers
        self.apps: dict[str, Application] = {a.name: a for a in (default_apps() if apps is None else apps)}
        self.rules_versions = rules_versions  # the rules versions this executor implements
        self._running: frozenset[str] | None = None  # applications the ledger runs, while a block applies
        self.index = index or ReceiptIndex(None)
        self.state = State()
        self.tip = Tip()
        self.uncommitted: OrderedDict[int, BlockRecord] = OrderedDict()
        self.last_committed: BlockRecord | None = None
        self.committed_height = 0
        self.entries_executed = 0
        self.window = ReplayWindow()
        self._stage: BlockStage | None = None
        self.fork_reason: str | None = None
        self.last_signed: dict[str, int] = {}  # node → height of its latest valid commit signature (metrics)
        self._verified: dict[tuple[bytes, bytes], tuple[str, bool]] = {}  # (entry id, signature) -> (sender, ok)
        self._keys: dict[str, PublicKey] | None = None
        self._node_keys: dict[str, PublicKey] | None = None
        # Time of the block being applied (ledger_clock.py); every time check in execution uses it.
        self.block_time = 0
        self.block_height = 0  # height of the block being applied (or last applied)
        self.block_prev = bytes(32)  # the previous block's hash, for the block being applied

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
        activating = self._check_rules(block.height)
        self._check_keys(block)
        eids = [entry_id(e) for e in block.entries]
        sig_ok = await self._preverify(block.entries, eids)
        out = BlockOutcome(block.height)
        # From here to the commit nothing awaits, so no query ever reads a block half applied.
        self.state.begin_block()
        self._running = None
        self.block_height, self.block_prev = block.height, block.prev
        try:
            if activating is not None:
                self.state.put(SERVICE, rules.RULES_KEY, {"version": activating})
            self.block_time, out.clamped = self._block_time(block)
            stage = self._stage = self.window.stage(self.block_time, self.uncommitted)
            if self.genesis_done:
                out.expired = governance.expire(self.state, governance.Context(block.height, self.block_time))
            signers = self.signer_keys()
            votes = commit_rule.check_signatures(block.sigs, self.uncommitted, signers, self.ledger)
            commit_rule.note_signers(block.sigs, votes, self.uncommitted, signers, self.ledger, self.last_signed)
            for i, entry in enumerate(block.entries):
                self._apply_entry(entry, eids[i], sig_ok[i], block, stage, out)
        except BaseException:  # NeedSecrets, or a fault of this node: the block is applied again later
            self.state.rollback_block()
            self._keys = self._node_keys = self._endorsed = None
            raise
        finally:
            self._stage = None
        self._commit_block(block, bhash, seq, stage, votes, out)
        return block, out

    def _apply_entry(
        self,
        entry: Entry,
        eid: bytes,
        pre: tuple[str, bool] | None,
        block: Block,
        stage: BlockStage,
        out: BlockOutcome,
    ) -> None:
        """Execute one entry into the block being staged, or record it Invalid. Only NeedSecrets,
        AppUnavailable and UnsupportedRules (the whole block waits) and MemoryError (a local failure,
        not the entry's: calling it Invalid would make this node diverge) leave here."""
        if self.window.seen(eid, stage):
            return  # a resubmission: the first copy stands, this one is ignored
        marks = (len(out.governance), len(out.endorsed))
        self.state.savepoint()
        try:
            digest = self._execute(entry, pre, block, out)
        except TxError as e:
            self._refuse_entry(eid, e.code, e.message, marks, out)
            return
        except (NeedSecrets, UnsupportedRules, AppUnavailable, MemoryError):
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
        stage: BlockStage,
        votes: list[commit_rule.Vote],
        out: BlockOutcome,
    ) -> None:
        """Everything the block changed, at once; nothing here can fail on the block's content."""
        self.state.commit_block()
        self.window.commit(stage, block.height, out.invalid, self.config("tx_validity_ms", DEFAULT_TX_VALIDITY_MS))
        legacy = self._node_commits()  # rules before 3: every signature counted, the block's own quorum
        member_of, k = (None if legacy else self.signer_members()), self.member_threshold()
        self.fork_reason = commit_rule.count_signatures(votes, self.fork_reason, out, member_of, k)
        self.tip = Tip(block.height, bhash, seq, self.block_time)
        leaves = stage.leaves
        self.entries_executed += len(leaves)
        root = merkle.root([merkle.leaf_hash(leaf_data(e, d)) for e, d in leaves])
        quorum = self.quorum()
        timed = self.rules_version() >= rules.SIGNED_TIME_FROM
        rec = BlockRecord(block.height, bhash, root, quorum, self.block_time, leaves, timed=timed)
        if out.recovered:
            self._after_recovery(rec.quorum)
        if leaves:
            self.uncommitted[block.height] = rec
        commit_rule.advance(self.uncommitted, self.index, out, member_of, k, 0 if legacy else quorum)
        if out.committed:
            self.last_committed = out.committed[-1]
        self.committed_height = next(iter(self.uncommitted)) - 1 if self.uncommitted else self.tip.height

    def _after_recovery(self, quorum: int) -> None:
        """The blocks the lost nodes left uncommitted wait for the recovered nodes' quorum; the lost
        nodes' signatures on them no longer count (they are retired)."""
        for rec in self.uncommitted.values():
            rec.quorum = quorum
            rec.signatures = {}
            rec.divergent = set()

    def _block_time(self, block: Block) -> tuple[int, str | None]:
        """Record the block's clock signatures, then bound its timestamp by them (ledger_clock.py)."""
        trusted = self.signer_keys(self.tip.ts_ms)  # the block's own time is what this bounds
        ledger_clock.record(self.state, block.clocks, trusted, self.ledger)
        ref = ledger_clock.reference(self.state, trusted, self.quorum_at(self.tip.ts_ms))
        tolerance = self.config("clock_tolerance_ms", ledger_clock.DEFAULT_CLOCK_TOLERANCE_MS)
        return ledger_clock.block_time(self.tip.ts_ms, block.ts_ms, ref, tolerance)

    def _check_rules(self, height: int) -> int | None:
        """Raise UnsupportedRules, before changing anything, when the rules in force at `height`
        are not this executor's; returns the version that activates at this block, if one does."""
        activating = rules.due(self.state, SERVICE, height)
        version = activating if activating is not None else rules.active(self.state, SERVICE)
        if version not in self.rules_versions:
            raise UnsupportedRules(
                f"the ledger runs rules version {version} from height {height}; this executor implements "
                f"{', '.join(map(str, sorted(self.rules_versions)))}"
            )
        missing = sorted(set(rules.applications(self.state, SERVICE, version)) - set(self.apps))
        if missing:
            raise UnsupportedRules(f"the ledger runs application(s) {', '.join(missing)}, not implemented here")
        return activating

    def rules_version(self) -> int:
        return rules.active(self.state, SERVICE)

    def _check_keys(self, block: Block) -> None:
        """Raise NeedSecrets, before changing anything, when the block holds entries sealed to a
        ledger key this node does not hold yet (a joining node before its secrets arrive)."""
        known = {k["id"] for k in self.state.get(SERVICE, TX_KEYS) or []}
        for e in block.entries:
            if e.kind not in Kind.CLIENT:
                continue
            found = self._app_of(e)
            missing = found[0].needs_secrets(self, found[1], known) if found is not None else None
            if missing is not None:
                raise NeedSecrets(missing)

    # --- what the core offers applications (apps.Context) ------------------------------------------

    def open_sealed(self, key_id: str, box: bytes, info: bytes) -> bytes:
        return self._open(key_id, box, info)

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

    def private_digest(self, writes: list[tuple[str, str, Any]]) -> bytes:
        return self._private_digest(writes)

    def snapshot_secret(self) -> bytes | None:
        """The ledger secret of the generation current in the state: it seals snapshots and keys
        their digests, so every executor at the same height uses the same one."""
        gen = self._current_generation()
        return gen.ledger_secret if gen is not None else None

    def _current_generation(self) -> Generation | None:
        """This node's secrets of the generation current in the state, if it holds them."""
        gen_id = self.state.get(SERVICE, SECRET_GENERATION)
        return self.secrets.by_id(gen_id) if self.secrets and gen_id else None

    def _private_digest(self, writes: list[tuple[str, str, Any]]) -> bytes:
        """Write digest of an entry with private writes: keyed with the current ledger secret,
        so a receipt's digest reveals nothing about low-entropy private values."""
        gen = self._current_generation()
        if gen is None:
            raise NeedSecrets(str(self.state.get(SERVICE, SECRET_GENERATION)))
        body = canonical_json([[m, k, v] for m, k, v in writes])
        return hmac.new(gen.write_digest_key, body, hashlib.sha256).digest()

    def entry_dated(self, ts_ms: int) -> None:
        stage = self._stage
        if stage is not None and ts_ms > stage.max_ts:
            stage.max_ts = ts_ms

    # --- verification ahead ---------------------------------------------------------------------

    async def preverify_blocks(self, raws: list[bytes]) -> None:
        """Verify the client signatures of blocks not applied yet, so that verification (on the
        thread pool) overlaps with executing earlier blocks. A verdict is kept by what was signed:
        the entry id (SHA-256 of the exact bytes) and the signature, with the signer id it was
        checked for (itself read from those bytes), and the application uses it only when the
        parsed signer is that one. So a verdict never serves another body that carries the same
        signature, and it does not depend on how the stream was batched."""
        entries: list[Entry] = []
        for raw in raws:
            try:
                entries += decode_block(raw).entries
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
        if len(self._verified) > 200_000:  # hints only: whatever is dropped is simply done again in order
            self._verified.clear()
        preparing = asyncio.ensure_future(self._prepare_ahead(entries))
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
            await preparing
        except Exception:
            log.exception("opening sealed operations ahead failed; they are opened in order instead")

    async def _prepare_ahead(self, entries: list[Entry]) -> None:
        """Each application's work ahead of execution (parsing, opening sealed payloads)."""
        for app, mine in self._by_app(entries).items():
            await app.prepare(self, [e for _, e in mine])

    async def _preverify(self, entries: list[Entry], eids: list[bytes]) -> list[tuple[str, bool] | None]:
        """Verify client signatures of the block in one batch, with the keys known at its start.
        Each result is (signer assumed, verdict); None marks an entry checked later, in order."""
        known = [self._verified.pop((eid, e.signature), None) for e, eid in zip(entries, eids, strict=True)]
        missing = [i for i, k in enumerate(known) if k is None]
        for i, verdict in zip(missing, await self._verify_senders([entries[i] for i in missing]), strict=True):
            known[i] = verdict
        return known

    async def _verify_senders(self, entries: list[Entry]) -> list[tuple[str, bool] | None]:
        """(signer guessed from the entry, verdict) for the client entries whose application
        offers a signature to check ahead; None for the rest, which execution checks in order."""
        jobs, where = [], []
        result: list[tuple[str, bool] | None] = [None] * len(entries)
        for app, mine in self._by_app(entries).items():
            for (i, _), job in zip(mine, app.signature_jobs(self, [e for _, e in mine]), strict=True):
                if job is not None:
                    jobs.append(job[:3])
                    where.append((i, job[3]))
        if jobs:
            for (i, signer), ok in zip(where, await self.verifier.verify(jobs), strict=True):
                result[i] = (signer, ok)
        return result

    def _by_app(self, entries: list[Entry]) -> dict[Application, list[tuple[int, Entry]]]:
        """The client entries (position, entry as its application sees it), by application."""
        mine: dict[Application, list[tuple[int, Entry]]] = {}
        for i, e in enumerate(entries):
            if e.kind in Kind.CLIENT:
                found = self._app_of(e)
                if found is not None:
                    mine.setdefault(found[0], []).append((i, found[1]))
        return mine

    # --- execution ------------------------------------------------------------------------------

    def _app_of(self, entry: Entry) -> tuple[Application, Entry] | None:
        """The application a client entry names, if this executor implements it, and the entry as
        the application sees it (its own payload); for work ahead, which only prepares."""
        if entry.kind == Kind.TX:
            app = self.apps.get(KV)
            return (app, entry) if app is not None else None
        try:
            name, payload = split(entry)
        except AppEntryError:
            return None
        app = self.apps.get(name)
        return (app, Entry(entry.kind, payload, entry.signature)) if app is not None else None

    def _execute(self, entry: Entry, pre: tuple[str, bool] | None, block: Block, out: BlockOutcome) -> bytes:
        if entry.kind in Kind.CLIENT:
            return self._execute_tx(entry, pre, block)
        if entry.kind == Kind.NODE:
            return self._execute_node_message(entry, block, out)
        if entry.kind == Kind.GOV:
            self._running = None  # governance may change which applications the ledger runs
            return self._execute_governance(entry, block, out)
        raise TxError("unsupported_kind", f"entry kind {entry.kind} is not supported")

    def _execute_tx(self, entry: Entry, pre: tuple[str, bool] | None, block: Block) -> bytes:
        """A client entry, by its application, if the ledger runs it."""
        if not self.genesis_done:
            raise TxError("no_service", "the service has no genesis yet")
        if entry.kind == Kind.TX:
            name = KV
        else:
            try:
                name, payload = split(entry)
            except AppEntryError as e:
                raise TxError("unknown_application", str(e)) from None
            entry = Entry(entry.kind, payload, entry.signature)
        running = self._running
        if running is None:
            running = self._running = frozenset(rules.applications(self.state, SERVICE))
        if name not in running:
            raise TxError("unknown_application", f"this ledger does not run application {name!r}")
        app = self.apps.get(name)
        if app is None:  # enabled in this block, after _check_rules: stop before computing another root
            raise UnsupportedRules(f"the ledger runs application {name}, not implemented here")
        return app.execute(self, entry, pre)

    # --- lookups for queries --------------------------------------------------------------------

    def _pending_position(self, eid: bytes) -> tuple[int, int] | None:
        height = self.window.recent.get(eid)
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
        invalid = self.window.invalid.get(eid)
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
        recent, invalid = self.window.snapshot_parts()
        snap: dict[str, Any] = {
            "v": 1,
            "ledger": self.ledger,
            "tip": [self.tip.height, self.tip.hash, self.tip.seq, self.tip.ts_ms],
            "maps": self.state.maps,
            # a timed record carries a last True, so a ledger before rules version 4 snapshots the same bytes
            "uncommitted": [
                [r.height, r.hash, r.root, r.quorum, r.ts_ms, r.leaves, r.signatures, sorted(r.divergent)]
                + ([True] if r.timed else [])
                for r in self.uncommitted.values()
            ],
            "recent": recent,
            "invalid": invalid,
            "entries": self.entries_executed,
            "committed_height": self.committed_height,
        }
        parts = {name: app.snapshot(self.state) for name, app in sorted(self.apps.items())}
        extra = {name: part for name, part in parts.items() if part is not None}
        if extra:
            snap["apps"] = extra
        if self.fork_reason is not None:
            snap["fork"] = self.fork_reason  # a diverged node stays stopped after a restart
        return _snap_enc.encode(snap)

    def restore(self, data: bytes) -> None:
        snap = _snap_dec.decode(data)
        if snap.get("v") != 1 or snap.get("ledger") != self.ledger:
            raise ValueError("snapshot is for another ledger or version")
        h, bh, seq, ts = snap["tip"]
        self.tip = Tip(h, bh, seq, ts)
        self.state = State()
        self.state.maps = snap["maps"]
        self.uncommitted = OrderedDict()
        for height, bhash, root, quorum, bts, leaves, sigs, *rest in snap["uncommitted"]:
            # divergent signers still count towards a fork after a restart (older snapshots lack them)
            divergent = set(rest[0]) if rest else set()
            rec = BlockRecord(
                height,
                bhash,
                root,
                quorum,
                bts,
                [(e, d) for e, d in leaves],
                dict(sigs),
                divergent,
                timed=rest[1:2] == [True],
            )
            self.uncommitted[height] = rec
        self.window.restore(snap["recent"], snap["invalid"])
        self.entries_executed = snap["entries"]
        self.committed_height = snap["committed_height"]
        self.fork_reason = snap.get("fork")
        self.block_time = self.tip.ts_ms
        self._keys = self._node_keys = self._endorsed = None
        # The committed height may be a block without entries (not indexed): the last one with some.
        last = self.index.latest_at_or_before(self.committed_height)
        if last is not None:
            self.last_committed = BlockRecord(
                last.height,
                last.hash,
                last.root,
                last.quorum,
                last.ts_ms,
                last.leaves,
                last.signatures,
                committed=True,
                timed=last.timed,
            )


_snap_enc = msgspec.msgpack.Encoder()
_snap_dec = msgspec.msgpack.Decoder()


def _exception_text(e: Exception) -> str:
    """An unexpected exception as an Invalid entry's message: its type and words, without the
    memory addresses some reprs carry (they differ between executors), and bounded."""
    text = re.sub(r"0x[0-9a-fA-F]+", "0x…", f"{type(e).__name__}: {e}")
    text = text.encode("utf-8", "backslashreplace").decode()
    return text if len(text) <= 300 else text[:299] + "…"
