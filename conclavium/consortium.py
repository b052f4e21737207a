"""The consortium identity and member-signed node endorsements: what receipts are verified against.

A *consortium identity* names, for one ledger, the members (name, signing key, weight, and an
optional encryption key) and the member threshold k: a commit, and so a receipt, needs signatures
of nodes of at least k distinct members. Version 1 is the genesis and carries the digest of the
genesis configuration; the founders sign it. Every later version names the digest of the one
before and counts only when at least the previous version's threshold of the previous version's
members signed it (TUF/Sigstore root rotation). Members sign offline; executors refuse a version
without those signatures, so neither a node nor a member short of k can change it.

A *node endorsement* is a COSE_Sign1 document signed by one member: this node key belongs to me,
from not_before to not_after. A node counts for commits (and in receipts) only with the
endorsement of an active member; retirement is listed in the next identity version
(`retired_nodes`, from a height on), so an offline verifier holding that version sees it too.

Nothing here trusts a receipt, a gateway or a node: the verifier's trusted input is an identity
document (or a chain of them from a version it trusts). Wire formats: docs/formats.md.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from conclavium import cose
from conclavium.crypto.keys import KeyError_, PrivateKey, PublicKey
from conclavium.encoding import canonical_json

IDENTITY_TYPE = "conclavium.consortium-identity"
SIGNING_DOMAIN = b"conclavium.consortium.v1\x00"
MSG_NODE_ENDORSEMENT = "node_endorsement"
DEFAULT_ENDORSEMENT_DAYS = 365
MAX_MEMBERS = 256
MAX_RETIRED = 10_000
_BODY_FIELDS = ("type", "ledger", "version", "previous", "members", "threshold", "retired_nodes", "genesis")
_MEMBER_FIELDS = ("id", "name", "public_key", "weight", "encryption_key")


class IdentityError(ValueError):
    """An identity document or endorsement that does not verify; `code` is machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def majority(n: int) -> int:
    """The least threshold an identity of n members may have: more than half of them."""
    return n // 2 + 1


def quorum_met(nodes: Iterable[str], member_of: Mapping[str, str] | None, quorum: int, k: int) -> bool:
    """The commit rule's count: at least `quorum` of the nodes that count (those in `member_of`),
    endorsed by at least k distinct members. Executors and JoinScan use it. `member_of` None: the
    rule of rules versions before 3, every node given counts, as its own member."""
    if member_of is None:
        counted = list(nodes)
        return quorum > 0 and len(counted) >= quorum and len(set(counted)) >= k
    counted = [n for n in nodes if n in member_of]
    return quorum > 0 and len(counted) >= quorum and len({member_of[n] for n in counted}) >= k


def _key_id(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _int(value: object, what: str, lo: int, hi: int) -> int:
    if type(value) is not int or not lo <= value <= hi:
        raise IdentityError("malformed", f"{what} must be an integer in [{lo}, {hi}]")
    return value


def _member(row: object) -> dict[str, Any]:
    if not isinstance(row, dict) or not set(row) <= set(_MEMBER_FIELDS):
        raise IdentityError("malformed", f"a member is an object with fields {', '.join(_MEMBER_FIELDS)}")
    name, pem = row.get("name"), row.get("public_key")
    if not isinstance(name, str) or not name or len(name) > 64:
        raise IdentityError("malformed", "a member needs a name of 1-64 characters")
    if not isinstance(pem, str) or "PRIVATE" in pem:
        raise IdentityError("malformed", f"member {name!r}: public_key must be a public key PEM")
    try:
        key = PublicKey.load(pem)
    except KeyError_ as e:
        raise IdentityError("malformed", f"member {name!r}: {e}") from None
    if row.get("id", key.key_id) != key.key_id:
        raise IdentityError("malformed", f"member {name!r}: id is not the key id of its public_key")
    out: dict[str, Any] = {
        "id": key.key_id,
        "name": name,
        "public_key": key.pem,
        "weight": _int(row.get("weight", 1), f"member {name!r} weight", 1, 1_000_000),
    }
    if row.get("encryption_key") is not None:
        if not isinstance(row["encryption_key"], str) or len(row["encryption_key"]) > 16384:
            raise IdentityError("malformed", f"member {name!r}: encryption_key must be a string")
        out["encryption_key"] = row["encryption_key"]
    return out


def normalise(body: object) -> dict[str, Any]:
    """An identity body checked for shape and normalised (members sorted by id, PEM re-encoded);
    IdentityError otherwise. Signatures are over the normalised form."""
    if not isinstance(body, dict) or not set(body) <= set(_BODY_FIELDS) or body.get("type") != IDENTITY_TYPE:
        raise IdentityError("malformed", f"not a consortium identity (type {IDENTITY_TYPE})")
    ledger = body.get("ledger")
    if not isinstance(ledger, str) or not ledger:
        raise IdentityError("malformed", "ledger must be a non-empty string")
    version = _int(body.get("version"), "version", 1, 2**53)
    previous = body.get("previous")
    if (version == 1) != (previous is None) or (previous is not None and not _key_id(previous)):
        raise IdentityError("malformed", "previous is null for version 1, else the previous version's digest")
    rows = body.get("members")
    if not isinstance(rows, list) or not 1 <= len(rows) <= MAX_MEMBERS:
        raise IdentityError("malformed", f"members must be a list of 1 to {MAX_MEMBERS} members")
    members = sorted((_member(r) for r in rows), key=lambda m: m["id"])
    if len({m["id"] for m in members}) != len(members) or len({m["name"] for m in members}) != len(members):
        raise IdentityError("malformed", "members are named once each, with distinct keys")
    threshold = _int(body.get("threshold"), "threshold", 1, len(members))
    if threshold < majority(len(members)):
        raise IdentityError(
            "threshold_too_low", f"threshold {threshold} is below a majority of the {len(members)} members"
        )
    retired_rows = body.get("retired_nodes", [])
    if not isinstance(retired_rows, list) or len(retired_rows) > MAX_RETIRED:
        raise IdentityError("malformed", "retired_nodes must be a list")
    retired: dict[str, int] = {}
    for r in retired_rows:
        if not isinstance(r, dict) or set(r) != {"node", "after_height"} or not _key_id(r["node"]):
            raise IdentityError("malformed", "a retired node is {node: key id, after_height: integer}")
        retired[r["node"]] = _int(r["after_height"], "after_height", 0, 2**53)
    genesis = body.get("genesis")
    if genesis is not None and (version != 1 or not _key_id(genesis)):
        raise IdentityError("malformed", "genesis (the genesis configuration's digest) belongs to version 1 only")
    out: dict[str, Any] = {
        "type": IDENTITY_TYPE,
        "ledger": ledger,
        "version": version,
        "previous": previous,
        "members": members,
        "threshold": threshold,
        "retired_nodes": [{"node": n, "after_height": h} for n, h in sorted(retired.items())],
    }
    if genesis is not None:
        out["genesis"] = genesis
    return out


def make_identity(
    ledger: str,
    members: list[dict[str, Any]],
    threshold: int | None = None,
    *,
    version: int = 1,
    previous: str | None = None,
    retired_nodes: list[dict[str, Any]] | None = None,
    genesis: str | None = None,
) -> dict[str, Any]:
    """An unsigned identity document; threshold defaults to a majority of the members."""
    body = {
        "type": IDENTITY_TYPE,
        "ledger": ledger,
        "version": version,
        "previous": previous,
        "members": members,
        "threshold": majority(len(members)) if threshold is None else threshold,
        "retired_nodes": retired_nodes or [],
        **({"genesis": genesis} if genesis is not None else {}),
    }
    return {"identity": normalise(body), "signatures": []}


def next_identity(current: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """The unsigned successor of `current` (a document or body) with `changes` (members, threshold,
    retired_nodes); it names `current`'s digest."""
    body = normalise(current.get("identity", current))
    fields = {k: body[k] for k in ("members", "threshold", "retired_nodes")}
    fields.update(changes)
    if "members" in changes and "threshold" not in changes:
        fields["threshold"] = max(majority(len(fields["members"])), min(body["threshold"], len(fields["members"])))
    return make_identity(
        body["ledger"],
        fields["members"],
        fields["threshold"],
        version=body["version"] + 1,
        previous=digest(body),
        retired_nodes=fields["retired_nodes"],
    )


MEMBERSHIP_ACTIONS = ("set_member", "remove_member")


def members_after(body: dict[str, Any], actions: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The member list of `body` after a proposal's set_member/remove_member actions, as the next
    identity lists it (None when the proposal changes no member, or carries its own identity):
    what a member signs in its ballot (conclavium.governance.documents.make_ballot)."""
    names = [a.get("name") for a in actions]
    if "set_consortium_identity" in names or not set(names) & set(MEMBERSHIP_ACTIONS):
        return None
    rows = {m["id"]: dict(m) for m in normalise(body)["members"]}
    for action in actions:
        args = action.get("args", {})
        if action.get("name") == "set_member":
            key = PublicKey.load(args["public_key"])
            row = {"name": args["name"], "public_key": key.pem, "weight": args.get("weight", 1)}
            if args.get("encryption_key") is not None:
                row["encryption_key"] = args["encryption_key"]
            rows[key.key_id] = row
        elif action.get("name") == "remove_member":
            gone = args.get("member_id") or next((k for k, m in rows.items() if m["name"] == args.get("name")), None)
            rows.pop(gone or "", None)
    return [{k: v for k, v in m.items() if k != "id"} for m in rows.values()]


def signature_over(body: dict[str, Any], key: PrivateKey) -> str:
    """`key`'s signature over an identity body, base64: a ballot carries it for the next identity."""
    return base64.b64encode(key.sign(_signed_bytes(normalise(body)))).decode()


def digest(body: dict[str, Any]) -> str:
    """Hex SHA-256 of the canonical JSON of a normalised body: how the next version names it."""
    return hashlib.sha256(canonical_json(body)).hexdigest()


def genesis_digest(config: dict[str, Any]) -> str:
    """What the founders sign about the genesis configuration: every field but the identity."""
    return hashlib.sha256(canonical_json({k: v for k, v in config.items() if k != "consortium"})).hexdigest()


def _signed_bytes(body: dict[str, Any]) -> bytes:
    return SIGNING_DOMAIN + canonical_json(body)


def sign(doc: dict[str, Any], key: PrivateKey) -> dict[str, Any]:
    """`doc` with `key`'s signature added (or replaced): what `conclavium consortium sign` does."""
    body = normalise(doc.get("identity"))
    sig = base64.b64encode(key.sign(_signed_bytes(body))).decode()
    others = [s for s in doc.get("signatures", []) if isinstance(s, dict) and s.get("member") != key.key_id]
    return {"identity": body, "signatures": [*others, {"member": key.key_id, "signature": sig}]}


def signers(doc: dict[str, Any], members: dict[str, PublicKey]) -> list[str]:
    """The ids of `members` whose signature over the document's body verifies."""
    body = normalise(doc.get("identity"))
    data = _signed_bytes(body)
    sigs = doc.get("signatures", [])
    if not isinstance(sigs, list):
        raise IdentityError("malformed", "signatures must be a list")
    out: list[str] = []
    for s in sigs:
        if not isinstance(s, dict) or not isinstance(s.get("signature"), str):
            raise IdentityError("malformed", "a signature is {member, signature}")
        key = members.get(s.get("member", ""))
        try:
            raw = base64.b64decode(s["signature"], validate=True)
        except (binascii.Error, ValueError):
            raise IdentityError("malformed", "a signature is not base64") from None
        if key is not None and s["member"] not in out and key.verify(raw, data):
            out.append(s["member"])
    return out


@dataclass(frozen=True)
class Identity:
    """A verified identity version, as verifiers and executors use it."""

    ledger: str
    version: int
    digest: str
    members: dict[str, PublicKey]
    names: dict[str, str]
    threshold: int
    retired: dict[str, int]  # node id -> the last height its signatures count at
    body: dict[str, Any]

    def counts(self, node: str, height: int) -> bool:
        """Whether a node's signature over a statement at `height` may count (not retired by then)."""
        after = self.retired.get(node)
        return after is None or height <= after


def _identity(body: dict[str, Any]) -> Identity:
    keys = {m["id"]: PublicKey.load(m["public_key"]) for m in body["members"]}
    return Identity(
        ledger=body["ledger"],
        version=body["version"],
        digest=digest(body),
        members=keys,
        names={m["id"]: m["name"] for m in body["members"]},
        threshold=body["threshold"],
        retired={r["node"]: r["after_height"] for r in body["retired_nodes"]},
        body=body,
    )


def load(doc: object) -> Identity:
    """An identity document taken as trusted (the verifier's anchor), checked for shape only."""
    if not isinstance(doc, dict) or "identity" not in doc:
        raise IdentityError("malformed", "an identity document is {identity, signatures}")
    return _identity(normalise(doc["identity"]))


def verify_genesis(doc: object, ledger: str | None = None) -> Identity:
    """Version 1 signed by at least its threshold of its own members (the founders)."""
    ident = load(doc)
    assert isinstance(doc, dict)
    if ident.version != 1:
        raise IdentityError("not_genesis", f"the genesis identity is version 1, not {ident.version}")
    if ledger is not None and ident.ledger != ledger:
        raise IdentityError("wrong_ledger", f"the identity is for ledger {ident.ledger!r}, not {ledger!r}")
    got = signers(doc, ident.members)
    if len(got) < ident.threshold:
        raise IdentityError(
            "insufficient_signatures", f"{len(got)} founder signature(s), the threshold is {ident.threshold}"
        )
    return ident


def verify_next(current: Identity, doc: object) -> Identity:
    """The next version of `current`, once at least `current.threshold` of `current`'s members
    signed it; IdentityError otherwise."""
    nxt = load(doc)
    assert isinstance(doc, dict)
    if nxt.ledger != current.ledger:
        raise IdentityError("wrong_ledger", f"the identity is for ledger {nxt.ledger!r}")
    if nxt.version != current.version + 1 or nxt.body["previous"] != current.digest:
        raise IdentityError(
            "not_next_version",
            f"version {nxt.version} naming {str(nxt.body['previous'])[:16]} does not follow version "
            f"{current.version} ({current.digest[:16]})",
        )
    for node, after in current.retired.items():
        if nxt.retired.get(node) != after:
            raise IdentityError("retirement_dropped", f"node {node[:16]} stays retired from height {after}")
    got = signers(doc, current.members)
    if len(got) < current.threshold:
        raise IdentityError(
            "insufficient_signatures",
            f"{len(got)} signature(s) of version {current.version}'s members, its threshold is {current.threshold}",
        )
    return nxt


def verify_chain(docs: list[Any]) -> Identity:
    """The last identity of a chain whose first document is trusted and each next one verifies."""
    if not docs:
        raise IdentityError("malformed", "an identity chain holds at least one document")
    ident = load(docs[0])
    for doc in docs[1:]:
        ident = verify_next(ident, doc)
    return ident


def load_trusted(text: str | bytes) -> Identity:
    """The identity a verifier was handed: one document (trusted as is) or a JSON list of them
    (the first trusted, each next verified against the one before)."""
    try:
        value = json.loads(text)
    except ValueError:
        raise IdentityError("malformed", "the consortium identity is not JSON") from None
    return verify_chain(value) if isinstance(value, list) else load(value)


# --- node endorsements --------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeEndorsement:
    member: str
    node: str
    signing_key: PublicKey
    not_before: int  # seconds since the epoch
    not_after: int

    def valid_at(self, ms: int) -> bool:
        return self.not_before * 1000 <= ms < self.not_after * 1000


def make_node_endorsement(
    key: PrivateKey,
    ledger: str,
    signing_key_pem: str,
    not_before: int,
    not_after: int | None = None,
) -> bytes:
    """A member's COSE_Sign1 endorsement of a node's signing key, valid from not_before (seconds)
    to not_after (by default DEFAULT_ENDORSEMENT_DAYS later)."""
    node_key = PublicKey.load(signing_key_pem)
    after = not_before + DEFAULT_ENDORSEMENT_DAYS * 86400 if not_after is None else not_after
    payload = canonical_json(
        {"node": node_key.key_id, "signing_key": node_key.pem, "not_before": not_before, "not_after": after}
    )
    headers = {cose.HDR_MSG_TYPE: MSG_NODE_ENDORSEMENT, cose.HDR_CREATED_AT: not_before, cose.HDR_LEDGER: ledger}
    return cose.sign1(payload, key, headers)


def read_node_endorsement(document: bytes, members: dict[str, PublicKey], ledger: str) -> NodeEndorsement:
    """A node endorsement signed by one of `members` for `ledger`; IdentityError otherwise
    (`unknown_member` when its signer is not one of them, `bad_endorsement` when it is and the
    document does not verify)."""
    try:
        signer = cose.parse1(document).kid
    except cose.CoseError as e:
        raise IdentityError("bad_endorsement", f"not a COSE_Sign1 document: {e}") from None
    if signer not in members:
        raise IdentityError("unknown_member", f"signed by {signer[:16]}, not a member of this identity")
    try:
        protected, payload = cose.verify1(document, members.get)
    except cose.CoseError as e:
        raise IdentityError("bad_endorsement", f"does not verify: {e}") from None
    if protected.get(cose.HDR_MSG_TYPE) != MSG_NODE_ENDORSEMENT:
        raise IdentityError("malformed", "not a node endorsement")
    if protected.get(cose.HDR_LEDGER) != ledger:
        raise IdentityError("wrong_ledger", "the endorsement is for another ledger")
    try:
        body = json.loads(payload)
        key = PublicKey.load(body["signing_key"])
        nb, na, node = body["not_before"], body["not_after"], body["node"]
    except (ValueError, KeyError, TypeError, KeyError_):
        raise IdentityError("malformed", "a node endorsement names node, signing_key, not_before, not_after") from None
    if type(nb) is not int or type(na) is not int or not 0 <= nb < na or node != key.key_id:
        raise IdentityError("malformed", "endorsement validity or node id is wrong")
    return NodeEndorsement(cose.parse1(document).kid, node, key, nb, na)
