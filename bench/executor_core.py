"""Executor core benchmark: `LedgerMachine.apply` in one process, no NATS, no disk.

Builds `--blocks` blocks of `--block-size` entries with the chain builder of the executor's unit
tests, then applies them the way the executor does: the next block is pre-verified and opened ahead
(signature threads, opener process) while the current one executes. Prints µs per entry of wall
time, of the event-loop thread and of this process's CPU (all its threads): CPU time, unlike wall
time, stays put on a loaded host. Isolates the executor's own cost from the rest of the ledger.

`--workload`: `kv` signed key-value writes, half sealed to the ledger's transaction key, 100-byte
values; `public` the same, all public; `notary` notarisation requests of 2 inputs with their
tear-off, as `bench/run.py --protocol notary` sends them; `eth` ERC-20 transfers (EIP-1559, signed
raw transactions) from `--eth-holders` accounts, one each per round, as `bench/run.py --protocol eth`
sends them (the token is deployed and the holders funded in blocks that are not timed).

    python bench/executor_core.py [--workload kv|public|notary|eth] [--blocks 40] [--block-size 500]
                                  [--verify-threads 1] [--openers 1] [--eth-holders 3300]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "executor"), str(ROOT / "tests" / "notary")]

from machine_harness import LEDGER, Chain, bootstrap  # noqa: E402

from conclavium.apps import app_entry  # noqa: E402
from conclavium.block import Entry, Kind  # noqa: E402
from conclavium.tx import make_body, sign  # noqa: E402
from services.executor.ledger_machine import LedgerMachine  # noqa: E402
from services.executor.sealed_openers import SealedOpenerPool  # noqa: E402
from services.executor.verifier import BatchVerifier  # noqa: E402


def build_blocks(chain: Chain, blocks: int, size: int, workload: str, holders: int) -> list[tuple[bytes, int]]:
    if workload == "notary":
        return build_notary_blocks(chain, blocks, size)
    if workload == "eth":
        return build_eth_blocks(chain, blocks, size, holders)
    gen = chain.secrets.current
    out, k = [], 0
    for b in range(blocks):
        entries = []
        for _ in range(size):
            private = k % 2 == 0 and workload == "kv"
            op = {"op": "put", "map": "private" if private else "public:t", "key": f"k{k}", "value": "x" * 100}
            body = make_body(LEDGER, chain.user.key_id, [op], chain.ts + 10 * (b + 1), tx_key=(gen.id, gen.tx_public))
            t = sign(chain.user, body)
            entries.append(Entry(Kind.TX, t.body, t.signature))
            k += 1
        out.append(chain.block(entries))
    return out


def build_notary_blocks(chain: Chain, blocks: int, size: int) -> list[tuple[bytes, int]]:
    """Requests for transactions of 2 fresh inputs, an output and a command, with their tear-off."""
    from notary_support import corda_tx, enable_notary, fresh_ref

    from conclavium.notary import make
    from conclavium.notary.request import NOTARY_GROUPS

    out = [chain.block(enable_notary(chain.member, LEDGER, [chain.user.key_id], chain.ts // 1000))]
    for _ in range(blocks):
        entries = []
        for _ in range(size):
            inputs = [fresh_ref(0), fresh_ref(1)]
            wtx = corda_tx(LEDGER, inputs)
            req = make(chain.user, LEDGER, wtx.id.hex(), inputs, [], None, wtx.tear_off(NOTARY_GROUPS), chain.ts)
            entries.append(app_entry("notary", req.body, req.signature))
        out.append(chain.block(entries))
    return out


def build_eth_blocks(chain: Chain, blocks: int, size: int, holders: int) -> list[tuple[bytes, int]]:
    """Governance (the eth application, open senders, the deployer funded), the token's deployment
    and the holders' funding, then the timed transfers: every holder sends one per round."""
    import hashlib

    from bench import eth_workload as ew
    from conclavium.governance import documents

    chain_id = 1337
    w = ew.Workload(chain_id, bytes(31) + b"\x01", holders)
    w.sign_setup(ew.compile_token())
    deployer = "0x" + ew.address_of(w.deployer).hex()
    actions = [
        {"name": "set_applications", "args": {"applications": ["kv", "eth"]}},
        {"name": "set_eth_chain", "args": {"chain_id": chain_id, "senders": "open"}},
        {"name": "eth_alloc", "args": {"balances": {deployer: 10**20}}},
    ]
    at = chain.ts // 1000 + 1
    doc = documents.make_proposal(actions, chain.member, at, ledger=LEDGER)
    ballot = documents.make_ballot(hashlib.sha256(doc).hexdigest(), True, chain.member, at, ledger=LEDGER)
    out = [chain.block([Entry(Kind.GOV, doc, b""), Entry(Kind.GOV, ballot, b"")])]
    for i in range(0, len(w.setup), size):
        out.append(chain.block([app_entry("eth", raw, b"") for raw in w.setup[i : i + size]]))
    flat = [raw for part in w.sign_transfers(blocks * size, size) for raw in part]
    out += [chain.block([app_entry("eth", raw, b"") for raw in flat[i : i + size]]) for i in range(0, len(flat), size)]
    return out


async def run(args: argparse.Namespace) -> None:
    chain = Chain()
    machine = LedgerMachine(LEDGER, BatchVerifier(args.verify_threads), secrets=chain.secrets)
    await bootstrap(chain, machine)
    blocks = build_blocks(chain, args.blocks, args.block_size, args.workload, args.eth_holders)
    if args.workload == "notary":  # the governance block that enables the notary is not timed
        await machine.apply(*blocks.pop(0))
    if args.workload == "eth":  # governance, the deployment and the funding are not timed
        setup = len(blocks) - args.blocks
        for raw, seq in blocks[:setup]:
            await machine.apply(raw, seq)
        blocks = blocks[setup:]
    machine.openers = SealedOpenerPool(args.openers) if args.openers else None
    if machine.openers is not None:
        await machine.openers.open([])
    invalid = 0
    wall0, thread0, cpu0 = time.perf_counter(), time.thread_time(), time.process_time()
    for i, (raw, seq) in enumerate(blocks):
        ahead = asyncio.ensure_future(machine.preverify_blocks([blocks[i + 1][0]] if i + 1 < len(blocks) else []))
        _, out = await machine.apply(raw, seq)
        invalid += len(out.invalid)
        await ahead
    wall, thread = time.perf_counter() - wall0, time.thread_time() - thread0
    cpu = time.process_time() - cpu0
    n = args.blocks * args.block_size
    print(
        f"{args.workload}: {n / wall:,.0f} entries/s  {wall / n * 1e6:.1f} us/entry wall  "
        f"{thread / n * 1e6:.1f} us/entry event-loop thread  {cpu / n * 1e6:.1f} us/entry process CPU"
        f"  ({n} entries, {invalid} invalid)"
    )
    if machine.openers is not None:
        machine.openers.close()
    if invalid:
        raise SystemExit(f"{invalid} transactions were invalid: the benchmark's workload is wrong")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workload", choices=("kv", "public", "notary", "eth"), default="kv")
    p.add_argument("--eth-holders", type=int, default=3300, help="eth: token holders (bench/run.py's default)")
    p.add_argument("--blocks", type=int, default=40)
    p.add_argument("--block-size", type=int, default=500)
    p.add_argument("--verify-threads", type=int, default=1)
    p.add_argument("--openers", type=int, default=1, help="opener processes (0: open in order, inline)")
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
