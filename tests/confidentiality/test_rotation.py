"""Rotating the ledger secret and transaction key by governance while clients write private data:
nothing is lost, history before and after stays readable, clients pick up the new key, and an
executor restarted after the rotation still reads old entries."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from conclavium import query, streams
from conclavium.crypto.keys import PrivateKey
from conclavium.encoding import dumps, loads
from conclavium.local.network import LocalNetwork, start_network
from conclavium.runtime import connect_nats
from conclavium.sdk.client import Client


async def _load(client: Client, count: int, acked: dict[str, str], stop: asyncio.Event) -> int:
    """Write up to `count` entries (until `stop`); returns how many were started."""
    sem = asyncio.Semaphore(8)

    async def one(i: int) -> None:
        async with sem:
            key = f"entry-{i:05d}"
            for _ in range(20):
                try:
                    acked[await client.put("ledgerbook", key, f"value-{i}")] = key
                    return
                except Exception:
                    await asyncio.sleep(0.2)

    tasks = []
    for i in range(count):
        if stop.is_set():
            break
        tasks.append(asyncio.create_task(one(i)))
        await asyncio.sleep(0.004)
    await asyncio.gather(*tasks)
    return len(tasks)


async def _ask_node(net: LocalNetwork, name: str, user: PrivateKey, tx_key: tuple[str, bytes], key: str) -> str:
    q, reply_key, body = query.make(user, net.opt.ledger, "ledgerbook", key, int(time.time() * 1000), tx_key)
    nc = await connect_nats(net.nats_url, "rotation-test")
    try:
        msg = await nc.request(
            streams.node_query_subject(net.opt.ledger, name), dumps({"type": "query", "query": q}), timeout=5
        )
    finally:
        await nc.close()
    return str(query.open_reply(loads(msg.data), reply_key, body)["value"])


async def test_rotation_under_load(tmp_path: Path) -> None:
    net = await asyncio.to_thread(start_network, tmp_path, redis=False, snapshot_every=200)
    user = PrivateKey.from_file(str(net.dir / net.users[0]["key"]))
    writer = Client(net.gateway_url, user, **net.trust())
    members = [Client(net.gateway_url, net.member_key(i)) for i in range(2)]
    try:
        old_key = await writer.tx_key()
        acked: dict[str, str] = {}
        stop = asyncio.Event()
        # Writes go on until 200 more than were acknowledged when the new key appeared: however
        # slowly the machine commits the rotation, writes straddle it.
        load = asyncio.create_task(_load(writer, 20_000, acked, stop))
        while len(acked) < 300:
            await asyncio.sleep(0.05)
        p = await members[0].propose([{"name": "rotate_ledger_secret", "args": {}}])
        await members[0].wait(p["tx_hash"])
        for m in members:
            await m.wait((await m.vote(p["proposal_id"], True))["tx_hash"])
        deadline = time.monotonic() + 60
        while (await members[0].service())["tx_key"]["id"] == old_key[0]:
            assert time.monotonic() < deadline, "no new generation after the rotation was accepted"
            await asyncio.sleep(0.2)
        rotated_at = len(acked)
        while len(acked) < rotated_at + 200 and not load.done():
            await asyncio.sleep(0.05)
        stop.set()
        written = await load
        assert len(acked) == written and rotated_at + 200 <= written
        for h in acked:
            st = await writer.wait(h, timeout=60)
            assert st["status"] == "Committed", st
        writer._tx_key = None
        new_key = await writer.tx_key()
        assert new_key != old_key, "clients pick up the new transaction key"
        assert await writer.get("ledgerbook", "entry-00000") == "value-0"
        last = written - 1
        assert await writer.get("ledgerbook", f"entry-{last:05d}") == f"value-{last}"
        fresh = await writer.put("ledgerbook", "after-rotation", "new")
        assert (await writer.wait(fresh))["status"] == "Committed"

        victim = net.procs["executor-2"]
        victim.kill()
        await asyncio.to_thread(victim.start)
        deadline = time.monotonic() + 60
        while True:
            try:
                if await _ask_node(net, "executor-2", user, new_key, "entry-00001") == "value-1":
                    break
            except Exception:
                pass
            assert time.monotonic() < deadline, "restarted executor cannot read history"
            await asyncio.sleep(0.5)
        assert await _ask_node(net, "executor-2", user, new_key, "after-rotation") == "new"
        log = (net.dir / "logs" / "executor-2.log").read_text()
        assert "loaded snapshot" in log
    finally:
        for c in (writer, *members):
            await c.close()
        await asyncio.to_thread(net.stop)
