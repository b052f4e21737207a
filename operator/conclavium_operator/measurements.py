"""The Consortium's allowed-measurements ConfigMap after genesis: new lines become `allow_measurement` proposals.

Genesis takes the ConfigMap's lines as they are (operator/genesis.py). Afterwards the ledger's
measurement table is the source of truth and only a vote changes it, so a line the ledger does not
allow yet is proposed (one proposal for every missing line, by the operator's proposer in a development
consortium; otherwise the condition says what to sign offline). Lines removed from the ConfigMap are
not disallowed here: the ledger refuses to disallow a measurement trusted nodes still run, so that
step belongs after the old nodes are retired (docs/kubernetes.md, "Upgrades").
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from conclavium_operator import events
from conclavium_operator.conditions import Condition
from conclavium_operator.gateway import FINAL_FAILURES, ProposalRefused
from conclavium_operator.genesis import LEDGER_PLATFORMS, measurement_lines
from conclavium_operator.kube import CONFIGMAPS, CONSORTIUMS
from conclavium_operator.metrics import PROPOSALS
from conclavium_operator.runtime import Runtime

MEASUREMENTS_MAP = "public:gov.measurements"
PROPOSAL_ANNOTATION = "conclavium.io/measurements-proposal"
DIGEST_ANNOTATION = "conclavium.io/measurements-digest"
CONDITION = "MeasurementsAllowed"


def hardware_platform(spec: dict[str, Any]) -> str | None:
    """The ledger platform the ConfigMap's measurements are allowed for: the first non-virtual one."""
    for p in (spec.get("tee") or {}).get("platforms") or []:
        if p != "virtual":
            return LEDGER_PLATFORMS[p]
    return None


def missing_actions(lines: list[str], platform: str, allowed: dict[str, dict[str, Any] | None]) -> list[dict[str, Any]]:
    """`allow_measurement` for each line the ledger does not allow for `platform` (pure)."""
    actions = []
    for m in dict.fromkeys(lines):
        row = allowed.get(m)
        if row is None or row.get("platform") != platform:
            actions.append({"name": "allow_measurement", "args": {"platform": platform, "measurement": m}})
    return actions


def digest(actions: list[dict[str, Any]]) -> str:
    text = "\n".join(sorted(f"{a['args']['platform']}:{a['args']['measurement']}" for a in actions))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _allows(measurement: str) -> Any:
    def match(action: dict[str, Any]) -> bool:
        return (
            action.get("name") == "allow_measurement" and (action.get("args") or {}).get("measurement") == measurement
        )

    return match


async def sync(
    rt: Runtime,
    consortium: dict[str, Any],
    service: dict[str, Any],
    logger: logging.Logger | logging.LoggerAdapter[Any],
    proposer_of: Callable[[], Awaitable[tuple[Any, str]]],
) -> Condition | None:
    """The `MeasurementsAllowed` condition, proposing the missing lines when nothing is pending.
    None when the Consortium names no ConfigMap, has no hardware platform, or has no ledger yet.
    `proposer_of()` gives (the operator's proposer or None, what to do without one)."""

    spec, meta = consortium.get("spec") or {}, consortium["metadata"]
    ref = (spec.get("attestation") or {}).get("measurementsConfigMapRef")
    platform = hardware_platform(spec)
    if not ref or platform is None or not service.get("service_cert"):
        return None
    cm = await rt.k8s.get(CONFIGMAPS, meta["namespace"], ref["name"])
    if cm is None:
        return Condition(CONDITION, "False", "ConfigMapNotFound", f"ConfigMap {ref['name']} not found")
    lines = measurement_lines(str((cm.get("data") or {}).get(ref.get("key") or "measurements", "")))
    allowed = {m: await rt.gateway.state(MEASUREMENTS_MAP, m) for m in dict.fromkeys(lines)}
    actions = missing_actions(lines, platform, allowed)
    if not actions:
        return Condition(CONDITION, "True", "AllAllowed", f"the ledger allows all {len(allowed)} measurement(s)")
    wanted = digest(actions)
    for a in actions:
        pending = await rt.gateway.find_open(_allows(a["args"]["measurement"]))
        if pending:
            return Condition(
                CONDITION,
                "False",
                "VotePending",
                f"proposal {pending['proposal_id']} allows {a['args']['measurement'][:16]}…; "
                f"{len(actions)} measurement(s) not allowed yet",
            )
    annotations = meta.get("annotations") or {}
    last_id = annotations.get(PROPOSAL_ANNOTATION)
    if last_id and annotations.get(DIGEST_ANNOTATION) == wanted:
        last = await rt.gateway.proposal(last_id)
        state = (last or {}).get("state")
        if state in FINAL_FAILURES:
            # The members said no to exactly these lines: propose again only when the ConfigMap changes.
            return Condition(CONDITION, "False", f"Proposal{state}", f"proposal {last_id} was {state}")
        if state == "Accepted":
            return Condition(CONDITION, "False", "Applying", f"proposal {last_id} accepted; waiting for the ledger")
    proposer, without = await proposer_of()
    if proposer is None:
        text = ", ".join(a["args"]["measurement"][:16] + "…" for a in actions)
        return Condition(CONDITION, "False", "NoProposer", f"not allowed yet: {text}; {without}")
    try:
        submitted = await rt.gateway.propose(proposer.key, actions, proposer.ledger)
    except ProposalRefused as e:
        return Condition(CONDITION, "False", "ProposalRefused", f"the ledger refused allow_measurement: {e}")
    PROPOSALS.labels("allow_measurement").inc()
    await events.post(
        rt.k8s,
        consortium,
        "ProposalSubmitted",
        f"allow_measurement for {len(actions)} measurement(s): proposal {submitted.proposal_id}",
    )
    logger.info("proposed allow_measurement for %d measurement(s): %s", len(actions), submitted.proposal_id)
    ann = {PROPOSAL_ANNOTATION: submitted.proposal_id, DIGEST_ANNOTATION: wanted}
    await rt.k8s.patch(CONSORTIUMS, meta["namespace"], meta["name"], {"metadata": {"annotations": ann}})
    consortium.setdefault("metadata", {}).setdefault("annotations", {}).update(ann)
    return Condition(
        CONDITION, "False", "VotePending", f"proposal {submitted.proposal_id} allows {len(actions)} measurement(s)"
    )
