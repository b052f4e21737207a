"""Opening sealed transactions on worker processes.

`cryptography`'s HPKE holds the GIL, so opening on the executor's thread pool would not run in
parallel with execution. A small process pool (spawned, so it inherits no threads or locks) opens
the sealed operations of the next batch while the current one executes; the results are only a
cache: anything not opened ahead is opened in order, the same way, so outcomes never depend on it.
The workers are part of the executor and run inside the same TEE.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

from conclavium.crypto import sealing

from .child_lifetime import end_with_parent

Job = tuple[bytes, bytes, bytes]  # raw X25519 private key, sealed box, HPKE info


def open_many(jobs: list[Job]) -> list[bytes | None]:
    """Worker side: open each box, None where it does not open (the executor reports why)."""
    keys: dict[bytes, object] = {}
    out: list[bytes | None] = []
    for raw, box, info in jobs:
        key = keys.get(raw)
        if key is None:
            key = keys[raw] = sealing.load_private(raw)
        try:
            out.append(sealing.open_sealed(box, key, info))  # type: ignore[arg-type]
        except sealing.SealError:
            out.append(None)
    return out


class SealedOpenerPool:
    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool = (
            ProcessPoolExecutor(
                max_workers=workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=end_with_parent,
                initargs=(os.getpid(),),
            )
            if workers > 0
            else None
        )

    async def open(self, jobs: list[Job]) -> list[bytes | None]:
        if self._pool is None or not jobs:
            return [None] * len(jobs)
        loop = asyncio.get_running_loop()
        size = -(-len(jobs) // self.workers)
        parts = await asyncio.gather(
            *(loop.run_in_executor(self._pool, open_many, jobs[i : i + size]) for i in range(0, len(jobs), size))
        )
        return [r for part in parts for r in part]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
