"""The Ethereum application: raw signed Ethereum transactions executed by the EVM in ledger order.

An entry's payload is the raw transaction exactly as `eth_sendRawTransaction` received it; its
signature is the one inside (the entry's own signature field is empty). Every executor decodes
it, recovers the sender, and checks what geth checks, in ledger order, with geth's words: chain
id, intrinsic gas, nonce, funds for gas * price + value, the fee floor, and (a governance
setting) whether the sender may transact at all. A transaction that passes is executed: gas is
bought, the EVM runs (`evm.py`), unused gas is refunded, priority fees go to the coinbase; a
revert or a halt is still a transaction with a receipt (status 0) that consumed gas and the
nonce. One that does not pass is Invalid with geth's error and changes nothing.

The writes (accounts, storage, code, the transaction's outcome with its logs, its place in the
Ethereum block) are the entry's write set, so the Merkle leaf commits to the outcome: an executor
that computes another outcome computes another root, a fork detected like any other.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from typing import Any

from conclavium.apps import app_entry
from conclavium.block import Entry
from conclavium.eth import chain as eth_chain
from conclavium.eth.hashing import address_hex, keccak256
from conclavium.eth.tx import EthTx, EthTxError, check_static, decode
from conclavium.governance import queries as gov_queries
from conclavium.tx import TxError

from ...state import write_digest
from ...tables import SERVICE
from ..base import Application, Context, Namespaces, Verdict
from . import evm
from .block_evm import BlockEvm
from .metrics import ETH_GAS, ETH_REVERTS, ETH_TXS


def chain_config(state: Any) -> eth_chain.ChainConfig:
    return eth_chain.from_record(state.get(SERVICE, eth_chain.CHAIN_KEY))


@functools.lru_cache(maxsize=16)
def block_params(chain: eth_chain.ChainConfig, height: int, ts_ms: int, prev: bytes) -> evm.BlockParams:
    """The EVM's block environment, the same for every transaction of a block (computed once)."""
    return evm.BlockParams(
        number=height,
        timestamp=ts_ms // 1000,
        coinbase=chain.coinbase,
        base_fee=chain.base_fee,
        gas_limit=chain.block_gas_limit,
        prevrandao=keccak256(b"conclavium.eth.prevrandao" + prev),
        chain_id=chain.chain_id,
    )


def admit(state: Any, tx: EthTx, chain: eth_chain.ChainConfig, future_ok: bool = False) -> tuple[str, evm.Account]:
    """Geth's checks of a decoded transaction against the state; returns the sender and its
    account. Raises EthTxError. The gateway's pre-check (`future_ok`: a nonce ahead of the state
    may be preceded by transactions still on their way) and execution use the same function."""
    check_static(tx, chain)
    sender = address_hex(tx.sender)
    if chain.senders == "registered" and state.get(eth_chain.SENDERS, sender) is None:
        raise EthTxError("sender_not_registered", f"sender {sender} is not registered to transact on this ledger")
    account = evm.LedgerReader(state).account(sender) or evm.Account(0, 0, b"")
    if account.code:
        raise EthTxError(
            "sender_not_eoa", f"sender not an eoa: address {sender}, codehash: 0x{keccak256(account.code).hex()}"
        )
    if tx.nonce < account.nonce:
        raise EthTxError("nonce_too_low", f"nonce too low: address {sender}, tx: {tx.nonce} state: {account.nonce}")
    if tx.nonce > account.nonce and not future_ok:
        raise EthTxError("nonce_too_high", f"nonce too high: address {sender}, tx: {tx.nonce} state: {account.nonce}")
    if tx.nonce + 1 >= 2**64:
        raise EthTxError("nonce_max", f"nonce has max value: address {sender}, nonce: {tx.nonce}")
    cost = tx.gas * tx.max_fee + tx.value
    if account.balance < cost:
        raise EthTxError(
            "insufficient_funds",
            f"insufficient funds for gas * price + value: address {sender} have {account.balance} want {cost}",
        )
    return sender, account


class EthereumApp(Application):
    name = eth_chain.APP
    namespaces = Namespaces(public=(eth_chain.PREFIX,), private=())

    def __init__(self) -> None:
        self.hints: dict[str, set[str]] = {}  # callee -> accounts its last run asked for (speed only)
        self.vm = BlockEvm()

    def execute(self, ctx: Context, entry: Entry, pre: Verdict) -> bytes:
        if entry.signature:
            raise TxError("invalid_tx", "an Ethereum entry carries its signature inside the raw transaction")
        state = ctx.state
        if not gov_queries.is_service_open(state):
            raise TxError("service_not_open", "the service accepts only governance until members open it")
        try:
            tx = decode(entry.data)
            chain = chain_config(state)
            sender, account = admit(state, tx, chain)
        except EthTxError as e:
            raise TxError(e.code, e.message) from None
        if state.get(eth_chain.TXS, "0x" + tx.hash.hex()) is not None:
            raise TxError("already_known", "already known")
        price = tx.effective_gas_price(chain.base_fee)
        bought = evm.Account(account.nonce, account.balance - tx.gas * price, b"")
        to = address_hex(tx.to) if tx.to is not None else None
        access = [(address_hex(a), [int.from_bytes(k, "big") for k in keys]) for a, keys in tx.access_list]
        params = block_params(chain, ctx.block_height, ctx.block_time, ctx.block_prev)
        reader = evm.LedgerReader(state)
        try:
            result = self.vm.run(
                reader, params, sender, to, tx.data, tx.value, tx.gas, access, bought, self.hints.get(to or "")
            )
        except evm.EvmFailure as e:
            raise TxError("evm_refused", str(e)) from None
        # The gas bought and not used goes back; the priority part of what was used pays the coinbase.
        changes = dict(result.accounts)
        payer = changes.get(sender) or bought
        payer = evm.Account(tx.nonce + 1, payer.balance + (tx.gas - result.gas_used) * price, payer.code)
        changes[sender] = payer
        tip = (price - chain.base_fee) * result.gas_used
        if tip:
            base = changes.get(chain.coinbase) or reader.account(chain.coinbase) or evm.Account(0, 0, b"")
            changes[chain.coinbase] = evm.Account(base.nonce, base.balance + tip, base.code)
        state.begin()
        try:
            self._write_state(state, reader, changes, result)
            self._write_outcome(ctx, entry.data, tx, sender, to, price, result)
        except BaseException:
            state.rollback()
            raise
        digest = write_digest(state.commit())
        self.vm.settle(state, changes, result)
        ctx.entry_dated(ctx.block_time)
        ETH_TXS.labels("success" if result.success else "reverted").inc()
        ETH_GAS.inc(result.gas_used)
        if not result.success:
            ETH_REVERTS.inc()
        return digest

    @staticmethod
    def _write_state(
        state: Any, reader: evm.LedgerReader, changes: dict[str, evm.Account | None], result: evm.RunResult
    ) -> None:
        for address in sorted(result.cleared):
            for slot, _ in state.items(evm.storage_map(address)):
                state.delete(evm.storage_map(address), slot)
        for address in sorted(changes):
            acct = changes[address]
            if acct is None:
                state.delete(eth_chain.ACCOUNTS, address)
                continue
            code_hash = ""
            if acct.code:
                code_hash = "0x" + evm.code_hash(acct.code).hex()
                if state.get(eth_chain.CODE, code_hash) is None:
                    state.put(eth_chain.CODE, code_hash, acct.code.hex())
            state.put(eth_chain.ACCOUNTS, address, eth_chain.account_row(acct.nonce, acct.balance, code_hash))
        for address in sorted(result.storage):
            smap = evm.storage_map(address)
            for slot, value in sorted(result.storage[address].items()):
                if value:
                    state.put(smap, evm.slot_key(slot), hex(value))
                else:
                    state.delete(smap, evm.slot_key(slot))

    def _write_outcome(
        self, ctx: Context, raw: bytes, tx: EthTx, sender: str, to: str | None, price: int, result: evm.RunResult
    ) -> None:
        state, height = ctx.state, ctx.block_height
        block = state.get(eth_chain.BLOCKS, str(height)) or {"n": 0, "gas": 0, "logs": 0}
        index, cumulative = block["n"], block["gas"] + result.gas_used
        tx_hash = "0x" + tx.hash.hex()
        eid = hashlib.sha256(app_entry(eth_chain.APP, raw, b"").data).hexdigest()
        state.put(
            eth_chain.TXS,
            tx_hash,
            {
                "height": height,
                "index": index,
                "from": sender,
                "to": to,
                "status": 1 if result.success else 0,
                "gas_used": result.gas_used,
                "cumulative_gas": cumulative,
                "price": price,
                "contract": result.contract,
                "logs": [[a, topics, data.hex()] for a, topics, data in result.logs],
                "first_log": block["logs"],
                "output": result.output.hex() if not result.success else "",
                "reason": result.reason,
                "raw": raw.hex(),
                "entry": eid,
            },
        )
        state.put(
            eth_chain.BLOCKS,
            str(height),
            {"n": index + 1, "gas": cumulative, "logs": block["logs"] + len(result.logs), "ts": ctx.block_time},
        )
        state.put(eth_chain.BLOCK_TXS, f"{height}:{index}", tx_hash)
        if to is not None:
            self.hints[to] = set(result.accounts) | {to}
            if len(self.hints) > 10_000:
                self.hints.clear()

    def queries(self) -> dict[str, Callable[[Any, dict[str, Any]], dict[str, Any]]]:
        from .rpc import answer

        return {"eth": answer}
