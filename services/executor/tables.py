"""Names of the tables the executor's core keeps in state, and what the core's modules share.

Governance tables (`public:gov.*`) are written by governance and node messages, system tables
(`public:sys.*`) by the core; application maps are the applications' own (`apps/`).
"""

from __future__ import annotations

from conclavium import governance

MEMBERS = "public:gov.members"
USERS = "public:gov.users"
NODES = "public:gov.nodes"
SERVICE = "public:gov.service"
MEASUREMENTS = "public:gov.measurements"
SNAPSHOT_DIGESTS = "public:sys.snapshots"
REKEY = "public:sys.rekey"
MAP_POLICIES = governance.model.MAP_POLICIES
# Keys of the SERVICE table.
TX_KEYS = "tx_keys"
SECRET_GENERATION = "secret_generation"
CONFIG = "config"
CERTIFICATE = "certificate"
DEFAULT_TX_VALIDITY_MS = 120_000


class NeedSecrets(Exception):
    """The block needs a generation of ledger secrets this node does not hold yet."""


class AppUnavailable(Exception):
    """An application cannot run an entry on this node now (a Sawtooth family whose TP is not
    registered here): a local fault, so the node stops before the block and applies it again later
    instead of deciding anything about the entry."""


class UnsupportedRules(Exception):
    """The ledger's active rules (version, or an application it runs) are not implemented by this
    executor: it stops before the block instead of computing another root."""
