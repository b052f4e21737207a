"""One EVM message run on pyrevm (revm), against the ledger's Ethereum state.

pyrevm 0.3.7 has no pluggable database and no state-diff API, so each run uses a fresh EVM whose
in-memory database is filled from the ledger's maps with the accounts the run needs, each with
its complete storage. Which accounts those are is not known ahead (a contract may call any
other): the run is repeated with every account the EVM asked its database for (`db_accounts`,
which also records look-ups made in frames that later reverted) until it asked for no account
the ledger holds that was not loaded. The result is therefore exactly what a database backed by
the ledger would give, and depends only on the ledger's state: every executor computes the same.

What the run changed is read from the journal's debug dump (`journal_str`, whose format is
pinned with the pyrevm version and covered by tests): accounts touched, created or destroyed,
and storage slots whose present value differs from the original. A message call does not buy
gas, bump the nonce or pay fees: `app.py` does that around it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pyrevm import EVM, AccountInfo, BlockEnv, CfgEnv, Env, TxEnv

from conclavium.eth import chain as eth_chain
from conclavium.eth.hashing import EMPTY_CODE_HASH, keccak256

SPEC = "CANCUN"
MAX_ROUNDS = 16  # rounds that each add accounts; past it, a round loads every account there is
ZERO = "0x" + "00" * 20


class EvmFailure(Exception):
    """revm refused the message itself (not a revert or a halt): the transaction is Invalid."""


@dataclass(frozen=True)
class BlockParams:
    number: int
    timestamp: int  # seconds
    coinbase: str
    base_fee: int
    gas_limit: int
    prevrandao: bytes
    chain_id: int


@dataclass
class Account:
    nonce: int
    balance: int
    code: bytes  # b"" for none


@dataclass
class RunResult:
    success: bool
    gas_used: int
    output: bytes
    reason: str  # "" on success; "Revert", or the halt reason
    logs: list[tuple[str, list[str], bytes]]
    contract: str | None
    accounts: dict[str, Account | None] = field(default_factory=dict)  # changed; None: deleted
    storage: dict[str, dict[int, int]] = field(default_factory=dict)  # address -> slot -> value
    cleared: set[str] = field(default_factory=set)  # accounts whose whole storage goes


class LedgerReader:
    """The ledger's Ethereum state as the runner reads it (any `get`/`items` store)."""

    def __init__(self, state: Any) -> None:
        self.state = state

    def account(self, address: str) -> Account | None:
        row = self.state.get(eth_chain.ACCOUNTS, address)
        if row is None:
            return None
        code = b""
        if row[2]:
            code_hex = self.state.get(eth_chain.CODE, row[2])
            code = bytes.fromhex(code_hex) if code_hex else b""
        return Account(row[0], int(row[1], 16), code)

    def storage(self, address: str) -> dict[int, int]:
        return {int(k, 16): int(v, 16) for k, v in self.state.items(storage_map(address))}

    def storage_at(self, address: str, slot: int) -> int:
        v = self.state.get(storage_map(address), slot_key(slot))
        return int(v, 16) if v else 0

    def all_accounts(self) -> list[str]:
        return [a for a, _ in self.state.items(eth_chain.ACCOUNTS)]


# Opcodes that make the EVM ask its database for an account other than the transaction's own
# (caller, recipient, coinbase, access list, precompiles): BALANCE, EXTCODESIZE, EXTCODECOPY,
# EXTCODEHASH, CREATE, CALL, CALLCODE, DELEGATECALL, CREATE2, STATICCALL, SELFDESTRUCT.
_REACHES_OUT = frozenset((0x31, 0x3B, 0x3C, 0x3F, 0xF0, 0xF1, 0xF2, 0xF4, 0xF5, 0xFA, 0xFF))
# After these, execution does not fall through to the next byte (STOP, JUMP, RETURN, REVERT, INVALID).
_ENDS_FLOW = frozenset((0x00, 0x56, 0xF3, 0xFD, 0xFE))
PRECOMPILES = tuple(f"0x{i:040x}" for i in range(1, 11))  # Cancun: 0x01 to 0x0a (point evaluation)
_isolated_cache: dict[bytes, bool] = {}
_code_hashes: dict[bytes, bytes] = {}


def code_hash(code: bytes) -> bytes:
    """Keccak of a contract's code, remembered: a contract's code is hashed on every call to it."""
    found = _code_hashes.get(code)
    if found is None:
        if len(_code_hashes) > 1_000:
            _code_hashes.clear()
        found = _code_hashes[code] = keccak256(code)
    return found


def isolated(code: bytes) -> bool:
    """True when no instruction of `code` that can execute reaches another account: a message to
    such code asks the database only for the transaction's own accounts, so it needs no second
    round (`block_evm.py`). An instruction can execute only if sequential flow from offset 0 or
    from a JUMPDEST reaches it (jumps land only on JUMPDESTs, found by the same scan that skips
    PUSH data), so bytes after a terminating instruction, such as Solidity's metadata trailer,
    count only once a JUMPDEST precedes them. Conservative: any doubt answers False."""
    found = _isolated_cache.get(code)
    if found is not None:
        return found
    live, i, n = True, 0, len(code)
    found = True
    while i < n:
        op = code[i]
        if op == 0x5B:
            live = True
        elif live and op in _REACHES_OUT:
            found = False
            break
        elif op in _ENDS_FLOW:
            live = False
        i += op - 0x5E if 0x60 <= op <= 0x7F else 1  # PUSHn: the opcode and n bytes of data
    if len(_isolated_cache) > 1_000:
        _isolated_cache.clear()
    _isolated_cache[code] = found
    return found


def storage_map(address: str) -> str:
    return f"{eth_chain.STORAGE}.{address}"


def slot_key(slot: int) -> str:
    return f"{slot:064x}"


def _env(block: BlockParams) -> Env:
    return Env(
        cfg=CfgEnv(chain_id=block.chain_id),
        block=BlockEnv(
            number=block.number,
            coinbase=block.coinbase,
            timestamp=block.timestamp,
            difficulty=0,
            prevrandao=block.prevrandao,
            basefee=block.base_fee,
            gas_limit=block.gas_limit,
        ),
    )


_REVERT_OUTPUT = re.compile(r"output: 0x([0-9a-fA-F]*)")


def new_evm(block: BlockParams) -> EVM:
    return EVM(env=_env(block), spec_id=SPEC)


def run(
    reader: LedgerReader,
    block: BlockParams,
    caller: str,
    to: str | None,
    data: bytes,
    value: int,
    gas: int,
    access_list: list[tuple[str, list[int]]],
    caller_account: Account | None = None,
    hints: set[str] | None = None,
) -> RunResult:
    """Run the message on a fresh EVM; `caller_account` overrides the caller's ledger account
    (gas bought). Used for calls (`eth_call`, `eth_estimateGas`); transactions run on the block's
    cached EVM (`block_evm.py`), which gives the same results."""
    wanted = {caller, *(a for a, _ in access_list), *(hints or ())}
    if to is not None:
        wanted.add(to)
    rounds = 0
    while True:
        rounds += 1
        evm, loaded = _fresh(reader, block, wanted, caller, caller_account)
        evm.snapshot()
        result = message(evm, caller, to, data, value, gas, access_list)
        asked = {a.lower() for a in evm.db_accounts}
        missing = {a for a in asked - loaded if reader.account(a) is not None}
        if not missing:
            break
        if rounds >= MAX_ROUNDS:
            wanted |= set(reader.all_accounts())
        wanted |= missing
    if result.success:
        changes(evm, reader, result, caller, caller_account)
    return result


def _fresh(
    reader: LedgerReader, block: BlockParams, wanted: set[str], caller: str, caller_account: Account | None
) -> tuple[EVM, set[str]]:
    evm = new_evm(block)
    loaded: set[str] = set()
    for address in sorted(wanted):
        acct = caller_account if address == caller and caller_account is not None else reader.account(address)
        if acct is None:
            continue
        evm.insert_account_info(address, AccountInfo(balance=acct.balance, nonce=acct.nonce, code=acct.code or None))
        for slot, v in reader.storage(address).items():
            # pyrevm 0.3.7 writes a slot into the database only while the account is not loaded
            # in the journal, and loads it as it does; a later slot would become a journal write
            # (a dirty slot: wrong gas, and a write the run did not make). Reverting to a
            # checkpoint unloads the account again, so every slot lands in the database, cold.
            checkpoint = evm.snapshot()
            evm.insert_account_storage(address, slot, v)
            evm.revert(checkpoint)
        loaded.add(address)
    return evm, loaded


def message(
    evm: EVM, caller: str, to: str | None, data: bytes, value: int, gas: int, access_list: list[tuple[str, list[int]]]
) -> RunResult:
    """One message, inside the caller's journal checkpoint (the caller reverts or keeps it)."""
    evm.set_tx_env(TxEnv(access_list=access_list, gas_price=0))
    contract = None
    try:
        if to is None:
            contract = evm.deploy(caller, data, value=value, gas=gas).lower()
            output = b""
        else:
            output = bytes(evm.message_call(caller, to, data, value=value, gas=gas))
    except RuntimeError as e:
        text = str(e)
        res = evm.result
        if text.startswith("Revert") and res is not None:
            m = _REVERT_OUTPUT.search(text)
            return RunResult(False, res.gas_used, bytes.fromhex(m.group(1)) if m else b"", "Revert", [], None)
        if text.startswith("Halt") and res is not None:
            return RunResult(False, res.gas_used, b"", _halt_reason(text), [], None)
        raise EvmFailure(text[:300]) from None
    res = evm.result
    assert res is not None
    logs = [(log.address.lower(), [t.lower() for t in log.topics], bytes(log.data[1])) for log in res.logs]
    return RunResult(True, res.gas_used, output, "", logs, contract)


def _halt_reason(text: str) -> str:
    m = re.search(r"reason: ([A-Za-z]+)", text)
    return m.group(1) if m else "Halt"


# The debug dump of revm's JournaledState, as pyrevm 0.3.7 prints it.
_ACCOUNT = re.compile(
    r"(0x[0-9a-f]{40}): Account \{ info: AccountInfo \{ "
    r"balance: (\d+), nonce: (\d+), code_hash: 0x([0-9a-f]{64}), code: "
)
_CODE = re.compile(r"Some\(Bytecode \{ bytecode: 0x([0-9a-f]*), state: (?:(?:Analysed|Checked) \{ len: (\d+)|Raw)")
_STORAGE = re.compile(r"storage: \{(.*?)\}, status: AccountStatus\(([^)]*)\)")
_SLOT = re.compile(r"(\d+): StorageSlot \{ previous_or_original_value: (\d+), present_value: (\d+) \}")


@dataclass
class DumpedAccount:
    balance: int
    nonce: int
    code_hash: bytes
    code: bytes | None
    slots: dict[int, tuple[int, int]]  # slot -> (original, present)
    status: str


def parse_dump(text: str) -> dict[str, DumpedAccount]:
    """The accounts of a journal dump (only its `state` part)."""
    start = text.find("state: {")
    end = text.find("}, transient_storage:")
    if start < 0 or end < 0:
        raise EvmFailure("unexpected EVM journal format")
    body = text[start:end]
    out: dict[str, DumpedAccount] = {}
    matches = list(_ACCOUNT.finditer(body))
    for i, m in enumerate(matches):
        section = body[m.end() : matches[i + 1].start() if i + 1 < len(matches) else len(body)]
        code = None
        cm = _CODE.match(section)
        if cm:
            raw = bytes.fromhex(cm.group(1))
            code = raw[: int(cm.group(2))] if cm.group(2) is not None else raw
        sm = _STORAGE.search(section)
        if sm is None:
            raise EvmFailure("unexpected EVM journal format")
        slots = {int(k): (int(o), int(p)) for k, o, p in _SLOT.findall(sm.group(1))}
        out[m.group(1)] = DumpedAccount(
            int(m.group(2)), int(m.group(3)), bytes.fromhex(m.group(4)), code, slots, sm.group(2)
        )
    return out


def changes(evm: EVM, reader: LedgerReader, result: RunResult, caller: str, caller_account: Account | None) -> None:
    """What the successful run changed, against what was loaded."""
    for address, acct in parse_dump(evm.journal_str).items():
        flags = acct.status
        if "Touched" not in flags and "Created" not in flags and "SelfDestructed" not in flags:
            continue
        before = caller_account if address == caller and caller_account is not None else reader.account(address)
        if "SelfDestructed" in flags:
            if before is not None:
                result.accounts[address] = None
                result.cleared.add(address)
            continue
        if acct.code_hash == EMPTY_CODE_HASH:
            code = b""
        elif before is not None and code_hash(before.code) == acct.code_hash:
            code = before.code
        else:
            code = acct.code or b""
        after = Account(acct.nonce, acct.balance, code)
        if "Created" in flags and before is not None:
            result.cleared.add(address)
        if address == caller:  # the application settles its nonce and balance
            result.accounts[address] = after
            continue
        if after.nonce == 0 and after.balance == 0 and not after.code:
            if before is not None:
                result.accounts[address] = None
                result.cleared.add(address)
            continue
        if before != after:
            result.accounts[address] = after
        changed = {k: p for k, (o, p) in acct.slots.items() if o != p}
        if changed:
            result.storage[address] = changed
