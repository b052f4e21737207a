"""Waiting without halting, on a real local network: the members approved intkey, but no intkey TP
runs yet. A batch for it is PENDING and held by the gateway (nothing reaches the intake stream,
the gateway's held-batches gauge counts it); a family governance did not approve is still INVALID
`unknown_family` meanwhile; beyond the bound of held batches `POST /batches` is 503, code 31, with
Retry-After; once the TPs are attached by hand to the executors' endpoints, the held batches go
into the intake and commit.

Marked `protocol`. Time budget: about 90 s on the shared machine (start-up ~30 s, 1,000 batches).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import threading
import time
from contextlib import ExitStack
from typing import Any
from urllib.error import HTTPError
from urllib.request import Request, urlopen

import cbor2
import nats
import pytest
from sawtooth_support import batch, get_json, intkey_tp, intkey_txn, metric, need_sdk

from conclavium import streams
from conclavium.apps import app_entry
from conclavium.block import decode_intake
from conclavium.local.network import LocalNetwork, NetworkOptions
from conclavium.sawtooth import APP
from conclavium.sawtooth.pb.sawtooth_pb2 import Batch, BatchList
from services.gateway.protocols.sawtooth_hold import MAX_HELD

pytestmark = pytest.mark.protocol

HELD = "conclavium_gateway_sawtooth_held_batches"


def post(url: str, batches: list[Batch]) -> tuple[int, dict[str, Any], str | None]:
    body = BatchList(batches=batches).SerializeToString()
    req = Request(f"{url}/batches", data=body, headers={"Content-Type": "application/octet-stream"})
    try:
        with urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read()), None
    except HTTPError as e:
        return e.code, json.loads(e.read()), e.headers.get("Retry-After")


class IntakeWatch:
    """Every entry published on the intake subject from now on, seen by a plain NATS subscriber
    (the intake is a work queue: what the sequencer took is gone from the stream)."""

    def __init__(self, net: LocalNetwork) -> None:
        self.seen: list[bytes] = []
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, daemon=True).start()
        self._nc = asyncio.run_coroutine_threadsafe(self._subscribe(net), self._loop).result(30)

    async def _subscribe(self, net: LocalNetwork) -> Any:
        nc = await nats.connect(net.nats_url)

        async def got(msg: Any) -> None:
            self.seen.extend(e.data for e in decode_intake(msg.data).entries)

        await nc.subscribe(streams.intake_subject(net.opt.ledger), cb=got)
        await nc.flush()
        return nc

    def count(self, batches: list[Batch]) -> int:
        wanted = {app_entry(APP, b.SerializeToString(), b"").data for b in batches}
        return sum(d in wanted for d in list(self.seen))

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._nc.close(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)


def wait_all_committed(url: str, batches: list[Batch], timeout: float) -> None:
    """Until every batch is COMMITTED; a 503 (no executor answered in time, as while 1,000 batches
    arrive at once) is retried, as Sawtooth clients do."""
    deadline = time.monotonic() + timeout
    while True:
        code, body = get_json(f"{url}/batch_statuses?id={','.join(b.header_signature for b in batches)}&wait=20")
        assert code in (200, 503) and time.monotonic() < deadline, (code, body)
        if code == 200:
            got = [d["status"] for d in body["data"]]
            if all(g == "COMMITTED" for g in got):
                return
            assert "INVALID" not in got, body
        time.sleep(0.5)


def statuses(url: str, batches: list[Batch]) -> list[dict[str, Any]]:
    code, body = get_json(f"{url}/batch_statuses?id={','.join(b.header_signature for b in batches)}")
    assert code == 200, body
    return body["data"]


def test_batch_waits_pending_at_the_gateway_until_its_tp_registers(tmp_path) -> None:
    need_sdk()
    net = LocalNetwork(tmp_path / "net", NetworkOptions(sawtooth=["intkey"], sawtooth_tps=False, log_level="warning"))
    intake: IntakeWatch | None = None
    try:
        net.start(timeout=180)
        intake = IntakeWatch(net)
        url = net.gateway_url
        key = os.urandom(32)
        first = batch(key, intkey_txn("set", "held", 5))
        code, body, _ = post(url, [first])
        assert code == 202, body

        # A family governance did not approve is refused as before, while intkey waits.
        stranger = batch(key, ("xo", "1.0", b"game,create,", ["5b7349"], ["5b7349"]))
        code, body, _ = post(url, [stranger])
        assert code == 202, body
        deadline = time.monotonic() + 60
        while (st := statuses(url, [stranger])[0])["status"] != "INVALID":
            assert st["status"] in ("PENDING", "UNKNOWN") and time.monotonic() < deadline, st
            time.sleep(0.2)
        assert "family xo 1.0 is not run by this ledger" in st["invalid_transactions"][0]["message"], st

        time.sleep(3)  # several of the gateway's polls of the executors
        assert statuses(url, [first])[0]["status"] == "PENDING"
        assert intake.count([first, stranger]) == 1  # the xo batch only: the intkey batch is held
        assert metric(net, "gateway", HELD) == 1

        # Up to the bound, more batches of the family wait behind it; beyond it, 503 and Retry-After.
        more = [batch(key, intkey_txn("set", f"n{i}", i)) for i in range(MAX_HELD - 1)]
        for i in range(0, len(more), 100):
            code, body, _ = post(url, more[i : i + 100])
            assert code == 202, body
        code, body, retry = post(url, [batch(key, intkey_txn("set", "one-too-many", 1))])
        assert code == 503 and body["error"]["code"] == 31 and retry, (code, body, retry)
        assert metric(net, "gateway", HELD) == MAX_HELD
        assert intake.count([first, *more]) == 0

        with ExitStack() as tps:
            for i, endpoint in enumerate(net.tp_endpoints.values()):
                tps.enter_context(intkey_tp(endpoint, tmp_path / f"tp-{i}"))
            wait_all_committed(url, [first], timeout=120)
            for i in range(0, len(more), 100):
                wait_all_committed(url, more[i : i + 100], timeout=180)
            assert metric(net, "gateway", HELD) == 0
            assert intake.count([first, *more]) == MAX_HELD
            code, state = get_json(f"{url}/state/{intkey_txn('set', 'held', 0)[3][0]}")
            assert code == 200 and cbor2.loads(base64.b64decode(state["data"])) == {"held": 5}
    finally:
        if intake is not None:
            intake.close()
        net.stop()


def test_batch_held_past_the_bound_is_dropped_unordered_and_may_come_again(tmp_path) -> None:
    need_sdk()
    opt = NetworkOptions(sawtooth=["intkey"], sawtooth_tps=False, sawtooth_hold_s=3, executors=1, log_level="warning")
    net = LocalNetwork(tmp_path / "net", opt)
    intake: IntakeWatch | None = None
    try:
        net.start(timeout=180)
        intake = IntakeWatch(net)
        url = net.gateway_url
        late = batch(os.urandom(32), intkey_txn("set", "late", 1))
        code, body, _ = post(url, [late])
        assert code == 202, body
        assert statuses(url, [late])[0]["status"] == "PENDING"
        deadline = time.monotonic() + 30
        while (st := statuses(url, [late])[0])["status"] == "PENDING":
            assert time.monotonic() < deadline, st
            time.sleep(0.2)
        assert st["status"] == "INVALID", st
        assert st["invalid_transactions"][0]["message"].startswith(
            "tp_unavailable: no transaction processor registered for intkey 1.0 within 3 s"
        ), st
        assert intake.count([late]) == 0 and metric(net, "gateway", HELD) == 0
        with intkey_tp(next(iter(net.tp_endpoints.values())), tmp_path / "tp"):
            code, body, _ = post(url, [late])  # never ordered, so it may be submitted again
            assert code == 202, body
            wait_all_committed(url, [late], timeout=120)
        assert intake.count([late]) == 1
    finally:
        if intake is not None:
            intake.close()
        net.stop()
