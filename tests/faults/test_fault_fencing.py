"""Two sequencers that both believe they are active cannot fork the log: each append names the
stream sequence it expects to follow, so one wins, the other is refused, re-reads the tail and
appends on top of the winner."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import aiohttp
from fault_support import Load, read_log, verify_exactly_once, wait_single_active
from prometheus_client import REGISTRY

from conclavium.block import Entry, IntakeBatch, Kind, decode_intake, encode, entry_id
from conclavium.chain import Tip, next_block
from conclavium.local.network import start_network
from conclavium.local.processes import Process, free_port
from services.sequencer.sequencer import Sequencer, SequencerConfig


def _local_conflicts() -> float:
    return REGISTRY.get_sample_value("conclavium_sequencer_append_conflicts_total") or 0.0


class FakeIntake:
    """An intake message as the pull consumer hands it over; remembers whether it was acknowledged."""

    def __init__(self, entries: list[Entry]) -> None:
        self.data = encode(IntakeBatch(entries=entries))
        self.acked = False

    async def ack(self) -> None:
        self.acked = True

    async def nak(self) -> None:
        self.acked = False


def entries(tag: str, n: int) -> list[Entry]:
    return [Entry(Kind.TX, f"{tag}-{i}".encode(), b"sig") for i in range(n)]


async def test_a_deposed_sequencer_is_refused_and_resyncs(nats_url: str) -> None:
    ledger = "fence"
    a, b = (Sequencer(SequencerConfig(ledger=ledger, name=n, nats_url=nats_url, ignore_lease=True)) for n in ("a", "b"))
    await a.connect()
    await b.connect()
    try:
        await a._resync()
        await b._resync()
        conflicts = _local_conflicts()
        first, second = FakeIntake(entries("a", 3)), FakeIntake(entries("b", 2))
        await a._append([first])
        await b._append([second])
        assert _local_conflicts() == conflicts + 1, "b's stale append was not refused"
        assert (a.tip.height, b.tip.height) == (1, 2) and first.acked and second.acked

        msgs = {s: [FakeIntake(entries(f"{s.cfg.name}{k}", 5)) for k in range(20)] for s in (a, b)}

        async def drive(s: Sequencer) -> None:
            for msg in msgs[s]:
                await s._append([msg])

        await asyncio.gather(drive(a), drive(b))
        assert _local_conflicts() > conflicts + 1, "the two writers never collided"

        raw = await read_log(a.nc, ledger)
        tip, seen = Tip(), []
        for seq, data in enumerate(raw, start=1):
            block, h = next_block(tip, data, ledger)
            tip = Tip(block.height, h, seq, block.ts_ms)
            seen += [entry_id(e) for e in block.entries]
        expected = [entry_id(e) for msg in [first, second, *msgs[a], *msgs[b]] for e in decode_intake(msg.data).entries]
        assert sorted(seen) == sorted(expected), "an entry was lost or appended twice"
        assert tip.height == len(raw) == 42 and all(msg.acked for ms in msgs.values() for msg in ms)
    finally:
        await a.nc.close()
        await b.nc.close()


async def _conflicts(port: int) -> float:
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/metrics") as r:
        text = await r.text()
    found = re.search(r"^conclavium_sequencer_append_conflicts_total ([0-9.e+]+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


async def test_a_rogue_sequencer_ignoring_the_lease_cannot_fork_under_load(tmp_path: Path) -> None:
    net = await asyncio.to_thread(start_network, tmp_path, sequencers=1, redis=True)
    try:
        await wait_single_active(net)
        legit = net.procs["sequencer-0"]
        port = free_port()
        argv = list(legit.argv)
        argv[argv.index("--name") + 1] = "sequencer-rogue"
        argv[argv.index("--http-port") + 1] = str(port)
        rogue = Process("sequencer-rogue", [*argv, "--unsafe-ignore-lease"], net.dir / "logs/rogue.log", port=port)
        net.procs[rogue.name] = rogue
        await asyncio.to_thread(rogue.start)
        await asyncio.to_thread(rogue.wait_ready)

        load = Load(net, total=2000, workers=16, tag="fence")
        await load.run()
        report = await verify_exactly_once(net, load.acked)
        conflicts = await _conflicts(legit.port or 0) + await _conflicts(port)
        print(f"\ntwo writers: {conflicts:.0f} refused appends, no fork\n{report.summary()}")
        assert conflicts > 0
    finally:
        await asyncio.to_thread(net.stop)
