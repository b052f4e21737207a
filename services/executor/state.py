"""The executor's key-value state, with an overlay so a transaction applies all or nothing.

Maps hold JSON-able values. A transaction writes through `begin()`/`commit()`/`rollback()`; its
writes, in order, are what the write-set digest (and so the Merkle leaf) covers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

from conclavium.encoding import canonical_json

_DELETED = object()


class State:
    def __init__(self) -> None:
        self.maps: dict[str, dict[str, Any]] = {}
        self._pending: dict[tuple[str, str], Any] | None = None
        self.changed_maps: set[str] = set()

    def begin(self) -> None:
        self._pending = {}

    def commit(self) -> list[tuple[str, str, Any]]:
        """Apply the pending writes; returns them as (map, key, value or None for a delete)."""
        pending, self._pending = self._pending or {}, None
        writes: list[tuple[str, str, Any]] = []
        for (m, k), v in pending.items():
            if v is _DELETED:
                self.maps.get(m, {}).pop(k, None)
                writes.append((m, k, None))
            else:
                self.maps.setdefault(m, {})[k] = v
                writes.append((m, k, v))
            self.changed_maps.add(m)
        return writes

    def pending_writes(self) -> list[tuple[str, str, Any]]:
        """The transaction's writes so far, in order, without applying them."""
        return [(m, k, None if v is _DELETED else v) for (m, k), v in (self._pending or {}).items()]

    def rollback(self) -> None:
        self._pending = None

    def get(self, map_name: str, key: str) -> Any | None:
        if self._pending is not None:
            v = self._pending.get((map_name, key))
            if v is _DELETED:
                return None
            if v is not None:
                return v
        return self.maps.get(map_name, {}).get(key)

    def put(self, map_name: str, key: str, value: Any) -> None:
        if self._pending is None:
            self.maps.setdefault(map_name, {})[key] = value
            self.changed_maps.add(map_name)
        else:
            self._pending[(map_name, key)] = value

    def delete(self, map_name: str, key: str) -> None:
        if self._pending is None:
            self.maps.get(map_name, {}).pop(key, None)
            self.changed_maps.add(map_name)
        else:
            self._pending[(map_name, key)] = _DELETED

    def items(self, map_name: str) -> Iterator[tuple[str, Any]]:
        base = dict(self.maps.get(map_name, {}))
        if self._pending:
            for (m, k), v in self._pending.items():
                if m != map_name:
                    continue
                if v is _DELETED:
                    base.pop(k, None)
                else:
                    base[k] = v
        return iter(list(base.items()))


def write_digest(writes: list[tuple[str, str, Any]]) -> bytes:
    return hashlib.sha256(canonical_json([[m, k, v] for m, k, v in writes])).digest()
