"""Governance documents in execution: proposals, ballots and withdrawals (entries of kind GOV).

The rules themselves live in `conclavium.governance`; this module applies a document to the block
being staged and turns what it enacted into the core's own records (a pending ledger-secret
rotation), as a part of `LedgerMachine` (a mixin).
"""

from __future__ import annotations

from conclavium import governance
from conclavium.block import Block, Entry
from conclavium.tx import TxError

from .outcome import BlockOutcome
from .state import write_digest
from .tables import REKEY
from .views import TableViews


class GovernanceEntries(TableViews):
    ledger: str
    block_time: int

    def _execute_governance(self, entry: Entry, block: Block, out: BlockOutcome) -> bytes:
        if not self.genesis_done:
            raise TxError("no_service", "the service has no genesis yet")
        self.state.begin()
        outcome = governance.apply(
            self.state, entry.data, governance.Context(block.height, self.block_time, self.ledger)
        )
        if outcome.status != "Applied":
            self.state.rollback()
            raise TxError(outcome.code or "governance_refused", outcome.reason or "refused")
        out.governance.append(outcome)
        for effect in outcome.effects:
            if effect.get("type") == "rotate_ledger_secret":
                self.state.put(REKEY, "pending", {"proposal_id": effect.get("proposal_id"), "height": block.height})
        return write_digest(self.state.commit())
