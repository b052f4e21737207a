"""Run inside a partitioned member's network namespace (`ip netns exec`): what that side of the
partition can still do. Submits one signed transaction to the member's own gateway and samples the
member's executor's committed height over the member's own NATS server (first after SETTLE_S,
when what the member had received before the cut is applied, then at the end); prints one JSON line.

    python netns_probe.py NATS_URL GATEWAY_URL LEDGER EXECUTOR SECONDS TX_JSON
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import aiohttp

from conclavium import streams
from conclavium.encoding import dumps, loads
from conclavium.runtime import connect_nats

SETTLE_S = 3.0


async def _height(nc: Any, ledger: str, executor: str) -> int | None:
    try:
        msg = await nc.request(streams.node_query_subject(ledger, executor), dumps({"type": "node_status"}), timeout=3)
        return int(loads(msg.data).get("committed_height") or 0)
    except Exception:
        return None


async def main(nats_url: str, gateway: str, ledger: str, executor: str, seconds: float, tx: str) -> dict[str, Any]:
    t0 = time.monotonic()
    nc = await connect_nats(nats_url, "partition-probe")
    try:
        await asyncio.sleep(SETTLE_S)
        before = await _height(nc, ledger, executor)
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as s,
                s.post(f"{gateway}/v1/transactions", json=json.loads(tx)) as r,
            ):
                submit: Any = r.status
        except (aiohttp.ClientError, TimeoutError) as e:
            submit = type(e).__name__
        await asyncio.sleep(max(0.0, seconds - (time.monotonic() - t0)))
        after = await _height(nc, ledger, executor)
    finally:
        await nc.close()
    return {"submit": submit, "height_before": before, "height_after": after}


if __name__ == "__main__":
    nats_url, gateway, ledger, executor, seconds, tx = sys.argv[1:7]
    print(json.dumps(asyncio.run(main(nats_url, gateway, ledger, executor, float(seconds), tx))))
