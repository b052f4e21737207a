"""Signed read answers: what an endorsed executor vouches for when it answers a read, so that an
untrusted gateway relaying the answer cannot change it, or hand out the answer to another request.

Every read the gateway relays is one executor request (a JSON object with a `type`, built by the
functions below on both sides: the gateway builds it from the HTTP request, the client from what it
asked). The executor answers it from its state at one height; its statement about the answer is

    READ_DOMAIN || canonical_json([ledger, height, request, answer])

with `request` = hex SHA-256 of canonical_json(the request without `min_height`) and `answer` =
hex SHA-256 of canonical_json(the answer object without `signed_read`). One signature covers a
batch of answers (those an executor gives in one turn of its event loop: one under light load,
many under heavy load): the statements are the leaves of an RFC 6962 Merkle tree, and the node key
signs `READ_BATCH_DOMAIN || canonical_json([ledger, root])`. Each answer object gets

    "signed_read": {"v": 2, "ledger", "height", "request", "path", "node", "signature",
                    "signing_key", "endorsement"}

where `path` is its leaf's inclusion path (`[["l"|"r", hex], ...]`, empty for a batch of one),
`signing_key` the node key (PEM) and `endorsement` its member's endorsement (base64 COSE_Sign1):
the same per-signer material a receipt carries, checked against the consortium identity the
verifier trusts (`conclavium.endorsement`). Version 1 carried a node certificate of the service
key instead, which every node holds; it is refused. The answer is re-encoded by the verifier:
values lie in the ledger's value domain (`conclavium.values`), which canonical JSON encodes the
same way after any number of round trips.

`min_height` is the freshness the caller asks for, raised by the gateway to the newest commit it
heard of; it is not part of the request's identity. The answer names the height it was read at:
a verifier refuses an answer older than the height it requires (`stale_read`). What this does and
does not guarantee is in docs/confidentiality.md ("Signed reads").
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from conclavium import merkle
from conclavium.consortium import Identity
from conclavium.crypto.keys import PrivateKey
from conclavium.encoding import b64d, b64e, canonical_json, dumps, loads
from conclavium.endorsement import Endorsed, EndorsementError, endorsed_node_key

READ_VERSION = 2
READ_DOMAIN = b"conclavium.read-answer.v1\x00"
READ_BATCH_DOMAIN = b"conclavium.read-answer-batch.v1\x00"
FIELD = "signed_read"
FRESHNESS = "min_height"
# Set by a gateway that found no endorsed node to answer: a node not endorsed answers anyway,
# unsigned (clients that verify refuse it; others get the best there is). Routing, not the question.
UNENDORSED_OK = "unendorsed_ok"


class ReadAnswerError(ValueError):
    """Why a read answer is refused; `code` is machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


@dataclass(frozen=True)
class VerifiedRead:
    answer: dict[str, Any]  # the answer object, without its signature
    height: int
    node: str
    member: str  # the member whose endorsement of the node counted


# --- the requests a read names (the gateway and the clients build them with these) ------------------


def state_request(map_name: str, key: str) -> dict[str, Any]:
    """`GET /v1/state/{map}/{key}`."""
    return {"type": "get", "map": map_name, "key": key}


def query_request(body: str, signature: str) -> dict[str, Any]:
    """`POST /v1/queries`: the signed query's two fields."""
    return {"type": "query", "query": {"body": body, "signature": signature}}


def service_request() -> dict[str, Any]:
    return {"type": "service"}


def proposals_request(state: str | None) -> dict[str, Any]:
    return {"type": "gov_proposals", "state": state}


def proposal_request(proposal_id: str) -> dict[str, Any]:
    return {"type": "gov_proposal", "id": proposal_id}


def constitution_request() -> dict[str, Any]:
    return {"type": "gov_constitution"}


def members_request() -> dict[str, Any]:
    return {"type": "gov_members"}


# --- the statement ------------------------------------------------------------------------------


def request_hash(request: dict[str, Any]) -> str:
    asked = {k: v for k, v in request.items() if k not in (FRESHNESS, UNENDORSED_OK)}
    return hashlib.sha256(canonical_json(asked)).hexdigest()


def answer_hash(answer: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json({k: v for k, v in answer.items() if k != FIELD})).hexdigest()


def statement(ledger: str, height: int, request: str, answer: str) -> bytes:
    return READ_DOMAIN + canonical_json([ledger, height, request, answer])


def batch_statement(ledger: str, root: bytes) -> bytes:
    """What the node key signs: the root of a batch of answer statements."""
    return READ_BATCH_DOMAIN + canonical_json([ledger, root.hex()])


@dataclass(frozen=True)
class Unsigned:
    """One answer waiting for its batch's signature, hashed and encoded when it was given (the
    state it was read from may change before the batch is signed)."""

    height: int
    request: str  # request_hash
    answer: str  # answer_hash
    body: bytes  # the answer object as JSON


def unsigned(height: int, request: dict[str, Any], answer: dict[str, Any]) -> Unsigned:
    return Unsigned(height, request_hash(request), answer_hash(answer), dumps(answer))


def sign_batch(
    key: PrivateKey,
    endorsement: str,
    ledger: str,
    items: list[Unsigned],
    node: str | None = None,
    signing_key: str | None = None,
) -> list[bytes]:
    """Each answer as JSON with its `signed_read` attached, one signature for all of them.
    `endorsement`: the member's endorsement of this node key (base64). `node` and `signing_key`
    (PEM): the key's id and public half, if the caller has them (deriving them costs about a
    signature)."""
    leaves = [merkle.leaf_hash(statement(ledger, i.height, i.request, i.answer)) for i in items]
    tree = merkle.levels(leaves)
    sig = b64e(key.sign(batch_statement(ledger, tree[-1][0])))
    node = node or key.key_id
    signing_key = signing_key or key.public_key.pem
    out = []
    for index, item in enumerate(items):
        path = [[side, h.hex()] for side, h in merkle.inclusion_path(tree, index)]
        signed = dumps(
            {
                "v": READ_VERSION,
                "ledger": ledger,
                "height": item.height,
                "request": item.request,
                "path": path,
                "node": node,
                "signature": sig,
                "signing_key": signing_key,
                "endorsement": endorsement,
            }
        )
        head = item.body[:-1] + b"," if item.body != b"{}" else b"{"
        out.append(head + b'"' + FIELD.encode() + b'":' + signed + b"}")
    return out


def sign(
    key: PrivateKey, endorsement: str, ledger: str, height: int, request: dict[str, Any], answer: dict[str, Any]
) -> dict[str, Any]:
    """One answer with its `signed_read` attached (a batch of one)."""
    return dict(loads(sign_batch(key, endorsement, ledger, [unsigned(height, request, answer)])[0]))


def _path(value: Any) -> list[tuple[str, bytes]]:
    if not isinstance(value, list) or len(value) > 64:
        raise ReadAnswerError("malformed", "path must be a list of at most 64 [side, hash] pairs")
    out = []
    for step in value:
        if not (isinstance(step, list) and len(step) == 2 and step[0] in ("l", "r") and isinstance(step[1], str)):
            raise ReadAnswerError("malformed", 'each path step is ["l" or "r", hex hash]')
        try:
            h = bytes.fromhex(step[1])
        except ValueError:
            h = b""
        if len(h) != 32:
            raise ReadAnswerError("malformed", "each path hash is 32 bytes of hex")
        out.append((step[0], h))
    return out


def verify(response: Any, request: dict[str, Any], identity: Identity, *, min_height: int = 0) -> VerifiedRead:
    """Check a relayed answer to `request`: signed by a node a member of `identity` endorsed and the
    identity has not retired by the answer's height, for this request, the identity's ledger and a
    height of at least `min_height`. Raises ReadAnswerError."""
    ledger = identity.ledger
    if not isinstance(response, dict):
        raise ReadAnswerError("malformed", "a read answer is a JSON object")
    s = response.get(FIELD)
    if s is None:
        raise ReadAnswerError("unsigned_read", "the answer carries no executor signature")
    if not isinstance(s, dict) or s.get("v") != READ_VERSION:
        raise ReadAnswerError("malformed", f"{FIELD} is not a version {READ_VERSION} signature")
    fields = {k: s.get(k) for k in ("ledger", "request", "node", "signature", "signing_key", "endorsement")}
    height = s.get("height")
    if not all(isinstance(v, str) for v in fields.values()) or type(height) is not int:
        raise ReadAnswerError(
            "malformed", f"{FIELD} needs ledger, height, request, path, node, signature, signing_key and endorsement"
        )
    if fields["ledger"] != ledger:
        raise ReadAnswerError("wrong_ledger", f"the answer is for ledger {str(fields['ledger'])[:64]!r}")
    if fields["request"] != request_hash(request):
        raise ReadAnswerError("wrong_request", "the answer is for another request")
    if height < min_height:
        raise ReadAnswerError("stale_read", f"the answer was read at height {height}, {min_height} or later needed")
    node = str(fields["node"])
    try:
        endorsed = _endorsed(node, str(fields["signing_key"]), str(fields["endorsement"]), identity)
        if not identity.counts(node, height):
            raise EndorsementError("retired", f"retired after height {identity.retired[node]}")
    except EndorsementError as e:
        raise ReadAnswerError("untrusted_node", f"node {node[:16]}: {e}") from None
    try:
        sig = b64d(str(fields["signature"]))
    except ValueError:
        raise ReadAnswerError("malformed", "signature is not base64") from None
    answer = {k: v for k, v in response.items() if k != FIELD}
    leaf = merkle.leaf_hash(statement(ledger, height, str(fields["request"]), answer_hash(answer)))
    root = merkle.root_from_path(leaf, _path(s.get("path")))
    if not endorsed.key.verify(sig, batch_statement(ledger, root)):
        raise ReadAnswerError("bad_signature", "the executor's signature does not cover this answer")
    return VerifiedRead(answer, height, node, endorsed.member)


_ENDORSED: dict[tuple[str, str, str, str], Endorsed] = {}
_ENDORSED_MAX = 256


def _endorsed(node: str, signing_key: str, endorsement: str, identity: Identity) -> Endorsed:
    """`endorsed_node_key`, remembered per identity version (retirement is checked per answer by
    the caller): a client reads from the same few nodes again and again, and checking an
    endorsement costs more than the answer's signature."""
    cache_key = (identity.digest, node, signing_key, endorsement)
    key = _ENDORSED.get(cache_key)
    if key is None:
        key = endorsed_node_key(node, signing_key, endorsement, identity, 0)
        if len(_ENDORSED) >= _ENDORSED_MAX:
            _ENDORSED.pop(next(iter(_ENDORSED)))
        _ENDORSED[cache_key] = key
    return key
