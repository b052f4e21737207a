"""Attestation inside the executor: evidence about this node, and the check of a peer's evidence.

Executors verify join evidence themselves with the shared verification library, at the block's
timestamp (so every executor decides the same), against the policy in the ledger: the node policy
from genesis plus the measurements governance allowed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from conclavium.attestation import (
    AttestationError,
    Claims,
    evaluate_policy,
    expected_report_data,
    load_policy,
    verify_evidence,
)
from conclavium.attestation.providers import provider_from_config
from conclavium.encoding import b64d, b64e
from conclavium.node_messages import VIRTUAL_DEV_MEASUREMENT


class EvidenceRefused(Exception):
    def __init__(self, check: str, message: str) -> None:
        super().__init__(f"{check}: {message}")
        self.check = check


def local_evidence(public_keys: list[bytes], tee: str = "virtual") -> dict[str, Any]:
    """Evidence from this node's TEE binding its public keys."""
    options: dict[str, Any] = {}
    if tee == "virtual":
        options = {"measurement": bytes.fromhex(VIRTUAL_DEV_MEASUREMENT), "host_data": b""}
    provider = provider_from_config(tee, **options)
    ev = provider.get_evidence(expected_report_data(public_keys))
    return {
        "platform": ev.platform,
        "evidence": b64e(ev.evidence),
        "certs": {k: b64e(v) for k, v in ev.certs.items()},
    }


def policy_document(node_policy: dict[str, Any], measurements: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    allowed = []
    for m, row in measurements:
        rule = {"platform": row["platform"], "measurement": m}
        if row.get("host_data"):
            rule["host_data"] = row["host_data"]
        allowed.append(rule)
    return {**node_policy, "measurements": allowed}


def verify_join_evidence(
    evidence: dict[str, Any], public_keys: list[bytes], policy: dict[str, Any], at_ms: int
) -> dict[str, Any]:
    """The claims of acceptable evidence; raises EvidenceRefused naming the failed check."""
    try:
        platform = evidence["platform"]
        raw = b64d(evidence["evidence"])
        certs = [b64d(v) for v in (evidence.get("certs") or {}).values()]
        collateral = {k: b64d(v) for k, v in (evidence.get("collateral") or {}).items()}
    except (KeyError, TypeError, ValueError):
        raise EvidenceRefused("evidence_format", "evidence must carry platform and base64 evidence") from None
    at = dt.datetime.fromtimestamp(at_ms / 1000, dt.UTC)
    try:
        parsed = load_policy(policy)
        claims = verify_evidence(platform, raw, certs=certs, collateral=collateral or None, at=at, policy=parsed)
        result = evaluate_policy(claims, parsed, public_keys=public_keys, at=at)
    except AttestationError as e:
        raise EvidenceRefused(e.check, e.message) from None
    if not result.allowed:
        checks = ", ".join(check for check, _ in result.failures)
        raise EvidenceRefused(checks, "; ".join(message for _, message in result.failures))
    return claims.to_dict()


def drifted_nodes(nodes: Iterable[tuple[str, dict[str, Any]]], policy: dict[str, Any]) -> list[str]:
    """Ids of trusted nodes whose recorded claims the policy would now refuse ("attestation drift").

    Each node is judged at its own verification time and against its own, already checked, key
    binding, so only the policy's components (measurements, TCB floors, RTMRs, ...) can drift, not
    the passage of time. A policy that no longer loads drifts every node.
    """
    trusted = sorted((node_id, row) for node_id, row in nodes if row.get("status") == "Trusted")
    try:
        parsed = load_policy(policy)
    except AttestationError:
        return [node_id for node_id, _ in trusted]
    out = []
    for node_id, row in trusted:
        try:
            claims = Claims.from_dict(row.get("claims") or {})
            at = dt.datetime.fromisoformat(claims.verified_at.replace("Z", "+00:00"))
            result = evaluate_policy(claims, parsed, report_data=bytes.fromhex(claims.report_data), at=at)
        except (TypeError, ValueError, KeyError):
            out.append(node_id)
            continue
        if not result.allowed:
            out.append(node_id)
    return out
