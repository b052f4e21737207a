"""Fault-test support: drive signed load through the real gateway while a fault is injected, keep
every hash the gateway acknowledged (202), and prove afterwards that each one is committed exactly
once, at the same position on every executor, with a verifying receipt, on an unforked chain.

Typical use:

    load = Load(net, total=3000)
    task = asyncio.create_task(load.run())
    await load.wait_acked(800)
    ...inject the fault...
    await task            # or: load.stop(); await task, to end a load with a large total early
    report = await verify_exactly_once(net, load.acked)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from nats.js.api import DeliverPolicy

from conclavium import consortium, merkle, receipt, streams
from conclavium.block import Kind, decode_block, entry_id, leaf_data
from conclavium.chain import ChainError, Tip, next_block
from conclavium.crypto.keys import PrivateKey
from conclavium.encoding import dumps, loads
from conclavium.local.network import LocalNetwork
from conclavium.runtime import connect_nats
from conclavium.sdk.client import Client, ClientError
from conclavium.tx import SignedTx

RETRY_STATUSES = {500, 502, 503, 504}


class Load:
    """Concurrent clients submitting single-put transactions; each is retried with the same bytes
    (same tx hash) on 503 or a connection error until the gateway acknowledges it."""

    def __init__(
        self,
        net: LocalNetwork,
        total: int,
        *,
        workers: int = 16,
        map_name: str = "public:faults",
        tag: str = "load",
        give_up_after_s: float = 60.0,
        request_timeout_s: float | None = None,
    ) -> None:
        self.net = net
        self.total = total
        self.workers = workers
        self.map_name = map_name
        self.tag = tag
        self.give_up_after_s = give_up_after_s
        self.request_timeout_s = request_timeout_s  # a gateway cut off answers nothing: move on sooner
        self.acked: dict[str, float] = {}
        self.retries = 0
        self.errors: Counter[str] = Counter()
        self.started = 0.0
        self.finished = 0.0
        self._next = 0
        self._stopping = False
        self._progress = asyncio.Event()

    def _clients(self) -> list[list[Client]]:
        """Per user, one client per gateway of the network (several on a multi-host network)."""
        keys = [PrivateKey.from_file(str(self.net.dir / u["key"])) for u in self.net.users]
        urls = self.net.gateway_urls or [self.net.gateway_url]
        clients = [[Client(u, k, ledger=self.net.opt.ledger) for u in urls] for k in keys]
        if self.request_timeout_s is not None:
            for c in itertools.chain.from_iterable(clients):
                c._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.request_timeout_s))
        return clients

    async def run(self) -> None:
        clients = self._clients()
        self.started = time.monotonic()
        try:
            await asyncio.gather(*(self._worker(clients[i % len(clients)], i) for i in range(self.workers)))
        finally:
            self.finished = time.monotonic()
            for per_user in clients:
                for c in per_user:
                    await c.close()

    def stop(self) -> None:
        """Submit no new transactions; those already submitted are still retried until acknowledged."""
        self._stopping = True

    async def _worker(self, gateways: list[Client], index: int) -> None:
        """Worker `index` starts on gateway index % G and moves to the next one whenever a
        submission is not acknowledged (a gateway cut off or down)."""
        turn = [index % len(gateways)]
        while self._next < self.total and not self._stopping:
            n = self._next
            self._next += 1
            tx = await gateways[turn[0]].build(
                [{"op": "put", "map": self.map_name, "key": f"{self.tag}-{n}", "value": n}]
            )
            await self._submit(gateways, tx, turn)

    async def _submit(self, gateways: list[Client], tx: SignedTx, turn: list[int]) -> None:
        deadline = time.monotonic() + self.give_up_after_s
        delay = 0.05
        while True:
            client = gateways[turn[0]]
            try:
                h = await client.submit(tx)
            except ClientError as e:
                if e.status not in RETRY_STATUSES:
                    raise
                self.errors[f"{e.status} {e.code}"] += 1
            except (aiohttp.ClientError, TimeoutError) as e:
                self.errors[type(e).__name__] += 1
            else:
                assert h == tx.hash.hex(), "the gateway answered another hash than the body's"
                self.acked[h] = time.monotonic()
                self._progress.set()
                return
            turn[0] = (turn[0] + 1) % len(gateways)
            if time.monotonic() > deadline:
                raise TimeoutError(f"the gateway did not accept a transaction for {self.give_up_after_s}s")
            self.retries += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    async def wait_acked(self, count: int, timeout: float = 60.0) -> None:
        """Return once `count` transactions are acknowledged: the moment to inject a fault."""
        deadline = time.monotonic() + timeout
        while len(self.acked) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(self.acked)} of {count} acknowledged after {timeout}s")
            self._progress.clear()
            try:
                await asyncio.wait_for(self._progress.wait(), 1.0)
            except TimeoutError:
                continue

    def longest_ack_gap(self) -> float:
        """The longest time no submission was acknowledged: the outage a client saw."""
        times = sorted(self.acked.values())
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


@dataclass
class Report:
    acked: int
    executors: list[str]
    heights: int
    blocks_in_log: int
    copies_in_log: int
    seconds: float
    roots: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        return (
            f"{self.acked} acknowledged transactions committed exactly once on {len(self.executors)} executors, "
            f"in {self.heights} blocks ({self.blocks_in_log} in the log, {self.copies_in_log} extra copies of "
            f"acknowledged transactions dropped as duplicates); checked in {self.seconds:.1f}s"
        )


class _Executors:
    """Ask each named executor directly over NATS, so every node is checked, not just whichever
    the gateway's queue group picks."""

    def __init__(self, nc: Any, ledger: str, names: list[str], parallel: int = 128) -> None:
        self.nc = nc
        self.ledger = ledger
        self.names = names
        self.sem = asyncio.Semaphore(parallel)

    async def ask(self, name: str, req: dict[str, Any]) -> dict[str, Any]:
        async with self.sem:
            for attempt in range(5):
                try:
                    msg = await self.nc.request(streams.node_query_subject(self.ledger, name), dumps(req), timeout=5)
                    return dict(loads(msg.data))
                except Exception:
                    if attempt == 4:
                        raise
                    await asyncio.sleep(0.2)
        raise AssertionError("unreachable")

    async def statuses(self, name: str, hashes: list[str]) -> dict[str, dict[str, Any]]:
        answers = await asyncio.gather(*(self.ask(name, {"type": "status", "tx": h}) for h in hashes))
        return dict(zip(hashes, answers, strict=True))


async def wait_committed(ex: _Executors, hashes: list[str], timeout: float) -> dict[str, dict[str, tuple[int, int]]]:
    """Poll every executor until each hash is Committed there; Invalid or a timeout fails."""
    deadline = time.monotonic() + timeout
    positions: dict[str, dict[str, tuple[int, int]]] = {}
    for name in ex.names:
        pending = list(hashes)
        found: dict[str, tuple[int, int]] = {}
        while pending:
            answers = await ex.statuses(name, pending)
            bad = {h: a for h, a in answers.items() if a.get("status") == "Invalid" or "error" in a}
            assert not bad, f"{name}: acknowledged transactions not committable: {list(bad.items())[:3]}"
            for h, a in answers.items():
                if a["status"] == "Committed":
                    found[h] = (int(a["height"]), int(a["index"]))
            pending = [h for h in pending if h not in found]
            if pending:
                if time.monotonic() > deadline:
                    states = Counter(str(answers[h].get("status")) for h in pending)
                    sample = {h: answers[h] for h in pending[:3]}
                    raise AssertionError(
                        f"{name}: {len(pending)} acknowledged transactions not committed {dict(states)}: {sample}"
                    )
                await asyncio.sleep(0.5)
        positions[name] = found
    return positions


async def read_log(nc: Any, ledger: str) -> list[bytes]:
    """Every message of the ledger stream, in order, exactly as stored."""
    js = nc.jetstream(timeout=10)
    info = await js.stream_info(streams.ledger_stream(ledger))
    last = info.state.last_seq
    out: list[bytes] = []
    if last == 0:
        return out
    sub = await js.subscribe(streams.ledger_subject(ledger), ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
    try:
        while True:
            msg = await sub.next_msg(timeout=10)
            out.append(msg.data)
            if msg.metadata.sequence.stream >= last:
                return out
    finally:
        await sub.unsubscribe()


async def agreeing_roots(ex: _Executors, timeout: float = 30.0) -> dict[str, Any]:
    """Wait until every executor reports the same committed height and root (`local status`)."""
    deadline = time.monotonic() + timeout
    while True:
        sts = {n: await ex.ask(n, {"type": "node_status"}) for n in ex.names}
        views = {(s.get("committed_height"), s.get("root")) for s in sts.values()}
        if len(views) == 1 and not any(s.get("fork") for s in sts.values()):
            height, root = views.pop()
            return {"committed_height": height, "root": root}
        if time.monotonic() > deadline:
            raise AssertionError(f"executors disagree: {sts}")
        await asyncio.sleep(0.3)


async def verify_exactly_once(
    net: LocalNetwork,
    acked: dict[str, float] | list[str],
    *,
    timeout: float = 90.0,
    strict_blocks: bool = True,
    maybe: set[str] | None = None,
) -> Report:
    """Every acknowledged transaction is committed exactly once.

    - it is Committed on every executor, at the same (height, index) everywhere, and no two
      transactions share a position;
    - its receipt verifies offline against the service certificate;
    - the receipts of each block rebuild that block's whole leaf list (indices 0..n-1) whose Merkle
      root is the one the executors signed in the log: a second copy of any transaction as a leaf
      would leave a hole or change the root;
    - the ledger stream is one unbroken chain (every block's `prev` is its predecessor's hash, no
      foreign messages), each transaction's position is its first copy in the log, and with
      `strict_blocks` no signed block after the load started holds leaves outside the acknowledged set;
    - all executors report the same committed height and root.

    `maybe` are transactions whose submission was answered with anything but 202 (a timeout, a
    503): they may or may not be in the ledger; those that are committed are checked as above
    (exactly once), the others are left out.
    """
    t0 = time.monotonic()
    hashes = sorted(acked)
    names = sorted(n for n in net.procs if n.startswith("executor-"))
    identity = consortium.load_trusted(await asyncio.to_thread(Path(net.dir / "consortium.json").read_text))
    ledger = net.opt.ledger
    nc = await connect_nats(net.nats_url, "fault-check")
    try:
        ex = _Executors(nc, ledger, names)
        if maybe:
            answers = await ex.statuses(names[0], sorted(maybe))
            hashes = sorted({*hashes, *(h for h, a in answers.items() if a.get("status") == "Committed")})
        positions = await wait_committed(ex, hashes, timeout)
        first = positions[names[0]]
        for name in names[1:]:
            differ = [h for h in hashes if positions[name][h] != first[h]]
            assert not differ, f"{name} puts {len(differ)} transactions elsewhere than {names[0]}: {differ[:3]}"
        assert len(set(first.values())) == len(hashes), "two transactions share one (height, index)"

        receipts = await asyncio.gather(*(ex.ask(names[0], {"type": "receipt", "tx": h}) for h in hashes))
        by_height: dict[int, dict[int, bytes]] = defaultdict(dict)
        block_roots: dict[int, str] = {}
        block_sigs: dict[int, Any] = {}
        for h, r in zip(hashes, receipts, strict=True):
            assert "error" not in r, f"no receipt for {h}: {r}"
            assert (r["height"], r["index"]) == first[h], f"receipt of {h} names another position"
            leaf = merkle.leaf_hash(leaf_data(bytes.fromhex(h), bytes.fromhex(r["write_digest"])))
            height = r["height"]
            if height in block_roots:
                # The statement and signatures of this block were verified once; the leaf and path are checked here.
                path = [(side, bytes.fromhex(x)) for side, x in r["path"]]
                assert merkle.root_from_path(leaf, path).hex() == r["root"], f"receipt of {h}: path misses root"
                assert (r["root"], r["signatures"]) == (block_roots[height], block_sigs[height])
            else:
                receipt.verify(r, identity, tx_hash=h)
                block_roots[height], block_sigs[height] = r["root"], r["signatures"]
            by_height[height][r["index"]] = leaf

        for name in names[1:]:
            some = {}
            for h in hashes:
                some.setdefault(first[h][0], h)
            others = await asyncio.gather(*(ex.ask(name, {"type": "receipt", "tx": h}) for h in some.values()))
            for height, r in zip(some, others, strict=True):
                assert r.get("root") == block_roots[height], f"{name} has another root for block {height}"

        raw = await read_log(nc, ledger)
        system_entries = set()
        for data in raw:
            with contextlib.suppress(Exception):
                b = decode_block(data)
                if any(e.kind != Kind.TX for e in b.entries):
                    system_entries.add(b.height)
        for height, leaves in by_height.items():
            if height in system_entries:
                continue  # node or governance entries are leaves too; the paths above place ours
            assert sorted(leaves) == list(range(len(leaves))), (
                f"block {height}: leaves {sorted(set(range(max(leaves) + 1)) - set(leaves))[:5]} are not "
                "acknowledged transactions (a duplicate or a foreign leaf)"
            )
            rebuilt = merkle.root([leaves[i] for i in range(len(leaves))]).hex()
            assert rebuilt == block_roots[height], f"block {height}: its leaves do not rebuild the signed root"
        tip = Tip()
        signed: dict[int, set[str]] = defaultdict(set)
        copies: dict[str, list[int]] = defaultdict(list)
        wanted = set(hashes)
        for seq, data in enumerate(raw, start=1):
            try:
                block, bhash = next_block(tip, data, ledger)
            except ChainError as e:
                raise AssertionError(f"ledger stream message {seq} does not extend the chain: {e}") from None
            tip = Tip(block.height, bhash, seq, block.ts_ms)
            for entry in block.entries:
                eid = entry_id(entry).hex()
                if eid in wanted:
                    copies[eid].append(block.height)
            for s in block.sigs:
                signed[s.height].add(s.root.hex())
        for h in hashes:
            assert copies.get(h), f"{h} is committed but absent from the ledger stream"
            at, copy = first[h][0], copies[h][0]
            assert at == copy, f"{h} stands at block {at}, its first copy is at {copy}"
        for height, root in block_roots.items():
            assert signed.get(height) == {root}, f"block {height}: signed roots {signed.get(height)} != {root}"
        if strict_blocks and by_height:
            start = min(by_height)
            stray = sorted(hh for hh in signed if hh >= start and hh not in by_height and hh not in system_entries)
            assert not stray, f"signed blocks {stray[:5]} hold leaves that are not acknowledged transactions"

        roots = await agreeing_roots(ex)
        return Report(
            acked=len(hashes),
            executors=names,
            heights=len(by_height),
            blocks_in_log=len(raw),
            copies_in_log=sum(len(v) - 1 for v in copies.values()),
            seconds=time.monotonic() - t0,
            roots=roots,
        )
    finally:
        await nc.close()


async def sequencer_roles(net: LocalNetwork) -> dict[str, str]:
    """Each sequencer's `/readyz` reason: `active`, `standby`, or why it is not ready ("down")."""
    out: dict[str, str] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as s:
        for name, p in net.procs.items():
            if not name.startswith("sequencer-"):
                continue
            try:
                async with s.get(f"http://{p.host}:{p.port}/readyz") as r:
                    out[name] = str((await r.json()).get("reason"))
            except (aiohttp.ClientError, TimeoutError, ValueError):
                out[name] = "down"
    return out


async def wait_single_active(net: LocalNetwork, timeout: float = 20.0) -> str:
    """Wait until exactly one sequencer says it is active and the others are standbys."""
    deadline = time.monotonic() + timeout
    while True:
        roles = await sequencer_roles(net)
        active = [n for n, r in roles.items() if r == "active"]
        if len(active) == 1 and all(r in ("active", "standby") for r in roles.values()):
            return active[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"not exactly one active sequencer: {roles}")
        await asyncio.sleep(0.1)


async def ledger_last_seq(nc: Any, ledger: str) -> int:
    info = await nc.jetstream(timeout=2).stream_info(streams.ledger_stream(ledger))
    return int(info.state.last_seq)


async def stream_replicas(nc: Any, ledger: str) -> dict[str, dict[str, Any]]:
    """Per stream of the ledger (intake, ledger, sequencer bucket): its configured replicas, its
    leader, and each follower's state (`current`, `lag`, `offline`), as the stream leader reports."""
    js = nc.jetstream(timeout=5)
    out: dict[str, dict[str, Any]] = {}
    for name in (
        streams.intake_stream(ledger),
        streams.ledger_stream(ledger),
        f"KV_{streams.sequencer_bucket(ledger)}",
    ):
        info = await js.stream_info(name)
        cluster = info.cluster
        out[name] = {
            "replicas": info.config.num_replicas,
            "messages": info.state.messages,
            "leader": cluster.leader if cluster else None,
            "peers": {
                p.name: {"current": p.current, "lag": p.lag or 0, "offline": bool(p.offline)}
                for p in (cluster.replicas or [])
            }
            if cluster
            else {},
        }
    return out


async def stored_by(net: LocalNetwork, server: str) -> dict[str, tuple[int, int, int]]:
    """What `server` itself stores of each stream (messages, first and last sequence), from its own
    monitoring endpoint: stream info only gives the leader's view of its followers."""
    plan = net.nats_plans[server]
    url = f"http://{plan.host}:{plan.monitor_port}/jsz?streams=true"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s, s.get(url) as r:
        jsz = await r.json()
    out = {}
    for account in jsz.get("account_details") or []:
        for st in account.get("stream_detail") or []:
            state = st["state"]
            out[st["name"]] = (state["messages"], state["first_seq"], state["last_seq"])
    return out


async def nats_health(net: LocalNetwork) -> dict[str, str]:
    """Each cluster server's own `/healthz`: "ok", or its reason (JetStream not current with the
    meta leader, a stream or consumer of its own still catching up, unreachable)."""
    out: dict[str, str] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as s:
        for name, plan in net.nats_plans.items():
            try:
                async with s.get(f"http://{plan.host}:{plan.monitor_port}/healthz") as r:
                    body = await r.json(content_type=None)
                    out[name] = "ok" if r.status == 200 else str(body.get("error") or body)
            except (aiohttp.ClientError, TimeoutError, ValueError) as e:
                out[name] = f"unreachable ({type(e).__name__})"
    return out


async def wait_nats_current(net: LocalNetwork, timeout: float = 90.0) -> float:
    """Seconds until every server of the NATS cluster answers `/healthz` 200 twice in a row, half a
    second apart: each is current with the meta leader and on every stream and consumer it holds,
    so the cluster can again lose any one server. A server that re-joined after a partition or a
    restart is not, at first: the operator's check before the next server may go (docs/operations.md)."""
    t0 = time.monotonic()
    healthy_once = False
    health: dict[str, str] = {}
    while True:
        health = await nats_health(net)
        if all(v == "ok" for v in health.values()):
            if healthy_once:
                return time.monotonic() - t0
            healthy_once = True
        else:
            healthy_once = False
        assert time.monotonic() - t0 < timeout, f"NATS servers not all current after {timeout}s: {health}"
        await asyncio.sleep(0.5)


async def cluster_state(net: LocalNetwork) -> str:
    """Every server's health and what it stores, for a failure message (CI keeps no NATS logs)."""
    lines = []
    health = await nats_health(net)
    for name in net.nats_plans:
        try:
            held: Any = await stored_by(net, name)
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            held = type(e).__name__
        lines.append(f"{name}: health {health.get(name)}; stores {held}")
    return "\n".join(lines)


def audit(directory: Path) -> dict[str, Any]:
    """`conclavium ledger audit DIR` on a stopped executor's data directory; its JSON report, which
    must say ok."""
    tool = [str(Path(sys.executable).parent / "conclavium"), "ledger", "audit", str(directory)]
    p = subprocess.run(tool, capture_output=True, text=True, timeout=120)
    report = dict(json.loads(p.stdout))
    assert p.returncode == 0 and report.get("ok"), f"audit of {directory} failed: {report}"
    return report
