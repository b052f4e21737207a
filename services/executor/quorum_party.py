"""A member's Quorum party endpoint (docs/quorum.md): the subset of Tessera's ThirdParty API that
web3js-quorum uses (`GET /upcheck`, `GET /keys`, `GET /partyinfo/keys`, `POST /storeraw`) and the
member's Quorum JSON-RPC (`POST /`, `quorum_rpc.py`), served by the member's own executor over TLS
that ends in this process.

The TLS key is made in the executor and never written in clear; its certificate is issued by the
service key once this node holds the ledger secrets, so a client that pins the service certificate
reaches a trusted executor and no gateway or proxy can read what it sends. `/keys` lists the party
keys governance registered for this node's member (`set_quorum_party`); `/partyinfo/keys` all of
them. `/storeraw` keeps the payload in this process's memory only, bounded and for `PAYLOAD_TTL_S`,
until `eth_sendRawPrivateTransaction` seals it into a ledger entry.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime as dt
import logging
import os
import ssl
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives import serialization

from conclavium import quorum
from conclavium.eth import jsonrpc as j

from .quorum_rpc import PrivateRpc
from .tables import SERVICE

log = logging.getLogger("executor.quorum")

PAYLOAD_TTL_S = 600.0
MAX_PAYLOADS = 10_000
MAX_PAYLOAD_TOTAL = 64 * 1024 * 1024
RENEW_EVERY_S = 6 * 3600.0  # well inside quorum.TLS_VALIDITY


def _error(status: int, reason: str, message: str) -> web.Response:
    return web.json_response({"error": {"reason": reason, "message": message}}, status=status)


def _rpc_refusal(status: int, message: str) -> web.Response:
    return web.json_response(
        {"jsonrpc": "2.0", "id": None, "error": {"code": j.SERVER, "message": message}}, status=status
    )


class PayloadStore:
    """Stored raw payloads, in memory, oldest evicted first beyond the bounds."""

    def __init__(self) -> None:
        self._items: OrderedDict[bytes, tuple[float, str, bytes]] = OrderedDict()
        self._bytes = 0
        self._salt = os.urandom(32)

    def put(self, sender: str, payload: bytes, now: float) -> bytes:
        key = quorum.payload_hash(self._salt, payload)
        self._drop(key)
        self._items[key] = (now, sender, payload)
        self._bytes += len(payload)
        while self._items and (
            len(self._items) > MAX_PAYLOADS
            or self._bytes > MAX_PAYLOAD_TOTAL
            or next(iter(self._items.values()))[0] < now - PAYLOAD_TTL_S
        ):
            self._drop(next(iter(self._items)))
        return key

    def get(self, key: bytes, now: float) -> tuple[str, bytes] | None:
        item = self._items.get(key)
        if item is None or item[0] < now - PAYLOAD_TTL_S:
            return None
        return item[1], item[2]

    def _drop(self, key: bytes) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self._bytes -= len(old[2])


class PartyEndpoint:
    def __init__(self, executor: Any) -> None:
        self.host, self.port = executor.cfg.quorum_host, executor.cfg.quorum_port
        self._state: Callable[[], Any] = lambda: executor.machine.state
        self._member: Callable[[], str | None] = executor.my_member
        self.payloads = PayloadStore()
        self.rpc = PrivateRpc(executor, self)
        self._executor, self._ledger = executor, executor.cfg.ledger
        self._ctx: ssl.SSLContext | None = None
        self._runner: web.AppRunner | None = None
        self._issued = 0.0

    def parties(self) -> dict[str, dict[str, str]]:
        return dict(self._state().get(SERVICE, quorum.PARTIES_KEY) or {})

    def own_keys(self) -> list[str]:
        me = self._member()
        return sorted(k for k, p in self.parties().items() if me is not None and p["member"] == me)

    async def ensure(self, service_key: Any, service_cert: str) -> None:
        """Start serving once the service key is here; renew the certificate well before expiry.
        Called from the executor's ticker."""
        now = time.monotonic()
        if self._ctx is not None and now - self._issued < RENEW_EVERY_S:
            return
        key_pem, cert_pem = quorum.tls_certificate(
            service_key, service_cert, [self.host], dt.datetime.now(dt.UTC).replace(tzinfo=None)
        )
        ctx = self._ctx or ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        _load_chain(ctx, cert_pem, key_pem)
        self._issued = now
        if self._ctx is None:
            self._ctx = ctx
            app = web.Application(client_max_size=2 * quorum.MAX_PAYLOAD_BYTES)
            app.router.add_get("/upcheck", self._upcheck)
            app.router.add_get("/keys", self._keys)
            app.router.add_get("/partyinfo/keys", self._partyinfo_keys)
            app.router.add_post("/storeraw", self._storeraw)
            app.router.add_post("/", self._jsonrpc)
            self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await self._runner.setup()
            await web.TCPSite(self._runner, self.host, self.port, ssl_context=ctx, reuse_address=True).start()
            log.info("quorum party endpoint on https://%s:%d", self.host, self.port)

    async def close(self) -> None:
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._runner.cleanup(), 3.0)

    async def _upcheck(self, _: web.Request) -> web.Response:
        return web.Response(text=quorum.UPCHECK)

    async def _keys(self, _: web.Request) -> web.Response:
        return web.json_response({"keys": [{"key": k} for k in self.own_keys()]})

    async def _partyinfo_keys(self, _: web.Request) -> web.Response:
        return web.json_response({"keys": [{"key": k} for k in sorted(self.parties())]})

    def _caller(self, request: web.Request) -> tuple[str | None, web.Response | None]:
        """The owner the request's bearer token authenticates, or the refusal (401/403)."""
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return None, _rpc_refusal(401, "authentication required: Authorization: Bearer <token> (docs/quorum.md)")
        try:
            owner = quorum.verify_token(
                auth[7:].strip(), self._ledger, self._executor.machine.participant_keys(), time.time()
            )
        except quorum.TokenError as e:
            return None, _rpc_refusal(401, str(e))
        if not self.rpc.my_keys(owner):
            return None, _rpc_refusal(403, "the token's owner has no party key at this member's endpoint")
        return owner, None

    async def _jsonrpc(self, request: web.Request) -> web.Response:
        owner, refused = self._caller(request)
        if refused is not None or owner is None:
            return refused or _rpc_refusal(401, "authentication required")
        try:
            body = await request.json()
        except ValueError:
            return web.json_response(
                {"jsonrpc": "2.0", "id": None, "error": {"code": j.PARSE_ERROR, "message": "parse error"}}
            )
        return web.json_response(await self.rpc.handle(body, owner))

    async def _storeraw(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "bad_json", 'the body must be JSON: {"payload": base64, "from": party key}')
        if not isinstance(body, dict) or not isinstance(body.get("payload"), str):
            return _error(400, "bad_request", "payload (base64) is required")
        try:
            payload = base64.b64decode(body["payload"], validate=True)
        except (binascii.Error, ValueError):
            return _error(400, "bad_payload", "payload must be standard base64")
        if not payload or len(payload) > quorum.MAX_PAYLOAD_BYTES:
            return _error(400, "bad_payload", f"payload must be 1 to {quorum.MAX_PAYLOAD_BYTES} bytes")
        own = self.own_keys()
        sender = body.get("from")
        if sender is None:
            if not own:
                return _error(403, "no_party_key", "this member has no party key (set_quorum_party)")
            sender = own[0]
        if sender not in own:
            return _error(403, "not_own_party_key", "from must be a party key of this endpoint's member (GET /keys)")
        key = self.payloads.put(sender, payload, time.monotonic())
        return web.json_response({"key": base64.b64encode(key).decode()})


def _load_chain(ctx: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """ssl loads a chain only from files, so the key is written only encrypted under a one-time
    password that stays in memory, in a private temporary directory removed at once."""
    password = os.urandom(32)
    sealed = serialization.load_pem_private_key(key_pem, None).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password),
    )
    with tempfile.TemporaryDirectory(prefix="cnv-quorum-tls-") as d:
        cert, key = Path(d) / "cert.pem", Path(d) / "key.pem"
        cert.write_bytes(cert_pem)
        key.write_bytes(sealed)
        ctx.load_cert_chain(cert, key, password=password)
