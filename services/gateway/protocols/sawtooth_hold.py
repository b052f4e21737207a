"""Batches held at the gateway until their family's transaction processor (TP) registers.

As in Sawtooth, a batch for an approved family whose TP has not registered yet waits as PENDING,
but here it waits before ordering: a block holding it would stop every executor without a TP at
that block (a liveness matter only, but a needless one). So `POST /batches` asks an executor
(`sawtooth_tp_families`, a signed query answer like every read) which of the BatchList's families
are approved and which of those have a TP registered on it; a BatchList with an approved family
without a TP, or with a family a held BatchList is waiting for (so that a family's batches keep
their order), is held here, in memory, instead of going into the intake. While any is held, the
executors are asked again every `POLL_S`; a BatchList whose families all have a TP (or are no
longer approved: the executors then refuse them as `unknown_family`, as for every unapproved
family) goes into the intake.

Bounds: at most `MAX_HELD` batches are held (beyond it, `POST /batches` is 503, code 31, with
Retry-After), each for at most `hold_s` seconds (`--sawtooth-hold-seconds`, 120); a BatchList
still waiting then is dropped, never ordered, and its batches' status here is INVALID with
`tp_unavailable` and the family in the message (remembered for `DROPPED_TTL_S`), so a client may
submit it again later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from conclavium.sawtooth.batch import ParsedBatch

from .. import metrics as m
from ..errors import ApiError

log = logging.getLogger(__name__)

MAX_HELD = 1000  # batches held at once
POLL_S = 0.5
DROPPED_MEMORY = 100_000
DROPPED_TTL_S = 600.0

Family = tuple[str, str]
Ask = Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]]


class HeldFull(Exception):
    """More batches than `MAX_HELD` would be held."""


@dataclass
class Held:
    batches: list[ParsedBatch]
    families: set[Family]
    since: float


def families_of(batches: list[ParsedBatch]) -> set[Family]:
    return {(t.family, t.version) for b in batches for t in b.txns}


class TpWait:
    """The held BatchLists, in arrival order, and the task that releases them."""

    def __init__(self, ask: Ask, submit: Callable[[list[ParsedBatch]], Awaitable[None]], hold_s: float) -> None:
        self.hold_s = hold_s  # how long a BatchList waits for its TPs before it is dropped
        self._ask = ask  # an executor's answer to a query, None when none answered
        self._submit = submit  # into the intake; raises ApiError when the intake is unavailable
        self.held: list[Held] = []
        self.ids: set[str] = set()
        self.dropped: OrderedDict[str, tuple[str, float]] = OrderedDict()  # batch id -> message, when
        self._task: asyncio.Task[None] | None = None

    async def must_hold(self, batches: list[ParsedBatch]) -> bool:
        """Whether these batches wait here: an approved family without a TP on the answering
        executor, or a family already waiting. No answer lets them through (the executors wait)."""
        fams = families_of(batches)
        if any(fams & h.families for h in self.held):
            return True
        answer = await self._ask({"type": "sawtooth_tp_families", "families": [list(f) for f in sorted(fams)]})
        return answer is not None and bool(_waiting(answer))

    def hold(self, batches: list[ParsedBatch]) -> None:
        """Keep the BatchList until its TPs register; `HeldFull` beyond the bound."""
        if len(self.ids) + len(batches) > MAX_HELD:
            raise HeldFull(f"{len(self.ids)} batches are already waiting for their transaction processors")
        self.taken_again(batches)
        self.held.append(Held(batches, families_of(batches), time.monotonic()))
        self.ids.update(b.id for b in batches)
        m.SAWTOOTH_HELD.set(len(self.ids))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._release())

    def taken_again(self, batches: list[ParsedBatch]) -> None:
        """Dropped batches submitted again are no longer answered INVALID here."""
        for b in batches:
            self.dropped.pop(b.id, None)

    def status(self, bid: str) -> dict[str, Any] | None:
        """This gateway's answer for a batch it holds (PENDING) or dropped (INVALID), else None."""
        if bid in self.ids:
            return {"id": bid, "status": "PENDING", "invalid_transactions": []}
        got = self.dropped.get(bid)
        if got is not None and time.monotonic() - got[1] < DROPPED_TTL_S:
            return {"id": bid, "status": "INVALID", "invalid_transactions": [{"id": "", "message": got[0]}]}
        return None

    async def _release(self) -> None:
        while self.held:
            await asyncio.sleep(POLL_S)
            try:
                await self._release_ready()
            except Exception:  # a bad answer must not end the task that releases every held batch
                log.exception("releasing held Sawtooth batches")

    async def _release_ready(self) -> None:
        now = time.monotonic()
        fams = set().union(*(h.families for h in self.held))
        answer = await self._ask({"type": "sawtooth_tp_families", "families": [list(f) for f in sorted(fams)]})
        waiting = _waiting(answer) if answer is not None else fams
        blocked: set[Family] = set()
        for h in list(self.held):
            missing = h.families & waiting
            if not missing and not h.families & blocked:
                try:
                    await self._submit(h.batches)
                except ApiError as e:
                    log.warning("held Sawtooth batches not submitted yet: %s", e)
                    return
                self._forget(h)
            elif now - h.since > self.hold_s:
                names = ", ".join(f"{n} {v}" for n, v in sorted(missing or h.families))
                msg = f"tp_unavailable: no transaction processor registered for {names} within {self.hold_s:g} s"
                for b in h.batches:
                    self.dropped[b.id] = (msg, now)
                while len(self.dropped) > DROPPED_MEMORY:
                    self.dropped.popitem(last=False)
                m.TX_REJECTED.labels("sawtooth_tp_unavailable").inc(len(h.batches))
                self._forget(h)
            else:
                blocked |= h.families  # a later BatchList of these families waits its turn

    def _forget(self, h: Held) -> None:
        self.held.remove(h)
        self.ids.difference_update(b.id for b in h.batches)
        m.SAWTOOTH_HELD.set(len(self.ids))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def _waiting(answer: dict[str, Any]) -> set[Family]:
    """The families of an answer that are approved and have no TP registered."""
    approved = {(n, v) for n, v in answer.get("approved", [])}
    registered = {(n, v) for n, v in answer.get("registered", [])}
    return approved - registered
