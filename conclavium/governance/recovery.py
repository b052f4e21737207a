"""Recovery in the governance tables: the share set in force, the open recovery and the shares
members submitted for it (`public:gov.recovery`). The cryptography is `conclavium/recovery.py`;
the executor writes the share set and opens and closes recoveries (node messages), members add
their shares with `recovery_share` documents, applied here.

Keys of the table: `shares` (the share set in force: id, threshold, generations, per member its
public key, encryption key, sealed share and digest, the wrapped secrets), `open` (the recovering
node and the members whose shares it was sent), `last` (the last completed recovery).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from conclavium.governance.model import RECOVERY, Context, GovernanceError, Tables, strict_json

SHARE_SET_KEY = "shares"
OPEN_KEY = "open"
LAST_KEY = "last"
MAX_BOX_CHARS = 1024


def share_set(tables: Tables) -> dict[str, Any] | None:
    return tables.get(RECOVERY, SHARE_SET_KEY)


def open_recovery(tables: Tables) -> dict[str, Any] | None:
    return tables.get(RECOVERY, OPEN_KEY)


def record_share(tables: Tables, payload: bytes, signer: str, ctx: Context) -> None:
    """A member's share for the open recovery, sealed to the recovering node (the ledger cannot
    read it; the node checks it against the set's digest). Refused: no recovery open, another
    node or share set, a signer who holds no share of the set, a second share from one member."""
    body = strict_json(payload)
    if not isinstance(body, dict) or sorted(body) != ["box", "node", "set"]:
        raise GovernanceError('a recovery share is {"set", "node", "box"}', "malformed_share")
    if not all(isinstance(body[k], str) for k in body):
        raise GovernanceError("recovery share fields are strings", "malformed_share")
    if len(body["box"]) > MAX_BOX_CHARS:
        raise GovernanceError("the sealed share is too long", "malformed_share")
    try:
        base64.b64decode(body["box"], validate=True)
    except (binascii.Error, ValueError):
        raise GovernanceError("the sealed share is not base64", "malformed_share") from None
    current = open_recovery(tables)
    if current is None:
        raise GovernanceError("no recovery is open", "no_recovery")
    if body["node"] != current["node"]:
        raise GovernanceError(
            f"the open recovery is node {current['node'][:16]}'s, not {body['node'][:16]}", "wrong_node"
        )
    if body["set"] != current["set"]:
        raise GovernanceError("the share is for another share set than the one in force", "stale_share_set")
    holders = (share_set(tables) or {}).get("members", {})
    if signer not in holders:
        raise GovernanceError(f"member {signer} holds no share of the set in force", "not_share_holder")
    if signer in current["shares"]:
        raise GovernanceError(f"member {signer} already submitted a share to this recovery", "duplicate_share")
    tables.put(RECOVERY, OPEN_KEY, {**current, "shares": {**current["shares"], signer: ctx.height}})
