"""Blocks that anyone with write access to NATS could append: executors refuse what does not
extend the hash chain (and count it), refuse tampered transactions, and the ledger carries on."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from urllib.request import urlopen

import nats
from ledger_support import user_keys

from conclavium import streams
from conclavium.block import BLOCK_VERSION, Block, Entry, Kind, block_hash, decode_block, encode
from conclavium.local.network import LocalNetwork
from conclavium.sdk.client import Client
from conclavium.tx import make_body, sign


def _metric(port: int, name: str, labels: str = "") -> float:
    with urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


async def _append_after_tip(net: LocalNetwork, make: callable) -> None:  # type: ignore[valid-type]
    """Append make(height, prev) right after the current tip, as a rogue writer would."""
    nc = await nats.connect(net.nats_url)
    js = nc.jetstream()
    stream = streams.ledger_stream(net.opt.ledger)
    try:
        for _ in range(20):
            info = await js.stream_info(stream)
            last = await js.get_msg(stream, info.state.last_seq)
            tip = decode_block(last.data)
            raw = encode(make(tip.height + 1, block_hash(last.data), tip.ts_ms))
            try:
                await js.publish(
                    streams.ledger_subject(net.opt.ledger),
                    raw,
                    headers={"Nats-Expected-Last-Sequence": str(info.state.last_seq)},
                )
                return
            except nats.js.errors.APIError:
                await asyncio.sleep(0.05)
        raise AssertionError("could not append after the tip")
    finally:
        await nc.close()


def _executor_ports(net: LocalNetwork) -> list[int]:
    return [p.port for n, p in net.procs.items() if n.startswith("executor-")]  # type: ignore[misc]


async def test_block_with_wrong_previous_hash_is_refused(network: LocalNetwork) -> None:
    ports = _executor_ports(network)
    label = '{reason="bad_prev"}'
    before = [_metric(p, "conclavium_executor_rejected_blocks_total", label) for p in ports]

    def forged(height: int, prev: bytes, ts: int) -> Block:
        return Block(BLOCK_VERSION, network.opt.ledger, height, hashlib.sha256(b"not the tip").digest(), ts, [], [])

    await _append_after_tip(network, forged)
    c = Client(network.gateway_url, user_keys(network)[0])
    try:
        h = await c.put("public:integrity", "after-forged-block", 1)
        assert (await c.wait(h, timeout=30))["status"] == "Committed"
    finally:
        await c.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        after = [_metric(p, "conclavium_executor_rejected_blocks_total", label) for p in ports]
        if all(a == b + 1 for a, b in zip(after, before, strict=True)):
            break
        await asyncio.sleep(0.1)
    assert after == [b + 1 for b in before]


async def test_block_with_a_modified_transaction_is_refused(network: LocalNetwork) -> None:
    key = user_keys(network)[0]
    ops = [{"op": "put", "map": "public:integrity", "key": "amount", "value": 100}]
    genuine = sign(key, make_body(network.opt.ledger, key.key_id, ops, int(time.time() * 1000)))
    tampered_body = genuine.body.replace(b'"value":100', b'"value":999')
    assert tampered_body != genuine.body

    def tampered(height: int, prev: bytes, ts: int) -> Block:
        entry = Entry(Kind.TX, tampered_body, genuine.signature)
        return Block(BLOCK_VERSION, network.opt.ledger, height, prev, max(ts, int(time.time() * 1000)), [entry], [])

    await _append_after_tip(network, tampered)
    c = Client(network.gateway_url, key)
    try:
        st = await c.wait(hashlib.sha256(tampered_body).hexdigest(), timeout=30)
        assert st["status"] == "Invalid" and st["reason"] == "bad_signature"
        h = await c.submit(genuine)
        assert (await c.wait(h))["status"] == "Committed"
        assert await c.get("public:integrity", "amount") == 100
    finally:
        await c.close()
