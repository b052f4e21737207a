"""Signature verification in batches on a small thread pool.

PyNaCl and `cryptography` release the GIL while verifying, so two threads on two cores verify
almost twice as fast as one; batching keeps the per-task overhead small.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from conclavium.crypto.keys import PublicKey

Job = tuple[PublicKey, bytes, bytes]  # key, signature, data


def _verify_chunk(jobs: list[Job]) -> list[bool]:
    return [key.verify(sig, data) for key, sig, data in jobs]


class BatchVerifier:
    def __init__(self, threads: int = 2, chunk: int = 256) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="verify")
        self._threads = max(1, threads)
        self._chunk = chunk

    async def verify(self, jobs: list[Job]) -> list[bool]:
        if len(jobs) < 32 or self._threads == 1:
            return _verify_chunk(jobs)
        size = max(32, min(self._chunk, -(-len(jobs) // self._threads)))
        loop = asyncio.get_running_loop()
        parts = await asyncio.gather(
            *(loop.run_in_executor(self._pool, _verify_chunk, jobs[i : i + size]) for i in range(0, len(jobs), size))
        )
        return [ok for part in parts for ok in part]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
