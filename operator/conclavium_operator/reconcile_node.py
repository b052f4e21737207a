"""ConsortiumNode: its StatefulSet of 1, headless Service and PVC, and its status from the ledger.

The node joins the ledger under its ConsortiumNode name (CONCLAVIUM_NODE_NAME), so `GET /v1/service`
tells whether its attested join was recorded (`Attested`) and whether it is `Trusted`; `GET
/v1/runtime` tells which sequencer holds the lease (`Active`, the others `Standby`) and each executor's
own executed and committed height.
"""

from __future__ import annotations

import re
from typing import Any

from conclavium_operator import children
from conclavium_operator.conditions import Condition
from conclavium_operator.config import OperatorConfig
from conclavium_operator.gateway import ledger_node
from conclavium_operator.kube import CONSORTIUMS, PVCS, SERVICES, STATEFULSETS, Kube

HEX = re.compile(r"^[0-9a-f]+$")


async def ensure_children(kube: Kube, cfg: OperatorConfig, node: dict[str, Any]) -> dict[str, Any]:
    """Create or patch the three children; returns the status fields naming them."""
    ns = node["metadata"]["namespace"]
    consortium = await kube.get(CONSORTIUMS, ns, node["spec"]["consortiumRef"]["name"])
    claim = await claim_of(kube, node)
    await kube.apply(PVCS, ns, children.pvc(node, claim), fields=("metadata",))
    await kube.apply(SERVICES, ns, children.service(node, cfg))
    sts = await kube.apply(STATEFULSETS, ns, children.statefulset(node, consortium, cfg, claim))
    return {"statefulSetName": sts["metadata"]["name"], "serviceName": node["metadata"]["name"], "claimName": claim}


async def claim_of(kube: Kube, node: dict[str, Any]) -> str:
    """The node's claim: as its status recorded it; else `data-<node>` if that claim is this node's own
    (created before claims carried the uid), else a new name with the node's uid."""
    meta = node["metadata"]
    recorded = (node.get("status") or {}).get("claimName")
    if recorded:
        return str(recorded)
    legacy = await kube.get(PVCS, meta["namespace"], children.pvc_name(meta["name"]))
    owners = [r.get("uid") for r in ((legacy or {}).get("metadata") or {}).get("ownerReferences") or []]
    return children.pvc_name(meta["name"]) if meta.get("uid") in owners else children.claim_name(node)


def observe(
    node: dict[str, Any],
    sts: dict[str, Any] | None,
    service: dict[str, Any] | None,
    runtime: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], list[Condition]]:
    """Node status from its StatefulSet, the ledger (`service`; None: the gateway could not be asked)
    and what the gateway observes of the running nodes (`runtime`: the sequencer lease holder, each
    executor's executed and committed height)."""
    spec = node["spec"]
    name = node["metadata"]["name"]
    executor = spec["role"] == "Executor"
    pod_ready = bool(sts and int((sts.get("status") or {}).get("readyReplicas") or 0) >= 1)
    conds = [
        Condition.of("Provisioned", sts is not None, "StatefulSetCreated" if sts else "StatefulSetMissing"),
    ]
    fields: dict[str, Any] = {}
    if service is None:
        conds.append(Condition("Attested", "Unknown", "GatewayUnavailable", "the gateway could not be asked"))
        return {"phase": "Provisioning" if not pod_ready else "Joining"}, [
            *conds,
            Condition("Ready", "Unknown", "GatewayUnavailable"),
        ]
    if not executor:
        ready = pod_ready
        holder = ((runtime or {}).get("sequencer") or {}).get("holder")
        active = ready and holder == name
        conds.append(Condition.of("Ready", ready, "PodReady" if ready else "PodNotReady"))
        conds.append(
            Condition.of("LeaseHeld", active, "HoldsLease" if active else "Standby", f"lease holder: {holder}")
        )
        if spec.get("retire"):
            fields["phase"] = "Retiring"
        else:
            fields["phase"] = ("Active" if active else "Standby") if ready else "Provisioning"
        return fields, conds
    found = ledger_node(service, name, (node.get("status") or {}).get("nodeId"))
    state = (found or {}).get("status")
    if found:
        fields["nodeId"] = found["id"]
        measurement = str(found.get("measurement") or "").lower()
        if HEX.match(measurement) and 32 <= len(measurement) <= 128:
            fields["measurement"] = measurement
    attested = state in ("Pending", "Trusted")
    if found is None:
        conds.append(Condition("Attested", "False", "NotJoined", f"no node named {name} in the ledger yet"))
    elif state == "Retired":
        conds.append(Condition("Attested", "False", "Retired", "the ledger retired this node"))
    else:
        conds.append(Condition("Attested", "True", "JoinAttested", f"join recorded, platform {found.get('platform')}"))
    trusted = state == "Trusted"
    conds.append(Condition.of("Trusted", trusted, "Trusted" if trusted else f"Ledger{state or 'Unknown'}"))
    seen = ((runtime or {}).get("executors") or {}).get(name) or {}
    for field, key in (("executedHeight", "executed_height"), ("committedHeight", "committed_height")):
        if type(seen.get(key)) is int:
            fields[field] = seen[key]
    ready = trusted and pod_ready
    reason = "Serving" if ready else ("PodNotReady" if trusted else "NotTrusted")
    conds.append(Condition.of("Ready", ready, reason))
    if spec.get("retire"):
        fields["phase"] = "Retired" if state == "Retired" else "Retiring"
    elif trusted:
        fields["phase"] = "Trusted" if ready else "Provisioning"
    elif attested:
        fields["phase"] = "Joining"
    else:
        fields["phase"] = "Attesting" if pod_ready else "Provisioning"
    return fields, conds
