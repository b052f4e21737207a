"""The notary's routes: notarisation requests in (one, or a batch), their status, and who
consumed a state (a signed query answered sealed to the asking party)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from conclavium.apps import app_entry
from conclavium.notary import request as nr

from .. import metrics as m
from ..errors import ApiError, _json
from ..limits import MAX_BATCH, MAX_BATCH_BODY, MAX_SINGLE_BODY
from .base import ProtocolRoutes


class NotaryRoutes(ProtocolRoutes):
    """`POST /v1/notary/requests`, `GET /v1/notary/requests/{hash}`, `POST /v1/notary/who-consumed`."""

    name = nr.NOTARY_APP

    def add_submission_routes(self, r: web.UrlDispatcher) -> None:
        r.add_post("/v1/notary/requests", self.post_requests)

    def add_query_routes(self, r: web.UrlDispatcher) -> None:
        r.add_get("/v1/notary/requests/{hash}", self.get_request)
        r.add_post("/v1/notary/who-consumed", self.post_who_consumed)

    def check(self, obj: Any) -> nr.Request:
        """Shape and ledger (cheap); the party's signature only with the early check enabled. The
        executors check everything again: nothing here is trusted."""
        try:
            req = nr.from_json(obj, self.gw.cfg.ledger)
        except nr.RequestError as e:
            m.TX_REJECTED.labels(e.code).inc()
            raise ApiError(413 if e.code == "too_large" else 400, e.code, e.message) from None
        if self.gw.cfg.verify_signatures:
            key = self.gw._keys.get(req.fields.party)
            if key is not None and not key.verify(req.signature, req.body):
                m.TX_REJECTED.labels("bad_signature").inc()
                raise ApiError(400, "bad_signature", "the signature does not verify with the party's key")
        return req

    async def post_requests(self, request: web.Request) -> web.Response:
        """One request `{"body", "signature"}` (202 `{"request_hash"}`), or a batch
        `{"requests": [...]}` of up to MAX_BATCH, in order (202 `{"request_hashes"}`)."""
        obj = await self.gw._read_json(request, MAX_BATCH_BODY)
        batch = isinstance(obj, dict) and "requests" in obj
        if not batch:
            if request.content_length is not None and request.content_length > MAX_SINGLE_BODY:
                raise ApiError(413, "too_large", f"a single request body is at most {MAX_SINGLE_BODY} bytes")
            items = [obj]
        else:
            items = obj["requests"]
            if not isinstance(items, list) or not items:
                raise ApiError(400, "missing_field", 'a batch is {"requests": [...]} with at least one')
            if len(items) > MAX_BATCH:
                raise ApiError(413, "too_many", f"at most {MAX_BATCH} requests per batch")
        reqs = []
        for i, item in enumerate(items):
            try:
                reqs.append(self.check(item))
            except ApiError as e:
                raise ApiError(e.status, e.code, f"request {i}: {e.message}" if batch else e.message) from None
        self.gw._admit(len(reqs))
        hashes = await self.gw._submit_entries([app_entry(nr.NOTARY_APP, r.body, r.signature) for r in reqs])
        m.TX_RECEIVED.inc(len(reqs))
        m.NOTARY_REQUESTS.inc(len(reqs))
        if batch:
            return _json({"request_hashes": hashes}, status=202)
        return _json({"request_hash": hashes[0]}, status=202)

    async def get_request(self, request: web.Request) -> web.Response:
        h = request.match_info["hash"].lower()
        if len(h) != 64 or not all(c in "0123456789abcdef" for c in h):
            raise ApiError(400, "invalid_hash", "a request hash is 64 hex digits")
        answer = await self.gw.ask_executor({"type": "notary_request", "tx": h})
        if "error" in answer:
            return self.gw._relay(answer)
        return _json({"request_hash": h, **answer})

    async def post_who_consumed(self, request: web.Request) -> web.Response:
        obj = await self.gw._read_json(request, MAX_SINGLE_BODY)
        if not isinstance(obj, dict) or not all(isinstance(obj.get(k), str) for k in ("body", "signature")):
            raise ApiError(400, "missing_field", "a who-consumed query needs 'body' and 'signature'")
        req = {"type": "notary_who_consumed", "query": {"body": obj["body"], "signature": obj["signature"]}}
        answer = await self.gw.ask_fresh(req, 0)
        err = answer.get("error")
        if err is not None and err["code"] == "unknown_party":
            raise ApiError(401, err["code"], err["message"])
        return self.gw._relay(answer)
