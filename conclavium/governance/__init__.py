"""Conclavium governance: members vote on signed proposals under a constitution kept in the ledger.

The engine is pure and deterministic (tables + document + block height/time in, table writes and
effects out), so every executor reaches the same governance state. See docs/governance.md.
"""

from conclavium.governance.engine import apply, document_id, expire, genesis, record_node_join
from conclavium.governance.model import (
    GOV_MAPS,
    Context,
    GovernanceError,
    MemoryTables,
    Outcome,
    StagedTables,
    Tables,
)

__all__ = [
    "GOV_MAPS",
    "Context",
    "GovernanceError",
    "MemoryTables",
    "Outcome",
    "StagedTables",
    "Tables",
    "apply",
    "document_id",
    "expire",
    "genesis",
    "record_node_join",
]
