"""Helpers for ledger tests: signed traffic through the real gateway."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import nats

from conclavium import consortium, streams
from conclavium.crypto.keys import PrivateKey
from conclavium.encoding import dumps, loads
from conclavium.local.network import LocalNetwork
from conclavium.sdk.client import Client


def user_keys(net: LocalNetwork) -> list[PrivateKey]:
    return [PrivateKey.from_file(str(net.dir / u["key"])) for u in net.users]


def member_keys(net: LocalNetwork) -> list[PrivateKey]:
    return [PrivateKey.from_file(str(net.dir / m["key"])) for m in net.members]


def service_cert(net: LocalNetwork) -> str:
    return Path(net.dir / "service_cert.pem").read_text()


def identity(net: LocalNetwork) -> consortium.Identity:
    """The consortium identity the network's founders signed (DIR/consortium.json)."""
    return consortium.load_trusted((net.dir / "consortium.json").read_text())


async def raw_post(url: str, body: bytes | str, content_type: str = "application/json") -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.post(url, data=body, headers={"Content-Type": content_type}) as r:
        return r.status, await r.json(content_type=None)


async def raw_get(url: str) -> tuple[int, Any, dict[str, str]]:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return r.status, await r.json(content_type=None), dict(r.headers)


async def wait_all(client: Client, hashes: list[str], timeout: float = 60.0) -> list[dict[str, Any]]:
    sem = asyncio.Semaphore(64)

    async def one(h: str) -> dict[str, Any]:
        async with sem:
            return await client.wait(h, timeout=timeout)

    return await asyncio.gather(*(one(h) for h in hashes))


def executor_names(net: LocalNetwork) -> list[str]:
    return sorted(n for n in net.procs if n.startswith("executor-"))


async def ask_each_executor(net: LocalNetwork, request: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """`request` answered by every executor directly over NATS, not by whichever one the gateway's
    queue group picks."""
    nc = await nats.connect(net.nats_url)
    try:
        answers = {}
        for name in executor_names(net):
            msg = await nc.request(streams.node_query_subject(net.opt.ledger, name), dumps(request), timeout=5)
            answers[name] = loads(msg.data)
        return answers
    finally:
        await nc.close()


async def status_everywhere(net: LocalNetwork, tx_hash: str, until: str, timeout: float = 30.0) -> dict[str, Any]:
    """The transaction's status on every executor, once all of them report `until` (or, on timeout,
    as they are)."""
    deadline = time.monotonic() + timeout
    while True:
        answers = await ask_each_executor(net, {"type": "status", "tx": tx_hash})
        if all(a.get("status") == until for a in answers.values()) or time.monotonic() > deadline:
            return answers
        await asyncio.sleep(0.3)


async def agreeing_roots(net: LocalNetwork, timeout: float = 30.0) -> tuple[int, str]:
    """Wait until every executor reports the same committed height and root, unforked."""
    deadline = time.monotonic() + timeout
    while True:
        sts = await ask_each_executor(net, {"type": "node_status"})
        views = {(s.get("committed_height"), s.get("root")) for s in sts.values()}
        if len(views) == 1 and not any(s.get("fork") for s in sts.values()):
            return views.pop()  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"executors disagree: {sts}")
        await asyncio.sleep(0.3)
