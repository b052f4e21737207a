"""Status conditions in the `metav1.Condition` shape, upserted by type.

Conditions are a list-map keyed by `type`. A merge-patch would replace the whole list (and lose
other writers' entries), so each upsert is a `patch.fns` function: kopf turns it into a JSON-patch
guarded by a resourceVersion test, on the `/status` subresource. `lastTransitionTime` changes only
when the status value changes, as Kubernetes tools expect.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import kopf

TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"


def now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Condition:
    type: str
    status: str
    reason: str
    message: str = ""

    @classmethod
    def of(cls, type_: str, ok: bool, reason: str, message: str = "") -> Condition:
        return cls(type_, TRUE if ok else FALSE, reason, message)


def find(body: Mapping[str, Any], type_: str) -> dict[str, Any] | None:
    for c in (body.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return None


def is_true(body: Mapping[str, Any], type_: str) -> bool:
    c = find(body, type_)
    return c is not None and c.get("status") == TRUE


def merged(
    existing: Iterable[Mapping[str, Any]], updates: Iterable[Condition], generation: int
) -> list[dict[str, Any]]:
    """The condition list after upserting `updates`: pure, so that it is testable and deterministic."""
    result = [dict(c) for c in existing]
    for u in updates:
        entry = {
            "type": u.type,
            "status": u.status,
            "reason": u.reason,
            "message": u.message[:32768],
            "observedGeneration": generation,
        }
        for i, c in enumerate(result):
            if c.get("type") == u.type:
                same = c.get("status") == u.status
                entry["lastTransitionTime"] = (
                    c.get("lastTransitionTime") if same and c.get("lastTransitionTime") else now()
                )
                result[i] = entry
                break
        else:
            entry["lastTransitionTime"] = now()
            result.append(entry)
    return result


def upsert(patch: kopf.Patch, *updates: Condition) -> None:
    """Queue the upsert of `updates` into `status.conditions` (applied by kopf after the handler)."""
    updates_ = list(updates)

    def fn(body: dict[str, Any]) -> None:
        if not isinstance(body.get("status"), dict):
            body["status"] = {}
        status = body["status"]
        generation = int((body.get("metadata") or {}).get("generation") or 0)
        status["conditions"] = merged(status.get("conditions") or [], updates_, generation)

    patch.fns.append(fn)
