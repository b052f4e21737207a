"""The executor's own copy of the ledger on its volume: chunks, snapshots and the receipt index.

Start-up: cut a torn tail off the last chunk (a crash mid-write), load the newest snapshot that
authenticates, replay the chunk records after it through the ledger machine (every check runs
again), then the caller resumes the ledger stream after the last replayed block. A corrupt chunk
or snapshot is never loaded: it is moved to `quarantine/`, logged with its file and byte offset and
counted, and what it held is fetched again from the ledger stream.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import time
from pathlib import Path

from conclavium.chain import ChainError
from conclavium.ledger_files import (
    ChunkWriter,
    LedgerFileError,
    chunk_files,
    read_chunk,
    read_snapshot,
    read_snapshot_header,
    repair_tail,
    snapshot_files,
    snapshot_name,
    write_snapshot,
)

from . import metrics as m
from .child_lifetime import end_with_parent
from .ledger_machine import LedgerMachine, NeedSecrets
from .tables import AppUnavailable

log = logging.getLogger("conclavium.executor")
SNAPSHOT_CHILD_TIMEOUT_S = 120.0
SNAPSHOT_CHILD_NICENESS = 10


class LedgerStore:
    def __init__(self, data_dir: Path, blocks_per_chunk: int = 10_000, keep_snapshots: int = 3) -> None:
        self.ledger_dir = data_dir / "ledger"
        self.snapshot_dir = data_dir / "snapshots"
        self.quarantine_dir = data_dir / "quarantine"
        for d in (self.ledger_dir, self.snapshot_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.blocks_per_chunk = blocks_per_chunk
        self.keep_snapshots = keep_snapshots
        self.writer: ChunkWriter | None = None
        self.problems: list[str] = []
        self._child: tuple[int, int, Path, float] | None = None

    def _quarantine(self, path: Path, reason: str) -> None:
        self.quarantine_dir.mkdir(parents=True, exist_ok=True)
        target = self.quarantine_dir / f"{path.name}.{int(time.time())}"
        shutil.move(str(path), target)
        self.problems.append(reason)
        m.CORRUPT_FILES.inc()
        log.error("refused to load %s (%s); moved to %s", path, reason, target)

    async def load(self, machine: LedgerMachine, secrets: dict[str, bytes]) -> int:
        """Restore `machine` from disk; returns how many blocks were replayed from chunks."""
        try:
            torn = repair_tail(self.ledger_dir)
        except LedgerFileError:
            torn = None  # corruption, not a torn write: the reading below refuses the file
        if torn is not None:
            log.warning("cut a torn record off the last ledger chunk at byte %d", torn)
        for path in reversed(snapshot_files(self.snapshot_dir)):
            try:
                header, plaintext = read_snapshot(path, secrets)
                machine.restore(plaintext)
                log.info("loaded snapshot %s at height %d", path.name, header["height"])
                break
            except LedgerFileError as e:
                self._quarantine(path, str(e))
            except ValueError as e:
                self._quarantine(path, f"{path}: {e}")
        return await self.resume(machine)

    async def resume(self, machine: LedgerMachine) -> int:
        """Replay the chunk records after the machine's tip; stops before a block that needs ledger
        secrets the machine does not hold (a recovering or joining node: it gets them, then
        resumes here) or an application cannot run here yet (a Sawtooth TP that has not registered:
        the ledger stream takes over from the tip). Returns how many blocks were replayed."""
        replayed = 0
        files = chunk_files(self.ledger_dir)
        for i, path in enumerate(files):
            try:
                records, _ = read_chunk(path, last=i == len(files) - 1)
            except LedgerFileError as e:
                for later in files[i:]:
                    self._quarantine(later, str(e) if later == path else f"follows corrupt {path.name}")
                break
            for rec in records:
                if rec.seq <= machine.tip.seq:
                    continue
                try:
                    await machine.apply(rec.raw, rec.seq)
                    replayed += 1
                except NeedSecrets:
                    log.info("replay from chunks paused at stream sequence %d: it needs ledger secrets", rec.seq)
                    machine.index.flush()
                    return replayed
                except AppUnavailable as e:  # a Sawtooth TP not registered yet: the stream resumes here
                    log.info("replay from chunks paused at stream sequence %d: %s", rec.seq, e)
                    machine.index.flush()
                    return replayed
                except ChainError as e:
                    for later in files[i:]:
                        self._quarantine(later, f"{path}: at byte {rec.offset}: {e}" if later == path else "follows")
                    return replayed
        machine.index.flush()
        return replayed

    def append(self, height: int, seq: int, raw: bytes) -> None:
        if self.writer is None:
            self.writer = ChunkWriter(self.ledger_dir, self.blocks_per_chunk)
        self.writer.append(height, seq, raw)

    def flush(self, sync: bool = False) -> None:
        if self.writer is not None:
            self.writer.flush(sync)

    def _prune(self) -> None:
        for old in snapshot_files(self.snapshot_dir)[: -self.keep_snapshots]:
            old.unlink(missing_ok=True)
        m.SNAPSHOTS.inc()

    def start_snapshot(self, machine: LedgerMachine, secret: bytes) -> bool:
        """Snapshot in a forked child, as Redis does: the child serializes, seals and writes a
        copy-on-write image of the state while this process keeps executing. False when one is
        still being written (this one is skipped). The child also makes the chunks durable up to
        the snapshot's height (fsync can take tens of milliseconds here) and runs at a lower
        priority, so neither stalls the execution of blocks."""
        if self._child is not None:
            return False
        self.flush()
        height = machine.tip.height
        path = self.snapshot_dir / snapshot_name(height)
        header = {"ledger": machine.ledger, "height": height, "seq": machine.tip.seq}
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the child: no event loop, no logging, no locks of the parent's threads
            code = 1
            try:
                end_with_parent(parent)
                os.nice(SNAPSHOT_CHILD_NICENESS)
                self.flush(sync=True)
                write_snapshot(path, header, machine.snapshot(), secret)
                code = 0
            finally:
                os._exit(code)
        self._child = (pid, height, path, time.monotonic())
        return True

    def poll_snapshot(self, *, wait: bool = False) -> tuple[int, str] | None:
        """(height, digest) once the child finished writing; None while it works or if it failed.
        With `wait`, block until it finished (a stop: the snapshot is kept, reaped exactly once)."""
        if self._child is None:
            return None
        pid, height, path, started = self._child
        done, status = os.waitpid(pid, 0 if wait else os.WNOHANG)
        if done == 0:
            if time.monotonic() - started > SNAPSHOT_CHILD_TIMEOUT_S:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                self._child = None
                path.unlink(missing_ok=True)
                log.error("snapshot at height %d took too long; abandoned", height)
            return None
        self._child = None
        if os.waitstatus_to_exitcode(status) != 0:
            path.unlink(missing_ok=True)
            log.error("writing the snapshot at height %d failed", height)
            return None
        self._prune()
        return height, read_snapshot_header(path)["digest"]

    def close(self) -> None:
        self.poll_snapshot(wait=True)
        if self.writer is not None:
            self.writer.close()
            self.writer = None
