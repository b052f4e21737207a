"""Stopping the executor's store while a snapshot child is still writing: the child is waited for
and reaped once, its snapshot kept, the chunks closed (a SIGTERM during a snapshot used to end the
executor with ChildProcessError before its ledger was closed)."""

from __future__ import annotations

import os
from pathlib import Path

from services.executor.ledger_machine import LedgerMachine
from services.executor.persistence import LedgerStore
from services.executor.verifier import BatchVerifier


def test_close_while_a_snapshot_is_written(tmp_path: Path) -> None:
    store = LedgerStore(tmp_path)
    machine = LedgerMachine("test-ledger", BatchVerifier(1))
    assert store.start_snapshot(machine, os.urandom(32))
    store.close()
    assert store._child is None
    assert [p.name for p in (tmp_path / "snapshots").iterdir()] == ["snapshot-000000000000.cvs"]
