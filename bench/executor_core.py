"""Executor core benchmark: `LedgerMachine.apply` in one process, no NATS, no disk.

Builds `--blocks` blocks of `--block-size` signed transactions (half of them sealed to the ledger's
transaction key, 100-byte values) with the chain builder of the executor's unit tests, then applies
them the way the executor does: the next block is pre-verified and opened ahead (signature threads,
opener process) while the current one executes. Prints µs per transaction of wall time and of the
event-loop thread. Isolates the executor's own cost from the rest of the ledger.

    python bench/executor_core.py [--blocks 40] [--block-size 500] [--verify-threads 1] [--openers 1]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "executor")]

from machine_harness import LEDGER, Chain, bootstrap  # noqa: E402

from conclavium.block import Entry, Kind  # noqa: E402
from conclavium.tx import make_body, sign  # noqa: E402
from services.executor.ledger_machine import LedgerMachine  # noqa: E402
from services.executor.sealed_openers import SealedOpenerPool  # noqa: E402
from services.executor.verifier import BatchVerifier  # noqa: E402


def build_blocks(chain: Chain, blocks: int, size: int) -> list[tuple[bytes, int]]:
    gen = chain.secrets.current
    out, k = [], 0
    for b in range(blocks):
        entries = []
        for _ in range(size):
            op = {"op": "put", "map": "public:t" if k % 2 else "private", "key": f"k{k}", "value": "x" * 100}
            body = make_body(LEDGER, chain.user.key_id, [op], chain.ts + 10 * (b + 1), tx_key=(gen.id, gen.tx_public))
            t = sign(chain.user, body)
            entries.append(Entry(Kind.TX, t.body, t.signature))
            k += 1
        out.append(chain.block(entries))
    return out


async def run(args: argparse.Namespace) -> None:
    chain = Chain()
    machine = LedgerMachine(LEDGER, BatchVerifier(args.verify_threads), secrets=chain.secrets)
    await bootstrap(chain, machine)
    blocks = build_blocks(chain, args.blocks, args.block_size)
    machine.openers = SealedOpenerPool(args.openers) if args.openers else None
    if machine.openers is not None:
        await machine.openers.open([])
    invalid = 0
    wall0, thread0 = time.perf_counter(), time.thread_time()
    for i, (raw, seq) in enumerate(blocks):
        ahead = asyncio.ensure_future(machine.preverify_blocks([blocks[i + 1][0]] if i + 1 < len(blocks) else []))
        _, out = await machine.apply(raw, seq)
        invalid += len(out.invalid)
        await ahead
    wall, thread = time.perf_counter() - wall0, time.thread_time() - thread0
    n = args.blocks * args.block_size
    print(
        f"{n / wall:,.0f} tx/s  {wall / n * 1e6:.1f} us/tx wall  {thread / n * 1e6:.1f} us/tx event-loop thread"
        f"  ({n} transactions, {invalid} invalid)"
    )
    if machine.openers is not None:
        machine.openers.close()
    if invalid:
        raise SystemExit(f"{invalid} transactions were invalid: the benchmark's workload is wrong")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--blocks", type=int, default=40)
    p.add_argument("--block-size", type=int, default=500)
    p.add_argument("--verify-threads", type=int, default=1)
    p.add_argument("--openers", type=int, default=1, help="opener processes (0: open in order, inline)")
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
