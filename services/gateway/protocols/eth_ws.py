"""JSON-RPC over WebSocket (`GET /rpc` with an upgrade), as geth serves it: every method of
`POST /rpc` (single calls and batches), plus `eth_subscribe` for `newHeads` and `logs` and
`eth_unsubscribe`.

One follower per gateway polls the executors for the committed heights after the last it saw
(`conclavium_newHeads`: headers and their logs from one executor, which says where to resume), and
only while someone is subscribed; each new head and each matching log becomes a notification on
every subscribed socket. A socket's output goes through a queue bounded in bytes: a client that
does not read what it is sent has its socket closed (1008, `subscription queue overflow`) and
the messages that did not fit are counted as dropped, so a slow client costs the gateway at most
its queue. Calls on one socket run at most CALLS_PER_SOCKET at a time; reading waits meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import WSCloseCode, WSMsgType, web

from conclavium.eth import jsonrpc as j
from conclavium.eth import logfilter

from .. import metrics as m
from ..errors import ApiError
from ..limits import MAX_BATCH, MAX_BATCH_BODY

if TYPE_CHECKING:
    from .eth import EthereumRoutes

log = logging.getLogger("conclavium.gateway.ws")

MAX_SOCKETS = 1000  # per gateway: with QUEUE_BYTES each, at most ~1 GiB of queued output
QUEUE_BYTES = 1024 * 1024  # per socket: output not yet written to a slow client
MAX_SUBSCRIPTIONS = 100  # per socket
CALLS_PER_SOCKET = 8  # calls of one socket answered concurrently
POLL_S = 0.1  # how often the follower asks for new heights while subscriptions are open
RETRY_S = 1.0  # after a failed poll
CLOSE_TIMEOUT_S = 2.0
KINDS = ("newHeads", "logs")


class Socket:
    """One client's WebSocket: its subscriptions and its bounded output queue."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        self.ws = ws
        self.request = request
        self.subs: dict[str, tuple[str, logfilter.LogCriteria | None]] = {}  # id -> (kind, criteria)
        self.queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self.queued_bytes = 0
        self.overflowed = False
        self.closed = False

    def offer(self, text: str, kind: str) -> None:
        """Queue a message, or, past the bound, drop it and close the socket (a client that does
        not read would otherwise make the gateway hold everything sent to it)."""
        if self.closed:
            return
        if self.overflowed or self.queued_bytes + len(text) > QUEUE_BYTES:
            m.WS_DROPPED.labels(kind).inc()
            if not self.overflowed:
                self.overflowed = True
                m.WS_SLOW_CLOSED.inc()
                log.warning("closing a JSON-RPC WebSocket from %s: it does not read", self.request.remote)
                asyncio.get_running_loop().create_task(self.close(WSCloseCode.POLICY_VIOLATION, OVERFLOW))
            return
        self.queued_bytes += len(text)
        self.queue.put_nowait((text, kind))

    async def write(self) -> None:
        try:
            while True:
                text, kind = await self.queue.get()
                self.queued_bytes -= len(text)
                await self.ws.send_str(text)
                m.WS_MESSAGES.labels(kind).inc()
        except (ConnectionError, RuntimeError):  # the client went away: the reader ends the socket
            self.closed = True

    async def close(self, code: int, message: bytes) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            await asyncio.wait_for(self.ws.close(code=code, message=message), CLOSE_TIMEOUT_S)
        except (TimeoutError, ConnectionError, RuntimeError):
            # The close frame cannot be written to a client that reads nothing: cut the connection.
            if self.request.transport is not None:
                self.request.transport.abort()


OVERFLOW = b"subscription queue overflow: the client does not read what it is sent"


class SocketHub:
    """The JSON-RPC WebSockets of this gateway and the follower that feeds their subscriptions."""

    def __init__(self, routes: EthereumRoutes) -> None:
        self.routes = routes
        self.sockets: set[Socket] = set()
        self.follower: asyncio.Task[None] | None = None
        self.next = 0  # the first height the follower has not notified

    def count(self, kind: str) -> int:
        return sum(1 for s in self.sockets for k, _ in s.subs.values() if k == kind)

    def _gauges(self) -> None:
        for kind in KINDS:
            m.WS_SUBSCRIPTIONS.labels(kind).set(self.count(kind))
        m.WS_CONNECTIONS.set(len(self.sockets))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=MAX_BATCH_BODY)
        if not ws.can_prepare(request).ok:
            raise ApiError(400, "websocket_required", "GET /rpc upgrades to a JSON-RPC WebSocket; POST calls to /rpc")
        if len(self.sockets) >= MAX_SOCKETS:
            raise ApiError(
                503, "too_many_sockets", f"this gateway serves at most {MAX_SOCKETS} WebSockets", {"Retry-After": "5"}
            )
        await ws.prepare(request)
        sock = Socket(ws, request)
        self.sockets.add(sock)
        self._gauges()
        writer = asyncio.create_task(sock.write())
        calls = asyncio.Semaphore(CALLS_PER_SOCKET)
        running: set[asyncio.Task[None]] = set()
        try:
            async for msg in ws:
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    continue
                await calls.acquire()
                task = asyncio.create_task(self._message(sock, msg.data))
                running.add(task)
                task.add_done_callback(lambda t: (running.discard(t), calls.release()))
        finally:
            for task in running:
                task.cancel()
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            sock.closed = True
            self.sockets.discard(sock)
            self._gauges()
        return ws

    async def _message(self, sock: Socket, data: str | bytes) -> None:
        made: dict[str, tuple[str, logfilter.LogCriteria | None]] = {}  # subscriptions this message makes
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            sock.offer(_dumps(_error(None, j.RpcError(j.PARSE_ERROR, "parse error"))), "response")
            return
        if isinstance(obj, list):
            if not obj:
                reply: Any = _error(None, j.RpcError(j.INVALID_REQUEST, "empty batch"))
            elif len(obj) > MAX_BATCH:
                reply = _error(None, j.RpcError(j.LIMIT_EXCEEDED, f"batch too large (at most {MAX_BATCH})"))
            else:
                reply = [await self._one(sock, item, made) for item in obj]
        else:
            reply = await self._one(sock, obj, made)
        sock.offer(_dumps(reply), "response")
        # A subscription's first notification may only follow the answer that names it.
        for sid, sub in made.items():
            if not sock.closed:
                sock.subs[sid] = sub
        self._gauges()
        self._start_follower()

    async def _one(
        self, sock: Socket, item: Any, made: dict[str, tuple[str, logfilter.LogCriteria | None]]
    ) -> dict[str, Any]:
        if isinstance(item, dict) and item.get("method") in ("eth_subscribe", "eth_unsubscribe"):
            rid = item.get("id")
            params = item.get("params", [])
            label = str(item["method"])
            try:
                if not isinstance(params, list):
                    raise j.RpcError(j.INVALID_PARAMS, "params must be an array")
                if label == "eth_subscribe":
                    result: Any = await self._subscribe(sock, params, made)
                else:
                    result = self._unsubscribe(sock, params, made)
            except j.RpcError as e:
                m.RPC_REQUESTS.labels(label, "error").inc()
                return _error(rid, e)
            m.RPC_REQUESTS.labels(label, "ok").inc()
            return {"jsonrpc": "2.0", "id": rid, "result": result}
        return await self.routes.one(item)

    async def _subscribe(
        self, sock: Socket, params: list[Any], made: dict[str, tuple[str, logfilter.LogCriteria | None]]
    ) -> str:
        kind = params[0] if params else None
        if kind not in KINDS:
            raise j.RpcError(j.INVALID_PARAMS, f"unsupported subscription type {str(kind)[:40]!r}: newHeads or logs")
        if len(sock.subs) + len(made) >= MAX_SUBSCRIPTIONS:
            raise j.RpcError(j.LIMIT_EXCEEDED, f"too many subscriptions on this socket (at most {MAX_SUBSCRIPTIONS})")
        criteria = None
        if kind == "logs":
            flt = params[1] if len(params) > 1 and params[1] is not None else {}
            if not isinstance(flt, dict):
                raise j.RpcError(j.INVALID_PARAMS, "invalid argument 1: a filter is an object")
            criteria = logfilter.parse(flt)
        if self.follower is None or self.follower.done():
            self.next = int(await self.routes.executor("eth_blockNumber", []), 16) + 1
        sid = "0x" + os.urandom(16).hex()
        made[sid] = (kind, criteria)
        return sid

    def _unsubscribe(
        self, sock: Socket, params: list[Any], made: dict[str, tuple[str, logfilter.LogCriteria | None]]
    ) -> bool:
        sid = params[0] if params else None
        if not isinstance(sid, str) or (sock.subs.pop(sid, None) is None and made.pop(sid, None) is None):
            raise j.RpcError(j.SERVER, "subscription not found")
        self._gauges()
        return True

    def _start_follower(self) -> None:
        if (self.follower is None or self.follower.done()) and any(s.subs for s in self.sockets):
            self.follower = asyncio.create_task(self._follow())

    async def _follow(self) -> None:
        """Poll for new committed heights while anyone is subscribed; notify in height order."""
        while any(s.subs for s in self.sockets):
            want_logs = self.count("logs") > 0
            try:
                polled = await self.routes.executor("conclavium_newHeads", [{"next": self.next, "logs": want_logs}])
            except Exception as e:  # whatever failed, the follower must keep going: retried
                m.WS_FOLLOW_ERRORS.inc()
                log.warning("could not poll new heads for subscriptions, will retry: %s", e)
                await asyncio.sleep(RETRY_S)
                continue
            logs_by_height: dict[str, list[dict[str, Any]]] = {}
            for entry in polled["logs"]:
                logs_by_height.setdefault(entry["blockNumber"], []).append(entry)
            for head in polled["heads"]:
                self._notify("newHeads", head, None)
                for entry in logs_by_height.get(head["number"], []):
                    self._notify("logs", entry, entry)
            self.next = max(self.next, int(polled["next"]))
            if not polled["heads"]:
                await asyncio.sleep(POLL_S)

    def _notify(self, kind: str, result: dict[str, Any], entry: dict[str, Any] | None) -> None:
        for sock in list(self.sockets):
            for sid, (k, criteria) in list(sock.subs.items()):
                if k != kind or (criteria is not None and entry is not None and not criteria.matches(entry)):
                    continue
                note = {
                    "jsonrpc": "2.0",
                    "method": "eth_subscription",
                    "params": {"subscription": sid, "result": result},
                }
                sock.offer(_dumps(note), "notification")

    async def close(self) -> None:
        if self.follower is not None:
            self.follower.cancel()
        for sock in list(self.sockets):
            await sock.close(WSCloseCode.GOING_AWAY, b"the gateway is stopping")


def _error(rid: Any, e: j.RpcError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "error": e.to_json()}


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()
