"""Sawtooth signers registered by governance, on a real local network (three executors, each with
the intkey TP on the Sawtooth SDK's processor runtime): once the members vote the `registered`
signer policy, a batch signed by a key they did not register is refused by the gateway at
submission (400, code 30, naming the key), and, put on the intake as a gateway that checks nothing
would, is INVALID with that reason on every executor; registering the key lets its next batch
commit, removing it refuses it again.

Marked `protocol`. Time budget: about 60 s on the shared machine (start-up ~30 s, three votes).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any
from urllib.error import HTTPError
from urllib.request import Request, urlopen

import nats
import pytest
from sawtooth_support import batch, intkey_txn, metric, need_sdk

from conclavium import streams
from conclavium.apps import app_entry
from conclavium.block import IntakeBatch, encode
from conclavium.local.network import LocalNetwork, NetworkOptions
from conclavium.sawtooth import APP, signing
from conclavium.sawtooth.pb.sawtooth_pb2 import Batch, BatchList

pytestmark = pytest.mark.protocol


def post(url: str, b: Batch) -> tuple[int, dict[str, Any]]:
    body = BatchList(batches=[b]).SerializeToString()
    req = Request(f"{url}/batches", data=body, headers={"Content-Type": "application/octet-stream"})
    try:
        with urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except HTTPError as e:
        return e.code, json.loads(e.read())


def wait_final(url: str, b: Batch, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        with urlopen(f"{url}/batch_statuses?id={b.header_signature}&wait=20", timeout=60) as r:
            (status,) = json.loads(r.read())["data"]
        if status["status"] in ("COMMITTED", "INVALID"):
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.2)


def final(url: str, b: Batch) -> dict[str, Any]:
    status, body = post(url, b)
    assert status == 202, body
    return wait_final(url, b)


async def publish_unchecked(net: LocalNetwork, b: Batch) -> None:
    """The batch on the intake stream, as a gateway that checks nothing would put it there."""
    nc = await nats.connect(net.nats_url)
    try:
        entry = app_entry(APP, b.SerializeToString(), b"")
        await nc.jetstream().publish(streams.intake_subject(net.opt.ledger), encode(IntakeBatch(entries=[entry])))
    finally:
        await nc.close()


def refused_here(net: LocalNetwork, i: int) -> float:
    return metric(net, f"executor-{i}", 'conclavium_executor_sawtooth_batches_total\\{outcome="unregistered_signer"\\}')


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
        theirs = batch(bob, intkey_txn("set", "bob", 1))
        status, body = post(url, theirs)
        assert (status, body["error"]["code"]) == (400, 30), body
        assert body["error"]["message"].endswith(f"batch 0: the batch signer {b} is not a registered Sawtooth signer")
        asyncio.run(publish_unchecked(net, theirs))  # the executors decide, whatever a gateway does
        status = wait_final(url, theirs)
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
        status, body = post(url, batch(alice, intkey_txn("set", "alice-again", 1)))
        assert (status, body["error"]["code"]) == (400, 30) and a in body["error"]["message"]
    finally:
        net.stop()
