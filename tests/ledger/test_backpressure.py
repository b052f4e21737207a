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


async def test_overloaded_gateway_refuses_then_recovers(tmp_path: Path) -> None:
    net = await asyncio.to_thread(start_network, tmp_path, executors=1, redis=True, gateway_max_uncommitted=150)
    executor = net.procs["executor-0"].pid
    assert executor
    try:
        async with Client(net.gateway_url, user_keys(net)[0]) as client:
            first = [await client.build([op]) for op in _puts("a")]
            second = [await client.build([op]) for op in _puts("b")]
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
