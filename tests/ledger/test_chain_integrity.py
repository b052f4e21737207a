"""Blocks that anyone with write access to NATS could append: executors refuse what does not
extend the hash chain (and count it), refuse tampered transactions, and the ledger carries on."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from urllib.request import urlopen

from ledger_support import user_keys
from rogue_sequencer import append_after_tip, following

from conclavium.block import Block, Entry, Kind
from conclavium.local.network import LocalNetwork
from conclavium.sdk.client import Client
from conclavium.tx import make_body, sign


def _metric(port: int, name: str, labels: str = "") -> float:
    with urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def _executor_ports(net: LocalNetwork) -> list[int]:
    return [p.port for n, p in net.procs.items() if n.startswith("executor-")]  # type: ignore[misc]


async def test_block_with_wrong_previous_hash_is_refused(network: LocalNetwork) -> None:
    ports = _executor_ports(network)
    label = '{reason="bad_prev"}'
    before = [_metric(p, "conclavium_executor_rejected_blocks_total", label) for p in ports]

    def forged(tip: Block, prev: bytes) -> Block:
        return following(tip, hashlib.sha256(b"not the tip").digest(), [])

    await append_after_tip(network, forged)
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

    def tampered(tip: Block, prev: bytes) -> Block:
        return following(tip, prev, [Entry(Kind.TX, tampered_body, genuine.signature)])

    await append_after_tip(network, tampered)
    c = Client(network.gateway_url, key)
    try:
        st = await c.wait(hashlib.sha256(tampered_body).hexdigest(), timeout=30)
        assert st["status"] == "Invalid" and st["reason"] == "bad_signature"
        h = await c.submit(genuine)
        assert (await c.wait(h))["status"] == "Committed"
        assert await c.get("public:integrity", "amount") == 100
    finally:
        await c.close()
