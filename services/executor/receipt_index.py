"""Where committed blocks' receipt material lives once it leaves memory: SQLite in the data dir.

Per committed block: hash, root, quorum, timestamp, leaves (entry id, write digest), the
signatures that committed it and whether they cover the timestamp (rules version 4 on); per
transaction: its height and index. Writes are idempotent, so replaying blocks after a restart
rewrites the same rows. The file is a cache of what the ledger holds: a receipt served from it is
still verified by whoever receives it.
"""

from __future__ import annotations

import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import msgspec

_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder()


@dataclass
class CommittedBlock:
    height: int
    hash: bytes
    root: bytes
    quorum: int
    ts_ms: int
    leaves: list[tuple[bytes, bytes]]
    signatures: dict[str, bytes]
    timed: bool = False


class ReceiptIndex:
    """Writes go to SQLite on a background thread (SQLite releases the GIL), so inserting a block's
    rows never holds up execution; lookups see rows still in flight."""

    def __init__(self, path: Path | None) -> None:
        self.db = sqlite3.connect(str(path) if path else ":memory:", isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="receipts")
        self._writing: list[CommittedBlock] = []
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS blocks (height INTEGER PRIMARY KEY, hash BLOB, root BLOB, quorum INTEGER,"
            " ts INTEGER, leaves BLOB, sigs BLOB, timed INTEGER NOT NULL DEFAULT 0)"
        )
        if "timed" not in {row[1] for row in self.db.execute("PRAGMA table_info(blocks)")}:
            self.db.execute("ALTER TABLE blocks ADD COLUMN timed INTEGER NOT NULL DEFAULT 0")  # an older data dir
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS txs (id BLOB PRIMARY KEY, height INTEGER, idx INTEGER) WITHOUT ROWID"
        )
        self._pending: list[CommittedBlock] = []

    def add(self, block: CommittedBlock) -> None:
        self._pending.append(block)

    def flush(self) -> None:
        """Hand what was committed since the last flush to the writer thread (one transaction)."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        with self._lock:
            self._writing = self._writing + pending
        self._writer.submit(self._write, pending)

    def _write(self, pending: list[CommittedBlock]) -> None:
        with self._lock:
            self._insert(pending)
            written = {id(b) for b in pending}
            self._writing = [b for b in self._writing if id(b) not in written]

    def _insert(self, pending: list[CommittedBlock]) -> None:
        self.db.execute("BEGIN")
        self.db.executemany(
            "INSERT OR REPLACE INTO blocks VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    b.height,
                    b.hash,
                    b.root,
                    b.quorum,
                    b.ts_ms,
                    _enc.encode(b.leaves),
                    _enc.encode(b.signatures),
                    int(b.timed),
                )
                for b in pending
            ],
        )
        self.db.executemany(
            "INSERT OR REPLACE INTO txs VALUES (?, ?, ?)",
            [(eid, b.height, i) for b in pending for i, (eid, _) in enumerate(b.leaves)],
        )
        self.db.execute("COMMIT")

    def locate(self, eid: bytes) -> tuple[int, int] | None:
        with self._lock:
            for b in self._pending + self._writing:
                for i, (e, _) in enumerate(b.leaves):
                    if e == eid:
                        return b.height, i
            row = self.db.execute("SELECT height, idx FROM txs WHERE id = ?", (eid,)).fetchone()
        return (row[0], row[1]) if row else None

    def block(self, height: int) -> CommittedBlock | None:
        with self._lock:
            for b in self._pending + self._writing:
                if b.height == height:
                    return b
            row = self.db.execute(
                "SELECT height, hash, root, quorum, ts, leaves, sigs, timed FROM blocks WHERE height = ?", (height,)
            ).fetchone()
        if row is None:
            return None
        leaves = [(bytes(e), bytes(d)) for e, d in _dec.decode(row[5])]
        return CommittedBlock(row[0], row[1], row[2], row[3], row[4], leaves, dict(_dec.decode(row[6])), bool(row[7]))

    def height_of(self, block_hash: bytes) -> int | None:
        """The height of the committed block with this hash (a scan: for reads by block id)."""
        with self._lock:
            for b in self._pending + self._writing:
                if b.hash == block_hash:
                    return b.height
            row = self.db.execute("SELECT height FROM blocks WHERE hash = ?", (block_hash,)).fetchone()
        return int(row[0]) if row else None

    def latest_at_or_before(self, height: int) -> CommittedBlock | None:
        """The newest committed block at or below `height` (blocks without entries are not indexed:
        this is the one whose time and place an empty height inherits)."""
        with self._lock:
            pending = [b for b in self._pending + self._writing if b.height <= height]
            row = self.db.execute("SELECT MAX(height) FROM blocks WHERE height <= ?", (height,)).fetchone()
        best = max(pending, key=lambda b: b.height, default=None)
        if row is None or row[0] is None or (best is not None and best.height >= row[0]):
            return best
        return self.block(row[0])

    def close(self) -> None:
        self.flush()
        self._writer.shutdown(wait=True)
        self.db.close()
