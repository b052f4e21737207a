"""The signal behind ConclaviumQuorumAtRisk, on real processes: `conclavium_executor_signing_nodes`
counts every trusted executor that keeps signing (3 of 3 on a healthy ledger, although commits often
count exactly the quorum, 2), and drops when one executor stops while the others keep committing."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.request import urlopen

import pytest

from conclavium.local.network import LocalNetwork, start_network
from conclavium.sdk.client import Client

pytestmark = pytest.mark.timeout(300)


def _gauges(net: LocalNetwork, name: str) -> dict[str, float]:
    with urlopen(f"http://127.0.0.1:{net.procs[name].port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(
            r"^conclavium_executor_(signing_nodes|trusted_nodes|quorum|last_commit_signers) (\S+)$", text, re.M
        )
    }


async def _commit(net: LocalNetwork, count: int) -> None:
    async with Client(net.gateway_url, net.member_key(0), ledger="local") as c:
        for i in range(count):
            h = await c.put("public:signals", f"k{i}", i)
            st = await c.wait(h, timeout=30)
            assert st["status"] == "Committed", st


@pytest.fixture()
def net(tmp_path: Path) -> Iterator[LocalNetwork]:
    network = start_network(tmp_path / "net", redis=False)
    yield network
    network.stop()


async def test_signing_nodes_counts_late_signers_and_drops_a_stopped_executor(net: LocalNetwork) -> None:
    await _commit(net, 10)
    await asyncio.sleep(1)
    healthy = _gauges(net, "executor-0")
    assert (healthy["trusted_nodes"], healthy["quorum"], healthy["signing_nodes"]) == (3, 2, 3), healthy
    net.procs["executor-2"].stop()
    deadline = time.monotonic() + 150
    while True:  # the window is 100 heights: commit until the stopped executor falls out of it
        await _commit(net, 20)
        after = _gauges(net, "executor-0")
        if after["signing_nodes"] == 2:
            break
        assert time.monotonic() < deadline, after
    assert after["trusted_nodes"] == 3  # still trusted: only the signing count tells that one is missing
