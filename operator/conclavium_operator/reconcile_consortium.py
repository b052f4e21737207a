"""Consortium: check the spec, and report the ledger behind the gateway in its status.

The Consortium seeds genesis only (operator/genesis.py); afterwards the ledger's governance is the source of truth, so
the operator reports (members, trusted executors, quorum, height) and never overwrites the ledger.
"""

from __future__ import annotations

import hashlib
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from conclavium_operator import children
from conclavium_operator.conditions import Condition
from conclavium_operator.gateway import Gateway, GatewayUnavailable
from conclavium_operator.kube import PDBS, Kube


def spec_problem(spec: dict[str, Any], installed_ledger: str | None = None) -> tuple[str, str] | None:
    """The API server's CEL rules again, for clusters (or emulators) that did not enforce them, and
    the one rule no schema can check: the ledger must be the one the chart installed (`ledgerId`),
    which the gateway, the attestation service and every node use."""
    if not spec.get("ledgerId"):
        return "MissingLedgerId", "spec.ledgerId is required"
    if installed_ledger is not None and spec["ledgerId"] != installed_ledger:
        return (
            "LedgerNotInstalled",
            f"spec.ledgerId is {spec['ledgerId']!r} but this release serves ledger {installed_ledger!r} "
            "(the chart's ledgerId value)",
        )
    platforms = (spec.get("tee") or {}).get("platforms") or []
    if not platforms:
        return "MissingTeePlatforms", "spec.tee.platforms needs at least one platform"
    env = spec.get("environment", "production")
    if "virtual" in platforms and env != "development":
        return "VirtualPlatformForbidden", "the virtual TEE platform is only allowed when environment is development"
    if (spec.get("attestation") or {}).get("allowDebug") and env != "development":
        return "DebugForbidden", "debug enclaves are only allowed when environment is development"
    return None


async def ensure_budgets(kube: Kube, consortium: dict[str, Any]) -> None:
    """The executors' and sequencers' PodDisruptionBudgets (create-or-patch; owned by the Consortium)."""
    for budget in children.disruption_budgets(consortium):
        await kube.apply(PDBS, consortium["metadata"]["namespace"], budget)


def cert_fingerprint(pem: str | None) -> str | None:
    if not pem:
        return None
    try:
        der = x509.load_pem_x509_certificate(pem.encode()).public_bytes(serialization.Encoding.DER)
    except ValueError:
        return None
    return hashlib.sha256(der).hexdigest()


def from_service(
    spec: dict[str, Any], service: dict[str, Any], gateway_url: str
) -> tuple[dict[str, Any], list[Condition]]:
    """Status fields and conditions from `GET /v1/service`: pure, so handlers and timers agree."""
    nodes = service.get("nodes") or []
    trusted = sum(1 for n in nodes if n.get("status") == "Trusted")
    fields: dict[str, Any] = {
        "admittedMembers": len(service.get("members") or []),
        "trustedExecutors": trusted,
        "commitQuorum": int(service.get("quorum") or 0),
        "committedHeight": int(service.get("committed_height") or 0),
        "gatewayUrl": gateway_url,
    }
    fp = cert_fingerprint(service.get("service_cert"))
    if fp:
        fields["serviceCertificateFingerprint"] = fp
    conds = [Condition("GatewayReachable", "True", "Reachable", f"gateway {gateway_url} answered")]
    if service.get("ledger") != spec.get("ledgerId"):
        msg = f"the gateway serves ledger {service.get('ledger')!r}, the spec says {spec.get('ledgerId')!r}"
        conds.append(Condition("LedgerMatches", "False", "LedgerIdMismatch", msg))
        conds.append(Condition("Ready", "False", "LedgerIdMismatch", msg))
        fields["phase"] = "Failed"
        return fields, conds
    conds.append(Condition("LedgerMatches", "True", "LedgerIdMatches", f"ledger {spec.get('ledgerId')}"))
    genesis = bool(fp)
    conds.append(
        Condition.of("GenesisComplete", genesis, "ServiceCertificateIssued" if genesis else "NoServiceCertificate")
    )
    status = service.get("status")
    is_open = status == "Open"
    conds.append(Condition.of("ServiceOpen", is_open, "Open" if is_open else "NotOpen", f"service status {status}"))
    quorum = int(service.get("quorum") or 0)
    healthy = trusted >= max(quorum, 1)
    conds.append(
        Condition.of(
            "NetworkHealthy",
            healthy,
            "QuorumAvailable" if healthy else "QuorumAtRisk",
            f"{trusted} trusted executors, commit quorum {quorum}",
        )
    )
    ready = genesis and is_open and healthy
    conds.append(Condition.of("Ready", ready, "LedgerReady" if ready else "LedgerNotReady"))
    fields["phase"] = "Ready" if ready else ("Initializing" if not is_open else "Degraded")
    return fields, conds


async def observe(
    spec: dict[str, Any], gateway: Gateway, installed_ledger: str | None = None
) -> tuple[dict[str, Any], list[Condition]]:
    """Status of a Consortium now; a malformed spec or an unreachable gateway become conditions."""
    problem = spec_problem(spec, installed_ledger)
    if problem:
        reason, message = problem
        return {"phase": "Failed"}, [
            Condition("SpecValid", "False", reason, message),
            Condition("Ready", "False", reason, message),
        ]
    try:
        service = await gateway.service()
    except GatewayUnavailable as e:
        return {"phase": "Pending", "gatewayUrl": gateway.url}, [
            Condition("SpecValid", "True", "Valid"),
            Condition("GatewayReachable", "False", "GatewayUnavailable", str(e)),
            Condition("Ready", "False", "GatewayUnavailable", str(e)),
        ]
    fields, conds = from_service(spec, service, gateway.url)
    return fields, [Condition("SpecValid", "True", "Valid"), *conds]
