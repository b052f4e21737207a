"""GoQuorum private transactions (docs/quorum.md): a member's party endpoint puts an entry holding
the signed marker transaction (v 37/38, data = the stored payload's hash) in clear and the payload,
privateFrom and privateFor HPKE-sealed to the transaction key, signed by the submitting node.

Every executor checks the node (trusted, endorsed by the member governance tied privateFrom to),
the marker as geth checks a transaction (nonce, registered sender), opens the private part and
runs the payload with the EVM over the privacy group's private maps. The public chain records only
the marker: the sender's nonce moves and the marker has a receipt with no logs and no contract.
Every write (public and private) goes into a keyed write digest, so executors agree on one root
and a receipt reveals nothing of the private part.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

from conclavium import quorum
from conclavium.block import Entry
from conclavium.eth import chain as eth_chain
from conclavium.eth.hashing import address_hex, keccak256
from conclavium.eth.tx import EthTxError, decode
from conclavium.governance import queries as gov_queries
from conclavium.tx import TxError

from ..tables import SERVICE
from .base import Application, Context, Namespaces, Verdict
from .eth import evm
from .eth.app import admit, block_params, chain_config


class GroupReader(evm.LedgerReader):
    """A privacy group's private Ethereum state, read as the EVM runner reads the public one."""

    def __init__(self, state: Any, gid: str) -> None:
        super().__init__(state)
        self.gid = gid

    def account(self, address: str) -> evm.Account | None:
        row = self.state.get(quorum.group_map(self.gid, "accounts"), address)
        if row is None:
            return None
        code_hex = self.state.get(quorum.group_map(self.gid, "code"), row[2]) if row[2] else None
        return evm.Account(row[0], int(row[1], 16), bytes.fromhex(code_hex) if code_hex else b"")

    def storage(self, address: str) -> dict[int, int]:
        return {int(k, 16): int(v, 16) for k, v in self.state.items(self.storage_map(address))}

    def storage_at(self, address: str, slot: int) -> int:
        v = self.state.get(self.storage_map(address), evm.slot_key(slot))
        return int(v, 16) if v else 0

    def all_accounts(self) -> list[str]:
        return [a for a, _ in self.state.items(quorum.group_map(self.gid, "accounts"))]

    def storage_map(self, address: str) -> str:
        return quorum.group_map(self.gid, f"storage.{address}")


class QuorumApp(Application):
    name = quorum.APP
    namespaces = Namespaces(public=(eth_chain.PREFIX,), private=(quorum.PREFIX,))

    def execute(self, ctx: Context, entry: Entry, pre: Verdict) -> bytes:
        state = ctx.state
        if not gov_queries.is_service_open(state):
            raise TxError("service_not_open", "the service accepts only governance until members open it")
        try:
            node, marker, key_id, sealed = quorum.parse_entry(entry.data)
        except quorum.PrivateEntryError as e:
            raise TxError("invalid_private_tx", str(e)) from None
        node_key = ctx.trusted_node_keys().get(node)  # type: ignore[attr-defined]
        member = ctx.signer_members().get(node)  # type: ignore[attr-defined]
        if node_key is None or member is None or not quorum.verify_entry(node_key, entry.data, entry.signature):
            raise TxError("invalid_private_tx", "a private transaction is put by an endorsed trusted node, signed")
        chain = chain_config(state)
        try:
            tx = decode(marker, private_marker=True)
            if tx.type != 0 or tx.chain_id is not None or tx.v not in (37, 38):
                raise EthTxError("not_private", "a private marker is a legacy transaction with v 37 or 38")
            if len(tx.data) != 64 or tx.value or tx.gas_price:
                raise EthTxError(
                    "invalid_marker", "a private marker carries the 64-byte payload hash, no value and gas price 0"
                )
            sender, account = admit(state, tx, replace(chain, allow_unprotected=True))
        except EthTxError as e:
            raise TxError(e.code, e.message) from None
        tx_hash = "0x" + tx.hash.hex()
        if state.get(eth_chain.TXS, tx_hash) is not None:
            raise TxError("already_known", "already known")
        try:
            payload, private_from, private_for = quorum.parse_private_part(
                ctx.open_sealed(key_id, sealed, quorum.SEAL_TAG + marker)
            )
        except quorum.PrivateEntryError as e:
            raise TxError("invalid_private_tx", str(e)) from None
        parties = state.get(SERVICE, quorum.PARTIES_KEY) or {}
        if parties.get(private_from, {}).get("member") != member:
            raise TxError("not_own_party_key", "privateFrom is not a party key of the submitting node's member")
        unknown = [k for k in private_for if k not in parties]
        if unknown:
            raise TxError("unknown_party", f"privateFor names a key governance did not register: {unknown[0]}")
        group = sorted({private_from, *private_for})
        gid = quorum.group_id(group)
        reader = GroupReader(state, gid)
        to = address_hex(tx.to) if tx.to is not None else None
        params = block_params(chain, ctx.block_height, ctx.block_time, ctx.block_prev)
        try:
            result = evm.run(reader, params, sender, to, payload, 0, tx.gas, [], evm.Account(tx.nonce, 0, b""))
        except evm.EvmFailure as e:
            raise TxError("evm_refused", str(e)) from None
        state.begin()
        try:
            self._write_public(ctx, entry, marker, tx, tx_hash, sender, account, to)
            self._write_private(state, gid, group, sender, tx_hash, result, payload, private_from, private_for)
            state.put(quorum.PAYLOADS, tx.data.hex(), tx_hash)
            digest = ctx.private_digest(list(state.pending_writes()))
        except BaseException:
            state.rollback()
            raise
        state.commit()
        ctx.entry_dated(ctx.block_time)
        return digest

    @staticmethod
    def _write_public(
        ctx: Context,
        entry: Entry,
        marker: bytes,
        tx: Any,
        tx_hash: str,
        sender: str,
        account: evm.Account,
        to: str | None,
    ) -> None:
        state, height = ctx.state, ctx.block_height
        state.put(eth_chain.ACCOUNTS, sender, eth_chain.account_row(tx.nonce + 1, account.balance, ""))
        block = state.get(eth_chain.BLOCKS, str(height)) or {"n": 0, "gas": 0, "logs": 0}
        index = block["n"]
        state.put(
            eth_chain.TXS,
            tx_hash,
            {
                "height": height,
                "index": index,
                "from": sender,
                "to": to,
                "status": 1,
                "gas_used": 0,
                "cumulative_gas": block["gas"],
                "price": 0,
                "contract": None,
                "logs": [],
                "first_log": block["logs"],
                "output": "",
                "reason": "",
                "raw": marker.hex(),
                "entry": hashlib.sha256(entry.data).hexdigest(),
                "private": True,
            },
        )
        state.put(
            eth_chain.BLOCKS,
            str(height),
            {"n": index + 1, "gas": block["gas"], "logs": block["logs"], "ts": ctx.block_time},
        )
        state.put(eth_chain.BLOCK_TXS, f"{height}:{index}", tx_hash)

    @staticmethod
    def _write_private(
        state: Any,
        gid: str,
        group: list[str],
        sender: str,
        tx_hash: str,
        result: evm.RunResult,
        payload: bytes,
        private_from: str,
        private_for: list[str],
    ) -> None:
        reader = GroupReader(state, gid)
        for address in sorted(result.cleared):
            for slot, _ in list(state.items(reader.storage_map(address))):
                state.delete(reader.storage_map(address), slot)
        for address in sorted(result.accounts):
            if address == sender:
                continue  # the sender's nonce lives on the public chain
            acct = result.accounts[address]
            if acct is None:
                state.delete(quorum.group_map(gid, "accounts"), address)
                continue
            code_hash = ""
            if acct.code:
                code_hash = "0x" + keccak256(acct.code).hex()
                state.put(quorum.group_map(gid, "code"), code_hash, acct.code.hex())
            state.put(
                quorum.group_map(gid, "accounts"), address, eth_chain.account_row(acct.nonce, acct.balance, code_hash)
            )
        for address in sorted(result.storage):
            for slot, value in sorted(result.storage[address].items()):
                if value:
                    state.put(reader.storage_map(address), evm.slot_key(slot), hex(value))
                else:
                    state.delete(reader.storage_map(address), evm.slot_key(slot))
        state.put(
            quorum.group_map(gid, "txs"),
            tx_hash,
            {
                "status": 1 if result.success else 0,
                "gas_used": result.gas_used,
                "contract": result.contract,
                "logs": [[a, topics, data.hex()] for a, topics, data in result.logs],
                "output": result.output.hex() if not result.success else "",
                "reason": result.reason,
                "payload": payload.hex(),
                "from": private_from,
                "for": private_for,
            },
        )
        state.put(quorum.TX_GROUPS, tx_hash, gid)
        state.put(quorum.GROUPS, gid, group)
        if result.success and result.contract:
            state.put(quorum.CONTRACTS, result.contract, gid)
