"""What the Ethereum tests share: the npm tools (installed by scripts/install-tools.sh), the
contracts compiled with solc-js, and transactions signed with eth-account (web3.py's signer)."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_utils import to_checksum_address

ROOT = Path(__file__).resolve().parents[2]
NODE_MODULES = ROOT / ".tools" / "eth-js" / "node_modules"
CONTRACTS = Path(__file__).resolve().parent / "contracts"
CHAIN_ID = 1337


def need_tools() -> Path:
    """The npm tools, or a skip naming the command that installs them."""
    if shutil.which("node") is None or not (NODE_MODULES / "solc").is_dir():
        pytest.skip("the Ethereum tools are not installed: run scripts/install-tools.sh")
    return NODE_MODULES


def tool(name: str) -> str:
    return str(need_tools() / ".bin" / name)


@functools.cache
def compiled() -> dict[str, Any]:
    """{contract name: {"abi", "bytecode"}} for tests/eth/contracts/*.sol, compiled offline."""
    modules = need_tools()
    files = sorted(str(p) for p in CONTRACTS.glob("*.sol"))
    out = subprocess.run(
        ["node", str(CONTRACTS / "compile.js"), str(modules), *files], check=True, capture_output=True, timeout=120
    )
    return dict(json.loads(out.stdout))


def new_account() -> Any:
    return Account.create()


def sign(key: Any, **fields: Any) -> bytes:
    """A raw transaction signed by `key` (an eth-account LocalAccount); defaults: EIP-1559, gas-free."""
    tx = {"chainId": CHAIN_ID, "gas": 1_000_000, "value": 0, "data": b"", **fields}
    if tx.get("to") is not None:
        tx["to"] = to_checksum_address(tx["to"])
    if "gasPrice" not in tx and tx.get("type") not in (0, 1):
        tx.setdefault("maxFeePerGas", 0)
        tx.setdefault("maxPriorityFeePerGas", 0)
    if tx.get("chainId") is None:
        del tx["chainId"]
    if tx.get("type") == 0:
        del tx["type"]  # eth-account signs a legacy transaction when it names no type
    return bytes(key.sign_transaction(tx).raw_transaction)


def run_ethers(script: str, url: str, key: str, tmp_path: Path) -> dict[str, Any]:
    """Run `tests/eth/js/<script>` (an unmodified ethers 6 session) against `url` with `key` and the
    compiled contracts; returns what it printed (JSON). Each step in the scripts has its own 60 s
    deadline and names itself when it misses it; the overall bound only catches a script that
    stops otherwise."""
    modules = need_tools()
    path = tmp_path / "compiled.json"
    path.write_text(json.dumps(compiled()))
    js = Path(__file__).resolve().parent / "js" / script
    try:
        out = subprocess.run(
            ["node", str(js), str(modules), url, key, str(path)], capture_output=True, text=True, timeout=300
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the ethers session {script} did not end: {e.stderr!r}")
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))
