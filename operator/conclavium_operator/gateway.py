"""The ledger as the operator sees it: the gateway's HTTP API through the SDK client.

The ledger is the source of truth for governance. Before proposing anything the operator looks for
an Open proposal with the same action, so a handler that runs twice (kopf runs handlers at least
once) or a status write that was lost never produces a second proposal.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from conclavium.crypto.keys import KeyError_, PrivateKey, PublicKey
from conclavium.sdk.client import Client, ClientError

FINAL_FAILURES = ("Rejected", "Withdrawn", "Expired", "Failed")


class GatewayUnavailable(Exception):
    """The gateway could not be reached or answered with a server error: retry later."""


class ProposalRefused(Exception):
    """The ledger refused the proposal (an Invalid transaction): retrying the same one cannot help."""


@dataclass(frozen=True)
class Submitted:
    proposal_id: str
    state: str


def _key_id(pem: object) -> str | None:
    try:
        return PublicKey.load(str(pem)).key_id
    except (KeyError_, ValueError):
        return None


class Gateway:
    """One per operator; caches `/v1/service` briefly because every node's timer reads it."""

    def __init__(self, url: str, cache_s: float = 1.0) -> None:
        self.url = url
        self.cache_s = cache_s
        self._reader = Client(url)
        self._service: tuple[float, dict[str, Any]] | None = None

    async def close(self) -> None:
        await self._reader.close()

    async def _guard(self, coro: Any) -> Any:
        try:
            return await coro
        except ClientError as e:
            if e.status >= 500 or e.status == 429:
                raise GatewayUnavailable(str(e)) from e
            raise
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            raise GatewayUnavailable(f"gateway {self.url} unreachable: {e!r}") from e

    async def service(self) -> dict[str, Any]:
        now = time.monotonic()
        if self._service and now - self._service[0] < self.cache_s:
            return self._service[1]
        info = await self._guard(self._reader.service())
        self._service = (now, info)
        return dict(info)

    async def runtime(self) -> dict[str, Any]:
        """`GET /v1/runtime`: the sequencer lease holder and each executor's heights as the gateway
        observes them (untrusted, for status only)."""
        return dict(await self._guard(self._reader.runtime()))

    async def state(self, map_name: str, key: str) -> Any:
        """A public map entry the ledger committed (`GET /v1/state/...`); None when there is none."""
        try:
            return await self._guard(self._reader.get(map_name, key))
        except ClientError as e:
            if e.status == 404:
                return None
            raise

    async def node_attestation(self, node_id: str) -> dict[str, Any] | None:
        """`GET /v1/nodes/{id}/attestation`: the node's recorded evidence and claims and what the current
        node policy would refuse in them (`policy_failures`); None when the ledger has no such node."""
        try:
            return dict(await self._guard(self._reader.node_attestation(node_id)))
        except ClientError as e:
            if e.status == 404:
                return None
            raise

    def forget_service(self) -> None:
        self._service = None

    async def proposal(self, proposal_id: str) -> dict[str, Any] | None:
        try:
            return dict(await self._guard(self._reader.proposal(proposal_id)))
        except ClientError as e:
            if e.status == 404:
                return None
            raise

    async def open_proposals(self) -> list[dict[str, Any]]:
        return list(await self._guard(self._reader.proposals("Open")))

    async def find_open(self, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        """The oldest Open proposal with an action for which `match` holds."""
        for p in await self.open_proposals():
            if any(match(a) for a in p.get("actions", [])):
                return p
        return None

    async def propose(
        self, key: PrivateKey, actions: list[dict[str, Any]], ledger: str, timeout: float = 15.0
    ) -> Submitted:
        """Submit and wait until the ledger recorded it, so the next lookup finds it (no duplicates).
        The proposal is signed for `ledger` (the Consortium's ledgerId), never for whatever ledger
        the gateway says it serves."""
        client = Client(self.url, key, ledger=ledger)
        try:
            answer = await self._guard(client.propose(actions))
            st = await self._guard(client.wait(answer["tx_hash"], timeout=timeout))
        except TimeoutError as e:
            raise GatewayUnavailable(f"proposal not committed within {timeout}s") from e
        except ClientError as e:  # 4xx (5xx and 429 are GatewayUnavailable): this proposal is refused as it is
            raise ProposalRefused(f"{e.code}: {e.message}") from e
        finally:
            await client.close()
        if st["status"] != "Committed":
            raise ProposalRefused(f"{st.get('reason', 'invalid')}: {st.get('message', '')}".strip())
        found = await self.proposal(answer["proposal_id"])
        return Submitted(answer["proposal_id"], (found or {}).get("state", "Open"))

    async def submit_document(self, document: bytes, path: str, timeout: float = 15.0) -> dict[str, Any]:
        """Post a document a member signed elsewhere, exactly as it is, and wait for the ledger's
        verdict: `{"tx_hash", "proposal_id", "status", ...}`. Nothing is signed here."""
        client = Client(self.url)
        try:
            answer = await self._guard(client.submit_document(document, path))
            st = await self._guard(client.wait(answer["tx_hash"], timeout=timeout))
        except TimeoutError as e:
            raise GatewayUnavailable(f"document not committed within {timeout}s") from e
        except ClientError as e:
            raise ProposalRefused(f"{e.code}: {e.message}") from e
        finally:
            await client.close()
        self.forget_service()
        return {**st, "tx_hash": answer["tx_hash"], "proposal_id": answer["proposal_id"]}

    async def withdraw(self, key: PrivateKey, proposal_id: str, ledger: str) -> None:
        client = Client(self.url, key, ledger=ledger)
        try:
            await self._guard(client.withdraw(proposal_id))
        finally:
            await client.close()


def set_action(role: str, name: str, pem: str, weight: int | None) -> dict[str, Any]:
    """`set_member` for Voting members, `set_user` for Participants."""
    if role == "Participant":
        return {"name": "set_user", "args": {"name": name, "public_key": pem}}
    args: dict[str, Any] = {"name": name, "public_key": pem}
    if weight is not None:
        args["weight"] = int(weight)
    return {"name": "set_member", "args": args}


def remove_action(role: str, key_id: str) -> dict[str, Any]:
    if role == "Participant":
        return {"name": "remove_user", "args": {"user_id": key_id}}
    return {"name": "remove_member", "args": {"member_id": key_id}}


def adds_key(key_id: str) -> Callable[[dict[str, Any]], bool]:
    def match(action: dict[str, Any]) -> bool:
        return (
            action.get("name") in ("set_member", "set_user")
            and _key_id((action.get("args") or {}).get("public_key")) == key_id
        )

    return match


def removes_key(key_id: str) -> Callable[[dict[str, Any]], bool]:
    def match(action: dict[str, Any]) -> bool:
        args = action.get("args") or {}
        return action.get("name") in ("remove_member", "remove_user") and key_id in (
            args.get("member_id"),
            args.get("user_id"),
        )

    return match


def retires_node(node_id: str) -> Callable[[dict[str, Any]], bool]:
    def match(action: dict[str, Any]) -> bool:
        return action.get("name") == "retire_node" and (action.get("args") or {}).get("node_id") == node_id

    return match


def is_active(service: dict[str, Any], role: str, key_id: str) -> bool:
    people = service.get("users" if role == "Participant" else "members") or []
    return any(p.get("id") == key_id for p in people)


def ledger_node(service: dict[str, Any], name: str, node_id: str | None = None) -> dict[str, Any] | None:
    """The ledger's record of a node: by the node id its ConsortiumNode recorded (`status.nodeId`) when
    it has one, else by the name it joined with, never a Retired record of an earlier node of that
    name (a re-created ConsortiumNode is a new node until it joins)."""
    nodes = service.get("nodes") or []
    if node_id:
        return next((dict(n) for n in nodes if n.get("id") == node_id), None)
    for n in nodes:
        if n.get("name") == name and n.get("status") != "Retired":
            return dict(n)
    return None
