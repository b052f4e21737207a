"""A fork end to end: a real local network (three executors with the intkey TP) in which
executor-2's TP computes other values (`diverging_intkey_tp.py`). The other two commit; executor-2,
whose root differs from the one a quorum signed, raises `conclavium_executor_fork_detected` to 1,
fails `/readyz` with `fork_detected: …` and signs no later block, while the ledger keeps committing.

Marked `protocol` (it needs the Sawtooth SDK's Python). Time budget: about 40 s on the shared machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections import defaultdict
from pathlib import Path
from urllib.error import HTTPError
from urllib.request import urlopen

import pytest
from sawtooth_support import batch, intkey_txn, metric, need_sdk, submit, wait_committed

from conclavium import streams
from conclavium.block import decode_block
from conclavium.encoding import dumps, loads
from conclavium.local.network import LocalNetwork, NetworkOptions
from conclavium.local.sawtooth import sdk_python
from conclavium.runtime import connect_nats

pytestmark = pytest.mark.protocol
DIVERGING_TP = Path(__file__).with_name("diverging_intkey_tp.py")


def _submit_and_wait(url: str, key: bytes, *txn: tuple) -> None:
    wait_committed(submit(url, batch(key, *txn)))


def _readyz(net: LocalNetwork, name: str) -> tuple[int, str]:
    try:
        with urlopen(net.url_of(name, "/readyz"), timeout=5) as r:
            return r.status, str(json.loads(r.read()).get("reason"))
    except HTTPError as e:
        return e.code, str(json.loads(e.read()).get("reason"))


def _fork_gauge(net: LocalNetwork, name: str) -> float:
    value = metric(net, name, "conclavium_executor_fork_detected")
    assert value >= 0, f"{name} serves no conclavium_executor_fork_detected"
    return value


async def _signers(net: LocalNetwork, name: str) -> tuple[str, dict[int, set[str]]]:
    """`name`'s node id (as it reports it) and, per height, the nodes whose commit signatures the
    ledger stream holds."""
    nc = await connect_nats(net.nats_url, "fork-test")
    try:
        asked = await nc.request(streams.node_query_subject(net.opt.ledger, name), dumps({"type": "node_status"}), 5)
        node = str(loads(asked.data)["node_id"])
        js = nc.jetstream(timeout=10)
        stream = streams.ledger_stream(net.opt.ledger)
        out: dict[int, set[str]] = defaultdict(set)
        for seq in range(1, (await js.stream_info(stream)).state.last_seq + 1):
            for sig in decode_block((await js.get_msg(stream, seq)).data).sigs:
                out[sig.height].add(sig.node)
        return node, out
    finally:
        await nc.close()


def test_a_diverging_executor_raises_the_fork_gauge_and_fails_readyz(tmp_path: Path) -> None:
    need_sdk()
    net = LocalNetwork(tmp_path / "net", NetworkOptions(sawtooth=["intkey"], log_level="warning"))
    key = os.urandom(32)
    try:
        net.start(timeout=120)
        url = net.gateway_url
        _submit_and_wait(url, key, intkey_txn("set", "before", 1))
        assert [_fork_gauge(net, f"executor-{i}") for i in range(3)] == [0.0, 0.0, 0.0]
        assert _readyz(net, "executor-2")[0] == 200

        tp = net.procs["sawtooth-intkey-2"]
        endpoint = net.tp_endpoints["executor-2"]
        tp.kill()
        tp.argv = [str(sdk_python()), str(DIVERGING_TP), endpoint]
        tp.start()
        t0 = time.monotonic()
        _submit_and_wait(url, key, intkey_txn("set", "after", 1))  # executors 0 and 1 are a quorum
        while _fork_gauge(net, "executor-2") != 1.0:
            assert time.monotonic() - t0 < 60, f"no fork detected on executor-2: {_readyz(net, 'executor-2')}"
            time.sleep(0.2)
        detected_s = time.monotonic() - t0
        status, reason = _readyz(net, "executor-2")
        assert status == 503 and reason.startswith("fork_detected:"), (status, reason)
        assert [_fork_gauge(net, f"executor-{i}") for i in range(2)] == [0.0, 0.0]
        others = [_readyz(net, f"executor-{i}") for i in range(2)]
        assert not any(r.startswith("fork_detected") for _, r in others), others
        _submit_and_wait(url, key, intkey_txn("inc", "before", 1))  # the ledger commits on without it
        _submit_and_wait(url, key, intkey_txn("inc", "before", 1))
        fork_height = int(re.search(r"at height (\d+)", reason).group(1))
        node, signers = asyncio.run(_signers(net, "executor-2"))
        own = sorted(h for h, nodes in signers.items() if node in nodes)
        assert own and min(own) < fork_height, f"executor-2 signed no block before the fork: {own[:5]}"
        assert max(own) <= fork_height, (
            f"executor-2 signed heights {[h for h in own if h > fork_height]} after the fork"
        )
        assert max(signers) > fork_height, "no block after the fork was signed"
        print(f"\nexecutor-2 with a diverging TP: fork detected {detected_s:.2f}s after the batch; /readyz: {reason}")
    finally:
        net.stop()
