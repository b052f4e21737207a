"""A restarted executor keeps its Sawtooth state, and a TP killed under load does not corrupt it:
a real local network (three executors, each with the intkey TP on the Sawtooth SDK's runtime),
executor-0 killed and restarted with its TP (the SDK's TP cannot register again with a restarted
validator: conclavium local up restarts it with its executor, as a pod's sidecar would be; the
executor replays its own ledger files, pausing there until its TP has registered, then follows the
stream), and a TP killed while batches flow; at the end every
executor has executed every batch, none diverged, and the state read back is the sum of them.

Marked `protocol`. Time budget: about 90 s on the shared machine.
"""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path
from urllib.request import urlopen

import cbor2
import pytest
from sawtooth_support import address, batch, intkey_txn, metric, need_sdk, submit, wait_committed

from conclavium.local.network import LocalNetwork, NetworkOptions

pytestmark = pytest.mark.protocol


def test_restarted_executor_and_killed_tp_keep_sawtooth_state(tmp_path: Path) -> None:
    need_sdk()
    net = LocalNetwork(tmp_path / "net", NetworkOptions(sawtooth=["intkey"], log_level="warning"))
    key = os.urandom(32)
    try:
        net.start(timeout=120)
        url = net.gateway_url
        wait_committed(submit(url, batch(key, intkey_txn("set", "r", 1))))
        net.procs["executor-0"].kill()
        net.supervise_once()  # restarted, as Kubernetes would
        wait_committed(submit(url, batch(key, intkey_txn("inc", "r", 1))))
        net.procs["sawtooth-intkey-1"].kill()  # mid-stream: executor-1 waits for its TP
        links = [submit(url, batch(key, intkey_txn("inc", "r", 1))) for _ in range(5)]
        time.sleep(1)
        net.supervise_once()
        for link in links:
            wait_committed(link)
        deadline = time.monotonic() + 120
        executed = 'conclavium_executor_sawtooth_batches_total\\{outcome="executed"\\}'
        while True:
            counts = [metric(net, f"executor-{i}", executed) for i in range(3)]
            # executor-0's counter restarted with it: it counts what it executed since (replayed too)
            if counts[1] == counts[2] == 7 and counts[0] >= 6:
                break
            assert time.monotonic() < deadline, counts
            time.sleep(0.5)
        for i in range(3):
            assert metric(net, f"executor-{i}", "conclavium_executor_fork_detected") == 0
            assert metric(net, f"executor-{i}", "conclavium_executor_app_unavailable") == 0
        with urlopen(f"{url}/state/{address('r')}", timeout=30) as r:
            assert cbor2.loads(base64.b64decode(json.loads(r.read())["data"])) == {"r": 7}
    finally:
        net.stop()
