"""Domain Events (`kubectl describe` / `kubectl get events`): what the operator did in governance and
upgrades, posted as core/v1 Events on the object concerned (Normal; Warning for a node whose
re-verification failed, operator/conclavium_operator/reverify.py).

kopf posts Events only for handler outcomes (WARNING and above, operator/settings.py); these say what
happened in the consortium: `ProposalSubmitted`, `Admitted`, `NodeRetired`, `UpgradeStep`, `PolicyDrift`. Posting is
best effort: an Event the API refuses is dropped, never a failed reconcile.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from conclavium_operator.children import OPERATOR
from conclavium_operator.conditions import now
from conclavium_operator.kube import Kind, Kube, KubeError

EVENTS = Kind("v1", "events")
MAX_MESSAGE = 1024
log = logging.getLogger(__name__)


def event(obj: dict[str, Any], reason: str, message: str, type_: str = "Normal") -> dict[str, Any]:
    """The Event about `obj` (pure)."""
    meta = obj["metadata"]
    stamp = now()
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:16]}", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion"),
            "kind": obj.get("kind"),
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
        },
        "reason": reason,
        "message": message[:MAX_MESSAGE],
        "type": type_,
        "source": {"component": OPERATOR},
        "reportingComponent": OPERATOR,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


async def post(kube: Kube, obj: dict[str, Any], reason: str, message: str, type_: str = "Normal") -> None:
    try:
        await kube.create(EVENTS, obj["metadata"]["namespace"], event(obj, reason, message, type_))
    except KubeError as e:
        log.info("event %s on %s not posted: %s", reason, obj["metadata"]["name"], e)
