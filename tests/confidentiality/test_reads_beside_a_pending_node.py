"""Signed reads while a node that is not endorsed listens on the shared read subject.

Any executor that runs answers the ledger's shared query subject, and NATS hands each read to one
of them at random; a joiner still waiting for the members' vote (or still catching up) has no
endorsement to sign with. A real network with auto-trust voted off gets a second executor whose join
stays Pending; every read a pinned client makes through the gateway must still verify: the pending
node sends each read it is handed elsewhere (`behind`), and the gateway asks again.

Time budget: about 15 s alone on this machine.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from urllib.error import HTTPError
from urllib.request import urlopen

from conclavium.crypto.keys import PrivateKey
from conclavium.governance.constitution import default_constitution
from conclavium.local.network import LocalNetwork, start_network
from conclavium.local.processes import Process, free_port, service_command
from conclavium.sdk.client import Client


def _readyz(port: int) -> tuple[int, str]:
    try:
        with urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
            return r.status, r.read().decode()
    except HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return 0, ""


def _asked(port: int) -> float:
    """Queries this executor was handed (its own metrics)."""
    with urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("conclavium_executor_queries_total{")
    )


async def _vote_auto_trust_off(net: LocalNetwork) -> None:
    members = [Client(net.gateway_url, net.member_key(i)) for i in range(len(net.members))]
    try:
        constitution = {**default_constitution(), "auto_trust_nodes": False}
        p = await members[0].propose([{"name": "set_constitution", "args": {"constitution": constitution}}])
        await members[0].wait(p["tx_hash"])
        for m in members[: len(members) // 2 + 1]:  # the default rule: a majority
            status = await m.wait((await m.vote(p["proposal_id"], True))["tx_hash"])
            assert status["status"] == "Committed"
    finally:
        for m in members:
            await m.close()


async def test_a_pending_node_never_hands_out_an_unsigned_answer(tmp_path: Path) -> None:
    net = await asyncio.to_thread(start_network, tmp_path, executors=1, redis=False)
    joiner: Process | None = None
    try:
        await _vote_auto_trust_off(net)
        port = free_port()
        argv = [*service_command("conclavium-executor", "services.executor.main"), "--ledger", net.opt.ledger]
        argv += ["--nats-url", net.nats_url, "--name", "pending-0", "--data-dir", str(net.dir / "nodes" / "pending-0")]
        argv += ["--http-port", str(port)]
        joiner = Process("pending-0", argv, net.dir / "logs" / "pending-0.log", port=port)
        joiner.start()
        user = PrivateKey.from_file(str(net.dir / net.users[0]["key"]))
        async with Client(net.gateway_url, user, **net.trust()) as reader:
            deadline = time.monotonic() + 60
            while {"name": "pending-0", "status": "Pending"} not in [
                {"name": n["name"], "status": n["status"]} for n in (await reader.service())["nodes"]
            ]:
                assert time.monotonic() < deadline, "the joiner's join was never recorded"
                await asyncio.sleep(0.2)
            h = await reader.put("public:notes", "k", 7)
            assert (await reader.wait(h))["status"] == "Committed"
            before = await asyncio.to_thread(_asked, port)
            for _ in range(40):
                assert await reader.get("public:notes", "k") == 7
                assert (await reader.service())["ledger"] == net.opt.ledger
        assert await asyncio.to_thread(_asked, port) > before, "the pending node was never handed a read"
        status = json.loads((await asyncio.to_thread(_readyz, port))[1] or "{}")
        assert status["status"] == "not_ready", "the joiner was trusted after all: the test proved nothing"
    finally:
        if joiner is not None:
            joiner.stop()
        await asyncio.to_thread(net.stop)
