"""Micro-batching into the intake stream.

Concurrent submissions are packed into one intake message (per-message costs dominate; see
docs/performance.md) and each caller is answered only after JetStream acknowledged the message
holding its entry. The message id is derived from its entries, so a retried publish is dropped by
JetStream's de-duplication; a transaction submitted twice is dropped by the executors.

A "no responders" answer (the intake stream has no leader reachable from this gateway's server: a
NATS cluster electing one after losing a server, or a server just re-joined) comes back at once; the
publish is repeated with the same message id until `timeout_s` is spent, so the client waits out
an election instead of receiving a 503 for it.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from typing import Any

from nats.js.errors import NoStreamResponseError

from conclavium import streams
from conclavium.block import Entry, IntakeBatch, encode

from . import metrics as m


class IntakeUnavailable(Exception):
    """JetStream did not acknowledge: nothing was accepted, the client should retry."""


NO_LEADER_RETRY_S = 0.1  # pause between publishes answered "no responders"


class IntakeBatcher:
    def __init__(
        self,
        js: Any,
        ledger: str,
        *,
        linger_s: float = 0.001,
        max_entries: int = 500,
        max_bytes: int = 512 * 1024,
        max_inflight: int = 64,
        timeout_s: float = 5.0,
        connected: Callable[[], bool] | None = None,
    ) -> None:
        self.js = js
        self.connected = connected
        self.subject = streams.intake_subject(ledger)
        self.linger_s = linger_s
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self._pending: list[tuple[list[Entry], asyncio.Future[None]]] = []
        self._count = 0
        self._bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        self._inflight = asyncio.Semaphore(max_inflight)
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, entries: list[Entry]) -> None:
        if self.connected is not None and not self.connected():
            # While NATS is away a publish would only sit in the client's buffer until the timeout.
            raise IntakeUnavailable("intake not acknowledged: not connected to NATS")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((entries, fut))
        self._count += len(entries)
        self._bytes += sum(len(e.data) + len(e.signature) + 8 for e in entries)
        if self._count >= self.max_entries or self._bytes >= self.max_bytes:
            self._flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.linger_s, self._flush)
        await fut

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        self._count = self._bytes = 0
        task = asyncio.create_task(self._publish(pending))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish(self, pending: list[tuple[list[Entry], asyncio.Future[None]]]) -> None:
        entries = [e for es, _ in pending for e in es]
        payload = encode(IntakeBatch(entries=entries))
        msg_id = hashlib.sha256(b"".join(hashlib.sha256(e.data).digest() for e in entries)).hexdigest()
        error: Exception | None = None
        async with self._inflight:
            t0 = time.perf_counter()
            try:
                await self._publish_once_acknowledged(payload, msg_id, t0 + self.timeout_s)
            except Exception as e:
                error = IntakeUnavailable(f"intake not acknowledged: {type(e).__name__}")
            m.INTAKE_PUBLISH_SECONDS.observe(time.perf_counter() - t0)
        m.INTAKE_BATCH.observe(len(entries))
        for _, fut in pending:
            if not fut.done():
                if error is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(error)

    async def _publish_once_acknowledged(self, payload: bytes, msg_id: str, deadline: float) -> None:
        """Publish until JetStream acknowledges, repeating (same message id) while the answer is
        "no responders" and time is left before `deadline` (a `perf_counter` value)."""
        while True:
            left = deadline - time.perf_counter()
            try:
                await self.js.publish(self.subject, payload, timeout=max(left, 0.05), headers={"Nats-Msg-Id": msg_id})
                return
            except NoStreamResponseError:
                if deadline - time.perf_counter() <= NO_LEADER_RETRY_S:
                    raise
                m.INTAKE_NO_LEADER_RETRIES.inc()
                await asyncio.sleep(NO_LEADER_RETRY_S)

    async def close(self) -> None:
        self._flush()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
