"""Offline audit of an executor's persisted ledger (`conclavium ledger audit DIR`).

Two modes, one report:

- **With the ledger secrets** (the executor's own data directory): every block is replayed from
  genesis through a fresh ledger machine, so every rule of live execution is checked again (hash
  chain, client and node signatures, attestation of joining nodes, governance, the Merkle root of
  every block against the roots the trusted nodes signed, the commit rule), and the state at every
  height whose snapshot digest the nodes recorded is recomputed and compared with it.
- **Without them** (a member auditing a copy of the ledger files, or `--without-secrets`): the same
  machine runs as a `PublicReplay`. Governance, node messages and public transactions are public and
  execute exactly as on an executor; sealed transactions cannot write the governance tables, so the
  node set, the commit quorum and the transaction keys it follows are the executors' own at every
  height. A sealed transaction is checked up to the point where its plaintext is needed (signature,
  sender, validity window, transaction key) and then counted as not replayed; a block holding one
  has a Merkle root that cannot be recomputed, so its commit signatures are checked for agreement
  among the trusted nodes instead of against a root.

In both modes every commit signature in the ledger is checked on its own, with the node keys
governance held when the block carrying it was applied: a trusted node's valid signature must name
the block hash the files hold at that height and the quorum replay computes, and (where the root is
known) the same root; trusted nodes must not sign different roots for one height; and each block
that needed a commit below the highest committed one must have a quorum, counted as live execution
counts it (nodes of k distinct members, `commit_rule`), after every block. Snapshot files are checked
against the digests recorded in the ledger (decrypted too, when the secrets are there).

The report says what was checked and, under `not_checked`, exactly what could not be. Exit 0 when
everything checkable passed, 1 with the reasons otherwise, 2 when the audit itself could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from conclavium import node_messages, rules
from conclavium.block import Block, Kind, decode_block, sig_statement
from conclavium.chain import ChainError
from conclavium.consortium import quorum_met as has_quorum
from conclavium.crypto.keys import PublicKey
from conclavium.ledger_files import (
    BlockRecord,
    LedgerFileError,
    chunk_files,
    read_chunk,
    read_snapshot,
    read_snapshot_header,
    snapshot_digest,
    snapshot_files,
)
from conclavium.tx import TxError

from .enclave import LedgerSecrets
from .ledger_machine import MEMBERS, SNAPSHOT_DIGESTS, LedgerMachine, NeedSecrets
from .verifier import BatchVerifier

NOT_REPLAYED = "not_replayed"


class AuditFailure(Exception):
    """The audit cannot go on: the files do not form a ledger that can be replayed."""


class PublicReplay(LedgerMachine):
    """A ledger machine without the ledger secrets: everything public executes as on an executor,
    and a sealed transaction stops, after every check that needs no plaintext, as not replayed."""

    def _check_keys(self, block: Block) -> None:
        return  # nothing waits for secrets here: sealed operations are not opened at all

    def _open(self, key_id: str, box: bytes, info: bytes) -> bytes:
        raise TxError(NOT_REPLAYED, "sealed operations are not replayed without the ledger secrets")


@dataclass
class Height:
    """What replay established about one block, to check the commit signatures that name it."""

    hash: bytes
    quorum: int
    root: bytes | None  # None: not recomputable (sealed entries not replayed)
    leaves: bool  # whether the block has accepted entries (when the root is known)
    signed_time: int | None  # the ledger time its commit signatures state (rules version 4 on), else None
    votes: dict[bytes, set[str]] = field(default_factory=dict)  # root -> trusted signers
    committed: bool = False


@dataclass
class Audit:
    data_dir: Path
    with_secrets: bool
    problems: list[str] = field(default_factory=list)
    heights: dict[int, Height] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    invalid: Counter[str] = field(default_factory=Counter)
    recomputed: dict[int, str] = field(default_factory=dict)  # height -> digest of the replayed state
    open: set[int] = field(default_factory=set)  # heights not yet seen committed

    def problem(self, text: str) -> None:
        if len(self.problems) < 50:
            self.problems.append(text)
        self.counts["problems"] += 1


async def audit(data_dir: Path, use_secrets: bool = True) -> dict[str, Any]:
    """Audit `data_dir`; with `use_secrets` the directory's ledger secrets are used if present."""
    secrets = LedgerSecrets.load_for_audit(data_dir) if use_secrets else None
    if secrets is not None:
        try:
            return await _run(data_dir, secrets)
        except NeedSecrets as e:
            report = await _run(data_dir, None)
            report["mode_note"] = (
                f"the secrets in {data_dir} lack generation {e} that the ledger uses: audited without secrets"
            )
            return report
    report = await _run(data_dir, None)
    if use_secrets:
        report["mode_note"] = f"no ledger secrets in {data_dir}: audited without secrets"
    return report


def _records(data_dir: Path) -> tuple[list[BlockRecord], bool]:
    ledger_dir = data_dir / "ledger"
    files = chunk_files(ledger_dir)
    if not files:
        raise AuditFailure(f"no ledger chunks in {ledger_dir}")
    out: list[BlockRecord] = []
    torn = False
    for i, path in enumerate(files):
        try:
            records, tail = read_chunk(path, last=i == len(files) - 1)
        except LedgerFileError as e:
            raise AuditFailure(str(e)) from None
        out += records
        torn = torn or tail is not None
    return out, torn


def _snapshot_heights(records: list[BlockRecord]) -> set[int]:
    """Heights some node recorded a snapshot digest for: where replay recomputes the state's digest."""
    heights: set[int] = set()
    for rec in records:
        try:
            block = decode_block(rec.raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue  # replay reports it
        for e in block.entries:
            if e.kind != Kind.NODE or b'"snapshot"' not in e.data:
                continue
            try:
                msg = node_messages.decode(e.data)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
            if isinstance(msg, node_messages.SnapshotDigest):
                heights.add(msg.height)
    return heights


async def _run(data_dir: Path, secrets: LedgerSecrets | None) -> dict[str, Any]:
    records, torn = _records(data_dir)
    try:
        ledger = decode_block(records[0].raw).ledger
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise AuditFailure(f"{records[0].path}: at byte {records[0].offset}: the first block does not decode") from None
    a = Audit(data_dir, secrets is not None)
    recompute = _snapshot_heights(records) if secrets is not None else set()
    verifier = BatchVerifier(2)
    machine: LedgerMachine = (
        LedgerMachine(ledger, verifier, secrets=secrets) if secrets is not None else PublicReplay(ledger, verifier)
    )
    try:
        for rec in records:
            nodes = machine.signer_keys()  # the node set the block's commit signatures count against
            where = f"{rec.path}: at byte {rec.offset}"
            try:
                block, out = await machine.apply(rec.raw, rec.seq)
            except ChainError as e:
                if machine.tip.height == 0 and e.reason == "bad_height":
                    raise AuditFailure(f"{where}: the ledger files do not start at genesis ({e})") from None
                raise AuditFailure(f"{where}: block refused: {e}") from None
            except NeedSecrets:
                raise
            except Exception as e:  # an executor would be stuck on this block too: report where
                raise AuditFailure(f"{where}: applying the block raised {type(e).__name__}: {e}") from None
            a.counts["blocks"] += 1
            _entries(a, block, out.invalid)
            _signatures(a, machine, block, nodes)
            _record_height(a, machine, block, out.invalid)
            _count(a, machine)
            if block.height in recompute:
                secret = machine.snapshot_secret()
                if secret is not None:
                    a.recomputed[block.height] = snapshot_digest(machine.snapshot(), secret)
            if secrets is not None and machine.fork_reason and not a.counts["fork"]:
                a.counts["fork"] += 1
                a.problem(f"at height {block.height}: {machine.fork_reason}")
    finally:
        verifier.close()
    return _report(a, machine, torn)


def _entries(a: Audit, block: Block, invalid: list[tuple[bytes, str, str]]) -> None:
    a.counts["entries"] += len(block.entries)
    for _, code, message in invalid:
        if code == NOT_REPLAYED:
            a.counts["not_replayed"] += 1
            continue
        a.invalid[code] += 1
        if code == "snapshot_mismatch":
            a.problem(f"at height {block.height}: {message}")


def _signatures(a: Audit, machine: LedgerMachine, block: Block, nodes: dict[str, PublicKey]) -> None:
    """Each commit signature of `block`, checked against what replay established for its height."""
    for s in block.sigs:
        key = nodes.get(s.node)
        known = a.heights.get(s.height)
        if key is None or known is None:
            a.counts["signatures_ignored"] += 1  # not a trusted node, or a height not applied yet: live ignores it too
            continue
        if not key.verify(s.signature, sig_statement(s, machine.ledger)):
            a.counts["signatures_bad"] += 1  # anyone ordering blocks can put junk here; it counts for nothing
            continue
        a.counts["signatures_valid"] += 1
        who = f"trusted node {s.node[:16]}"
        if s.block_hash != known.hash:
            a.problem(
                f"at height {s.height}: {who} signed block hash {s.block_hash.hex()[:16]}, "
                f"the ledger files hold {known.hash.hex()[:16]}"
            )
        elif s.quorum != known.quorum:
            a.problem(f"at height {s.height}: {who} signed for quorum {s.quorum}, replay computes {known.quorum}")
        elif s.ts_ms != known.signed_time:
            a.problem(f"at height {s.height}: {who} signed time {s.ts_ms}, replay computes {known.signed_time}")
        elif known.root is not None and not known.leaves:
            a.problem(f"at height {s.height}: {who} signed a block that has no accepted entries on replay")
        elif known.root is not None and s.root != known.root:
            a.problem(
                f"at height {s.height}: {who} signed root {s.root.hex()[:16]}, replay computes {known.root.hex()[:16]}"
            )
        else:
            known.votes.setdefault(s.root, set()).add(s.node)
            if len(known.votes) == 2:
                a.problem(f"at height {s.height}: trusted nodes signed different roots for the same block")


def _record_height(a: Audit, machine: LedgerMachine, block: Block, invalid: list[tuple[bytes, str, str]]) -> None:
    rec = machine.uncommitted.get(block.height)  # present exactly when the block has accepted entries
    unknown = any(code == NOT_REPLAYED for _, code, _ in invalid)
    root = None if unknown else (rec.root if rec is not None else b"")
    timed = machine.rules_version() >= rules.SIGNED_TIME_FROM
    signed_time = machine.tip.ts_ms if timed else None
    a.heights[block.height] = Height(machine.tip.hash, machine.quorum(), root, rec is not None, signed_time)
    if rec is not None or root is None:  # a block that can need a commit
        a.open.add(block.height)


def _count(a: Audit, machine: LedgerMachine) -> None:
    """Mark the heights whose votes now meet the commit rule as live execution applies it after
    this block: the larger of the block's and the current node quorum, nodes of k members."""
    member_of, k, quorum = machine.signer_members(), machine.member_threshold(), machine.quorum()
    for h in [h for h in a.open if a.heights[h].votes]:
        known = a.heights[h]
        if any(has_quorum(v, member_of, max(known.quorum, quorum), k) for v in known.votes.values()):
            known.committed = True
            a.open.discard(h)


def _commits(a: Audit) -> dict[str, Any]:
    """Which blocks a quorum of trusted nodes committed, and whether any needed block fell short."""
    committed = [h for h, k in a.heights.items() if k.committed]
    top = max(committed, default=0)
    short, unsigned_sealed, tail = [], 0, 0
    for h, k in a.heights.items():
        if h in committed:
            continue
        needs = k.leaves if k.root is not None else bool(k.votes)
        if k.root is None and not k.votes:
            unsigned_sealed += 1
        elif not needs:
            continue
        elif h < top:
            short.append(h)
        else:
            tail += 1
    for h in short[:10]:
        a.problem(f"at height {h}: the block needed a commit but its valid signatures never met the commit rule")
    return {
        "blocks_committed": len(committed),
        "committed_height": top,
        "uncommitted_tail_blocks": tail,
        "sealed_only_blocks_unsigned": unsigned_sealed,
    }


def _snapshots(a: Audit, machine: LedgerMachine, secrets: dict[str, bytes]) -> dict[str, Any]:
    recorded = dict(machine.state.items(SNAPSHOT_DIGESTS))
    files = decrypted = 0
    for path in snapshot_files(a.data_dir / "snapshots"):
        try:
            header = read_snapshot_header(path)
            if secrets:
                header, _ = read_snapshot(path, secrets)
                decrypted += 1
        except LedgerFileError as e:
            a.problem(str(e))
            continue
        files += 1
        height = header.get("height")
        if not isinstance(height, int):
            a.problem(f"{path}: the snapshot header names no height")
            continue
        row = recorded.get(f"{height:012d}")
        if row is not None and row["digest"] != header.get("digest"):
            a.problem(f"{path}: digest differs from the one recorded in the ledger at height {height}")
        replayed = a.recomputed.get(height)
        if replayed is not None and replayed != header.get("digest"):
            a.problem(f"{path}: the state replayed to height {height} differs from this snapshot")
    compared = 0
    for key, row in recorded.items():
        replayed = a.recomputed.get(int(key))
        if replayed is None:
            continue
        compared += 1
        if replayed != row["digest"]:
            a.problem(f"at height {int(key)}: the replayed state differs from the snapshot digest the nodes recorded")
    return {
        "recorded_digests": len(recorded),
        "recorded_digests_agreed_by_several_nodes": sum(1 for r in recorded.values() if len(r.get("nodes", [])) > 1),
        "state_recomputed_and_compared": compared,
        "files_checked": files,
        "files_decrypted": decrypted,
    }


def _report(a: Audit, machine: LedgerMachine, torn: bool) -> dict[str, Any]:
    secrets = machine.secrets.secret_map() if machine.secrets is not None else {}
    commits = _commits(a)
    snapshots = _snapshots(a, machine, secrets)
    roots_known = sum(1 for k in a.heights.values() if k.root is not None and k.leaves)
    roots_unknown = sum(1 for k in a.heights.values() if k.root is None)
    not_checked: dict[str, Any] = {}
    if not a.with_secrets:
        not_checked = {
            "sealed_entries_not_replayed": a.counts["not_replayed"],
            "blocks_root_not_recomputed": roots_unknown,
            "snapshot_digests_not_recomputed": snapshots["recorded_digests"],
            "snapshot_files_not_decrypted": snapshots["files_checked"],
            "why": "sealed operations, their write digests (so the roots of blocks holding them), the private "
            "state and snapshot bodies need the ledger secrets; recorded snapshot digests were compared between "
            "nodes and with the snapshot files' headers instead",
        }
    report: dict[str, Any] = {
        "ok": not a.problems,
        "mode": "with secrets" if a.with_secrets else "without secrets",
        "ledger": machine.ledger,
        "blocks": a.counts["blocks"],
        "height": machine.tip.height,
        "torn_tail_bytes_ignored": torn,
        "checked": {
            "hash_chain_blocks": a.counts["blocks"],
            "entries": a.counts["entries"],
            "entries_executed": machine.entries_executed,
            "entries_invalid": dict(sorted(a.invalid.items())),
            "block_roots_recomputed": roots_known,
            "commit_signatures_valid": a.counts["signatures_valid"],
            "commit_signatures_bad": a.counts["signatures_bad"],
            "commit_signatures_ignored": a.counts["signatures_ignored"],
            **commits,
            "members": sum(1 for _, r in machine.state.items(MEMBERS) if r.get("status") == "Active"),
            "trusted_nodes": len(machine.trusted_node_keys()),
            "quorum": machine.quorum(),
            "snapshots": snapshots,
        },
        "not_checked": not_checked,
    }
    if a.problems:
        report["problems"] = a.problems
        report["problem_count"] = a.counts["problems"]
        report["error"] = a.problems[0]
    return report


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="conclavium-executor audit", description="audit an executor's persisted ledger")
    p.add_argument("data_dir", type=Path)
    p.add_argument("--without-secrets", action="store_true", help="audit as a member would, without the secrets")
    args = p.parse_args(argv)
    try:
        report = asyncio.run(audit(args.data_dir, use_secrets=not args.without_secrets))
    except AuditFailure as e:
        print(json.dumps({"ok": False, "error": str(e)}, indent=2))
        return 1
    except Exception as e:  # the audit reports; it never ends in a traceback
        print(json.dumps({"ok": False, "error": f"the audit could not run: {type(e).__name__}: {e}"}, indent=2))
        return 2
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
