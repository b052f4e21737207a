"""ConsortiumNode: its StatefulSet of 1, headless Service and PVC, and its status from the ledger.

The node joins the ledger under its ConsortiumNode name (CONCLAVIUM_NODE_NAME), so `GET /v1/service`
tells whether its attested join was recorded (`Attested`), whether it is `Trusted`, and the
ledger's committed height.
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
    await kube.apply(PVCS, ns, children.pvc(node), fields=("metadata",))
    await kube.apply(SERVICES, ns, children.service(node, cfg))
    sts = await kube.apply(STATEFULSETS, ns, children.statefulset(node, consortium, cfg))
    return {"statefulSetName": sts["metadata"]["name"], "serviceName": node["metadata"]["name"]}


def observe(
    node: dict[str, Any], sts: dict[str, Any] | None, service: dict[str, Any] | None
) -> tuple[dict[str, Any], list[Condition]]:
    """Node status from its StatefulSet and the ledger (None: the gateway could not be asked)."""
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
        conds.append(Condition.of("Ready", ready, "PodReady" if ready else "PodNotReady"))
        fields["phase"] = "Retiring" if spec.get("retire") else ("Standby" if ready else "Provisioning")
        return fields, conds
    found = ledger_node(service, name)
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
    if trusted:
        fields["committedHeight"] = int(service.get("committed_height") or 0)
    ready = trusted and pod_ready
    reason = "Serving" if ready else ("PodNotReady" if trusted else "NotTrusted")
    conds.append(Condition.of("Ready", ready, reason))
    if spec.get("retire"):
        fields["phase"] = "Retired" if state == "Retired" else "Retiring"
    elif ready:
        fields["phase"] = "Active"
    elif trusted:
        fields["phase"] = "Trusted"
    elif attested:
        fields["phase"] = "Joining"
    else:
        fields["phase"] = "Attesting" if pod_ready else "Provisioning"
    return fields, conds
