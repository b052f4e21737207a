"""Receipts: proof that a transaction is committed, verifiable offline with the service certificate.

A receipt holds the transaction's leaf components, its Merkle inclusion path in its block, the
signed statement (ledger, height, block hash, root, quorum) and the quorum's signatures, each with
the node certificate the service identity issued. Verification recomputes the root from the leaf,
checks every certificate against the service certificate and every signature over the statement,
and requires at least `quorum` distinct endorsed signers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from conclavium import merkle
from conclavium.block import leaf_data, statement
from conclavium.encoding import b64d, b64e
from conclavium.identity import CertificateError, load_cert, verify_node_certificate

RECEIPT_VERSION = 1


class ReceiptError(ValueError):
    """Why a receipt does not verify; `code` is machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


@dataclass(frozen=True)
class VerifiedReceipt:
    ledger: str
    height: int
    index: int
    tx_hash: str
    signers: list[str]


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
    signatures: list[tuple[str, bytes, str]],
) -> dict[str, Any]:
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
        "signatures": [{"node": n, "signature": b64e(s), "cert": c} for n, s, c in signatures],
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


def verify(
    r: Any, service_cert_pem: str, *, min_signers: int = 1, tx_hash: str | None = None
) -> VerifiedReceipt:
    """Verify a receipt; raises ReceiptError naming the first failed check."""
    if not isinstance(r, dict) or r.get("v") != RECEIPT_VERSION:
        raise ReceiptError("malformed", "not a version 1 receipt")
    ledger, height, index, quorum = r.get("ledger"), r.get("height"), r.get("index"), r.get("quorum")
    if not isinstance(ledger, str) or not all(isinstance(x, int) for x in (height, index, quorum)):
        raise ReceiptError("malformed", "ledger, height, index and quorum are required")
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
    if quorum < 1:
        raise ReceiptError("malformed", "quorum must be at least 1")
    try:
        service_cert = load_cert(service_cert_pem)
    except CertificateError as e:
        raise ReceiptError("bad_service_certificate", str(e)) from None
    stmt = statement(ledger, height, bhash, root, quorum)
    signers: list[str] = []
    sigs = r.get("signatures")
    if not isinstance(sigs, list):
        raise ReceiptError("malformed", "signatures must be a list")
    for s in sigs:
        if not isinstance(s, dict) or not all(isinstance(s.get(k), str) for k in ("node", "signature", "cert")):
            raise ReceiptError("malformed", "each signature needs node, signature and cert")
        try:
            key = verify_node_certificate(s["cert"], service_cert)
        except CertificateError as e:
            raise ReceiptError("untrusted_node", f"node {s['node'][:16]}: {e}") from None
        if key.key_id != s["node"]:
            raise ReceiptError("untrusted_node", "certificate does not belong to the named node")
        try:
            sig = b64d(s["signature"])
        except ValueError:
            raise ReceiptError("malformed", "signature is not base64") from None
        if not key.verify(sig, stmt):
            raise ReceiptError("bad_signature", f"signature of node {s['node'][:16]} does not verify")
        if s["node"] not in signers:
            signers.append(s["node"])
    needed = max(quorum, min_signers)
    if len(signers) < needed:
        raise ReceiptError("insufficient_signatures", f"{len(signers)} distinct signers, {needed} needed")
    return VerifiedReceipt(ledger, height, index, leaf_tx.hex(), signers)
