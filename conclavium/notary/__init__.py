"""Corda-style notarisation as a consortium service: the wire formats (`request`) and Corda's
transaction id and Merkle tear-off (`tearoff`). The executors' notary application
(`services/executor/apps/notary.py`) enforces uniqueness and time windows; docs/notary.md maps
each Corda notary concept to this one and says what is not compatible.
"""

from .request import (
    NOTARY_APP,
    Notarisation,
    Request,
    RequestError,
    TimeWindow,
    check_filtered,
    make,
    state_ref,
    statement_digest,
    transaction_groups,
    verify_notarisation,
)
from .tearoff import FilteredTransaction, TearOffError, WireTransaction

__all__ = [
    "NOTARY_APP",
    "FilteredTransaction",
    "Notarisation",
    "Request",
    "RequestError",
    "TearOffError",
    "TimeWindow",
    "WireTransaction",
    "check_filtered",
    "make",
    "state_ref",
    "statement_digest",
    "transaction_groups",
    "verify_notarisation",
]
