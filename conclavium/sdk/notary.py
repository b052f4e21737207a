"""The notary SDK: request notarisations, follow them to the consortium's signature, ask who
consumed a state, and check a notarisation offline.

async with Client(gateway_url, key, service_cert=cert, consortium=identity_json) as c:
    notary = NotaryClient(c)
    wtx = WireTransaction(transaction_groups(inputs, [], None, await c.ledger_id(), outputs=[...]), salt)
    answer = await notary.notarise(wtx, inputs)   # Notarised (receipt verified) or raises NotaryRefused
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from conclavium import receipt
from conclavium.encoding import loads
from conclavium.notary import request as nr
from conclavium.notary.tearoff import FilteredTransaction, WireTransaction

from .client import Client, ClientError


class NotaryRefused(Exception):
    """The notary refused the request: `reason` (e.g. `conflict`, `time_window_invalid`) and,
    for those two, Corda's error as `detail` (`consumed_states` for a conflict)."""

    def __init__(self, request_hash: str, reason: str, message: str, detail: dict[str, Any] | None) -> None:
        super().__init__(f"{reason}: {message}")
        self.request_hash, self.reason, self.message, self.detail = request_hash, reason, message, detail


@dataclass(frozen=True)
class Notarised:
    """A notarisation: the request, its receipt and, with a pinned certificate, what it proves."""

    request: nr.Request
    receipt: dict[str, Any]
    proof: nr.Notarisation | None  # None without a pinned service certificate: the gateway's word


class NotaryClient:
    def __init__(self, client: Client) -> None:
        self.c = client

    async def build(
        self,
        tx_id: str,
        inputs: list[str],
        references: list[str] | None = None,
        time_window: nr.TimeWindow | None = None,
        filtered: FilteredTransaction | None = None,
    ) -> nr.Request:
        return nr.make(self.c._key(), await self.c.ledger_id(), tx_id, inputs, references, time_window, filtered)

    async def build_for(self, wtx: WireTransaction) -> nr.Request:
        """The request for a whole transaction: its id and the tear-off of the groups a
        non-validating notary sees (inputs, references, time window, notary)."""
        ftx = wtx.tear_off(nr.NOTARY_GROUPS)
        ftx.verify()
        refs = [nr.decode_state_ref(c) for c in ftx.components(nr.INPUTS_GROUP)]
        others = [nr.decode_state_ref(c) for c in ftx.components(nr.REFERENCES_GROUP)]
        windows = ftx.components(nr.TIMEWINDOW_GROUP)
        tw = nr.TimeWindow(**_window(windows[0])) if windows else None
        return await self.build(wtx.id.hex(), refs, others, tw, ftx)

    async def submit(self, req: nr.Request) -> str:
        _, data = await self.c._request("POST", "/v1/notary/requests", req.to_json())
        return str(data["request_hash"])

    async def submit_batch(self, reqs: list[nr.Request]) -> list[str]:
        _, data = await self.c._request("POST", "/v1/notary/requests", {"requests": [r.to_json() for r in reqs]})
        return list(data["request_hashes"])

    async def status(self, request_hash: str) -> dict[str, Any]:
        return dict((await self.c._request("GET", f"/v1/notary/requests/{request_hash}"))[1])

    async def wait(self, req: nr.Request, timeout: float = 30.0) -> Notarised:
        """Until notarised (the receipt fetched and, with a consortium identity, verified as this
        request's notarisation) or refused (NotaryRefused)."""
        deadline = time.monotonic() + timeout
        h = req.hash
        while True:
            st = await self.status(h)
            if st["status"] == "Invalid":
                raise NotaryRefused(h, st["reason"], st["message"], st.get("notary_error"))
            if st["status"] == "Committed":
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"notarisation request {h} still {st['status']} after {timeout}s")
            await asyncio.sleep(0.05)
        doc = await self._receipt(h, deadline)
        if self.c.consortium is None:
            return Notarised(req, doc, None)
        try:
            proof = nr.verify_notarisation(doc, req, self.c.consortium)
        except receipt.ReceiptError as e:
            raise ClientError(502, "unverified_notarisation", f"the receipt does not verify: {e}") from None
        return Notarised(req, doc, proof)

    async def _receipt(self, request_hash: str, deadline: float) -> dict[str, Any]:
        """The receipt, from whichever executor answers (one still catching up is asked again)."""
        while True:
            try:
                status, data = await self.c._request("GET", f"/v1/transactions/{request_hash}/receipt")
                if status == 200:
                    return dict(data)
            except ClientError as e:
                if e.status not in (404, 503) or time.monotonic() > deadline:
                    raise
            if time.monotonic() > deadline:
                raise TimeoutError(f"no receipt for notarisation request {request_hash}")
            await asyncio.sleep(0.1)

    async def notarise(self, wtx: WireTransaction, timeout: float = 30.0) -> Notarised:
        req = await self.build_for(wtx)
        await self.submit(req)
        return await self.wait(req, timeout)

    async def who_consumed(self, state: str) -> dict[str, Any]:
        """`{"state", "consumed", "height"}`, with `hash_of_transaction_id` when consumed, and
        `tx_id` only when this party had the consuming transaction notarised."""
        q, reply_key, body = nr.make_who_consumed(self.c._key(), await self.c.ledger_id(), state)
        # With a consortium identity the sealed answer counts only when a node a member endorsed
        # signed it for this query (anyone can seal to the reply key, which travels in clear). Not
        # held to seen_height: the gateway asks for this answer without a height floor.
        request = {"type": "notary_who_consumed", "query": q}
        data = await self.c._read("POST", "/v1/notary/who-consumed", request, q, fresh=False)
        return nr.open_answer(data, reply_key, body)


def _window(component: bytes) -> dict[str, int | None]:
    doc = loads(component)
    return {"from_ms": doc.get("from"), "until_ms": doc.get("until")}
