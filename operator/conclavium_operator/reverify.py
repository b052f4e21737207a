"""Periodic re-verification of executors (`Consortium.spec.attestation.reverifyInterval`).

A node's join evidence was verified once, against the node policy of that time; governance may tighten
the policy later (`set_node_policy`, TCB floors). Every interval the operator asks the ledger, through
`GET /v1/nodes/{id}/attestation`, whether the node's recorded claims still meet the current policy
(`policy_failures`, evaluated by an executor). A pass records `status.lastAttestationTime`; a failure
sets `Reverified=False` with the failed checks and posts one Warning Event. The operator proposes
nothing: retiring a drifted node stays the members' decision.
"""

from __future__ import annotations

import time
from typing import Any

from conclavium_operator import children, events
from conclavium_operator.conditions import Condition, find, now
from conclavium_operator.gateway import GatewayUnavailable
from conclavium_operator.metrics import REVERIFICATIONS
from conclavium_operator.runtime import Runtime

DEFAULT_INTERVAL = "1h"
REVERIFIED = "Reverified"
DRIFT = "PolicyDrift"


def interval_seconds(consortium: dict[str, Any] | None) -> float:
    spec = (consortium or {}).get("spec") or {}
    return children.duration_seconds(str((spec.get("attestation") or {}).get("reverifyInterval", DEFAULT_INTERVAL)))


def caught_up(node: dict[str, Any], sts: dict[str, Any] | None) -> Condition:
    """An executor pod is ready only while it is trusted, signs and has nothing left to execute in the
    stream (its /readyz), the same test the upgrade roll uses (upgrade.roll_node)."""
    ready = int(((sts or {}).get("status") or {}).get("readyReplicas") or 0) >= 1
    return Condition.of("CaughtUp", ready, "ExecutorReady" if ready else "ExecutorNotReady")


def failure_message(failures: list[dict[str, Any]]) -> str:
    return "; ".join(f"{f.get('check')}: {f.get('message')}" for f in failures) or "no failures"


async def check(rt: Runtime, node: dict[str, Any], fields: dict[str, Any], interval_s: float) -> list[Condition]:
    """The due re-verification's condition, counted by its reason."""
    conds = await _check(rt, node, fields, interval_s)
    for c in conds:
        REVERIFICATIONS.labels(c.reason).inc()
    return conds


async def _check(rt: Runtime, node: dict[str, Any], fields: dict[str, Any], interval_s: float) -> list[Condition]:
    """Re-verify `node` if its interval has passed since the last check; adds `lastAttestationTime` to
    `fields` on a pass and returns the `Reverified` condition (none when nothing was due)."""
    node_id = fields.get("nodeId")
    if not node_id or node["spec"].get("role") != "Executor" or fields.get("phase") == "Retired":
        return []
    key = node["metadata"].get("uid") or node["metadata"]["name"]
    last = rt.reverified.get(key)
    if last is not None and time.monotonic() - last < interval_s:
        return []
    try:
        answer = await rt.gateway.node_attestation(str(node_id))
    except GatewayUnavailable as e:
        return [Condition(REVERIFIED, "Unknown", "GatewayUnavailable", str(e))]
    rt.reverified[key] = time.monotonic()
    if answer is None:
        return [Condition(REVERIFIED, "False", "NotInLedger", f"the ledger has no node {node_id}")]
    failures = list(answer.get("policy_failures") or [])
    if not failures:
        fields["lastAttestationTime"] = now()
        return [Condition(REVERIFIED, "True", "PolicyMet", "the recorded evidence meets the current node policy")]
    message = failure_message(failures)
    previous = find(node, REVERIFIED)
    if not previous or previous.get("status") != "False" or previous.get("message") != message:
        await events.post(rt.k8s, node, DRIFT, f"re-verification failed: {message}", type_="Warning")
    return [Condition(REVERIFIED, "False", DRIFT, message)]
