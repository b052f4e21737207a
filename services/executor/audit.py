"""Offline audit of an executor's persisted ledger (`conclavium ledger audit DIR`).

Replays every chunk from genesis through a fresh ledger machine, so every rule of live execution is
checked again: the hash chain, every client and node signature, the attestation of joining nodes,
governance, the Merkle root of every block against the roots the trusted nodes signed (a signature
over another root is divergence), the commit rule. Snapshot files are checked against the digests
recorded in the ledger (and decrypted, when the directory holds the ledger secret).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from conclavium.block import decode_block
from conclavium.chain import ChainError
from conclavium.ledger_files import (
    LedgerFileError,
    chunk_files,
    read_chunk,
    read_snapshot,
    read_snapshot_header,
    snapshot_files,
)

from .enclave import LedgerSecrets
from .ledger_machine import SNAPSHOT_DIGESTS, LedgerMachine
from .verifier import BatchVerifier


class AuditFailure(Exception):
    pass


async def audit(data_dir: Path) -> dict[str, Any]:
    ledger_dir = data_dir / "ledger"
    files = chunk_files(ledger_dir)
    if not files:
        raise AuditFailure(f"no ledger chunks in {ledger_dir}")
    verifier = BatchVerifier(2)
    machine: LedgerMachine | None = None
    blocks = 0
    try:
        for i, path in enumerate(files):
            try:
                records, torn = read_chunk(path, last=i == len(files) - 1)
            except LedgerFileError as e:
                raise AuditFailure(str(e)) from None
            for rec in records:
                if machine is None:
                    machine = LedgerMachine(decode_block(rec.raw).ledger, verifier)
                try:
                    await machine.apply(rec.raw, rec.seq)
                except ChainError as e:
                    raise AuditFailure(f"{path}: at byte {rec.offset}: block refused: {e}") from None
                if machine.fork_reason:
                    raise AuditFailure(f"{path}: at byte {rec.offset}: {machine.fork_reason}")
                blocks += 1
        assert machine is not None
        snapshots = _check_snapshots(data_dir, machine)
        return {
            "ok": True,
            "ledger": machine.ledger,
            "blocks": blocks,
            "height": machine.tip.height,
            "entries": machine.entries_executed,
            "committed_height": machine.committed_height,
            "uncommitted_tail_blocks": len(machine.uncommitted),
            "trusted_nodes": len(machine.trusted_node_keys()),
            "snapshots_checked": snapshots,
            "torn_tail_bytes_ignored": torn is not None,
        }
    finally:
        verifier.close()


def _check_snapshots(data_dir: Path, machine: LedgerMachine) -> int:
    secrets = LedgerSecrets.load(data_dir)
    keys = secrets.secret_map() if secrets else {}
    checked = 0
    for path in snapshot_files(data_dir / "snapshots"):
        try:
            header = read_snapshot_header(path)
            if keys:
                header, _ = read_snapshot(path, keys)
        except LedgerFileError as e:
            raise AuditFailure(str(e)) from None
        recorded = machine.state.get(SNAPSHOT_DIGESTS, f"{header['height']:012d}")
        if recorded is not None and recorded["digest"] != header["digest"]:
            raise AuditFailure(f"{path}: digest differs from the one recorded in the ledger at {header['height']}")
        checked += 1
    return checked


def main(data_dir: Path) -> int:
    try:
        report = asyncio.run(audit(data_dir))
    except AuditFailure as e:
        print(json.dumps({"ok": False, "error": str(e)}))
        return 1
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
