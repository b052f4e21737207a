"""The transaction key a client seals to, vouched for by endorsed nodes of k distinct members.

Every trusted executor holds the service key, so a transaction key signed by it (the `signature`
of a `tx_key` row, `conclavium.identity.sign_tx_key`) is one node's word: one node, or a gateway
relaying its answer, could hand out a key of its own. A client therefore takes a transaction key
only when nodes of at least k distinct members of the consortium identity it trusts (k its
threshold, as for receipts) each say that this is the ledger's current key.

Each node says it with a signed read answer (`conclavium.read_answer`) to the request
`{"type": "tx_key"}`: `{"tx_key": {"id", "public", "signature", "from_height", "from_ts"},
"signed_read": {...}}`, the row its state holds. The gateway asks every executor at once and
relays what they answered (`GET /v1/service/tx-key`):

    {"vouches": [answer, ...]}

The gateway is not trusted with any of it: a vouch that does not verify against the identity
(another request, a node no member endorsed, a retired node, a changed key) is not counted, and
one node counts for one member whatever it signs. Format: docs/formats.md ("Transaction key").

Nor can it replay old vouches. Signed answers do not expire, so a set recorded before a rotation
still verifies after it, and a gateway (with whoever holds the retired key, say a removed node)
could keep clients sealing to the retired key. So a client asks with a fresh random `nonce`
(`GET /v1/service/tx-key?nonce=HEX`, the request `{"type": "tx_key", "nonce"}`): each node's
signature covers the request, so an answer to another nonce is not counted (`wrong_request`), and
every vouch counted was given after the client asked. It also names the lowest height it accepts
(what it saw committed): an answer read at an older state is not counted (`stale_read`).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

from conclavium import read_answer
from conclavium.consortium import Identity

REQUEST_TYPE = "tx_key"
MAX_VOUCHES = 1000
NONCE_BYTES = 16
NONCE_PATTERN = re.compile(r"[0-9a-f]{32,128}")  # what a gateway relays: 16 to 64 bytes, lowercase hex


class TxKeyError(ValueError):
    """Why no transaction key is vouched for; `code` is machine-readable: `malformed`,
    `insufficient_vouches`, `conflicting_vouches`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


@dataclass(frozen=True)
class VouchedKey:
    id: str
    public: bytes  # X25519, 32 bytes
    from_height: int
    members: list[str]  # the distinct members whose nodes vouched
    nodes: list[str]


def new_nonce() -> str:
    return secrets.token_hex(NONCE_BYTES)


def request(nonce: str | None = None) -> dict[str, Any]:
    """What each executor answers, signed, with the transaction key its state holds; with the
    client's `nonce`, an answer only to this asking."""
    return {"type": REQUEST_TYPE} if nonce is None else {"type": REQUEST_TYPE, "nonce": nonce}


def _key(answer: dict[str, Any]) -> tuple[str, str, int]:
    row = answer.get("tx_key")
    if not isinstance(row, dict):
        raise TxKeyError("malformed", "a vouch names a tx_key object")
    key_id, public, height = row.get("id"), row.get("public"), row.get("from_height")
    try:
        raw = bytes.fromhex(public) if isinstance(public, str) else b""
    except ValueError:
        raw = b""
    if not isinstance(key_id, str) or not key_id or len(raw) != 32 or type(height) is not int:
        raise TxKeyError("malformed", "a tx_key has an id, 32 bytes of hex public key and from_height")
    return key_id, raw.hex(), height


def verify(doc: Any, identity: Identity, *, nonce: str | None = None, min_height: int = 0) -> VouchedKey:
    """The transaction key nodes of at least `identity.threshold` distinct members of `identity`
    vouch for in `doc` (the newest, should two keys each have enough: one member's nodes may be on
    both sides of a rotation), counting only answers to `nonce` read at `min_height` or later;
    TxKeyError otherwise. Without a nonce, vouches recorded at any earlier time count: a client
    that asked with one passes it."""
    vouches = doc.get("vouches") if isinstance(doc, dict) else None
    if not isinstance(vouches, list) or len(vouches) > MAX_VOUCHES:
        raise TxKeyError("malformed", f"vouches must be a list of at most {MAX_VOUCHES} answers")
    asked = request(nonce)
    backers: dict[tuple[str, str, int], dict[str, str]] = {}  # key -> node -> member
    refused: list[str] = []
    for v in vouches:
        try:
            checked = read_answer.verify(v, asked, identity, min_height=min_height)
            key = _key(checked.answer)
        except (read_answer.ReadAnswerError, TxKeyError) as e:
            refused.append(e.code)
            continue
        backers.setdefault(key, {})[checked.node] = checked.member
    enough = [(k, nodes) for k, nodes in backers.items() if len(set(nodes.values())) >= identity.threshold]
    if not enough:
        best = max((len(set(n.values())) for n in backers.values()), default=0)
        detail = f"; {len(refused)} vouch(es) refused: {', '.join(sorted(set(refused)))}" if refused else ""
        raise TxKeyError(
            "insufficient_vouches",
            f"nodes of at most {best} distinct member(s) vouch for one transaction key, the consortium identity "
            f"(version {identity.version}) needs {identity.threshold}{detail}",
        )
    enough.sort(key=lambda kn: kn[0][2])
    if len(enough) > 1 and enough[-1][0][2] == enough[-2][0][2]:
        raise TxKeyError("conflicting_vouches", "two transaction keys of the same height are each vouched for")
    (key_id, public, height), nodes = enough[-1]
    return VouchedKey(key_id, bytes.fromhex(public), height, sorted(set(nodes.values())), sorted(nodes))
