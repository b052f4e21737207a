"""Status writes outside kopf's own patch: for objects the current handler is not about (a member's
timer refreshes its nodes and its Consortium), as a merge-patch on `/status` guarded by the
object's resourceVersion, so a concurrent writer makes the write fail instead of being lost."""

from __future__ import annotations

from typing import Any

from conclavium_operator.conditions import Condition, merged
from conclavium_operator.kube import Kind, Kube, KubeError


async def write(kube: Kube, kind: Kind, body: dict[str, Any], fields: dict[str, Any], conds: list[Condition]) -> bool:
    """Patch `fields` and upsert `conds`; False if the object changed or vanished meanwhile (next tick retries)."""
    meta = body["metadata"]
    status = body.get("status") or {}
    generation = int(meta.get("generation") or 0)
    new_conditions = merged(status.get("conditions") or [], conds, generation)
    changed = {k: v for k, v in fields.items() if status.get(k) != v}
    if not changed and new_conditions == (status.get("conditions") or []):
        return True
    patch: dict[str, Any] = {
        "metadata": {"resourceVersion": meta.get("resourceVersion")},
        "status": {**changed, "conditions": new_conditions},
    }
    try:
        await kube.patch(kind, meta["namespace"], meta["name"], patch, subresource="status")
    except KubeError as e:
        if e.status in (404, 409, 422):
            return False
        raise
    return True
