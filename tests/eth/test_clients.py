"""Unmodified Ethereum clients against a local network of real processes with the Ethereum
application on (`conclavium local up --eth`): web3.py, ethers 6 and Foundry's cast deploy and use
contracts compiled offline with solc-js; the same signed transactions give anvil's outcomes; the
executors agree on every root, also after one restarts.

Marker `protocol` (CI runs it; `-m "not protocol"` skips it locally): about 2-3 minutes here."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import rpc_client as rpc
from eth_account import Account
from eth_tools import CHAIN_ID, compiled, new_account, run_ethers, sign, tool
from web3 import Web3
from web3.exceptions import ContractCustomError, ContractLogicError, Web3RPCError
from web3.middleware import SignAndSendRawMiddlewareBuilder

from conclavium.local.network import LocalNetwork
from conclavium.local.processes import Process, free_port

pytestmark = pytest.mark.protocol


def rpc_url(net: LocalNetwork) -> str:
    return f"{net.gateway_url}/rpc"


def dev_key(net: LocalNetwork, i: int) -> str:
    doc = json.loads((net.dir / "local.json").read_text())
    return str(doc["applications"]["eth"]["accounts"][i]["private_key"])


def test_local_json_names_the_endpoint_and_funded_accounts(eth_net: LocalNetwork) -> None:
    doc = json.loads((eth_net.dir / "local.json").read_text())["applications"]["eth"]
    assert doc["rpc"] == rpc_url(eth_net) and doc["chain_id"] == CHAIN_ID and len(doc["accounts"]) == 5
    for a in doc["accounts"]:
        assert Account.from_key(a["private_key"]).address == a["address"]  # EIP-55, as wallets want it
        assert int(rpc.call(doc["rpc"], "eth_getBalance", a["address"], "latest"), 16) == 10_000 * 10**18


def test_web3py_deploys_and_uses_an_erc20_and_a_contract_calling_another(eth_net: LocalNetwork) -> None:
    w3 = Web3(Web3.HTTPProvider(rpc_url(eth_net)))
    me = Account.from_key(dev_key(eth_net, 0))
    w3.middleware_onion.inject(SignAndSendRawMiddlewareBuilder.build(me), layer=0)
    assert w3.eth.chain_id == CHAIN_ID and w3.is_connected()
    other = new_account().address
    c = compiled()

    def wait(h: Any) -> Any:
        return w3.eth.wait_for_transaction_receipt(h, timeout=30, poll_latency=0.05)

    deployed = wait(
        w3.eth.contract(abi=c["Token"]["abi"], bytecode=c["Token"]["bytecode"])
        .constructor(10**24)
        .transact({"from": me.address})
    )
    assert deployed.status == 1 and deployed.contractAddress
    token = w3.eth.contract(address=deployed.contractAddress, abi=c["Token"]["abi"])
    assert token.functions.symbol().call() == "CTT"
    sent = wait(token.functions.transfer(other, 12345).transact({"from": me.address}))
    assert sent.status == 1 and sent.gasUsed > 21_000 and sent.cumulativeGasUsed >= sent.gasUsed
    assert token.functions.balanceOf(other).call() == 12345
    (event,) = token.events.Transfer().process_receipt(sent)
    assert event.args.to == other and event.args.value == 12345
    logged = token.events.Transfer().get_logs(from_block=0, argument_filters={"to": other})
    assert [e.transactionHash for e in logged] == [sent.transactionHash]
    block = w3.eth.get_block(sent.blockNumber, full_transactions=True)
    assert block.hash == sent.blockHash and block.transactions[sent.transactionIndex].hash == sent.transactionHash
    assert w3.eth.get_transaction(sent.transactionHash)["from"] == me.address

    with pytest.raises(ContractCustomError):
        token.functions.transfer(other, 10**30).call({"from": me.address})
    probe_abi, probe_code = c["Probe"]["abi"], c["Probe"]["bytecode"]
    a = w3.eth.contract(
        address=wait(
            w3.eth.contract(abi=probe_abi, bytecode=probe_code).constructor().transact({"from": me.address})
        ).contractAddress,
        abi=probe_abi,
    )
    b = w3.eth.contract(
        address=wait(
            w3.eth.contract(abi=probe_abi, bytecode=probe_code).constructor().transact({"from": me.address})
        ).contractAddress,
        abi=probe_abi,
    )
    with pytest.raises(ContractLogicError, match="thirteen is refused"):
        a.functions.store(13).call()
    assert wait(a.functions.storeOther(b.address, 42).transact({"from": me.address})).status == 1
    assert b.functions.value().call() == 42 and a.functions.readOther(b.address).call() == 42
    made = wait(a.functions.make(b"\x01" * 32).transact({"from": me.address}))
    child = a.events.Stored().process_receipt(made)  # no Stored event: CREATE2 made a Child
    assert child == () and made.status == 1
    predicted = Web3.to_checksum_address(
        Web3.keccak(
            b"\xff" + bytes.fromhex(a.address[2:]) + b"\x01" * 32 + Web3.keccak(hexstr=_child_initcode(c, me.address))
        )[12:]
    )
    assert len(w3.eth.get_code(predicted)) > 0
    paid = wait(a.functions.pay(other).transact({"from": me.address, "value": 777}))
    assert paid.status == 1 and w3.eth.get_balance(other) == 777


def _child_initcode(c: dict[str, Any], owner: str) -> str:
    return c["Child"]["bytecode"] + "00" * 12 + owner[2:].lower()


def test_web3py_sees_geth_refusals(eth_net: LocalNetwork) -> None:
    w3 = Web3(Web3.HTTPProvider(rpc_url(eth_net)))
    me = Account.from_key(dev_key(eth_net, 1))
    to = new_account().address
    nonce = w3.eth.get_transaction_count(me.address, "pending")
    first = sign(me, nonce=nonce, to=to, value=1, gas=21_000)
    h = w3.eth.send_raw_transaction(first)
    assert w3.eth.wait_for_transaction_receipt(h, poll_latency=0.05).status == 1
    with pytest.raises(Web3RPCError, match="already known"):  # the same bytes again: geth's words
        w3.eth.send_raw_transaction(first)
    for raw, words in [
        (sign(me, nonce=nonce, to=to, value=2, gas=21_000), "nonce too low"),
        (sign(me, nonce=nonce + 1, to=to, value=1, gas=21_000, chainId=CHAIN_ID + 1), "invalid chain id"),
        (sign(me, nonce=nonce + 1, to=to, value=1, gas=20_000), "intrinsic gas too low"),
        (sign(new_account(), nonce=0, to=to, value=1, gas=21_000), r"insufficient funds for gas \* price \+ value"),
        (b"\x02\xc0", "rlp"),
    ]:
        with pytest.raises(Web3RPCError, match=words):
            w3.eth.send_raw_transaction(raw)
    assert w3.eth.get_transaction_count(me.address) == nonce + 1


def test_ethers6_session(eth_net: LocalNetwork, tmp_path: Path) -> None:
    seen = run_ethers("ethers_flow.js", rpc_url(eth_net), dev_key(eth_net, 2), tmp_path)
    assert seen["chainId"] == CHAIN_ID and seen["transferStatus"] == 1 and seen["transferLogs"] == 1
    assert seen["balance"] == str(2 * 10**18) and seen["events"] == [str(2 * 10**18)]
    assert seen["customError"] == "ERC20InsufficientBalance" and seen["reason"] == "thirteen is refused"
    assert seen["refused"] == "CALL_EXCEPTION" and seen["burst"] == [1] * 10
    assert seen["balanceAfterBurst"] == str(2 * 10**18 + 10) and seen["staleNonce"] == "NONCE_EXPIRED"
    assert seen["etherBalance"] == str(5 * 10**17)


def test_foundry_cast(eth_net: LocalNetwork) -> None:
    cast, url, key = tool("cast"), rpc_url(eth_net), dev_key(eth_net, 3)

    def run(*args: str) -> str:
        out = subprocess.run([cast, args[0], "--rpc-url", url, *args[1:]], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    assert run("chain-id") == str(CHAIN_ID)
    created = json.loads(
        run(
            "send",
            "--private-key",
            key,
            "--json",
            "--create",
            compiled()["Token"]["bytecode"],
            "constructor(uint256)",
            "1000",
        )
    )
    assert created["status"] == "0x1"
    token = created["contractAddress"]
    dead = "0x000000000000000000000000000000000000dEaD"
    sent = json.loads(run("send", "--private-key", key, "--json", token, "transfer(address,uint256)", dead, "7"))
    assert sent["status"] == "0x1"
    assert run("call", token, "balanceOf(address)(uint256)", dead) == "7"
    receipt = json.loads(run("receipt", "--json", sent["transactionHash"]))
    assert receipt["blockHash"] == sent["blockHash"] and receipt["logs"][0]["address"] == token.lower()
    refused = subprocess.run(
        [cast, "send", "--rpc-url", url, "--private-key", key, token, "transfer(address,uint256)", dead, "100000"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # (the npm wrapper of cast 1.7.1 exits 0 even here: the error is what it prints)
    assert "execution reverted" in refused.stderr and "0xe450d38c" in refused.stderr  # ERC20InsufficientBalance
    assert run("call", token, "balanceOf(address)(uint256)", dead) == "7"


def test_the_same_signed_transactions_give_anvils_outcomes(eth_net: LocalNetwork, tmp_path: Path) -> None:
    port = free_port()
    anvil = Process(
        "anvil",
        [
            tool("anvil"),
            "--port",
            str(port),
            "--chain-id",
            str(CHAIN_ID),
            "--hardfork",
            "cancun",
            "--base-fee",
            "0",
            "--gas-price",
            "0",
            "--silent",
        ],
        tmp_path / "anvil.log",
        port=port,
    )
    anvil.start()
    try:
        anvil.wait_ready()
        ours, theirs = rpc_url(eth_net), f"http://127.0.0.1:{port}"
        me, funder = new_account(), Account.from_key(dev_key(eth_net, 4))
        # The same starting balance on both: a transfer here, anvil's own cheat code there.
        funding = sign(
            funder,
            nonce=int(rpc.call(ours, "eth_getTransactionCount", funder.address, "pending"), 16),
            to=me.address,
            value=10**20,
            gas=21_000,
        )
        rpc.receipt(ours, rpc.call(ours, "eth_sendRawTransaction", "0x" + funding.hex()))
        rpc.call(theirs, "anvil_setBalance", me.address, hex(10**20))
        c = compiled()
        token = Web3.to_checksum_address(Web3.keccak(b"\xd6\x94" + bytes.fromhex(me.address[2:]) + b"\x80")[12:])
        probe = Web3.to_checksum_address(Web3.keccak(b"\xd6\x94" + bytes.fromhex(me.address[2:]) + b"\x01")[12:])
        t = Web3().eth.contract(abi=c["Token"]["abi"])
        p = Web3().eth.contract(abi=c["Probe"]["abi"])
        dead = "0x000000000000000000000000000000000000dEaD"
        txs = [
            {"data": c["Token"]["bytecode"] + (10**24).to_bytes(32, "big").hex(), "gas": 2_000_000},
            {"data": c["Probe"]["bytecode"], "gas": 2_000_000},
            {"to": token, "data": t.encode_abi("transfer", [dead, 5]), "gas": 100_000},
            {"to": token, "data": t.encode_abi("transfer", [dead, 10**30]), "gas": 100_000},
            {"to": dead, "value": 10**18, "gas": 21_000},
            {"to": probe, "data": p.encode_abi("store", [5]), "gas": 100_000},
            {"to": probe, "data": p.encode_abi("store", [13]), "gas": 100_000},
            {"to": probe, "data": p.encode_abi("make", [b"\x02" * 32]), "gas": 500_000},
            {"to": probe, "data": p.encode_abi("pay", [dead]), "value": 3, "gas": 100_000},
            {
                "to": token,
                "data": t.encode_abi("approve", [dead, 9]),
                "gas": 100_000,
                "type": 1,
                "accessList": [{"address": token, "storageKeys": ["0x" + "00" * 32]}],
                "gasPrice": 0,
            },
            {"to": dead, "value": 1, "gas": 21_000, "type": 0, "gasPrice": 0},
        ]
        raws = [sign(me, nonce=i, **tx) for i, tx in enumerate(txs)]
        for side in (ours, theirs):
            hashes = [rpc.call(side, "eth_sendRawTransaction", "0x" + raw.hex()) for raw in raws]
            results = [rpc.receipt(side, h) for h in hashes]
            if side == ours:
                mine = results
            else:
                anvils = results
        for i, (a, b) in enumerate(zip(mine, anvils, strict=True)):
            assert (a["status"], a["gasUsed"], a["contractAddress"]) == (
                b["status"],
                b["gasUsed"],
                b["contractAddress"],
            ), i
            assert [(x["address"], x["topics"], x["data"]) for x in a["logs"]] == [
                (x["address"], x["topics"], x["data"]) for x in b["logs"]
            ], i
        for address in (me.address, dead, token, probe):
            assert rpc.call(ours, "eth_getBalance", address, "latest") == rpc.call(
                theirs, "eth_getBalance", address, "latest"
            )
            assert rpc.call(ours, "eth_getCode", address, "latest") == rpc.call(
                theirs, "eth_getCode", address, "latest"
            )
        calls = [
            {"to": token, "data": t.encode_abi("balanceOf", [dead])},
            {"to": probe, "data": p.encode_abi("value", [])},
        ]
        for q in calls:
            assert rpc.call(ours, "eth_call", q, "latest") == rpc.call(theirs, "eth_call", q, "latest")
        revert = {"to": token, "data": t.encode_abi("transfer", [dead, 10**30]), "from": me.address}
        with pytest.raises(rpc.RpcFailed) as ours_err:
            rpc.call(ours, "eth_call", revert, "latest")
        with pytest.raises(rpc.RpcFailed) as theirs_err:
            rpc.call(theirs, "eth_call", revert, "latest")
        assert ours_err.value.error["code"] == theirs_err.value.error["code"] == 3
        assert ours_err.value.error["data"] == theirs_err.value.error["data"]
    finally:
        anvil.stop()


def test_json_rpc_batches_and_protocol_errors(eth_net: LocalNetwork) -> None:
    url = rpc_url(eth_net)
    status, answers = rpc.post(
        url,
        [
            {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []},
            {"jsonrpc": "2.0", "id": 2, "method": "eth_noSuchMethod", "params": []},
            {"jsonrpc": "2.0", "id": 3, "method": "eth_getBalance", "params": ["0x12"]},
            {"id": 4},
            {"jsonrpc": "2.0", "id": 5, "method": "net_version"},
        ],
    )
    assert status == 200 and [a["id"] for a in answers] == [1, 2, 3, 4, 5]
    assert answers[0]["result"] == hex(CHAIN_ID) and answers[4]["result"] == str(CHAIN_ID)
    assert [answers[i]["error"]["code"] for i in (1, 2, 3)] == [-32601, -32602, -32600]
    assert rpc.post(url, b"{not json") == (
        400,
        {"error": {"code": "invalid_json", "message": "request body is not valid JSON"}},
    )
    assert rpc.post(url, [])[1]["error"]["code"] == -32600
    assert rpc.post(url, b"{}", content_type="text/plain")[0] == 415
    for not_calls in (b"7", b"[1, {}]"):
        status, body = rpc.post(url, not_calls)
        assert status == 400 and body["error"]["code"] == "invalid_request"


def test_filters_follow_new_blocks_and_logs(eth_net: LocalNetwork) -> None:
    url = rpc_url(eth_net)
    me = Account.from_key(dev_key(eth_net, 0))
    blocks = rpc.call(url, "eth_newBlockFilter")
    logs = rpc.call(url, "eth_newFilter", {"fromBlock": "latest"})
    nonce = int(rpc.call(url, "eth_getTransactionCount", me.address, "pending"), 16)
    created = rpc.receipt(
        url,
        rpc.call(
            url,
            "eth_sendRawTransaction",
            "0x"
            + sign(
                me, nonce=nonce, data=compiled()["Token"]["bytecode"] + (5).to_bytes(32, "big").hex(), gas=2_000_000
            ).hex(),
        ),
    )
    assert created["blockHash"] in rpc.call(url, "eth_getFilterChanges", blocks)
    changes = rpc.call(url, "eth_getFilterChanges", logs)
    assert [x["transactionHash"] for x in changes] == [created["transactionHash"]]
    assert rpc.call(url, "eth_getFilterChanges", logs) == []
    assert rpc.call(url, "eth_uninstallFilter", logs) is True
    with pytest.raises(rpc.RpcFailed, match="filter not found"):
        rpc.call(url, "eth_getFilterChanges", logs)


def test_executors_agree_on_every_root_and_a_restarted_one_keeps_the_evm_state(eth_net: LocalNetwork) -> None:
    url = rpc_url(eth_net)
    me = Account.from_key(dev_key(eth_net, 1))
    eth_net.procs["executor-2"].stop()
    to = new_account().address
    nonce = int(rpc.call(url, "eth_getTransactionCount", me.address, "pending"), 16)
    for i in range(3):
        rpc.receipt(
            url,
            rpc.call(url, "eth_sendRawTransaction", "0x" + sign(me, nonce=nonce + i, to=to, value=5, gas=21_000).hex()),
        )
    eth_net.procs["executor-2"].start()
    eth_net.wait_ready(60)
    last = rpc.receipt(
        url, rpc.call(url, "eth_sendRawTransaction", "0x" + sign(me, nonce=nonce + 3, to=to, value=5, gas=21_000).hex())
    )
    deadline = time.monotonic() + 60
    while True:
        status = [_node_status(eth_net, f"executor-{i}") for i in range(3)]
        if len({(s["committed_height"], s["root"]) for s in status}) == 1 and status[0]["committed_height"] >= int(
            last["blockNumber"], 16
        ):
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    assert int(rpc.call(url, "eth_getBalance", to, "latest"), 16) == 20


def _node_status(net: LocalNetwork, name: str) -> dict[str, Any]:
    import asyncio

    from conclavium import streams
    from conclavium.encoding import dumps, loads
    from conclavium.runtime import connect_nats

    async def ask() -> dict[str, Any]:
        nc = await connect_nats(net.nats_url, "test")
        try:
            msg = await nc.request(
                streams.node_query_subject(net.opt.ledger, name), dumps({"type": "node_status"}), timeout=5
            )
            return dict(loads(msg.data))
        finally:
            await nc.close()

    return asyncio.run(ask())
