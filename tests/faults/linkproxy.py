"""A slow, unreliable link between two hosts of the multi-host tests, where the kernel has no
`netem`: a TCP proxy on this machine (on the hosts' bridge) that the harness controls. Every chunk
read from one side is written to the other `delay_s ± jitter_s` later (Gaussian, order kept in each
direction, as on a real link); `drop()` aborts the connections through it (both ends see a reset,
as when a middlebox or a flapping link kills them), and `drop_every_s` does that to one connection
at random, at exponential intervals of that mean.

The proxies run in a thread with their own event loop, so a busy test loop does not add its own
delay. Settings may change while connections are open (`set`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from dataclasses import dataclass, field

CHUNK = 64 * 1024


@dataclass
class LinkSettings:
    delay_s: float = 0.0
    jitter_s: float = 0.0
    drop_every_s: float = 0.0  # 0: never drop on its own

    def sample(self, rng: random.Random) -> float:
        if self.delay_s <= 0 and self.jitter_s <= 0:
            return 0.0
        return max(0.0, rng.gauss(self.delay_s, self.jitter_s))


@dataclass
class LinkProxy:
    """Listens on `listen_host` (a free port, `port` once started) and forwards to `target`."""

    listen_host: str
    target_host: str
    target_port: int
    name: str = ""
    port: int = 0
    connections: int = 0  # accepted so far
    dropped: int = 0
    bytes: int = 0
    _open: set[asyncio.StreamWriter] = field(default_factory=set)
    _server: asyncio.Server | None = None


class LinkProxies:
    """Every proxy of a test, one loop thread for all of them, one set of link settings."""

    def __init__(self, seed: int = 20) -> None:
        self.settings = LinkSettings()
        self.proxies: list[LinkProxy] = []
        self._rng = random.Random(seed)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="link-proxies", daemon=True)
        self._thread.start()
        self._dropper = asyncio.run_coroutine_threadsafe(self._drop_at_random(), self._loop)

    def add(self, listen_host: str, target_host: str, target_port: int, name: str = "") -> LinkProxy:
        """Start a proxy now (before the processes that use it start) and return it."""
        proxy = LinkProxy(listen_host, target_host, target_port, name)
        asyncio.run_coroutine_threadsafe(self._listen(proxy), self._loop).result(10)
        self.proxies.append(proxy)
        return proxy

    def set(self, delay_s: float = 0.0, jitter_s: float = 0.0, drop_every_s: float = 0.0) -> None:
        self.settings = LinkSettings(delay_s, jitter_s, drop_every_s)

    def drop(self) -> int:
        """Abort every connection through every proxy; how many were open."""
        return asyncio.run_coroutine_threadsafe(self._drop_all(), self._loop).result(10)

    def close(self) -> None:
        async def _close() -> None:
            self._dropper.cancel()
            for p in self.proxies:
                if p._server is not None:
                    p._server.close()
            await self._drop_all()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(_close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    # --- inside the loop thread ---------------------------------------------------------------

    async def _listen(self, proxy: LinkProxy) -> None:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            proxy.connections += 1
            try:
                up_r, up_w = await asyncio.wait_for(asyncio.open_connection(proxy.target_host, proxy.target_port), 5)
            except (OSError, TimeoutError):
                writer.transport.abort()
                return
            proxy._open.update((writer, up_w))
            await asyncio.gather(self._pipe(proxy, reader, up_w), self._pipe(proxy, up_r, writer))
            for w in (writer, up_w):
                proxy._open.discard(w)
                w.transport.abort()

        proxy._server = await asyncio.start_server(accept, proxy.listen_host, 0)
        proxy.port = proxy._server.sockets[0].getsockname()[1]

    async def _pipe(self, proxy: LinkProxy, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        """Copy src to dst, each chunk held for a sampled delay, never overtaking the previous one."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    return
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                dst.write(data)
                await dst.drain()

        sender = asyncio.create_task(deliver())
        last_due = 0.0
        try:
            while True:
                data = await src.read(CHUNK)
                due = max(last_due, time.monotonic() + self.settings.sample(self._rng))
                last_due = due
                proxy.bytes += len(data)
                await queue.put((due, data))
                if not data:
                    break
            await sender
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            sender.cancel()
            with contextlib.suppress(BaseException):
                await sender
            dst.transport.abort()

    async def _drop_all(self) -> int:
        n = 0
        for p in self.proxies:
            for w in list(p._open):
                w.transport.abort()
                n += 1
            p.dropped += len(p._open)
            p._open.clear()
        return n

    async def _drop_at_random(self) -> None:
        while True:
            every = self.settings.drop_every_s
            if every <= 0:
                await asyncio.sleep(0.2)
                continue
            await asyncio.sleep(self._rng.expovariate(1.0 / every))
            if self.settings.drop_every_s <= 0:
                continue
            candidates = [(p, w) for p in self.proxies for w in p._open]
            if candidates:
                p, w = self._rng.choice(candidates)
                w.transport.abort()
                p._open.discard(w)
                p.dropped += 1
