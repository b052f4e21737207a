"""Sawtooth's REST API, the subset its clients use (docs/sawtooth.md): `POST /batches`,
`GET /batch_statuses`, `GET /state` and `GET /state/{address}`, with Sawtooth's error bodies
(`conclavium.sawtooth.rest`).

A submitted BatchList is checked here with the executors' own rules (`conclavium.sawtooth.batch`:
an early filter, the executors check again) and each batch becomes one entry of the `sawtooth`
application. Statuses and state come from an executor. A batch this gateway accepted that no
executor has executed yet is PENDING (Sawtooth's answer for a batch in its queue); the gateway
remembers the ids it accepted for a while, in memory, so another gateway answers UNKNOWN for it
until an executor has run it.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import Any

import orjson
from aiohttp import web

from conclavium.apps import app_entry
from conclavium.sawtooth import APP
from conclavium.sawtooth import rest as r
from conclavium.sawtooth.batch import ADDRESS, RESOURCE_ID, BatchError, parse_batch_list

from .. import metrics as m
from ..errors import ApiError
from ..limits import MAX_BATCH_BODY
from .base import ProtocolRoutes

ACCEPTED_MEMORY = 100_000  # batch ids accepted here, remembered as PENDING until an executor runs them
ACCEPTED_TTL_S = 600.0
POLL_S = 0.1
MAX_IDS = 100
HEX = frozenset("0123456789abcdef")


class SawtoothRoutes(ProtocolRoutes):
    name = APP

    def __init__(self, gateway: Any) -> None:
        super().__init__(gateway)
        self.accepted: OrderedDict[str, float] = OrderedDict()

    def add_submission_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/batches", self.post_batches)

    def add_query_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/batch_statuses", self.get_batch_statuses)
        router.add_get("/state", self.get_state_list)
        router.add_get("/state/{address}", self.get_state)

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
        self.gw._admit(len(batches))
        await self.gw._submit_entries([app_entry(APP, b.raw, b"") for b in batches])
        m.TX_RECEIVED.inc(len(batches))
        now = time.monotonic()
        for b in batches:
            self.accepted[b.id] = now
            self.accepted.move_to_end(b.id)
        while len(self.accepted) > ACCEPTED_MEMORY:
            self.accepted.popitem(last=False)
        link = f"{_base(request)}/batch_statuses?id={','.join(b.id for b in batches)}"
        return _json({"link": link}, 202)

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
        limit_text = q.get("limit", str(r.DEFAULT_STATE_PAGE))
        if not (limit_text.isascii() and limit_text.isdigit() and len(limit_text) <= 6) or int(limit_text) == 0:
            return _error(r.COUNT_INVALID, limit_text[:20])
        limit = int(limit_text)
        if limit > r.MAX_STATE_PAGE:
            return _error(r.PAGING_INVALID, f"limit is at most {r.MAX_STATE_PAGE}")
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

    async def _ask(self, req: dict[str, Any], fresh: bool = False) -> dict[str, Any] | web.Response:
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
        return _error(r.UNKNOWN_VALIDATOR_ERROR, f"{code}: {str(err.get('message'))[:200]}")


def _base(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, content_type="application/json")


def _error(e: r.RestError, detail: str = "") -> web.Response:
    resp = _json(e.body(detail), e.status)
    if e.status == 503:
        resp.headers["Retry-After"] = "1"
    return resp
