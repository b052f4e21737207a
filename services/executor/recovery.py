"""The recovering executor's side of disaster recovery (`--recover`), when every executor is lost.

The node starts on a data directory holding a copy of a lost node's ledger chunks and no
secrets, with new node keys. Start-up replays the chunks as far as it can without secrets (the
public prefix: genesis, governance, up to the first block that needs a ledger secret). Then
`RecoverySession`:

1. scans the rest of the ledger, the chunks then the ledger stream, decoding only and following
   the hash chain (`RecoveryScan`), for the share set in force: the last `RecoveryShares` signed by
   a node the replayed state trusts (or, when none follows, the one in the replayed state);
2. once it reached the stream's end, puts a `RecoveryOpen` (its keys and attestation evidence) in
   the ledger and waits for the members: `/readyz` and the `recovery` query say
   "waiting for recovery shares (i of k)";
3. takes each member's `recovery_share` document that follows its `RecoveryOpen` in the chain,
   signed by a holder of the set, sealed to this node and matching the set's digest (others are
   refused with a reason, listed in the status); with `threshold` good shares it reconstructs the
   recovery key, unwraps the ledger secrets and checks the service key against the certificate;
4. puts a `Recovered` entry (its node certificate signed with the recovered service key) in the
   ledger, and hands the secrets to the ledger machine: the executor then replays the rest of the
   history with them and, when the `Recovered` entry executes, is the ledger's trusted node.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec
import nats.errors
from nats.js.api import ConsumerConfig, DeliverPolicy

from conclavium import cose, node_messages, recovery, streams
from conclavium.block import Entry, IntakeBatch, Kind, entry_id
from conclavium.chain import ChainError, Tip, next_block
from conclavium.crypto.keys import KeyError_, PublicKey
from conclavium.encoding import loads
from conclavium.governance import recovery as gov_recovery
from conclavium.governance.model import MSG_RECOVERY_SHARE
from conclavium.identity import node_certificate
from conclavium.ledger_files import LedgerFileError, chunk_files, read_chunk
from conclavium.runtime import now_ms

from . import metrics as m
from .enclave import LedgerSecrets, NodeKeys
from .node_auth import secrets_match_certificate

if TYPE_CHECKING:
    from .executor import Executor

log = logging.getLogger("conclavium.executor")
OPEN_RETRY_S = 10.0

WAITING = "waiting for recovery shares"


@dataclass
class ShareSet:
    id: str
    threshold: int
    wrapped: str
    members: dict[str, dict[str, str]]  # member id -> {"box", "digest", "public_key"}
    height: int

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "threshold": self.threshold,
            "height": self.height,
            "members": {k: {"box": v["box"], "digest": v["digest"]} for k, v in self.members.items()},
        }


@dataclass
class RecoveryScan:
    """Follows the ledger after the replayed tip without executing it (the blocks need secrets this
    node does not hold): the share set in force, this node's `RecoveryOpen`, and the members'
    shares for it. A block that does not extend the chain is skipped, as execution skips it."""

    ledger: str
    tip: Tip
    keys: NodeKeys
    trusted: dict[str, PublicKey]
    share_set: ShareSet | None
    open_node: str | None = None  # the node whose recovery is open, as the ledger will record it
    submitted: set[str] = field(default_factory=set)  # holders whose (first) share for it the ledger records
    shares: dict[str, bytes] = field(default_factory=dict)  # member id -> good share for this node
    refused: dict[str, str] = field(default_factory=dict)  # member id -> why its share was refused
    skipped: int = 0

    @property
    def opened(self) -> bool:
        return self.open_node == self.keys.id

    @property
    def other(self) -> str | None:
        """Another node whose recovery is open (and already holds shares, so it stays open)."""
        return self.open_node if self.open_node not in (None, self.keys.id) else None

    def feed(self, raw: bytes) -> None:
        try:
            block, bhash = next_block(self.tip, raw, self.ledger)
        except ChainError:
            self.skipped += 1
            return
        self.tip = Tip(block.height, bhash, 0, block.ts_ms)
        for e in block.entries:
            if e.kind == Kind.NODE:
                self._node_message(e)
            elif e.kind == Kind.GOV and self.open_node is not None:
                self._share_document(e.data)

    def _node_message(self, e: Entry) -> None:
        if b'"recovery_' not in e.data:
            return
        try:
            msg = node_messages.decode(e.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        if msg.ledger != self.ledger:
            return
        if isinstance(msg, node_messages.RecoveryShares):
            key = self.trusted.get(msg.sender)
            if key is not None and key.verify(e.signature, e.data):
                self.share_set = ShareSet(msg.id, msg.threshold, msg.wrapped, dict(msg.shares), self.tip.height)
                self._reset(None)
        elif isinstance(msg, node_messages.RecoveryOpen) and self.share_set and msg.set == self.share_set.id:
            # As the ledger does: an open recovery that holds no share yet is replaced by a newer one.
            if self.open_node is None or not self.submitted:
                self._reset(msg.node.id)

    def _reset(self, open_node: str | None) -> None:
        self.open_node = open_node
        self.submitted.clear()
        self.shares.clear()
        self.refused.clear()

    def _share_document(self, doc: bytes) -> None:
        """A member's share for the open recovery: counted as the ledger counts it, and, for this
        node, kept when it opens and matches the set's digest."""
        assert self.share_set is not None
        try:
            parsed = cose.parse1(doc)
        except cose.CoseError:
            return
        if parsed.protected.get(cose.HDR_MSG_TYPE) != MSG_RECOVERY_SHARE:
            return
        if parsed.protected.get(cose.HDR_LEDGER) != self.ledger:
            return
        member = parsed.kid
        try:
            body = loads(parsed.payload)
        except ValueError:
            return
        if not isinstance(body, dict) or body.get("node") != self.open_node:
            return
        mine = self.opened
        holder = self.share_set.members.get(member)
        if holder is None:
            if mine:
                self.refused[str(member)[:64]] = "not_share_holder: the signer holds no share of the set in force"
            return
        if body.get("set") != self.share_set.id:
            if mine:
                self.refused[member] = "stale_share_set: the share is for another share set"
            return
        try:
            cose.verify1(doc, lambda kid: PublicKey.load(holder["public_key"]) if kid == member else None)
        except (cose.CoseError, KeyError_):
            if mine:
                self.refused[member] = "bad_signature: not signed by the share holder"
            return
        if member in self.submitted:
            return  # the ledger records a member's first share only (duplicate_share)
        self.submitted.add(member)
        if not mine:
            return
        try:
            share = recovery.open_at_node(
                str(body.get("box")),
                self.keys.encryption,
                self.ledger,
                self.share_set.id,
                member,
                self.keys.id,
                holder["digest"],
            )
        except recovery.RecoveryError as e:
            self.refused[member] = f"{e.code}: {e.message}"
            return
        self.refused.pop(member, None)
        self.shares[member] = share

    def complete(self) -> bool:
        return self.share_set is not None and len(self.shares) >= self.share_set.threshold

    def reconstruct(self, service_cert: str) -> tuple[LedgerSecrets, list[str]]:
        """The ledger secrets from the shares; RecoveryError when they do not open or do not
        hold the service key of the ledger's certificate."""
        assert self.share_set is not None
        threshold = self.share_set.threshold
        members = sorted(self.shares)[:threshold]
        key = recovery.combine([self.shares[mid] for mid in members], threshold)
        wrapped = recovery.unwrap_secrets(base64.b64decode(self.share_set.wrapped), key, self.ledger)
        try:
            secrets = LedgerSecrets.from_bytes(wrapped)
        except (ValueError, KeyError, TypeError) as e:
            raise recovery.RecoveryError(f"the wrapped secrets are malformed: {e}", "bad_share_set") from None
        if not secrets_match_certificate(secrets, service_cert):
            raise recovery.RecoveryError("the recovered service key is not the certificate's", "bad_share_set")
        return secrets, members


class RecoverySession:
    """Steps 1-4 of the module docstring, against the executor's NATS connection and data directory."""

    def __init__(self, ex: Executor) -> None:
        self.ex = ex
        machine = ex.machine
        recorded = gov_recovery.share_set(machine.state)
        current = None
        if recorded is not None:
            members = {
                k: {"box": v["box"], "digest": v["digest"], "public_key": v["public_key"]}
                for k, v in recorded["members"].items()
            }
            current = ShareSet(recorded["id"], recorded["threshold"], recorded["wrapped"], members, recorded["height"])
        self.scan = RecoveryScan(machine.ledger, machine.tip, ex.keys, dict(machine.trusted_node_keys()), current)
        self.caught_up = False
        self.state = "scanning the ledger"
        self.error: str | None = None
        self._opened_sent = 0.0

    def reason(self) -> str:
        if self.error:
            return f"recovery failed: {self.error}"
        if self.scan.share_set is None and self.caught_up:
            return "recovery impossible: the ledger holds no recovery share set"
        if self.scan.other and self.scan.submitted:
            return f"node {self.scan.other[:16]} holds the open recovery and members' shares"
        if self.scan.opened:
            s = self.scan.share_set
            assert s is not None
            return f"{WAITING} ({len(self.scan.shares)} of {s.threshold})"
        return self.state

    def status(self) -> dict[str, Any]:
        s = self.scan.share_set
        info = self.ex.node_info_cached
        return {
            "state": "waiting_for_shares" if self.scan.opened else "opening",
            "reason": self.reason(),
            "ledger": self.ex.cfg.ledger,
            "node": None
            if info is None
            else {
                "id": info.id,
                "signing_key": info.signing_key,
                "encryption_key": info.encryption_key,
                "evidence": msgspec.to_builtins(info.evidence),
            },
            "share_set": s.public() if s else None,
            "received": sorted(self.scan.shares),
            "refused": dict(sorted(self.scan.refused.items())),
            "height": self.scan.tip.height,
        }

    def _gauges(self) -> None:
        s = self.scan.share_set
        m.RECOVERY_WAITING.set(1)
        m.RECOVERY_SHARES_RECEIVED.set(len(self.scan.shares))
        m.RECOVERY_SHARES_REQUIRED.set(s.threshold if s else 0)
        m.RECOVERY_SHARES_REFUSED.set(len(self.scan.refused))

    async def run(self, stopping: asyncio.Event) -> LedgerSecrets | None:
        """Returns the reconstructed secrets (already the machine's), or None when stopping."""
        ex = self.ex
        self._gauges()
        last_seq = self._scan_chunks()
        sub = await ex.js.subscribe(
            streams.ledger_subject(ex.cfg.ledger),
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=last_seq + 1),
            idle_heartbeat=2.0,
        )
        try:
            while not stopping.is_set():
                try:
                    msg = await sub.next_msg(timeout=1.0)
                    self.scan.feed(msg.data)
                    self.caught_up = msg.metadata.num_pending == 0
                except nats.errors.TimeoutError:
                    self.caught_up = True
                self._gauges()
                if not self.caught_up:
                    continue
                secrets = await self._step()
                if secrets is not None:
                    return secrets
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        return None

    def _scan_chunks(self) -> int:
        """Feed the chunk records after the replayed tip; returns the last stream sequence seen."""
        last = self.ex.machine.tip.seq
        files = chunk_files(self.ex.store.ledger_dir)
        for i, path in enumerate(files):
            try:
                records, _ = read_chunk(path, last=i == len(files) - 1)
            except LedgerFileError as e:
                log.warning("recovery scan stops at %s: %s; the stream supplies the rest", path, e)
                break
            for rec in records:
                if rec.seq > last:
                    self.scan.feed(rec.raw)
                    last = rec.seq
        return last

    async def _step(self) -> LedgerSecrets | None:
        s = self.scan.share_set
        if s is None:
            self.state = "no recovery share set in the ledger"
            return None
        if not self.scan.opened and (self.scan.other is None or not self.scan.submitted):
            if time.monotonic() - self._opened_sent > OPEN_RETRY_S:
                self._opened_sent = time.monotonic()
                await self._open(s)
            return None
        if not self.scan.complete():
            return None
        try:
            secrets, members = self.scan.reconstruct(str(self.ex.machine.service_certificate()))
        except recovery.RecoveryError as e:
            self.error = f"{e.code}: {e.message}"
            log.error("recovery: %s", self.error)
            return None
        await self._recovered(secrets, s, members)
        return secrets

    async def _open(self, s: ShareSet) -> None:
        ex = self.ex
        info = await asyncio.to_thread(ex._node_info)
        ex.node_info_cached = info
        msg = node_messages.RecoveryOpen(
            v=node_messages.NODE_MSG_VERSION, ledger=ex.cfg.ledger, ts=now_ms(), node=info, set=s.id
        )
        entry = node_messages.make_entry(msg, ex.keys.signing)
        try:
            await ex._publish_intake(IntakeBatch(entries=[entry]), f"recovery-open:{entry_id(entry).hex()}")
            self.state = "opened a recovery; waiting for it in the ledger"
            log.info("opened a recovery for share set %s (threshold %d)", s.id[:16], s.threshold)
        except (TimeoutError, nats.errors.Error) as e:
            log.warning("could not publish the recovery opening, will retry: %s", e)

    async def _recovered(self, secrets: LedgerSecrets, s: ShareSet, members: list[str]) -> None:
        ex = self.ex
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        cert = node_certificate(secrets.service_key, secrets.service_cert, ex.keys.signing.public_key, now)
        msg = node_messages.Recovered(
            v=node_messages.NODE_MSG_VERSION,
            ledger=ex.cfg.ledger,
            ts=now_ms(),
            sender=ex.node_id,
            set=s.id,
            members=members,
            cert=cert,
        )
        entry = node_messages.make_entry(msg, ex.keys.signing)
        ex.machine.receive_secrets(secrets)
        secrets.save(ex.sealed, ex.node_id)
        ex.machine.secrets_changed = False
        while True:
            try:
                await ex._publish_intake(IntakeBatch(entries=[entry]), f"recovered:{entry_id(entry).hex()}")
                break
            except (TimeoutError, nats.errors.Error) as e:
                log.warning("could not publish the recovery's completion, retrying: %s", e)
                await asyncio.sleep(1.0)
        m.RECOVERY_WAITING.set(0)
        log.info(
            "reconstructed the ledger secrets (%d generation(s)) from the shares of %s; replaying the history",
            len(secrets.generations),
            ", ".join(mid[:16] for mid in members),
        )
