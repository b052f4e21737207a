"""Receipts: proof that a transaction is committed, verifiable offline with the consortium identity.

A receipt holds the transaction's leaf components, its Merkle inclusion path in its block, the
signed statement (ledger, height, block hash, root, node quorum) and the signatures of the nodes
that committed it, each with the node's signing key and its member's endorsement (a COSE_Sign1
document, `conclavium.consortium`). Verification recomputes the root from the leaf, checks each
endorsement against the members of the identity the verifier trusts, each signature over the
statement, and requires nodes of at least k distinct members, k being the identity's threshold.
Nothing that decides the count comes from the receipt: not k, not the member set, not which nodes
are retired, so no node (and no member alone, with all its nodes) can make a receipt verify.

A signer counts only while its endorsement is valid at the receipt's ledger time (`ts_ms`, the
time of its block as the executors agreed it), or at the time the verifier states instead. `ts_ms`
is not covered by the commit signatures: a verifier that does not take the receipt's word for it
states the time (`at_ms`, CLI `--at`), e.g. when it fetched the receipt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from conclavium import merkle
from conclavium.block import leaf_data, statement
from conclavium.consortium import Identity
from conclavium.encoding import b64d, b64e
from conclavium.endorsement import NOT_COUNTED, EndorsementError, endorsed_node_key

RECEIPT_VERSION = 2


class ReceiptError(ValueError):
    """Why a receipt does not verify; `code` is machine-readable."""

    def __init__(self, code: str, message: str, not_counted: dict[str, str] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.not_counted = not_counted or {}  # node id -> why its signature did not count (a code)


@dataclass(frozen=True)
class VerifiedReceipt:
    ledger: str
    height: int
    index: int
    tx_hash: str
    signers: list[str]  # the nodes that counted
    members: list[str]  # their members, distinct


def build(
    *,
    ledger: str,
    height: int,
    index: int,
    tx_hash: bytes,
    write_digest: bytes,
    path: list[tuple[str, bytes]],
    root: bytes,
    block_hash: bytes,
    quorum: int,
    ts_ms: int,
    signatures: list[tuple[str, bytes, str, str]],
) -> dict[str, Any]:
    """`signatures`: (node id, signature, node signing key PEM, member endorsement base64);
    `ts_ms`: the block's ledger time."""
    return {
        "v": RECEIPT_VERSION,
        "ledger": ledger,
        "height": height,
        "index": index,
        "tx_hash": tx_hash.hex(),
        "write_digest": write_digest.hex(),
        "path": [[side, h.hex()] for side, h in path],
        "root": root.hex(),
        "block_hash": block_hash.hex(),
        "quorum": quorum,
        "ts_ms": ts_ms,
        "signatures": [
            {"node": n, "signature": b64e(s), "signing_key": k, "endorsement": e} for n, s, k, e in signatures
        ],
    }


def _hex(r: dict[str, Any], field: str, size: int = 32) -> bytes:
    v = r.get(field)
    try:
        b = bytes.fromhex(v) if isinstance(v, str) else b""
    except ValueError:
        b = b""
    if len(b) != size:
        raise ReceiptError("malformed", f"{field} must be {size} bytes of hex")
    return b


def _time(r: dict[str, Any], at_ms: int | None) -> int:
    """When the signers' endorsements must be valid: the caller's time, else the receipt's."""
    at = r.get("ts_ms") if at_ms is None else at_ms
    if type(at) is not int or at < 0:
        raise ReceiptError("no_time", "the receipt names no ledger time (ts_ms): state the time to verify at")
    return at


def verify(
    r: Any, identity: Identity, *, tx_hash: str | None = None, at_ms: int | None = None
) -> VerifiedReceipt:
    """Verify a receipt against the consortium identity the caller trusts, its signers' endorsements
    at `at_ms` (default: the receipt's ledger time); raises ReceiptError naming the first failed
    check."""
    if not isinstance(r, dict) or r.get("v") != RECEIPT_VERSION:
        raise ReceiptError("malformed", f"not a version {RECEIPT_VERSION} receipt")
    ledger, height, index, quorum = r.get("ledger"), r.get("height"), r.get("index"), r.get("quorum")
    if not isinstance(ledger, str) or not all(type(x) is int for x in (height, index, quorum)):
        raise ReceiptError("malformed", "ledger, height, index and quorum are required")
    if ledger != identity.ledger:
        raise ReceiptError("wrong_ledger", f"the receipt is for ledger {ledger!r}, not {identity.ledger!r}")
    leaf_tx = _hex(r, "tx_hash")
    if tx_hash is not None and leaf_tx.hex() != tx_hash.lower():
        raise ReceiptError("wrong_transaction", "the receipt is for another transaction")
    leaf = merkle.leaf_hash(leaf_data(leaf_tx, _hex(r, "write_digest")))
    root, bhash = _hex(r, "root"), _hex(r, "block_hash")
    try:
        path = [(side, bytes.fromhex(h)) for side, h in r.get("path", [])]
        computed = merkle.root_from_path(leaf, path)
    except (ValueError, TypeError):
        raise ReceiptError("malformed", "inclusion path is malformed") from None
    if computed != root:
        raise ReceiptError("bad_inclusion_proof", "the leaf and path do not lead to the signed root")
    stmt = statement(ledger, height, bhash, root, quorum)
    at = _time(r, at_ms)
    sigs = r.get("signatures")
    if not isinstance(sigs, list):
        raise ReceiptError("malformed", "signatures must be a list")
    counted: dict[str, str] = {}  # node -> member
    ignored: list[str] = []
    not_counted: dict[str, str] = {}
    for s in sigs:
        if not isinstance(s, dict) or not all(
            isinstance(s.get(k), str) for k in ("node", "signature", "signing_key", "endorsement")
        ):
            raise ReceiptError("malformed", "each signature needs node, signature, signing_key and endorsement")
        member = _signer(s, identity, height, at, stmt)
        if isinstance(member, str):
            counted.setdefault(s["node"], member)
        else:
            ignored.append(f"node {s['node'][:16]}: {member.message}")
            not_counted.setdefault(s["node"], member.code)
    members = sorted(set(counted.values()))
    if len(members) < identity.threshold:
        detail = f"; not counted: {'; '.join(ignored)}" if ignored else ""
        raise ReceiptError(
            "insufficient_signatures",
            f"nodes of {len(members)} distinct member(s) signed, the consortium identity (version "
            f"{identity.version}) needs {identity.threshold}{detail}",
            not_counted,
        )
    return VerifiedReceipt(ledger, height, index, leaf_tx.hex(), sorted(counted), members)


def _signer(s: dict[str, Any], identity: Identity, height: int, at_ms: int, stmt: bytes) -> str | EndorsementError:
    """The member a signature counts for, or why it does not count: a node the identity does not
    vouch for (another member set, retired, its endorsement not valid at `at_ms`) is not counted;
    a signature or endorsement that was tampered with fails the whole receipt."""
    try:
        endorsed = endorsed_node_key(s["node"], s["signing_key"], s["endorsement"], identity, height, at_ms)
    except EndorsementError as e:
        if e.code in NOT_COUNTED:
            return e
        code = "malformed" if e.code == "malformed" else "untrusted_node"
        raise ReceiptError(code, f"node {s['node'][:16]}: {e.message}") from None
    try:
        sig = b64d(s["signature"])
    except ValueError:
        raise ReceiptError("malformed", f"node {s['node'][:16]}: signature is not base64") from None
    if not endorsed.key.verify(sig, stmt):
        raise ReceiptError("bad_signature", f"signature of node {s['node'][:16]} does not verify")
    return endorsed.member
