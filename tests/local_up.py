"""`conclavium local up` run as a user runs it, for the walk-through tests: started in a folder,
ready once DIR/local.json is written, stopped with Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def local_up(
    work: Path, cmd: list[str], *, env: Mapping[str, str] | None = None, ready_s: float = 90
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `cmd` (a `local up --dir net ...` command line) in `work`, its output in work/up.log;
    yields once work/net/local.json exists, then sends SIGINT and waits up to 30 s. The caller
    checks the exit status."""
    log = open(work / "up.log", "wb")
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + ready_s
        while not (work / "net" / "local.json").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError((work / "up.log").read_text())
            time.sleep(0.2)
        yield proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        finally:
            log.close()
