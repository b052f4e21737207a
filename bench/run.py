"""Conclavium benchmark: signed key-value writes through the whole ledger, submit-to-commit.

    python bench/run.py [--net DIR] [--executors N] [--protocol P] [--count N | --duration S] [--clients C]
                        [--batch B] [--private-ratio R] [--warmup S] [--rate TX/S] [--json FILE]
    python bench/run.py --sweep ...      # load-vs-latency table + PNG plot
    python bench/run.py --postgres       # PostgreSQL insert-only yardstick (pgbench)

Transactions are signed before the clock starts (in worker processes), so the figures measure the
ledger, not the load generator's signing. Commit is observed on the executors' status events (core
NATS): a transaction counts as committed when the first executor reports it, which every executor
does only once the ledger holds a quorum of commit signatures over a root covering it.
Without `--rate` the load is closed-loop: each client keeps at most `--window` batches
acknowledged-but-uncommitted. With `--rate` it is open-loop and latency starts at each batch's
scheduled send time, so a lagging generator cannot hide queueing (no coordinated omission).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import multiprocessing as mp
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import msgspec  # noqa: E402
import nats  # noqa: E402
import orjson  # noqa: E402

from conclavium import streams  # noqa: E402
from conclavium.crypto.keys import PrivateKey  # noqa: E402
from conclavium.local.network import LocalNetwork, NetworkOptions  # noqa: E402
from conclavium.tx import make_body  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
VALUE_BYTES = 100
VALIDITY_BUDGET_S = 100.0  # transactions must reach a block within the ledger's 120 s window


# --- workload: pre-signed batches ----------------------------------------------------------------


@dataclass
class Batch:
    """One HTTP request, ready to send: the encoded body and the hashes of its transactions."""

    body: bytes
    hashes: list[bytes]
    path: str  # where the protocol's gateway router takes it
    accepted: int = 202  # the status of an accepted request (JSON-RPC answers 200, errors inside)
    content_type: str = "application/json"  # Sawtooth's POST /batches takes a protobuf BatchList
    ts_ms: int | None = None  # the timestamp its transactions carry, if not the start of signing


def _sign_chunk(
    args: tuple[list[str], str, int, int, float, int, int, tuple[str, bytes], int],
) -> list[tuple[bytes, list[bytes]]]:
    """Worker: sign `n` transactions (private ones sealed to the ledger's transaction key, as the
    SDK does) and pack them into request bodies of `batch` each."""
    key_files, ledger, n, batch, private_ratio, seed, ts_ms, tx_key, key_space = args
    rng = random.Random(seed)
    keys = [PrivateKey.from_file(f) for f in key_files]
    ids = [k.key_id for k in keys]
    out: list[tuple[bytes, list[bytes]]] = []
    items: list[dict[str, str]] = []
    hashes: list[bytes] = []
    for i in range(n):
        k = i % len(keys)
        m = "bench" if rng.random() < private_ratio else "public:bench"
        value = rng.randbytes(VALUE_BYTES // 2).hex()
        key = f"k{rng.randrange(key_space)}" if key_space else rng.randbytes(8).hex()
        ops = [{"op": "put", "map": m, "key": key, "value": value}]
        body = make_body(ledger, ids[k], ops, ts_ms, nonce=rng.randbytes(12).hex(), tx_key=tx_key)
        sig = keys[k].sign(body)
        items.append({"body": _b64(body), "signature": _b64(sig)})
        hashes.append(hashlib.sha256(body).digest())
        if len(items) == batch or i == n - 1:
            req = items[0] if batch == 1 else {"transactions": items}
            out.append((orjson.dumps(req), hashes))
            items, hashes = [], []
    return out


def _b64(b: bytes) -> str:
    import base64

    return base64.b64encode(b).decode()


def ledger_tx_key(gateway: str) -> tuple[str, bytes]:
    """The ledger's current transaction key, from the gateway's service document."""
    with urllib.request.urlopen(f"{gateway}/v1/service", timeout=10) as r:
        doc = orjson.loads(r.read())["tx_key"]
    return doc["id"], bytes.fromhex(doc["public"])


def presign(
    key_files: list[str],
    ledger: str,
    total: int,
    batch: int,
    private_ratio: float,
    tx_key: tuple[str, bytes],
    key_space: int = 0,
) -> list[Batch]:
    """Sign `total` transactions on every core (this happens before any timing starts)."""
    workers = max(1, os.cpu_count() or 1)
    per = max(batch, math.ceil(total / workers / batch) * batch)
    ts_ms = int(time.time() * 1000)
    jobs, left, seed = [], total, random.randrange(1 << 30)
    while left > 0:
        n = min(per, left)
        jobs.append((key_files, ledger, n, batch, private_ratio, seed + len(jobs), ts_ms, tx_key, key_space))
        left -= n
    ctx = mp.get_context("fork")
    with ctx.Pool(workers) as pool:
        parts = pool.map(_sign_chunk, jobs)
    path = "/v1/transactions" if batch == 1 else "/v1/transactions/batch"
    return [Batch(b, h, path) for part in parts for b, h in part]


@dataclass(frozen=True)
class Protocol:
    """A protocol the benchmark can load: `presign(target, args, total)` signs its transactions
    into request bodies before timing starts. A later protocol adds an entry to `PROTOCOLS`."""

    presign: Callable[[Target, argparse.Namespace, int], list[Batch]]
    about: str


def _presign_kv(t: Target, args: argparse.Namespace, total: int) -> list[Batch]:
    return presign(t.key_files, t.ledger, total, args.batch, args.private_ratio, ledger_tx_key(t.gateway), args.keys)


def _sign_notary_chunk(args: tuple[list[str], str, int, int, int, int]) -> list[tuple[bytes, list[bytes]]]:
    """Worker: `n` notarisation requests, each for a transaction of 2 fresh inputs, an output and
    a command, with the tear-off a non-validating notary sees; `batch` per request body."""
    from conclavium.notary import WireTransaction, make, transaction_groups
    from conclavium.notary.request import NOTARY_GROUPS, state_ref

    key_files, ledger, n, batch, seed, ts_ms = args
    rng = random.Random(seed)
    keys = [PrivateKey.from_file(f) for f in key_files]
    out: list[tuple[bytes, list[bytes]]] = []
    items: list[dict[str, str]] = []
    hashes: list[bytes] = []
    for i in range(n):
        inputs = [state_ref(rng.randbytes(32), rng.randrange(4)) for _ in range(2)]
        groups = transaction_groups(inputs, [], None, ledger, outputs=[rng.randbytes(60)], commands=[b"Move"])
        wtx = WireTransaction(groups, rng.randbytes(32))
        req = make(keys[i % len(keys)], ledger, wtx.id.hex(), inputs, [], None, wtx.tear_off(NOTARY_GROUPS), ts_ms)
        items.append(req.to_json())
        hashes.append(bytes.fromhex(req.hash))
        if len(items) == batch or i == n - 1:
            out.append((orjson.dumps(items[0] if batch == 1 else {"requests": items}), hashes))
            items, hashes = [], []
    return out


def _presign_notary(t: Target, args: argparse.Namespace, total: int) -> list[Batch]:
    """Signs on every core, every request stamped with the moment signing is expected to end:
    the ledger takes a timestamp within `tx_validity_ms` (120 s) either side of its block's time,
    so requests signed for that moment stay valid through a long signing and 120 s of sending
    after it, instead of expiring while they are signed (a request costs the client ~0.3 ms)."""
    workers = max(1, os.cpu_count() or 1)
    per = max(args.batch, math.ceil(total / workers / args.batch) * args.batch)
    seed = random.randrange(1 << 30)
    t0 = time.perf_counter()
    _sign_notary_chunk((t.key_files, t.ledger, 50, 50, seed - 1, 0))  # a sample, to time signing here
    per_request_s = (time.perf_counter() - t0) / 50
    ts_ms = int((time.time() + min(per_request_s * total / workers, VALIDITY_BUDGET_S)) * 1000)
    jobs, left = [], total
    while left > 0:
        jobs.append((t.key_files, t.ledger, min(per, left), args.batch, seed + len(jobs), ts_ms))
        left -= per
    with mp.get_context("fork").Pool(workers) as pool:
        parts = pool.map(_sign_notary_chunk, jobs)
    return [Batch(b, h, "/v1/notary/requests", ts_ms=ts_ms) for part in parts for b, h in part]


def enable_notary(t: Target, member_keys: list[str]) -> None:
    """Members vote the notary on for the benchmark's users (set_applications, set_notary_parties)."""
    from conclavium.sdk.client import Client

    async def vote() -> None:
        clients = [Client(t.gateway, PrivateKey.from_file(k), ledger=t.ledger) for k in member_keys]
        try:
            parties = sorted({PrivateKey.from_file(k).key_id for k in t.key_files})
            actions = [
                {"name": "set_applications", "args": {"applications": ["kv", "notary"]}},
                {"name": "set_notary_parties", "args": {"parties": parties}},
            ]
            proposal = await clients[0].propose(actions)
            await clients[0].wait(proposal["tx_hash"])
            for c in clients[: len(clients) // 2 + 1]:
                await c.wait((await c.vote(proposal["proposal_id"], approve=True))["tx_hash"])
            if (await clients[0].proposal(proposal["proposal_id"]))["state"] != "Accepted":
                raise RuntimeError("the members' vote did not enable the notary")
        finally:
            for c in clients:
                await c.close()

    asyncio.run(vote())


ETH_STATE: dict[str, Any] = {}  # the Ethereum workload of this run, for its anvil anchor and ceiling


def _presign_eth(t: Target, args: argparse.Namespace, total: int) -> list[Batch]:
    """Deploy an ERC-20 and fund its senders (not timed), then sign the transfers."""
    from bench import eth_workload as ew

    doc = json.loads((Path(t.net.dir if t.net else args.net) / "local.json").read_text())["applications"]["eth"]
    rpc, chain_id = doc["rpc"], int(doc["chain_id"])
    senders = (args.clients * args.window + 1) * args.batch  # see eth_workload: nonce order
    w = ew.Workload(chain_id, bytes.fromhex(doc["accounts"][0]["private_key"][2:]), senders)
    w.sign_setup(ew.compile_token())
    ew.send_all(rpc, w.setup)
    assert ew.wait_receipt(rpc, w.setup[-1])["status"] == "0x1"
    groups = w.sign_transfers(total, args.batch)
    ETH_STATE["workload"] = w
    return [Batch(ew.request_body(g), [ew.entry_id(r) for r in g], "/rpc", 200) for g in groups]


def _sign_sawtooth_chunk(args: tuple[int, int, int]) -> list[tuple[bytes, list[bytes]]]:
    """Worker: `n` intkey `set`s of fresh names, one transaction per Sawtooth batch, `batch` batches
    per BatchList; the hashes are the batches' ledger entry ids."""
    import cbor2

    from conclavium.apps import app_entry
    from conclavium.block import entry_id
    from conclavium.sawtooth import APP
    from conclavium.sawtooth.batch import build_batch
    from conclavium.sawtooth.pb.sawtooth_pb2 import BatchList

    n, batch, seed = args
    rng = random.Random(seed)
    key = rng.randbytes(32)
    prefix = hashlib.sha512(b"intkey").hexdigest()[:6]
    out: list[tuple[bytes, list[bytes]]] = []
    blist, hashes = BatchList(), []
    for i in range(n):
        name = rng.randbytes(10).hex()
        addr = prefix + hashlib.sha512(name.encode()).hexdigest()[-64:]
        payload = cbor2.dumps({"Verb": "set", "Name": name, "Value": i})
        b = build_batch(key, [("intkey", "1.0", payload, [addr], [addr])])
        blist.batches.append(b)
        hashes.append(entry_id(app_entry(APP, b.SerializeToString(), b"")))
        if len(blist.batches) == batch or i == n - 1:
            out.append((blist.SerializeToString(), hashes))
            blist, hashes = BatchList(), []
    return out


def _presign_sawtooth(t: Target, args: argparse.Namespace, total: int) -> list[Batch]:
    workers = max(1, os.cpu_count() or 1)
    per = max(args.batch, math.ceil(total / workers / args.batch) * args.batch)
    seed, jobs, left = random.randrange(1 << 30), [], total
    while left > 0:
        jobs.append((min(per, left), args.batch, seed + len(jobs)))
        left -= per
    with mp.get_context("fork").Pool(workers) as pool:
        parts = pool.map(_sign_sawtooth_chunk, jobs)
    return [Batch(b, h, "/batches", 202, "application/octet-stream") for part in parts for b, h in part]


PROTOCOLS: dict[str, Protocol] = {
    "kv": Protocol(_presign_kv, "native key-value transactions (one put each; --private-ratio sealed)"),
    "notary": Protocol(
        _presign_notary,
        "notarisation requests, 2 inputs each with their tear-off (POST /v1/notary/requests); "
        "a public key-value run of the same shape follows as the anchor",
    ),
    "eth": Protocol(
        _presign_eth,
        "ERC-20 transfers from many accounts via eth_sendRawTransaction (JSON-RPC batches of --batch; 1 = "
        "one per request), beside anvil given the same signed transactions",
    ),
    "sawtooth": Protocol(
        _presign_sawtooth,
        "intkey sets of fresh names, one transaction per Sawtooth batch, --batch batches per BatchList "
        "(POST /batches), run by one intkey TP (Sawtooth SDK, Python 3.9) per executor",
    ),
}


# --- process accounting --------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float | None:
    """CPU time of a service from /proc: its threads, its children that ended (snapshot writers)
    and those still running (the executor's sealed-opener workers), so each figure is the whole
    cost of the service."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    total = sum(int(f) for f in fields[11:15]) / CLK_TCK
    return total + sum(cpu_seconds(int(c)) or 0.0 for c in children)


def rss_mb(pid: int) -> dict[str, float] | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    vals = {}
    for line in text.splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            vals[line.split(":")[0]] = round(int(line.split()[1]) / 1024, 1)
    return {"rss": vals.get("VmRSS", 0.0), "peak": vals.get("VmHWM", 0.0)}


def machine_cpu() -> tuple[float, float]:
    """(busy, iowait) CPU seconds of the whole machine, from /proc/stat."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    busy = f[0] + f[1] + f[2] + f[5] + f[6] + (f[7] if len(f) > 7 else 0)
    return busy / CLK_TCK, f[4] / CLK_TCK


def snapshot_cpu(pids: dict[str, int]) -> dict[str, float]:
    out = {name: cpu_seconds(pid) for name, pid in pids.items()}
    out["bench-client"] = time.process_time()
    out["machine"], out["machine-iowait"] = machine_cpu()
    return {k: v for k, v in out.items() if v is not None}


# --- the ceiling: unavoidable cryptography, measured now ------------------------------------------


def measure_ceiling(executors: int, seconds: float = 0.6, private_ratio: float = 0.0) -> dict[str, Any]:
    """Cost on this machine, in this run, of the cryptography every transaction needs.

    Per transaction: each executor verifies the client's Ed25519 signature (PyNaCl, the library
    all executors must share) and hashes it (entry id, write digest, Merkle leaf and ~1 interior
    node), and for the `private_ratio` share of sealed transactions opens the HPKE box; the gateway
    and the sequencer hash nothing per transaction they could not skip. The client signs (and seals)
    once (done before timing in this benchmark, shown separately)."""
    import nacl.signing

    from conclavium.crypto import sealing

    sk = nacl.signing.SigningKey.generate()
    vk = sk.verify_key
    body = os.urandom(330)
    sig = sk.sign(body).signature

    def rate(fn: Any) -> float:
        n, t0 = 0, time.thread_time()
        while time.thread_time() - t0 < seconds / 3:
            for _ in range(200):
                fn()
            n += 200
        return (time.thread_time() - t0) / n

    tx_key = sealing.generate_key()
    box = sealing.seal(body[:150], sealing.public_bytes(tx_key), b"info")
    verify = rate(lambda: vk.verify(body, sig))
    sha = rate(lambda: hashlib.sha256(body).digest())
    sign = rate(lambda: sk.sign(body))
    seal = rate(lambda: sealing.seal(body[:150], sealing.public_bytes(tx_key), b"info"))
    open_ = rate(lambda: sealing.open_sealed(box, tx_key, b"info"))
    per_exec = verify + 4 * sha + private_ratio * open_
    crypto = executors * per_exec
    cores = os.cpu_count() or 1
    return {
        "ed25519_verify_us": round(verify * 1e6, 2),
        "sha256_330B_us": round(sha * 1e6, 3),
        "ed25519_sign_us": round(sign * 1e6, 2),
        "hpke_seal_us": round(seal * 1e6, 2),
        "hpke_open_us": round(open_ * 1e6, 2),
        "private_ratio": private_ratio,
        "crypto_us_per_tx": round(crypto * 1e6, 2),
        "crypto_us_per_tx_with_client_signing": round((crypto + sign + private_ratio * seal) * 1e6, 2),
        "cores": cores,
        "ceiling_tps": round(cores / crypto),
        "note": "ceiling = cores / (executors x (verify + 4 SHA-256 + private share x HPKE open))",
    }


# --- the load ------------------------------------------------------------------------------------


@dataclass
class Tracker:
    """Send and commit times per transaction, fed by the executors' status events."""

    index: dict[bytes, int] = field(default_factory=dict)
    sent: list[float] = field(default_factory=list)
    done: list[float] = field(default_factory=list)
    invalid: dict[str, int] = field(default_factory=dict)
    waiters: dict[int, tuple[int, asyncio.Future[None]]] = field(default_factory=dict)
    batch_of: list[int] = field(default_factory=list)
    finished = 0
    acked = 0
    failed = 0
    _target = 0
    _all: asyncio.Event | None = None

    def add(self, hashes: list[bytes], batch_id: int) -> None:
        for h in hashes:
            self.index[h] = len(self.sent)
            self.sent.append(0.0)
            self.done.append(0.0)
            self.batch_of.append(batch_id)

    async def wait_all(self, timeout: float) -> None:
        """Wait until every acknowledged transaction committed or was refused, or `timeout`."""
        self._target = self.acked
        if self.finished >= self._target:
            return
        self._all = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._all.wait(), timeout)

    def _finish(self, i: int, now: float) -> None:
        if self.done[i]:
            return
        self.done[i] = now
        self.finished += 1
        if self._all is not None and self.finished >= self._target:
            self._all.set()
        w = self.waiters.get(self.batch_of[i])
        if w is not None:
            left = w[0] - 1
            if left:
                self.waiters[self.batch_of[i]] = (left, w[1])
            else:
                del self.waiters[self.batch_of[i]]
                if not w[1].done():
                    w[1].set_result(None)

    def on_event(self, data: bytes) -> None:
        now = time.perf_counter()
        try:
            ev = _status_decoder.decode(data)
        except msgspec.DecodeError:
            return
        for _height, eids in ev.get("c", ()):
            for eid in eids:
                i = self.index.get(eid)
                if i is not None:
                    self._finish(i, now)
        for eid, reason, *_ in ev.get("i", ()):
            i = self.index.get(eid)
            if i is not None and not self.done[i]:
                self.invalid[reason] = self.invalid.get(reason, 0) + 1
                self._finish(i, -now)


_status_decoder = msgspec.msgpack.Decoder()


async def _post(session: aiohttp.ClientSession, url: str, b: Batch) -> bool:
    path = b.path
    for attempt in range(3):
        try:
            async with session.post(url + path, data=b.body, headers={"Content-Type": b.content_type}) as r:
                answer = await r.read()
                if r.status == b.accepted:
                    return b.accepted != 200 or b'"error"' not in answer
                if r.status != 503:
                    return False
        except (aiohttp.ClientError, TimeoutError):
            pass
        await asyncio.sleep(0.05 * (attempt + 1))
    return False


async def drive(
    gateway: str,
    nats_url: str,
    ledger: str,
    batches: list[Batch],
    *,
    clients: int,
    window: int,
    rate: float | None,
    duration: float | None,
    warmup: float,
    pids: dict[str, int],
    drain_s: float = 30.0,
) -> dict[str, Any]:
    """Submit `batches`, watch commits, and return the raw figures of one measured run."""
    tr = Tracker()
    for i, b in enumerate(batches):
        tr.add(b.hashes, i)
    nc = await nats.connect(nats_url, name="bench")
    await nc.subscribe(streams.status_subject(ledger), cb=_status_callback(tr))
    conn = aiohttp.TCPConnector(limit=max(clients, 1) * 2)
    session = aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=30))
    it: Iterator[int] = iter(range(len(batches)))
    start = time.perf_counter()
    t_warm = start + warmup
    t_stop = start + warmup + duration if duration is not None else math.inf
    marks: dict[str, Any] = {}
    sent_batches = 0

    def take_marks() -> None:
        marks["t0"] = time.perf_counter()
        marks["cpu0"] = snapshot_cpu(pids)
        marks["done0"] = tr.finished

    async def warm_marker() -> None:
        await asyncio.sleep(max(0.0, t_warm - time.perf_counter()))
        take_marks()

    async def send(bid: int, t_sched: float) -> None:
        nonlocal sent_batches
        b = batches[bid]
        first = tr.index[b.hashes[0]]
        for i in range(first, first + len(b.hashes)):
            tr.sent[i] = t_sched
        sent_batches += 1
        ok = await _post(session, gateway, b)
        if ok:
            tr.acked += len(b.hashes)
        else:
            tr.failed += len(b.hashes)
            for i in range(first, first + len(b.hashes)):
                tr.sent[i] = 0.0

    async def closed_client() -> None:
        sem = asyncio.Semaphore(window)
        loop = asyncio.get_running_loop()
        while time.perf_counter() < t_stop:
            await sem.acquire()
            bid = next(it, None)
            if bid is None or time.perf_counter() >= t_stop:
                sem.release()
                return
            fut: asyncio.Future[None] = loop.create_future()
            tr.waiters[bid] = (len(batches[bid].hashes), fut)
            fut.add_done_callback(lambda _f: sem.release())
            await send(bid, time.perf_counter())
            if tr.sent[tr.index[batches[bid].hashes[0]]] == 0.0:  # refused: free the slot
                tr.waiters.pop(bid, None)
                if not fut.done():
                    fut.set_result(None)

    async def open_loop() -> None:
        assert rate is not None
        per_batch = len(batches[0].hashes) / rate
        tasks: set[asyncio.Task[None]] = set()
        sem = asyncio.Semaphore(clients * window)
        k = 0
        while True:
            t_sched = start + k * per_batch
            if t_sched >= t_stop:
                break
            bid = next(it, None)
            if bid is None:
                break
            delay = t_sched - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await sem.acquire()
            task = asyncio.create_task(send(bid, t_sched))
            task.add_done_callback(lambda _t: sem.release())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            k += 1
        if tasks:
            await asyncio.gather(*tasks)

    marker = asyncio.create_task(warm_marker())
    if rate:
        await open_loop()
    else:
        await asyncio.gather(*(closed_client() for _ in range(clients)))
    submit_end = time.perf_counter()
    if "t0" not in marks:
        marker.cancel()
        take_marks()
    exhausted = duration is not None and submit_end < t_stop - 0.5
    # Duration mode: the window is [warm-up end, end of submission]; count mode: until all commit.
    if duration is not None:
        t1, cpu1, done1 = time.perf_counter(), snapshot_cpu(pids), tr.finished
    await tr.wait_all(drain_s)
    if duration is None:
        t1, cpu1 = time.perf_counter(), snapshot_cpu(pids)
        last = max((d for d in tr.done if d > 0), default=t1)
        t1 = min(t1, last)
        done1 = tr.finished
    await session.close()
    await nc.drain()
    return _summarise(tr, marks, t1, cpu1, done1, pids, exhausted, sent_batches)


def _status_callback(tr: Tracker) -> Any:
    async def cb(msg: Any) -> None:
        tr.on_event(msg.data)

    return cb


def _timeline(tr: Tracker, t0: float, t1: float) -> list[dict[str, float]]:
    """Per second of the window: commits and the latency of what was sent in it (stalls show here)."""
    secs = max(1, math.ceil(t1 - t0))
    commits = [0] * secs
    lats: list[list[float]] = [[] for _ in range(secs)]
    for s, d in zip(tr.sent, tr.done, strict=True):
        if d > 0 and t0 <= d < t1:
            commits[min(secs - 1, int(d - t0))] += 1
        if d > 0 and s >= t0 and s < t1:
            lats[min(secs - 1, int(s - t0))].append((d - s) * 1000)
    out = []
    for i in range(secs):
        v = sorted(lats[i])
        out.append({"s": i, "commits": commits[i], "p50": round(_pct(v, 0.5), 1), "p99": round(_pct(v, 0.99), 1)})
    return out


def _pct(sorted_vals: list[float], q: float) -> float:
    if not sorted_vals:
        return float("nan")
    i = min(len(sorted_vals) - 1, max(0, math.ceil(q * len(sorted_vals)) - 1))
    return sorted_vals[i]


def _summarise(
    tr: Tracker,
    marks: dict[str, Any],
    t1: float,
    cpu1: dict[str, float],
    done1: int,
    pids: dict[str, int],
    exhausted: bool,
    sent_batches: int,
) -> dict[str, Any]:
    t0 = marks["t0"]
    window = max(t1 - t0, 1e-9)
    lat = sorted((d - s) * 1000 for s, d in zip(tr.sent, tr.done, strict=True) if s >= t0 and d > 0)
    committed = sum(1 for d in tr.done if d > 0)
    in_window = sum(1 for d in tr.done if t0 <= d <= t1)
    cpu0 = marks["cpu0"]
    ours = [k for k in cpu1 if k in cpu0 and not k.startswith("machine")]
    cpu_per_tx = {k: round((cpu1[k] - cpu0[k]) / max(in_window, 1) * 1e6, 1) for k in ours}
    cores_used = {k: round((cpu1[k] - cpu0[k]) / window, 2) for k in ours}
    machine_busy = (cpu1["machine"] - cpu0["machine"]) / window
    foreign = machine_busy - sum(cores_used.values())
    return {
        "timeline": _timeline(tr, t0, t1),
        "committed_tps": round(in_window / window, 1),
        "latency_ms": {
            "p50": round(_pct(lat, 0.50), 1),
            "p95": round(_pct(lat, 0.95), 1),
            "p99": round(_pct(lat, 0.99), 1),
            "max": round(lat[-1], 1) if lat else float("nan"),
            "samples": len(lat),
        },
        "acknowledged": tr.acked,
        "committed": committed,
        "failed": tr.failed,
        "invalid": dict(tr.invalid),
        "not_committed": tr.acked - committed - sum(tr.invalid.values()),
        "measured_window_s": round(window, 2),
        "committed_in_window": in_window,
        "workload_exhausted_early": exhausted,
        "batches_sent": sent_batches,
        "cpu_us_per_tx": cpu_per_tx,
        "cpu_cores_used": cores_used,
        "machine_busy_cores": round(machine_busy, 2),
        "foreign_busy_cores": round(max(0.0, foreign), 2),
        "machine_iowait_cores": round((cpu1["machine-iowait"] - cpu0["machine-iowait"]) / window, 2),
        "cpu_us_per_tx_total_services": round(sum(v for k, v in cpu_per_tx.items() if k != "bench-client"), 1),
        "rss_mb": {name: rss_mb(pid) for name, pid in pids.items()},
    }


# --- network: start one, or use a running one ----------------------------------------------------


@dataclass
class Target:
    gateway: str
    nats_url: str
    ledger: str
    pids: dict[str, int]
    key_files: list[str]
    executors: int
    net: LocalNetwork | None = None
    member_key_files: list[str] = field(default_factory=list)


def start_network(args: argparse.Namespace) -> Target:
    d = Path(tempfile.mkdtemp(prefix="conclavium-bench-"))
    opts = NetworkOptions(
        executors=args.executors,
        users=5,
        verify_threads=args.verify_threads,
        block_interval_ms=args.block_interval_ms,
        snapshot_every=args.snapshot_every,
        log_level="warning",
        eth=args.protocol == "eth",
        sawtooth=["intkey"] if args.protocol == "sawtooth" else [],
    )
    net = LocalNetwork(d, opts)
    try:
        net.start(timeout=120)
    except BaseException:
        net.stop()
        raise
    pids = {name: p.pid for name, p in net.procs.items() if p.pid}
    keys = [str(net.dir / u["key"]) for u in net.users]
    members = [str(net.dir / m["key"]) for m in net.members]
    return Target(net.gateway_url, net.nats_url, opts.ledger, pids, keys, args.executors, net, members)


def attach_network(directory: Path) -> Target:
    doc = json.loads((directory / "local.json").read_text())
    pids = {p["name"]: p["pid"] for p in doc["processes"] if p.get("pid")}
    keys = [str(directory / u["key"]) for u in doc["users"]] or [str(directory / m["key"]) for m in doc["members"]]
    n_exec = sum(1 for n in pids if n.startswith("executor-"))
    members = [str(directory / m["key"]) for m in doc["members"]]
    return Target(doc["gateway_url"], doc["nats_url"], doc.get("ledger", "local"), pids, keys, n_exec, None, members)


# --- modes ---------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "load_avg_before": [round(x, 2) for x in os.getloadavg()],
        "shared_machine": True,
    }


def run_once(t: Target, args: argparse.Namespace, rate: float | None, duration: float | None) -> dict[str, Any]:
    if duration is None:
        total = args.count
    else:
        expect = rate if rate else args.max_rate
        total = int(expect * (duration + args.warmup) * 1.05) + args.batch
    total = max(args.batch, total)
    ts, started_ms = time.perf_counter(), time.time() * 1000
    batches = PROTOCOLS[args.protocol].presign(t, args, total)
    sign_s = time.perf_counter() - ts
    stamped_s = (min(b.ts_ms for b in batches) - started_ms) / 1000 if batches[0].ts_ms is not None else 0.0
    if sign_s - stamped_s + args.warmup + (duration or 0) > VALIDITY_BUDGET_S:
        print(f"warning: signing took {sign_s:.0f}s; late transactions may expire", file=sys.stderr)
    res = asyncio.run(
        drive(
            t.gateway,
            t.nats_url,
            t.ledger,
            batches,
            clients=args.clients,
            window=args.window,
            rate=rate,
            duration=duration,
            warmup=args.warmup,
            pids=t.pids,
        )
    )
    res["presign_s"] = round(sign_s, 1)
    res["offered_rate"] = rate
    return res


def anchor_run(t: Target, args: argparse.Namespace) -> dict[str, Any]:
    """The same load shape as public key-value writes, on the same network, right after: the
    figure to read a protocol's throughput beside (the machine drifts between runs)."""
    kv = argparse.Namespace(**{**vars(args), "protocol": "kv", "private_ratio": 0.0})
    r = run_once(t, kv, args.rate, args.duration)
    return {k: r[k] for k in ("committed_tps", "latency_ms", "acknowledged", "committed", "failed", "cpu_us_per_tx")}


def print_result(r: dict[str, Any]) -> None:
    lat = r["latency_ms"]
    print(
        f"committed {r['committed_tps']:.0f} tx/s  p50 {lat['p50']} ms  p95 {lat['p95']} ms  p99 {lat['p99']} ms  "
        f"max {lat['max']} ms  acked {r['acknowledged']} committed {r['committed']} failed {r['failed']} "
        f"invalid {sum(r['invalid'].values())}"
    )
    if "eth_ceiling" in r:
        a, c = r["anchor"], r["eth_ceiling"]
        print(
            f"anvil (same signed transfers, same machine, this run): {a['anvil_tps']} tx/s {a.get('error', '')}; "
            f"Ethereum ceiling {c['ceiling_tps']} tx/s (decode+recover {c['decode_recover_us']} us, "
            f"EVM {c['evm_transfer_us']} us per transfer); this run = {r['eth_fraction_of_ceiling']:.1%} of it"
        )
    elif "ceiling" in r:
        c = r["ceiling"]
        print(
            f"ceiling {c['ceiling_tps']} tx/s (crypto {c['crypto_us_per_tx']} us/tx: "
            f"verify {c['ed25519_verify_us']} us x {r['config']['executors']} executors); "
            f"this run = {r['fraction_of_ceiling']:.1%} of it"
        )
    print("CPU us/tx:", ", ".join(f"{k} {v}" for k, v in r["cpu_us_per_tx"].items()))
    print("cores used:", ", ".join(f"{k} {v}" for k, v in r["cpu_cores_used"].items()))
    print(
        f"machine busy {r['machine_busy_cores']} cores, of which not ours {r['foreign_busy_cores']} "
        f"(shared machine); iowait {r['machine_iowait_cores']}"
    )
    print("RSS MB:", ", ".join(f"{k} {v['rss']}" for k, v in r["rss_mb"].items() if v))
    if "latency_ms" in r.get("anchor", {}):
        a, lat = r["anchor"], r["anchor"]["latency_ms"]
        print(
            f"anchor (public key-value writes, same shape, same network, right after): {a['committed_tps']:.0f} tx/s "
            f"p50 {lat['p50']} ms p99 {lat['p99']} ms; "
            f"this protocol = {r['committed_tps'] / a['committed_tps']:.0%} of it"
        )
    if r.get("workload_exhausted_early"):
        print("warning: the signed workload ran out before the end: raise --max-rate; the figure is a lower bound")


def sweep(t: Target, args: argparse.Namespace) -> dict[str, Any]:
    """Closed-loop peak first, then open-loop runs at fractions of it."""
    dur = args.duration or 5.0
    peak = run_once(t, args, None, dur)
    rates = (
        [float(x) for x in args.rates.split(",")]
        if args.rates
        else [round(peak["committed_tps"] * f, -1) for f in (0.25, 0.5, 0.75, 1.0)]
    )
    rows = [{"mode": "closed-loop peak", **_row(peak)}]
    for rate in rates:
        if rate <= 0:
            continue
        r = run_once(t, args, rate, dur)
        rows.append({"mode": "open-loop", **_row(r)})
    print(f"\n{'offered tx/s':>12} {'committed tx/s':>15} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for row in rows:
        off = "closed" if row["offered"] is None else f"{row['offered']:.0f}"
        print(
            f"{off:>12} {row['committed_tps']:>15.0f} {row['p50']:>8} {row['p95']:>8} {row['p99']:>8} {row['max']:>8}"
        )
    png = Path(args.plot)
    _plot(rows, png, t.executors)
    print(f"plot: {png}")
    return {"peak": peak, "rows": rows, "plot": str(png)}


def _row(r: dict[str, Any]) -> dict[str, Any]:
    lat = r["latency_ms"]
    return {
        "offered": r["offered_rate"],
        "committed_tps": r["committed_tps"],
        "p50": lat["p50"],
        "p95": lat["p95"],
        "p99": lat["p99"],
        "max": lat["max"],
        "failed": r["failed"],
    }


def _plot(rows: list[dict[str, Any]], path: Path, executors: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = sorted((r for r in rows if r["offered"]), key=lambda r: r["offered"])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    x = [r["committed_tps"] for r in pts]
    for key, style in (("p50", "o-"), ("p95", "s--"), ("p99", "^-")):
        ax.plot(x, [r[key] for r in pts], style, label=key)
    ax.set_xlabel("committed tx/s (open-loop offered load)")
    ax.set_ylabel("submit-to-commit latency, ms")
    ax.set_yscale("log")
    ax.axhline(100, color="grey", lw=0.8, ls=":")
    ax.set_title(f"Conclavium, {executors} executor(s), {os.cpu_count()} cores (shared machine)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def postgres(args: argparse.Namespace) -> dict[str, Any]:
    """PostgreSQL insert-only throughput, 100-byte rows, synchronous_commit=on: the yardstick."""
    script = Path(__file__).with_name("pgbench.sh")
    env = {**os.environ, "PG_DURATION": str(int(args.duration or 20)), "PG_CLIENTS": str(args.clients)}
    out = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=300)
    print(out.stdout)
    if out.returncode != 0:
        print(out.stderr, file=sys.stderr)
        raise SystemExit(out.returncode)
    tps, lat = None, None
    for line in out.stdout.splitlines():
        if line.startswith("tps =") and tps is None:
            tps = float(line.split()[2])
        if line.startswith("latency average ="):
            lat = float(line.split()[3])
    return {"postgres_insert_tps": tps, "postgres_latency_avg_ms": lat, "clients": args.clients}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--net", type=Path, help="target a running network (DIR/local.json) instead of starting one")
    p.add_argument("--executors", type=int, default=3)
    p.add_argument(
        "--protocol",
        default="kv",
        choices=sorted(PROTOCOLS),
        help="which application's transactions to send: "
        + "; ".join(f"{name}: {proto.about}" for name, proto in sorted(PROTOCOLS.items())),
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument("--count", type=int, help="number of transactions (default 5000 when no --duration)")
    g.add_argument("--duration", type=float, help="seconds of measured load (after warm-up)")
    p.add_argument("--clients", type=int, default=16, help="concurrent HTTP clients")
    p.add_argument("--batch", type=int, default=100, help="transactions per request (1 = POST /v1/transactions)")
    p.add_argument("--window", type=int, default=2, help="closed loop: uncommitted batches per client")
    p.add_argument("--private-ratio", type=float, default=0.5, help="share of writes to private maps")
    p.add_argument("--keys", type=int, default=0, help="write to this many distinct keys (default: a new key each)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds excluded from the figures")
    p.add_argument("--rate", type=float, help="open-loop offered load, tx/s (default: closed loop)")
    p.add_argument("--max-rate", type=float, default=25000, help="duration mode: transactions signed per second")
    p.add_argument("--json", type=Path, help="write the result here")
    p.add_argument("--sweep", action="store_true", help="load-vs-latency: closed-loop peak, then open-loop rates")
    p.add_argument("--rates", help="sweep: comma-separated tx/s (default: fractions of the measured peak)")
    p.add_argument("--plot", default="bench-sweep.png", help="sweep: PNG output")
    p.add_argument("--postgres", action="store_true", help="PostgreSQL insert-only yardstick with pgbench")
    p.add_argument("--verify-threads", type=int, default=2, help="executor signature-verification threads")
    p.add_argument("--block-interval-ms", type=float, default=5.0)
    p.add_argument("--snapshot-every", type=int, default=100_000, help="executors snapshot after this many entries")
    p.add_argument("--keep", action="store_true", help="leave the started network's directory on disk")
    a = p.parse_args(argv)
    if a.count is None and a.duration is None and not a.sweep:
        a.count = 5000
    if a.count is not None and a.warmup == p.get_default("warmup"):
        a.warmup = 0.0
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.postgres:
        result = postgres(args)
    else:
        info = machine_info()
        t = attach_network(args.net) if args.net else start_network(args)
        try:
            if args.protocol == "notary":
                enable_notary(t, t.member_key_files)
            ceiling = measure_ceiling(t.executors, private_ratio=args.private_ratio)
            if args.sweep:
                result = sweep(t, args)
                result["ceiling"] = ceiling
            else:
                result = run_once(t, args, args.rate, args.duration)
                result["ceiling"] = ceiling
                result["fraction_of_ceiling"] = round(result["committed_tps"] / ceiling["ceiling_tps"], 3)
                if args.protocol == "eth":
                    from bench import eth_workload as ew
                    from conclavium.local.processes import free_port

                    w = ETH_STATE["workload"]
                    result["eth_ceiling"] = ew.ceiling(w, t.executors)
                    result["eth_fraction_of_ceiling"] = round(
                        result["committed_tps"] / result["eth_ceiling"]["ceiling_tps"], 3
                    )
                    try:
                        result["anchor"] = ew.anvil_anchor(w, args.batch, free_port())
                    except (OSError, TimeoutError, RuntimeError) as e:  # the ledger's figures still count
                        result["anchor"] = {"anvil_tps": None, "error": str(e)[:200]}
                elif args.protocol != "kv":
                    result["anchor"] = anchor_run(t, args)
            result["config"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()} | {
                "executors": t.executors,
                "command": " ".join(sys.argv),
            }
            result["machine"] = info
            if not args.sweep:
                print_result(result)
        finally:
            if t.net is not None:
                t.net.stop()
                if not args.keep:
                    import shutil

                    shutil.rmtree(t.net.dir, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
