"""The constitution: who may propose each action and what accepts it, as validated data.

Thresholds are integers or num/den fractions so that every executor computes exactly the same
decision; there is no float anywhere. A proposal's rules are copied into it when it opens, so a
later constitution change never moves the goalposts of a vote already under way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from conclavium.governance.model import (
    ACCEPTED,
    ACTION_NAMES,
    ACTIVE,
    APPROVE,
    OPEN,
    REJECT,
    REJECTED,
    GovernanceError,
)

DEFAULT = "default"
RULE_KINDS: tuple[str, ...] = ("majority", "unanimity", "k_of_n", "weighted")
PROPOSERS_MEMBERS = "members"

DEFAULT_PROPOSAL_TTL_S = 24 * 3600
DEFAULT_REPLAY_WINDOW_S = 3600
MAX_TTL_S = 366 * 24 * 3600


def default_constitution() -> dict[str, Any]:
    """Majority of active members for every action, proposals live 24 h, documents ±1 h."""
    return {
        "proposal_ttl_s": DEFAULT_PROPOSAL_TTL_S,
        "replay_window_s": DEFAULT_REPLAY_WINDOW_S,
        "auto_trust_nodes": False,
        "rules": {DEFAULT: {"proposers": PROPOSERS_MEMBERS, "accept": {"rule": "majority"}}},
    }


def _int(value: object, what: str, lo: int, hi: int) -> int:
    if type(value) is not int or not lo <= value <= hi:
        raise GovernanceError(f"{what} must be an integer in [{lo}, {hi}], got {value!r}")
    return value


def _only_keys(obj: Mapping[str, Any], allowed: tuple[str, ...], what: str) -> None:
    unknown = [k for k in obj if k not in allowed]
    if unknown:
        raise GovernanceError(f"{what}: unknown field(s) {', '.join(sorted(unknown))}")


def validate_accept(rule: object, where: str) -> dict[str, Any]:
    """Check one acceptance rule and return it normalised."""
    if not isinstance(rule, dict):
        raise GovernanceError(f"{where}: accept must be an object")
    kind = rule.get("rule")
    if kind not in RULE_KINDS:
        raise GovernanceError(f"{where}: accept.rule must be one of {', '.join(RULE_KINDS)}, got {kind!r}")
    if kind in ("majority", "unanimity"):
        _only_keys(rule, ("rule",), f"{where}.accept")
        return {"rule": kind}
    if kind == "k_of_n":
        _only_keys(rule, ("rule", "k"), f"{where}.accept")
        return {"rule": kind, "k": _int(rule.get("k"), f"{where}.accept.k", 1, 1_000_000)}
    _only_keys(rule, ("rule", "num", "den"), f"{where}.accept")
    den = _int(rule.get("den"), f"{where}.accept.den", 1, 1_000_000)
    num = _int(rule.get("num"), f"{where}.accept.num", 1, den)
    return {"rule": kind, "num": num, "den": den}


def _validate_proposers(value: object, where: str) -> str | list[str]:
    if value == PROPOSERS_MEMBERS:
        return PROPOSERS_MEMBERS
    if not isinstance(value, list) or not value:
        raise GovernanceError(f'{where}.proposers must be "members" or a non-empty list of member ids')
    out: list[str] = []
    for member_id in value:
        if not is_key_id(member_id):
            raise GovernanceError(f"{where}.proposers: {member_id!r} is not a member id (64 hex digits)")
        if member_id not in out:
            out.append(member_id)
    return out


def is_key_id(value: object) -> bool:
    return (
        isinstance(value, str)
        and len(value) == 64
        and all(c in "0123456789abcdef" for c in value)
    )


def validate_constitution(value: object) -> dict[str, Any]:
    """Check a constitution document (without `version`) and return it normalised."""
    if not isinstance(value, dict):
        raise GovernanceError("constitution must be an object")
    _only_keys(value, ("proposal_ttl_s", "replay_window_s", "auto_trust_nodes", "rules"), "constitution")
    ttl = _int(value.get("proposal_ttl_s", DEFAULT_PROPOSAL_TTL_S), "proposal_ttl_s", 60, MAX_TTL_S)
    window = _int(
        value.get("replay_window_s", DEFAULT_REPLAY_WINDOW_S), "replay_window_s", 1, MAX_TTL_S
    )
    auto_trust = value.get("auto_trust_nodes", False)
    if type(auto_trust) is not bool:
        raise GovernanceError("auto_trust_nodes must be true or false")
    rules = value.get("rules")
    if not isinstance(rules, dict) or DEFAULT not in rules:
        raise GovernanceError('constitution.rules must be an object with a "default" rule')
    out_rules: dict[str, Any] = {}
    for name, rule in rules.items():
        if name != DEFAULT and name not in ACTION_NAMES:
            raise GovernanceError(f"constitution.rules: unknown action {name!r}")
        where = f"rules.{name}"
        if not isinstance(rule, dict):
            raise GovernanceError(f"{where} must be an object")
        _only_keys(rule, ("proposers", "accept"), where)
        if "accept" not in rule:
            raise GovernanceError(f"{where}: accept is required")
        out_rules[name] = {
            "proposers": _validate_proposers(rule.get("proposers", PROPOSERS_MEMBERS), where),
            "accept": validate_accept(rule["accept"], where),
        }
    return {
        "proposal_ttl_s": ttl,
        "replay_window_s": window,
        "auto_trust_nodes": auto_trust,
        "rules": out_rules,
    }


def rule_for(constitution: Mapping[str, Any], action: str) -> dict[str, Any]:
    rules = constitution["rules"]
    return rules[action] if action in rules else rules[DEFAULT]


def may_propose(constitution: Mapping[str, Any], action: str, member_id: str) -> bool:
    proposers = rule_for(constitution, action)["proposers"]
    return proposers == PROPOSERS_MEMBERS or member_id in proposers


def accept_rules(constitution: Mapping[str, Any], actions: list[str]) -> list[dict[str, Any]]:
    """Distinct acceptance rules of a proposal's actions; all must hold (the strictest wins)."""
    out: list[dict[str, Any]] = []
    for action in actions:
        accept = rule_for(constitution, action)["accept"]
        if accept not in out:
            out.append(accept)
    return out


def rule_met(rule: Mapping[str, Any], approve_count: int, approve_weight: int, n: int, total: int) -> bool:
    """Whether approvals satisfy one rule among n active members of total weight `total`.

    k_of_n with fewer than k active members needs all of them, so removing members can never
    make governance impossible.
    """
    if n <= 0:
        return False
    kind = rule["rule"]
    if kind == "majority":
        return 2 * approve_count > n
    if kind == "unanimity":
        return approve_count >= n
    if kind == "k_of_n":
        return approve_count >= min(rule["k"], n)
    if kind == "weighted":
        return total > 0 and approve_weight * rule["den"] >= rule["num"] * total
    raise GovernanceError(f"unknown rule {kind!r}")


def evaluate(
    rules: list[dict[str, Any]], members: Mapping[str, Mapping[str, Any]], ballots: Mapping[str, str]
) -> str:
    """Accepted when every rule is met; Rejected once some rule can no longer be met; else Open.

    Only ballots of currently active members count, against the current active membership.
    """
    active = {mid: m for mid, m in members.items() if m.get("status") == ACTIVE}
    n = len(active)
    total = sum(m["weight"] for m in active.values())
    approvers = [mid for mid, vote in ballots.items() if vote == APPROVE and mid in active]
    rejecters = [mid for mid, vote in ballots.items() if vote == REJECT and mid in active]
    a_count, a_weight = len(approvers), sum(active[m]["weight"] for m in approvers)
    if all(rule_met(r, a_count, a_weight, n, total) for r in rules):
        return ACCEPTED
    best_count = n - len(rejecters)
    best_weight = total - sum(active[m]["weight"] for m in rejecters)
    if not all(rule_met(r, best_count, best_weight, n, total) for r in rules):
        return REJECTED
    return OPEN
