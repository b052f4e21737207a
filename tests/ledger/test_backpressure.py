"""Backpressure: past a bound of transactions accepted and not yet committed, the gateway answers
503 `overloaded` with Retry-After instead of queueing more inside the ledger; once commits catch up
it accepts again, and nothing accepted is lost."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import aiohttp
from ledger_support import user_keys, wait_all

from conclavium.local.network import start_network
from conclavium.sdk.client import Client
from services.gateway.admission import AdmissionBound


async def _metric(url: str, sample: str) -> float:
    """The value of one sample (name and labels as served) from the gateway's /metrics."""
    async with aiohttp.ClientSession() as s, s.get(f"{url}/metrics") as r:
        for line in (await r.text()).splitlines():
            if line.startswith(sample + " "):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{sample} not served")


def _puts(prefix: str) -> list[dict]:
    return [{"op": "put", "map": "public:bp", "key": f"{prefix}{i}", "value": i} for i in range(100)]


UNCOMMITTED = "conclavium_gateway_uncommitted_transactions"
REFUSED = 'conclavium_gateway_tx_rejected_total{reason="overloaded"}'


async def _settled(url: str, timeout: float = 30.0) -> None:
    """Wait until nothing the gateway accepted awaits commit (the network's own start-up votes
    may still be in flight on a busy host), so the counts below are this test's alone."""
    deadline = asyncio.get_running_loop().time() + timeout
    while await _metric(url, UNCOMMITTED) != 0:
        if asyncio.get_running_loop().time() > deadline:
            left = await _metric(url, UNCOMMITTED)
            raise AssertionError(f"{left} transactions still uncommitted before the test starts")
        await asyncio.sleep(0.1)


async def test_overloaded_gateway_refuses_then_recovers(tmp_path: Path) -> None:
    net = await asyncio.to_thread(start_network, tmp_path, executors=1, redis=True, gateway_max_uncommitted=150)
    executor = net.procs["executor-0"].pid
    assert executor
    try:
        async with Client(net.gateway_url, user_keys(net)[0]) as client:
            first = [await client.build([op]) for op in _puts("a")]
            second = [await client.build([op]) for op in _puts("b")]
            await _settled(net.gateway_url)
            os.kill(executor, signal.SIGSTOP)  # nothing commits while the executor is stopped
            try:
                accepted = await client.submit_batch(first)
                assert await _metric(net.gateway_url, UNCOMMITTED) == 100
                batch = {"transactions": [t.to_json() for t in second]}
                url = f"{net.gateway_url}/v1/transactions/batch"
                async with aiohttp.ClientSession() as s, s.post(url, json=batch) as r:
                    assert r.status == 503
                    assert r.headers["Retry-After"] == "1"
                    assert (await r.json())["error"]["code"] == "overloaded"
                assert await _metric(net.gateway_url, REFUSED) == 100
            finally:
                os.kill(executor, signal.SIGCONT)
            assert all(s["status"] == "Committed" for s in await wait_all(client, accepted))
            assert await _metric(net.gateway_url, UNCOMMITTED) == 0
            later = await client.submit_batch(second)
            assert all(s["status"] == "Committed" for s in await wait_all(client, later))
    finally:
        await asyncio.to_thread(net.stop)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bound_follows_the_commit_rate_in_seconds() -> None:
    clock = Clock()
    bound = AdmissionBound(max_uncommitted=20_000, max_queue_s=1.0, floor=500, clock=clock)
    assert bound.bound() == 500  # idle: the floor
    for _ in range(5):  # 3,000 committed per second for five seconds
        for _ in range(10):
            bound.drained(300)
        clock.now += 1
    assert bound.rate() == 3000
    assert bound.bound() == 3000
    slow = AdmissionBound(max_uncommitted=20_000, max_queue_s=2.0, floor=500, clock=clock)
    slow.drained(400)
    clock.now += 1
    assert slow.bound() == 500  # 400 in the window: 100 tx/s x 2 s is below the floor
    clock.now += 10
    assert bound.rate() == 0 and bound.bound() == 500  # the rate forgets old seconds


def test_count_caps_the_bound_and_zero_seconds_means_count_only() -> None:
    clock = Clock()
    capped = AdmissionBound(max_uncommitted=2_000, max_queue_s=1.0, floor=500, clock=clock)
    count_only = AdmissionBound(max_uncommitted=2_000, max_queue_s=0, floor=500, clock=clock)
    unbounded = AdmissionBound(max_uncommitted=0, max_queue_s=0, floor=500, clock=clock)
    for b in (capped, count_only, unbounded):
        b.drained(50_000)
    clock.now += 1
    assert capped.bound() == 2_000
    assert count_only.bound() == 2_000
    assert unbounded.bound() == 0


async def test_admission_bound_is_served(tmp_path: Path) -> None:
    """The gateway serves its current bound, so an operator sees why 503s start."""
    net = await asyncio.to_thread(start_network, tmp_path, executors=1, redis=False, gateway_max_uncommitted=150)
    try:
        async with Client(net.gateway_url, user_keys(net)[0]) as client:
            await wait_all(client, await client.submit_batch([await client.build([op]) for op in _puts("c")]))
            # one admission decision after commits: idle floor 5,000, capped by the count (150)
            await client.submit_batch([await client.build([op]) for op in _puts("d")][:1])
        assert await _metric(net.gateway_url, "conclavium_gateway_admission_bound_transactions") == 150
    finally:
        await asyncio.to_thread(net.stop)
