"""The sequencer: drains the intake stream into hash-chained blocks on the ledger stream.

Several replicas run; the one holding the lease in the sequencer KV bucket orders, the others
watch the lease and take over when it lapses (`lease.py`). A replica that cannot renew stops
appending before anyone else may start.

It is untrusted: it can delay or drop, but executors check the chain and every signature. Each
append names the stream sequence it expects to follow (`Nats-Expected-Last-Sequence`), so two
sequencers can never fork the log; a refused append makes it re-read the stream tail with the
same chain rule the executors use. Intake messages are acknowledged only once the block holding
them is durable, so a crash re-delivers them and executors drop the duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import msgspec
import nats.errors
from aiohttp import web
from nats.js.api import AckPolicy, ConsumerConfig, KeyValueConfig, StorageType
from nats.js.errors import APIError, BucketNotFoundError, KeyNotFoundError, NotFoundError

from conclavium import streams
from conclavium.block import BLOCK_VERSION, Block, ClockSig, CommitSig, Entry, block_hash, decode_intake, encode
from conclavium.chain import ChainError, Tip, next_block
from conclavium.encoding import pack, unpack
from conclavium.runtime import connect_nats, health_routes, now_ms, serve_http

from . import metrics as m
from .lease import Lease

log = logging.getLogger("conclavium.sequencer")

WRONG_LAST_SEQUENCE = 10071
TIP_KEY = "tip"
TIP_SAVE_INTERVAL_S = 1.0
CONSUMER = "sequencer"
# Taking over the intake consumer (delete, create) waits at first this long, doubling after each
# timeout up to the JetStream timeout: when a NATS server of the cluster is lost its peers elect
# new leaders within seconds, and a first attempt that waited the full 10 s would keep the ledger
# from ordering for those 10 s; a slow but healthy cluster still gets the full 10 s in the end.
CONTROL_TIMEOUT_S = (1.0, 10.0)
BUCKET_PATIENCE_S = 60.0  # how long start-up waits for the sequencer bucket to answer
REPLICA_CHECK_S = 5.0  # how often every replica samples the streams' replicas for the metrics


@dataclass
class SequencerConfig:
    ledger: str
    name: str
    nats_url: str
    http_host: str = "127.0.0.1"
    http_port: int = 9200
    block_interval_ms: float = 5.0
    fill_above_entries: int = 200
    max_block_entries: int = 4000
    max_block_bytes: int = 900_000
    fetch_batch: int = 256
    stream_replicas: int = 1
    lease_ttl_s: float = 2.0
    ignore_lease: bool = False


class LeaseLost(Exception):
    """This replica may no longer append: another one may already be ordering."""


class Sequencer:
    def __init__(self, cfg: SequencerConfig) -> None:
        self.cfg = cfg
        self.tip = Tip()
        self._tip_saved_at = 0.0
        self._last_block_entries = 0
        self.active = False
        self.nc: Any = None
        self.js: Any = None
        self.kv: Any = None
        self.lease: Lease | None = None
        self._led_term = 0
        self._wake = asyncio.Event()
        self._control_timeout_s = CONTROL_TIMEOUT_S[0]

    def ready(self) -> tuple[bool, str]:
        if self.nc is None or not self.nc.is_connected:
            return False, "not connected to NATS"
        return True, "active" if self.active else "standby"

    def may_append(self) -> bool:
        return self.cfg.ignore_lease or (self.lease is not None and self.lease.valid())

    def _set_active(self, active: bool) -> None:
        if active != self.active:
            log.info("sequencer %s is now %s", self.cfg.name, "active" if active else "standby")
        self.active = active
        m.ACTIVE.set(1 if active else 0)

    async def connect(self) -> None:
        """Connect, make sure the streams and the bucket exist, and open the lease."""
        self.nc = await connect_nats(self.cfg.nats_url, f"sequencer-{self.cfg.name}")
        self.js = self.nc.jetstream(timeout=10)
        await streams.ensure_streams(self.js, self.cfg.ledger, self.cfg.stream_replicas)
        lease_js = self.nc.jetstream(timeout=max(0.2, self.cfg.lease_ttl_s / 3))
        deadline = asyncio.get_running_loop().time() + BUCKET_PATIENCE_S
        while True:
            # On a JetStream cluster a bucket just created (by this replica or another) can be
            # missing for a moment on the server that answers, and a busy cluster answers slowly.
            try:
                self.kv = await self._bucket()
                kv = await lease_js.key_value(streams.sequencer_bucket(self.cfg.ledger))
                break
            except (BucketNotFoundError, TimeoutError, nats.errors.Error) as e:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                log.warning("sequencer bucket not ready (%s); retrying", type(e).__name__)
                await asyncio.sleep(0.25)
        self.lease = Lease(kv, self.cfg.name, self.cfg.lease_ttl_s)

    async def run(self, stop: asyncio.Event) -> None:
        await self.connect()
        app = web.Application()
        health_routes(app, self.ready)
        runner = await serve_http(app, self.cfg.http_host, self.cfg.http_port)
        lease_task = asyncio.create_task(self._lease_loop(stop)) if not self.cfg.ignore_lease else None
        order_task = asyncio.create_task(self._order_loop(stop))
        replicas_task = asyncio.create_task(self._watch_replicas(stop))
        await stop.wait()
        replicas_task.cancel()
        self._wake.set()
        try:
            await asyncio.wait_for(order_task, 5.0)
        except (TimeoutError, asyncio.CancelledError, Exception) as e:
            log.warning("ordering did not stop cleanly: %s", type(e).__name__)
        if lease_task is not None:
            lease_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await lease_task
        self._set_active(False)
        if self.lease is not None:
            with contextlib.suppress(Exception):
                await self.lease.release()
        with contextlib.suppress(Exception):
            await self.nc.drain()
        await runner.cleanup()

    async def _watch_replicas(self, stop: asyncio.Event) -> None:
        """Sample how many replicas of each of the ledger's streams are current, for the operator:
        with R3 one lost or lagging NATS server is survived, but it is the margin that is gone."""
        ledger = self.cfg.ledger
        names = {
            "intake": streams.intake_stream(ledger),
            "ledger": streams.ledger_stream(ledger),
            "sequencer_kv": f"KV_{streams.sequencer_bucket(ledger)}",
        }
        js = self.nc.jetstream(timeout=2)
        while not stop.is_set():
            for label, name in names.items():
                try:
                    info = await js.stream_info(name)
                except Exception:
                    m.STREAM_REPLICAS_CURRENT.labels(label).set(0)
                    continue
                followers = info.cluster.replicas if info.cluster else None
                current = 1 + sum(1 for peer in followers or [] if peer.current and not peer.offline)
                m.STREAM_REPLICAS.labels(label).set(info.config.num_replicas or 1)
                m.STREAM_REPLICAS_CURRENT.labels(label).set(current)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), REPLICA_CHECK_S)

    async def _bucket(self) -> Any:
        name = streams.sequencer_bucket(self.cfg.ledger)
        try:
            return await self.js.key_value(name)
        except BucketNotFoundError:
            with contextlib.suppress(APIError):
                return await self.js.create_key_value(
                    KeyValueConfig(bucket=name, history=1, storage=StorageType.FILE, replicas=self.cfg.stream_replicas)
                )
            return await self.js.key_value(name)

    async def _lease_loop(self, stop: asyncio.Event) -> None:
        """Renew while holding the lease, otherwise watch it and claim it once it lapses."""
        assert self.lease is not None
        lease = self.lease
        failing = False
        while not stop.is_set():
            delay = lease.poll_every_s
            try:
                if lease.valid():
                    if await lease.renew():
                        delay = lease.renew_every_s
                    else:
                        self._wake.set()
                elif await lease.try_acquire():
                    self._wake.set()
                    delay = lease.renew_every_s
                failing = False
            except Exception as e:
                if not failing:
                    log.warning("lease step failed (%s: %s); retrying", type(e).__name__, e)
                failing = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    async def _order_loop(self, stop: asyncio.Event) -> None:
        """Order while this replica may append; the block in progress is appended before a clean stop."""
        assert self.lease is not None
        while not stop.is_set():
            if not self.may_append():
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.lease.poll_every_s)
                continue
            try:
                await self._lead(stop)
            except asyncio.CancelledError:
                raise
            except LeaseLost:
                log.warning("sequencer %s stopped appending: its lease lapsed", self.cfg.name)
            except TimeoutError as e:
                self._control_timeout_s = min(self._control_timeout_s * 2, CONTROL_TIMEOUT_S[1])
                log.warning("ordering interrupted (%s: %s); resuming", type(e).__name__, e)
                await asyncio.sleep(0.1)
            except Exception as e:
                log.warning("ordering interrupted (%s: %s); resuming", type(e).__name__, e)
                await asyncio.sleep(0.5)
            finally:
                self._set_active(False)

    async def _lead(self, stop: asyncio.Event) -> None:
        assert self.lease is not None
        term = self.lease.term
        control = self.nc.jetstream(timeout=self._control_timeout_s)
        if not self.cfg.ignore_lease and term != self._led_term:
            await self._reset_consumer(control)
            self._led_term = term
        await self._resync()
        sub = await control.pull_subscribe(
            streams.intake_subject(self.cfg.ledger),
            durable=CONSUMER,
            stream=streams.intake_stream(self.cfg.ledger),
            config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=30, max_ack_pending=-1, max_deliver=-1),
        )
        self._control_timeout_s = CONTROL_TIMEOUT_S[0]
        try:
            self._set_active(True)
            log.info("sequencer %s ordering from height %d", self.cfg.name, self.tip.height + 1)
            while not stop.is_set():
                if not self.may_append():
                    raise LeaseLost
                msgs = await self._gather(sub)
                if msgs:
                    await self._append(msgs)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _reset_consumer(self, js: Any) -> None:
        """A new term starts from a fresh consumer: intake messages a crashed or deposed holder had
        fetched but not acknowledged become deliverable now instead of after their ack wait."""
        with contextlib.suppress(NotFoundError):
            await js.delete_consumer(streams.intake_stream(self.cfg.ledger), CONSUMER)
            log.info("reset the intake consumer for a new term")

    async def _gather(self, sub: Any) -> list[Any]:
        """Intake messages for one block: wait for the first, then, only while under load (the
        last block was large), keep filling for one block interval. Light load is cut at once,
        which halves commit latency; heavy load gets the large blocks that throughput needs."""
        try:
            msgs = await sub.fetch(self.cfg.fetch_batch, timeout=0.25)
        except (TimeoutError, nats.errors.TimeoutError):
            return []
        if self._last_block_entries < self.cfg.fill_above_entries:
            return list(msgs)
        deadline = time.monotonic() + self.cfg.block_interval_ms / 1000
        while len(msgs) < self.cfg.fetch_batch * 4:
            left = deadline - time.monotonic()
            if left <= 0.0005:
                break
            try:
                msgs += await sub.fetch(self.cfg.fetch_batch, timeout=left)
            except (TimeoutError, nats.errors.TimeoutError):
                break
        return msgs

    def _build(self, msgs: list[Any]) -> tuple[list[Any], list[Any], Block]:
        """Take as many whole intake messages as fit in one block; the rest wait for the next."""
        entries: list[Entry] = []
        sigs: list[CommitSig] = []
        clocks: list[ClockSig] = []
        seen: set[bytes] = set()
        size = 0
        taken: list[Any] = []
        for i, msg in enumerate(msgs):
            full = size + len(msg.data) > self.cfg.max_block_bytes or len(entries) >= self.cfg.max_block_entries
            if taken and full:
                return taken, msgs[i:], self._block(entries, sigs, clocks)
            taken.append(msg)
            size += len(msg.data)
            try:
                batch = decode_intake(msg.data)
            except (msgspec.DecodeError, msgspec.ValidationError):
                log.warning("dropping a malformed intake message")
                continue
            for e in batch.entries:
                if e.data not in seen:
                    seen.add(e.data)
                    entries.append(e)
            sigs.extend(batch.sigs)
            clocks.extend(batch.clocks)
        return taken, [], self._block(entries, sigs, clocks)

    def _block(self, entries: list[Entry], sigs: list[CommitSig], clocks: list[ClockSig]) -> Block:
        # Its own clock, not max(now, tip): executors bound ledger time by their signed clocks, so a
        # stamp is only a proposal, and one wrong stamp in the log must not hold later ones back.
        return Block(
            BLOCK_VERSION, self.cfg.ledger, self.tip.height + 1, self.tip.hash, now_ms(), entries, sigs, clocks
        )

    async def _append(self, msgs: list[Any]) -> None:
        """Append blocks holding `msgs`; acknowledge each message once its block is durable."""
        while msgs:
            if not self.may_append():
                for msg in msgs:
                    with contextlib.suppress(Exception):
                        await msg.nak()
                raise LeaseLost
            taken, msgs, block = self._build(msgs)
            raw = encode(block)
            bhash = block_hash(raw)
            t0 = time.perf_counter()
            try:
                ack = await self.js.publish(
                    streams.ledger_subject(self.cfg.ledger),
                    raw,
                    headers={
                        "Nats-Msg-Id": f"{self.cfg.ledger}:{block.height}:{bhash.hex()[:32]}",
                        "Nats-Expected-Last-Sequence": str(self.tip.seq),
                    },
                )
            except APIError as e:
                if e.err_code == WRONG_LAST_SEQUENCE:
                    m.CONFLICTS.inc()
                    log.warning("the ledger stream moved under us; re-reading its tail")
                    await self._resync()
                    msgs = taken + msgs
                    continue
                raise
            m.APPEND_SECONDS.observe(time.perf_counter() - t0)
            if ack.duplicate:
                log.warning("block %d was already appended (duplicate id)", block.height)
            self.tip = Tip(block.height, bhash, ack.seq, block.ts_ms)
            for msg in taken:
                await msg.ack()
            if time.monotonic() - self._tip_saved_at > TIP_SAVE_INTERVAL_S:
                # Only a starting point for re-reading the stream tail, so saving it about once a
                # second keeps a KV round trip off most appends.
                await self.kv.put(TIP_KEY, pack([self.tip.height, self.tip.hash, self.tip.seq, self.tip.ts_ms]))
                self._tip_saved_at = time.monotonic()
            m.BLOCKS.inc()
            m.TX_SEQUENCED.inc(len(block.entries))
            m.SIGS_SEQUENCED.inc(len(block.sigs))
            m.BLOCK_SIZE.observe(len(block.entries))
            self._last_block_entries = len(block.entries)
            m.HEIGHT.set(block.height)

    async def _resync(self) -> None:
        """Find the chain's tip: start from the saved tip and walk the stream forward, keeping
        only blocks that extend the chain."""
        if self.tip.seq == 0:
            with contextlib.suppress(KeyNotFoundError, NotFoundError):
                entry = await self.kv.get(TIP_KEY)
                h, bh, seq, ts = unpack(entry.value)
                self.tip = Tip(h, bh, seq, ts)
        stream = streams.ledger_stream(self.cfg.ledger)
        info = await self.js.stream_info(stream)
        if self.tip.seq > info.state.last_seq:
            # The saved tip is beyond the stream (restored from an older backup): it is no tip of
            # this stream, and appending after it would be refused for ever. Walk from the start.
            log.error(
                "the saved tip (height %d, stream sequence %d) is beyond the ledger stream's last sequence %d; "
                "re-reading the stream from its start",
                self.tip.height,
                self.tip.seq,
                info.state.last_seq,
            )
            self.tip = Tip()
        seq = self.tip.seq
        while seq < info.state.last_seq:
            seq += 1
            try:
                msg = await self.js.get_msg(stream, seq)
            except NotFoundError:
                continue
            try:
                block, bhash = next_block(self.tip, msg.data, self.cfg.ledger)
            except ChainError as e:
                m.FOREIGN_BLOCKS.inc()
                log.warning("stream sequence %d is not a valid block (%s); skipped", seq, e)
                self.tip = Tip(self.tip.height, self.tip.hash, seq, self.tip.ts_ms)
                continue
            self.tip = Tip(block.height, bhash, seq, block.ts_ms)
        m.HEIGHT.set(self.tip.height)
