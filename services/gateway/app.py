"""The gateway's HTTP API (aiohttp). Untrusted by design: it checks shapes and sizes, makes
submissions durable, and relays reads to executors; it can delay or refuse, never forge."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import nats.errors
import orjson
from aiohttp import web

from conclavium import cose, read_answer, streams, tx_key_vouch
from conclavium.block import Entry, Kind, entry_id
from conclavium.crypto.keys import PublicKey
from conclavium.encoding import b64d, dumps, loads, unpack
from conclavium.governance.model import PROPOSAL_STATES
from conclavium.runtime import connect_nats, metrics_handler

from . import metrics as m
from . import protocols
from .admission import AdmissionBound
from .errors import ApiError, _json, error_response
from .intake import IntakeBatcher, IntakeUnavailable
from .limits import MAX_BATCH, MAX_BATCH_BODY
from .node_progress import NodeProgress, sequencer_lease
from .openapi import MAX_HEIGHT, openapi_document
from .status_store import MemoryStatusStore, RedisStatusStore

__all__ = ["MAX_BATCH", "ApiError", "Gateway", "GatewayConfig", "error_response", "route_table"]

log = logging.getLogger("conclavium.gateway")

HASH = re.compile(r"^[0-9a-f]{64}$")
SERVICE_CACHE_S = 1.0
PENDING_TRACK_S = 600
FRESH_READ_WAIT_S = 3.0
ENDORSED_ANSWER_WAIT_S = 1.0


@dataclass
class GatewayConfig:
    ledger: str
    nats_url: str
    redis_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    verify_signatures: bool = False
    query_timeout_s: float = 5.0
    status_ttl_s: int = 24 * 3600
    stream_replicas: int = 1
    max_uncommitted: int = 20_000  # refuse new transactions (503) beyond this many awaiting commit; 0: no bound
    max_queue_s: float = 1.0  # ... or beyond this many seconds of commits at the recent rate; 0: count only
    sawtooth_hold_s: float = 120.0  # how long a Sawtooth batch waits here for its family's TP


def route_table(app: web.Application) -> list[tuple[str, str]]:
    """(method, path) of every route, as the OpenAPI document names them."""
    return [(r.method, r.resource.canonical) for r in app.router.routes() if r.resource is not None]


class Gateway:
    def __init__(self, cfg: GatewayConfig) -> None:
        self.cfg = cfg
        self.nc: Any = None
        self.js: Any = None
        self.intake: IntakeBatcher | None = None
        self.store: MemoryStatusStore | RedisStatusStore = (
            RedisStatusStore(cfg.redis_url, cfg.ledger, cfg.status_ttl_s) if cfg.redis_url else MemoryStatusStore()
        )
        self.submitted: OrderedDict[bytes, float] = OrderedDict()
        self.admission = AdmissionBound(cfg.max_uncommitted, cfg.max_queue_s)
        self.seen_commits: OrderedDict[int, None] = OrderedDict()
        self._service: tuple[float, dict[str, Any]] | None = None
        self._vouches: tuple[float, dict[str, Any]] | None = None
        self._keys: dict[str, PublicKey] = {}
        self._refresher: asyncio.Task[None] | None = None
        self.commit_height = 0
        self.routers: list[protocols.ProtocolRoutes] = []
        self.progress = NodeProgress()

    # --- life ------------------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BATCH_BODY, middlewares=[self._middleware])
        r = app.router
        self.routers = protocols.add_submission_routes(r, self)
        # "batch" is the batch resource, not a hash: without the exclusion GET would match it too
        r.add_get("/v1/transactions/{hash:(?!batch$)[^/]+}", self.get_status)
        r.add_get("/v1/transactions/{hash}/receipt", self.get_receipt)
        protocols.add_query_routes(r, self.routers)
        r.add_get("/v1/service", self.get_service)
        r.add_get("/v1/service/tx-key", self.get_tx_key)
        r.add_get("/v1/runtime", self.get_runtime)
        r.add_post("/v1/gov/proposals", self.post_proposal)
        r.add_post("/v1/gov/proposals/{id}/ballots", self.post_ballot)
        r.add_post("/v1/gov/proposals/{id}/withdraw", self.post_withdrawal)
        r.add_get("/v1/gov/proposals", self.get_proposals)
        r.add_get("/v1/gov/proposals/{id}", self.get_proposal)
        r.add_get("/v1/gov/constitution", self.get_constitution)
        r.add_get("/v1/gov/members", self.get_members)
        r.add_post("/v1/nodes/{id}/endorsement", self.post_node_endorsement)
        r.add_get("/v1/nodes/{id}/attestation", self.get_node_attestation)
        r.add_get("/v1/recovery", self.get_recovery)
        r.add_post("/v1/gov/recovery-shares", self.post_recovery_share)
        r.add_get("/openapi.json", self.get_openapi)
        r.add_get("/healthz", self.healthz)
        r.add_get("/readyz", self.readyz)
        r.add_get("/metrics", metrics_handler)
        self.openapi = openapi_document(route_table(app))
        app.on_startup.append(self._start)
        app.on_shutdown.append(self._close_routers)  # before aiohttp waits for open connections
        app.on_cleanup.append(self._stop)
        return app

    async def _start(self, _: web.Application) -> None:
        self.nc = await connect_nats(self.cfg.nats_url, "gateway")
        self.js = self.nc.jetstream(timeout=10)
        await streams.ensure_streams(self.js, self.cfg.ledger, self.cfg.stream_replicas)
        self.intake = IntakeBatcher(self.js, self.cfg.ledger, connected=lambda: bool(self.nc.is_connected))
        await self.nc.subscribe(streams.status_subject(self.cfg.ledger), cb=self._on_status)
        if self.cfg.verify_signatures:
            self._refresher = asyncio.create_task(self.refresh_keys())

    async def _close_routers(self, _: web.Application) -> None:
        for router in self.routers:
            await router.close()

    async def _stop(self, _: web.Application) -> None:
        if self._refresher:
            self._refresher.cancel()
        if self.intake:
            await self.intake.close()
        with contextlib.suppress(Exception):
            await self.nc.drain()
        await self.store.close()

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
        t0 = time.perf_counter()
        try:
            resp = await handler(request)
        except ApiError as e:
            resp = error_response(e.status, e.code, e.message, e.headers, e.signed_read)
        except web.HTTPRequestEntityTooLarge:
            resp = error_response(413, "too_large", "request body is too large")
        except web.HTTPException as e:
            code = {404: "not_found", 405: "method_not_allowed"}.get(e.status, "http_error")
            allow = {"Allow": e.headers["Allow"]} if "Allow" in e.headers else None
            resp = error_response(e.status, code, e.reason, allow)
        except Exception:
            log.exception("unhandled error on %s", request.path)
            resp = error_response(500, "internal", "internal error")
        m.REQUESTS.labels(route, request.method, str(resp.status)).inc()
        if not isinstance(resp, web.WebSocketResponse):  # a socket's lifetime is no request latency
            m.REQUEST_SECONDS.labels(route).observe(time.perf_counter() - t0)
        return resp

    # --- submissions -----------------------------------------------------------------------------

    async def _read_json(self, request: web.Request, limit: int) -> Any:
        if request.content_type != "application/json":
            raise ApiError(415, "unsupported_media_type", "send application/json")
        if request.content_length is not None and request.content_length > limit:
            raise ApiError(413, "too_large", f"request body exceeds {limit} bytes")
        body = await request.read()
        if len(body) > limit:
            raise ApiError(413, "too_large", f"request body exceeds {limit} bytes")
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            raise ApiError(400, "invalid_json", "request body is not valid JSON") from None

    def _admit(self, n: int) -> None:
        """Backpressure: beyond capacity, queueing inside the ledger only adds latency to every
        transaction (and throughput falls), so past a bound of transactions accepted here and not
        yet committed (`AdmissionBound`), clients are told to come back. Governance documents are
        never refused."""
        bound = self.admission.bound()
        m.ADMISSION_BOUND.set(bound)
        if bound and len(self.submitted) + n > bound:
            m.TX_REJECTED.labels("overloaded").inc(n)
            raise ApiError(
                503,
                "overloaded",
                f"{len(self.submitted)} transactions accepted here are still awaiting commit; retry later",
                {"Retry-After": "1"},
            )

    async def _submit_entries(self, entries: list[Entry]) -> list[str]:
        """Make entries durable in the intake, then remember them as pending; returns their ids."""
        assert self.intake is not None
        # Tracked before they are published: on a fast ledger the commit event can arrive before
        # the intake's acknowledgement, and an entry tracked after it would wait for ever.
        now = time.monotonic()
        ids = [entry_id(e) for e in entries]
        fresh = [eid for eid in ids if eid not in self.submitted]
        for eid in fresh:
            self.submitted[eid] = now
        try:
            await self.intake.submit(entries)
        except IntakeUnavailable as e:
            for eid in fresh:
                self.submitted.pop(eid, None)
            raise ApiError(503, "intake_unavailable", str(e), {"Retry-After": "1"}) from None
        self._trim_submitted(now)
        m.UNCOMMITTED.set(len(self.submitted))
        hexes = [eid.hex() for eid in ids]
        with contextlib.suppress(Exception):
            await self.store.set_pending(hexes)
        return hexes

    def _trim_submitted(self, now: float) -> None:
        while self.submitted:
            t = next(iter(self.submitted.values()))
            if now - t < PENDING_TRACK_S and len(self.submitted) < 2_000_000:
                break
            self.submitted.popitem(last=False)

    # --- governance ------------------------------------------------------------------------------

    async def _read_document(self, request: web.Request, msg_type: str, proposal_id: str | None) -> bytes:
        """A COSE_Sign1 governance document, raw (application/cose) or as {"document": base64}."""
        if request.content_type == "application/cose":
            if request.content_length is not None and request.content_length > cose.MAX_DOCUMENT_BYTES:
                raise ApiError(413, "too_large", "governance document is too large")
            doc = await request.read()
        else:
            obj = await self._read_json(request, 2 * cose.MAX_DOCUMENT_BYTES)
            try:
                doc = b64d(obj["document"])
            except (KeyError, TypeError, ValueError):
                raise ApiError(400, "missing_field", 'send {"document": base64 COSE_Sign1}') from None
        if len(doc) > cose.MAX_DOCUMENT_BYTES:
            raise ApiError(413, "too_large", "governance document is too large")
        try:
            parsed = cose.parse1(doc)
        except cose.CoseError as e:
            raise ApiError(400, "invalid_document", str(e)) from None
        if parsed.protected.get(cose.HDR_MSG_TYPE) != msg_type:
            raise ApiError(400, "wrong_document_type", f"this endpoint takes a {msg_type}")
        named = parsed.protected.get(cose.HDR_LEDGER)
        if named is None:
            raise ApiError(400, "missing_ledger", f"the document must name its ledger ({cose.HDR_LEDGER})")
        if named != self.cfg.ledger:
            raise ApiError(400, "wrong_ledger", f"the document is for another ledger than {self.cfg.ledger!r}")
        if proposal_id is not None and parsed.protected.get(cose.HDR_PROPOSAL_ID) != proposal_id:
            raise ApiError(400, "proposal_mismatch", "the document names another proposal than the URL")
        return doc

    async def _submit_document(self, doc: bytes) -> str:
        return (await self._submit_entries([Entry(Kind.GOV, doc, b"")]))[0]

    async def post_proposal(self, request: web.Request) -> web.Response:
        h = await self._submit_document(await self._read_document(request, "proposal", None))
        return _json({"proposal_id": h, "tx_hash": h}, status=202)

    async def post_ballot(self, request: web.Request) -> web.Response:
        pid = self._proposal_id(request)
        h = await self._submit_document(await self._read_document(request, "ballot", pid))
        return _json({"proposal_id": pid, "tx_hash": h}, status=202)

    async def post_withdrawal(self, request: web.Request) -> web.Response:
        pid = self._proposal_id(request)
        h = await self._submit_document(await self._read_document(request, "withdrawal", pid))
        return _json({"proposal_id": pid, "tx_hash": h}, status=202)

    async def post_recovery_share(self, request: web.Request) -> web.Response:
        h = await self._submit_document(await self._read_document(request, "recovery_share", None))
        return _json({"tx_hash": h}, status=202)

    async def get_recovery(self, _: web.Request) -> web.Response:
        return self._relay(await self.ask_executor({"type": "recovery"}))

    async def post_node_endorsement(self, request: web.Request) -> web.Response:
        nid = request.match_info["id"].lower()
        if not HASH.match(nid):
            raise ApiError(400, "invalid_node_id", "a node id is 64 hex digits")
        doc = await self._read_document(request, "node_endorsement", None)
        try:
            named = loads(cose.parse1(doc).payload).get("node")
        except (ValueError, AttributeError):
            named = None
        if named != nid:
            raise ApiError(400, "node_mismatch", "the endorsement names another node than the URL")
        h = await self._submit_document(doc)
        return _json({"node_id": nid, "tx_hash": h}, status=202)

    @staticmethod
    def _proposal_id(request: web.Request) -> str:
        pid = request.match_info["id"].lower()
        if not HASH.match(pid):
            raise ApiError(400, "invalid_proposal_id", "a proposal id is 64 hex digits")
        return pid

    async def get_proposals(self, request: web.Request) -> web.Response:
        state = request.query.get("state")
        if state is not None and state not in PROPOSAL_STATES:
            raise ApiError(400, "invalid_state", f"state is one of {', '.join(PROPOSAL_STATES)}")
        return self._relay(await self.ask_fresh(read_answer.proposals_request(state), self.min_height(request)))

    async def get_proposal(self, request: web.Request) -> web.Response:
        pid = self._proposal_id(request)
        return self._relay(await self.ask_fresh(read_answer.proposal_request(pid), self.min_height(request)))

    async def get_constitution(self, request: web.Request) -> web.Response:
        return self._relay(await self.ask_fresh(read_answer.constitution_request(), self.min_height(request)))

    async def get_members(self, request: web.Request) -> web.Response:
        return self._relay(await self.ask_fresh(read_answer.members_request(), self.min_height(request)))

    async def get_node_attestation(self, request: web.Request) -> web.Response:
        nid = request.match_info["id"].lower()
        if not HASH.match(nid):
            raise ApiError(400, "invalid_node_id", "a node id is 64 hex digits")
        return self._relay(await self.ask_executor({"type": "node_attestation", "id": nid}))

    # --- status events from executors ------------------------------------------------------------

    async def _on_status(self, msg: Any) -> None:
        try:
            event = unpack(msg.data)
            committed, invalid = event.get("c", []), event.get("i", [])
        except (msgspec.DecodeError, AttributeError):
            return
        self.progress.observe(event)
        now = time.monotonic()
        items: list[tuple[str, int, int]] = []
        drained = 0
        for height, eids in committed:
            if height in self.seen_commits:
                continue
            self.seen_commits[height] = None
            self.commit_height = max(self.commit_height, height)
            for index, eid in enumerate(eids):
                items.append((eid.hex(), height, index))
                t = self.submitted.pop(eid, None)
                if t is not None:
                    drained += 1
                    m.SUBMIT_TO_COMMIT.observe(now - t)
        while len(self.seen_commits) > 100_000:
            self.seen_commits.popitem(last=False)
        for item in invalid:
            if self.submitted.pop(item[0], None) is not None:
                drained += 1
        self.admission.drained(drained)
        m.UNCOMMITTED.set(len(self.submitted))
        bad = [(item[0].hex(), "\n".join(item[1:3])) for item in invalid]
        try:
            await self.store.set_committed(items)
            await self.store.set_invalid(bad)
        except Exception as e:
            log.warning("status cache write failed: %s", e)
        m.STATUS_EVENTS.labels("Committed").inc(len(items))
        m.STATUS_EVENTS.labels("Invalid").inc(len(bad))

    # --- reads -----------------------------------------------------------------------------------

    async def ask_executor(self, request: dict[str, Any]) -> dict[str, Any]:
        """One executor's answer. NATS hands the request to any executor listening; one that is not
        endorsed (a joiner, a retired node) while another is says `not_endorsed`, and is asked again,
        so that the answer relayed is one that clients can verify. When no endorsed node answers
        within a second (none runs), a node that is not endorsed is asked to answer unsigned: the
        best there is, which a client that verifies refuses."""
        deadline = time.monotonic() + ENDORSED_ANSWER_WAIT_S
        while True:
            answer = await self._ask_any_executor(request)
            err = answer.get("error") if isinstance(answer, dict) else None
            if not (isinstance(err, dict) and err.get("code") == "not_endorsed"):
                return answer
            if time.monotonic() > deadline:
                m.UNENDORSED_READS.inc()
                return await self._ask_any_executor({**request, read_answer.UNENDORSED_OK: True})
            await asyncio.sleep(0.01)

    async def _ask_any_executor(self, request: dict[str, Any]) -> Any:
        if not self.nc.is_connected:
            raise ApiError(503, "no_executor", "not connected to NATS", {"Retry-After": "1"})
        try:
            msg = await self.nc.request(
                streams.query_subject(self.cfg.ledger), dumps(request), timeout=self.cfg.query_timeout_s
            )
        except (TimeoutError, nats.errors.NoRespondersError, nats.errors.TimeoutError):
            raise ApiError(503, "no_executor", "no executor answered", {"Retry-After": "1"}) from None
        return loads(msg.data)

    async def ask_fresh(self, req: dict[str, Any], min_height: int) -> dict[str, Any]:
        """A read at least as new as what the caller saw and as the newest commit this gateway has
        heard of (read-your-writes across executors); one still catching up is asked again. A height
        still beyond every commit heard of when the wait ends conflicts with the ledger's state (409),
        unlike a lagging executor (503)."""
        req["min_height"] = max(min_height, self.commit_height)
        deadline = time.monotonic() + FRESH_READ_WAIT_S
        while True:
            answer = await self.ask_executor(req)
            err = answer.get("error")
            if err is None or err.get("code") != "behind":
                return answer
            if time.monotonic() > deadline:
                if req["min_height"] > self.commit_height:
                    raise ApiError(
                        409,
                        "ahead_of_ledger",
                        f"no commit at height {req['min_height']} is known; min_height is a height the ledger returned",
                    )
                return answer
            await asyncio.sleep(0.02)

    @staticmethod
    def min_height(request: web.Request) -> int:
        """A read's `?min_height=` (default 0): answer from a state at least this new."""
        text = request.query.get("min_height", "0")
        wanted = int(text) if text.isascii() and text.isdigit() and len(text) <= 20 else -1
        if not 0 <= wanted <= MAX_HEIGHT:
            raise ApiError(400, "invalid_min_height", f"min_height is an integer from 0 to {MAX_HEIGHT}")
        return wanted

    @staticmethod
    def _hash(request: web.Request) -> str:
        h = request.match_info["hash"].lower()
        if not HASH.match(h):
            raise ApiError(400, "invalid_hash", "a transaction hash is 64 hex digits")
        return h

    async def get_status(self, request: web.Request) -> web.Response:
        h = self._hash(request)
        try:
            cached = await self.store.get(h)
        except Exception:
            cached = None
        if cached and cached["status"] in ("Committed", "Invalid"):
            return _json({"tx_hash": h, **cached})
        answer = await self.ask_executor({"type": "status", "tx": h})
        answer.pop(read_answer.FIELD, None)  # statuses are mixed with the cache's: proof is the receipt
        if "error" in answer:
            raise ApiError(400, answer["error"]["code"], answer["error"]["message"])
        if answer["status"] == "Unknown" and cached:
            answer = cached
        return _json({"tx_hash": h, **answer})

    async def get_receipt(self, request: web.Request) -> web.Response:
        h = self._hash(request)
        answer = await self.ask_executor({"type": "receipt", "tx": h})
        answer.pop(read_answer.FIELD, None)  # a receipt is its own proof
        err = answer.get("error")
        if err is None:
            return _json(answer)
        if err["code"] == "pending":
            raise ApiError(202, "pending", err["message"], {"Retry-After": "1"})
        if err["code"] == "not_found":
            try:
                cached = await self.store.get(h)
            except Exception:
                cached = None
            if cached and cached["status"] == "Pending":
                raise ApiError(202, "pending", "the transaction is not committed yet", {"Retry-After": "1"})
            if cached and cached["status"] == "Committed":
                # another executor reported the commit; the one that answered is still catching up
                raise ApiError(202, "catching_up", "the receipt is not available yet", {"Retry-After": "1"})
            raise ApiError(404, "not_found", err["message"])
        raise ApiError(400, err["code"], err["message"])

    @staticmethod
    def _relay(answer: dict[str, Any]) -> web.Response:
        """An executor's answer to a read, with its signature (`signed_read`) kept for the client."""
        err = answer.get("error")
        if err is None:
            return _json(answer)
        if err["code"] == "behind":
            raise ApiError(503, "behind", err["message"], {"Retry-After": "1"})
        status = {
            "not_found": 404,
            "private_map": 403,
            "bad_signature": 401,
            "unknown_sender": 401,
            "stale_query": 401,
            "recovering": 503,
            "no_tx_key": 503,
            "internal": 500,
        }.get(err["code"], 400)
        retry = {"Retry-After": "5"} if status == 503 else None
        raise ApiError(status, err["code"], err["message"], retry, signed_read=answer.get(read_answer.FIELD))

    async def service_info(self) -> dict[str, Any]:
        now = time.monotonic()
        if self._service and now - self._service[0] < SERVICE_CACHE_S:
            return self._service[1]
        info = await self.ask_executor(read_answer.service_request())
        if "error" not in info:
            self._service = (now, info)
            keys = {}
            for p in info.get("members", []) + info.get("users", []):
                with contextlib.suppress(Exception):
                    keys[p["id"]] = PublicKey.load(p["public_key"])
            self._keys = keys
        return info

    async def get_service(self, _: web.Request) -> web.Response:
        return self._relay(await self.service_info())

    async def get_tx_key(self, request: web.Request) -> web.Response:
        """The transaction key's vouches: every executor's signed answer, relayed as they came
        (`conclavium.tx_key_vouch`); clients count them, this gateway only collects. With the
        client's `nonce` the executors are asked afresh (their answers cover it, so none can be
        reused for another asking); without, answers a few seconds old are served."""
        nonce = request.query.get("nonce")
        if nonce is not None and not tx_key_vouch.NONCE_PATTERN.fullmatch(nonce):
            raise ApiError(400, "invalid_nonce", "nonce must be 32 to 128 lowercase hex digits")
        now = time.monotonic()
        if nonce is not None or self._vouches is None or now - self._vouches[0] >= SERVICE_CACHE_S:
            info = await self.service_info()
            endorsed = [n for n in info.get("nodes", []) if n.get("member") and n.get("status") == "Trusted"]
            answers = await self._ask_every_executor(tx_key_vouch.request(nonce), len(endorsed))
            vouches = [a for a in answers if isinstance(a, dict) and read_answer.FIELD in a and "error" not in a]
            m.TX_KEY_VOUCHES.set(len(vouches))
            if not vouches:
                errors = [a["error"] for a in answers if isinstance(a, dict) and isinstance(a.get("error"), dict)]
                if errors:
                    return self._relay({"error": errors[0]})
                message = "no endorsed executor vouched for the transaction key"
                raise ApiError(503, "no_executor", message, {"Retry-After": "1"})
            if nonce is not None:
                return _json({"vouches": vouches})
            self._vouches = (now, {"vouches": vouches})
        return _json(self._vouches[1])

    async def _ask_every_executor(self, request: dict[str, Any], expected: int) -> list[Any]:
        """The answers of every executor that answers within a second, or until `expected` signed
        ones came."""
        if not self.nc.is_connected:
            raise ApiError(503, "no_executor", "not connected to NATS", {"Retry-After": "1"})
        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox)
        answers: list[Any] = []
        try:
            await self.nc.publish(streams.every_executor_subject(self.cfg.ledger), dumps(request), reply=inbox)
            deadline = time.monotonic() + ENDORSED_ANSWER_WAIT_S
            signed = 0
            while signed < max(expected, 1) and (left := deadline - time.monotonic()) > 0:
                try:
                    msg = await sub.next_msg(timeout=left)
                except (TimeoutError, nats.errors.TimeoutError):
                    break
                try:
                    answer = loads(msg.data)
                except ValueError:
                    continue
                answers.append(answer)
                if isinstance(answer, dict) and read_answer.FIELD in answer:
                    signed += 1
        finally:
            await sub.unsubscribe()
        return answers

    async def get_runtime(self, _: web.Request) -> web.Response:
        """What this gateway observes of the running nodes (node_progress.py): untrusted, for status."""
        lease = await sequencer_lease(self.js, self.cfg.ledger) if self.js is not None else None
        return _json({"sequencer": lease, "executors": self.progress.report()})

    async def get_openapi(self, _: web.Request) -> web.Response:
        return _json(self.openapi)

    async def healthz(self, _: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def readyz(self, _: web.Request) -> web.Response:
        reasons = []
        if self.nc is None or not self.nc.is_connected:
            reasons.append("not connected to NATS")
        if not await self.store.ping():
            reasons.append("status cache unreachable")
        if not reasons:
            try:
                info = await self.service_info()
                if info.get("error", {}).get("code") == "recovering":
                    reasons.append(info["error"]["message"])
                elif "error" in info or not info.get("service_cert"):
                    reasons.append("no service yet")
            except ApiError:
                reasons.append("no executor answers")
        if reasons:
            return _json({"status": "not_ready", "reason": "; ".join(reasons)}, status=503)
        return _json({"status": "ready", "reason": "ok"})

    async def refresh_keys(self) -> None:
        """Keep the sender keys for the optional early signature filter fresh."""
        while True:
            with contextlib.suppress(Exception):
                await self.service_info()
            await asyncio.sleep(2)
