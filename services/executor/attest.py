"""Attestation inside the executor: evidence about this node, and the check of a peer's evidence.

Executors verify join evidence themselves with the shared verification library, at the block time
(the sequencer's stamp bounded by the executors' signed clocks, `ledger_clock.py`, so every executor
decides the same and nobody can hold time back to keep stale collateral acceptable), against the
policy in the ledger: the node policy from genesis plus the measurements governance allowed.
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.error
import urllib.request
from collections.abc import Iterable
from typing import Any

from conclavium.attestation import (
    AttestationError,
    Claims,
    Policy,
    evaluate_policy,
    expected_report_data,
    load_policy,
    verify_evidence,
)
from conclavium.attestation.providers import ProviderError, provider_from_config
from conclavium.attestation.snp import leaf_product
from conclavium.encoding import b64d, b64e
from conclavium.node_messages import VIRTUAL_DEV_MEASUREMENT


class EvidenceRefused(Exception):
    def __init__(self, check: str, message: str) -> None:
        super().__init__(f"{check}: {message}")
        self.check = check


COLLATERAL_TIMEOUT = 15.0


def fetch_collateral(
    url: str, platform: str, evidence: bytes, *, parts: list[str] | None = None, product: str | None = None
) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """Ask the attestation service for what `evidence` needs, as (certs, collateral).

    TDX/SGX: collateral (TCB info, QE identity, chain, CRLs). SNP: the VCEK (`parts` "certs") and
    the ARK's CRL ("crl"); `product` names the product line when the report (v2) does not. The
    answer is not trusted: it travels in the Join entry and every executor verifies it there.
    """
    request: dict[str, Any] = {"platform": platform, "evidence": b64e(evidence)}
    if parts is not None:
        request["parts"] = parts
    if product is not None:
        request["product"] = product
    req = urllib.request.Request(
        url.rstrip("/") + "/v1/attestation/collateral",
        data=json.dumps(request).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=COLLATERAL_TIMEOUT) as r:
            doc = json.loads(r.read())
    except urllib.error.HTTPError as e:
        try:
            err = json.loads(e.read()).get("error", {})
        except ValueError:
            err = {}
        raise ProviderError(
            f"attestation service gave no collateral: {err.get('code', e.code)}: {err.get('message', '')}"
        ) from e
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise ProviderError(f"attestation service at {url} unreachable for collateral: {e}") from e
    out: list[dict[str, bytes]] = []
    for key in ("certs", "collateral"):
        files = doc.get(key, {})
        if not isinstance(files, dict):
            raise ProviderError(f"attestation service answered with a malformed {key}")
        out.append({str(k): b64d(v) for k, v in files.items()})
    certs, collateral = out
    if not certs and not collateral:
        raise ProviderError("attestation service answered without collateral")
    return certs, collateral


def local_evidence(
    public_keys: list[bytes], tee: str = "virtual", attestation_url: str = "", virtual_measurement: str = ""
) -> dict[str, Any]:
    """Evidence from this node's TEE binding its public keys, with the collateral it needs.

    TDX and SGX quotes carry no TCB info, QE identity or CRLs, an SNP report no CRL and no VCEK
    unless the host supplies it: that collateral is fetched from the attestation service and
    shipped in the Join entry, because executors refuse evidence without it.
    """
    options: dict[str, Any] = {}
    if tee == "virtual":
        options = {"measurement": bytes.fromhex(virtual_measurement or VIRTUAL_DEV_MEASUREMENT), "host_data": b""}
    if tee == "sev-guest" and attestation_url:
        options = {"fetch_certs": lambda report: fetch_collateral(attestation_url, "snp", report, parts=["certs"])[0]}
    provider = provider_from_config(tee, **options)
    ev = provider.get_evidence(expected_report_data(public_keys))
    out: dict[str, Any] = {
        "platform": ev.platform,
        "evidence": b64e(ev.evidence),
        "certs": {k: b64e(v) for k, v in ev.certs.items()},
    }
    if ev.event_log:
        out["event_log"] = b64e(ev.event_log)
    if ev.platform == "snp":
        if not attestation_url:
            raise ProviderError("SNP evidence needs AMD's CRL (and a VCEK): configure the attestation service URL")
        has_leaf = bool({"vcek.der", "vlek.der"} & set(ev.certs))
        named = leaf_product(list(ev.certs.values()))
        certs, collateral = fetch_collateral(
            attestation_url,
            "snp",
            ev.evidence,
            parts=["crl"] if has_leaf else ["certs", "crl"],
            product=named[0] if named else None,
        )
        out["certs"].update({k: b64e(v) for k, v in certs.items()})
        out["collateral"] = {k: b64e(v) for k, v in collateral.items()}
    if ev.platform in ("tdx", "sgx"):
        if not attestation_url:
            raise ProviderError(f"{ev.platform} evidence needs Intel collateral: configure the attestation service URL")
        _, collateral = fetch_collateral(attestation_url, ev.platform, ev.evidence)
        out["collateral"] = {k: b64e(v) for k, v in collateral.items()}
    return out


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
        event_log = b64d(evidence.get("event_log") or "")
    except (KeyError, TypeError, ValueError):
        raise EvidenceRefused("evidence_format", "evidence must carry platform and base64 evidence") from None
    at = dt.datetime.fromtimestamp(at_ms / 1000, dt.UTC)
    try:
        parsed = load_policy(policy)
        claims = verify_evidence(
            platform,
            raw,
            certs=certs,
            collateral=collateral or None,
            event_log=event_log or None,
            at=at,
            policy=parsed,
        )
        result = evaluate_policy(claims, parsed, public_keys=public_keys, at=at)
    except AttestationError as e:
        raise EvidenceRefused(e.check, e.message) from None
    if not result.allowed:
        checks = ", ".join(check for check, _ in result.failures)
        raise EvidenceRefused(checks, "; ".join(message for _, message in result.failures))
    return claims.to_dict()


def policy_failures(row: dict[str, Any], parsed: Policy) -> list[dict[str, str]]:
    """What the policy would now refuse in a node's recorded claims (empty: it still meets it).

    The node is judged at its own verification time and against its own, already checked, key
    binding, so only the policy's components (measurements, TCB floors, RTMRs, ...) can drift, not
    the passage of time.
    """
    try:
        claims = Claims.from_dict(row.get("claims") or {})
        at = dt.datetime.fromisoformat(claims.verified_at.replace("Z", "+00:00"))
        result = evaluate_policy(claims, parsed, report_data=bytes.fromhex(claims.report_data), at=at)
    except (TypeError, ValueError, KeyError):
        return [{"check": "claims_format", "message": "the recorded claims cannot be evaluated"}]
    return [{"check": c, "message": m} for c, m in result.failures]


def drifted_nodes(nodes: Iterable[tuple[str, dict[str, Any]]], policy: dict[str, Any]) -> list[str]:
    """Ids of trusted nodes whose recorded claims the policy would now refuse ("attestation drift").

    A policy that no longer loads drifts every node.
    """
    trusted = sorted((node_id, row) for node_id, row in nodes if row.get("status") == "Trusted")
    try:
        parsed = load_policy(policy)
    except AttestationError:
        return [node_id for node_id, _ in trusted]
    return [node_id for node_id, row in trusted if policy_failures(row, parsed)]
