"""Sawtooth signers registered by governance, on a real local network (three executors, each with
the intkey TP on the Sawtooth SDK's processor runtime): once the members vote the `registered`
signer policy, a batch signed by a key they did not register is INVALID with a reason naming the
key, on every executor; registering the key lets its next batch commit, removing it refuses it
again.

Marked `protocol`. Time budget: about 60 s on the shared machine (start-up ~30 s, three votes).
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any
from urllib.request import Request, urlopen

import pytest
from sawtooth_support import batch, intkey_txn, need_sdk

from conclavium.local.network import LocalNetwork, NetworkOptions
from conclavium.sawtooth import signing
from conclavium.sawtooth.pb.sawtooth_pb2 import Batch, BatchList

pytestmark = pytest.mark.protocol


def final(url: str, b: Batch, timeout: float = 120) -> dict[str, Any]:
    body = BatchList(batches=[b]).SerializeToString()
    req = Request(f"{url}/batches", data=body, headers={"Content-Type": "application/octet-stream"})
    with urlopen(req, timeout=30) as r:
        link = json.loads(r.read())["link"]
    deadline = time.monotonic() + timeout
    while True:
        with urlopen(f"{link}&wait=20", timeout=60) as r:
            (status,) = json.loads(r.read())["data"]
        if status["status"] in ("COMMITTED", "INVALID"):
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.2)


def refused_here(net: LocalNetwork, i: int) -> float:
    with urlopen(net.url_of(f"executor-{i}", "/metrics"), timeout=5) as r:
        found = re.search(
            r'^conclavium_executor_sawtooth_batches_total\{outcome="unregistered_signer"\} (\S+)$',
            r.read().decode(),
            re.M,
        )
    return float(found.group(1)) if found else -1.0


def test_only_registered_signers_batches_run(tmp_path) -> None:
    need_sdk()
    net = LocalNetwork(tmp_path / "net", NetworkOptions(sawtooth=["intkey"], log_level="warning"))
    try:
        net.start(timeout=180)
        url = net.gateway_url
        alice, bob = os.urandom(32), os.urandom(32)
        a, b = signing.public_key(alice), signing.public_key(bob)
        # conclavium local up lets any signer in (development); the members close it
        assert final(url, batch(bob, intkey_txn("set", "open-time", 1)))["status"] == "COMMITTED"
        net.vote(
            [
                {
                    "name": "set_sawtooth_families",
                    "args": {"families": [{"name": "intkey", "version": "1.0"}], "signers": "registered"},
                },
                {"name": "sawtooth_register", "args": {"public_keys": [a]}},
            ]
        )
        assert final(url, batch(alice, intkey_txn("set", "alice", 1)))["status"] == "COMMITTED"
        status = final(url, batch(bob, intkey_txn("set", "bob", 1)))
        assert status["status"] == "INVALID", status
        (item,) = status["invalid_transactions"]
        assert item["message"] == f"unregistered_signer: the batch signer {b} is not a registered Sawtooth signer"
        deadline = time.monotonic() + 60
        while not all(refused_here(net, i) == 1 for i in range(3)):  # decided on every executor
            assert time.monotonic() < deadline, [refused_here(net, i) for i in range(3)]
            time.sleep(0.5)

        net.vote([{"name": "sawtooth_register", "args": {"public_keys": [b]}}])
        assert final(url, batch(bob, intkey_txn("set", "bob", 1)))["status"] == "COMMITTED"
        net.vote([{"name": "sawtooth_register", "args": {"public_keys": [a], "remove": True}}])
        status = final(url, batch(alice, intkey_txn("set", "alice-again", 1)))
        assert status["status"] == "INVALID" and a in status["invalid_transactions"][0]["message"]
    finally:
        net.stop()
