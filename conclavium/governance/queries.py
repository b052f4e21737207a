"""Read-only views of the governance tables for the executor, the gateway's API and the CLI."""

from __future__ import annotations

from typing import Any

from conclavium.governance.model import (
    ACTIVE,
    COMMIT_QUORUM_KEY,
    CONSTITUTION,
    CONSTITUTION_KEY,
    MEASUREMENTS,
    MEMBERS,
    NODE_TRUSTED,
    NODES,
    PROPOSALS,
    SERVICE,
    SERVICE_OPEN,
    SERVICE_STATE_KEY,
    USERS,
    Tables,
)


def constitution(tables: Tables) -> dict[str, Any] | None:
    return tables.get(CONSTITUTION, CONSTITUTION_KEY)


def proposal(tables: Tables, proposal_id: str) -> dict[str, Any] | None:
    found = tables.get(PROPOSALS, proposal_id)
    return None if found is None else {"proposal_id": proposal_id, **found}


def proposals(tables: Tables, state: str | None = None) -> list[dict[str, Any]]:
    """All proposals (optionally in one state), oldest first, ties by id."""
    rows = [{"proposal_id": pid, **p} for pid, p in tables.items(PROPOSALS) if state in (None, p["state"])]
    return sorted(rows, key=lambda p: (p["created_height"], p["proposal_id"]))


def members(tables: Tables, active_only: bool = False) -> dict[str, Any]:
    return {k: v for k, v in sorted(tables.items(MEMBERS)) if not active_only or v["status"] == ACTIVE}


def users(tables: Tables, active_only: bool = False) -> dict[str, Any]:
    return {k: v for k, v in sorted(tables.items(USERS)) if not active_only or v["status"] == ACTIVE}


def is_active_member(tables: Tables, key_id: str) -> bool:
    entry = tables.get(MEMBERS, key_id)
    return entry is not None and entry["status"] == ACTIVE


def is_active_user(tables: Tables, key_id: str) -> bool:
    """Whether `key_id` may send user transactions (the service must also be open)."""
    entry = tables.get(USERS, key_id)
    return entry is not None and entry["status"] == ACTIVE


def service_status(tables: Tables) -> str | None:
    state = tables.get(SERVICE, SERVICE_STATE_KEY)
    return None if state is None else state["status"]


def is_service_open(tables: Tables) -> bool:
    """Until open_service is accepted only governance transactions are accepted."""
    return service_status(tables) == SERVICE_OPEN


def commit_quorum(tables: Tables) -> int:
    return tables.get(SERVICE, COMMIT_QUORUM_KEY) or 1


def trusted_nodes(tables: Tables) -> dict[str, Any]:
    return {k: v for k, v in sorted(tables.items(NODES)) if v["status"] == NODE_TRUSTED}


def measurement_allowed(tables: Tables, platform: str, measurement: str, host_data: str | None) -> bool:
    """Whether attestation evidence with these values may join (host data pinned only if set)."""
    entry = tables.get(MEASUREMENTS, measurement.lower())
    if entry is None or entry["platform"] != platform:
        return False
    return entry["host_data"] is None or (host_data is not None and entry["host_data"] == host_data.lower())
