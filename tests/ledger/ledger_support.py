"""Helpers for ledger tests: signed traffic through the real gateway."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from conclavium.crypto.keys import PrivateKey
from conclavium.local.network import LocalNetwork
from conclavium.sdk.client import Client


def user_keys(net: LocalNetwork) -> list[PrivateKey]:
    return [PrivateKey.from_file(str(net.dir / u["key"])) for u in net.users]


def member_keys(net: LocalNetwork) -> list[PrivateKey]:
    return [PrivateKey.from_file(str(net.dir / m["key"])) for m in net.members]


def service_cert(net: LocalNetwork) -> str:
    return Path(net.dir / "service_cert.pem").read_text()


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
