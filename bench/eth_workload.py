"""The Ethereum workload of `bench/run.py --protocol eth`: ERC-20 transfers from many accounts,
signed ahead of the clock, sent as `eth_sendRawTransaction` (JSON-RPC batches or one per request);
the same signed transactions replayed on anvil in the same run (the anchor); and the ceiling of
what each executor must do per transfer (sender recovery, Keccak, RLP, and the EVM run).

Ordering: a sender's transactions must reach the ledger in nonce order (there is no transaction
pool). Each round gives every sender one transfer, a sender always sits in the same batch of a
round, and a round has more batches than the clients can have in flight, so a sender's next batch
is taken only once its previous one was committed.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing as mp
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import coincurve
import orjson
import rlp

from conclavium.eth.hashing import keccak256
from conclavium.eth.tx import decode

ROOT = Path(__file__).resolve().parent.parent
NODE_MODULES = ROOT / ".tools" / "eth-js" / "node_modules"
CONTRACTS = ROOT / "tests" / "eth" / "contracts"
TRANSFER = bytes.fromhex("a9059cbb")
ENTRY_PREFIX = b"eth\x00"  # conclavium.apps: the entry's data is the application name, NUL, payload
TRANSFER_GAS = 100_000
SETUP_WAIT_S = 900.0  # anvil mines thousands of transfers one by one; slow on a loaded host


def compile_token() -> str:
    """The ERC-20's creation bytecode, compiled offline with solc-js (scripts/install-tools.sh)."""
    if shutil.which("node") is None or not (NODE_MODULES / "solc").is_dir():
        raise SystemExit("--protocol eth needs the npm tools: run scripts/install-tools.sh")
    out = subprocess.run(
        ["node", str(CONTRACTS / "compile.js"), str(NODE_MODULES), str(CONTRACTS / "Token.sol")],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return str(json.loads(out.stdout)["Token"]["bytecode"])


def address_of(key: bytes) -> bytes:
    return keccak256(coincurve.PrivateKey(key).public_key.format(compressed=False)[1:])[12:]


def sign_1559(key: bytes, chain_id: int, nonce: int, to: bytes | None, data: bytes, gas: int) -> bytes:
    """A gas-free EIP-1559 transaction, signed (libsecp256k1 signatures are low-s, as EIP-2 wants)."""
    fields = [chain_id, nonce, 0, 0, gas, to or b"", 0, data, []]
    digest = keccak256(b"\x02" + rlp.encode(fields))
    sig = coincurve.PrivateKey(key).sign_recoverable(digest, hasher=None)
    r, s, v = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:64], "big"), sig[64]
    return b"\x02" + rlp.encode([*fields, v, r, s])


def transfer_data(to: bytes, amount: int) -> bytes:
    return TRANSFER + to.rjust(32, b"\x00") + amount.to_bytes(32, "big")


def entry_id(raw: bytes) -> bytes:
    return hashlib.sha256(ENTRY_PREFIX + raw).digest()


def call(url: str, method: str, *params: Any) -> Any:
    body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})
    req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        reply = orjson.loads(r.read())
    if "error" in reply:
        raise RuntimeError(f"{method}: {reply['error']}")
    return reply["result"]


def send_all(url: str, raws: list[bytes], batch: int = 100) -> None:
    """Send in order, one JSON-RPC batch at a time; raise on any refusal."""
    for i in range(0, len(raws), batch):
        calls = [
            {"jsonrpc": "2.0", "id": j, "method": "eth_sendRawTransaction", "params": ["0x" + raw.hex()]}
            for j, raw in enumerate(raws[i : i + batch])
        ]
        req = urllib.request.Request(url, orjson.dumps(calls), {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            answers = orjson.loads(r.read())
        bad = [a["error"] for a in answers if "error" in a]
        if bad:
            raise RuntimeError(f"refused: {bad[:3]}")


def wait_receipt(url: str, raw: bytes, timeout: float = 120.0) -> dict[str, Any]:
    tx_hash = "0x" + keccak256(raw).hex()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = call(url, "eth_getTransactionReceipt", tx_hash)
        if r is not None:
            return dict(r)
        time.sleep(0.05)
    raise TimeoutError(f"no receipt for {tx_hash}")


class Workload:
    """The token, its holders and the signed transactions of one benchmark run."""

    def __init__(self, chain_id: int, deployer: bytes, senders: int) -> None:
        self.chain_id = chain_id
        self.deployer = deployer
        self.keys = [os.urandom(32) for _ in range(senders)]
        self.addresses = [address_of(k) for k in self.keys]
        self.token = keccak256(rlp.encode([address_of(deployer), 0]))[12:]  # the deployer's first creation
        self.setup: list[bytes] = []
        self.transfers: list[bytes] = []

    def sign_setup(self, bytecode: str) -> None:
        supply = 10**30
        deploy = sign_1559(
            self.deployer, self.chain_id, 0, None, bytes.fromhex(bytecode[2:]) + supply.to_bytes(32, "big"), 3_000_000
        )
        funding = [
            sign_1559(self.deployer, self.chain_id, i + 1, self.token, transfer_data(a, 10**24), TRANSFER_GAS)
            for i, a in enumerate(self.addresses)
        ]
        self.setup = [deploy, *funding]

    def sign_transfers(self, total: int, batch: int) -> list[list[bytes]]:
        """`total` transfers (rounded up to whole batches) in request order, signed on every core."""
        rounds = math.ceil(total / len(self.keys))
        jobs = [(self.keys, self.addresses, self.chain_id, self.token, r, r * 7919) for r in range(rounds)]
        with mp.get_context("fork").Pool(max(1, os.cpu_count() or 1)) as pool:
            signed = pool.map(_sign_round, jobs)
        flat = [raw for part in signed for raw in part][: max(total, batch)]
        flat = flat[: math.ceil(len(flat) / batch) * batch]
        self.transfers = flat
        return [flat[i : i + batch] for i in range(0, len(flat), batch)]


def _sign_round(job: tuple[list[bytes], list[bytes], int, bytes, int, int]) -> list[bytes]:
    keys, addresses, chain_id, token, nonce, seed = job
    n = len(keys)
    return [
        sign_1559(k, chain_id, nonce, token, transfer_data(addresses[(i + seed + 1) % n], 1), TRANSFER_GAS)
        for i, k in enumerate(keys)
    ]


def request_body(raws: list[bytes]) -> bytes:
    calls = [
        {"jsonrpc": "2.0", "id": i, "method": "eth_sendRawTransaction", "params": ["0x" + raw.hex()]}
        for i, raw in enumerate(raws)
    ]
    return orjson.dumps(calls[0] if len(calls) == 1 else calls)


def anvil_anchor(w: Workload, batch: int, port: int) -> dict[str, Any]:
    """anvil (Foundry's dev node, Cancun, gas-free, automine) given the same signed transactions:
    the setup, then the transfers timed from the first request to the last receipt."""
    anvil = NODE_MODULES / ".bin" / "anvil"
    proc = subprocess.Popen(
        [
            str(anvil),
            "--port",
            str(port),
            "--chain-id",
            str(w.chain_id),
            "--hardfork",
            "cancun",
            "--base-fee",
            "0",
            "--gas-price",
            "0",
            "--silent",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                call(url, "eth_chainId")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        call(url, "anvil_setBalance", "0x" + address_of(w.deployer).hex(), hex(10**20))
        send_all(url, w.setup)
        wait_receipt(url, w.setup[-1], SETUP_WAIT_S)
        t0 = time.perf_counter()
        send_all(url, w.transfers, batch)
        last = wait_receipt(url, w.transfers[-1], SETUP_WAIT_S)
        elapsed = time.perf_counter() - t0
        assert last["status"] == "0x1"
        return {
            "anvil_tps": round(len(w.transfers) / elapsed),
            "transactions": len(w.transfers),
            "seconds": round(elapsed, 2),
        }
    finally:
        proc.terminate()
        proc.wait(10)


def ceiling(w: Workload, executors: int, sample: int = 2000) -> dict[str, Any]:
    """Per transfer, on one core: what every executor must do before and around the EVM (decode
    and recover the sender, Keccak of the raw bytes), the EVM's own work for the transfer (revm,
    warm), and the Ethereum application's whole execution of it as the ledger runs it. With every
    executor doing all of it, the ceiling is one core's rate divided by the executors sharing the
    machine's cores."""
    from pyrevm import EVM, AccountInfo

    from services.executor.apps.eth import evm

    raws = w.transfers[:sample]
    t = time.perf_counter()
    for raw in raws:
        decode(raw)
    decode_us = (time.perf_counter() - t) / len(raws) * 1e6
    # The EVM alone: the same transfers as message calls on one warm EVM (no state loading).
    vm = EVM(spec_id=evm.SPEC)
    token = "0x" + w.token.hex()
    runtime = _runtime_code(w)
    vm.insert_account_info(token, AccountInfo(nonce=1, code=runtime))
    for i, a in enumerate(w.addresses):
        vm.insert_account_storage(token, _balance_slot(a), 10**24 + i)
    txs = [decode(raw) for raw in raws]
    t = time.perf_counter()
    for tx in txs:
        vm.snapshot()
        vm.message_call("0x" + tx.sender.hex(), token, tx.data, gas=TRANSFER_GAS)
        vm.commit()
    evm_us = (time.perf_counter() - t) / len(txs) * 1e6
    cores = os.cpu_count() or 1
    per_tx = decode_us + evm_us
    return {
        "decode_recover_us": round(decode_us, 1),
        "evm_transfer_us": round(evm_us, 1),
        "per_tx_us": round(per_tx, 1),
        "ceiling_tps": round(1e6 / per_tx * min(1.0, cores / executors)),
        "note": "the application also loads each touched contract's whole storage into a fresh EVM per "
        "transaction (docs/ethereum.md); that cost is not in this ceiling",
    }


def _balance_slot(address: bytes) -> int:
    """OpenZeppelin ERC20 `_balances` is storage slot 0: keccak(pad(address) ‖ pad(0))."""
    return int.from_bytes(keccak256(address.rjust(32, b"\x00") + bytes(32)), "big")


def _runtime_code(w: Workload) -> bytes:
    from pyrevm import EVM, AccountInfo

    vm = EVM()
    deployer = "0x" + address_of(w.deployer).hex()
    vm.insert_account_info(deployer, AccountInfo(nonce=0))
    tx = decode(w.setup[0])
    vm.snapshot()
    address = vm.deploy(deployer, tx.data, gas=tx.gas)
    vm.commit()
    return bytes(vm.get_code(address) or b"")
