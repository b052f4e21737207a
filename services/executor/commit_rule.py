"""The commit rule: a block commits once a quorum of trusted nodes signed its (hash, root, quorum).

Signatures travel in later blocks, so every executor counts the same signatures at the same height
and commits the same blocks in the same order. A quorum signing another root than this node's
means this node diverged: it records a fork and stops signing (the executor's part).
"""

from __future__ import annotations

from collections import OrderedDict

from conclavium.block import CommitSig
from conclavium.crypto.keys import PublicKey

from . import node_auth
from .outcome import BlockOutcome, BlockRecord
from .receipt_index import CommittedBlock, ReceiptIndex

Vote = tuple[BlockRecord, str, bytes, bool]  # (record, node, signature, agrees)


def check_signatures(
    sigs: list[CommitSig], uncommitted: OrderedDict[int, BlockRecord], nodes: dict[str, PublicKey], ledger: str
) -> list[Vote]:
    """Verify a block's commit signatures with the node keys in force at its start; returns a vote
    for each valid one, counted when the block commits."""
    votes = []
    for s in sigs:
        rec = uncommitted.get(s.height)
        if rec is None or not node_auth.commit_sig_ok(s, nodes, ledger):
            continue
        agrees = (s.block_hash, s.root, s.quorum) == (rec.hash, rec.root, rec.quorum)
        votes.append((rec, s.node, s.signature, agrees))
    return votes


def count_signatures(votes: list[Vote], fork_reason: str | None, out: BlockOutcome) -> str | None:
    """Add the votes to their blocks; returns the fork reason (new or as it was)."""
    for rec, node, signature, agrees in votes:
        if agrees:
            rec.signatures.setdefault(node, signature)
            continue
        rec.divergent.add(node)
        if len(rec.divergent) >= max(rec.quorum, 1) and fork_reason is None:
            fork_reason = f"a quorum signed a different root at height {rec.height}: this node diverged"
            out.fork = fork_reason
    return fork_reason


def advance(uncommitted: OrderedDict[int, BlockRecord], index: ReceiptIndex, out: BlockOutcome) -> None:
    """Commit, oldest first, every block that has its quorum; each goes to the receipt index."""
    while uncommitted:
        rec = next(iter(uncommitted.values()))
        if len(rec.signatures) < rec.quorum or rec.quorum == 0:
            break
        uncommitted.popitem(last=False)
        rec.committed = True
        out.committed.append(rec)
        index.add(CommittedBlock(rec.height, rec.hash, rec.root, rec.quorum, rec.ts_ms, rec.leaves, rec.signatures))
