"""Sawtooth's REST API, the subset its clients use (docs/sawtooth.md): `POST /batches`,
`GET /batch_statuses`, `GET /state` and `GET /state/{address}`, `GET /blocks`, `/batches` and
`/transactions` (and each `/{id}`), `GET /receipts?id=`, with Sawtooth's error bodies
(`conclavium.sawtooth.rest`).

A submitted BatchList is checked here with the executors' own rules (`conclavium.sawtooth.batch`:
an early filter, the executors check again) and each batch becomes one entry of the `sawtooth`
application. Statuses and state come from an executor. A batch this gateway accepted that no
executor has executed yet is PENDING (Sawtooth's answer for a batch in its queue); the gateway
remembers the ids it accepted for a while, in memory, so another gateway answers UNKNOWN for it
until an executor has run it. A batch for an approved family whose TP has not registered yet is
held here before ordering (`sawtooth_hold`), PENDING meanwhile.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from typing import Any

import orjson
from aiohttp import web

from conclavium.apps import app_entry
from conclavium.sawtooth import APP
from conclavium.sawtooth import rest as r
from conclavium.sawtooth.batch import ADDRESS, RESOURCE_ID, BatchError, ParsedBatch, parse_batch_list

from .. import metrics as m
from ..errors import ApiError
from ..limits import MAX_BATCH_BODY
from .base import ProtocolRoutes
from .sawtooth_hold import HeldFull, TpWait

ACCEPTED_MEMORY = 100_000  # batch ids accepted here, remembered as PENDING until an executor runs them
ACCEPTED_TTL_S = 600.0
POLL_S = 0.1
MAX_IDS = 100
MAX_SIGNER_KEYS = 1000  # distinct signers of one BatchList the gateway asks the executors about
HEX = frozenset("0123456789abcdef")
BLOCK_ID = re.compile(r"^[0-9a-f]{64}$")  # a block here is a ledger block: its id is the block's hash
ONE = {"blocks": "sawtooth_block", "batches": "sawtooth_batch", "transactions": "sawtooth_transaction"}
NOT_FOUND = {"blocks": r.BLOCK_NOT_FOUND, "batches": r.BATCH_NOT_FOUND, "transactions": r.TRANSACTION_NOT_FOUND}


class SawtoothRoutes(ProtocolRoutes):
    name = APP

    def __init__(self, gateway: Any) -> None:
        super().__init__(gateway)
        self.accepted: OrderedDict[str, float] = OrderedDict()
        self.tp_wait = TpWait(self._ask_quietly, self._submit, gateway.cfg.sawtooth_hold_s)

    def add_submission_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/batches", self.post_batches)

    def add_query_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/batch_statuses", self.get_batch_statuses)
        router.add_get("/state", self.get_state_list)
        router.add_get("/state/{address}", self.get_state)
        router.add_get("/blocks", self.get_blocks)
        router.add_get("/blocks/{id}", self.get_one)
        router.add_get("/batches", self.get_list)
        router.add_get("/batches/{id}", self.get_one)
        router.add_get("/transactions", self.get_list)
        router.add_get("/transactions/{id}", self.get_one)
        router.add_get("/receipts", self.get_receipts)

    # --- submissions ----------------------------------------------------------------------------

    async def post_batches(self, request: web.Request) -> web.Response:
        if request.content_type != "application/octet-stream":
            return _error(r.SUBMISSION_WRONG_CONTENT_TYPE)
        if request.content_length is not None and request.content_length > MAX_BATCH_BODY:
            raise ApiError(413, "too_large", f"request body exceeds {MAX_BATCH_BODY} bytes")
        body = await request.read()
        try:
            batches = parse_batch_list(body)
        except BatchError as e:
            m.TX_REJECTED.labels(f"sawtooth_{e.code}").inc()
            err = r.BATCH_ERRORS.get(e.code)
            return _error(err) if err is not None else _error(r.SUBMITTED_BATCHES_INVALID, e.message)
        refused, held = await asyncio.gather(self._unregistered_signer(batches), self.tp_wait.must_hold(batches))
        if refused is not None:
            m.TX_REJECTED.labels("sawtooth_unregistered_signer").inc()
            return _error(r.SUBMITTED_BATCHES_INVALID, refused)
        self.gw._admit(len(batches))
        if held:
            try:
                self.tp_wait.hold(batches)
            except HeldFull as e:
                m.TX_REJECTED.labels("sawtooth_held_full").inc(len(batches))
                return _error(r.BATCH_QUEUE_FULL, str(e))
        else:
            await self._submit(batches)
        link = f"{_base(request)}/batch_statuses?id={','.join(b.id for b in batches)}"
        return _json({"link": link}, 202)

    async def _submit(self, batches: list[ParsedBatch]) -> None:
        """Into the intake, remembered as accepted here (PENDING until an executor runs them)."""
        await self.gw._submit_entries([app_entry(APP, b.raw, b"") for b in batches])
        m.TX_RECEIVED.inc(len(batches))
        self.tp_wait.taken_again(batches)
        now = time.monotonic()
        for b in batches:
            self.accepted[b.id] = now
            self.accepted.move_to_end(b.id)
        while len(self.accepted) > ACCEPTED_MEMORY:
            self.accepted.popitem(last=False)

    async def _ask_quietly(self, req: dict[str, Any]) -> dict[str, Any] | None:
        """An executor's answer at least as new as the newest commit heard of; None when none
        answers or it refuses."""
        answer = await self._ask(req, fresh=True)
        return None if isinstance(answer, web.Response) else answer

    async def close(self) -> None:
        await self.tp_wait.close()

    async def _unregistered_signer(self, batches: list[ParsedBatch]) -> str | None:
        """Why the batches are refused for a signer governance did not register, by an executor's
        state at least as new as the newest commit heard of (an early refusal, as Sawtooth's
        validator refuses at submission; the executors decide at apply whatever this says, so no
        answer, or too many keys to ask about, lets the batches through)."""
        keys = list(dict.fromkeys(k for b in batches for k in (b.signer, *(t.signer for t in b.txns))))
        if len(keys) > MAX_SIGNER_KEYS:
            return None
        answer = await self._ask({"type": "sawtooth_unregistered", "keys": keys}, fresh=True)
        if isinstance(answer, web.Response) or not answer.get("unregistered"):
            return None
        refused = set(answer["unregistered"])
        for i, b in enumerate(batches):
            if b.signer in refused:
                return f"batch {i}: the batch signer {b.signer} is not a registered Sawtooth signer"
            for j, t in enumerate(b.txns):
                if t.signer in refused:
                    return f"batch {i}: transaction {j}: the signer {t.signer} is not a registered Sawtooth signer"
        return None

    # --- reads ----------------------------------------------------------------------------------

    async def get_batch_statuses(self, request: web.Request) -> web.Response:
        text = request.query.get("id", "")
        ids = [i for i in text.split(",") if i]
        if not ids or len(ids) > MAX_IDS:
            return _error(r.STATUS_ID_QUERY_INVALID)
        for i in ids:
            if not RESOURCE_ID.fullmatch(i):
                return _error(r.INVALID_RESOURCE_ID, i[:140])
        wait = r.wait_seconds(request.query.get("wait"))
        deadline = time.monotonic() + wait
        while True:
            answer = await self._ask({"type": "sawtooth_batch_statuses", "ids": ids})
            if isinstance(answer, web.Response):
                return answer
            data = [self._pending_if_accepted(item) for item in answer["data"]]
            if all(d["status"] != "PENDING" for d in data) or time.monotonic() >= deadline:
                return _json({"data": data, "link": str(request.url)})
            await asyncio.sleep(POLL_S)

    def _pending_if_accepted(self, item: dict[str, Any]) -> dict[str, Any]:
        if item["status"] == "UNKNOWN":
            here = self.tp_wait.status(item["id"])
            if here is not None:
                return here
            at = self.accepted.get(item["id"])
            if at is not None and time.monotonic() - at < ACCEPTED_TTL_S:
                return {**item, "status": "PENDING"}
        return item

    async def get_state(self, request: web.Request) -> web.Response:
        address = request.match_info["address"]
        if not ADDRESS.fullmatch(address):
            return _error(r.INVALID_STATE_ADDRESS, address[:80])
        answer = await self._ask({"type": "sawtooth_state", "address": address}, fresh=True)
        if isinstance(answer, web.Response):
            return answer
        if answer.get("data") is None:
            return _error(r.STATE_NOT_FOUND)
        return _json({"data": answer["data"], "head": answer["head"], "link": str(request.url)})

    async def get_state_list(self, request: web.Request) -> web.Response:
        q = request.query
        prefix = q.get("address", "")
        if len(prefix) > 70 or not set(prefix) <= HEX:
            return _error(r.INVALID_STATE_ADDRESS, prefix[:80])
        limit = _page_limit(request)
        if isinstance(limit, web.Response):
            return limit
        start = q.get("start")
        if start is not None and not ADDRESS.fullmatch(start):
            return _error(r.PAGING_INVALID, "start is a state address (a next_position)")
        req = {"type": "sawtooth_state_list", "prefix": prefix, "limit": limit, "start": start or ""}
        answer = await self._ask(req, fresh=True)
        if isinstance(answer, web.Response):
            return answer
        head = q.get("head")
        if head is not None and head != answer["head"]:
            return _error(r.HEAD_NOT_FOUND, head[:140])
        paging: dict[str, Any] = {"limit": limit, "start": start or None}
        nxt = answer.get("next_position")
        if nxt is not None:
            paging["next_position"] = nxt
            paging["next"] = str(request.url.update_query({"start": nxt, "limit": str(limit)}))
        return _json({"data": answer["data"], "head": answer["head"], "link": str(request.url), "paging": paging})

    async def get_blocks(self, request: web.Request) -> web.Response:
        """`/blocks`: newest first; paging positions are block numbers as Sawtooth writes them
        (`0x` and 16 hex digits)."""
        limit = _page_limit(request)
        if isinstance(limit, web.Response):
            return limit
        text = request.query.get("start")
        start = _block_num(text) if text is not None else None
        if text is not None and start is None:
            return _error(r.PAGING_INVALID, "start is a block number: 0x and 16 hex digits (a next_position)")
        return await self._list(request, {"type": "sawtooth_blocks", "limit": limit, "start": start}, limit)

    async def get_list(self, request: web.Request) -> web.Response:
        """`/batches`, `/transactions`: newest block first; paging positions are ids."""
        limit = _page_limit(request)
        if isinstance(limit, web.Response):
            return limit
        start = request.query.get("start")
        if start is not None and not RESOURCE_ID.fullmatch(start):
            return _error(r.PAGING_INVALID, "start is an id (a next_position)")
        kind = request.path.strip("/").split("/")[0]
        return await self._list(request, {"type": f"sawtooth_{kind}", "limit": limit, "start": start}, limit)

    async def _list(self, request: web.Request, req: dict[str, Any], limit: int) -> web.Response:
        answer = await self._ask(req, fresh=True)
        if isinstance(answer, web.Response):
            return answer
        head = request.query.get("head")
        if head is not None and head != answer["head"]:
            return _error(r.HEAD_NOT_FOUND, head[:140])
        paging: dict[str, Any] = {"limit": limit, "start": request.query.get("start")}
        nxt = answer.get("next_position")
        if nxt is not None:
            nxt = f"0x{nxt:016x}" if isinstance(nxt, int) else nxt
            paging["next_position"] = nxt
            paging["next"] = str(request.url.update_query({"start": nxt, "limit": str(limit)}))
        return _json({"data": answer["data"], "head": answer["head"], "link": str(request.url), "paging": paging})

    async def get_one(self, request: web.Request) -> web.Response:
        """`/blocks/{id}`, `/batches/{id}`, `/transactions/{id}`."""
        kind = request.path.strip("/").split("/")[0]
        rid = request.match_info["id"]
        pattern = BLOCK_ID if kind == "blocks" else RESOURCE_ID
        if not pattern.fullmatch(rid):
            return _error(r.INVALID_RESOURCE_ID, rid[:140])
        answer = await self._ask({"type": ONE[kind], "id": rid}, fresh=True, not_found=NOT_FOUND[kind])
        if isinstance(answer, web.Response):
            return answer
        return _json({"data": answer["data"], "head": answer["head"], "link": str(request.url)})

    async def get_receipts(self, request: web.Request) -> web.Response:
        """`/receipts?id=`: receipts of committed transactions; an id without one is 80."""
        ids = [i for i in request.query.get("id", "").split(",") if i]
        if not ids or len(ids) > MAX_IDS:
            return _error(r.STATUS_ID_QUERY_INVALID)
        for i in ids:
            if not RESOURCE_ID.fullmatch(i):
                return _error(r.INVALID_RESOURCE_ID, i[:140])
        answer = await self._ask({"type": "sawtooth_receipts", "ids": ids}, fresh=True, not_found=r.RECEIPT_NOT_FOUND)
        if isinstance(answer, web.Response):
            return answer
        return _json({"data": answer["data"], "head": answer["head"], "link": str(request.url)})

    async def _ask(
        self, req: dict[str, Any], fresh: bool = False, not_found: r.RestError | None = None
    ) -> dict[str, Any] | web.Response:
        """An executor's answer, or the Sawtooth error response that stands for its refusal."""
        try:
            answer = await (self.gw.ask_fresh(req, 0) if fresh else self.gw.ask_executor(req))
        except ApiError as e:
            if e.status == 503:
                return _error(r.VALIDATOR_TIMED_OUT)
            raise
        err = answer.get("error")
        if err is None:
            return answer
        code = err.get("code")
        if code == "unknown_query":
            return _error(r.VALIDATOR_NOT_READY)
        if code == "behind":
            return _error(r.VALIDATOR_TIMED_OUT)
        if code == "invalid_address":
            return _error(r.INVALID_STATE_ADDRESS, str(err.get("message"))[:200])
        if code in ("invalid_paging", "invalid_ids", "invalid_id"):
            return _error(r.PAGING_INVALID, str(err.get("message"))[:200])
        if code == "not_found" and not_found is not None:
            return _error(not_found, str(err.get("message"))[:200] if not_found is r.RECEIPT_NOT_FOUND else "")
        return _error(r.UNKNOWN_VALIDATOR_ERROR, f"{code}: {str(err.get('message'))[:200]}")


def _page_limit(request: web.Request) -> int | web.Response:
    text = request.query.get("limit", str(r.DEFAULT_STATE_PAGE))
    if not (text.isascii() and text.isdigit() and len(text) <= 6) or int(text) == 0:
        return _error(r.COUNT_INVALID, text[:20])
    if int(text) > r.MAX_STATE_PAGE:
        return _error(r.PAGING_INVALID, f"limit is at most {r.MAX_STATE_PAGE}")
    return int(text)


def _block_num(text: str) -> int | None:
    """A block number as Sawtooth writes paging positions (`0x` and 16 hex digits)."""
    if len(text) == 18 and text.startswith("0x") and set(text[2:]) <= HEX:
        return int(text[2:], 16)
    return None


def _base(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, content_type="application/json")


def _error(e: r.RestError, detail: str = "") -> web.Response:
    resp = _json(e.body(detail), e.status)
    if e.status == 503:
        resp.headers["Retry-After"] = "1"
    return resp
