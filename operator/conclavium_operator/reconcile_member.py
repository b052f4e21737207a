"""ConsortiumMember: identity → governance admission → nodes → status; and removal through governance.

`reconcile` is level-based and idempotent: create, update, resume and the member's timer all call
it (under a per-object lock), and each step checks the cluster and the ledger before acting. The
ledger decides membership; the operator only proposes, with the key of a member that allows
in-cluster signing, and reports the members' vote.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass
from typing import Any

import kopf

from conclavium.crypto.keys import PrivateKey
from conclavium.sdk.client import ClientError
from conclavium_operator import (
    children,
    conditions,
    events,
    gateway,
    genesis,
    measurements,
    reconcile_consortium,
    reconcile_node,
    reverify,
    status,
    upgrade,
    votes,
)
from conclavium_operator.conditions import Condition
from conclavium_operator.errors import Waiting
from conclavium_operator.gateway import FINAL_FAILURES, GatewayUnavailable, ProposalRefused
from conclavium_operator.identity import (
    Identity,
    IdentityProblem,
    can_sign,
    in_cluster_signing_allowed,
    load_identity,
    load_signing_key,
    signing_refusal,
)
from conclavium_operator.kube import CONSORTIUMS, MEMBERS, NODES, STATEFULSETS, KubeError
from conclavium_operator.metrics import PROPOSALS
from conclavium_operator.runtime import Runtime

PROPOSAL_ANNOTATION = "conclavium.io/proposal"
ORPHAN_ANNOTATION = "conclavium.io/orphan"  # on a node: its finalizer lets it go without a retire_node vote
PROPOSED_AT_ANNOTATION = "conclavium.io/proposed-at"
RETIRED_ANNOTATION = "conclavium.io/retired-node"  # set once the ledger retired the node: one NodeRetired Event
ROLES = ("Voting", "Participant")


def external(spec: dict[str, Any]) -> bool:
    """`membership: External`: the member's admission and removal are governed elsewhere."""
    return spec.get("membership", "Owned") == "External"


def orphans(spec: dict[str, Any]) -> bool:
    """`deletionPolicy: Orphan`: deleting the member proposes nothing."""
    return spec.get("deletionPolicy", "Retire") == "Orphan"


class SpecProblem(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


def check_spec(spec: dict[str, Any], consortium: dict[str, Any] | None) -> None:
    """Rules the CRD schema and CEL enforce, checked again so an unvalidated object gets a reason, not a crash."""
    if not isinstance((spec.get("consortiumRef") or {}).get("name"), str):
        raise SpecProblem("MissingConsortiumRef", "spec.consortiumRef.name is required")
    if not isinstance(spec.get("memberId"), str) or not spec["memberId"]:
        raise SpecProblem("MissingMemberId", "spec.memberId is required")
    role = spec.get("role", "Voting")
    if role not in ROLES:
        raise SpecProblem("InvalidRole", f"spec.role must be one of {list(ROLES)}, got {role!r}")
    for field, allowed in (("membership", ("Owned", "External")), ("deletionPolicy", ("Retire", "Orphan"))):
        if spec.get(field, allowed[0]) not in allowed:
            raise SpecProblem("InvalidPolicy", f"spec.{field} must be one of {list(allowed)}, got {spec[field]!r}")
    for field, low, high in (("executors", 0, 16), ("sequencerStandbys", 0, 3), ("weight", 1, 1000)):
        value = spec.get(field)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high):
            raise SpecProblem("InvalidCount", f"spec.{field} must be an integer in [{low}, {high}], got {value!r}")
    if role == "Participant" and (spec.get("weight") is not None or int(spec.get("sequencerStandbys") or 0) > 0):
        raise SpecProblem("ParticipantFieldForbidden", "weight and sequencerStandbys apply to Voting members only")
    if int(spec.get("sequencerStandbys") or 0) > 0 and int(spec.get("executors", 1)) < 1:
        raise SpecProblem("StandbyWithoutExecutor", "a member running sequencer standbys must run an executor")
    if not isinstance(spec.get("identity"), dict):
        raise SpecProblem("MissingIdentity", "spec.identity is required")
    if consortium is None:
        return
    platforms = ((consortium.get("spec") or {}).get("tee") or {}).get("platforms") or []
    platform = (spec.get("tee") or {}).get("platform")
    if platform and platform not in platforms:
        raise SpecProblem("PlatformNotAllowed", f"tee.platform {platform} is not among the consortium's {platforms}")


@dataclass(frozen=True)
class Proposer:
    member: str
    key: PrivateKey
    ledger: str  # the Consortium's spec.ledgerId: what the operator's documents are signed for


async def find_proposer(rt: Runtime, namespace: str, consortium: str, service: dict[str, Any]) -> Proposer | None:
    """The operator's proposer identity: the first (by name) admitted member of the consortium that lets
    the operator sign with its key (`identity.inClusterSigning` and `secretRef.privateKeyKey`)."""
    active = {m.get("id") for m in service.get("members") or []}
    cons = await rt.k8s.get(CONSORTIUMS, namespace, consortium)
    ledger = ((cons or {}).get("spec") or {}).get("ledgerId")
    if not isinstance(ledger, str) or not ledger or not in_cluster_signing_allowed(cons):
        return None
    members = await rt.k8s.list(MEMBERS, namespace)
    for m in sorted(members, key=lambda m: m["metadata"]["name"]):
        spec = m.get("spec") or {}
        if (spec.get("consortiumRef") or {}).get("name") != consortium or not can_sign(spec):
            continue
        # A member being deleted no longer proposes, unless External: its membership stays, and it
        # retires its own nodes in this cluster with its key.
        if (m["metadata"].get("deletionTimestamp") and not external(spec)) or spec.get("role", "Voting") != "Voting":
            continue
        try:
            key = await load_signing_key(rt.k8s, namespace, spec)
        except IdentityProblem:
            continue
        if key.key_id in active:
            return Proposer(m["metadata"]["name"], key, ledger)
    return None


def _no_proposer(consortium: str) -> str:
    return (
        f"no admitted Voting member of consortium {consortium} lets the operator sign proposals "
        "(development consortiums: identity.inClusterSigning: true with identity.secretRef.privateKeyKey); "
        "otherwise a member signs the proposal offline (conclavium gov propose FILE --sign-only OUT) and "
        f"hands it over in a ConfigMap labelled conclavium.io/governance-document={consortium}"
    )


def signing_condition(spec: dict[str, Any], consortium: dict[str, Any]) -> Condition | None:
    """`InClusterSigning` for a member that asks the operator to sign with its key: allowed in a
    development consortium, refused (and the key never read) in any other."""
    if not can_sign(spec):
        return None
    if in_cluster_signing_allowed(consortium):
        return Condition("InClusterSigning", "True", "DevelopmentOnly", "the operator signs with this member's key")
    return Condition("InClusterSigning", "False", "ForbiddenOutsideDevelopment", signing_refusal(consortium))


async def _admission(
    rt: Runtime,
    body: dict[str, Any],
    ident: Identity,
    patch: kopf.Patch,
    logger: logging.Logger | logging.LoggerAdapter[Any],
) -> bool:
    """Admitted condition from the ledger; proposes set_member/set_user when nothing is pending."""
    spec, meta = body["spec"], body["metadata"]
    role = spec.get("role", "Voting")
    fp = ident.fingerprint
    generation = int(meta.get("generation") or 0)
    service = await rt.gateway.service()
    pid = (body.get("status") or {}).get("proposalId")
    if gateway.is_active(service, role, fp):
        reason = "ProposalAccepted" if pid else "AlreadyMember"
        if not conditions.is_true(body, "Admitted"):
            await events.post(rt.k8s, body, "Admitted", f"{role} {spec['memberId']} is active in the ledger ({reason})")
        if (body.get("status") or {}).get("proposal", {}).get("state") == "Open" and pid:
            last = await rt.gateway.proposal(pid)
            if last:
                patch.status["proposal"] = votes.view(last, service)
                patch.status["votes"] = None
        conditions.upsert(patch, Condition("Admitted", "True", reason, f"{role} {fp[:16]}… is active in the ledger"))
        return True
    pending = await rt.gateway.find_open(gateway.adds_key(fp))
    if pending:
        shown = votes.view(pending, service)
        patch.status["proposalId"] = pending["proposal_id"]
        patch.status["proposal"] = shown
        patch.status["votes"] = votes.column(shown)
        patch.status["phase"] = "Proposed"
        msg = (
            f"proposal {pending['proposal_id']} is open: {shown['approvals']} approval(s) of "
            f"{shown.get('required', 'a weighted threshold')}, {shown['rejections']} rejection(s); "
            f"waiting for {', '.join(shown['pendingVoters']) or 'nobody'}"
        )
        conditions.upsert(patch, Condition("Admitted", "False", "VotePending", msg))
        return False
    if external(spec):
        patch.status["phase"] = "Pending"
        msg = (
            f"membership is External: {role} {spec['memberId']} ({fp[:16]}…) is admitted by governance "
            "elsewhere (another cluster's ConsortiumMember or the members' own proposal); its nodes start "
            "once the ledger lists the key"
        )
        conditions.upsert(patch, Condition("Admitted", "False", "AwaitingExternalAdmission", msg))
        return False
    if pid:
        last = await rt.gateway.proposal(pid)
        if last and last.get("state") == "Accepted" and any(map(gateway.adds_key(fp), last.get("actions", []))):
            conditions.upsert(patch, Condition("Admitted", "True", "ProposalAccepted", f"proposal {pid} accepted"))
            return True
        admitted = conditions.find(body, "Admitted") or {}
        same_spec = int(admitted.get("observedGeneration") or -1) == generation
        if last and last.get("state") in FINAL_FAILURES and same_spec:
            patch.status["phase"] = "Rejected"
            patch.status["proposal"] = votes.view(last, service)
            patch.status["votes"] = None
            msg = f"proposal {pid} is {last['state']}{': ' + last['failure'] if last.get('failure') else ''}"
            conditions.upsert(patch, Condition("Admitted", "False", f"Proposal{last['state']}", msg))
            return False
    admitted = conditions.find(body, "Admitted") or {}
    if admitted.get("reason") == "ProposalRefused" and int(admitted.get("observedGeneration") or -1) == generation:
        patch.status["phase"] = "Rejected"
        return False
    consortium = spec["consortiumRef"]["name"]
    proposer = await find_proposer(rt, meta["namespace"], consortium, service)
    if proposer is None:
        patch.status["phase"] = "Pending"
        conditions.upsert(patch, Condition("Admitted", "False", "NoProposer", _no_proposer(consortium)))
        return False
    action = gateway.set_action(role, spec["memberId"], ident.pem, spec.get("weight"))
    try:
        submitted = await rt.gateway.propose(proposer.key, [action], proposer.ledger)
    except ProposalRefused as e:
        patch.status["phase"] = "Rejected"
        conditions.upsert(
            patch, Condition("Admitted", "False", "ProposalRefused", f"the ledger refused {action['name']}: {e}")
        )
        return False
    PROPOSALS.labels(action["name"]).inc()
    logger.info(
        "proposed %s for %s as %s: %s", action["name"], spec["memberId"], proposer.member, submitted.proposal_id
    )
    await events.post(
        rt.k8s, body, "ProposalSubmitted", f"{action['name']} {spec['memberId']}: proposal {submitted.proposal_id}"
    )
    patch.status["proposalId"] = submitted.proposal_id
    patch.status["phase"] = "Proposed"
    msg = f"proposal {submitted.proposal_id} ({action['name']}, proposed by {proposer.member}) awaits the members' vote"
    conditions.upsert(patch, Condition("Admitted", "False", "VotePending", msg))
    return False


async def ensure_nodes(
    rt: Runtime, body: dict[str, Any], consortium: dict[str, Any] | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Create missing ConsortiumNodes, mark surplus ones for retirement; returns (kept, retiring).

    Sequencer standbys are `<member>-sequencer-0..n-1`. Executors are counted: every executor that is
    not retiring stays, with the image it runs (a governed upgrade replaces executors one at a time,
    upgrade.py); missing ones are created at the lowest free ordinals with the current image, and
    surplus ones retired from the highest ordinal down, only while none runs an old image (during an
    upgrade the roll decides which executor goes).
    """
    ns, name, spec = body["metadata"]["namespace"], body["metadata"]["name"], body["spec"]
    image = children.node_image(consortium, rt.cfg)
    existing = {n["metadata"]["name"]: n for n in await rt.k8s.list(NODES, ns, {children.MEMBER_LABEL: name})}
    executors = sorted(
        (n for n in existing.values() if n["spec"].get("role") == "Executor" and not n["spec"].get("retire")),
        key=lambda n: int(n["spec"].get("ordinal", 0)),
    )
    want = int(spec.get("executors", 1))
    rolling = any(n["spec"].get("image") != image for n in executors)
    kept_executors = executors if rolling else executors[:want]
    kept: list[dict[str, Any]] = []
    for current in kept_executors:
        node = children.member_node(body, consortium, rt.cfg, "Executor", int(current["spec"].get("ordinal", 0)))
        node["spec"]["image"] = current["spec"].get("image")
        node["metadata"]["name"] = current["metadata"]["name"]  # made before a cluster id was set: kept
        node["metadata"]["labels"][children.NODE_LABEL] = current["metadata"]["name"]
        kept.append(await _converge(rt, ns, current, node))
    taken = {int(n["spec"].get("ordinal", 0)) for n in existing.values() if n["spec"].get("role") == "Executor"}
    free = (i for i in itertools.count() if i not in taken)
    for _ in range(want - len(kept_executors)):
        kept.append(
            await rt.k8s.apply(NODES, ns, children.member_node(body, consortium, rt.cfg, "Executor", next(free)))
        )
    standbys = [
        children.member_node(body, consortium, rt.cfg, "Sequencer", i)
        for i in range(int(spec.get("sequencerStandbys", 0)))
    ]
    for node in standbys:
        current = existing.get(node["metadata"]["name"])
        if current is not None and current["spec"].get("retire"):
            continue  # scaled down and up again: recreated once its retirement is through
        kept.append(await _converge(rt, ns, current, node))
    wanted = {n["metadata"]["name"] for n in kept}
    retiring = []
    for node_name, node in sorted(existing.items()):
        if node_name in wanted:
            continue
        if not node["spec"].get("retire"):
            node = await rt.k8s.patch(NODES, ns, node_name, {"spec": {"retire": True}})
        retiring.append(node)
    return kept, retiring


async def _converge(rt: Runtime, ns: str, current: dict[str, Any] | None, node: dict[str, Any]) -> dict[str, Any]:
    """Create the node, or patch the spec fields that differ (none: the node as it is)."""
    if current is not None and (
        current["metadata"].get("deletionTimestamp")
        or all(current["spec"].get(k) == v for k, v in node["spec"].items())
    ):
        return current
    return await rt.k8s.apply(NODES, ns, node)


def _retire_order(node: dict[str, Any]) -> tuple[int, int]:
    """Sequencer standbys first (no vote needed), then executors from the highest ordinal down."""
    return (0 if node["spec"]["role"] == "Sequencer" else 1, -int(node["spec"].get("ordinal", 0)))


async def retire_next(
    rt: Runtime, retiring: list[dict[str, Any]], logger: logging.Logger | logging.LoggerAdapter[Any]
) -> str | None:
    """Retire the first node of `retiring` through governance; one node at a time, so the commit quorum
    never loses more than one executor at once. Returns what it waits for, or None when all are gone."""
    for node in sorted(retiring, key=_retire_order):
        ns, name = node["metadata"]["namespace"], node["metadata"]["name"]
        service = await rt.gateway.service()
        found = gateway.ledger_node(service, name, (node.get("status") or {}).get("nodeId"))
        if node["spec"]["role"] != "Executor" or found is None or found.get("status") == "Retired":
            fresh = await rt.k8s.get(NODES, ns, name) if found is not None else None
            if fresh is not None and RETIRED_ANNOTATION not in (fresh["metadata"].get("annotations") or {}):
                ann = {RETIRED_ANNOTATION: found["id"]}
                await rt.k8s.patch(NODES, ns, name, {"metadata": {"annotations": ann}})
                await events.post(rt.k8s, node, "NodeRetired", f"the ledger retired {name} (node {found['id'][:16]}…)")
            await rt.k8s.delete(NODES, ns, name)
            logger.info("deleted node %s (%s)", name, "retired" if found else "not in the ledger")
            continue
        annotations = node["metadata"].get("annotations") or {}
        pending = await rt.gateway.find_open(gateway.retires_node(found["id"]))
        if pending:
            if annotations.get(PROPOSAL_ANNOTATION) != pending["proposal_id"]:
                await _annotate(rt, NODES, node, pending["proposal_id"])
            return f"the members' vote on retiring {name} (proposal {pending['proposal_id']})"
        last_id = annotations.get(PROPOSAL_ANNOTATION)
        last = await rt.gateway.proposal(last_id) if last_id else None
        if last and last.get("state") == "Accepted":
            rt.gateway.forget_service()
            return f"the ledger to record {name} as retired"
        if last and last.get("state") in FINAL_FAILURES and _recent(annotations, rt.cfg.removal_retry_delay):
            return f"a new attempt to retire {name}: proposal {last_id} was {last['state']}"
        proposer = await find_proposer(rt, ns, node["spec"]["consortiumRef"]["name"], service)
        if proposer is None:
            return f"a proposer to retire {name}: {_no_proposer(node['spec']['consortiumRef']['name'])}"
        try:
            submitted = await rt.gateway.propose(
                proposer.key, [{"name": "retire_node", "args": {"node_id": found["id"]}}], proposer.ledger
            )
        except ProposalRefused as e:
            await _annotate(rt, NODES, node, annotations.get(PROPOSAL_ANNOTATION, ""))
            return f"a new attempt to retire {name}: the ledger refused it ({e})"
        PROPOSALS.labels("retire_node").inc()
        await _annotate(rt, NODES, node, submitted.proposal_id)
        await events.post(rt.k8s, node, "ProposalSubmitted", f"retire_node {name}: proposal {submitted.proposal_id}")
        logger.info("proposed retire_node for %s: %s", name, submitted.proposal_id)
        return f"the members' vote on retiring {name} (proposal {submitted.proposal_id})"
    return None


def _recent(annotations: dict[str, str], window: float) -> bool:
    try:
        return time.time() - float(annotations.get(PROPOSED_AT_ANNOTATION, "0")) < window
    except ValueError:
        return False


async def _annotate(rt: Runtime, kind: Any, obj: dict[str, Any], proposal_id: str) -> None:
    meta = obj["metadata"]
    ann = {PROPOSAL_ANNOTATION: proposal_id, PROPOSED_AT_ANNOTATION: str(int(time.time()))}
    await rt.k8s.patch(kind, meta["namespace"], meta["name"], {"metadata": {"annotations": ann}})


async def _refresh_nodes(
    rt: Runtime, nodes: list[dict[str, Any]], service: dict[str, Any] | None, reverify_s: float
) -> list[tuple[dict[str, Any], dict[str, bool]]]:
    """Write each node's status from its StatefulSet, the ledger and the gateway's view of the running
    nodes, re-verifying executors every `reverify_s`; returns each node with its condition values."""
    result = []
    runtime: dict[str, Any] | None = None
    if service is not None and nodes:
        try:
            runtime = await rt.gateway.runtime()
        except (GatewayUnavailable, ClientError):
            runtime = None  # status without heights and lease holder this pass
    for node in nodes:
        meta = node["metadata"]
        current = await rt.k8s.get(NODES, meta["namespace"], meta["name"])
        if current is None:
            continue
        sts = await rt.k8s.get(STATEFULSETS, meta["namespace"], meta["name"])
        fields, conds = reconcile_node.observe(current, sts, service, runtime)
        if service is not None and current["spec"].get("role") == "Executor":
            conds.append(reverify.caught_up(current, sts))
            conds += await reverify.check(rt, current, fields, reverify_s)
        await status.write(rt.k8s, NODES, current, fields, conds)
        result.append((current, {c.type: c.status == conditions.TRUE for c in conds}))
    return result


async def refresh_consortium(
    rt: Runtime, consortium: dict[str, Any], logger: logging.Logger | logging.LoggerAdapter[Any]
) -> None:
    """The Consortium has no timer of its own (a timer would give it a finalizer): its members refresh
    it, and turn new lines of its measurements ConfigMap into proposals (one pass at a time)."""
    fields, conds = await reconcile_consortium.observe(consortium.get("spec") or {}, rt.gateway, rt.cfg.ledger)
    meta = consortium["metadata"]

    async def proposer_of() -> tuple[Proposer | None, str]:
        service = await rt.gateway.service()
        return await find_proposer(rt, meta["namespace"], meta["name"], service), _no_proposer(meta["name"])

    if conditions.TRUE in [c.status for c in conds if c.type == "LedgerMatches"]:
        async with rt.lock(f"measurements/{meta.get('uid') or meta['name']}"):
            current = await rt.k8s.get(CONSORTIUMS, meta["namespace"], meta["name"]) or consortium
            synced = await measurements.sync(rt, current, await rt.gateway.service(), logger, proposer_of)
        if synced is not None:
            conds.append(synced)
        consortium = await rt.k8s.get(CONSORTIUMS, meta["namespace"], meta["name"]) or current
    await status.write(rt.k8s, CONSORTIUMS, consortium, fields, conds)


async def reconcile(
    rt: Runtime, body: dict[str, Any], patch: kopf.Patch, logger: logging.Logger | logging.LoggerAdapter[Any]
) -> None:
    """One pass over a member. Permanent problems end the pass with a condition; transient ones raise
    kopf.TemporaryError so that kopf retries (and the timer would come back anyway)."""
    meta, spec = body["metadata"], body.get("spec") or {}
    if meta.get("deletionTimestamp"):
        return
    ns = meta["namespace"]
    patch.status["observedGeneration"] = int(meta.get("generation") or 0)
    try:
        cons_name = (spec.get("consortiumRef") or {}).get("name")
        consortium = await rt.k8s.get(CONSORTIUMS, ns, cons_name) if isinstance(cons_name, str) else None
        check_spec(spec, consortium)
    except SpecProblem as p:
        patch.status["phase"] = "Failed"
        conditions.upsert(patch, Condition("Ready", "False", p.reason, p.message))
        return
    if consortium is None:
        patch.status["phase"] = "Pending"
        msg = f"Consortium {cons_name} not found in {ns}"
        conditions.upsert(patch, Condition("Ready", "False", "ConsortiumNotFound", msg))
        raise kopf.TemporaryError(msg, delay=rt.cfg.retry_delay)
    problem = reconcile_consortium.spec_problem(consortium.get("spec") or {}, rt.cfg.ledger)
    if problem:  # no nodes for a consortium this release cannot serve; fixed by changing the Consortium
        patch.status["phase"] = "Failed"
        conditions.upsert(patch, Condition("Ready", "False", "ConsortiumInvalid", f"{problem[0]}: {problem[1]}"))
        return
    try:
        ident = await load_identity(rt.k8s, ns, spec)
    except IdentityProblem as p:
        patch.status["phase"] = "Pending" if p.retry else "Failed"
        conditions.upsert(
            patch,
            Condition("IdentityValid", "False", p.reason, p.message),
            Condition("Ready", "False", p.reason, p.message),
        )
        if p.retry:
            raise kopf.TemporaryError(p.message, delay=rt.cfg.retry_delay) from p
        return
    patch.status["identityFingerprint"] = ident.fingerprint
    conditions.upsert(
        patch, Condition("IdentityValid", "True", "Valid", f"{ident.public_key.alg} key {ident.fingerprint[:16]}…")
    )
    signing = signing_condition(spec, consortium)
    if signing is not None:
        conditions.upsert(patch, signing)
    if await _bootstrap_founder(rt, body, consortium, patch):
        return
    try:
        admitted = await _admission(rt, body, ident, patch, logger)
        service = await rt.gateway.service()
    except GatewayUnavailable as e:
        conditions.upsert(patch, Condition("Admitted", "Unknown", "GatewayUnavailable", str(e)))
        conditions.upsert(patch, Condition("Ready", "False", "GatewayUnavailable", str(e)))
        raise kopf.TemporaryError(str(e), delay=rt.cfg.retry_delay) from e
    await refresh_consortium(rt, consortium, logger)
    if not admitted:
        conditions.upsert(
            patch, Condition("Ready", "False", "NotAdmitted", "waiting for governance to admit the member")
        )
        return
    try:
        desired, retiring = await ensure_nodes(rt, body, consortium)
        waiting = await retire_next(rt, retiring, logger) if retiring else None
        nodes = await _refresh_nodes(rt, desired, service, reverify.interval_seconds(consortium))
        await _upgrade(rt, consortium, logger)
    except GatewayUnavailable as e:
        raise kopf.TemporaryError(str(e), delay=rt.cfg.retry_delay) from e
    _report_nodes(patch, nodes, int(spec.get("executors", 1)) + int(spec.get("sequencerStandbys", 0)), waiting)


async def _upgrade(
    rt: Runtime, consortium: dict[str, Any], logger: logging.Logger | logging.LoggerAdapter[Any]
) -> None:
    """At most one upgrade step for the whole Consortium (upgrade.py), and its `Progressing` condition."""
    meta = consortium["metadata"]
    async with rt.lock(f"upgrade/{meta.get('uid') or meta['name']}"):
        current = await rt.k8s.get(CONSORTIUMS, meta["namespace"], meta["name"])
        if current is None:
            return
        progressing = await upgrade.advance(rt, current, await rt.gateway.service(), logger)
        await status.write(rt.k8s, CONSORTIUMS, current, {}, [progressing])


async def _bootstrap_founder(rt: Runtime, body: dict[str, Any], consortium: dict[str, Any], patch: kopf.Patch) -> bool:
    """Before the ledger exists, a founding member gets its nodes without a vote (there is no one to
    vote yet): the genesis ConfigMap is written once and the founding executor creates the ledger with
    it. True when this pass was such a pass; once the ledger has a genesis, founding members are
    `AlreadyMember` like everyone else."""
    if body["metadata"]["name"] not in genesis.founding_members(consortium):
        return False
    service: dict[str, Any] | None
    try:
        service = await rt.gateway.service()
    except GatewayUnavailable:
        service = None  # no executor answers yet: the normal state before genesis
    if service is not None and service.get("service_cert"):
        return False
    try:
        configmap = await genesis.ensure_genesis_configmap(rt, consortium)
    except genesis.GenesisWaiting as e:
        patch.status["phase"] = "Pending"
        conditions.upsert(
            patch,
            Condition("Admitted", "False", "AwaitingGenesis", str(e)),
            Condition("Ready", "False", "AwaitingGenesis", str(e)),
        )
        raise Waiting(f"waiting for genesis: {e}", delay=rt.cfg.retry_delay) from e
    desired, _ = await ensure_nodes(rt, body, consortium)
    await _refresh_nodes(rt, desired, service)
    founder = children.founding_node_name(consortium, rt.cfg.cluster_id)
    msg = f"founding member: {founder} creates the ledger with the genesis in ConfigMap {configmap}"
    patch.status["phase"] = "Pending"
    patch.status["desiredNodes"] = len(desired)
    patch.status["nodes"] = sorted(n["metadata"]["name"] for n in desired)
    conditions.upsert(
        patch,
        Condition("Admitted", "False", "AwaitingGenesis", msg),
        Condition("Ready", "False", "AwaitingGenesis", msg),
    )
    return True


def _report_nodes(
    patch: kopf.Patch, nodes: list[tuple[dict[str, Any], dict[str, bool]]], desired: int, waiting: str | None
) -> None:
    ready = [n for n, c in nodes if c.get("Ready")]
    executors = [n for n, _ in nodes if n["spec"]["role"] == "Executor"]
    unattested = [n["metadata"]["name"] for n, c in nodes if n["spec"]["role"] == "Executor" and not c.get("Attested")]
    patch.status["readyNodes"] = len(ready)
    patch.status["desiredNodes"] = desired
    patch.status["nodesReady"] = f"{len(ready)}/{desired}"
    patch.status["nodes"] = sorted(n["metadata"]["name"] for n, _ in nodes)
    nodes_ok = len(ready) >= desired and not waiting
    scaling = f"; scaling down: waiting for {waiting}" if waiting else ""
    reason = "AllNodesReady" if nodes_ok else ("ScalingDown" if waiting else "NodesNotReady")
    conditions.upsert(
        patch, Condition.of("NodesReady", nodes_ok, reason, f"{len(ready)}/{desired} nodes ready{scaling}")
    )
    if unattested:
        conditions.upsert(
            patch, Condition("Attested", "False", "NotAttested", f"not attested: {', '.join(unattested)}")
        )
    else:
        conditions.upsert(patch, Condition("Attested", "True", "AllExecutorsAttested" if executors else "NoExecutors"))
    all_ok = nodes_ok and not unattested
    conditions.upsert(patch, Condition.of("Ready", all_ok, "MemberReady" if all_ok else reason))
    patch.status["phase"] = "Ready" if all_ok else ("Admitted" if not ready else "Degraded")


async def remove(
    rt: Runtime, body: dict[str, Any], patch: kopf.Patch, logger: logging.Logger | logging.LoggerAdapter[Any]
) -> None:
    """Finalizer: propose remove_member/remove_user, retire the nodes one at a time, then let kopf release.

    Raises `Waiting` while votes are pending; kopf calls again after the delay.
    """
    meta, spec = body["metadata"], body.get("spec") or {}
    ns = meta["namespace"]
    patch.status["phase"] = "Removing"
    try:
        ident: Identity | None = await load_identity(rt.k8s, ns, spec)
    except (IdentityProblem, KeyError, TypeError, AttributeError):
        ident = None  # an identity that never loaded was never proposed: nothing to undo in the ledger
    if orphans(spec):
        await _orphan_nodes(rt, ns, meta["name"])
        logger.info("member %s deleted with deletionPolicy Orphan: nothing proposed", meta["name"])
        return
    try:
        waits = []
        if ident is not None and not external(spec):
            waiting = await _removal(rt, body, ident, patch, logger)
            if waiting:
                waits.append(waiting)
        nodes = await rt.k8s.list(NODES, ns, {children.MEMBER_LABEL: meta["name"]})
        for node in nodes:
            if not (node.get("spec") or {}).get("retire"):
                await rt.k8s.patch(NODES, ns, node["metadata"]["name"], {"spec": {"retire": True}})
                node["spec"]["retire"] = True
        waiting = await retire_next(rt, nodes, logger) if nodes else None
        if waiting:
            waits.append(waiting)
    except GatewayUnavailable as e:
        conditions.upsert(patch, Condition("Ready", "False", "GatewayUnavailable", str(e)))
        raise kopf.TemporaryError(str(e), delay=rt.cfg.retry_delay) from e
    except KubeError as e:
        raise kopf.TemporaryError(f"Kubernetes API: {e}", delay=rt.cfg.retry_delay) from e
    if waits:
        message = "; ".join(waits)
        conditions.upsert(patch, Condition("Ready", "False", "Removing", f"waiting for {message}"))
        raise Waiting(f"waiting for {message}", delay=rt.cfg.poll_interval)
    logger.info("member %s removed from the ledger and its nodes retired", meta["name"])


async def _orphan_nodes(rt: Runtime, ns: str, member: str) -> None:
    """Delete the member's ConsortiumNodes, marked so their finalizers propose no retire_node: the
    ledger keeps their records (their claims stay unless deleteClaim)."""
    try:
        for node in await rt.k8s.list(NODES, ns, {children.MEMBER_LABEL: member}):
            name = node["metadata"]["name"]
            if ORPHAN_ANNOTATION not in (node["metadata"].get("annotations") or {}):
                await rt.k8s.patch(NODES, ns, name, {"metadata": {"annotations": {ORPHAN_ANNOTATION: "true"}}})
            await rt.k8s.delete(NODES, ns, name)
    except KubeError as e:
        raise kopf.TemporaryError(f"Kubernetes API: {e}", delay=rt.cfg.retry_delay) from e


async def _removal(
    rt: Runtime,
    body: dict[str, Any],
    ident: Identity,
    patch: kopf.Patch,
    logger: logging.Logger | logging.LoggerAdapter[Any],
) -> str | None:
    spec, meta = body["spec"], body["metadata"]
    role, fp = spec.get("role", "Voting"), ident.fingerprint
    service = await rt.gateway.service()
    cons = spec["consortiumRef"]["name"]
    admission = await rt.gateway.find_open(gateway.adds_key(fp))
    if admission:
        proposer = await find_proposer(rt, meta["namespace"], cons, service)
        if proposer is not None and proposer.key.key_id == admission.get("proposer"):
            await rt.gateway.withdraw(proposer.key, admission["proposal_id"], proposer.ledger)
            logger.info("withdrew the open admission proposal %s", admission["proposal_id"])
            conditions.upsert(patch, Condition("Admitted", "False", "ProposalWithdrawn", "the member is being deleted"))
        else:
            return f"the open admission proposal {admission['proposal_id']} to end"
    if not gateway.is_active(service, role, fp):
        conditions.upsert(patch, Condition("Admitted", "False", "Removed", "not (or no longer) in the ledger"))
        return None
    pending = await rt.gateway.find_open(gateway.removes_key(fp))
    if pending:
        patch.status["proposalId"] = pending["proposal_id"]
        return f"the members' vote on removing {spec['memberId']} (proposal {pending['proposal_id']})"
    annotations = meta.get("annotations") or {}
    last_id = annotations.get(PROPOSAL_ANNOTATION)
    last = await rt.gateway.proposal(last_id) if last_id else None
    if last and last.get("state") == "Accepted":
        rt.gateway.forget_service()
        return "the ledger to record the removal"
    if last and last.get("state") in FINAL_FAILURES and _recent(annotations, rt.cfg.removal_retry_delay):
        conditions.upsert(
            patch, Condition("Admitted", "True", f"Removal{last['state']}", f"proposal {last_id} was {last['state']}")
        )
        return f"a new removal attempt: proposal {last_id} was {last['state']}"
    proposer = await find_proposer(rt, meta["namespace"], cons, service)
    if proposer is None:
        return f"a proposer: {_no_proposer(cons)}"
    action = gateway.remove_action(role, fp)
    try:
        submitted = await rt.gateway.propose(proposer.key, [action], proposer.ledger)
    except ProposalRefused as e:
        conditions.upsert(patch, Condition("Admitted", "True", "RemovalRefused", str(e)))
        patch.metadata.annotations[PROPOSED_AT_ANNOTATION] = str(int(time.time()))
        return f"a new removal attempt: the ledger refused it ({e})"
    PROPOSALS.labels(action["name"]).inc()
    logger.info("proposed %s for %s: %s", action["name"], spec["memberId"], submitted.proposal_id)
    await events.post(
        rt.k8s, body, "ProposalSubmitted", f"{action['name']} {spec['memberId']}: proposal {submitted.proposal_id}"
    )
    patch.status["proposalId"] = submitted.proposal_id
    patch.metadata.annotations[PROPOSAL_ANNOTATION] = submitted.proposal_id
    patch.metadata.annotations[PROPOSED_AT_ANNOTATION] = str(int(time.time()))
    return f"the members' vote on removing {spec['memberId']} (proposal {submitted.proposal_id})"
