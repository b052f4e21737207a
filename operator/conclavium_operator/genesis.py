"""Creating the ledger from the declared resources: the genesis configuration and its founding executor.

Before the ledger exists, the Consortium's `foundingMembers` name the ConsortiumMembers whose public
keys the genesis records; the first of them runs the founding executor (its `executor-0`). The
operator writes the genesis configuration, built only from declared resources and public keys (it
never reads a private key for it), into the ConfigMap `<consortium>-genesis` exactly once: a
ConfigMap that already exists is never rewritten, so a second reconcile, an operator restart or a
second operator replica hand the founding executor the same document. The founding executor is the
only node started with `--genesis`, and an executor whose ledger stream already holds a genesis never
creates another, so the ledger is created once.

The pieces a member-signed genesis replaces are `genesis_config` (what the genesis says) and
`ensure_genesis_configmap` (how it reaches the founding executor).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from conclavium.node_messages import VIRTUAL_DEV_MEASUREMENT
from conclavium_operator import children
from conclavium_operator.identity import IdentityProblem, load_identity
from conclavium_operator.kube import CONFIGMAPS, MEMBERS, KubeError
from conclavium_operator.runtime import Runtime

# The CRDs' platform names → the ledger's (conclavium.attestation.claims.PLATFORMS).
LEDGER_PLATFORMS = {"sev-snp": "snp", "tdx": "tdx", "sgx": "sgx", "virtual": "virtual"}
TX_VALIDITY_MS = 120_000
CLOCK_TOLERANCE_MS = 30_000


class GenesisWaiting(Exception):
    """The genesis cannot be written yet (a founding member or its key is missing): retry later."""


@dataclass(frozen=True)
class Founder:
    member_id: str
    public_key_pem: str
    weight: int


def founding_members(consortium: dict[str, Any]) -> list[str]:
    return [str(n) for n in ((consortium.get("spec") or {}).get("foundingMembers") or [])]


def _member_rule(constitution: dict[str, Any]) -> dict[str, Any]:
    kind = constitution.get("memberQuorum", "Majority")
    if kind == "Unanimity":
        return {"rule": "unanimity"}
    if kind == "KOfN":
        return {"rule": "k_of_n", "k": int(constitution["k"])}
    if kind == "Weighted":
        return {"rule": "weighted", "num": int(constitution["weightThresholdPercent"]), "den": 100}
    return {"rule": "majority"}


def measurement_lines(text: str) -> list[str]:
    """Allowed measurements from the ConfigMap: hex, one per line; blank lines and `#` comments skipped."""
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip().lower()
        if line:
            out.append(line)
    return out


def genesis_config(consortium: dict[str, Any], founders: list[Founder], measurements: list[str]) -> dict[str, Any]:
    """The genesis configuration the founding executor is started with (executor `--genesis`), from the
    Consortium's spec: ledger id, founding members, constitution (`memberQuorum`, `nodeTrust`,
    `proposalTtl`), `commitQuorum`, and the node policy (environment, platforms, `allowDebug`,
    allowed measurements; a development consortium on `virtual` allows the development measurement)."""
    spec = consortium.get("spec") or {}
    constitution = spec.get("constitution") or {}
    platforms = [LEDGER_PLATFORMS[p] for p in (spec.get("tee") or {}).get("platforms") or []]
    environment = "development" if spec.get("environment") == "development" else "production"
    attestation = spec.get("attestation") or {}
    node_policy: dict[str, Any] = {"environment": environment, "platforms": platforms}
    if attestation.get("allowDebug"):
        node_policy["allow_debug"] = True
    allowed = [
        {"platform": platform, "measurement": m}
        for platform in platforms
        if platform != "virtual"
        for m in measurements
    ]
    if "virtual" in platforms and environment == "development":
        allowed.append({"platform": "virtual", "measurement": VIRTUAL_DEV_MEASUREMENT})
    config: dict[str, Any] = {
        "ledger": spec["ledgerId"],
        "members": [{"name": f.member_id, "public_key": f.public_key_pem, "weight": f.weight} for f in founders],
        "users": [],
        "node_policy": node_policy,
        "measurements": allowed,
        "constitution": {
            "proposal_ttl_s": int(children.duration_seconds(constitution.get("proposalTtl", "168h"))),
            "auto_trust_nodes": constitution.get("nodeTrust", "Automatic") == "Automatic",
            "rules": {"default": {"proposers": "members", "accept": _member_rule(constitution)}},
        },
        "tx_validity_ms": TX_VALIDITY_MS,
        "clock_tolerance_ms": CLOCK_TOLERANCE_MS,
    }
    if constitution.get("commitQuorum"):
        config["commit_quorum"] = int(constitution["commitQuorum"])
    return config


async def _founders(rt: Runtime, consortium: dict[str, Any]) -> list[Founder]:
    ns = consortium["metadata"]["namespace"]
    founders = []
    for name in founding_members(consortium):
        member = await rt.k8s.get(MEMBERS, ns, name)
        if member is None:
            raise GenesisWaiting(f"founding member {name} is not declared yet")
        spec = member.get("spec") or {}
        if (spec.get("consortiumRef") or {}).get("name") != consortium["metadata"]["name"]:
            raise GenesisWaiting(f"founding member {name} belongs to another consortium")
        if spec.get("role", "Voting") != "Voting":
            raise GenesisWaiting(f"founding member {name} is not a Voting member")
        try:
            ident = await load_identity(rt.k8s, ns, spec)
        except IdentityProblem as e:
            raise GenesisWaiting(f"founding member {name}: {e.message}") from e
        if name == founding_members(consortium)[0] and int(spec.get("executors", 1)) < 1:
            raise GenesisWaiting(f"the first founding member {name} runs no executor to create the ledger")
        founders.append(Founder(str(spec["memberId"]), ident.pem, int(spec.get("weight") or 1)))
    return founders


async def _measurements(rt: Runtime, consortium: dict[str, Any]) -> list[str]:
    ref = ((consortium.get("spec") or {}).get("attestation") or {}).get("measurementsConfigMapRef")
    if not ref:
        return []
    cm = await rt.k8s.get(CONFIGMAPS, consortium["metadata"]["namespace"], ref["name"])
    if cm is None:
        raise GenesisWaiting(f"ConfigMap {ref['name']} (allowed measurements) not found")
    return measurement_lines(str((cm.get("data") or {}).get(ref.get("key") or "measurements", "")))


async def ensure_genesis_configmap(rt: Runtime, consortium: dict[str, Any]) -> str:
    """The genesis ConfigMap's name, creating it if absent. Never rewritten once it exists: whoever
    created it first (another pass, another operator replica) wins, and everyone uses that one."""
    ns, name = consortium["metadata"]["namespace"], children.genesis_configmap_name(consortium)
    if await rt.k8s.get(CONFIGMAPS, ns, name) is not None:
        return name
    config = genesis_config(consortium, await _founders(rt, consortium), await _measurements(rt, consortium))
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {
                children.PART_OF: "conclavium",
                children.MANAGED_BY: children.OPERATOR,
                children.CONSORTIUM_LABEL: consortium["metadata"]["name"],
            },
            "ownerReferences": [children.owner_reference(consortium)],
        },
        "data": {children.GENESIS_KEY: json.dumps(config, indent=2, sort_keys=True)},
    }
    try:
        await rt.k8s.create(CONFIGMAPS, ns, body)
    except KubeError as e:
        if e.status != 409:
            raise
    return name
