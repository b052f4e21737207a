"""A proposal as a member's status shows it: `status.proposal` and the `Votes` printer column.

Pure: from the proposal (`GET /v1/gov/proposals/{id}`) and the active members (`GET /v1/service`),
counted the way the ledger counts (only active members' ballots; docs/governance.md).
"""

from __future__ import annotations

import datetime
from typing import Any

MAX_PENDING = 32  # the CRD bounds the list; the count is in the message anyway


def required(rules: list[dict[str, Any]], n: int) -> int | None:
    """Approvals needed under count rules (majority, unanimity, k_of_n); None when a weighted rule decides."""
    needed = 0
    for rule in rules:
        kind = rule.get("rule")
        if kind == "majority":
            needed = max(needed, n // 2 + 1)
        elif kind == "unanimity":
            needed = max(needed, n)
        elif kind == "k_of_n":
            needed = max(needed, min(int(rule.get("k") or 0), n))
        else:
            return None
    return needed if rules else None


def view(proposal: dict[str, Any], service: dict[str, Any]) -> dict[str, Any]:
    """`status.proposal`: id, action, state, approvals, rejections, required, pendingVoters, expiresAt."""
    members = {m["id"]: m.get("name") or m["id"] for m in service.get("members") or [] if m.get("id")}
    ballots = {k: v for k, v in (proposal.get("ballots") or {}).items() if k in members}
    out: dict[str, Any] = {
        "id": proposal["proposal_id"],
        "action": ",".join(str(a.get("name")) for a in proposal.get("actions") or [])[:256],
        "state": proposal.get("state", "Open"),
        "approvals": sum(1 for v in ballots.values() if v == "approve"),
        "rejections": sum(1 for v in ballots.values() if v == "reject"),
        "pendingVoters": sorted(members[k] for k in members if k not in ballots)[:MAX_PENDING],
    }
    need = required(list(proposal.get("accept") or []), len(members))
    if need is not None:
        out["required"] = need
    if isinstance(proposal.get("expires_at_ms"), int):
        expires = datetime.datetime.fromtimestamp(proposal["expires_at_ms"] / 1000, tz=datetime.UTC)
        out["expiresAt"] = expires.strftime("%Y-%m-%dT%H:%M:%SZ")
    return out


def column(v: dict[str, Any]) -> str:
    """The `Votes` column: approvals/required (and rejections when there are any)."""
    text = f"{v['approvals']}/{v.get('required', '?')}"
    return text + (f" ({v['rejections']} no)" if v["rejections"] else "")
