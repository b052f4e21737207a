"""Stop and restart the NATS server mid-stream (same port, same store): the gateway answers 503 with
Retry-After while it is down, every service reconnects on its own, and every acknowledged
transaction is committed exactly once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest
from fault_support import Load, verify_exactly_once, wait_single_active

from conclavium.crypto.keys import PrivateKey
from conclavium.local.network import start_network
from conclavium.local.processes import free_port
from conclavium.sdk.client import Client, ClientError
from conclavium.tx import SignedTx

DOWN_S = 3.0


async def _post(gateway: str, tx: SignedTx) -> tuple[int, str | None, float]:
    """Submit one transaction; return the status, its Retry-After and how long the answer took."""
    t0 = time.monotonic()
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s,
        s.post(f"{gateway}/v1/transactions", json=tx.to_json()) as r,
    ):
        return r.status, r.headers.get("Retry-After"), time.monotonic() - t0


async def _commit_after_restart(client: Client, acked: dict[str, float]) -> tuple[float, float]:
    """Seconds until a transaction submitted now is acknowledged, and until it is committed: the
    whole path works again."""
    t0 = time.monotonic()
    tx = await client.build([{"op": "put", "map": "public:probe", "key": "after-restart", "value": 2}])
    for _ in range(100):
        try:
            h = await client.submit(tx)
            acked[h] = time.monotonic()
            break
        except (ClientError, aiohttp.ClientError):
            await asyncio.sleep(0.1)
    accepted = time.monotonic() - t0
    assert (await client.wait(h, timeout=30))["status"] == "Committed"
    return accepted, time.monotonic() - t0


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_nats_restart_mid_stream(tmp_path: Path, how: str) -> None:
    net = await asyncio.to_thread(start_network, tmp_path, sequencers=2, redis=True)
    key = PrivateKey.from_file(str(net.dir / net.users[0]["key"]))
    probe = Client(net.gateway_url, key, ledger=net.opt.ledger)
    try:
        await wait_single_active(net)
        load = Load(net, total=20_000, workers=16)
        task = asyncio.create_task(load.run())
        await load.wait_acked(800)

        nats = net.procs["nats"]
        await asyncio.to_thread(nats.stop if how == "stop" else nats.kill)
        down_at = time.monotonic()
        acked_before = len(load.acked)
        await asyncio.sleep(0.3)
        tx = await probe.build([{"op": "put", "map": "public:probe", "key": "during-outage", "value": 1}])
        status, retry_after, took = await _post(net.gateway_url, tx)
        assert (status, retry_after) == (503, "1"), (status, retry_after)
        async with aiohttp.ClientSession() as s, s.get(f"{net.gateway_url}/v1/state/public:faults/load-0") as r:
            code = (await r.json())["error"]["code"]
            assert (r.status, code, r.headers.get("Retry-After")) == (503, "no_executor", "1")
        await asyncio.sleep(max(0.0, DOWN_S - (time.monotonic() - down_at)))
        await asyncio.to_thread(nats.start)
        await asyncio.to_thread(nats.wait_ready)
        up_at = time.monotonic()
        probe_task = asyncio.create_task(_commit_after_restart(probe, load.acked))
        await load.wait_acked(acked_before + 1, timeout=30)
        first_ack_s = time.monotonic() - up_at
        await load.wait_acked(acked_before + 1000)
        load.stop()
        accept_s, commit_s = await probe_task
        assert await probe.submit(tx) == tx.hash.hex()
        load.acked[tx.hash.hex()] = time.monotonic()
        await task
        report = await verify_exactly_once(net, load.acked)
        await wait_single_active(net)
        print(
            f"\nNATS {how}, down {up_at - down_at:.1f}s: gateway answered 503 in {took:.2f}s while down; after the "
            f"restart a new transaction was accepted in {accept_s:.2f}s and committed in {commit_s:.2f}s, "
            f"the load's first 202 came {first_ack_s:.2f}s after it; {load.retries} client retries "
            f"{dict(load.errors)}\n{report.summary()}"
        )
    finally:
        await probe.close()
        await asyncio.to_thread(net.stop)


async def test_the_ledger_on_a_nats_that_syncs_every_write(tmp_path: Path) -> None:
    """Budget: about 45 s. docs/operations.md's setting for an R1 stream that must survive a power
    loss: `sync_interval: always` in the NATS configuration. The server takes it (its /varz says
    `sync_always`), the ledger commits on it under load, and a `kill -9` of NATS mid-load loses
    nothing acknowledged. A power loss itself is not reproduced here."""
    net = await asyncio.to_thread(start_network, tmp_path, sequencers=1, redis=True)
    try:
        nats = net.procs["nats"]
        conf = Path(nats.argv[-1])
        monitor = free_port()
        await asyncio.to_thread(nats.stop)
        text = conf.read_text().replace("jetstream {\n", "jetstream {\n  sync_interval: always\n")
        conf.write_text(f"http: 127.0.0.1:{monitor}\n{text}")
        await asyncio.to_thread(nats.start)
        await asyncio.to_thread(nats.wait_ready)
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{monitor}/varz") as r:
            js_config = (await r.json())["jetstream"]["config"]
        assert js_config.get("sync_always") is True, js_config
        await wait_single_active(net)

        load = Load(net, total=3000, workers=16)
        task = asyncio.create_task(load.run())
        await load.wait_acked(1000)
        await asyncio.to_thread(nats.kill)
        await asyncio.sleep(1.0)
        await asyncio.to_thread(nats.start)
        await asyncio.to_thread(nats.wait_ready)
        await task
        report = await verify_exactly_once(net, load.acked)
        print(
            f"\nNATS with sync_interval: always, killed mid-load: {len(load.acked)} tx in "
            f"{load.finished - load.started:.1f}s, {load.retries} client retries\n{report.summary()}"
        )
    finally:
        await asyncio.to_thread(net.stop)
