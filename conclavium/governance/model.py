"""Governance data types: map names, the table protocol, the block context and outcomes.

The engine never touches storage directly; it reads and writes JSON-able values through the
`Tables` protocol so that the executor can back it with its key-value store and tests with a dict.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

MEMBERS = "public:gov.members"
USERS = "public:gov.users"
NODES = "public:gov.nodes"
MEASUREMENTS = "public:gov.measurements"
CONSTITUTION = "public:gov.constitution"
PROPOSALS = "public:gov.proposals"
SERVICE = "public:gov.service"
MAP_POLICIES = "public:gov.map_policies"
CONSORTIUM = "public:gov.consortium"  # identity version (8 digits) -> signed identity document
RECOVERY = "public:gov.recovery"  # share set, open recovery, submitted shares (conclavium/recovery.py)

GOV_MAPS: tuple[str, ...] = (
    MEMBERS,
    USERS,
    NODES,
    MEASUREMENTS,
    CONSTITUTION,
    PROPOSALS,
    SERVICE,
    MAP_POLICIES,
    RECOVERY,
    CONSORTIUM,
)

CONSTITUTION_KEY = "current"
SERVICE_STATE_KEY = "state"
COMMIT_QUORUM_KEY = "commit_quorum"
NODE_POLICY_KEY = "node_policy"
SERVICE_CONFIG_KEY = "config"
NOTARY_PARTIES_KEY = "notary_parties"  # who may request notarisations (conclavium.notary)
SAWTOOTH_FAMILIES_KEY = "sawtooth_families"  # the Sawtooth transaction families the ledger runs
RECOVERY_THRESHOLD_KEY = "recovery_threshold"
CONSORTIUM_KEY = "consortium"  # SERVICE key: the current signed consortium identity document

ACTIVE = "Active"
REMOVED = "Removed"

OPEN = "Open"
ACCEPTED = "Accepted"
REJECTED = "Rejected"
WITHDRAWN = "Withdrawn"
EXPIRED = "Expired"
FAILED = "Failed"
PROPOSAL_STATES: tuple[str, ...] = (OPEN, ACCEPTED, REJECTED, WITHDRAWN, EXPIRED, FAILED)

SERVICE_OPENING = "Opening"
SERVICE_OPEN = "Open"

NODE_PENDING = "Pending"
NODE_TRUSTED = "Trusted"
NODE_RETIRED = "Retired"

MSG_PROPOSAL = "proposal"
MSG_BALLOT = "ballot"
MSG_WITHDRAWAL = "withdrawal"
MSG_RECOVERY_SHARE = "recovery_share"  # a member's share for a recovering node (governance/recovery.py)
MSG_NODE_ENDORSEMENT = "node_endorsement"  # a member's endorsement of its node (conclavium.consortium)
MSG_TYPES: tuple[str, ...] = (MSG_PROPOSAL, MSG_BALLOT, MSG_WITHDRAWAL, MSG_RECOVERY_SHARE, MSG_NODE_ENDORSEMENT)

APPROVE = "approve"
REJECT = "reject"

APPLIED = "Applied"
INVALID = "Invalid"


class Tables(Protocol):
    """The executor's key-value store as the engine sees it; values are JSON-able."""

    def get(self, map: str, key: str) -> Any | None: ...

    def put(self, map: str, key: str, value: Any) -> None: ...

    def delete(self, map: str, key: str) -> None: ...

    def items(self, map: str) -> Iterable[tuple[str, Any]]: ...


class GovernanceError(ValueError):
    """A governance document or action that must be refused; the message is the reason and `code`
    the machine-readable reason an Invalid transaction reports."""

    def __init__(self, message: str, code: str = "governance_refused") -> None:
        super().__init__(message)
        self.code = code


class MemoryTables:
    """Dict-backed `Tables` for tests and tools; copies values so callers cannot alias state."""

    def __init__(self) -> None:
        self.maps: dict[str, dict[str, Any]] = {}

    def get(self, map: str, key: str) -> Any | None:
        value = self.maps.get(map, {}).get(key)
        return copy.deepcopy(value)

    def put(self, map: str, key: str, value: Any) -> None:
        self.maps.setdefault(map, {})[key] = copy.deepcopy(value)

    def delete(self, map: str, key: str) -> None:
        self.maps.get(map, {}).pop(key, None)

    def items(self, map: str) -> Iterator[tuple[str, Any]]:
        for key, value in list(self.maps.get(map, {}).items()):
            yield key, copy.deepcopy(value)

    def canonical(self) -> bytes:
        """A canonical serialisation of every map, to compare executors' states."""
        return canonical_json({m: dict(sorted(v.items())) for m, v in sorted(self.maps.items())})


_DELETED = object()


class StagedTables:
    """Buffers writes over a base `Tables`; `commit` applies them, dropping it discards them.

    This is what makes a governance document all-or-nothing: an Invalid document or a failing
    multi-action proposal leaves the base tables untouched.
    """

    def __init__(self, base: Tables) -> None:
        self.base = base
        self.writes: dict[str, dict[str, Any]] = {}

    def get(self, map: str, key: str) -> Any | None:
        staged = self.writes.get(map, {})
        if key in staged:
            value = staged[key]
            return None if value is _DELETED else copy.deepcopy(value)
        return copy.deepcopy(self.base.get(map, key))

    def put(self, map: str, key: str, value: Any) -> None:
        self.writes.setdefault(map, {})[key] = copy.deepcopy(value)

    def delete(self, map: str, key: str) -> None:
        self.writes.setdefault(map, {})[key] = _DELETED

    def items(self, map: str) -> Iterator[tuple[str, Any]]:
        staged = self.writes.get(map, {})
        for key, value in self.base.items(map):
            if key not in staged:
                yield key, copy.deepcopy(value)
        for key, value in staged.items():
            if value is not _DELETED:
                yield key, copy.deepcopy(value)

    def commit(self) -> None:
        for map, entries in self.writes.items():
            for key, value in entries.items():
                if value is _DELETED:
                    self.base.delete(map, key)
                else:
                    self.base.put(map, key, value)
        self.writes = {}


@dataclass(frozen=True)
class Context:
    """Where in the ledger a document is applied: block height and block time (never wall clock),
    and the ledger's id, which every document must name (None only where no document is applied)."""

    height: int
    timestamp_ms: int
    ledger: str | None = None


@dataclass
class Outcome:
    """What applying one governance document did (or why it was refused)."""

    status: str
    reason: str | None = None
    code: str | None = None  # machine-readable reason of a refusal (GovernanceError.code)
    proposal_id: str | None = None
    proposal_state: str | None = None
    effects: list[dict[str, Any]] = field(default_factory=list)
    msg_type: str | None = None
    signer: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == APPLIED


def canonical_json(value: Any) -> bytes:
    """Deterministic JSON bytes: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _reject_float(text: str) -> Any:
    raise GovernanceError(f"floating-point numbers are not allowed ({text})")


def _reject_constant(text: str) -> Any:
    raise GovernanceError(f"{text} is not allowed")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise GovernanceError(f"duplicate JSON key {key!r}")
        out[key] = value
    return out


def strict_json(data: bytes | str) -> Any:
    """Parse JSON refusing floats, NaN/Infinity and duplicate keys, so all executors agree."""
    try:
        return json.loads(
            data,
            parse_float=_reject_float,
            parse_constant=_reject_constant,
            object_pairs_hook=_no_duplicates,
        )
    except GovernanceError:
        raise
    except (ValueError, RecursionError) as e:
        raise GovernanceError(f"payload is not valid JSON: {e}") from e


ACTION_NAMES: tuple[str, ...] = (
    "set_member",
    "remove_member",
    "set_user",
    "remove_user",
    "allow_measurement",
    "disallow_measurement",
    "trust_node",
    "retire_node",
    "set_constitution",
    "rotate_ledger_secret",
    "open_service",
    "set_commit_quorum",
    "set_map_policy",
    "set_node_policy",
    "set_rules_version",
    "set_applications",
    "set_notary_parties",
    "set_recovery_threshold",
    "set_eth_chain",
    "eth_alloc",
    "eth_register",
    "set_sawtooth_families",
    "set_consortium_identity",
    "sawtooth_register",
    "set_quorum_party",
)
