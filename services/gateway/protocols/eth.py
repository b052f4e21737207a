"""The Ethereum protocol's route: JSON-RPC 2.0 on `POST /rpc` (single calls and batches).

The gateway answers what needs no state (client version, network id, syncing, accounts) and
keeps filters (as a geth node does, per node: a filter lives on the gateway that made it);
`eth_sendRawTransaction` decodes the raw transaction, recovers the sender, asks an executor to
pre-check it against its state (advice only: the executors decide in ledger order), and puts it
into the intake as an `eth` entry; everything else is answered by an executor from its state.
Errors keep geth's codes and words (-32000 for refused transactions, 3 for reverts), because
libraries map them to their own error types.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import orjson
from aiohttp import web

from conclavium.apps import app_entry
from conclavium.eth import chain as eth_chain
from conclavium.eth import jsonrpc as j
from conclavium.eth.hashing import address_hex
from conclavium.eth.tx import EthTxError, decode

from .. import metrics as m
from ..errors import ApiError
from ..limits import MAX_BATCH, MAX_BATCH_BODY
from .base import ProtocolRoutes
from .eth_ws import SocketHub

CLIENT_VERSION = "conclavium/0.1.0"
MAX_FILTERS = 10_000
FILTER_TTL_S = 300.0  # like geth's filter timeout
PENDING_NONCE_S = 30.0  # how long an accepted nonce counts towards `pending` before it executes
LOCAL_METHODS = ("web3_clientVersion", "net_version", "net_listening", "eth_syncing", "eth_accounts", "eth_mining")
FILTER_METHODS = (
    "eth_newFilter",
    "eth_newBlockFilter",
    "eth_getFilterChanges",
    "eth_getFilterLogs",
    "eth_uninstallFilter",
)
EXECUTOR_METHODS = (
    "eth_chainId",
    "eth_blockNumber",
    "eth_getBalance",
    "eth_getTransactionCount",
    "eth_getCode",
    "eth_getStorageAt",
    "eth_call",
    "eth_estimateGas",
    "eth_gasPrice",
    "eth_maxPriorityFeePerGas",
    "eth_feeHistory",
    "eth_getBlockByNumber",
    "eth_getBlockByHash",
    "eth_getTransactionByHash",
    "eth_getTransactionByBlockNumberAndIndex",
    "eth_getTransactionByBlockHashAndIndex",
    "eth_getTransactionReceipt",
    "eth_getBlockTransactionCountByNumber",
    "eth_getBlockTransactionCountByHash",
    "eth_getLogs",
)
KNOWN = frozenset((*LOCAL_METHODS, *FILTER_METHODS, *EXECUTOR_METHODS, "eth_sendRawTransaction"))


class EthereumRoutes(ProtocolRoutes):
    name = eth_chain.APP

    def __init__(self, gateway: Any) -> None:
        super().__init__(gateway)
        self.chain_id: str | None = None  # governance may change it: re-read every minute
        self.chain_id_at = 0.0
        self.filters: dict[str, dict[str, Any]] = {}
        self.pending: dict[str, tuple[int, float]] = {}  # sender -> (next nonce, when accepted)
        # The newest committed height an executor answered from: later reads ask for at least it,
        # so answers from different executors never take a client back in time.
        self.floor = 0
        self.sockets = SocketHub(self)

    def add_submission_routes(self, r: web.UrlDispatcher) -> None:
        r.add_post("/rpc", self.post_rpc)
        r.add_get("/rpc", self.sockets.handle)  # WebSocket JSON-RPC with subscriptions (eth_ws.py)

    async def close(self) -> None:
        await self.sockets.close()

    async def post_rpc(self, request: web.Request) -> web.Response:
        if request.content_type != "application/json":
            raise ApiError(415, "unsupported_media_type", "send application/json")
        if request.content_length is not None and request.content_length > MAX_BATCH_BODY:
            raise ApiError(413, "too_large", f"request body exceeds {MAX_BATCH_BODY} bytes")
        body = await request.read()
        if len(body) > MAX_BATCH_BODY:
            raise ApiError(413, "too_large", f"request body exceeds {MAX_BATCH_BODY} bytes")
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError:  # as on every route of the gateway (not JSON-RPC's -32700)
            raise ApiError(400, "invalid_json", "request body is not valid JSON") from None
        if isinstance(obj, list):
            if not obj:
                return _reply(_error(None, j.RpcError(j.INVALID_REQUEST, "empty batch")))
            if not all(isinstance(item, dict) for item in obj):
                raise ApiError(400, "invalid_request", "a JSON-RPC batch is an array of request objects")
            if len(obj) > MAX_BATCH:
                return _reply(_error(None, j.RpcError(j.LIMIT_EXCEEDED, f"batch too large (at most {MAX_BATCH})")))
            return _reply([await self.one(item) for item in obj])
        if not isinstance(obj, dict):
            raise ApiError(400, "invalid_request", "a JSON-RPC request is an object or an array of objects")
        return _reply(await self.one(obj))

    async def one(self, item: Any) -> dict[str, Any]:
        if not isinstance(item, dict) or item.get("jsonrpc") != "2.0" or not isinstance(item.get("method"), str):
            m.RPC_REQUESTS.labels("invalid", "error").inc()
            return _error(
                item.get("id") if isinstance(item, dict) else None, j.RpcError(j.INVALID_REQUEST, "invalid request")
            )
        rid, method = item.get("id"), item["method"]
        params = item.get("params", [])
        label = method if method in KNOWN else "other"
        if not isinstance(params, list):
            m.RPC_REQUESTS.labels(label, "error").inc()
            return _error(rid, j.RpcError(j.INVALID_PARAMS, "params must be an array"))
        try:
            result = await self.call(method, params)
        except j.RpcError as e:
            m.RPC_REQUESTS.labels(label, "reverted" if e.code == j.REVERTED else "error").inc()
            return _error(rid, e)
        except ApiError as e:
            m.RPC_REQUESTS.labels(label, "unavailable").inc()
            return _error(rid, j.RpcError(j.SERVER, f"{e.code}: {e.message}"))
        m.RPC_REQUESTS.labels(label, "ok").inc()
        return {"jsonrpc": "2.0", "id": rid, "result": result}

    async def call(self, method: str, params: list[Any]) -> Any:
        if method == "web3_clientVersion":
            return CLIENT_VERSION
        if method in ("net_version",):
            return str(int(await self.cached_chain_id(), 16))
        if method == "eth_chainId":
            return await self.cached_chain_id()
        if method == "net_listening":
            return True
        if method in ("eth_syncing", "eth_mining"):
            return False
        if method == "eth_accounts":
            return []
        if method == "eth_sendRawTransaction":
            return await self.send_raw(params)
        if method in FILTER_METHODS:
            return await self.filter_call(method, params)
        if method not in EXECUTOR_METHODS:
            raise j.RpcError(j.METHOD_NOT_FOUND, f"the method {method[:64]} does not exist/is not available")
        result = await self.executor(method, params)
        if method == "eth_getTransactionCount" and len(params) > 1 and params[1] == "pending":
            accepted = self.pending.get(str(params[0]).lower())
            if accepted is not None and time.monotonic() - accepted[1] < PENDING_NONCE_S:
                result = hex(max(int(result, 16), accepted[0]))
        return result

    async def executor(self, method: str, params: list[Any]) -> Any:
        answer = await self.gw.ask_fresh({"type": "eth", "method": method, "params": params}, self.floor)
        height = answer.get("height")
        if type(height) is int and height > self.floor:
            self.floor = height
        err = answer.get("error")
        if err is not None:
            if err.get("code") == "unknown_query":
                raise j.RpcError(j.METHOD_NOT_FOUND, "the Ethereum application is not available on this ledger")
            raise j.RpcError(j.SERVER, f"{err.get('code')}: {err.get('message')}")
        rpc = answer.get("rpc") or {}
        if "error" in rpc:
            e = rpc["error"]
            raise j.RpcError(int(e.get("code", j.SERVER)), str(e.get("message")), e.get("data"))
        return rpc.get("result")

    async def cached_chain_id(self) -> str:
        now = time.monotonic()
        if self.chain_id is None or now - self.chain_id_at > 60:
            self.chain_id = str(await self.executor("eth_chainId", []))
            self.chain_id_at = now
        return self.chain_id

    async def send_raw(self, params: list[Any]) -> str:
        raw = j.parse_data(params[0] if params else None, "raw transaction")
        try:
            tx = decode(raw)  # the sender is recovered here, an early filter
        except EthTxError as e:
            m.TX_REJECTED.labels(f"eth_{e.code}").inc()
            raise j.RpcError(j.SERVER, e.message) from None
        try:
            await self.executor("conclavium_precheckRawTransaction", ["0x" + raw.hex()])
        except j.RpcError:
            m.TX_REJECTED.labels("eth_precheck").inc()
            raise
        self.gw._admit(1)
        await self.gw._submit_entries([app_entry(eth_chain.APP, raw, b"")])
        m.TX_RECEIVED.inc()
        sender = address_hex(tx.sender)
        if len(self.pending) > 100_000:
            self.pending.clear()
        prior = self.pending.get(sender)
        self.pending[sender] = (max(tx.nonce + 1, prior[0] if prior else 0), time.monotonic())
        return "0x" + tx.hash.hex()

    # --- filters (kept on this gateway, as a geth node keeps its own) ---------------------------

    async def filter_call(self, method: str, params: list[Any]) -> Any:
        now = time.monotonic()
        for fid in [f for f, v in self.filters.items() if now - v["used"] > FILTER_TTL_S]:
            del self.filters[fid]
        if method in ("eth_newFilter", "eth_newBlockFilter"):
            if len(self.filters) >= MAX_FILTERS:
                raise j.RpcError(j.LIMIT_EXCEEDED, "too many filters")
            crit = params[0] if params and method == "eth_newFilter" else None
            if method == "eth_newFilter" and not isinstance(crit, dict):
                raise j.RpcError(j.INVALID_PARAMS, "invalid argument 0: a filter is an object")
            latest = int(await self.executor("eth_blockNumber", []), 16)
            fid = "0x" + os.urandom(16).hex()
            kind = "blocks" if method == "eth_newBlockFilter" else "logs"
            self.filters[fid] = {
                "kind": kind,
                "criteria": crit,
                "next": latest + 1,
                "used": now,
                "lock": asyncio.Lock(),  # two polls at once would both report the same changes
            }
            return fid
        fid = params[0] if params else None
        f = self.filters.get(fid) if isinstance(fid, str) else None
        if method == "eth_uninstallFilter":
            return self.filters.pop(fid, None) is not None if isinstance(fid, str) else False
        if f is None:
            raise j.RpcError(j.SERVER, "filter not found")
        f["used"] = now
        if method == "eth_getFilterLogs":
            if f["kind"] != "logs":
                raise j.RpcError(j.SERVER, "filter not found")
            return await self.executor("eth_getLogs", [f["criteria"]])
        # The executor says which heights it covered: the filter resumes exactly after them.
        async with f["lock"]:
            polled = await self.executor(
                "conclavium_filterChanges", [{"kind": f["kind"], "next": f["next"], "criteria": f["criteria"]}]
            )
            f["next"] = max(f["next"], int(polled["next"]))
        return polled["changes"]


def _error(rid: Any, e: j.RpcError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "error": e.to_json()}


def _reply(obj: Any) -> web.Response:
    return web.Response(body=orjson.dumps(obj), content_type="application/json")
