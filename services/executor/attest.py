"""Evidence about this executor, and the check of a peer's evidence before it is trusted."""

from __future__ import annotations

from typing import Any

from conclavium.node_messages import VIRTUAL_DEV_MEASUREMENT as VIRTUAL_MEASUREMENT


def local_evidence(report_data: bytes) -> dict[str, Any]:
    """Evidence from the development `virtual` TEE: explicit, unsigned, refused by production policy."""
    return {"platform": "virtual", "measurement": VIRTUAL_MEASUREMENT, "report_data": report_data.hex()}


def check_evidence(evidence: dict[str, Any], report_data: bytes, policy: dict[str, Any]) -> str | None:
    """None when `evidence` is acceptable under `policy` and binds `report_data`; else the reason."""
    platform = evidence.get("platform")
    if platform not in policy.get("platforms", []):
        return f"platform {platform!r} is not allowed"
    if platform == "virtual" and policy.get("environment") == "production":
        return "virtual evidence is refused in production"
    if evidence.get("report_data") != report_data.hex():
        return "evidence does not bind the node's public keys"
    allowed = policy.get("measurements", [])
    if evidence.get("measurement") not in allowed:
        return "measurement is not allowed by governance"
    return None
