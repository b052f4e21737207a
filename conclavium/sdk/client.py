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

from conclavium import consortium as consortium_identity
from conclavium import cose, query, read_answer, receipt, tx_key_vouch
from conclavium.crypto.keys import PrivateKey, PublicKey
from conclavium.governance import documents
from conclavium.identity import CertificateError, service_ledger
from conclavium.tx import SignedTx, make_body, sign

TX_KEY_TTL_S = 5.0


class ClientError(Exception):
    """An error answered by the service: HTTP status plus its machine-readable code (and, for an
    answer this client refused, `reason`: which check failed)."""

    def __init__(self, status: int, code: str, message: str, reason: str | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.reason = status, code, message, reason


# Errors that state a fact about the ledger rather than refuse service: only an executor's
# signature makes them true (a gateway may always refuse; it may not say an entry does not exist).
STATE_CLAIMS = frozenset({"not_found"})


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
        consortium: consortium_identity.Identity | str | bytes | None = None,
    ) -> None:
        """`consortium` (the consortium identity document, its JSON text or a loaded Identity)
        is what commits, reads and the transaction key are checked against: `wait()` reports
        Committed only with a receipt signed by nodes of k distinct members of it, and private
        operations are sealed only to a transaction key nodes of k distinct members vouch for
        (`conclavium.tx_key_vouch`). Without it nothing is sealed (the gateway's word, or one
        node's, for the key is not enough) and `wait()` says its answer is unverified.
        `service_cert` (PEM) pins the ledger id documents are signed for."""
        self.url = gateway_url.rstrip("/")
        self.key = key
        self.ledger = ledger
        self.service_cert = service_cert
        self.consortium = (
            consortium_identity.load_trusted(consortium) if isinstance(consortium, str | bytes) else consortium
        )
        self._session: aiohttp.ClientSession | None = None
        self._tx_key: tuple[float, tuple[str, bytes]] | None = None
        # Highest height this client saw its writes committed at, or a verified read answered at:
        # reads are at least this new (read-your-writes, monotonic reads).
        self.seen_height = 0
        self.last_read: read_answer.VerifiedRead | None = None

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

    async def _send(self, method: str, path: str, body: Any) -> tuple[int, str, Any]:
        """The status, reason phrase and JSON body of one call; a body that is not JSON is ClientError."""
        async with self.session.request(method, self.url + path, json=body) as r:
            try:
                data = await r.json(content_type=None)
            except ValueError:
                raise ClientError(
                    r.status, "not_json", f"{self.url} answered {r.status} without JSON: is it a Conclavium gateway?"
                ) from None
            return r.status, r.reason or "", data

    async def _request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        status, http_reason, data = await self._send(method, path, body)
        if status >= 400:
            err = (data or {}).get("error", {}) if isinstance(data, dict) else {}
            raise ClientError(status, err.get("code", "http_error"), err.get("message", http_reason))
        return status, data

    async def _read(
        self, method: str, path: str, request: dict[str, Any], body: Any = None, *, fresh: bool = True
    ) -> dict[str, Any]:
        """A read the gateway relays from an executor. With a consortium identity the answer (a
        value, or an error that claims something about the state) counts only when an executor a
        member of that identity endorsed signed it for exactly `request`, on its ledger and, when `fresh`,
        at a height of at least `seen_height` (sent as min_height); anything else is ClientError
        `unverified_read` (`untrusted_ledger` for another ledger's answer) with `reason` naming the
        failed check."""
        # the floor this request was sent with: a concurrent read may raise seen_height meanwhile
        floor = self.seen_height if fresh else 0
        status, http_reason, data = await self._send(method, path, body)
        refused = None
        if status >= 400:
            err = data.get("error") if isinstance(data, dict) else None
            err = err if isinstance(err, dict) else {}
            refused = ClientError(status, str(err.get("code", "http_error")), str(err.get("message", http_reason)))
        signed = isinstance(data, dict) and read_answer.FIELD in data
        if self.consortium is None or (refused is not None and not signed and refused.code not in STATE_CLAIMS):
            if refused is not None:
                raise refused  # a refusal of service: the gateway may always refuse, it cannot say more
            return dict(data)
        try:
            checked = read_answer.verify(data, request, self.consortium, min_height=floor)
        except read_answer.ReadAnswerError as e:
            code = "untrusted_ledger" if e.code == "wrong_ledger" else "unverified_read"
            raise ClientError(502, code, f"the read answer does not verify: {e}", e.code) from None
        if fresh:
            self.seen_height = max(self.seen_height, checked.height)
        self.last_read = checked
        if refused is not None:
            raise refused
        return checked.answer

    # --- building ---------------------------------------------------------------------------------

    async def ledger_id(self) -> str:
        """The ledger everything is signed for: given, or the gateway's answer, which with a pinned
        service certificate must be the ledger that certificate names (an untrusted gateway must not
        get a transaction or a governance document signed for another ledger)."""
        if self.ledger is None and self.consortium is not None:
            self.ledger = self.consortium.ledger
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
        seconds so a rotation is picked up: the key endorsed nodes of k distinct members of the
        consortium identity vouch for, or ClientError `untrusted_tx_key` (`reason`: why)."""
        now = time.monotonic()
        if self._tx_key is not None and now - self._tx_key[0] < TX_KEY_TTL_S:
            return self._tx_key[1]
        if self.consortium is None:
            raise ClientError(
                400,
                "no_consortium",
                "sealing private operations needs the consortium identity pinned (Client(consortium=...), "
                "CLI --consortium FILE): a transaction key counts only when nodes of k distinct members vouch for it",
            )
        # a fresh nonce: vouches recorded before (say, before a rotation) are answers to another request
        nonce = tx_key_vouch.new_nonce()
        floor = self.seen_height
        _, data = await self._request("GET", f"/v1/service/tx-key?nonce={nonce}")
        try:
            vouched = tx_key_vouch.verify(data, self.consortium, nonce=nonce, min_height=floor)
        except tx_key_vouch.TxKeyError as e:
            raise ClientError(502, "untrusted_tx_key", f"the transaction key is not vouched for: {e}", e.code) from None
        self._tx_key = (now, (vouched.id, vouched.public))
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
        """Poll until Committed or Invalid; raises TimeoutError otherwise. With a consortium
        identity Committed is reported only with the receipt, fetched and verified against it
        (`"verified": True`, `"receipt"`); the status events the gateway relays are unsigned, so a
        Committed without a receipt that verifies is ClientError `unverified_commit`. Without an
        identity the status is the gateway's word (`"verified": False`)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                st = await self.status(tx_hash)
            except (ClientError, aiohttp.ClientConnectionError) as e:
                if isinstance(e, ClientError) and e.status != 503:
                    raise
                st = {"status": "Unavailable"}  # transient (NATS or executors restarting): keep polling
            if st["status"] == "Committed" and self.consortium is not None:
                return await self._verified_commit(tx_hash, st, deadline)
            if st["status"] in ("Committed", "Invalid"):
                self.seen_height = max(self.seen_height, int(st.get("height") or 0))
                return {**st, "verified": False} if st["status"] == "Committed" else st
            if time.monotonic() > deadline:
                raise TimeoutError(f"transaction {tx_hash} still {st['status']} after {timeout}s")
            await asyncio.sleep(poll)

    async def _verified_commit(self, tx_hash: str, st: dict[str, Any], deadline: float) -> dict[str, Any]:
        """The receipt of a transaction reported Committed, verified against the consortium
        identity (an executor still catching up answers 202: polled until the deadline)."""
        assert self.consortium is not None
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
                    # a receipt whose time is not signed (a ledger before rules version 4): checked now
                    at = int(time.time() * 1000) if receipt.time_unsigned(data) else None
                    checked = receipt.verify(data, self.consortium, tx_hash=tx_hash, at_ms=at)
                except receipt.ReceiptError as e:
                    raise ClientError(
                        502, "unverified_commit", f"reported Committed, but the receipt does not verify: {e}"
                    ) from None
                self.seen_height = max(self.seen_height, checked.height)
                return {**st, "height": checked.height, "verified": True, "receipt": data}
            if time.monotonic() > deadline:
                raise ClientError(502, "unverified_commit", f"transaction {tx_hash} was reported Committed, but {why}")
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

    async def eth_transaction_id(self, eth_hash: str, timeout: float = 30.0) -> str:
        """The ledger's id of an Ethereum transaction (its entry), from its committed JSON-RPC
        receipt: the offline-verifiable receipt is then fetched by that id."""
        deadline = time.monotonic() + timeout
        call = {"jsonrpc": "2.0", "id": 1, "method": "eth_getTransactionReceipt", "params": [eth_hash]}
        while True:
            _, data = await self._request("POST", "/rpc", call)
            if isinstance(data, dict) and data.get("error"):
                raise ClientError(400, "rpc_error", str(data["error"].get("message")))
            found = data.get("result") if isinstance(data, dict) else None
            if found is not None:
                return str(found["conclaviumTransaction"])
            if time.monotonic() > deadline:
                raise TimeoutError(f"no committed Ethereum transaction {eth_hash} after {timeout}s")
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
            data = await self._read("GET", path, read_answer.state_request(map_name, key))
            return data["value"]
        q, reply_key, body = query.make(
            self._key(), await self.ledger_id(), map_name, key, _now_ms(), await self.tx_key()
        )
        request = read_answer.query_request(q["body"], q["signature"])
        data = await self._read("POST", "/v1/queries", request, {**q, "min_height": self.seen_height})
        return query.open_reply(data, reply_key, body)["value"]

    async def service(self) -> dict[str, Any]:
        # Not held to seen_height: the gateway caches this answer, and what clients rely on in it
        # (the ledger) is checked against the pinned identity or certificate as well; the
        # transaction key in it is one node's word, so sealing takes it from tx_key() instead.
        return await self._read("GET", "/v1/service", read_answer.service_request(), fresh=False)

    async def service_unverified(self) -> dict[str, Any]:
        """`GET /v1/service` on the gateway's word, whatever identity this client trusts: before the
        first node of the identity counts (a new ledger, after a recovery) no answer can be signed
        by one, and a member endorsing its node needs the node's key and the ledger's time then."""
        return dict((await self._request("GET", "/v1/service"))[1])

    async def runtime(self) -> dict[str, Any]:
        """What the gateway observes of the running nodes (sequencer lease holder, executor heights):
        untrusted, for status displays only."""
        return dict((await self._request("GET", "/v1/runtime"))[1])

    async def node_attestation(self, node_id: str) -> dict[str, Any]:
        """A node's recorded evidence and claims and what the current node policy would refuse in them
        (`policy_failures`), as one executor evaluated them: on the gateway's word."""
        return dict((await self._request("GET", f"/v1/nodes/{node_id}/attestation"))[1])

    # --- governance -------------------------------------------------------------------------------

    async def _post_document(self, path: str, document: bytes) -> dict[str, Any]:
        async with self.session.post(self.url + path, data=document, headers={"Content-Type": "application/cose"}) as r:
            data = await r.json(content_type=None)
            if r.status >= 400:
                err = data.get("error", {}) if isinstance(data, dict) else {}
                raise ClientError(r.status, err.get("code", "http_error"), err.get("message", r.reason or ""))
            return dict(data)

    async def submit_document(self, document: bytes, path: str | None = None) -> dict[str, Any]:
        """Submit a governance document signed elsewhere (offline, by a member), exactly as it is;
        the gateway path follows from its type. Raises cose.CoseError or DocumentRouteError for bytes
        that are no governance document."""
        route = path or documents.submission_path(cose.parse1(document))
        return await self._post_document(route, document)

    async def propose(self, actions: list[dict[str, Any]]) -> dict[str, Any]:
        """Submit a signed proposal; returns {"proposal_id", "tx_hash"}."""
        doc = documents.make_proposal(actions, self._key(), int(time.time()), ledger=await self.ledger_id())
        return await self._post_document("/v1/gov/proposals", doc)

    async def vote(self, proposal_id: str, approve: bool) -> dict[str, Any]:
        """Vote on a proposal. Approving one that changes the members signs the next consortium
        identity too (the current one's members, their threshold: docs/governance.md)."""
        signature = await self._identity_signature(proposal_id) if approve else None
        ledger = await self.ledger_id()
        doc = documents.make_ballot(
            proposal_id, approve, self._key(), int(time.time()), ledger=ledger, identity_signature=signature
        )
        return await self._post_document(f"/v1/gov/proposals/{proposal_id}/ballots", doc)

    async def _identity_signature(self, proposal_id: str) -> str | None:
        """This member's signature over the identity the proposal's member changes make next, built
        from the ledger's current identity, which must be the one this client trusts when it has one."""
        proposal = await self.proposal(proposal_id)
        actions = proposal.get("actions", [])
        if not any(a.get("name") in consortium_identity.MEMBERSHIP_ACTIONS for a in actions):
            return None
        # The identity in force when the proposal opened, at least: an executor that lags behind it
        # would give an older one, and a signature over its successor would not count.
        deadline = time.monotonic() + 10
        service = await self.service()
        opened = int(proposal.get("created_height") or 0)
        while int(service.get("height") or 0) < opened and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            service = await self.service()
        current = service.get("consortium")
        if current is None:
            return None
        try:
            members = consortium_identity.members_after(current["identity"], actions)
            if members is None:
                return None
            if self.consortium is not None and consortium_identity.load(current).digest != self.consortium.digest:
                raise ClientError(
                    502, "untrusted_identity", "the ledger's consortium identity is not the one this client trusts"
                )
            body = consortium_identity.next_identity(current, members=members)["identity"]
        except (consortium_identity.IdentityError, KeyError, TypeError, ValueError) as e:
            message = f"the ledger's consortium identity does not load: {e}"
            raise ClientError(502, "untrusted_identity", message) from None
        return consortium_identity.signature_over(body, self._key())

    async def endorse_node(self, signing_key_pem: str, not_before: int, not_after: int) -> dict[str, Any]:
        """As a member: endorse the node with this signing key (conclavium.consortium); returns
        {"node_id", "tx_hash"}. Endorse only a key whose attestation you checked."""
        doc = consortium_identity.make_node_endorsement(
            self._key(), await self.ledger_id(), signing_key_pem, not_before, not_after
        )
        node = PublicKey.load(signing_key_pem).key_id
        return await self._post_document(f"/v1/nodes/{node}/endorsement", doc)

    async def await_endorsement(self, tx_hash: str, node_id: str, timeout: float = 30.0) -> dict[str, Any]:
        """Poll until the ledger executed a node endorsement: the node's row names its member
        (Committed may come only later: the first endorsements are what lets anything commit),
        or the endorsement is Invalid. The gateway's word; the receipts are what to trust."""
        deadline = time.monotonic() + timeout
        while True:
            st = await self.status(tx_hash)
            if st["status"] == "Invalid":
                return st
            nodes = {n["id"]: n for n in (await self.service_unverified()).get("nodes", [])}
            if nodes.get(node_id, {}).get("member") == self._key().key_id:
                return {**st, "status": "Executed"}
            if time.monotonic() > deadline:
                raise TimeoutError(f"endorsement of node {node_id} not executed after {timeout}s")
            await asyncio.sleep(0.1)

    async def withdraw(self, proposal_id: str) -> dict[str, Any]:
        doc = documents.make_withdrawal(proposal_id, self._key(), int(time.time()), ledger=await self.ledger_id())
        return await self._post_document(f"/v1/gov/proposals/{proposal_id}/withdraw", doc)

    async def recovery(self) -> dict[str, Any]:
        """The recovery status (`GET /v1/recovery`): the share set in force, or, while an executor
        recovers the ledger, its keys and evidence and the shares it holds (docs/recovery.md)."""
        return dict((await self._request("GET", "/v1/recovery"))[1])

    async def submit_recovery_share(self, document: bytes) -> dict[str, Any]:
        """Submit a signed `recovery_share` document (`conclavium.recovery.share_document`)."""
        return await self._post_document("/v1/gov/recovery-shares", document)

    async def proposals(self, state: str | None = None) -> list[dict[str, Any]]:
        path = f"/v1/gov/proposals?min_height={self.seen_height}" + (f"&state={quote(state)}" if state else "")
        return list((await self._read("GET", path, read_answer.proposals_request(state)))["proposals"])

    async def proposal(self, proposal_id: str) -> dict[str, Any]:
        request = read_answer.proposal_request(proposal_id.lower())
        return await self._read("GET", f"/v1/gov/proposals/{proposal_id}?min_height={self.seen_height}", request)

    async def constitution(self) -> dict[str, Any]:
        path = f"/v1/gov/constitution?min_height={self.seen_height}"
        return await self._read("GET", path, read_answer.constitution_request())

    async def members(self) -> dict[str, Any]:
        path = f"/v1/gov/members?min_height={self.seen_height}"
        return await self._read("GET", path, read_answer.members_request())
