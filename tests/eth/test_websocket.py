"""JSON-RPC over WebSocket on the gateway (`ws://.../rpc`) against a local network of real
processes: unmodified web3.py (`AsyncWeb3(WebSocketProvider)`, `subscribe`) and ethers 6
(`WebSocketProvider`, block events, a contract event listener) get new heads and logs pushed and
make ordinary calls on the same socket; hostile input gets JSON-RPC errors; a client that does not
read has its socket closed and counted while the gateway keeps serving everyone else.

Marker `protocol`: about 1 minute here (one network start, two client sessions)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.request import urlopen

import pytest
import rpc_client as rpc
import websockets
from eth_account import Account
from eth_tools import CHAIN_ID, compiled, new_account, run_ethers, sign
from web3 import AsyncWeb3, Web3, WebSocketProvider

from conclavium.local.network import LocalNetwork

pytestmark = pytest.mark.protocol


def ws_url(net: LocalNetwork) -> str:
    return net.gateway_url.replace("http://", "ws://") + "/rpc"


def dev_key(net: LocalNetwork, i: int) -> str:
    doc = json.loads((net.dir / "local.json").read_text())
    return str(doc["applications"]["eth"]["accounts"][i]["private_key"])


def gateway_metric(net: LocalNetwork, name: str, labels: str = "") -> float:
    with urlopen(f"{net.gateway_url}/metrics", timeout=10) as r:
        text = r.read().decode()
    found = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def test_web3py_subscribes_to_new_heads_and_logs_and_calls_on_the_same_socket(eth_net: LocalNetwork) -> None:
    me = Account.from_key(dev_key(eth_net, 0))
    http = f"{eth_net.gateway_url}/rpc"
    token = rpc.receipt(
        http,
        rpc.call(
            http,
            "eth_sendRawTransaction",
            "0x"
            + sign(
                me,
                nonce=int(rpc.call(http, "eth_getTransactionCount", me.address, "pending"), 16),
                data=compiled()["Token"]["bytecode"] + (10**24).to_bytes(32, "big").hex(),
                gas=2_000_000,
            ).hex(),
        ),
    )["contractAddress"]
    token = Web3.to_checksum_address(token)
    other = new_account().address

    async def session() -> dict[str, Any]:
        async with AsyncWeb3(WebSocketProvider(ws_url(eth_net))) as w3:
            assert await w3.eth.chain_id == CHAIN_ID
            heads = await w3.eth.subscribe("newHeads")
            logs = await w3.eth.subscribe("logs", {"address": token})
            unrelated = await w3.eth.subscribe("logs", {"address": new_account().address})
            assert len({heads, logs, unrelated}) == 3
            contract = w3.eth.contract(address=token, abi=compiled()["Token"]["abi"])
            data = contract.encode_abi("transfer", [other, 77])
            nonce = await w3.eth.get_transaction_count(me.address, "pending")
            raw = sign(me, nonce=nonce, to=token, data=data, gas=100_000)
            sent = await w3.eth.send_raw_transaction(raw)
            seen: dict[str, list[Any]] = {heads: [], logs: [], unrelated: []}
            receipt = None

            async def collect() -> None:
                nonlocal receipt
                async for message in w3.socket.process_subscriptions():
                    seen[message["subscription"]].append(message["result"])
                    if receipt is None and seen[logs]:
                        receipt = await w3.eth.get_transaction_receipt(sent)  # a call amid notifications
                    if receipt is not None and any(h["number"] > receipt["blockNumber"] for h in seen[heads]):
                        return

            await asyncio.wait_for(collect(), 60)
            assert await w3.eth.unsubscribe(logs) is True
            assert await w3.eth.unsubscribe(heads) is True
            return {"seen": seen, "receipt": receipt, "sent": sent, "heads": heads, "logs": logs, "other": unrelated}

    got = asyncio.run(session())
    receipt, seen = got["receipt"], got["seen"]
    (log,) = seen[got["logs"]]
    assert log["transactionHash"] == got["sent"] and log["blockHash"] == receipt["blockHash"]
    assert int.from_bytes(log["data"], "big") == 77 and seen[got["other"]] == []
    numbers = [h["number"] for h in seen[got["heads"]]]
    assert numbers == list(range(numbers[0], numbers[-1] + 1))  # every height, in order
    at = [h for h in seen[got["heads"]] if h["number"] == receipt["blockNumber"]]
    assert at and at[0]["hash"] == receipt["blockHash"]  # the same hash a receipt and a head give


def test_ethers6_websocket_provider_block_and_contract_events(eth_net: LocalNetwork, tmp_path: Path) -> None:
    seen = run_ethers("ethers_ws.js", ws_url(eth_net), dev_key(eth_net, 1), tmp_path)
    assert seen["chainId"] == CHAIN_ID and seen["transferStatus"] == 1
    assert seen["eventValue"] == str(3 * 10**18) and seen["eventMatchesTx"] is True
    assert seen["balance"] == str(3 * 10**18)
    assert seen["filteredToOther"] is True and seen["filteredToNobody"] == 0
    assert seen["blocksIncreasing"] is True and seen["sawTransferBlock"] is True


async def _exchange(url: str, *messages: str | bytes) -> list[Any]:
    async with websockets.connect(url) as ws:
        answers = []
        for message in messages:
            await ws.send(message)
            answers.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
        return answers


def test_bad_input_over_the_socket_gets_json_rpc_errors(eth_net: LocalNetwork) -> None:
    url = ws_url(eth_net)
    answers = asyncio.run(
        _exchange(
            url,
            "{not json",
            json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["newPendingTransactions"]}),
            json.dumps({"jsonrpc": "2.0", "id": 2, "method": "eth_subscribe", "params": ["logs", {"topics": "x"}]}),
            json.dumps({"jsonrpc": "2.0", "id": 3, "method": "eth_unsubscribe", "params": ["0x1234"]}),
            json.dumps({"jsonrpc": "2.0", "id": 4, "method": "eth_nope", "params": []}),
            json.dumps([]),
            json.dumps([{"jsonrpc": "2.0", "id": 5, "method": "eth_chainId"}, {"id": 6}]),
            b'{"jsonrpc": "2.0", "id": 7, "method": "eth_blockNumber", "params": []}',
        )
    )
    assert answers[0]["error"]["code"] == -32700
    assert answers[1]["error"]["code"] == -32602 and "newPendingTransactions" in answers[1]["error"]["message"]
    assert answers[2]["error"]["code"] == -32602
    assert answers[3]["error"] == {"code": -32000, "message": "subscription not found"}
    assert answers[4]["error"]["code"] == -32601
    assert answers[5]["error"]["code"] == -32600
    assert answers[6][0]["result"] == hex(CHAIN_ID) and answers[6][1]["error"]["code"] == -32600
    assert int(answers[7]["result"], 16) > 0
    with pytest.raises(HTTPError) as plain:  # a GET without the upgrade
        urlopen(f"{eth_net.gateway_url}/rpc", timeout=10)
    assert plain.value.code == 400 and json.loads(plain.value.read())["error"]["code"] == "websocket_required"


def test_a_client_that_does_not_read_is_closed_and_counted_and_others_are_served(eth_net: LocalNetwork) -> None:
    url = ws_url(eth_net)
    dropped = gateway_metric(eth_net, "conclavium_gateway_ws_slow_consumers_closed_total")
    batch = json.dumps([{"jsonrpc": "2.0", "id": i, "method": "eth_chainId"} for i in range(1000)])

    async def flood() -> Any:
        # A stalled client: a small receive buffer, and a client library that stops reading after
        # one message (max_queue=1). The answers pile up on the gateway's side until its bound.
        host, port = eth_net.gateway_url.removeprefix("http://").split(":")
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        raw.connect((host, int(port)))
        raw.setblocking(False)
        async with websockets.connect(url, sock=raw, max_queue=1, max_size=None) as ws:
            await ws.send(json.dumps({"jsonrpc": "2.0", "id": "s", "method": "eth_subscribe", "params": ["newHeads"]}))
            sent = 0
            try:
                while sent < 1000:
                    await asyncio.wait_for(ws.send(batch), 30)
                    sent += 1
            except websockets.ConnectionClosed:
                pass
            with contextlib.suppress(websockets.ConnectionClosed):
                async for _ in ws:  # now read: what was written, then the close (or the cut)
                    pass
            return ws.close_code, sent

    code, sent = asyncio.run(flood())
    assert code in (1006, 1008), (code, sent)  # 1008 if the close frame got through, else the cut
    assert gateway_metric(eth_net, "conclavium_gateway_ws_slow_consumers_closed_total") == dropped + 1
    assert gateway_metric(eth_net, "conclavium_gateway_ws_messages_dropped_total", '{kind="response"}') > 0
    (answer,) = asyncio.run(_exchange(url, json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"})))
    assert answer["result"] == hex(CHAIN_ID)  # the gateway still serves a client that reads
    deadline = asyncio.run(_wait_for(lambda: gateway_metric(eth_net, "conclavium_gateway_ws_connections") == 0))
    assert deadline, "a closed socket still counts as open"
    assert gateway_metric(eth_net, "conclavium_gateway_ws_subscriptions", '{kind="newHeads"}') == 0


async def _wait_for(condition: Any, seconds: float = 30.0) -> bool:
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        if condition():
            return True
        await asyncio.sleep(0.1)
    return False
