"""A rules-version change by proposal, through real processes: it takes effect at its activation
height on every executor, and an executor started pinned to the older version stops executing and
signing at that height (metric, /readyz) instead of computing another root."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.request import urlopen

import pytest
from ledger_support import raw_get

from conclavium.cli.local import _node_status
from conclavium.crypto.keys import PrivateKey
from conclavium.local.network import LocalNetwork
from conclavium.sdk.client import Client


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    from conclavium.local.network import start_network

    network = start_network(
        tmp_path_factory.mktemp("rules"),
        redis=False,
        executor_args={2: ["--rules-versions", "1"]},
        genesis_config={"rules_version": 1},
    )
    yield network
    network.stop()


def _metric(port: int, name: str) -> float:
    with urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not served")


async def test_a_rules_version_change_takes_effect_at_its_height_and_stops_an_older_executor(
    net: LocalNetwork,
) -> None:
    names = [n for n in net.procs if n.startswith("executor-")]
    old = net.procs["executor-2"]
    assert _metric(old.port, "conclavium_executor_rules_version") == 1
    members = [Client(net.gateway_url, net.member_key(i), ledger=net.opt.ledger) for i in range(len(net.members))]
    user_key = PrivateKey.from_file(str(Path(net.dir) / net.users[0]["key"]))
    user = Client(net.gateway_url, user_key, ledger=net.opt.ledger)
    try:
        at = net.service()["height"] + 40
        proposal = await members[0].propose(
            [{"name": "set_rules_version", "args": {"version": 2, "activation_height": at}}]
        )
        await members[0].wait(proposal["tx_hash"])
        for c in members[:2]:
            ballot = await c.vote(proposal["proposal_id"], approve=True)
            assert (await c.wait(ballot["tx_hash"]))["status"] == "Committed"
        assert (await members[0].proposal(proposal["proposal_id"]))["state"] == "Accepted"
        # Traffic until the ledger is past the activation height; a quorum (2 of 3) still commits.
        deadline = time.monotonic() + 60
        i = 0
        while net.service()["height"] <= at + 2:
            assert time.monotonic() < deadline, "the ledger did not pass the activation height"
            h = await user.put("public:rules", f"k{i}", i)
            assert (await user.wait(h, timeout=30))["status"] == "Committed"
            i += 1
        h = await user.put("public:rules", "after", 1)
        assert (await user.wait(h, timeout=30))["status"] == "Committed"
        for _ in range(100):
            st = {s["name"]: s for s in await _node_status(net.nats_url, net.opt.ledger, names)}
            if st["executor-0"]["root"] == st["executor-1"]["root"] and st["executor-0"]["root"]:
                break
            await asyncio.sleep(0.1)
        assert st["executor-0"]["root"] == st["executor-1"]["root"], json.dumps(st)
        for n in ("executor-0", "executor-1"):
            assert _metric(net.procs[n].port, "conclavium_executor_rules_version") == 2
        # The pinned executor stopped right before the activation block, and says why.
        assert st["executor-2"]["executed_height"] == at - 1, json.dumps(st)
        status, body, _ = await raw_get(f"http://127.0.0.1:{old.port}/readyz")
        assert status == 503 and body["reason"].startswith("unsupported_rules: the ledger runs rules version 2")
        assert _metric(old.port, "conclavium_executor_rules_unsupported") == 1
        assert _metric(old.port, "conclavium_executor_rules_version") == 1
        log = old.log_path.read_text()
        assert "not signing" in log and "fork" not in log.lower()
    finally:
        for c in [*members, user]:
            await c.close()
