"""The active sequencer's lease: one key in the sequencer KV bucket, renewed by compare-and-set.

No clocks are compared between replicas. The holder rewrites the key every TTL/3 with the
revision it last wrote as the expected one; it counts its lease as valid until TTL after it
*sent* its last successful renewal. A standby remembers when it first saw the current revision;
if that revision is still the latest a TTL later (by its own monotonic clock), the holder has
stopped renewing, and the standby claims the key with a compare-and-set on that revision. Only
one claimant can win, and the standby first saw the revision after it was written, so the old
holder's own deadline has passed before anyone else may take over. Even if a holder kept
appending past its deadline, the ledger stream's expected-last-sequence check refuses its block.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from conclavium import streams

log = logging.getLogger("conclavium.sequencer.lease")

LEASE_KEY = streams.SEQUENCER_LEASE_KEY


@dataclass
class LeaseView:
    """What this replica last saw of the lease key."""

    revision: int = 0
    holder: str = ""
    ttl_s: float = 0.0
    seen_at: float = 0.0
    incarnation: str = ""


class Lease:
    """Acquire, renew and release the lease; `valid()` is what gates every append."""

    def __init__(self, kv: Any, name: str, ttl_s: float) -> None:
        self.kv = kv
        self.name = name
        self.ttl_s = ttl_s
        self.revision = 0
        self.deadline = 0.0
        self.term = 0
        self.incarnation = secrets.token_hex(8)
        self.view = LeaseView()

    @property
    def renew_every_s(self) -> float:
        return self.ttl_s / 3

    @property
    def poll_every_s(self) -> float:
        return min(0.25, self.ttl_s / 8)

    def valid(self) -> bool:
        return time.monotonic() < self.deadline

    def _value(self, holder: str) -> bytes:
        doc = {"holder": holder, "ttl_ms": int(self.ttl_s * 1000), "incarnation": self.incarnation if holder else ""}
        return json.dumps(doc).encode()

    async def _write(self, last: int, holder: str) -> int:
        if last == 0:
            return int(await self.kv.create(LEASE_KEY, self._value(holder)))
        return int(await self.kv.update(LEASE_KEY, self._value(holder), last=last))

    async def renew(self) -> bool:
        """Extend the lease; False once another replica owns it. Transport errors propagate
        and leave the deadline where it was, so the lease lapses on its own."""
        sent = time.monotonic()
        try:
            self.revision = await self._write(self.revision, self.name)
        except KeyWrongLastSequenceError:
            await self.observe()
            if self.view.incarnation == self.incarnation and self.view.revision != self.revision:
                # An earlier renewal timed out but was stored: the latest revision is still ours.
                self.revision = self.view.revision
                return await self.renew()
            self.deadline = 0.0
            log.warning("lost the sequencer lease: %r wrote it", self.view.holder)
            return False
        self._held(sent)
        return True

    def _held(self, sent: float) -> None:
        """Our own write counts as seen when it was sent, so after a lapse (NATS down) this replica
        may reclaim its own unchanged revision without waiting a further TTL."""
        self.deadline = sent + self.ttl_s
        self.view = LeaseView(self.revision, self.name, self.ttl_s, sent, self.incarnation)

    async def observe(self) -> None:
        """Read the key and note when its revision changed, by this replica's clock."""
        now = time.monotonic()
        try:
            entry = await self.kv.get(LEASE_KEY)
        except KeyNotFoundError:
            self.view = LeaseView(0, "", 0.0, now)
            return
        if entry.revision != self.view.revision:
            try:
                doc = json.loads(entry.value or b"{}")
            except ValueError:
                doc = {}
            if not isinstance(doc, dict):
                doc = {}
            ttl = float(doc.get("ttl_ms", 0)) / 1000
            self.view = LeaseView(
                entry.revision, str(doc.get("holder", "")), ttl or self.ttl_s, now, str(doc.get("incarnation", ""))
            )

    def claimable(self) -> bool:
        """The key is absent, released, written last by this very process (a renewal whose answer
        was lost: nobody else can have taken over since), or its revision has not moved for a TTL."""
        v = self.view
        if v.revision == 0 or not v.holder or v.incarnation == self.incarnation:
            return True
        return time.monotonic() - v.seen_at >= max(v.ttl_s, self.ttl_s)

    async def try_acquire(self) -> bool:
        """Claim the lease with compare-and-set on the revision last seen; True if this replica won."""
        await self.observe()
        if not self.claimable():
            return False
        sent = time.monotonic()
        try:
            self.revision = await self._write(self.view.revision, self.name)
        except KeyWrongLastSequenceError:
            return False
        previous = self.view.holder
        self._held(sent)
        self.term += 1
        log.info("acquired the sequencer lease (term %d, previous holder %r)", self.term, previous)
        return True

    async def release(self) -> None:
        """Hand the lease back on a clean shutdown so a standby takes over at once."""
        if not self.valid():
            return
        self.deadline = 0.0
        try:
            await self.kv.update(LEASE_KEY, self._value(""), last=self.revision)
        except KeyWrongLastSequenceError:
            return
        log.info("released the sequencer lease")
