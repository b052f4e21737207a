"""The executor's key-value state, with two overlays so that a block, and each entry in it, applies
all or nothing.

Maps hold JSON-able values. A block is applied between `begin_block()` and `commit_block()` (or
`rollback_block()`, which leaves the committed maps as they were); inside it, each entry writes
through `begin()`/`commit()`/`rollback()`. Reads see the entry's writes, then the block's, then the
committed maps. An entry's writes, in order, are what its write-set digest (and so its Merkle leaf)
covers; `savepoint()`/`rollback_entry()` undo an entry that failed even after its commit. Writes
outside an entry go to the block when one is open (block-level work such as expiring proposals),
else straight to the maps.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

from conclavium.encoding import canonical_json

_DELETED = object()
_ABSENT = object()


class State:
    def __init__(self) -> None:
        self.maps: dict[str, dict[str, Any]] = {}
        self._block: dict[str, dict[str, Any]] | None = None  # map -> key -> value or _DELETED
        self._block_deletes: set[str] = set()  # maps the block deletes from
        self._pending: dict[tuple[str, str], Any] | None = None
        # block writes since the savepoint: (the block's dict of that map, key, previous value)
        self._undo: list[tuple[dict[str, Any], str, Any]] | None = None
        self.changed_maps: set[str] = set()

    # --- the block ---------------------------------------------------------------------------

    def begin_block(self) -> None:
        self._block = {}
        self._block_deletes = set()
        self._pending = self._undo = None

    def block_token(self) -> object | None:
        """The block being applied, as an identity: a new object for every application of a block
        (a block applied again after a rollback gets another), for caches that must not outlive it."""
        return self._block

    def commit_block(self) -> None:
        """Apply every write of the block to the committed maps."""
        block, self._block = self._block or {}, None
        self._pending = self._undo = None
        for m, writes in block.items():
            target = self.maps.get(m)
            if m not in self._block_deletes:
                if writes:
                    if target is None:
                        target = self.maps[m] = {}
                    target.update(writes)
                continue
            for k, v in writes.items():
                if v is _DELETED:
                    if target is not None:
                        target.pop(k, None)
                else:
                    if target is None:
                        target = self.maps[m] = {}
                    target[k] = v

    def rollback_block(self) -> None:
        """Forget the block's writes. Caches keyed on `changed_maps` must be dropped by the caller:
        they may have been rebuilt from the block's writes."""
        self._block = None
        self._pending = self._undo = None

    def savepoint(self) -> None:
        """Mark the start of an entry in the block: `rollback_entry` undoes every write made since,
        committed or not (so an entry that fails after its commit leaves nothing behind either)."""
        self._pending = None
        self._undo = []

    def rollback_entry(self) -> None:
        self._pending = None
        if self._undo:
            self.changed_maps.update(self._block or ())  # caches built from undone writes are rebuilt
            for staged, k, previous in reversed(self._undo):
                if previous is _ABSENT:
                    del staged[k]
                else:
                    staged[k] = previous
        self._undo = [] if self._undo is not None else None

    # --- one entry -----------------------------------------------------------------------------

    def begin(self) -> None:
        self._pending = {}

    def commit(self) -> list[tuple[str, str, Any]]:
        """Apply the pending writes (to the block when one is open); returns them as (map, key,
        value or None for a delete)."""
        pending, self._pending = self._pending or {}, None
        writes: list[tuple[str, str, Any]] = []
        for (m, k), v in pending.items():
            writes.append((m, k, None if v is _DELETED else v))
            self._write(m, k, v)
        return writes

    def pending_writes(self) -> list[tuple[str, str, Any]]:
        """The transaction's writes so far, in order, without applying them."""
        return [(m, k, None if v is _DELETED else v) for (m, k), v in (self._pending or {}).items()]

    def rollback(self) -> None:
        self._pending = None

    # --- reads and writes ----------------------------------------------------------------------

    def get(self, map_name: str, key: str) -> Any | None:
        pending = self._pending
        if pending:
            v = pending.get((map_name, key), _ABSENT)
            if v is not _ABSENT:
                return None if v is _DELETED else v
        block = self._block
        if block:
            staged = block.get(map_name)
            if staged is not None:
                v = staged.get(key, _ABSENT)
                if v is not _ABSENT:
                    return None if v is _DELETED else v
        return self.maps.get(map_name, _EMPTY).get(key)

    def put(self, map_name: str, key: str, value: Any) -> None:
        if self._pending is None:
            self._write(map_name, key, value)
        else:
            self._pending[(map_name, key)] = value

    def delete(self, map_name: str, key: str) -> None:
        if self._pending is None:
            self._write(map_name, key, _DELETED)
        else:
            self._pending[(map_name, key)] = _DELETED

    def _write(self, m: str, k: str, v: Any) -> None:
        self.changed_maps.add(m)
        block = self._block
        if block is not None:
            staged = block.get(m)
            if staged is None:
                staged = block[m] = {}
            if self._undo is not None:
                self._undo.append((staged, k, staged.get(k, _ABSENT)))
            if v is _DELETED:
                self._block_deletes.add(m)
            staged[k] = v
        elif v is _DELETED:
            self.maps.get(m, _EMPTY).pop(k, None)
        else:
            self.maps.setdefault(m, {})[k] = v

    def items(self, map_name: str) -> Iterator[tuple[str, Any]]:
        base = dict(self.maps.get(map_name, _EMPTY))
        overlays: list[Any] = []
        if self._block and map_name in self._block:
            overlays.append(self._block[map_name].items())
        if self._pending:
            overlays.append((k, v) for (m, k), v in self._pending.items() if m == map_name)
        for overlay in overlays:
            for k, v in overlay:
                if v is _DELETED:
                    base.pop(k, None)
                else:
                    base[k] = v
        return iter(list(base.items()))


_EMPTY: dict[str, Any] = {}  # read only


def write_digest(writes: list[tuple[str, str, Any]]) -> bytes:
    return hashlib.sha256(canonical_json([[m, k, v] for m, k, v in writes])).digest()
