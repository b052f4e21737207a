"""The JSON-RPC methods an executor answers from its state (the gateway answers the rest).

One query type, `eth`: `{"type": "eth", "method": ..., "params": [...]}` answered with
`{"rpc": {"result": ...}}` or `{"rpc": {"error": {code, message, data?}}}`. Reads see this
executor's executed state; blocks, receipts and logs only what the quorum has committed
(finality is commit: a receipt exists only once its block is committed).
"""

from __future__ import annotations

import hashlib
from typing import Any

from conclavium.eth import chain as eth_chain
from conclavium.eth import jsonrpc as j
from conclavium.eth import logfilter
from conclavium.eth.hashing import keccak256
from conclavium.eth.tx import EthTxError, decode

from ..base import QueryError
from . import evm
from .app import admit, block_params, chain_config

MAX_LOG_RANGE = 10_000
MAX_LOGS = 10_000
EMPTY_TRIE = bytes.fromhex("56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421")
EMPTY_UNCLES = bytes.fromhex("1dcc4de8dec75d7aab85b567b6ccd41ad312451b948a7413f0a142fd40d49347")
ZERO32 = "0x" + "00" * 32


def answer(machine: Any, req: dict[str, Any]) -> dict[str, Any]:
    """One method's answer, with the committed height it was read at (`height`): the gateway asks
    its next reads for at least that height, so whichever executor answers them, a client never
    sees the chain go back (a block number lower than a receipt's, a filter skipping a block)."""
    wanted = req.get("min_height")
    if isinstance(wanted, int) and machine.committed_height < wanted:
        # Ethereum reads see committed blocks: an executor that executed height h but has not
        # yet counted its commit signatures is behind for them, though not for key-value reads.
        raise QueryError("behind", f"this executor has not committed height {wanted} yet")
    method, params = req.get("method"), req.get("params", [])
    if not isinstance(params, list):
        params = []
    handler = METHODS.get(method) if isinstance(method, str) else None
    if handler is None:
        raise QueryError("unknown_method", f"the method {str(method)[:64]} does not exist/is not available")
    height = machine.committed_height
    try:
        return {"rpc": {"result": handler(Rpc(machine), params)}, "height": height}
    except j.RpcError as e:
        return {"rpc": {"error": e.to_json()}, "height": height}


def _param(params: list[Any], i: int, default: Any = None) -> Any:
    return params[i] if len(params) > i else default


class Rpc:
    def __init__(self, machine: Any) -> None:
        self.m = machine
        self.state = machine.state
        self.chain = chain_config(machine.state)

    # --- heights and hashes ---------------------------------------------------------------

    def latest(self) -> int:
        """The newest height up to which every block is committed, empty blocks included: the
        ledger keeps making blocks while idle (clock heartbeats), so the Ethereum block number
        keeps moving, as clients that wait for "the next block" to re-check a receipt expect."""
        return int(self.m.committed_height)

    def height_of(self, tag: Any) -> int:
        if tag is None or tag in ("latest", "safe", "finalized"):
            return self.latest()
        if tag == "pending":
            return self.m.tip.height
        if tag == "earliest":
            return 0
        if isinstance(tag, dict):  # EIP-1898
            if "blockHash" in tag:
                h = self.height_by_hash(j.parse_data(tag["blockHash"], "blockHash", 32))
                if h is None:
                    raise j.RpcError(j.SERVER, "header for hash not found")
                return h
            return self.height_of(tag.get("blockNumber"))
        return j.parse_qty(tag, "block number")

    def state_at(self, tag: Any) -> None:
        """State reads answer for the newest state only: no history is kept."""
        h = self.height_of(tag)
        if h < self.latest() and tag not in ("earliest",) and not isinstance(tag, dict):
            raise j.RpcError(j.SERVER, f"historical state is not available (block {h}; latest {self.latest()})")

    def block_hash(self, height: int) -> bytes:
        committed = self.m.index.block(height)
        if committed is not None:
            return bytes(committed.hash)
        return _synthetic_hash(self.m.ledger, height)

    def empty_block_time(self, height: int) -> int:
        """A block without entries is dated like the newest block with entries at or below it:
        the same on every executor and at every later time (the ledger keeps no time for it)."""
        before = self.m.index.latest_at_or_before(height)
        return int(before.ts_ms) if before is not None else 0

    def height_by_hash(self, h: bytes) -> int | None:
        prefix = _synthetic_hash(self.m.ledger, 0)[:24]
        if h[:24] == prefix:
            height = int.from_bytes(h[24:], "big")
            return height if height <= self.latest() else None
        last = self.m.last_committed
        if last is not None and bytes(last.hash) == h and last.height <= self.latest():
            return int(last.height)
        for key, _ in self.state.items(eth_chain.BLOCKS):
            height = int(key)
            if height <= self.latest() and self.block_hash(height) == h:
                return height
        return None

    def committed(self, height: int) -> bool:
        return height <= self.m.committed_height

    # --- accounts -------------------------------------------------------------------------

    def account(self, address: str) -> evm.Account | None:
        return evm.LedgerReader(self.state).account(address)

    # --- blocks and transactions ----------------------------------------------------------

    def block(self, height: int, full: bool) -> dict[str, Any] | None:
        if height > self.latest():
            return None
        rec = self.state.get(eth_chain.BLOCKS, str(height)) or {"n": 0, "gas": 0, "logs": 0}
        committed = self.m.index.block(height)
        ts_ms = rec.get("ts") or (committed.ts_ms if committed is not None else self.empty_block_time(height))
        hashes = [self.state.get(eth_chain.BLOCK_TXS, f"{height}:{i}") for i in range(rec["n"])]
        logs: list[tuple[str, list[str]]] = []
        txs = []
        for h in hashes:
            t = self.state.get(eth_chain.TXS, h)
            logs += [(a, topics) for a, topics, _ in t["logs"]]
            txs.append(self.transaction(h, t) if full else h)
        parent = self.block_hash(height - 1) if height > 0 else bytes(32)
        return {
            "number": j.qty(height),
            "hash": j.data(self.block_hash(height)),
            "parentHash": j.data(parent),
            "nonce": "0x0000000000000000",
            "mixHash": j.data(keccak256(b"conclavium.eth.prevrandao" + parent)),
            "sha3Uncles": j.data(EMPTY_UNCLES),
            "logsBloom": j.data(j.bloom(logs)),
            "transactionsRoot": j.data(bytes(committed.root) if committed is not None and hashes else EMPTY_TRIE),
            "stateRoot": ZERO32,
            "receiptsRoot": j.data(EMPTY_TRIE) if not hashes else ZERO32,
            "miner": self.chain.coinbase,
            "difficulty": "0x0",
            "totalDifficulty": "0x0",
            "extraData": "0x",
            "size": j.qty(1000 + 200 * len(hashes)),
            "gasLimit": j.qty(self.chain.block_gas_limit),
            "gasUsed": j.qty(rec["gas"]),
            "timestamp": j.qty(ts_ms // 1000),
            "transactions": txs,
            "uncles": [],
            "baseFeePerGas": j.qty(self.chain.base_fee),
            "withdrawals": [],
            "withdrawalsRoot": j.data(EMPTY_TRIE),
            "blobGasUsed": "0x0",
            "excessBlobGas": "0x0",
            "parentBeaconBlockRoot": ZERO32,
        }

    def transaction(self, tx_hash: str, rec: dict[str, Any]) -> dict[str, Any]:
        tx = decode(bytes.fromhex(rec["raw"]), private_marker=bool(rec.get("private")))
        committed = self.committed(rec["height"])
        out: dict[str, Any] = {
            "hash": tx_hash,
            "type": j.qty(tx.type),
            "nonce": j.qty(tx.nonce),
            "from": rec["from"],
            "to": rec["to"],
            "value": j.qty(tx.value),
            "gas": j.qty(tx.gas),
            "gasPrice": j.qty(rec["price"]),
            "input": j.data(tx.data),
            "v": j.qty(tx.v),
            "r": j.qty(tx.r),
            "s": j.qty(tx.s),
            "blockNumber": j.qty(rec["height"]) if committed else None,
            "blockHash": j.data(self.block_hash(rec["height"])) if committed else None,
            "transactionIndex": j.qty(rec["index"]) if committed else None,
        }
        if tx.chain_id is not None:
            out["chainId"] = j.qty(tx.chain_id)
        if tx.type >= 1:
            out["accessList"] = [
                {"address": "0x" + a.hex(), "storageKeys": ["0x" + k.hex() for k in keys]} for a, keys in tx.access_list
            ]
            out["yParity"] = j.qty(tx.v)
        if tx.type == 2:
            out["maxFeePerGas"] = j.qty(tx.gas_price)
            out["maxPriorityFeePerGas"] = j.qty(tx.max_priority_fee)
        return out

    def logs_of(self, tx_hash: str, rec: dict[str, Any]) -> list[dict[str, Any]]:
        block_hash = j.data(self.block_hash(rec["height"]))
        return [
            {
                "address": address,
                "topics": topics,
                "data": "0x" + data,
                "blockNumber": j.qty(rec["height"]),
                "blockHash": block_hash,
                "transactionHash": tx_hash,
                "transactionIndex": j.qty(rec["index"]),
                "logIndex": j.qty(rec["first_log"] + i),
                "removed": False,
            }
            for i, (address, topics, data) in enumerate(rec["logs"])
        ]

    def receipt(self, tx_hash: str) -> dict[str, Any] | None:
        rec = self.state.get(eth_chain.TXS, tx_hash)
        if rec is None or not self.committed(rec["height"]):
            return None
        tx = decode(bytes.fromhex(rec["raw"]), private_marker=bool(rec.get("private")))
        return {
            "transactionHash": tx_hash,
            "transactionIndex": j.qty(rec["index"]),
            "blockHash": j.data(self.block_hash(rec["height"])),
            "blockNumber": j.qty(rec["height"]),
            "from": rec["from"],
            "to": rec["to"],
            "cumulativeGasUsed": j.qty(rec["cumulative_gas"]),
            "gasUsed": j.qty(rec["gas_used"]),
            "effectiveGasPrice": j.qty(rec["price"]),
            "contractAddress": rec["contract"],
            "logs": self.logs_of(tx_hash, rec),
            "logsBloom": j.data(j.bloom([(a, t) for a, t, _ in rec["logs"]])),
            "status": j.qty(rec["status"]),
            "type": j.qty(tx.type),
            "blobGasUsed": "0x0",
            # Not Ethereum: the ledger's own transaction id, for `conclavium receipt get`.
            "conclaviumTransaction": rec["entry"],
        }

    # --- calls ----------------------------------------------------------------------------

    def call(self, call: Any, gas_cap: int | None = None, reader: evm.LedgerReader | None = None) -> evm.RunResult:
        """`reader`: another state to run on (a Quorum privacy group's, `quorum_rpc.py`)."""
        if not isinstance(call, dict):
            raise j.RpcError(j.INVALID_PARAMS, "invalid argument 0: a call is an object")
        caller = j.parse_address(call["from"], "from") if call.get("from") is not None else evm.ZERO
        to = j.parse_address(call["to"], "to") if call.get("to") is not None else None
        raw = call.get("input", call.get("data"))
        data = j.parse_data(raw, "input") if raw is not None else b""
        value = j.parse_qty(call["value"], "value") if call.get("value") is not None else 0
        limit = self.chain.block_gas_limit
        gas = min(j.parse_qty(call["gas"], "gas"), limit) if call.get("gas") is not None else limit
        if gas_cap is not None:
            gas = gas_cap
        access = []
        for item in call.get("accessList") or []:
            if not isinstance(item, dict):
                raise j.RpcError(j.INVALID_PARAMS, "invalid argument 0: accessList entries are objects")
            keys = [j.parse_qty(k, "storage key") for k in item.get("storageKeys") or []]
            access.append((j.parse_address(item.get("address"), "accessList address"), keys))
        params = block_params(self.chain, self.m.tip.height + 1, self.m.tip.ts_ms, self.m.tip.hash)
        try:
            return evm.run(reader or evm.LedgerReader(self.state), params, caller, to, data, value, gas, access)
        except evm.EvmFailure as e:
            text = str(e)
            if "LackOfFund" in text:
                raise j.RpcError(j.SERVER, "insufficient funds for gas * price + value") from None
            if "CallGasCostMoreThanGasLimit" in text:
                raise j.RpcError(j.SERVER, "intrinsic gas too low") from None
            raise j.RpcError(j.SERVER, text) from None


def _failed(result: evm.RunResult) -> j.RpcError:
    if result.reason == "Revert":
        return j.RpcError(j.REVERTED, j.revert_message(result.output), j.data(result.output))
    if result.reason == "OutOfGas":
        return j.RpcError(j.SERVER, "out of gas")
    return j.RpcError(j.SERVER, f"execution failed: {result.reason}")


def _synthetic_hash(ledger: str, height: int) -> bytes:
    """The hash of a height whose ledger block holds no entries (it has no committed record)."""
    return hashlib.sha256(b"conclavium.eth.empty-block\x00" + ledger.encode()).digest()[:24] + height.to_bytes(8, "big")


# --- the methods ------------------------------------------------------------------------------


def _chain_id(r: Rpc, p: list[Any]) -> Any:
    return j.qty(r.chain.chain_id)


def _block_number(r: Rpc, p: list[Any]) -> Any:
    return j.qty(r.latest())


def _balance(r: Rpc, p: list[Any]) -> Any:
    address = j.parse_address(_param(p, 0), "address")
    r.state_at(_param(p, 1))
    acct = r.account(address)
    return j.qty(acct.balance if acct else 0)


def _nonce(r: Rpc, p: list[Any]) -> Any:
    address = j.parse_address(_param(p, 0), "address")
    r.state_at(_param(p, 1))
    acct = r.account(address)
    return j.qty(acct.nonce if acct else 0)


def _code(r: Rpc, p: list[Any]) -> Any:
    address = j.parse_address(_param(p, 0), "address")
    r.state_at(_param(p, 1))
    acct = r.account(address)
    return j.data(acct.code if acct else b"")


def _storage(r: Rpc, p: list[Any]) -> Any:
    address = j.parse_address(_param(p, 0), "address")
    slot = j.parse_qty(_param(p, 1), "storage slot")
    r.state_at(_param(p, 2))
    return j.data(evm.LedgerReader(r.state).storage_at(address, slot).to_bytes(32, "big"))


def _call(r: Rpc, p: list[Any]) -> Any:
    r.state_at(_param(p, 1))
    result = r.call(_param(p, 0))
    if not result.success:
        raise _failed(result)
    return j.data(result.output)


def _estimate(r: Rpc, p: list[Any]) -> Any:
    """The least gas (within 1.5 %, as geth) with which the call succeeds."""
    call = _param(p, 0)
    cap = r.chain.block_gas_limit
    if isinstance(call, dict) and call.get("gas") is not None:
        cap = min(cap, j.parse_qty(call["gas"], "gas"))
    first = r.call(call, cap)
    if not first.success:
        raise _failed(first)
    lo, hi = first.gas_used - 1, cap
    guess = min(hi, (first.gas_used + 2300) * 64 // 63)
    if r.call(call, guess).success:
        hi = guess
    else:
        lo = guess
    while hi - lo > 1 and (hi - lo) * 1000 > 15 * hi:
        mid = (lo + hi) // 2
        if r.call(call, mid).success:
            hi = mid
        else:
            lo = mid
    return j.qty(hi)


def _gas_price(r: Rpc, p: list[Any]) -> Any:
    return j.qty(r.chain.base_fee)


def _priority_fee(r: Rpc, p: list[Any]) -> Any:
    return "0x0"


def _fee_history(r: Rpc, p: list[Any]) -> Any:
    count = min(j.parse_qty(_param(p, 0, "0x1"), "blockCount"), 1024)
    newest = r.height_of(_param(p, 1, "latest"))
    oldest = max(0, newest - count + 1)
    n = newest - oldest + 1
    percentiles = _param(p, 2) or []
    return {
        "oldestBlock": j.qty(oldest),
        "baseFeePerGas": [j.qty(r.chain.base_fee)] * (n + 1),
        "gasUsedRatio": [0.0] * n,
        "reward": [["0x0"] * len(percentiles) for _ in range(n)] if percentiles else [],
        "baseFeePerBlobGas": ["0x0"] * (n + 1),
        "blobGasUsedRatio": [0.0] * n,
    }


def _block_by_number(r: Rpc, p: list[Any]) -> Any:
    return r.block(r.height_of(_param(p, 0)), bool(_param(p, 1, False)))


def _block_by_hash(r: Rpc, p: list[Any]) -> Any:
    h = r.height_by_hash(j.parse_data(_param(p, 0), "block hash", 32))
    return r.block(h, bool(_param(p, 1, False))) if h is not None else None


def _tx_hash(value: Any) -> str:
    return "0x" + j.parse_data(value, "transaction hash", 32).hex()


def _tx_by_hash(r: Rpc, p: list[Any]) -> Any:
    h = _tx_hash(_param(p, 0))
    rec = r.state.get(eth_chain.TXS, h)
    return r.transaction(h, rec) if rec is not None else None


def _tx_in_block(r: Rpc, height: int | None, index: Any) -> Any:
    if height is None or not r.committed(height):
        return None
    h = r.state.get(eth_chain.BLOCK_TXS, f"{height}:{j.parse_qty(index, 'index')}")
    return r.transaction(h, r.state.get(eth_chain.TXS, h)) if h is not None else None


def _tx_by_number_index(r: Rpc, p: list[Any]) -> Any:
    return _tx_in_block(r, r.height_of(_param(p, 0)), _param(p, 1))


def _tx_by_hash_index(r: Rpc, p: list[Any]) -> Any:
    return _tx_in_block(r, r.height_by_hash(j.parse_data(_param(p, 0), "block hash", 32)), _param(p, 1))


def _receipt(r: Rpc, p: list[Any]) -> Any:
    return r.receipt(_tx_hash(_param(p, 0)))


def _block_tx_count(r: Rpc, height: int | None) -> Any:
    if height is None or height > r.latest():
        return None
    return j.qty((r.state.get(eth_chain.BLOCKS, str(height)) or {"n": 0})["n"])


def _count_by_number(r: Rpc, p: list[Any]) -> Any:
    return _block_tx_count(r, r.height_of(_param(p, 0)))


def _count_by_hash(r: Rpc, p: list[Any]) -> Any:
    return _block_tx_count(r, r.height_by_hash(j.parse_data(_param(p, 0), "block hash", 32)))


def logs(r: Rpc, flt: Any) -> list[dict[str, Any]]:
    """The committed logs a filter matches (`eth_getLogs`, and filters)."""
    if not isinstance(flt, dict):
        raise j.RpcError(j.INVALID_PARAMS, "invalid argument 0: a filter is an object")
    latest = r.latest()
    if flt.get("blockHash") is not None:
        h = r.height_by_hash(j.parse_data(flt["blockHash"], "blockHash", 32))
        if h is None:
            raise j.RpcError(j.SERVER, "unknown block")
        lo = hi = h
    else:
        lo = r.height_of(flt.get("fromBlock", "latest"))
        hi = min(r.height_of(flt.get("toBlock", "latest")), latest)
    if hi - lo > MAX_LOG_RANGE:
        raise j.RpcError(j.LIMIT_EXCEEDED, f"query exceeds the maximum block range of {MAX_LOG_RANGE}")
    criteria = logfilter.parse(flt)
    out: list[dict[str, Any]] = []
    # A short range (a filter's poll) is looked up height by height, a long one from the map's keys.
    if hi - lo < 4096:
        heights: Any = range(lo, hi + 1)
    else:
        heights = sorted(h for h in (int(k) for k, _ in r.state.items(eth_chain.BLOCKS)) if lo <= h <= hi)
    for height in heights:
        block = r.state.get(eth_chain.BLOCKS, str(height))
        if block is None:
            continue
        n = block["n"]
        for i in range(n):
            tx_hash = r.state.get(eth_chain.BLOCK_TXS, f"{height}:{i}")
            rec = r.state.get(eth_chain.TXS, tx_hash)
            for log in r.logs_of(tx_hash, rec):
                if not criteria.matches(log):
                    continue
                out.append(log)
                if len(out) > MAX_LOGS:
                    raise j.RpcError(j.LIMIT_EXCEEDED, f"query returned more than {MAX_LOGS} results")
    return out


def _get_logs(r: Rpc, p: list[Any]) -> Any:
    return logs(r, _param(p, 0))


MAX_FILTER_BLOCKS = 1000  # block hashes one poll of a block filter returns at most


def _filter_changes(r: Rpc, p: list[Any]) -> Any:
    """What a filter kept on the gateway has not yet seen, from `next` on, and the height to
    resume from: one answer from one executor, so the range the gateway moves past is the range
    this executor covered (two executors at different commit heights cannot make a poll skip a
    block or a log). `{"kind": "blocks" | "logs", "next": height, "criteria": filter}`."""
    spec = _param(p, 0)
    if not isinstance(spec, dict) or spec.get("kind") not in ("blocks", "logs"):
        raise j.RpcError(j.INVALID_PARAMS, "invalid argument 0: {kind, next, criteria}")
    start = spec.get("next")
    if type(start) is not int or start < 0:
        raise j.RpcError(j.INVALID_PARAMS, "invalid argument 0: next is a height")
    latest = r.latest()
    if spec["kind"] == "blocks":
        end = min(latest, start + MAX_FILTER_BLOCKS - 1)
        return {"changes": [j.data(r.block_hash(h)) for h in range(start, end + 1)], "next": max(start, end + 1)}
    if start > latest:
        return {"changes": [], "next": start}
    crit = spec.get("criteria")
    if not isinstance(crit, dict):
        raise j.RpcError(j.INVALID_PARAMS, "invalid argument 0: a filter is an object")
    crit = {k: v for k, v in crit.items() if k != "blockHash"}
    crit["fromBlock"], crit["toBlock"] = j.qty(start), j.qty(latest)
    return {"changes": logs(r, crit), "next": latest + 1}


def _precheck(r: Rpc, p: list[Any]) -> Any:
    """The gateway's early check of a raw transaction against this executor's state (advice:
    the executors check again in ledger order)."""
    raw = j.parse_data(_param(p, 0), "raw transaction")
    try:
        tx = decode(raw)
        if r.state.get(eth_chain.TXS, "0x" + tx.hash.hex()) is not None:
            raise j.RpcError(j.SERVER, "already known")
        sender, _ = admit(r.state, tx, r.chain, future_ok=True)
    except EthTxError as e:
        raise j.RpcError(j.SERVER, e.message) from None
    return {"hash": "0x" + tx.hash.hex(), "from": sender, "nonce": tx.nonce}


MAX_HEADS = 64  # headers one poll of the gateway's subscription follower returns at most
NOT_IN_HEADS = ("transactions", "uncles", "size", "totalDifficulty")  # geth's newHeads has none of these


def _new_heads(r: Rpc, p: list[Any]) -> Any:
    """For the gateway's `eth_subscribe`: the headers of the committed heights from `next` on (at
    most MAX_HEADS), with every log in them when `logs` is true, and the height to resume from;
    one executor's view, so no height is skipped whichever executor answers the next poll."""
    spec = _param(p, 0)
    start = spec.get("next") if isinstance(spec, dict) else None
    if type(start) is not int or start < 0:
        raise j.RpcError(j.INVALID_PARAMS, "invalid argument 0: {next: height, logs: bool}")
    end = min(r.latest(), start + MAX_HEADS - 1)
    heads = []
    for height in range(start, end + 1):
        block = r.block(height, False) or {}
        heads.append({k: v for k, v in block.items() if k not in NOT_IN_HEADS})
    found = logs(r, {"fromBlock": j.qty(start), "toBlock": j.qty(end)}) if spec.get("logs") and heads else []
    return {"heads": heads, "logs": found, "next": max(start, end + 1)}


METHODS = {
    "eth_chainId": _chain_id,
    "eth_blockNumber": _block_number,
    "eth_getBalance": _balance,
    "eth_getTransactionCount": _nonce,
    "eth_getCode": _code,
    "eth_getStorageAt": _storage,
    "eth_call": _call,
    "eth_estimateGas": _estimate,
    "eth_gasPrice": _gas_price,
    "eth_maxPriorityFeePerGas": _priority_fee,
    "eth_feeHistory": _fee_history,
    "eth_getBlockByNumber": _block_by_number,
    "eth_getBlockByHash": _block_by_hash,
    "eth_getTransactionByHash": _tx_by_hash,
    "eth_getTransactionByBlockNumberAndIndex": _tx_by_number_index,
    "eth_getTransactionByBlockHashAndIndex": _tx_by_hash_index,
    "eth_getTransactionReceipt": _receipt,
    "eth_getBlockTransactionCountByNumber": _count_by_number,
    "eth_getBlockTransactionCountByHash": _count_by_hash,
    "eth_getLogs": _get_logs,
    "conclavium_precheckRawTransaction": _precheck,
    "conclavium_filterChanges": _filter_changes,
    "conclavium_newHeads": _new_heads,
}
