"""Kill -9 the active sequencer mid-stream with a standby running: the standby takes over after the
lease lapses and every acknowledged transaction is committed exactly once; a SIGTERM releases the
lease and the standby takes over at once. A register workload
runs alongside the load; its history is checked for linearizability and read-your-writes
(`history.py`), and kept as `history.json` in the test's tmp dir."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from fault_support import Load, ledger_last_seq, sequencer_roles, verify_exactly_once, wait_single_active
from register_workload import Registers

from conclavium.local.network import LocalNetwork, start_network
from conclavium.runtime import connect_nats

LEASE_TTL_S = 2.0


async def _fail_over(net: LocalNetwork, nc: Any, active: str, sig: int = signal.SIGKILL) -> tuple[str, float, float]:
    """Signal the active sequencer (kill -9 by default) and wait for the standby to take over and
    write a block; the stopped one is restarted (as a standby). Returns the new active one and both
    delays."""
    standby = next(n for n in net.procs if n.startswith("sequencer-") and n != active)
    proc = net.procs[active]
    proc.signal(sig)
    stopped_at = time.monotonic()
    seq_at_stop = await ledger_last_seq(nc, net.opt.ledger)
    takeover_s = first_block_s = None
    while first_block_s is None or takeover_s is None:
        now = time.monotonic() - stopped_at
        assert now < 20, f"no take-over after 20s: {await sequencer_roles(net)}"
        if takeover_s is None and (await sequencer_roles(net))[standby] == "active":
            takeover_s = now
        if first_block_s is None and await ledger_last_seq(nc, net.opt.ledger) > seq_at_stop:
            first_block_s = now
        await asyncio.sleep(0.02)
    assert proc.proc is not None
    code = await asyncio.to_thread(proc.proc.wait, 20)
    assert code == (0 if sig == signal.SIGTERM else -sig), f"{active} exited with {code}"
    await asyncio.to_thread(proc.start)
    return standby, takeover_s, first_block_s


@pytest.mark.parametrize(
    "kills",
    [1, pytest.param(6, marks=pytest.mark.long_faults)],
    ids=["once", "six-times"],
)
async def test_kill_active_sequencer_standby_takes_over(tmp_path: Path, kills: int) -> None:
    """Budget: about 40 s killed once (the default run), about 2.5 minutes six times in a row
    (`long_faults`, run by `./dev test-faults`)."""
    net = await asyncio.to_thread(start_network, tmp_path, sequencers=2, redis=True, sequencer_lease_ttl_s=LEASE_TTL_S)
    nc = await connect_nats(net.nats_url, "fault-test")
    try:
        active = await wait_single_active(net)
        load = Load(net, total=10_000 + 2_000 * kills, workers=16)
        task = asyncio.create_task(load.run())
        regs = Registers(net)
        regs_task = asyncio.create_task(regs.run())
        await load.wait_acked(800)

        delays = []
        for _ in range(kills):
            active, takeover_s, first_block_s = await _fail_over(net, nc, active)
            delays.append((takeover_s, first_block_s))
            await load.wait_acked(len(load.acked) + 1000)
            assert await wait_single_active(net) == active
        load.stop()
        regs.stop()
        await task
        await regs_task
        ok, maybe = regs.acked()
        report = await verify_exactly_once(net, {**load.acked, **dict.fromkeys(ok, 0.0)}, maybe=maybe)
        operations = await regs.check(tmp_path)
        assert await wait_single_active(net) == active
        took = ", ".join(f"active after {a:.2f}s, first block after {b:.2f}s" for a, b in delays)
        print(
            f"\nsequencer fail-over x{kills} (lease TTL {LEASE_TTL_S}s): {took}; load {len(load.acked)} tx in "
            f"{load.finished - load.started:.1f}s, {load.retries} client retries\n{report.summary()}\n"
            f"register history: {operations} operations {regs.outcomes()}, linearizable"
        )
        assert max(a for a, _ in delays) < LEASE_TTL_S + 1.5
    finally:
        await nc.close()
        await asyncio.to_thread(net.stop)


async def test_sigterm_releases_the_lease_and_the_standby_takes_over_at_once(tmp_path: Path) -> None:
    """Budget: about 45 s. With a 10 s lease, a SIGTERMed active sequencer appends the block in
    progress and releases the lease: the standby is active well before the TTL could lapse, and every
    acknowledged transaction is committed exactly once."""
    ttl = 10.0
    net = await asyncio.to_thread(start_network, tmp_path, sequencers=2, redis=True, sequencer_lease_ttl_s=ttl)
    nc = await connect_nats(net.nats_url, "fault-test")
    try:
        active = await wait_single_active(net)
        load = Load(net, total=20_000, workers=16)
        task = asyncio.create_task(load.run())
        await load.wait_acked(800)
        stopped = active
        active, takeover_s, first_block_s = await _fail_over(net, nc, active, signal.SIGTERM)
        await load.wait_acked(len(load.acked) + 1000)
        load.stop()
        await task
        assert "released the sequencer lease" in (net.dir / "logs" / f"{stopped}.log").read_text()
        report = await verify_exactly_once(net, load.acked)
        assert await wait_single_active(net) == active
        print(
            f"\nsequencer SIGTERM (lease TTL {ttl}s): standby active after {takeover_s:.2f}s, first block "
            f"after {first_block_s:.2f}s; {load.retries} client retries\n{report.summary()}"
        )
        # a lapse would take at least TTL - TTL/3 (the last renewal's age): this was the release
        assert takeover_s < ttl - ttl / 3 - 2, takeover_s
    finally:
        await nc.close()
        await asyncio.to_thread(net.stop)
