"""The key-value protocol's routes: signed transactions in, public reads and signed queries out."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from conclavium import read_answer
from conclavium.apps import KV
from conclavium.block import Entry, Kind
from conclavium.tx import MAP_NAME, MAX_KEY_LEN, SignedTx, TxError, from_json, parse_body

from .. import metrics as m
from ..errors import ApiError, _json
from ..limits import MAX_BATCH, MAX_BATCH_BODY, MAX_SINGLE_BODY
from ..openapi import MAX_HEIGHT
from .base import ProtocolRoutes


class KeyValueRoutes(ProtocolRoutes):
    """`POST /v1/transactions`, `/v1/transactions/batch`, `GET /v1/state/{map}/{key}`, `POST /v1/queries`."""

    name = KV

    def add_submission_routes(self, r: web.UrlDispatcher) -> None:
        r.add_post("/v1/transactions", self.post_transaction)
        r.add_post("/v1/transactions/batch", self.post_batch)

    def add_query_routes(self, r: web.UrlDispatcher) -> None:
        r.add_get("/v1/state/{map}/{key}", self.get_state)
        r.add_post("/v1/queries", self.post_query)

    def check(self, obj: Any) -> SignedTx:
        try:
            tx = from_json(obj)
            parsed = parse_body(tx.body, ledger=self.gw.cfg.ledger)
        except TxError as e:
            m.TX_REJECTED.labels(e.code).inc()
            status = 413 if e.code == "too_large" else 400
            raise ApiError(status, e.code, e.message) from None
        if self.gw.cfg.verify_signatures:
            key = self.gw._keys.get(parsed.sender)
            if key is not None and not key.verify(tx.signature, tx.body):
                m.TX_REJECTED.labels("bad_signature").inc()
                raise ApiError(400, "bad_signature", "the signature does not verify with the sender's key")
        return tx

    async def submit(self, txs: list[SignedTx]) -> list[str]:
        self.gw._admit(len(txs))
        hexes = await self.gw._submit_entries([Entry(Kind.TX, tx.body, tx.signature) for tx in txs])
        m.TX_RECEIVED.inc(len(txs))
        return hexes

    async def post_transaction(self, request: web.Request) -> web.Response:
        tx = self.check(await self.gw._read_json(request, MAX_SINGLE_BODY))
        (h,) = await self.submit([tx])
        return _json({"tx_hash": h}, status=202)

    async def post_batch(self, request: web.Request) -> web.Response:
        obj = await self.gw._read_json(request, MAX_BATCH_BODY)
        items = obj.get("transactions") if isinstance(obj, dict) else None
        if not isinstance(items, list) or not items:
            raise ApiError(400, "missing_field", 'a batch is {"transactions": [...]} with at least one')
        if len(items) > MAX_BATCH:
            raise ApiError(413, "too_many", f"at most {MAX_BATCH} transactions per batch")
        txs = []
        for i, item in enumerate(items):
            try:
                txs.append(self.check(item))
            except ApiError as e:
                raise ApiError(e.status, e.code, f"transaction {i}: {e.message}") from None
        return _json({"tx_hashes": await self.submit(txs)}, status=202)

    async def get_state(self, request: web.Request) -> web.Response:
        map_name, key = request.match_info["map"], request.match_info["key"]
        if not MAP_NAME.fullmatch(map_name):
            raise ApiError(400, "invalid_map", f"invalid map name {map_name[:64]!r}")
        if not 0 < len(key) <= MAX_KEY_LEN:
            raise ApiError(400, "invalid_key", f"a key has 1 to {MAX_KEY_LEN} characters")
        wanted = self.gw.min_height(request)
        return self.gw._relay(await self.gw.ask_fresh(read_answer.state_request(map_name, key), wanted))

    async def post_query(self, request: web.Request) -> web.Response:
        obj = await self.gw._read_json(request, MAX_SINGLE_BODY)
        if not isinstance(obj, dict) or not all(isinstance(obj.get(k), str) for k in ("body", "signature")):
            raise ApiError(400, "missing_field", "a query needs 'body' and 'signature'")
        # the executor reads only these two: anything else (nested past what JSON re-encodes) stays here
        req = read_answer.query_request(obj["body"], obj["signature"])
        wanted = obj.get("min_height", 0)
        if isinstance(wanted, float) and wanted.is_integer():
            wanted = int(wanted)  # JSON has one number type: 7.0 is the integer 7
        if type(wanted) is not int or not 0 <= wanted <= MAX_HEIGHT:
            raise ApiError(400, "invalid_min_height", f"min_height is an integer from 0 to {MAX_HEIGHT}")
        return self.gw._relay(await self.gw.ask_fresh(req, wanted))
