"""A member's Quorum JSON-RPC (`POST /` on its party endpoint, docs/quorum.md): the private methods
answered for this member's party keys, everything else as the public Ethereum JSON-RPC answers.

`eth_sendRawPrivateTransaction` takes a marker whose data is a hash this endpoint's `/storeraw`
returned, seals the payload with privateFrom/privateFor to the transaction key and puts the
entry, signed by this node, in the intake. Reads of private state (`eth_getTransactionReceipt`,
`eth_getPrivateTransactionReceipt`, `eth_getQuorumPayload`, `eth_getCode`, `eth_call`) answer
from the group's state when one of the caller's party keys is in the group, and as a node that
is not a party otherwise: the public marker receipt, no payload, no code, an empty call result.
The caller is the owner its bearer token names (`quorum.verify_token`, checked by the endpoint).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from conclavium import quorum
from conclavium.apps import app_entry
from conclavium.block import IntakeBatch
from conclavium.crypto import sealing
from conclavium.eth import chain as eth_chain
from conclavium.eth import jsonrpc as j
from conclavium.eth.hashing import keccak256
from conclavium.eth.tx import EthTxError, decode

from .apps.base import QueryError
from .apps.eth.app import admit, chain_config
from .apps.eth.rpc import Rpc, answer
from .apps.quorum import GroupReader


class PrivateRpc:
    def __init__(self, executor: Any, endpoint: Any) -> None:
        self.x = executor
        self.endpoint = endpoint

    @property
    def state(self) -> Any:
        return self.x.machine.state

    def my_keys(self, owner: str) -> set[str]:
        """This member's party keys that `owner` (the caller's token) is the owner of."""
        parties = self.endpoint.parties()
        return {k for k in self.endpoint.own_keys() if parties[k]["owner"] == owner}

    def my_groups(self, owner: str) -> set[str]:
        """The privacy groups one of the caller's party keys is in."""
        mine = self.my_keys(owner)
        return {gid for gid, keys in self.state.items(quorum.GROUPS) if mine & set(keys)}

    async def handle(self, body: Any, owner: str) -> Any:
        if isinstance(body, list):
            return [await self.one(b, owner) for b in body]
        return await self.one(body, owner)

    async def one(self, req: Any, owner: str) -> dict[str, Any]:
        rid = req.get("id") if isinstance(req, dict) else None
        if not isinstance(req, dict) or not isinstance(req.get("method"), str):
            return {"jsonrpc": "2.0", "id": rid, "error": {"code": j.INVALID_REQUEST, "message": "invalid request"}}
        params = req.get("params") or []
        if not isinstance(params, list):
            params = []
        try:
            result = await self.dispatch(req["method"], params, owner)
        except j.RpcError as e:
            return {"jsonrpc": "2.0", "id": rid, "error": e.to_json()}
        except QueryError as e:
            return {"jsonrpc": "2.0", "id": rid, "error": {"code": j.SERVER, "message": e.message}}
        return {"jsonrpc": "2.0", "id": rid, "result": result}

    def public(self, method: str, params: list[Any]) -> Any:
        out = answer(self.x.machine, {"method": method, "params": params})
        if "error" in out["rpc"]:
            e = out["rpc"]["error"]
            raise j.RpcError(e["code"], e["message"], e.get("data"))
        return out["rpc"]["result"]

    async def dispatch(self, method: str, p: list[Any], owner: str) -> Any:
        if method == "eth_sendRawPrivateTransaction":
            return await self.send_private(p, owner)
        groups = self.my_groups(owner)
        if method in ("eth_getTransactionReceipt", "eth_getPrivateTransactionReceipt"):
            return self.receipt(p, groups, only_private=method == "eth_getPrivateTransactionReceipt")
        if method == "eth_getQuorumPayload":
            return self.payload(p, groups)
        if method == "eth_getCode":
            return self.code(p, groups)
        if method == "eth_call":
            return self.call(p, groups)
        return self.public(method, p)

    # --- writes -----------------------------------------------------------------------------

    async def send_private(self, p: list[Any], owner: str) -> str:
        raw = j.parse_data(p[0] if p else None, "raw transaction")
        opts = p[1] if len(p) > 1 else None
        if not isinstance(opts, dict):
            raise j.RpcError(j.INVALID_PARAMS, "invalid argument 1: {privateFor: [party keys], privacyFlag: 0}")
        flag = opts.get("privacyFlag")
        if flag not in (None, 0):
            raise j.RpcError(
                j.INVALID_PARAMS, f"privacyFlag {flag} is not supported: only 0 (standard private) is (docs/quorum.md)"
            )
        if opts.get("mandatoryFor"):
            raise j.RpcError(j.INVALID_PARAMS, "mandatoryFor is not supported (docs/quorum.md)")
        private_for = opts.get("privateFor")
        parties = self.endpoint.parties()
        if not isinstance(private_for, list) or not private_for or len(private_for) > quorum.MAX_PARTIES:
            raise j.RpcError(j.INVALID_PARAMS, "privateFor must list 1 to 1000 party keys")
        for k in private_for:
            if not isinstance(k, str) or k not in parties:
                raise j.RpcError(j.INVALID_PARAMS, f"privateFor names a key governance did not register: {str(k)[:60]}")
        try:
            tx = decode(raw, private_marker=True)
            if tx.type != 0 or tx.v not in (37, 38):
                raise EthTxError("not_private", "a private transaction is a legacy transaction signed with v 37 or 38")
            if len(tx.data) != 64 or tx.value or tx.gas_price:
                raise EthTxError(
                    "invalid_marker", "a private marker carries the 64-byte payload hash, no value and gas price 0"
                )
            state = self.state
            admit(state, tx, replace(chain_config(state), allow_unprotected=True), future_ok=True)
        except EthTxError as e:
            raise j.RpcError(j.SERVER, e.message) from None
        stored = self.endpoint.payloads.get(tx.data, time.monotonic())
        if stored is None:
            raise j.RpcError(
                j.SERVER, "the transaction's data is not a payload hash this endpoint stored (POST /storeraw first)"
            )
        sender, payload = stored
        if sender not in self.my_keys(owner):
            raise j.RpcError(j.SERVER, "the payload was stored for a party key the caller's token does not own")
        secrets = self.x.secrets
        gen = secrets.current
        sealed = sealing.seal(
            quorum.private_part(payload, sender, sorted(private_for)), gen.tx_public, quorum.SEAL_TAG + raw
        )
        body = quorum.entry_payload(self.x.node_id, raw, gen.id, sealed)
        entry = app_entry(quorum.APP, body, self.x.keys.signing.sign(quorum.ENTRY_TAG + body))
        tx_hash = "0x" + keccak256(raw).hex()
        try:
            await self.x._publish_intake(IntakeBatch(entries=[entry]), f"quorum:{tx_hash}")
        except Exception as e:
            raise j.RpcError(j.SERVER, f"intake unavailable, retry: {type(e).__name__}") from None
        return tx_hash

    # --- private reads ----------------------------------------------------------------------

    def _private_outcome(self, tx_hash: str, groups: set[str]) -> dict[str, Any] | None:
        gid = self.state.get(quorum.TX_GROUPS, tx_hash)
        if gid is None or gid not in groups:
            return None
        out: dict[str, Any] | None = self.state.get(quorum.group_map(gid, "txs"), tx_hash)
        return out

    def receipt(self, p: list[Any], groups: set[str], only_private: bool) -> Any:
        tx_hash = "0x" + j.parse_data(p[0] if p else None, "transaction hash").hex()
        public = self.public("eth_getTransactionReceipt", [tx_hash])
        if public is None:
            return None
        outcome = self._private_outcome(tx_hash, groups)
        if outcome is None:
            return None if only_private else public
        rpc = Rpc(self.x.machine)
        logs = rpc.logs_of(tx_hash, {**self.state.get(eth_chain.TXS, tx_hash), "logs": outcome["logs"]})
        return {
            **public,
            "status": j.qty(outcome["status"]),
            "contractAddress": outcome["contract"],
            "logs": logs,
            "logsBloom": j.data(j.bloom([(a, t) for a, t, _ in outcome["logs"]])),
            "isPrivacyMarkerTransaction": False,
        }

    def payload(self, p: list[Any], groups: set[str]) -> str:
        digest = j.parse_data(p[0] if p else None, "payload hash")
        tx_hash = self.state.get(quorum.PAYLOADS, digest.hex())
        outcome = self._private_outcome(tx_hash, groups) if tx_hash is not None else None
        return "0x" + outcome["payload"] if outcome is not None else "0x"

    def _group_of(self, address: str, groups: set[str]) -> tuple[str | None, bool]:
        """(the group of a private contract, whether the caller is a party to it)."""
        gid = self.state.get(quorum.CONTRACTS, address)
        return gid, gid is not None and gid in groups

    def code(self, p: list[Any], groups: set[str]) -> str:
        address = j.parse_address(p[0] if p else None, "address")
        gid, mine = self._group_of(address, groups)
        if gid is None:
            return str(self.public("eth_getCode", p))
        if not mine:
            return "0x"
        acct = GroupReader(self.state, gid).account(address)
        return j.data(acct.code if acct else b"")

    def call(self, p: list[Any], groups: set[str]) -> str:
        call = p[0] if p else None
        to = call.get("to") if isinstance(call, dict) else None
        address = j.parse_address(to, "to") if to is not None else None
        gid, mine = self._group_of(address, groups) if address else (None, False)
        if gid is None:
            return str(self.public("eth_call", p))
        if not mine:
            return "0x"
        result = Rpc(self.x.machine).call(call, reader=GroupReader(self.state, gid))
        if not result.success:
            raise j.RpcError(
                j.REVERTED if result.reason == "Revert" else j.SERVER, result.reason, j.data(result.output)
            )
        return j.data(result.output)
