"""The application interface, and the context the core gives an application while it executes.

An application sees state only through the context's `state`, which is the block being staged:
what an entry writes between `state.begin()` and `state.commit()` is its write set, and an entry
that raises `TxError` leaves nothing behind (the core undoes its writes and records it Invalid with
the error's code). Execution must be deterministic: the same entries in the same order give the
same writes, digests and errors on every executor (no wall clock, no randomness, no local files).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from conclavium.block import Entry
from conclavium.crypto.keys import PublicKey

from ..enclave import LedgerSecrets
from ..sealed_openers import SealedOpenerPool
from ..state import State

# (key, signature, signed bytes, signer id) for the batch verifier; None: checked in order.
SignatureJob = tuple[PublicKey, bytes, bytes, str]
# Result of a signature checked ahead: (signer id assumed, verdict), or None.
Verdict = tuple[str, bool] | None


class QueryError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def not_behind(machine: Any, req: dict[str, Any]) -> None:
    """Read-your-writes: a caller that saw its write at height h asks for a state at least that new."""
    wanted = req.get("min_height")
    if isinstance(wanted, int) and machine.tip.height < wanted:
        raise QueryError("behind", f"this executor has not reached height {wanted} yet")


@dataclass(frozen=True)
class Namespaces:
    """The map-name prefixes an application writes: public maps are readable by anyone known
    and their digests are plain; private maps are sealed in transit and keyed in digests."""

    public: tuple[str, ...]
    private: tuple[str, ...]


class Context(Protocol):
    """What the core offers an application (the `LedgerMachine` itself provides it)."""

    ledger: str
    state: State
    block_time: int  # the block's ledger time (ledger_clock.py): every time check uses it
    block_height: int  # the block's height
    block_prev: bytes  # the previous block's hash
    secrets: LedgerSecrets | None  # this node's ledger secrets (None before it holds them)
    openers: SealedOpenerPool | None  # worker processes that open sealed payloads ahead

    def config(self, name: str, default: Any = None) -> Any: ...

    def participant_keys(self) -> dict[str, PublicKey]: ...

    def may_write(self, caller: str, map_name: str, key: str | None = None) -> bool: ...

    def open_sealed(self, key_id: str, box: bytes, info: bytes) -> bytes: ...

    def private_digest(self, writes: list[tuple[str, str, Any]]) -> bytes: ...

    def entry_dated(self, ts_ms: int) -> None:
        """The entry's own timestamp: the replay window keeps its id until then + validity."""


class Application:
    """One application. Subclasses set `name` (the name entries carry) and `namespaces`."""

    name: ClassVar[str]
    namespaces: ClassVar[Namespaces]

    def signature_jobs(self, ctx: Context, entries: list[Entry]) -> list[SignatureJob | None]:
        """Signatures the core may verify ahead, in a batch on its threads; the verdict reaches
        `execute` as `pre`. Default: none (the application verifies in `execute`)."""
        return [None] * len(entries)

    async def prepare(self, ctx: Context, entries: list[Entry]) -> None:
        """Work ahead of execution on entries not applied yet (a cache: whatever fails here is
        done again in order). Default: nothing."""

    def needs_secrets(self, ctx: Context, entry: Entry, known_keys: set[str]) -> str | None:
        """The ledger key (one of `known_keys`) this entry needs and the node does not hold."""
        return None

    def execute(self, ctx: Context, entry: Entry, pre: Verdict) -> bytes:
        """Check and execute one entry; returns its write digest. Raises TxError if Invalid."""
        raise NotImplementedError

    def queries(self) -> dict[str, Callable[[Any, dict[str, Any]], dict[str, Any]]]:
        """Query handlers by query type: `handler(machine, request) -> reply`."""
        return {}

    def snapshot(self, state: State) -> Any:
        """What a snapshot needs besides the application's maps (None: nothing)."""
        return None
