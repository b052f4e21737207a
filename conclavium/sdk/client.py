"""The client SDK: sign transactions and queries, submit them, follow them to a receipt.

async with Client(gateway_url, key) as c:
    h = await c.put("public:greetings", "hello", "world")
    await c.wait(h)
    receipt = await c.receipt(h)
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import quote

import aiohttp

from conclavium import query, receipt
from conclavium.crypto.keys import PrivateKey
from conclavium.governance import documents
from conclavium.identity import CertificateError, service_ledger, verify_tx_key
from conclavium.tx import SignedTx, make_body, sign

TX_KEY_TTL_S = 5.0


class ClientError(Exception):
    """An error answered by the service: HTTP status plus its machine-readable code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class NoSigningKey(ValueError):
    """An operation that signs, asked of a client without a key."""


def _now_ms() -> int:
    return int(time.time() * 1000)


class Client:
    def __init__(
        self,
        gateway_url: str,
        key: PrivateKey | None = None,
        ledger: str | None = None,
        service_cert: str | None = None,
    ) -> None:
        """`service_cert` (PEM) pins the service: private operations are sealed only to a
        transaction key that certificate's key signed, and `wait()` reports Committed only with a
        receipt that verifies against it. Without it nothing is sealed (the gateway's word for the
        key is not enough) and `wait()` says its answer is unverified."""
        self.url = gateway_url.rstrip("/")
        self.key = key
        self.ledger = ledger
        self.service_cert = service_cert
        self._session: aiohttp.ClientSession | None = None
        self._tx_key: tuple[float, tuple[str, bytes]] | None = None
        self.seen_height = 0  # highest height this client saw its writes at: reads are at least this new

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=30), connector=aiohttp.TCPConnector(limit=256)
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.session.request(method, self.url + path, json=body) as r:
            try:
                data = await r.json(content_type=None)
            except ValueError:
                raise ClientError(
                    r.status, "not_json", f"{self.url} answered {r.status} without JSON: is it a Conclavium gateway?"
                ) from None
            if r.status >= 400:
                err = (data or {}).get("error", {}) if isinstance(data, dict) else {}
                raise ClientError(r.status, err.get("code", "http_error"), err.get("message", r.reason or ""))
            return r.status, data

    # --- building ---------------------------------------------------------------------------------

    async def ledger_id(self) -> str:
        """The ledger everything is signed for: given, or the gateway's answer, which with a pinned
        service certificate must be the ledger that certificate names (an untrusted gateway must not
        get a transaction or a governance document signed for another ledger)."""
        if self.ledger is None:
            ledger = (await self.service())["ledger"]
            if self.service_cert is not None:
                try:
                    named = service_ledger(self.service_cert)
                except CertificateError as e:
                    raise ClientError(502, "untrusted_ledger", str(e)) from None
                if named != ledger:
                    message = f"the gateway serves ledger {ledger!r}, the pinned certificate names {named!r}"
                    raise ClientError(502, "untrusted_ledger", message)
            self.ledger = ledger
        return self.ledger

    def _key(self) -> PrivateKey:
        if self.key is None:
            raise NoSigningKey("this operation signs what it sends: the client needs a signing key")
        return self.key

    async def tx_key(self) -> tuple[str, bytes]:
        """The ledger's current transaction key (id, X25519 public key), refreshed every few
        seconds so a rotation is picked up; checked against the pinned service certificate."""
        now = time.monotonic()
        if self._tx_key is not None and now - self._tx_key[0] < TX_KEY_TTL_S:
            return self._tx_key[1]
        info = await self.service()
        doc = info.get("tx_key")
        if not doc:
            raise ClientError(503, "no_tx_key", "the ledger has no transaction key yet")
        if self.service_cert is None:
            raise ClientError(
                400,
                "no_service_cert",
                "sealing private operations needs the service certificate pinned (Client(service_cert=...), "
                "CLI --service-cert FILE): a transaction key the gateway hands out is not trusted on its word",
            )
        try:
            public = verify_tx_key(doc, await self.ledger_id(), self.service_cert)
        except (CertificateError, KeyError, TypeError, ValueError) as e:
            raise ClientError(502, "untrusted_tx_key", f"the transaction key does not verify: {e}") from None
        self._tx_key = (now, (doc["id"], public))
        return self._tx_key[1]

    async def build(self, ops: list[dict[str, Any]]) -> SignedTx:
        """Sign `ops`; operations on private maps are sealed to the transaction key."""
        key = self._key()
        sealed_to = await self.tx_key() if any(not op["map"].startswith("public:") for op in ops) else None
        return sign(key, make_body(await self.ledger_id(), key.key_id, ops, _now_ms(), tx_key=sealed_to))

    # --- writes -----------------------------------------------------------------------------------

    async def submit(self, tx: SignedTx) -> str:
        _, data = await self._request("POST", "/v1/transactions", tx.to_json())
        return str(data["tx_hash"])

    async def submit_batch(self, txs: list[SignedTx]) -> list[str]:
        _, data = await self._request("POST", "/v1/transactions/batch", {"transactions": [t.to_json() for t in txs]})
        return list(data["tx_hashes"])

    async def put(self, map_name: str, key: str, value: Any) -> str:
        return await self.submit(await self.build([{"op": "put", "map": map_name, "key": key, "value": value}]))

    async def delete(self, map_name: str, key: str) -> str:
        return await self.submit(await self.build([{"op": "delete", "map": map_name, "key": key}]))

    # --- reads ------------------------------------------------------------------------------------

    async def status(self, tx_hash: str) -> dict[str, Any]:
        return dict((await self._request("GET", f"/v1/transactions/{tx_hash}"))[1])

    async def wait(self, tx_hash: str, timeout: float = 30.0, poll: float = 0.05) -> dict[str, Any]:
        """Poll until Committed or Invalid; raises TimeoutError otherwise. With a pinned service
        certificate Committed is reported only with the receipt, fetched and verified against it
        (`"verified": True`, `"receipt"`); the status events the gateway relays are unsigned, so a
        Committed without a receipt that verifies is ClientError `unverified_commit`. Without a
        pinned certificate the status is the gateway's word (`"verified": False`)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                st = await self.status(tx_hash)
            except (ClientError, aiohttp.ClientConnectionError) as e:
                if isinstance(e, ClientError) and e.status != 503:
                    raise
                st = {"status": "Unavailable"}  # transient (NATS or executors restarting): keep polling
            if st["status"] == "Committed" and self.service_cert is not None:
                return await self._verified_commit(tx_hash, st, deadline)
            if st["status"] in ("Committed", "Invalid"):
                self.seen_height = max(self.seen_height, int(st.get("height") or 0))
                return {**st, "verified": False} if st["status"] == "Committed" else st
            if time.monotonic() > deadline:
                raise TimeoutError(f"transaction {tx_hash} still {st['status']} after {timeout}s")
            await asyncio.sleep(poll)

    async def _verified_commit(self, tx_hash: str, st: dict[str, Any], deadline: float) -> dict[str, Any]:
        """The receipt of a transaction reported Committed, verified against the pinned certificate
        (an executor still catching up answers 202: polled until the deadline)."""
        assert self.service_cert is not None
        why = "no receipt was given"
        while True:
            try:
                status, data = await self._request("GET", f"/v1/transactions/{tx_hash}/receipt")
            except ClientError as e:
                if e.status not in (404, 503):
                    raise
                status, data, why = e.status, None, f"the receipt was refused: {e.code}"
            except aiohttp.ClientConnectionError as e:
                status, data, why = 503, None, f"the gateway did not answer: {e}"
            if status == 200:
                try:
                    checked = receipt.verify(data, self.service_cert, tx_hash=tx_hash)
                    if checked.ledger != service_ledger(self.service_cert):
                        raise receipt.ReceiptError("wrong_ledger", f"the receipt is for ledger {checked.ledger!r}")
                except (receipt.ReceiptError, CertificateError) as e:
                    raise ClientError(
                        502, "unverified_commit", f"reported Committed, but the receipt does not verify: {e}"
                    ) from None
                self.seen_height = max(self.seen_height, checked.height)
                return {**st, "height": checked.height, "verified": True, "receipt": data}
            if time.monotonic() > deadline:
                raise ClientError(
                    502, "unverified_commit", f"transaction {tx_hash} was reported Committed, but {why}"
                )
            await asyncio.sleep(0.1)

    async def receipt(self, tx_hash: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status, data = await self._request("GET", f"/v1/transactions/{tx_hash}/receipt")
            if status == 200:
                return dict(data)
            if time.monotonic() > deadline:
                raise TimeoutError(f"no receipt for {tx_hash} after {timeout}s")
            await asyncio.sleep(0.1)

    async def get(self, map_name: str, key: str, timeout: float = 10.0) -> Any:
        """Read an entry: public maps directly, private maps with a signed query. Reads are at least
        as new as this client's last waited-for write; an executor still catching up is retried."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return await self._get_once(map_name, key)
            except ClientError as e:
                if e.code != "behind" or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)

    async def _get_once(self, map_name: str, key: str) -> Any:
        if map_name.startswith("public:"):
            path = f"/v1/state/{quote(map_name, safe=':')}/{quote(key, safe='')}?min_height={self.seen_height}"
            _, data = await self._request("GET", path)
            return data["value"]
        q, reply_key, body = query.make(
            self._key(), await self.ledger_id(), map_name, key, _now_ms(), await self.tx_key()
        )
        _, data = await self._request("POST", "/v1/queries", q)
        return query.open_reply(data, reply_key, body)["value"]

    async def service(self) -> dict[str, Any]:
        return dict((await self._request("GET", "/v1/service"))[1])

    # --- governance -------------------------------------------------------------------------------

    async def _post_document(self, path: str, document: bytes) -> dict[str, Any]:
        async with self.session.post(self.url + path, data=document, headers={"Content-Type": "application/cose"}) as r:
            data = await r.json(content_type=None)
            if r.status >= 400:
                err = data.get("error", {}) if isinstance(data, dict) else {}
                raise ClientError(r.status, err.get("code", "http_error"), err.get("message", r.reason or ""))
            return dict(data)

    async def propose(self, actions: list[dict[str, Any]]) -> dict[str, Any]:
        """Submit a signed proposal; returns {"proposal_id", "tx_hash"}."""
        doc = documents.make_proposal(actions, self._key(), int(time.time()), ledger=await self.ledger_id())
        return await self._post_document("/v1/gov/proposals", doc)

    async def vote(self, proposal_id: str, approve: bool) -> dict[str, Any]:
        doc = documents.make_ballot(proposal_id, approve, self._key(), int(time.time()), ledger=await self.ledger_id())
        return await self._post_document(f"/v1/gov/proposals/{proposal_id}/ballots", doc)

    async def withdraw(self, proposal_id: str) -> dict[str, Any]:
        doc = documents.make_withdrawal(proposal_id, self._key(), int(time.time()), ledger=await self.ledger_id())
        return await self._post_document(f"/v1/gov/proposals/{proposal_id}/withdraw", doc)

    async def proposals(self, state: str | None = None) -> list[dict[str, Any]]:
        path = "/v1/gov/proposals" + (f"?state={quote(state)}" if state else "")
        return list((await self._request("GET", path))[1]["proposals"])

    async def proposal(self, proposal_id: str) -> dict[str, Any]:
        return dict((await self._request("GET", f"/v1/gov/proposals/{proposal_id}"))[1])

    async def constitution(self) -> dict[str, Any]:
        return dict((await self._request("GET", "/v1/gov/constitution"))[1])
