"""RFC 6962 Merkle trees: leaf hashes prefixed 0x00, interior nodes 0x01.

Every block has its own tree over the leaves of its transactions; a commit signature covers the
root and the block hash (which chains to all history), so inclusion proofs stay short and the
memory of an executor does not grow with the ledger.
"""

from __future__ import annotations

import hashlib

_sha = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    return _sha(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha(b"\x01" + left + right).digest()


EMPTY_ROOT = _sha(b"").digest()


def levels(leaves: list[bytes]) -> list[list[bytes]]:
    """All levels of the tree, leaves first. RFC 6962 splits at the largest power of two below n,
    which for a bottom-up build is the same as carrying an odd last node up unchanged."""
    if not leaves:
        return [[EMPTY_ROOT]]
    out = [leaves]
    level = leaves
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        out.append(nxt)
        level = nxt
    return out


def root(leaves: list[bytes]) -> bytes:
    return levels(leaves)[-1][0]


def inclusion_path(tree: list[list[bytes]], index: int) -> list[tuple[str, bytes]]:
    """Siblings from leaf to root, each tagged 'l' or 'r' for its side."""
    path: list[tuple[str, bytes]] = []
    for level in tree[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            path.append(("l" if sibling < index else "r", level[sibling]))
        index //= 2
    return path


def root_from_path(leaf: bytes, path: list[tuple[str, bytes]]) -> bytes:
    h = leaf
    for side, sibling in path:
        if side == "l":
            h = node_hash(sibling, h)
        elif side == "r":
            h = node_hash(h, sibling)
        else:
            raise ValueError(f"bad side {side!r} in inclusion path")
    return h
