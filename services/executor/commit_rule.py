"""The commit rule: a block commits once nodes of at least k distinct members, and at least the node
quorum of nodes, signed its (hash, root, quorum) and, from rules version 4, its ledger time.

k is the consortium identity's member threshold, so no member alone (with all its nodes) commits;
the node quorum is more than half of the nodes that can sign, so two forks shown to different
executors cannot both commit. Only nodes that are trusted, hold the secrets and carry an active
member's endorsement valid at the block's time count (`views.signer_members`).

Signatures travel in later blocks, so every executor counts the same signatures at the same height
and commits the same blocks in the same order. A quorum signing another root than this node's
means this node diverged: it records a fork and stops signing (the executor's part).
"""

from __future__ import annotations

from collections import OrderedDict

from conclavium.block import CommitSig
from conclavium.consortium import quorum_met as has_quorum
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
        agrees = (s.block_hash, s.root, s.quorum, s.ts_ms) == (rec.hash, rec.root, rec.quorum, rec.signed_time())
        votes.append((rec, s.node, s.signature, agrees))
    return votes


SIGNER_SAMPLE_BLOCKS = 20
"""A node whose signatures arrive after its blocks committed is re-checked once per this many heights."""
SIGNING_WINDOW_BLOCKS = 100
"""A trusted node counts as signing while its latest valid signature is this close to the newest one seen."""


def note_signers(
    sigs: list[CommitSig],
    votes: list[Vote],
    uncommitted: OrderedDict[int, BlockRecord],
    nodes: dict[str, PublicKey],
    ledger: str,
    last_signed: dict[str, int],
) -> None:
    """Record per trusted node the height of its latest valid commit signature, for the signing-nodes
    gauge (the quorum-at-risk alert): the votes already verified, and signatures on blocks that had
    committed before they arrived, which the commit rule skips. Those are verified at most once per
    node every SIGNER_SAMPLE_BLOCKS heights, so a node that is always the last to sign costs one
    verification now and then. Only newer heights count, so replaying a node's old signature cannot
    make a stopped node look alive. Metrics only: nothing here is ledger state."""
    for rec, node, _, agrees in votes:
        if agrees and rec.height > last_signed.get(node, -1):
            last_signed[node] = rec.height
    for s in sigs:
        if s.height in uncommitted or s.node not in nodes:
            continue
        if s.height <= last_signed.get(s.node, -SIGNER_SAMPLE_BLOCKS) + SIGNER_SAMPLE_BLOCKS:
            continue
        if node_auth.commit_sig_ok(s, nodes, ledger):
            last_signed[s.node] = s.height


def signing_nodes(last_signed: dict[str, int], trusted: dict[str, PublicKey]) -> set[str]:
    """Nodes of `trusted` (those whose signatures count) whose latest valid signature is within
    SIGNING_WINDOW_BLOCKS of the newest signature seen: a node that stopped while others kept
    signing drops out, and an idle ledger (nobody signs) keeps its last set. Before this process
    has seen any signature (just started on an idle ledger) there is no evidence either way, and
    every node of `trusted` is reported."""
    newest = max((last_signed[n] for n in trusted if n in last_signed), default=None)
    if newest is None:
        return set(trusted)
    floor = newest - SIGNING_WINDOW_BLOCKS
    return {node for node in trusted if last_signed.get(node, floor - 1) >= floor}


def count_signatures(
    votes: list[Vote], fork_reason: str | None, out: BlockOutcome, member_of: dict[str, str] | None, k: int
) -> str | None:
    """Add the votes to their blocks; returns the fork reason (new or as it was)."""
    for rec, node, signature, agrees in votes:
        if agrees:
            rec.signatures.setdefault(node, signature)
            continue
        rec.divergent.add(node)
        if fork_reason is None and has_quorum(rec.divergent, member_of, max(rec.quorum, 1), k):
            fork_reason = f"a quorum signed a different root or time at height {rec.height}: this node diverged"
            out.fork = fork_reason
    return fork_reason


def advance(
    uncommitted: OrderedDict[int, BlockRecord],
    index: ReceiptIndex,
    out: BlockOutcome,
    member_of: dict[str, str] | None,
    k: int,
    quorum: int,
) -> None:
    """Commit, oldest first, every block that has its quorum; each goes to the receipt index.
    The node quorum is the larger of the block's own and the current one (`quorum`), so a block
    executed before any node could sign (genesis, the first endorsements) commits once enough can."""
    while uncommitted:
        rec = next(iter(uncommitted.values()))
        if not has_quorum(rec.signatures, member_of, max(rec.quorum, quorum), k):
            break
        uncommitted.popitem(last=False)
        rec.committed = True
        out.committed.append(rec)
        index.add(
            CommittedBlock(rec.height, rec.hash, rec.root, rec.quorum, rec.ts_ms, rec.leaves, rec.signatures, rec.timed)
        )
