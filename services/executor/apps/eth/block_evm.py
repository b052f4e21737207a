"""One pyrevm EVM kept across the Ethereum transactions of a block, as a cache of the ledger's
Ethereum state, so a contract's storage is loaded once per block rather than once per transaction.

Each transaction runs inside a journal checkpoint that is reverted once its changes are read:
the journal is empty again (every account cold, every original value the database's), and the
changes are then written into the EVM's database, exactly as they are written to the ledger's
maps. So the database always equals the ledger's state for every account it holds, and a run
gives what a fresh EVM would (`evm.run`). The cache is used only while that is certain: within
one application of one block (a block applied again after a rollback starts a new cache), while
no one else wrote the accounts map since its last write (governance's `eth_alloc`, an entry rolled
back: `State.changed_maps`), and never after anything failed between the run and its writes.
"""

from __future__ import annotations

from typing import Any

from pyrevm import EVM, AccountInfo

from conclavium.eth import chain as eth_chain

from . import evm as evmrun

MAX_ACCOUNTS = 20_000  # past it, a new cache (memory bound)


class BlockEvm:
    def __init__(self) -> None:
        self.vm: EVM | None = None
        self.token: object | None = None
        self.params: evmrun.BlockParams | None = None
        self.loaded: set[str] = set()

    def _usable(self, state: Any, params: evmrun.BlockParams) -> bool:
        return (
            self.vm is not None
            and self.token is not None
            and state.block_token() is self.token
            and self.params == params
            and eth_chain.ACCOUNTS not in state.changed_maps
            and len(self.loaded) < MAX_ACCOUNTS
        )

    def run(
        self,
        reader: evmrun.LedgerReader,
        params: evmrun.BlockParams,
        caller: str,
        to: str | None,
        data: bytes,
        value: int,
        gas: int,
        access_list: list[tuple[str, list[int]]],
        caller_account: evmrun.Account,
        hints: set[str] | None = None,
    ) -> evmrun.RunResult:
        """`evm.run`, on the cached EVM. The cache is taken out while the transaction is in flight:
        only `settle` puts it back, once the ledger's maps hold the same changes."""
        state = reader.state
        if not self._usable(state, params):
            self.vm, self.loaded = evmrun.new_evm(params), set()
            self.token, self.params = state.block_token(), params
        vm, self.vm = self.vm, None
        assert vm is not None
        _insert_account(vm, caller, caller_account)
        self.loaded.add(caller)
        wanted = {a for a, _ in access_list} | (hints or set())
        if to is not None:
            wanted.add(to)
        self._load(vm, reader, wanted - self.loaded)
        # A message to code that cannot reach another account asks the database only for these,
        # now loaded: one round, without listing the database (`db_accounts` costs per account it
        # holds, which grows with every sender of the block).
        alone = to is not None and evmrun.isolated(self._code(reader, to))
        if alone:
            self._load(vm, reader, {params.coinbase, *evmrun.PRECOMPILES} - self.loaded)
        rounds = 0
        while True:
            rounds += 1
            checkpoint = vm.snapshot()
            vm.reset_transient_storage()
            result = evmrun.message(vm, caller, to, data, value, gas, access_list)
            if alone:
                break
            asked = {a.lower() for a in vm.db_accounts}
            missing = {a for a in asked - self.loaded if reader.account(a) is not None}
            if missing and rounds >= evmrun.MAX_ROUNDS:
                missing |= set(reader.all_accounts()) - self.loaded
            if not missing:
                break
            vm.revert(checkpoint)
            self._load(vm, reader, missing)
        if result.success:
            evmrun.changes(vm, reader, result, caller, caller_account)
        vm.revert(checkpoint)
        self._pending = vm
        return result

    def settle(self, state: Any, accounts: dict[str, evmrun.Account | None], result: evmrun.RunResult) -> None:
        """The transaction's changes are in the ledger's maps: write them into the EVM's database
        too and put the cache back (or drop it when the database cannot express them)."""
        vm = getattr(self, "_pending", None)
        self._pending = None
        if vm is None or result.cleared or any(a is None for a in accounts.values()):
            return  # deleted accounts and cleared storage: a new cache is built from the maps
        for address, acct in accounts.items():
            assert acct is not None
            _insert_account(vm, address, acct)
            self.loaded.add(address)
        for address, slots in result.storage.items():
            for slot, v in slots.items():
                _insert_slot(vm, address, slot, v)
        state.changed_maps.discard(eth_chain.ACCOUNTS)
        self.vm = vm

    def _code(self, reader: evmrun.LedgerReader, address: str) -> bytes:
        """The code the database holds for `address` (loaded: the ledger's, as the block left it)."""
        acct = reader.account(address)
        return acct.code if acct is not None else b""

    def _load(self, vm: EVM, reader: evmrun.LedgerReader, addresses: set[str]) -> None:
        for address in sorted(addresses):
            acct = reader.account(address)
            self.loaded.add(address)
            if acct is None:
                continue
            _insert_account(vm, address, acct)
            for slot, v in reader.storage(address).items():
                _insert_slot(vm, address, slot, v)


def _insert_account(vm: EVM, address: str, acct: evmrun.Account) -> None:
    vm.insert_account_info(address, AccountInfo(balance=acct.balance, nonce=acct.nonce, code=acct.code or None))


def _insert_slot(vm: EVM, address: str, slot: int, value: int) -> None:
    """Into the database, cold (see `evm._fresh`: pyrevm 0.3.7 does so only for an account not in
    the journal, and loads it as it does; the checkpoint unloads it again)."""
    checkpoint = vm.snapshot()
    vm.insert_account_storage(address, slot, value)
    vm.revert(checkpoint)
