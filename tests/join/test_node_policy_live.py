"""The node policy governed through the running ledger: real gateway, sequencer and executors.

The upgrade walk-through with executors that really run the new build (a virtual measurement stands
for it): allow the new measurement, start nodes running it, retire the old ones one at a time while
the ledger keeps committing, disallow the old measurement; afterwards a join of the old build is
refused. And a `set_node_policy` voted by the members refuses the next join and shows up as
attestation drift on the executors' metrics.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from test_join import _extra_executor, _fresh, _node_info, _submit_join, _virtual

from conclavium.attestation import expected_report_data
from conclavium.cli.local import _node_status
from conclavium.crypto.keys import PrivateKey
from conclavium.local.network import LocalNetwork
from conclavium.local.processes import Process
from conclavium.node_messages import VIRTUAL_DEV_MEASUREMENT
from conclavium.sdk.client import Client

NEW = "5e" * 48


@pytest.fixture(scope="module")
def live_net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    from conclavium.local.network import start_network

    net = start_network(tmp_path_factory.mktemp("policy"), redis=False)
    yield net
    net.stop()


class Members:
    def __init__(self, net: LocalNetwork) -> None:
        self.clients = [Client(net.gateway_url, net.member_key(i)) for i in range(len(net.members))]

    async def decide(self, actions: list[dict[str, Any]]) -> str:
        """Propose and have every member approve; the proposal's final state."""
        p = await self.clients[0].propose(actions)
        assert (await self.clients[0].wait(p["tx_hash"]))["status"] == "Committed"
        pid = str(p["proposal_id"])
        for c in self.clients:
            state = (await c.proposal(pid))["state"]
            if state != "Open":
                return str(state)
            b = await c.vote(pid, True)
            assert (await c.wait(b["tx_hash"]))["status"] == "Committed"
        return str((await self.clients[0].proposal(pid))["state"])

    async def close(self) -> None:
        for c in self.clients:
            await c.close()


async def _refused(net: LocalNetwork, user: Client, measurement: bytes) -> str:
    """Submit the join of a fresh virtual node running `measurement`; the refusal message."""
    key, enc, bound = _fresh()
    info = _node_info(key, enc, _virtual(measurement, expected_report_data(bound)), f"probe-{key.key_id[:6]}")
    st = await user.wait(await _submit_join(net, info, key))
    assert (st["status"], st["reason"]) == ("Invalid", "attestation_refused"), st
    return str(st["message"])


async def _wait_ready(net: LocalNetwork, names: list[str], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    pending = list(names)
    while pending and time.monotonic() < deadline:
        statuses = await _node_status(net.nats_url, net.opt.ledger, pending)
        pending = [n for n, st in zip(pending, statuses, strict=True) if not st.get("ready")]
        await asyncio.to_thread(net.endorse_nodes)  # each joined node is endorsed by its member
        await asyncio.sleep(0.3)
    assert not pending, f"not ready: {pending}"


async def _nodes(user: Client) -> dict[str, dict[str, Any]]:
    return {n["name"]: n for n in (await user.service())["nodes"]}


async def _commits(user: Client, key: str) -> None:
    st = await user.wait(await user.put("public:upgrade", key, 1), timeout=45)
    assert st["status"] == "Committed", st


def _metric(proc: Process, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.port}/metrics", timeout=5) as r:
        text = r.read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not served")


async def test_policy_vote_refuses_next_join_and_shows_drift(live_net: LocalNetwork) -> None:
    members = Members(live_net)
    user = Client(live_net.gateway_url, PrivateKey.from_file(str(live_net.dir / live_net.users[0]["key"])))
    try:
        old = bytes.fromhex(VIRTUAL_DEV_MEASUREMENT)
        pinned = {"environment": "development", "platforms": ["virtual"], "host_data": ["ab" * 32]}
        assert await members.decide([{"name": "set_node_policy", "args": {"policy": pinned}}]) == "Accepted"
        assert "host_data_not_allowed" in await _refused(live_net, user, old)
        executor = live_net.procs["executor-0"]
        deadline = time.monotonic() + 15
        while _metric(executor, "conclavium_executor_attestation_drift_nodes") != 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.3)
        assert _metric(executor, "conclavium_executor_attestation_drift_nodes") == 3
        await _commits(user, "still-committing")
        node_id = (await _nodes(user))["executor-1"]["id"]
        _, att = await user._request("GET", f"/v1/nodes/{node_id}/attestation")
        assert [f["check"] for f in att["policy_failures"]] == ["host_data_not_allowed"], att["policy_failures"]
        # A restarted executor reports the drift from its restored state, before any new block.
        executor.stop()
        executor.start()
        executor.wait_ready()
        await _wait_ready(live_net, ["executor-0"])
        assert _metric(executor, "conclavium_executor_attestation_drift_nodes") == 3
        back = {"environment": "development", "platforms": ["virtual"]}
        assert await members.decide([{"name": "set_node_policy", "args": {"policy": back}}]) == "Accepted"
        deadline = time.monotonic() + 15
        while _metric(executor, "conclavium_executor_attestation_drift_nodes") != 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.3)
        assert _metric(executor, "conclavium_executor_attestation_drift_nodes") == 0
        _, att = await user._request("GET", f"/v1/nodes/{node_id}/attestation")
        assert att["policy_failures"] == []
    finally:
        await members.close()
        await user.close()


async def test_upgrade_walkthrough_with_running_nodes(live_net: LocalNetwork) -> None:
    members = Members(live_net)
    user = Client(live_net.gateway_url, PrivateKey.from_file(str(live_net.dir / live_net.users[0]["key"])))
    fresh: list[Process] = []
    try:
        old_names = sorted(n for n in await _nodes(user) if n.startswith("executor-"))
        assert len(old_names) == 3
        assert "measurement_not_allowed" in await _refused(live_net, user, bytes.fromhex(NEW))
        allow = {"name": "allow_measurement", "args": {"platform": "virtual", "measurement": NEW}}
        assert await members.decide([allow]) == "Accepted"
        for i in range(3):
            proc = _extra_executor(live_net, f"upgraded-{i}")
            proc.argv += ["--virtual-measurement", NEW]
            fresh.append(proc)
            proc.start()
            proc.wait_ready()
        await _wait_ready(live_net, [p.name for p in fresh])
        nodes = await _nodes(user)
        for p in fresh:
            assert nodes[p.name]["status"] == "Trusted" and nodes[p.name]["endorsed"], nodes[p.name]
        await _commits(user, "six-nodes")
        for name in old_names:
            node_id = (await _nodes(user))[name]["id"]
            assert await members.decide([{"name": "retire_node", "args": {"node_id": node_id}}]) == "Accepted"
            deadline = time.monotonic() + 15
            while (await _nodes(user))[name]["status"] != "Retired" and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            assert (await _nodes(user))[name]["status"] == "Retired"
            await _commits(user, f"after-retiring-{name}")
        disallow = {
            "name": "disallow_measurement",
            "args": {"platform": "virtual", "measurement": VIRTUAL_DEV_MEASUREMENT},
        }
        assert await members.decide([disallow]) == "Accepted"
        assert "measurement_not_allowed" in await _refused(live_net, user, bytes.fromhex(VIRTUAL_DEV_MEASUREMENT))
        trusted = {n for n, row in (await _nodes(user)).items() if row["status"] == "Trusted"}
        assert trusted == {p.name for p in fresh}
        await _commits(user, "upgraded")
        receipt = await user.receipt(await user.put("public:upgrade", "signed-by-new", 1))
        assert {s["node"] for s in receipt["signatures"]} <= {(await _nodes(user))[p.name]["id"] for p in fresh}
    finally:
        for p in fresh:
            p.stop()
        await members.close()
        await user.close()


async def test_tee_node_without_evidence_logs_and_retries(live_net: LocalNetwork) -> None:
    """An executor told to use a TEE interface this host lacks says so and keeps retrying; it
    neither crashes nor joins with something else."""
    proc = _extra_executor(live_net, "no-tee")
    proc.argv += ["--tee", "configfs-tsm"]
    user = Client(live_net.gateway_url)
    try:
        proc.start()
        proc.wait_ready()
        deadline = time.monotonic() + 20
        while (
            "cannot produce this node's join evidence" not in proc.log_path.read_text() and time.monotonic() < deadline
        ):
            await asyncio.sleep(0.3)
        log = proc.log_path.read_text()
        assert "cannot produce this node's join evidence" in log and "configfs-tsm" in log
        assert proc.alive()
        assert "no-tee" not in await _nodes(user)
    finally:
        proc.stop()
        await user.close()
