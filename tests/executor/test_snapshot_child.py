"""A snapshot child must end with its executor: one that outlived a killed executor went on writing
into a data directory being wiped or already used by the executor's successor."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

PARENT = textwrap.dedent(
    """
    import os, sys, time
    from services.executor.persistence import _die_with

    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        _die_with(parent)
        time.sleep(60)
        os._exit(0)
    print(pid, flush=True)
    time.sleep(60)
    """
)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_snapshot_child_dies_with_a_killed_executor() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    try:
        time.sleep(0.2)
        assert _alive(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait(5)
        deadline = time.monotonic() + 5
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _alive(child), "the snapshot child outlived its executor"
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)
