"""A log filter's address and topic criteria, parsed once and matched the same way by the
executors (`eth_getLogs`, filters) and the gateway (`eth_subscribe` `logs`): what "a log matches"
means is specified here only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import jsonrpc as j


@dataclass(frozen=True)
class LogCriteria:
    addresses: frozenset[str] | None  # None: any address
    topics: tuple[frozenset[str] | None, ...]  # per position: None matches anything

    def matches(self, log: dict[str, Any]) -> bool:
        if self.addresses is not None and log["address"] not in self.addresses:
            return False
        topics = log["topics"]
        return all(want is None or (k < len(topics) and topics[k] in want) for k, want in enumerate(self.topics))


def parse(flt: dict[str, Any]) -> LogCriteria:
    """`address` (one or a list) and `topics` (at most 4 positions; each null, a topic or a list
    of alternatives) of a JSON-RPC filter object; raises RpcError with geth's kind of message."""
    raw_addr = flt.get("address")
    addresses = None
    if raw_addr is not None:
        items = raw_addr if isinstance(raw_addr, list) else [raw_addr]
        addresses = frozenset(j.parse_address(a) for a in items)
    raw = flt.get("topics")
    if raw is None:
        return LogCriteria(addresses, ())
    if not isinstance(raw, list) or len(raw) > 4:
        raise j.RpcError(j.INVALID_PARAMS, "invalid argument: topics is a list of at most 4 entries")
    topics: list[frozenset[str] | None] = []
    for t in raw:
        if t is None:
            topics.append(None)
        elif isinstance(t, list):
            topics.append(frozenset("0x" + j.parse_data(x, "topic", 32).hex() for x in t) if t else None)
        else:
            topics.append(frozenset(("0x" + j.parse_data(t, "topic", 32).hex(),)))
    return LogCriteria(addresses, tuple(topics))
