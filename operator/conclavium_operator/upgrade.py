"""Governed executor upgrades: carry out `rolling.next_to_roll`'s steps, one at a time per Consortium.

A change of the Consortium's `image` or `version` never restarts a running executor: `ensure_nodes`
leaves each executor's image as it is. Instead, while any executor of an admitted member runs another
image, each pass (under one lock per Consortium, whichever member's timer runs it) reads the ledger
and the nodes, and takes at most one step: add one executor running the new image for a member, or
mark one old executor for retirement (its member's pass then retires it through `retire_node`). The
roll starts only once the ledger allows every measurement the measurements ConfigMap lists
(`MeasurementsAllowed`), and the Consortium's `Progressing` condition says what it waits for.
"""

from __future__ import annotations

import logging
from typing import Any

from conclavium_operator import children, conditions, events, gateway
from conclavium_operator.conditions import Condition
from conclavium_operator.kube import MEMBERS, NODES, STATEFULSETS
from conclavium_operator.rolling import RollNode, Step, ledger_quorum, next_to_roll, waiting_for
from conclavium_operator.runtime import Runtime

PROGRESSING = "Progressing"


def roll_node(node: dict[str, Any], sts: dict[str, Any] | None, image: str, service: dict[str, Any]) -> RollNode:
    """How the roll sees one executor: its image, the ledger's record (by node id), its pod. An executor
    pod is ready only while the executor signs and has caught up (its /readyz: trusted, holding the
    ledger secrets, endorsed by its member, nothing left to execute in the stream, quorum reachable)."""
    meta, spec = node["metadata"], node["spec"]
    found = gateway.ledger_node(service, meta["name"], (node.get("status") or {}).get("nodeId")) or {}
    ready = int(((sts or {}).get("status") or {}).get("readyReplicas") or 0) >= 1
    return RollNode(
        name=meta["name"],
        member=spec["memberRef"]["name"],
        current=spec.get("image") == image,
        trusted=found.get("status") == "Trusted",
        caught_up=ready,
        retiring=bool(spec.get("retire") or meta.get("deletionTimestamp")),
    )


def free_ordinal(nodes: list[dict[str, Any]], member: str) -> int:
    """The lowest executor ordinal of `member` no existing node uses (retiring ones included)."""
    taken = {int(n["spec"].get("ordinal", 0)) for n in nodes if n["spec"]["memberRef"]["name"] == member}
    return next(i for i in range(len(taken) + 1) if i not in taken)


async def advance(
    rt: Runtime,
    consortium: dict[str, Any],
    service: dict[str, Any],
    logger: logging.Logger | logging.LoggerAdapter[Any],
) -> Condition:
    """One look at the Consortium's executors and at most one step; returns the `Progressing` condition."""
    meta = consortium["metadata"]
    ns, name = meta["namespace"], meta["name"]
    image = children.node_image(consortium, rt.cfg)
    members = {
        m["metadata"]["name"]: m
        for m in await rt.k8s.list(MEMBERS, ns)
        if ((m.get("spec") or {}).get("consortiumRef") or {}).get("name") == name
        and not m["metadata"].get("deletionTimestamp")
        and conditions.is_true(m, "Admitted")
    }
    nodes = [
        n
        for n in await rt.k8s.list(NODES, ns, {children.CONSORTIUM_LABEL: name})
        if n["spec"].get("role") == "Executor" and n["spec"]["memberRef"]["name"] in members
    ]
    view = [roll_node(n, await rt.k8s.get(STATEFULSETS, ns, n["metadata"]["name"]), image, service) for n in nodes]
    if all(n.current for n in view):
        return Condition(PROGRESSING, "False", "UpToDate", f"every executor runs {image}")
    old = sum(1 for n in view if not n.current)
    allowed = conditions.find(consortium, "MeasurementsAllowed")
    if allowed is not None and allowed.get("status") != conditions.TRUE:
        why = allowed.get("reason")
        msg = f"{old} executor(s) to upgrade to {image}: waiting for the ledger to allow the measurements ({why})"
        return Condition(PROGRESSING, "True", "WaitingForMeasurement", msg)
    quorum = ledger_quorum(int(service.get("quorum") or 0), int(service.get("member_threshold") or 1))
    wanted = {m: int((body.get("spec") or {}).get("executors", 1)) for m, body in members.items()}
    step = next_to_roll(view, quorum, wanted)
    if step is None:
        reason, msg = waiting_for(view, quorum)
        return Condition(PROGRESSING, "True", reason, f"{old} executor(s) to upgrade to {image}: {msg}")
    text = await _take(rt, consortium, members[step.member], nodes, step)
    logger.info("upgrade step: %s", text)
    await events.post(rt.k8s, consortium, "UpgradeStep", text)
    reason = "AddingExecutor" if step.action == "add" else "RetiringExecutor"
    return Condition(PROGRESSING, "True", reason, f"{old} executor(s) to upgrade to {image}: {text}")


async def _take(
    rt: Runtime, consortium: dict[str, Any], member: dict[str, Any], nodes: list[dict[str, Any]], step: Step
) -> str:
    ns = consortium["metadata"]["namespace"]
    if step.action == "add":
        ordinal = free_ordinal(nodes, step.member)
        node = children.member_node(member, consortium, rt.cfg, "Executor", ordinal)
        await rt.k8s.apply(NODES, ns, node)
        return f"added {node['metadata']['name']} ({node['spec']['image']}) for {step.member}"
    await rt.k8s.patch(NODES, ns, str(step.node), {"spec": {"retire": True}})
    return f"retiring {step.node} of {step.member}: its replacement is trusted and caught up"
