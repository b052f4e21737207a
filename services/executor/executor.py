"""The executor process: reads the ledger stream, runs the ledger machine, signs, publishes.

It also bootstraps the node: creates the service at genesis, asks to join an existing service,
endorses joining nodes with the service key and hands them the ledger secrets.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats.errors
import nats.js.errors
from aiohttp import web
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from conclavium import node_messages, recovery, rules, streams
from conclavium.attestation.providers import ProviderError, sealing_from_config
from conclavium.block import (
    ClockSig,
    CommitSig,
    Entry,
    IntakeBatch,
    clock_statement,
    encode,
    entry_id,
    statement,
)
from conclavium.chain import ChainError
from conclavium.crypto.keys import PublicKey
from conclavium.encoding import b64e, loads, pack
from conclavium.governance import recovery as gov_recovery
from conclavium.identity import node_certificate, sign_tx_key
from conclavium.ledger_files import chunk_files
from conclavium.runtime import connect_nats, health_routes, now_ms, serve_http

from . import commit_rule, node_auth
from . import metrics as m
from .apps import default_apps
from .attest import local_evidence
from .enclave import Generation, LedgerSecrets, NodeKeys, SealedStore
from .ledger_machine import NODES, REKEY, BlockOutcome, LedgerMachine, NeedSecrets, UnsupportedRules
from .persistence import LedgerStore
from .queries import QueryHandler
from .quorum_party import PartyEndpoint
from .receipt_index import ReceiptIndex
from .recovery import RecoverySession
from .recovery_entries import share_set_of, share_set_wanted
from .sawtooth_tp import TpRouter
from .sealed_openers import SealedOpenerPool
from .tables import AppUnavailable
from .verifier import BatchVerifier

log = logging.getLogger("conclavium.executor")

ENDORSE_GRACE_S = 5.0
JOIN_RETRY_S = 5.0
# Clock signatures (ledger_clock.py): at most one per CLOCK_MIN_INTERVAL_S rides with commit
# signatures; a node that signed nothing for CLOCK_HEARTBEAT_S sends one alone, so the ledger's
# reference time stays fresh while the ledger is idle.
CLOCK_MIN_INTERVAL_S = 0.2
CLOCK_HEARTBEAT_S = 2.0
CLAMP_LOG_INTERVAL_S = 60.0
UNSUPPORTED_RULES_RETRY_S = 5.0
APP_UNAVAILABLE_RETRY_S = 0.5  # a Sawtooth TP registering is enough to go on
CONSUMER_STALL_S = 5.0  # clock heartbeats enter the stream every 2 s: 5 s of nothing is a dead consumer


@dataclass
class ExecutorConfig:
    ledger: str
    name: str
    data_dir: Path
    nats_url: str
    genesis: Path | None = None
    http_host: str = "127.0.0.1"
    http_port: int = 9100
    verify_threads: int = 2
    max_batch: int = 64
    stream_replicas: int = 1
    tee: str = "virtual"
    attestation_url: str = ""
    virtual_measurement: str = ""
    snapshot_every: int = 100_000
    open_workers: int = 1
    blocks_per_chunk: int = 10_000
    rules_versions: frozenset[int] = rules.IMPLEMENTED  # rules versions this executor runs
    recover: bool = False  # every executor is lost: recover the ledger with the members' shares
    sawtooth_tp: str = ""  # ZeroMQ endpoint this node's Sawtooth TPs connect to (sawtooth_tp.py); "": none
    quorum_host: str = "127.0.0.1"  # the member's Quorum party endpoint (quorum_party.py), TLS ending here
    quorum_port: int = 0  # 0: none


class Executor:
    def __init__(self, cfg: ExecutorConfig) -> None:
        self.cfg = cfg
        # Sealed to this enclave; on TDX nothing is persisted and the node joins again (new keys).
        self.sealed = SealedStore(cfg.data_dir, cfg.ledger, sealing_from_config(cfg.tee, cfg.data_dir))
        if not self.sealed.persistent and chunk_files(cfg.data_dir / "ledger"):
            raise RuntimeError(
                f"--tee {cfg.tee} has no sealing key, so this node's keys did not survive its restart and "
                f"it cannot resume from the ledger files in {cfg.data_dir}: start it on an empty data "
                "directory, it joins again as a new node (see docs/confidentiality.md)"
            )
        self.keys = NodeKeys.load_or_create(self.sealed)
        self.verifier = BatchVerifier(cfg.verify_threads)
        self.store = LedgerStore(cfg.data_dir, cfg.blocks_per_chunk)
        self.sawtooth = TpRouter(cfg.sawtooth_tp) if cfg.sawtooth_tp else None
        self.machine = LedgerMachine(
            cfg.ledger,
            self.verifier,
            ReceiptIndex(cfg.data_dir / "receipts.sqlite"),
            secrets=LedgerSecrets.load(self.sealed, self.keys.id),
            node_keys=self.keys,
            openers=SealedOpenerPool(cfg.open_workers),
            rules_versions=cfg.rules_versions,
            apps=default_apps(self.sawtooth),
        )
        self.awaiting_secrets: str | None = None
        self.recovery: RecoverySession | None = None  # while recovering (--recover), recovery.py
        self.node_info_cached: node_messages.NodeInfo | None = None
        self.last_share_issue = 0.0
        self.unsupported_rules: str | None = None  # why this node stopped before a block
        self.app_unavailable: str | None = None  # an application cannot run the next block here now
        self._sig_tasks: set[asyncio.Task[None]] = set()
        self.last_rekey = 0.0
        self.stopping = asyncio.Event()
        self.pending_digests: list[tuple[int, str]] = []
        self.signed: set[int] = set()
        self.pending_in_stream = 0
        self.stream_checked = False
        self.trusted_seen: dict[str, float] = {}
        self.last_join = 0.0
        self._clock_sent = 0.0
        self._clamp_logged = 0.0
        self.queries = QueryHandler(self)
        self.party = PartyEndpoint(self) if cfg.quorum_port else None
        self.nc: Any = None
        self.js: Any = None

    @property
    def node_id(self) -> str:
        return self.keys.id

    @property
    def secrets(self) -> LedgerSecrets | None:
        """The ledger secrets live in the ledger machine, which receives and rotates them."""
        return self.machine.secrets

    def caught_up(self) -> bool:
        return self.stream_checked and self.pending_in_stream == 0

    def ready(self) -> tuple[bool, str]:
        if self.machine.fork_reason:
            return False, f"fork_detected: {self.machine.fork_reason}"
        if self.unsupported_rules:
            return False, f"unsupported_rules: {self.unsupported_rules}"
        if self.recovery is not None:
            return False, self.recovery.reason()
        if not self.machine.genesis_done:
            return False, "waiting for genesis"
        if self.awaiting_secrets:
            return False, "waiting for the ledger secrets (join pending or not yet endorsed)"
        if not self.is_signer():
            return False, "not yet a trusted node endorsed by the service and by its member"
        if not self.caught_up():
            return False, "catching up"
        problem = self.machine.quorum_problem()
        if problem is not None:
            return False, f"quorum_unreachable: {problem}"
        return True, "ok"

    def my_member(self) -> str | None:
        return self.machine.signer_members().get(self.node_id)

    def is_signer(self) -> bool:
        """Trusted, holding the secrets, and endorsed by an active member at the ledger's time."""
        return bool(self.secrets) and self.node_id in self.machine.signer_members()

    # --- process life ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        self.nc = await connect_nats(self.cfg.nats_url, f"executor-{self.cfg.name}")
        self.js = self.nc.jetstream(timeout=10)
        await streams.ensure_streams(self.js, self.cfg.ledger, self.cfg.stream_replicas)
        app = web.Application()
        health_routes(app, self.ready)
        runner = await serve_http(app, self.cfg.http_host, self.cfg.http_port)
        await self.nc.subscribe(
            streams.query_subject(self.cfg.ledger), queue=streams.EXECUTOR_QUEUE, cb=self.queries.handle
        )
        await self.nc.subscribe(streams.node_query_subject(self.cfg.ledger, self.cfg.name), cb=self.queries.handle)
        await self.nc.subscribe(streams.every_executor_subject(self.cfg.ledger), cb=self.queries.handle)
        log.info("executor %s node %s starting", self.cfg.name, self.node_id[:16])
        t0 = time.perf_counter()
        replayed = await self.store.load(self.machine, self._secret_map())
        log.info(
            "restored height %d (%d blocks replayed from local chunks) in %.2fs",
            self.machine.tip.height,
            replayed,
            time.perf_counter() - t0,
        )
        self._last_snapshot_bucket = self.machine.entries_executed // max(1, self.cfg.snapshot_every)
        if self.machine.genesis_done:
            self._governance_gauges()  # proposals and attestation drift as restored, before new blocks
        consume = asyncio.create_task(self._consume())
        tick = asyncio.create_task(self._ticker())
        await stop.wait()
        self.stopping.set()
        tick.cancel()
        try:
            await asyncio.wait_for(consume, 5.0)
        except (TimeoutError, asyncio.CancelledError, Exception):
            log.warning("consumer did not stop in time")
        self.store.close()
        self.machine.index.close()
        if self.machine.openers is not None:
            self.machine.openers.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.nc.drain(), 3.0)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(runner.cleanup(), 3.0)
        if self.party is not None:
            await self.party.close()
        self.verifier.close()
        log.info("executor %s stopped at height %d, ledger flushed", self.cfg.name, self.machine.tip.height)

    def _secret_map(self) -> dict[str, bytes]:
        if self.secrets is None:
            return {}
        return self.secrets.secret_map()

    async def _ticker(self) -> None:
        """Level-triggered bootstrap duties, so a lost message or a restart is never final."""
        while True:
            await asyncio.sleep(0.5)
            self._collect_snapshot()
            await self._clock_heartbeat()
            if self.party is not None and self.is_signer() and self.secrets is not None:
                try:
                    await self.party.ensure(self.secrets.service_key, self.secrets.service_cert)
                except (OSError, ssl.SSLError, ValueError) as e:  # a busy port: retried next tick
                    log.warning("quorum party endpoint not started: %s", e)
            if self.machine.genesis_done:
                # Also between blocks: a ledger whose time stopped (clock signatures withheld, no
                # quorum running) shows as a growing negative offset, not as a stale gauge.
                m.LEDGER_TIME_OFFSET.set((self.machine.tip.ts_ms - now_ms()) / 1000)
            try:
                if not self.stream_checked:
                    info = await self.js.stream_info(streams.ledger_stream(self.cfg.ledger))
                    self.pending_in_stream = max(0, info.state.last_seq - self.machine.tip.seq)
                    self.stream_checked = True
                await self._bootstrap()
            except (TimeoutError, nats.errors.Error) as e:
                log.warning("bootstrap step failed: %s", e)

    async def _consume(self) -> None:
        """Read the stream from after the restored tip; returns between batches once stopping."""
        subject = streams.ledger_subject(self.cfg.ledger)
        while not self.stopping.is_set():
            try:
                # An ephemeral pull consumer without acks, started after the restored tip: pulling
                # in batches avoids the flow-control stalls of push delivery, and on any error it
                # is simply created again from the new tip.
                sub = await self.js.pull_subscribe(
                    subject,
                    stream=streams.ledger_stream(self.cfg.ledger),
                    config=ConsumerConfig(
                        deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                        opt_start_seq=self.machine.tip.seq + 1,
                        ack_policy=AckPolicy.NONE,
                        inactive_threshold=30.0,
                        mem_storage=True,
                    ),
                )
                batch: list[Any] = []
                seen, quiet_since = self.machine.tip.seq, time.monotonic()
                while not self.stopping.is_set():
                    # Pipeline: while this batch executes, the next one is fetched and its
                    # signatures verified on the thread pool.
                    ahead = asyncio.create_task(self._fetch_and_verify(sub))
                    if batch and not await self._process(batch):
                        ahead.cancel()
                        break
                    try:
                        batch = await ahead
                    except (nats.js.errors.ServiceUnavailableError, nats.errors.ConnectionClosedError):
                        log.warning("ledger consumer lost (NATS restarting?); recreating it after the tip")
                        break
                    if batch:
                        seen, quiet_since = batch[-1].metadata.sequence.stream, time.monotonic()
                    elif time.monotonic() - quiet_since > CONSUMER_STALL_S:
                        quiet_since = time.monotonic()
                        if await self._stream_beyond(seen):
                            m.CONSUMER_STALLS.inc()
                            log.warning(
                                "ledger consumer delivered nothing for %.0fs while the stream holds more "
                                "than sequence %d; recreating it after the tip",
                                CONSUMER_STALL_S,
                                seen,
                            )
                            break
                    if not batch and self._must_recover():
                        break
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
                if self._must_recover() and not self.stopping.is_set():
                    await self._recover()
                elif self.awaiting_secrets and not self.stopping.is_set():
                    await self._wait_for_secrets()
                if self.unsupported_rules and not self.stopping.is_set():
                    await asyncio.sleep(UNSUPPORTED_RULES_RETRY_S)  # nothing changes until an upgrade
                if self.app_unavailable and not self.stopping.is_set():
                    await asyncio.sleep(APP_UNAVAILABLE_RETRY_S)
            except asyncio.CancelledError:
                raise
            except (TimeoutError, nats.errors.Error) as e:
                log.warning("ledger consumer unavailable (%s); retrying", type(e).__name__)
                await asyncio.sleep(0.5)
            except Exception as e:
                log.exception("ledger consumer failed, resubscribing: %s", e)
                await asyncio.sleep(0.5)

    async def _stream_beyond(self, seen: int) -> bool:
        """Whether the ledger stream holds messages after `seen`, by its leader's account. A consumer
        created while a server that then died was answering for the stream can stay silent without
        an error (seen after the last original server of a rebuilt cluster went): this finds it."""
        try:
            info = await self.js.stream_info(streams.ledger_stream(self.cfg.ledger))
        except (TimeoutError, nats.errors.Error):
            return False  # no leader to ask: the consumer cannot be blamed yet
        self.pending_in_stream = max(0, info.state.last_seq - seen)
        return info.state.last_seq > seen

    async def _fetch_and_verify(self, sub: Any) -> list[Any]:
        try:
            msgs = await sub.fetch(self.cfg.max_batch, timeout=0.5)
        except (nats.errors.TimeoutError, TimeoutError):
            return []
        await self.machine.preverify_blocks([m.data for m in msgs])
        return list(msgs)

    async def _process(self, msgs: list[Any]) -> bool:
        """Apply a batch of stream messages; False when it had to stop for missing secrets."""
        outcomes: list[BlockOutcome] = []
        paused = False
        for msg in msgs:
            seq = msg.metadata.sequence.stream
            self.pending_in_stream = msg.metadata.num_pending
            self.stream_checked = True
            if seq <= self.machine.tip.seq:
                continue
            t0 = time.perf_counter()
            try:
                _, out = await self.machine.apply(msg.data, seq)
            except UnsupportedRules as e:
                if self.unsupported_rules is None:
                    log.error("stopped before the block at stream sequence %d: %s; not signing", seq, e)
                self.unsupported_rules = str(e)
                m.RULES_UNSUPPORTED.set(1)
                paused = True
                break
            except AppUnavailable as e:
                if self.app_unavailable is None:
                    log.error("stopped before the block at stream sequence %d: %s; not signing", seq, e)
                self.app_unavailable = str(e)
                m.APP_UNAVAILABLE.set(1)
                paused = True
                break
            except NeedSecrets as e:
                self.awaiting_secrets = str(e)
                log.info("block at stream sequence %d needs ledger secrets this node does not hold yet", seq)
                paused = True
                break
            except ChainError as e:
                m.REJECTED_BLOCKS.labels(e.reason).inc()
                self.machine.tip.seq = seq
                log.error("refused block at stream sequence %d: %s", seq, e)
                continue
            self.unsupported_rules = None
            m.RULES_UNSUPPORTED.set(0)
            if self.app_unavailable is not None:
                log.info("the block at stream sequence %d ran: %s no longer", seq, self.app_unavailable)
                self.app_unavailable = None
                m.APP_UNAVAILABLE.set(0)
            self.store.append(self.machine.tip.height, seq, msg.data)
            m.BLOCK_SECONDS.observe(time.perf_counter() - t0)
            m.BLOCKS.inc()
            outcomes.append(out)
            self._maybe_snapshot()
        self.store.flush()
        self.machine.index.flush()
        self._collect_snapshot()
        if self.machine.secrets_changed and self.secrets is not None:
            self.secrets.save(self.sealed, self.node_id)
            self.machine.secrets_changed = False
        if outcomes:
            await self._after_blocks(outcomes)
        if self.pending_digests and self.is_signer():
            await self._publish_digests()
        return not paused

    async def _wait_for_secrets(self) -> None:
        """A joining node cannot execute sealed transactions before its endorsement, which comes
        later in the ledger: scan ahead from the tip (following the hash chain, decoding only) for
        an endorsement of this node that `node_auth.JoinScan` accepts (signed by a trusted node,
        in a block a commit quorum signed, service key matching the certificate), take its
        secrets, then resume executing where it stopped. Rekeys are taken later, in order."""
        await self._bootstrap(force_join=True)
        machine = self.machine
        cert = machine.service_certificate()
        if cert is None:
            return
        start = machine.tip.seq + 1
        scan = node_auth.JoinScan(
            self.cfg.ledger,
            machine.tip,
            self.keys,
            machine.trusted_node_keys(),
            machine.quorum(),
            cert,
            machine.signer_keys(),
            machine.signer_members(),
            machine.member_threshold(),
        )
        found: LedgerSecrets | None = None
        sub = await self.js.subscribe(
            streams.ledger_subject(self.cfg.ledger),
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start),
            idle_heartbeat=2.0,
        )
        try:
            while found is None and not self.stopping.is_set():
                try:
                    msg = await sub.next_msg(timeout=1.0)
                except nats.errors.TimeoutError:
                    await self._bootstrap(force_join=True)
                    continue
                found = scan.feed(msg.data)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        if found is None:
            return
        machine.receive_secrets(found)
        found.save(self.sealed, self.node_id)
        self.awaiting_secrets = None
        await self.store.resume(machine)
        log.info(
            "received the ledger secrets (endorsement committed by height %d); resuming at stream sequence %d",
            scan.tip.height,
            start,
        )

    def _must_recover(self) -> bool:
        """--recover and no secrets: once the replay stopped for them or reached the stream's end."""
        if not self.cfg.recover or self.secrets is not None or not self.machine.genesis_done:
            return False
        return bool(self.awaiting_secrets) or self.caught_up()

    async def _recover(self) -> None:
        """Every executor is lost: get the ledger secrets from k members' shares (recovery.py),
        then replay the rest of the local chunks with them; the stream follows."""
        self.recovery = RecoverySession(self)
        log.warning(
            "recovery: replayed the public prefix to height %d; scanning for the share set", self.machine.tip.height
        )
        try:
            secrets = await self.recovery.run(self.stopping)
        finally:
            if self.stopping.is_set():
                self.recovery = None
        if secrets is None:
            return
        self.awaiting_secrets = None
        t0 = time.perf_counter()
        replayed = await self.store.resume(self.machine)
        self.recovery = None
        log.info(
            "recovery: replayed %d blocks from local chunks with the secrets in %.2fs",
            replayed,
            time.perf_counter() - t0,
        )

    async def _issue_recovery_shares(self) -> None:
        """Whenever the share set in the ledger no longer matches the members holding encryption
        keys, the threshold or the generations of secrets, the lowest-id signer (the others after
        a grace period) issues a new one (conclavium/recovery.py)."""
        state = self.machine.state
        wanted = share_set_wanted(state)
        stale = wanted is not None and share_set_of(gov_recovery.share_set(state)) != wanted
        m.RECOVERY_SET_STALE.set(1 if stale else 0)
        if not stale or self.secrets is None or wanted is None:
            return
        threshold, generations, holders = wanted
        if any(self.secrets.by_id(g) is None for g in generations):
            return
        signers = sorted(self.machine.trusted_node_keys())
        now = time.monotonic()
        if now - self.last_share_issue < ENDORSE_GRACE_S * (1 if signers[0] == self.node_id else 2):
            return
        if self.last_share_issue == 0.0 and signers[0] != self.node_id:
            self.last_share_issue = now
            return
        self.last_share_issue = now
        keys = {mid: bytes.fromhex(enc) for mid, (_, enc) in holders.items()}
        issued = await asyncio.to_thread(recovery.issue, self.secrets.to_bytes(), self.cfg.ledger, keys, threshold)
        msg = node_messages.RecoveryShares(
            v=node_messages.NODE_MSG_VERSION,
            ledger=self.cfg.ledger,
            ts=now_ms(),
            sender=self.node_id,
            id=issued.id,
            threshold=threshold,
            generations=generations,
            wrapped=issued.wrapped,
            shares={mid: {**share, "public_key": holders[mid][0]} for mid, share in issued.shares.items()},
        )
        entry = node_messages.make_entry(msg, self.keys.signing)
        await self._publish_intake(IntakeBatch(entries=[entry]), f"recovery-shares:{issued.id}")
        log.info("issued recovery share set %s (%d of %d members)", issued.id[:16], threshold, len(holders))

    def _maybe_snapshot(self) -> None:
        """Snapshot when the executed-entry count crosses a multiple of `snapshot_every`: every
        executor crosses it at the same height, so their digests can be compared in the ledger."""
        bucket = self.machine.entries_executed // max(1, self.cfg.snapshot_every)
        secret = self.machine.snapshot_secret()
        if bucket == self._last_snapshot_bucket or secret is None:
            return
        self._last_snapshot_bucket = bucket
        if not self.store.start_snapshot(self.machine, secret):
            log.warning("snapshot at %d skipped: the previous one is still being written", self.machine.tip.height)

    def _collect_snapshot(self) -> None:
        done = self.store.poll_snapshot()
        if done is not None:
            self.pending_digests.append(done)
            log.info("snapshot at height %d, digest %s", done[0], done[1][:16])

    async def _publish_digests(self) -> None:
        digests, self.pending_digests = self.pending_digests, []
        entries = [
            node_messages.make_entry(
                node_messages.SnapshotDigest(
                    v=node_messages.NODE_MSG_VERSION,
                    ledger=self.cfg.ledger,
                    ts=now_ms(),
                    sender=self.node_id,
                    height=h,
                    digest=d,
                ),
                self.keys.signing,
            )
            for h, d in digests
        ]
        try:
            await self._publish_intake(IntakeBatch(entries=entries), f"snap:{self.node_id}:{digests[-1][0]}")
        except (TimeoutError, nats.errors.Error) as e:
            log.warning("could not publish snapshot digests, will retry: %s", e)
            self.pending_digests = digests + self.pending_digests

    async def _after_blocks(self, outcomes: list[BlockOutcome]) -> None:
        committed: list[list[Any]] = []
        invalid: list[list[Any]] = []
        now = now_ms()
        for out in outcomes:
            if out.clamped:
                m.BLOCK_TIME_CLAMPED.labels(out.clamped).inc()
                self._log_clamp(out)
            for eid, code, message in out.invalid:
                invalid.append([eid, code, message])
                m.TX_INVALID.labels(code).inc()
            for rec in out.committed:
                committed.append([rec.height, [e for e, _ in rec.leaves]])
                m.TX_COMMITTED.inc(len(rec.leaves))
                m.LAST_SIGNERS.set(len(rec.signatures))
                m.COMMIT_DELAY.observe(max(0, now - rec.ts_ms) / 1000)
            if out.endorsed:
                self.signed.clear()
            for g in out.governance:
                if g.msg_type == "ballot":
                    m.GOV_BALLOTS.inc()
            if out.governance or out.expired:
                self._governance_gauges()
            if out.fork:
                log.critical("fork detected: %s; this node stops signing", out.fork)
                m.FORK.set(1)
        machine = self.machine
        m.EXECUTED_HEIGHT.set(machine.tip.height)
        m.RULES_VERSION.set(machine.rules_version())
        m.COMMITTED_HEIGHT.set(machine.committed_height)
        m.LAG.set(self.pending_in_stream)
        if machine.genesis_done:
            m.LEDGER_TIME_OFFSET.set((machine.tip.ts_ms - now) / 1000)
        m.TRUSTED_NODES.set(len(machine.trusted_node_keys()))
        m.QUORUM.set(machine.quorum())
        signers = machine.signer_members()
        signing = commit_rule.signing_nodes(machine.last_signed, machine.signer_keys())
        m.SIGNING_NODES.set(len(signing))
        m.SIGNING_MEMBERS.set(len({signers[n] for n in signing if n in signers}))
        m.MEMBER_THRESHOLD.set(machine.member_threshold())
        m.QUORUM_UNREACHABLE.set(0 if machine.quorum_problem() is None else 1)
        if committed or invalid:
            await self.nc.publish(
                streams.status_subject(self.cfg.ledger),
                pack(
                    {
                        "c": committed,
                        "i": invalid,
                        "n": self.cfg.name,
                        "x": machine.tip.height,
                        "h": machine.committed_height,
                    }
                ),
            )
        await self._sign_uncommitted()

    def _governance_gauges(self) -> None:
        counts = dict.fromkeys(("Open", "Accepted", "Rejected", "Withdrawn", "Expired", "Failed"), 0)
        for _, p in self.machine.state.items("public:gov.proposals"):
            counts[p["state"]] = counts.get(p["state"], 0) + 1
        for state, n in counts.items():
            m.GOV_PROPOSALS.labels(state).set(n)
        drifted = self.machine.attestation_drift()
        if drifted:
            log.warning("attestation drift: trusted node(s) %s no longer meet the node policy", ", ".join(drifted))
        m.ATTESTATION_DRIFT.set(len(drifted))
        m.RULES_VERSION.set(self.machine.rules_version())

    async def _sign_uncommitted(self) -> None:
        if self.machine.fork_reason or self.unsupported_rules or not self.is_signer():
            return
        sigs = []
        for rec in self.machine.uncommitted.values():
            if rec.height in self.signed or self.node_id in rec.signatures:
                continue
            ts = rec.signed_time()
            stmt = statement(self.cfg.ledger, rec.height, rec.hash, rec.root, rec.quorum, ts)
            sig = self.keys.signing.sign(stmt)
            sigs.append(CommitSig(self.node_id, rec.height, rec.hash, rec.root, rec.quorum, sig, ts))
            self.signed.add(rec.height)
        if sigs:
            clocks = []
            if time.monotonic() - self._clock_sent >= CLOCK_MIN_INTERVAL_S:
                clocks.append(self._sign_clock())
                m.CLOCKS_SIGNED.labels("with_commit").inc()
            task = asyncio.create_task(self._publish_sigs(sigs, clocks))
            self._sig_tasks.add(task)
            task.add_done_callback(self._sig_tasks.discard)
        if len(self.signed) > 100_000:
            self.signed = {h for h in self.signed if h in self.machine.uncommitted}

    async def _publish_sigs(self, sigs: list[CommitSig], clocks: list[ClockSig]) -> None:
        """Off the block path: a publish stuck in a NATS outage must not stall execution. A failed
        one is forgotten, so the next batch signs those heights again."""
        try:
            await self._publish_intake(
                IntakeBatch(sigs=sigs, clocks=clocks), f"sig:{self.node_id}:{sigs[-1].height}", timeout=2.0
            )
        except (TimeoutError, nats.errors.Error) as e:
            log.warning("could not publish commit signatures, will sign again: %s", type(e).__name__)
            for s in sigs:
                self.signed.discard(s.height)
            if clocks:
                self._clock_sent = 0.0

    def _sign_clock(self) -> ClockSig:
        """This node's clock, signed, for the ledger's time bound (ledger_clock.py)."""
        self._clock_sent = time.monotonic()
        clock = now_ms()
        signature = self.keys.signing.sign(clock_statement(self.cfg.ledger, self.node_id, clock))
        return ClockSig(self.node_id, clock, signature)

    async def _clock_heartbeat(self) -> None:
        """A signer that published no clock for CLOCK_HEARTBEAT_S sends one alone."""
        if self.machine.fork_reason or self.unsupported_rules or not self.is_signer():
            return
        if time.monotonic() - self._clock_sent < CLOCK_HEARTBEAT_S:
            return
        clock = self._sign_clock()
        try:
            await self._publish_intake(
                IntakeBatch(clocks=[clock]), f"clock:{self.node_id}:{clock.clock_ms}", timeout=2.0
            )
            m.CLOCKS_SIGNED.labels("heartbeat").inc()
        except (TimeoutError, nats.errors.Error) as e:
            self._clock_sent = 0.0
            log.warning("could not publish a clock heartbeat, will retry: %s", type(e).__name__)

    def _log_clamp(self, out: BlockOutcome) -> None:
        now = time.monotonic()
        if now - self._clamp_logged >= CLAMP_LOG_INTERVAL_S:
            self._clamp_logged = now
            log.warning(
                "block %d was dated %s of the executors' signed clocks by more than clock_tolerance_ms; "
                "executed at the bound (is the sequencer's clock wrong?)",
                out.height,
                out.clamped,
            )

    async def _publish_intake(self, batch: IntakeBatch, msg_id: str, timeout: float = 5.0) -> None:
        if not self.nc.is_connected:
            raise nats.errors.ConnectionClosedError
        await self.js.publish(
            streams.intake_subject(self.cfg.ledger), encode(batch), headers={"Nats-Msg-Id": msg_id}, timeout=timeout
        )

    # --- bootstrap: genesis, join, endorse ------------------------------------------------------

    def _evidence(self) -> dict[str, Any]:
        bound = node_messages.bound_keys(self.keys.signing.public_key.spki, self.keys.encryption_public)
        return local_evidence(bound, self.cfg.tee, self.cfg.attestation_url, self.cfg.virtual_measurement)

    def _node_info(self) -> node_messages.NodeInfo:
        return node_messages.NodeInfo(
            id=self.node_id,
            signing_key=self.keys.signing.public_key.pem,
            encryption_key=self.keys.encryption_public.hex(),
            evidence=self._evidence(),
            name=self.cfg.name,
        )

    async def _bootstrap(self, force_join: bool = False) -> None:
        if self.cfg.recover and self.secrets is None:
            return  # a recovering node does not join: the members' shares make it trusted
        if not self.caught_up() and not force_join:
            return
        machine = self.machine
        genesis_file = self.cfg.data_dir / "genesis_entry.bin"
        if not machine.genesis_done:
            if self.cfg.genesis is None:
                return
            if self.secrets is None and machine.tip.height == 0:
                try:
                    self._create_genesis(genesis_file)
                except ProviderError as e:
                    log.error("cannot produce this node's genesis evidence, will retry: %s", e)
                    return
            if genesis_file.exists():
                raw = genesis_file.read_bytes()
                entry = Entry(2, raw[64:], raw[:64])
                await self._publish_intake(IntakeBatch(entries=[entry]), f"genesis:{entry_id(entry).hex()}")
            return
        row = machine.state.get(NODES, self.node_id)
        if row is None:
            if time.monotonic() - self.last_join > JOIN_RETRY_S:
                self.last_join = time.monotonic()
                try:
                    # Evidence and its collateral (a blocking device call and HTTP fetch) off the loop.
                    info = await asyncio.to_thread(self._node_info)
                except ProviderError as e:
                    log.error("cannot produce this node's join evidence, will retry: %s", e)
                    return
                msg = node_messages.Join(
                    v=node_messages.NODE_MSG_VERSION, ledger=self.cfg.ledger, ts=now_ms(), node=info
                )
                entry = node_messages.make_entry(msg, self.keys.signing)
                await self._publish_intake(IntakeBatch(entries=[entry]), f"join:{entry_id(entry).hex()}")
                log.info("asked to join the ledger as node %s", self.node_id[:16])
            return
        if self.is_signer():
            await self._endorse_waiting_nodes()
            await self._rekey_if_requested()
            await self._issue_recovery_shares()

    def _create_genesis(self, path: Path) -> None:
        assert self.cfg.genesis is not None
        config = loads(self.cfg.genesis.read_bytes())
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        secrets = LedgerSecrets.create(self.cfg.ledger, now)
        node_cert = node_certificate(secrets.service_key, secrets.service_cert, self.keys.signing.public_key, now)
        msg = node_messages.Genesis(
            v=node_messages.NODE_MSG_VERSION,
            ledger=self.cfg.ledger,
            ts=now_ms(),
            node=self._node_info(),
            service_cert=secrets.service_cert,
            node_cert=node_cert,
            config=config,
            tx_key=sign_tx_key(secrets.service_key, self.cfg.ledger, secrets.current.id, secrets.current.tx_public),
        )
        entry = node_messages.make_entry(msg, self.keys.signing)
        secrets.save(self.sealed, self.node_id)
        path.write_bytes(entry.signature + entry.data)
        self.machine.secrets = secrets
        log.info("created the service identity and the genesis entry")

    async def _endorse_waiting_nodes(self) -> None:
        """Endorse trusted nodes that have no certificate yet. The node with the lowest id does it
        at once, the others after a grace period, so a dead endorser does not block joins."""
        assert self.secrets is not None
        signers = sorted(self.machine.trusted_node_keys())
        now = time.monotonic()
        for nid, row in list(self.machine.state.items(NODES)):
            if row["status"] != "Trusted" or row.get("cert"):
                self.trusted_seen.pop(nid, None)
                continue
            first = self.trusted_seen.setdefault(nid, now)
            if now < first or (signers[0] != self.node_id and now - first < ENDORSE_GRACE_S):
                continue
            node_key = PublicKey.load(row["signing_key"])
            cert = node_certificate(
                self.secrets.service_key,
                self.secrets.service_cert,
                node_key,
                dt.datetime.now(dt.UTC).replace(microsecond=0),
            )
            wrapped = self.secrets.wrap(
                bytes.fromhex(row["encryption_key"]), node_messages.secrets_context(self.cfg.ledger, nid)
            )
            msg = node_messages.Endorse(
                v=node_messages.NODE_MSG_VERSION,
                ledger=self.cfg.ledger,
                ts=now_ms(),
                sender=self.node_id,
                node=nid,
                cert=cert,
                wrapped_secrets=b64e(wrapped),
            )
            entry = node_messages.make_entry(msg, self.keys.signing)
            await self._publish_intake(IntakeBatch(entries=[entry]), f"endorse:{nid}:{self.node_id}")
            self.trusted_seen[nid] = now + 10.0  # do not resend for a while
            log.info("endorsed node %s", nid[:16])

    async def _rekey_if_requested(self) -> None:
        """After an accepted rotate_ledger_secret: the lowest-id signer (others after a grace
        period) creates the next generation inside this TEE and seals a share to every trusted node."""
        pending = self.machine.state.get(REKEY, "pending")
        if pending is None or self.secrets is None:
            return
        signers = sorted(self.machine.trusted_node_keys())
        now = time.monotonic()
        if now - self.last_rekey < ENDORSE_GRACE_S * (1 if signers[0] == self.node_id else 2):
            return
        if self.last_rekey == 0.0 and signers[0] != self.node_id:
            self.last_rekey = now
            return
        self.last_rekey = now
        gen = Generation.create()
        # Trusted nodes still waiting for their endorsement get a share too: the ring their
        # endorsement carries may have been sealed before this generation existed.
        nodes = {
            nid: row
            for nid, row in self.machine.state.items(NODES)
            if row["status"] == "Trusted" and row.get("encryption_key")
        }
        shares = {
            nid: gen.seal_share(self.cfg.ledger, nid, bytes.fromhex(row["encryption_key"]))
            for nid, row in nodes.items()
        }
        msg = node_messages.Rekey(
            v=node_messages.NODE_MSG_VERSION,
            ledger=self.cfg.ledger,
            ts=now_ms(),
            sender=self.node_id,
            proposal=str(pending.get("proposal_id")),
            generation=gen.id,
            tx_key=sign_tx_key(self.secrets.service_key, self.cfg.ledger, gen.id, gen.tx_public),
            shares=shares,
        )
        entry = node_messages.make_entry(msg, self.keys.signing)
        await self._publish_intake(IntakeBatch(entries=[entry]), f"rekey:{gen.id}")
        log.info("proposed ledger secret generation %s", gen.id)
