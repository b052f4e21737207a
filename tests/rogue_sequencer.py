"""A rogue writer of the ledger stream: tests append crafted blocks right after the tip, as a
malicious sequencer (or anyone who can publish to NATS) would, to check what executors do."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import msgspec
import nats

from conclavium import streams
from conclavium.block import Block, Entry, block_hash, decode_block, encode
from conclavium.local.network import LocalNetwork


async def append_after_tip(net: LocalNetwork, make: Callable[[Block, bytes], Block], attempts: int = 50) -> None:
    """Append make(tip block, tip hash) right after the current tip; retried while the real
    sequencer appends meanwhile (the expected-last-sequence condition refuses a stale append)."""
    nc = await nats.connect(net.nats_url)
    js = nc.jetstream()
    stream = streams.ledger_stream(net.opt.ledger)
    try:
        for _ in range(attempts):
            info = await js.stream_info(stream)
            last = await js.get_msg(stream, info.state.last_seq)
            block = make(decode_block(last.data), block_hash(last.data))
            try:
                await js.publish(
                    streams.ledger_subject(net.opt.ledger),
                    encode(block),
                    headers={"Nats-Expected-Last-Sequence": str(info.state.last_seq)},
                )
                return
            except nats.js.errors.APIError:
                await asyncio.sleep(0.05)
        raise AssertionError("could not append after the tip")
    finally:
        await nc.close()


def following(tip: Block, prev: bytes, entries: list[Entry], ts_ms: int | None = None) -> Block:
    """A block that extends `tip` (same format and ledger), holding `entries` and no signatures."""
    ts = ts_ms if ts_ms is not None else max(tip.ts_ms, int(time.time() * 1000))
    return msgspec.structs.replace(
        tip, height=tip.height + 1, prev=prev, ts_ms=ts, entries=entries, sigs=[], clocks=[]
    )


async def append_entries_after_tip(net: LocalNetwork, entries: list[Entry]) -> None:
    """Append a block holding `entries` right after the tip."""
    await append_after_tip(net, lambda tip, prev: following(tip, prev, entries))
