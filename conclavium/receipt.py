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
time of its block as the executors agreed it). From rules version 4 (receipt version 3) every
commit signature covers `ts_ms` (`conclavium.block.statement`), so the time is the signers' word,
not the relayer's: moving it to when a retired or expired node still counted breaks every honest
signature, and that node's own signature over an earlier time is over another statement. The
verifier takes no other time for such a receipt. A receipt of version 2 (a ledger before rules
version 4) carries `ts_ms` beside the signatures, unsigned: the verifier must state the time
instead (`at_ms`, CLI `--at`), e.g. when it fetched the receipt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from conclavium import merkle
from conclavium.block import leaf_data, statement
from conclavium.consortium import Identity
from conclavium.encoding import b64d, b64e
from conclavium.endorsement import NOT_COUNTED, EndorsementError, endorsed_node_key

RECEIPT_VERSION = 3  # ts_ms is signed
UNSIGNED_TIME_VERSION = 2  # a block committed before rules version 4: ts_ms is not signed


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
    time_signed: bool = True,
) -> dict[str, Any]:
    """`signatures`: (node id, signature, node signing key PEM, member endorsement base64);
    `ts_ms`: the block's ledger time, which the signatures cover unless `time_signed` is false
    (a block before rules version 4)."""
    return {
        "v": RECEIPT_VERSION if time_signed else UNSIGNED_TIME_VERSION,
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


def time_unsigned(r: Any) -> bool:
    """Whether the receipt's time is not covered by its signatures (version 2): `verify` then
    needs the time from the caller."""
    return isinstance(r, dict) and r.get("v") == UNSIGNED_TIME_VERSION


def _time(r: dict[str, Any], at_ms: int | None) -> tuple[int, int | None]:
    """When the signers' endorsements must be valid, and the time the statement covers: a version 3
    receipt's signed ts_ms and nothing else; for version 2 the caller's time, and none signed."""
    if not time_unsigned(r):
        ts = r.get("ts_ms")
        if type(ts) is not int or ts < 0:
            raise ReceiptError("malformed", "ts_ms must be a non-negative integer (milliseconds)")
        if at_ms is not None:
            raise ReceiptError(
                "time_signed", "the receipt's ledger time is signed: it is the only time its signers are checked at"
            )
        return ts, ts
    if type(at_ms) is not int or at_ms < 0:
        raise ReceiptError(
            "no_time",
            "the receipt's ledger time (ts_ms) is not signed (a ledger before rules version 4): state the time "
            "to verify at",
        )
    return at_ms, None


def verify(r: Any, identity: Identity, *, tx_hash: str | None = None, at_ms: int | None = None) -> VerifiedReceipt:
    """Verify a receipt against the consortium identity the caller trusts, its signers' endorsements
    at its signed ledger time (version 3; `at_ms` is refused) or at `at_ms` (version 2, required);
    raises ReceiptError naming the first failed check."""
    if not isinstance(r, dict) or r.get("v") not in (RECEIPT_VERSION, UNSIGNED_TIME_VERSION):
        raise ReceiptError("malformed", f"not a version {RECEIPT_VERSION} (or {UNSIGNED_TIME_VERSION}) receipt")
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
    at, signed_ts = _time(r, at_ms)
    stmt = statement(ledger, height, bhash, root, quorum, signed_ts)
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
