"""Apply one signed governance document to the governance tables, deterministically.

Every executor runs this for every governance transaction of a block, in block order, after
calling `expire` once at the start of the block. Inputs are only the tables, the document bytes and
the block's height and time, so honest executors always reach identical tables. A refused document
changes nothing and yields an Invalid outcome with a human-readable reason.
"""

from __future__ import annotations

import hashlib
from typing import Any

from conclavium import consortium, cose
from conclavium.crypto.keys import KeyError_, PublicKey
from conclavium.encoding import b64e
from conclavium.governance import actions as acts
from conclavium.governance import constitution as const
from conclavium.governance import recovery
from conclavium.governance.model import (
    ACCEPTED,
    ACTIVE,
    APPLIED,
    APPROVE,
    COMMIT_QUORUM_KEY,
    CONSTITUTION,
    CONSTITUTION_KEY,
    EXPIRED,
    FAILED,
    INVALID,
    MEASUREMENTS,
    MEMBERS,
    MSG_BALLOT,
    MSG_NODE_ENDORSEMENT,
    MSG_PROPOSAL,
    MSG_RECOVERY_SHARE,
    MSG_TYPES,
    MSG_WITHDRAWAL,
    NODE_PENDING,
    NODE_RETIRED,
    NODE_TRUSTED,
    NODES,
    OPEN,
    PROPOSALS,
    REJECT,
    SERVICE,
    SERVICE_OPENING,
    SERVICE_STATE_KEY,
    USERS,
    WITHDRAWN,
    Context,
    GovernanceError,
    Outcome,
    StagedTables,
    Tables,
    strict_json,
)


def document_id(document: bytes) -> str:
    """Proposal id (and, generally, document id): hex SHA-256 of the COSE bytes."""
    return hashlib.sha256(document).hexdigest()


def _current_constitution(tables: Tables) -> dict[str, Any]:
    constitution = tables.get(CONSTITUTION, CONSTITUTION_KEY)
    if constitution is None:
        raise GovernanceError("governance is not initialised (no constitution); run genesis first")
    return constitution


def _resolve(tables: Tables) -> cose.ResolveKey:
    def resolve(kid: str) -> PublicKey | None:
        if not const.is_key_id(kid):
            return None
        entry = tables.get(MEMBERS, kid) or tables.get(USERS, kid)
        if entry is None:
            return None
        try:
            return PublicKey.load(entry["public_key"])
        except KeyError_:
            return None

    return resolve


def _members(tables: Tables) -> dict[str, Any]:
    return dict(sorted(tables.items(MEMBERS)))


def _check_ledger(protected: dict[Any, Any], ctx: Context) -> None:
    """The document must name this ledger: the same member keys may govern other ledgers."""
    if ctx.ledger is None:
        raise GovernanceError("no ledger id to check the document against", "wrong_ledger")
    named = protected.get(cose.HDR_LEDGER)
    if named is None:
        raise GovernanceError(
            f"the document does not name its ledger ({cose.HDR_LEDGER} protected header)", "missing_ledger"
        )
    if named != ctx.ledger:
        shown = named if isinstance(named, str) else type(named).__name__
        raise GovernanceError(
            f"the document is for ledger {shown[:64]!r}, this is ledger {ctx.ledger!r}", "wrong_ledger"
        )


def _read_headers(protected: dict[Any, Any]) -> tuple[str, int, str | None]:
    msg_type = protected.get(cose.HDR_MSG_TYPE)
    if msg_type not in MSG_TYPES:
        raise GovernanceError(f"{cose.HDR_MSG_TYPE} must be one of {', '.join(MSG_TYPES)}, got {msg_type!r}")
    created_at = protected.get(cose.HDR_CREATED_AT)
    if type(created_at) is not int or created_at < 0:
        raise GovernanceError(f"{cose.HDR_CREATED_AT} must be a non-negative integer (seconds)")
    proposal_id = protected.get(cose.HDR_PROPOSAL_ID)
    if msg_type in (MSG_PROPOSAL, MSG_RECOVERY_SHARE, MSG_NODE_ENDORSEMENT):
        if proposal_id is not None:
            raise GovernanceError(f"a {msg_type} must not carry {cose.HDR_PROPOSAL_ID}")
    elif not const.is_key_id(proposal_id):
        raise GovernanceError(f"a {msg_type} needs {cose.HDR_PROPOSAL_ID} (64 lowercase hex digits)")
    return msg_type, created_at, proposal_id


def apply(tables: Tables, document: bytes, ctx: Context) -> Outcome:
    """Verify and apply one governance document; all-or-nothing."""
    outcome = Outcome(status=INVALID)
    staged = StagedTables(tables)
    try:
        _apply(staged, document, ctx, outcome)
    except (GovernanceError, cose.CoseError) as e:
        outcome.status = INVALID
        outcome.reason = str(e)
        outcome.code = e.code if isinstance(e, GovernanceError) else "governance_refused"
        outcome.effects = []
        return outcome
    staged.commit()
    outcome.status = APPLIED
    return outcome


def _apply(tables: StagedTables, document: bytes, ctx: Context, outcome: Outcome) -> None:
    try:
        msg = cose.parse1(document)
        msg_type, created_at, proposal_id = _read_headers(msg.protected)
    except cose.CoseError as e:
        raise GovernanceError(f"malformed governance document: {e}") from e
    _check_ledger(msg.protected, ctx)
    outcome.msg_type = msg_type
    outcome.proposal_id = proposal_id if proposal_id is not None else document_id(document)
    outcome.signer = msg.kid
    constitution = _current_constitution(tables)
    _, payload = cose.verify1(document, _resolve(tables))
    signer = msg.kid
    member = tables.get(MEMBERS, signer)
    if member is None:
        user = tables.get(USERS, signer)
        name = user["name"] if user else "?"
        raise GovernanceError(f"signer {signer} is a user ({name}), not a member: users cannot submit a {msg_type}")
    if member["status"] != ACTIVE:
        raise GovernanceError(f"signer {signer} ({member['name']}) is no longer a member (removed)")
    window_ms = constitution["replay_window_s"] * 1000
    skew_ms = created_at * 1000 - ctx.timestamp_ms
    # A recovery share is bound to the open recovery instead: when every executor is lost, no
    # trusted clock moves the ledger's time (conclavium/governance/recovery.py).
    if abs(skew_ms) > window_ms and msg_type != MSG_RECOVERY_SHARE:
        raise GovernanceError(
            f"created_at {created_at} is {abs(skew_ms) // 1000} s from block time "
            f"{ctx.timestamp_ms // 1000}, outside the {window_ms // 1000} s replay window"
        )
    if msg_type == MSG_PROPOSAL:
        _propose(tables, document, payload, signer, created_at, constitution, ctx, outcome)
    elif msg_type == MSG_RECOVERY_SHARE:
        recovery.record_share(tables, payload, signer, ctx)
    elif msg_type == MSG_NODE_ENDORSEMENT:
        _endorse_node(tables, document, signer, member, ctx, outcome)
    elif msg_type == MSG_BALLOT:
        assert proposal_id is not None
        _ballot(tables, proposal_id, payload, signer, ctx, outcome)
    else:
        assert proposal_id is not None
        _withdraw(tables, proposal_id, payload, signer, ctx, outcome)


def _endorse_node(
    tables: StagedTables, document: bytes, signer: str, member: dict[str, Any], ctx: Context, outcome: Outcome
) -> None:
    """A member vouches for a node that asked to join: from now on the node's signatures count
    for that member (within the endorsement's validity). A node belongs to one member."""
    assert ctx.ledger is not None
    try:
        e = consortium.read_node_endorsement(document, {signer: PublicKey.load(member["public_key"])}, ctx.ledger)
    except consortium.IdentityError as err:
        raise GovernanceError(f"node endorsement: {err.message}", err.code) from None
    node = tables.get(NODES, e.node)
    if node is None:
        raise GovernanceError(f"node {e.node} is not known (it must have requested to join)", "unknown_node")
    if node["status"] == NODE_RETIRED:
        raise GovernanceError(f"node {e.node} is retired", "node_retired")
    try:
        recorded = PublicKey.load(node.get("public_keys", {}).get("signing", ""))
    except KeyError_:
        recorded = None
    if recorded is None or recorded.key_id != e.signing_key.key_id:
        raise GovernanceError("the endorsement names another signing key than the node's", "wrong_node_key")
    owner = node.get("member")
    if owner is not None and owner != signer:
        raise GovernanceError(f"node {e.node} belongs to member {owner}", "node_of_other_member")
    if owner == signer and node.get("endorsement_validity", [0, 0])[0] > e.not_before:
        raise GovernanceError("an endorsement older than the node's current one", "older_endorsement")
    node.update(member=signer, endorsement=b64e(document), endorsement_validity=[e.not_before, e.not_after])
    tables.put(NODES, e.node, node)
    outcome.effects = [{"type": "node_endorsement", "node_id": e.node, "member": signer}]


def _payload_object(payload: bytes, allowed: tuple[str, ...], what: str) -> dict[str, Any]:
    body = strict_json(payload)
    if not isinstance(body, dict):
        raise GovernanceError(f"{what} payload must be a JSON object")
    unknown = sorted(k for k in body if k not in allowed)
    if unknown:
        raise GovernanceError(f"{what} payload has unknown field(s) {', '.join(unknown)}")
    return body


def _propose(
    tables: StagedTables,
    document: bytes,
    payload: bytes,
    signer: str,
    created_at: int,
    constitution: dict[str, Any],
    ctx: Context,
    outcome: Outcome,
) -> None:
    proposal_id = document_id(document)
    if tables.get(PROPOSALS, proposal_id) is not None:
        raise GovernanceError(f"proposal {proposal_id} was already submitted (replay)")
    body = _payload_object(payload, ("actions",), "proposal")
    actions = acts.validate_actions(body.get("actions"))
    for action in actions:
        if not const.may_propose(constitution, action["name"], signer):
            raise GovernanceError(
                f"member {signer} may not propose {action['name']} under constitution "
                f"version {constitution['version']}"
            )
    try:
        acts.apply_actions(StagedTables(tables), actions, ctx)
    except GovernanceError as e:
        raise GovernanceError(f"proposal cannot apply to the current state: {e}", e.code) from e
    proposal: dict[str, Any] = {
        "proposer": signer,
        "actions": actions,
        "state": OPEN,
        "created_height": ctx.height,
        "created_at": created_at,
        "opened_at_ms": ctx.timestamp_ms,
        "expires_at_ms": ctx.timestamp_ms + constitution["proposal_ttl_s"] * 1000,
        "constitution_version": constitution["version"],
        "accept": const.accept_rules(constitution, [a["name"] for a in actions]),
        "ballots": {},
        "final_height": None,
        "failure": None,
    }
    _settle(tables, proposal_id, proposal, ctx, outcome)


def _open_proposal(tables: Tables, proposal_id: str, ctx: Context, what: str) -> dict[str, Any]:
    proposal = tables.get(PROPOSALS, proposal_id)
    if proposal is None:
        raise GovernanceError(f"unknown proposal {proposal_id}")
    if proposal["state"] != OPEN:
        raise GovernanceError(f"proposal {proposal_id} is {proposal['state']}: no more {what}s")
    if ctx.timestamp_ms >= proposal["expires_at_ms"]:
        raise GovernanceError(f"proposal {proposal_id} expired at {proposal['expires_at_ms'] // 1000} s")
    return proposal


def _ballot(
    tables: StagedTables, proposal_id: str, payload: bytes, signer: str, ctx: Context, outcome: Outcome
) -> None:
    proposal = _open_proposal(tables, proposal_id, ctx, MSG_BALLOT)
    body = _payload_object(payload, ("vote", "identity_signature"), "ballot")
    vote = body.get("vote")
    if vote not in (APPROVE, REJECT):
        raise GovernanceError(f'ballot vote must be "approve" or "reject", got {vote!r}')
    sig = body.get("identity_signature")
    if sig is not None:
        if vote != APPROVE or not isinstance(sig, str) or len(sig) > 1024:
            raise GovernanceError("identity_signature is a base64 signature, on an approving ballot only")
        proposal.setdefault("identity_signatures", {})[signer] = sig
    previous = proposal["ballots"].get(signer)
    if previous is not None:
        raise GovernanceError(
            f"member {signer} already voted {previous} on proposal {proposal_id}; ballots are final"
        )
    proposal["ballots"][signer] = vote
    _settle(tables, proposal_id, proposal, ctx, outcome)


def _withdraw(
    tables: StagedTables, proposal_id: str, payload: bytes, signer: str, ctx: Context, outcome: Outcome
) -> None:
    proposal = _open_proposal(tables, proposal_id, ctx, MSG_WITHDRAWAL)
    if proposal["proposer"] != signer:
        raise GovernanceError(f"only the proposer {proposal['proposer']} may withdraw proposal {proposal_id}")
    if _payload_object(payload, (), "withdrawal"):
        raise GovernanceError("withdrawal payload must be an empty JSON object")
    proposal["state"] = WITHDRAWN
    proposal["final_height"] = ctx.height
    tables.put(PROPOSALS, proposal_id, proposal)
    outcome.proposal_state = WITHDRAWN


def _settle(
    tables: StagedTables, proposal_id: str, proposal: dict[str, Any], ctx: Context, outcome: Outcome
) -> None:
    """Evaluate the proposal's rules; on acceptance apply its actions atomically or mark it Failed."""
    state = const.evaluate(proposal["accept"], _members(tables), proposal["ballots"])
    if state == ACCEPTED:
        inner = StagedTables(tables)
        try:
            effects = acts.apply_actions(inner, proposal["actions"], ctx)
            waiting = _next_identity(inner, tables, proposal)
            if waiting is not None:
                state = OPEN  # accepted by the vote, but the members' identity is not signed yet
                proposal["awaiting_identity"] = waiting
                effects = []
            else:
                proposal.pop("awaiting_identity", None)
                inner.commit()
            outcome.effects = effects
        except GovernanceError as e:
            state = FAILED
            proposal["failure"] = str(e)
            outcome.reason = f"accepted but failed to apply: {e}"
            outcome.effects = []
        for effect in outcome.effects:
            effect["proposal_id"] = proposal_id
    if state != OPEN:
        proposal["final_height"] = ctx.height
    proposal["state"] = state
    tables.put(PROPOSALS, proposal_id, proposal)
    outcome.proposal_state = state


def _next_identity(inner: StagedTables, before: Tables, proposal: dict[str, Any]) -> str | None:
    """When the proposal's actions change the members, the next consortium identity: listing them,
    signed in the approving ballots by at least the current identity's threshold of its members.
    Recorded in `inner`; returns why it cannot be yet (None when recorded or not needed)."""
    current = acts.current_identity(before)
    if current is None:
        return None
    after = acts.current_identity(inner)
    if after is not None and after != current:
        acts.check_members_match_identity(inner)  # set_consortium_identity, applied with its signatures
        return None
    rows = [
        {k: m[k] for k in ("name", "public_key", "weight", "encryption_key") if k in m}
        for _, m in sorted(inner.items(MEMBERS))
        if m.get("status") == ACTIVE
    ]
    listed = {(m["id"], m["name"], m["weight"]) for m in current["identity"]["members"]}
    try:
        if {(PublicKey.load(r["public_key"]).key_id, r["name"], r["weight"]) for r in rows} == listed:
            return None
        body = consortium.next_identity(current, members=rows)["identity"]
        approvers = {m for m, v in proposal["ballots"].items() if v == APPROVE}
        sigs = [
            {"member": m, "signature": s}
            for m, s in sorted(proposal.get("identity_signatures", {}).items())
            if m in approvers
        ]
        doc = {"identity": body, "signatures": sigs}
        consortium.verify_next(consortium.load(current), doc)
    except consortium.IdentityError as e:
        return f"the next consortium identity (version {current['identity']['version'] + 1}): {e}"
    acts.record_identity(inner, doc)
    return None


def expire(tables: Tables, ctx: Context) -> list[str]:
    """Mark Open proposals whose deadline has passed as Expired; call once at the start of a block."""
    expired = []
    for proposal_id, proposal in sorted(tables.items(PROPOSALS)):
        if proposal["state"] == OPEN and ctx.timestamp_ms >= proposal["expires_at_ms"]:
            # a new row, not the stored one changed in place: a block that is rolled back must
            # leave the stored proposal as it was
            tables.put(PROPOSALS, proposal_id, {**proposal, "state": EXPIRED, "final_height": ctx.height})
            expired.append(proposal_id)
    return expired


def genesis(
    tables: Tables,
    members: list[dict[str, Any]],
    users: list[dict[str, Any]] | None = None,
    constitution: dict[str, Any] | None = None,
    nodes: list[dict[str, Any]] | None = None,
    commit_quorum: int = 1,
) -> None:
    """Initialise the governance tables of a new ledger (service status Opening).

    `members`: [{"name", "public_key" (PEM), "weight"?}], at least one; `users`: [{"name",
    "public_key"}]; `nodes`: the genesis nodes, recorded Trusted: [{"node_id", "public_keys",
    "platform", "measurement", "host_data"?}].
    """
    if tables.get(CONSTITUTION, CONSTITUTION_KEY) is not None:
        raise GovernanceError("governance is already initialised")
    if not members:
        raise GovernanceError("genesis needs at least one member")
    staged = StagedTables(tables)
    actions = [acts.validate_action({"name": "set_member", "args": m}) for m in members]
    actions += [acts.validate_action({"name": "set_user", "args": u}) for u in users or []]
    ctx = Context(height=0, timestamp_ms=0)
    acts.apply_actions(staged, actions, ctx)
    for node in nodes or []:
        _put_node(staged, node, NODE_TRUSTED)
    if type(commit_quorum) is not int or not 1 <= commit_quorum <= max(1, len(nodes or [])):
        raise GovernanceError(
            f"commit_quorum must be between 1 and the number of genesis nodes, got {commit_quorum}"
        )
    staged.put(
        CONSTITUTION,
        CONSTITUTION_KEY,
        {"version": 1, **const.validate_constitution(constitution or const.default_constitution())},
    )
    staged.put(SERVICE, SERVICE_STATE_KEY, {"status": SERVICE_OPENING})
    staged.put(SERVICE, COMMIT_QUORUM_KEY, commit_quorum)
    staged.commit()


def _put_node(tables: Tables, node: dict[str, Any], status: str) -> dict[str, Any]:
    allowed = ("node_id", "public_keys", "platform", "measurement", "host_data")
    unknown = sorted(k for k in node if k not in allowed)
    if unknown:
        raise GovernanceError(f"node has unknown field(s) {', '.join(unknown)}")
    node_id = acts.check_node_id(node.get("node_id"))
    public_keys = node.get("public_keys", {})
    if not isinstance(public_keys, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in public_keys.items()
    ):
        raise GovernanceError("node public_keys must map names to PEM strings")
    record = {
        "status": status,
        "public_keys": public_keys,
        "platform": acts.check_platform(node.get("platform")),
        "measurement": acts.check_hex(node.get("measurement"), "measurement"),
        "host_data": None if node.get("host_data") is None else acts.check_hex(node["host_data"], "host_data"),
    }
    tables.put(NODES, node_id, record)
    return record


def record_node_join(tables: Tables, node: dict[str, Any], ctx: Context) -> list[dict[str, Any]]:
    """Record an attested join request as a Pending node; the executor verified the evidence.

    If the constitution has `auto_trust_nodes` and the node's measurement (and host data, when
    the allow-list entry pins it) is allowed, the node is trusted at once and a trust_node effect
    is returned; otherwise members trust it with a `trust_node` proposal.
    """
    node_id = acts.check_node_id(node.get("node_id"))
    existing = tables.get(NODES, node_id)
    if existing is not None and existing["status"] in (NODE_TRUSTED, NODE_RETIRED):
        raise GovernanceError(f"node {node_id} is already {existing['status']}")
    staged = StagedTables(tables)
    record = _put_node(staged, node, NODE_PENDING)
    effects: list[dict[str, Any]] = []
    if _current_constitution(staged)["auto_trust_nodes"]:
        allowed = staged.get(MEASUREMENTS, record["measurement"])
        if (
            allowed is not None
            and allowed["platform"] == record["platform"]
            and allowed["host_data"] in (None, record["host_data"])
        ):
            effects = acts.apply_actions(staged, [{"name": "trust_node", "args": {"node_id": node_id}}], ctx)
    staged.commit()
    return effects
