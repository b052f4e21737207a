"""The Ethereum application inside the ledger machine: raw transactions signed by eth-account
executed in ledger order, geth's refusals, receipts only after commit, the same roots on three
executors, and EVM state that survives a snapshot."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from eth_tools import CHAIN_ID, compiled, new_account, sign
from eth_utils import function_signature_to_4byte_selector as selector
from machine_harness import LEDGER, Chain, bootstrap

from conclavium.apps import app_entry
from conclavium.block import Entry, Kind
from conclavium.governance import documents
from services.executor.apps.base import QueryError
from services.executor.apps.eth import evm
from services.executor.apps.eth.rpc import answer
from services.executor.ledger_machine import LedgerMachine
from services.executor.verifier import BatchVerifier

ETHER = 10**18


def eth(raw: bytes) -> Entry:
    return app_entry("eth", raw, b"")


def rpc(m: LedgerMachine, method: str, *params: Any) -> Any:
    reply = answer(m, {"method": method, "params": list(params)})["rpc"]
    if "error" in reply:
        raise RuntimeError(reply["error"])
    return reply["result"]


def rpc_error(m: LedgerMachine, method: str, *params: Any) -> dict[str, Any]:
    return answer(m, {"method": method, "params": list(params)})["rpc"]["error"]


def vote(chain: Chain, actions: list[dict[str, Any]], n: int) -> list[Entry]:
    at = chain.ts // 1000 + n
    doc = documents.make_proposal(actions, chain.member, at, ledger=LEDGER)
    ballot = documents.make_ballot(hashlib.sha256(doc).hexdigest(), True, chain.member, at, ledger=LEDGER)
    return [Entry(Kind.GOV, doc, b""), Entry(Kind.GOV, ballot, b"")]


async def ledger(n: int, funded: list[Any], registered: list[Any] | None = None) -> tuple[Chain, list[LedgerMachine]]:
    chain = Chain()
    machines = [LedgerMachine(LEDGER, BatchVerifier(1), secrets=chain.secrets) for _ in range(n)]
    await bootstrap(chain, machines[0])
    for m in machines[1:]:
        m.restore(machines[0].snapshot())
    actions = [
        {"name": "set_applications", "args": {"applications": ["kv", "eth"]}},
        {"name": "set_eth_chain", "args": {"chain_id": CHAIN_ID, "senders": "registered"}},
        {"name": "eth_alloc", "args": {"balances": {a.address: 100 * ETHER for a in funded}}},
        {"name": "eth_register", "args": {"accounts": [a.address for a in (registered or funded)]}},
    ]
    await run(chain, machines, vote(chain, actions, 1))
    return chain, machines


async def run(chain: Chain, machines: list[LedgerMachine], entries: list[Entry]) -> list[Any]:
    """One block on every machine, then one carrying every node's commit signature."""
    block = chain.block(entries)
    outs = [(await m.apply(*block))[1] for m in machines]
    first = machines[0]
    sigs = [chain.sig_of(i, r) for r in first.uncommitted.values() for i in range(3)]
    commit = chain.block([], sigs)
    for m in machines:
        await m.apply(*commit)
    return outs


def call_data(sig: str, *words: int | str) -> bytes:
    out = selector(sig)
    for w in words:
        out += (int(w, 16) if isinstance(w, str) else w).to_bytes(32, "big")
    return out


async def test_erc20_deploy_transfer_events_and_geth_refusals() -> None:
    alice, bob, stranger = new_account(), new_account(), new_account()
    chain, (m,) = await ledger(1, [alice, stranger], registered=[alice, bob])
    token = compiled()["Token"]
    supply = 1_000_000 * ETHER
    deploy = sign(alice, nonce=0, data=bytes.fromhex(token["bytecode"][2:]) + supply.to_bytes(32, "big"), gas=3_000_000)
    value = sign(alice, nonce=1, to=bob.address, value=ETHER, gas=21_000)
    outs = await run(chain, [m], [eth(deploy), eth(value)])
    assert not outs[0].invalid
    receipt = rpc(m, "eth_getTransactionReceipt", "0x" + _hash(deploy))
    assert receipt["status"] == "0x1" and receipt["contractAddress"]
    contract = receipt["contractAddress"]
    assert int(rpc(m, "eth_getBalance", bob.address), 16) == ETHER
    assert rpc(m, "eth_getTransactionCount", alice.address, "pending") == "0x2"
    assert len(rpc(m, "eth_getCode", contract)) > 1000

    transfer = sign(alice, nonce=2, to=contract, data=call_data("transfer(address,uint256)", bob.address, 5 * ETHER))
    reused = sign(alice, nonce=1, to=bob.address, value=1, gas=21_000)  # a new transaction, an old nonce
    wrong_chain = sign(alice, nonce=3, to=bob.address, value=1, gas=21_000, chainId=CHAIN_ID + 1)
    too_little_gas = sign(alice, nonce=3, to=bob.address, value=1, gas=20_000)
    broke = sign(bob, nonce=0, to=alice.address, value=2 * ETHER, gas=21_000)
    unregistered = sign(stranger, nonce=0, to=alice.address, value=1, gas=21_000)
    outs = await run(chain, [m], [eth(x) for x in (transfer, reused, wrong_chain, too_little_gas, broke, unregistered)])
    refused = {code: msg for _, code, msg in outs[0].invalid}
    assert refused["nonce_too_low"] == f"nonce too low: address {alice.address.lower()}, tx: 1 state: 3"
    assert refused["wrong_chain"].startswith("invalid chain id for signer")
    assert refused["intrinsic_gas"] == "intrinsic gas too low: have 20000, want 21000"
    assert refused["insufficient_funds"].startswith("insufficient funds for gas * price + value")
    assert "not registered" in refused["sender_not_registered"]
    balance_of = call_data("balanceOf(address)", bob.address)
    answer_hex = rpc(m, "eth_call", {"to": contract, "data": "0x" + balance_of.hex()}, "latest")
    assert int(answer_hex, 16) == 5 * ETHER
    receipt = rpc(m, "eth_getTransactionReceipt", "0x" + _hash(transfer))
    (log,) = receipt["logs"]
    assert log["address"] == contract and len(log["topics"]) == 3 and int(log["data"], 16) == 5 * ETHER
    logs = rpc(m, "eth_getLogs", {"fromBlock": "0x0", "toBlock": "latest", "address": contract})
    assert [x["transactionHash"] for x in logs] == ["0x" + _hash(deploy), "0x" + _hash(transfer)]
    block = rpc(m, "eth_getBlockByNumber", receipt["blockNumber"], True)
    assert block["hash"] == receipt["blockHash"] and block["transactions"][0]["hash"] == receipt["transactionHash"]

    # A revert with a reason: a receipt with status 0 that used gas and the nonce.
    too_much = sign(bob, nonce=0, to=contract, data=call_data("transfer(address,uint256)", alice.address, 6 * ETHER))
    outs = await run(chain, [m], [eth(too_much)])
    assert not outs[0].invalid
    failed = rpc(m, "eth_getTransactionReceipt", "0x" + _hash(too_much))
    assert failed["status"] == "0x0" and int(failed["gasUsed"], 16) > 21_000
    err = rpc_error(m, "eth_call", {"from": bob.address, "to": contract, "data": "0x" + too_much_data(alice)})
    assert err["code"] == 3 and err["data"].startswith(
        "0x" + selector("ERC20InsufficientBalance(address,uint256,uint256)").hex()
    )
    estimate = int(
        rpc(m, "eth_estimateGas", {"from": alice.address, "to": contract, "data": "0x" + transfer_data(bob)}), 16
    )
    assert 21_000 < estimate < 60_000


def transfer_data(to: Any) -> str:
    return call_data("transfer(address,uint256)", to.address, 1).hex()


def too_much_data(to: Any) -> str:
    return call_data("transfer(address,uint256)", to.address, 10**30).hex()


def _hash(raw: bytes) -> str:
    from conclavium.eth.hashing import keccak256

    return keccak256(raw).hex()


async def test_three_executors_agree_and_a_snapshot_keeps_the_evm_state() -> None:
    alice, bob = new_account(), new_account()
    chain, machines = await ledger(3, [alice])
    probe = compiled()["Probe"]
    deploy = sign(alice, nonce=0, data=bytes.fromhex(probe["bytecode"][2:]), gas=2_000_000)
    block = chain.block([eth(deploy), eth(sign(alice, nonce=1, to=bob.address, value=7, gas=21_000))])
    for m in machines:
        await m.apply(*block)
    roots = {m.uncommitted[chain.height].root for m in machines}
    assert len(roots) == 1
    restored = LedgerMachine(LEDGER, BatchVerifier(1), secrets=chain.secrets)
    restored.restore(machines[0].snapshot())
    assert rpc(restored, "eth_getBalance", bob.address) == "0x7"
    assert rpc(restored, "eth_getTransactionCount", alice.address) == "0x2"


async def test_the_blocks_cached_evm_gives_what_one_fresh_evm_per_transaction_gives() -> None:
    """The same transactions in one block (one EVM reused, `block_evm.py`) and one per block (a new
    EVM each): the same outcomes, gas and state."""
    alice, bob = new_account(), new_account()
    c = compiled()
    token_code = bytes.fromhex(c["Token"]["bytecode"][2:]) + (10**24).to_bytes(32, "big")
    raws = [
        sign(alice, nonce=0, data=token_code, gas=3_000_000),
        sign(alice, nonce=1, data=bytes.fromhex(c["Probe"]["bytecode"][2:]), gas=2_000_000),
    ]
    from eth_utils import to_checksum_address

    from conclavium.eth.hashing import keccak256 as k

    def created(n: int) -> str:
        import rlp

        return to_checksum_address(k(rlp.encode([bytes.fromhex(alice.address[2:]), n]))[12:])

    token, probe = created(0), created(1)
    steps = [
        (token, call_data("transfer(address,uint256)", bob.address, 5)),
        (token, call_data("transfer(address,uint256)", bob.address, 10**30)),  # reverts
        (probe, call_data("store(uint256)", 9)),
        (probe, call_data("storeOther(address,uint256)", probe, 13)),  # reverts inside the callee
        (probe, call_data("make(bytes32)", 3)),
        (token, call_data("transfer(address,uint256)", probe, 7)),
        (probe, call_data("readOther(address)", probe)),
    ]
    raws += [sign(alice, nonce=2 + i, to=to, data=data, gas=300_000) for i, (to, data) in enumerate(steps)]
    raws.append(sign(alice, nonce=2 + len(steps), to=bob.address, value=3, gas=21_000))
    one_chain, (one,) = await ledger(1, [alice])
    many_chain, (many,) = await ledger(1, [alice])
    await run(one_chain, [one], [eth(r) for r in raws])
    for r in raws:
        await run(many_chain, [many], [eth(r)])
    for r in raws:
        a = rpc(one, "eth_getTransactionReceipt", "0x" + _hash(r))
        b = rpc(many, "eth_getTransactionReceipt", "0x" + _hash(r))
        assert (a["status"], a["gasUsed"], a["logs"][0]["data"] if a["logs"] else None) == (
            b["status"],
            b["gasUsed"],
            b["logs"][0]["data"] if b["logs"] else None,
        )
    assert [x["status"] for x in (rpc(one, "eth_getTransactionReceipt", "0x" + _hash(r)) for r in raws)].count(
        "0x0"
    ) == 2
    prefix = "public:sys.eth."
    for name in sorted(m for m in one.state.maps if m.startswith(prefix) and "txs" not in m and "block" not in m):
        assert one.state.maps[name] == many.state.maps.get(name), name
    digests_one = [d for _, d in one.index.block(one_chain.height - 1).leaves]
    digests_many = [
        d
        for h in range(many_chain.height - 2 * len(raws) + 1, many_chain.height, 2)
        for _, d in many.index.block(h).leaves
    ]
    assert len(digests_one) == len(digests_many) == len(raws)


def test_only_code_that_reaches_no_other_account_counts_as_isolated() -> None:
    assert evm.isolated(b"")
    assert evm.isolated(bytes.fromhex("60f100"))  # 0xf1 is PUSH1's data, not CALL
    assert evm.isolated(bytes.fromhex("7f" + "f1" * 32 + "00"))
    assert evm.isolated(bytes.fromhex("00f1"))  # after STOP with no JUMPDEST before it: never executed
    assert not evm.isolated(bytes.fromhex("f1"))
    assert not evm.isolated(bytes.fromhex("005bf1"))  # a JUMPDEST makes what follows reachable
    assert not evm.isolated(bytes.fromhex("600131"))  # BALANCE


async def test_calls_to_isolated_code_give_what_asking_the_evm_each_round_gives(monkeypatch: Any) -> None:
    """A call to code that reaches no other account (an ERC-20) runs once, without asking the EVM
    which accounts it looked up; forcing that check on every call gives the same outcomes and state."""
    alice, bob, carol = new_account(), new_account(), new_account()
    c = compiled()
    token_code = bytes.fromhex(c["Token"]["bytecode"][2:]) + (10**24).to_bytes(32, "big")
    token, probe = _created(alice, 0), _created(alice, 1)
    setup = [
        sign(alice, nonce=0, data=token_code, gas=3_000_000),
        sign(alice, nonce=1, data=bytes.fromhex(c["Probe"]["bytecode"][2:]), gas=2_000_000),
        sign(alice, nonce=2, to=token, data=call_data("transfer(address,uint256)", bob.address, 50), gas=100_000),
        sign(alice, nonce=3, to=token, data=call_data("transfer(address,uint256)", carol.address, 50), gas=100_000),
    ]
    block = [
        sign(bob, nonce=0, to=token, data=call_data("transfer(address,uint256)", carol.address, 7), gas=100_000),
        sign(carol, nonce=0, to=token, data=call_data("transfer(address,uint256)", alice.address, 10**9), gas=100_000),
        sign(alice, nonce=4, to=probe, data=call_data("storeOther(address,uint256)", probe, 13), gas=300_000),
        sign(carol, nonce=1, to=token, data=call_data("transfer(address,uint256)", bob.address, 3), gas=100_000),
        sign(bob, nonce=1, to=carol.address, value=11, gas=21_000),
    ]
    machines = []
    for forced in (False, True):
        if forced:
            monkeypatch.setattr(evm, "isolated", lambda code: False)
        chain, (m,) = await ledger(1, [alice, bob, carol])
        await run(chain, [m], [eth(r) for r in setup])
        await run(chain, [m], [eth(r) for r in block])
        machines.append(m)
    fast, slow = machines
    monkeypatch.undo()
    assert evm.isolated(bytes.fromhex(rpc(fast, "eth_getCode", token)[2:]))
    assert not evm.isolated(bytes.fromhex(rpc(fast, "eth_getCode", probe)[2:]))
    for r in setup + block:
        a, b = (rpc(m, "eth_getTransactionReceipt", "0x" + _hash(r)) for m in (fast, slow))
        logs = [[(x["address"], x["topics"], x["data"]) for x in y["logs"]] for y in (a, b)]
        assert (a["status"], a["gasUsed"], logs[0]) == (b["status"], b["gasUsed"], logs[1])
    assert [rpc(fast, "eth_getTransactionReceipt", "0x" + _hash(r))["status"] for r in block] == [
        "0x1",
        "0x0",  # more than carol holds
        "0x0",  # reverts inside the callee (not isolated: the round-by-round run)
        "0x1",
        "0x1",
    ]
    prefix = "public:sys.eth."
    names = {n for m in machines for n in m.state.maps if n.startswith(prefix) and "txs" not in n and "block" not in n}
    for name in sorted(names):
        assert fast.state.maps.get(name) == slow.state.maps.get(name), name


def _created(deployer: Any, nonce: int) -> str:
    import rlp
    from eth_utils import to_checksum_address

    from conclavium.eth.hashing import keccak256

    return to_checksum_address(keccak256(rlp.encode([bytes.fromhex(deployer.address[2:]), nonce]))[12:])


async def test_reads_never_go_back_across_executors_and_empty_blocks_are_stable() -> None:
    """The gateway hands each read to any executor. One that executed a block but has not yet
    counted its commit signatures must not answer a read that asks for that committed height
    (its block number would be lower than the receipt another executor gave; a filter polled
    there would skip the block). Blocks without entries (the ledger's idle heartbeats) advance
    the block number, with a hash and a time that do not change later."""
    alice, bob = new_account(), new_account()
    chain, (ahead, behind) = await ledger(2, [alice])
    first = rpc(ahead, "eth_blockNumber")
    raw = sign(alice, nonce=0, to=bob.address, value=3, gas=21_000)
    block = chain.block([eth(raw)])
    for m in (ahead, behind):
        await m.apply(*block)
    commit = chain.block([], [chain.sig_of(i, ahead.uncommitted[chain.height]) for i in range(3)])
    await ahead.apply(*commit)
    reply = answer(ahead, {"method": "eth_getTransactionReceipt", "params": ["0x" + _hash(raw)]})
    seen = reply["height"]
    receipt = reply["rpc"]["result"]
    mined = int(receipt["blockNumber"], 16)  # the height the status events announce as committed
    assert mined <= seen and behind.tip.height >= mined
    for wanted in (mined, seen):  # executed, not committed: behind for Ethereum reads
        with pytest.raises(QueryError) as refused:
            answer(behind, {"method": "eth_blockNumber", "params": [], "min_height": wanted})
        assert refused.value.code == "behind"
    await behind.apply(*commit)
    assert answer(behind, {"method": "eth_blockNumber", "params": [], "min_height": seen})["rpc"]["result"] == hex(seen)

    # A block filter resumed at the height after `first` reports every height up to the newest
    # committed one on the executor that answers, the receipt's block among them.
    changes = rpc(behind, "conclavium_filterChanges", {"kind": "blocks", "next": int(first, 16) + 1})
    assert receipt["blockHash"] in changes["changes"] and changes["next"] == seen + 1
    heads = rpc(behind, "conclavium_newHeads", {"next": int(first, 16) + 1, "logs": True})
    assert [h["hash"] for h in heads["heads"]] == changes["changes"] and heads["next"] == seen + 1
    assert all("transactions" not in h for h in heads["heads"]) and heads["logs"] == []  # a value transfer
    logs = rpc(behind, "conclavium_filterChanges", {"kind": "logs", "next": seen + 1, "criteria": {}})
    assert logs == {"changes": [], "next": seen + 1}

    # Empty blocks: the number moves on; their hash and time stay what they were.
    idle = chain.block([])
    for m in (ahead, behind):
        await m.apply(*idle)
    empty = rpc(ahead, "eth_getBlockByNumber", hex(seen + 1), False)
    assert rpc(ahead, "eth_blockNumber") == hex(seen + 1) and empty["transactions"] == []
    later = sign(alice, nonce=1, to=bob.address, value=1, gas=21_000)
    await run(chain, [ahead, behind], [eth(later)])
    for m in (ahead, behind):
        again = rpc(m, "eth_getBlockByNumber", hex(seen + 1), False)
        assert (again["hash"], again["timestamp"]) == (empty["hash"], empty["timestamp"])
        assert rpc(m, "eth_getBlockByHash", empty["hash"], False)["number"] == hex(seen + 1)
    newer = rpc(ahead, "eth_getTransactionReceipt", "0x" + _hash(later))
    assert (
        rpc(ahead, "eth_getBlockByNumber", newer["blockNumber"], False)["parentHash"]
        == rpc(ahead, "eth_getBlockByNumber", hex(int(newer["blockNumber"], 16) - 1), False)["hash"]
    )
