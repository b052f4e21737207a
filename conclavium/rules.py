"""The versioned rule set: which deterministic execution rules a ledger runs, recorded in it.

Everything that decides a root (value domain, clock bound, node-message rules, commit rule, leaf
contents, which applications exist) belongs to a rules version. The active version is in the
ledger (`public:gov.service` key `rules`) and changes only by the governance action
`set_rules_version`, from an activation height on, so every executor switches at the same block.
An executor that does not implement the active version stops before that block instead of
computing another root (the executor's `UnsupportedRules`). A ledger without the record runs
version 1, the rules it was written with.

- 1: the rules of this ledger's first releases (value domain, clock bound, authenticated node
  messages); client entries are key-value transactions only.
- 2: the applications a ledger runs are a governance setting (`set_applications`); a client entry
  names its application and is Invalid `unknown_application` when the ledger does not run it.
- 3: commits need nodes of k distinct members (the consortium identity's threshold) and more than
  half of the nodes that can sign, counting only nodes an active member endorsed
  (docs/confidentiality.md, "Receipts that need k members"). Before it, every trusted node with a
  service certificate counted on its own and a configured quorum up to the nodes was used as is.
- 4: commit signatures cover the block's ledger time (`conclavium.block.statement`), so a receipt's
  time, by which a verifier decides whether each signer's endorsement was valid, is signed. Before
  it the time travelled beside the signatures and anyone relaying a receipt could change it.
"""

from __future__ import annotations

from typing import Any

from conclavium.apps import KV

RULES_KEY = "rules"
APPLICATIONS_KEY = "applications"
FIRST = 1
LATEST = 4
IMPLEMENTED: frozenset[int] = frozenset({1, 2, 3, 4})
APPLICATIONS_FROM = 2  # the first version in which applications are governed
MEMBER_COMMITS_FROM = 3  # the first version whose commit rule counts members
SIGNED_TIME_FROM = 4  # the first version whose commit signatures cover the ledger time


def record(tables: Any, service: str) -> dict[str, Any]:
    return tables.get(service, RULES_KEY) or {"version": FIRST}


def active(tables: Any, service: str) -> int:
    return int(record(tables, service)["version"])


def due(tables: Any, service: str, height: int) -> int | None:
    """The version that activates at `height` or before and is not yet active, if any."""
    upcoming = record(tables, service).get("next")
    if upcoming is not None and upcoming["from_height"] <= height:
        return int(upcoming["version"])
    return None


def applications(tables: Any, service: str, version: int | None = None) -> list[str]:
    """The applications the ledger runs (under `version`, by default the active one): before
    rules version 2 only the key-value one."""
    if (active(tables, service) if version is None else version) < APPLICATIONS_FROM:
        return [KV]
    return list(tables.get(service, APPLICATIONS_KEY) or [KV])
