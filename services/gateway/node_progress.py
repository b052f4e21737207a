"""What the gateway observes of the running nodes, for status displays (the operator's node phases
and heights): the sequencer lease holder, and each executor's executed and committed height from
the status events it publishes. Untrusted, like the gateway: none of it is ledger state, and
receipts never depend on it."""

from __future__ import annotations

import json
import time
from typing import Any

from conclavium import streams

MAX_NODES = 1000
MAX_NAME = 253


class NodeProgress:
    def __init__(self) -> None:
        self.executors: dict[str, tuple[int, int, float]] = {}

    def observe(self, event: dict[str, Any]) -> None:
        """One executor status event: `n` its name, `x` its executed height, `h` its committed height."""
        name, executed, committed = event.get("n"), event.get("x"), event.get("h")
        if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME:
            return
        if type(executed) is not int or type(committed) is not int:
            return
        if name not in self.executors and len(self.executors) >= MAX_NODES:
            oldest = min(self.executors, key=lambda n: self.executors[n][2])
            del self.executors[oldest]
        self.executors[name] = (executed, committed, time.monotonic())

    def report(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            name: {"executed_height": x, "committed_height": h, "seen_seconds_ago": round(now - t, 3)}
            for name, (x, h, t) in sorted(self.executors.items())
        }


async def sequencer_lease(js: Any, ledger: str) -> dict[str, Any] | None:
    """The lease holder as the sequencer bucket says (None when no sequencer ever held it)."""
    try:
        kv = await js.key_value(streams.sequencer_bucket(ledger))
        entry = await kv.get(streams.SEQUENCER_LEASE_KEY)
        doc = json.loads(entry.value or b"{}")
    except Exception:  # no bucket or key yet, or a value no sequencer wrote
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("holder"), str):
        return None
    return {"holder": doc["holder"] or None, "revision": int(entry.revision or 0), "ttl_ms": doc.get("ttl_ms")}
