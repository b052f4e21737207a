"""The multi-host tests' link proxy on loopback: bytes arrive intact and in order, each way held
for the configured delay, and a dropped connection is seen as closed by both ends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from linkproxy import LinkProxies


@pytest.fixture
def proxies() -> Iterator[LinkProxies]:
    p = LinkProxies()
    yield p
    p.close()


async def _echo_server() -> asyncio.Server:
    async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while data := await r.read(65536):
            w.write(data)
            await w.drain()
        w.close()

    return await asyncio.start_server(echo, "127.0.0.1", 0)


async def test_delay_each_way_and_order_kept(proxies: LinkProxies) -> None:
    server = await _echo_server()
    proxy = proxies.add("127.0.0.1", "127.0.0.1", server.sockets[0].getsockname()[1])
    r, w = await asyncio.open_connection("127.0.0.1", proxy.port)
    w.write(b"warm")
    assert await r.readexactly(4) == b"warm"
    proxies.set(delay_s=0.1, jitter_s=0.02)
    t0 = time.monotonic()
    payload = b"".join(i.to_bytes(4, "big") for i in range(50_000))
    for i in range(0, len(payload), 1000):
        w.write(payload[i : i + 1000])
    assert await asyncio.wait_for(r.readexactly(len(payload)), 20) == payload
    assert time.monotonic() - t0 >= 0.15, "a round trip through two delayed directions took less than 150 ms"
    w.close()
    server.close()


async def test_dropped_connection_is_closed_for_both_ends(proxies: LinkProxies) -> None:
    server = await _echo_server()
    proxy = proxies.add("127.0.0.1", "127.0.0.1", server.sockets[0].getsockname()[1])
    r, w = await asyncio.open_connection("127.0.0.1", proxy.port)
    w.write(b"ping")
    assert await r.readexactly(4) == b"ping"
    assert await asyncio.to_thread(proxies.drop) == 2
    with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
        await asyncio.wait_for(r.readexactly(1), 5)
    assert proxy.dropped == 2 and proxy.connections == 1
    w.close()
    server.close()
