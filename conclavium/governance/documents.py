"""SDK side: build signed governance documents and load proposal files.

Runs on a member's machine (the only place its private key lives). Payloads are canonical JSON
so the same proposal signed with Ed25519 always has the same bytes and the same proposal id.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conclavium import cose
from conclavium.crypto.keys import PrivateKey
from conclavium.governance.actions import validate_actions
from conclavium.governance.constitution import is_key_id
from conclavium.governance.engine import document_id
from conclavium.governance.model import (
    APPROVE,
    MSG_BALLOT,
    MSG_PROPOSAL,
    MSG_WITHDRAWAL,
    REJECT,
    GovernanceError,
    canonical_json,
    strict_json,
)

__all__ = [
    "DocumentRouteError",
    "document_id",
    "load_proposal_file",
    "make_ballot",
    "make_proposal",
    "make_withdrawal",
    "parse_proposal_json",
    "submission_path",
]


def _headers(msg_type: str, created_at: int, ledger: str, proposal_id: str | None = None) -> dict[str, Any]:
    if type(created_at) is not int or created_at < 0:
        raise GovernanceError("created_at must be a non-negative integer (seconds since the epoch)")
    if not isinstance(ledger, str) or not ledger:
        raise GovernanceError("a governance document must name its ledger (a non-empty ledger id)")
    headers: dict[str, Any] = {
        cose.HDR_MSG_TYPE: msg_type,
        cose.HDR_CREATED_AT: created_at,
        cose.HDR_LEDGER: ledger,
    }
    if proposal_id is not None:
        if not is_key_id(proposal_id):
            raise GovernanceError(f"proposal id must be 64 lowercase hex digits, got {proposal_id!r}")
        headers[cose.HDR_PROPOSAL_ID] = proposal_id
    return headers


def make_proposal(actions: list[dict[str, Any]], key: PrivateKey, created_at: int, *, ledger: str) -> bytes:
    """A signed proposal for `ledger`; actions are validated here too so mistakes surface before
    submission."""
    validate_actions(actions)
    return cose.sign1(canonical_json({"actions": actions}), key, _headers(MSG_PROPOSAL, created_at, ledger))


def make_ballot(
    proposal_id: str,
    approve: bool,
    key: PrivateKey,
    created_at: int,
    *,
    ledger: str,
    identity_signature: str | None = None,
) -> bytes:
    """A ballot; approving a proposal that changes the members, it carries the member's signature
    over the next consortium identity (`conclavium.consortium.signature_over`)."""
    vote = APPROVE if approve else REJECT
    body: dict[str, Any] = {"vote": vote}
    if identity_signature is not None:
        body["identity_signature"] = identity_signature
    return cose.sign1(canonical_json(body), key, _headers(MSG_BALLOT, created_at, ledger, proposal_id))


def make_withdrawal(proposal_id: str, key: PrivateKey, created_at: int, *, ledger: str) -> bytes:
    return cose.sign1(canonical_json({}), key, _headers(MSG_WITHDRAWAL, created_at, ledger, proposal_id))


def parse_proposal_json(text: str | bytes) -> list[dict[str, Any]]:
    """The actions of a proposal file `{"actions": [{"name": ..., "args": {...}}]}`, validated."""
    body = strict_json(text)
    if not isinstance(body, dict) or set(body) != {"actions"}:
        raise GovernanceError('a proposal file must be a JSON object with exactly one key, "actions"')
    validate_actions(body["actions"])
    return body["actions"]


def load_proposal_file(path: str | Path) -> list[dict[str, Any]]:
    return parse_proposal_json(Path(path).read_bytes())


class DocumentRouteError(ValueError):
    """A COSE_Sign1 document that is no governance document a gateway takes."""


def submission_path(parsed: cose.Sign1) -> str:
    """The gateway path that takes this signed document (proposal, ballot or withdrawal), so a
    document signed elsewhere (offline, by a member) is submitted as it is by anyone."""
    msg_type = parsed.protected.get(cose.HDR_MSG_TYPE)
    if msg_type == MSG_PROPOSAL:
        return "/v1/gov/proposals"
    pid = parsed.protected.get(cose.HDR_PROPOSAL_ID)
    if msg_type not in (MSG_BALLOT, MSG_WITHDRAWAL):
        raise DocumentRouteError(f"not a proposal, ballot or withdrawal (type {str(msg_type)[:32]!r})")
    if not isinstance(pid, str) or not is_key_id(pid):
        raise DocumentRouteError(f"a {msg_type} must name its proposal (64 lowercase hex digits)")
    return f"/v1/gov/proposals/{pid}/" + ("ballots" if msg_type == MSG_BALLOT else "withdraw")
