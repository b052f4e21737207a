"""The executor's children end with it: a snapshot child that outlived a killed executor went on
writing into a data directory being wiped or already used by its successor, and sealed-opener
workers waited for ever on a queue nobody fed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

SNAPSHOT_CHILD = """
    import os, time
    from services.executor.child_lifetime import end_with_parent

    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        end_with_parent(parent)
        time.sleep(60)
        os._exit(0)
    print(pid, flush=True)
    time.sleep(60)
"""

OPENER_WORKER = """
    import asyncio, os, time
    from services.executor.sealed_openers import SealedOpenerPool

    pool = SealedOpenerPool(1)
    assert asyncio.run(pool.open([(os.urandom(32), b"not a sealed box", b"")])) == [None]
    print(*pool._pool._processes, flush=True)
    time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("program", [SNAPSHOT_CHILD, OPENER_WORKER], ids=["snapshot child", "opener worker"])
def test_children_end_with_a_killed_executor(program: str) -> None:
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(program)], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    children = [int(p) for p in parent.stdout.readline().split()]
    try:
        assert children and all(_alive(c) for c in children)
        parent.send_signal(signal.SIGKILL)
        parent.wait(5)
        deadline = time.monotonic() + 5
        while any(_alive(c) for c in children) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not any(_alive(c) for c in children), "a child outlived the executor"
    finally:
        for c in children:
            if _alive(c):
                os.kill(c, signal.SIGKILL)
