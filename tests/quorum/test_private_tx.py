"""GoQuorum private transactions with unmodified web3js-quorum 22.x, three members each at their own
party endpoint (docs/quorum.md): a private ERC-20 for {A, B}, a transfer, B's own transaction, a
second group {A, C}; non-parties and the public chain see only the marker, and a capture of NATS,
Redis, logs and the executors' disks holds no private payload or value."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.request import Request, urlopen

import nats
import pytest
import redis.asyncio as aioredis
from eth_tools import compiled, need_tools

from conclavium import streams
from conclavium.local.network import LocalNetwork, start_network

pytestmark = pytest.mark.protocol

ROOT = Path(__file__).resolve().parents[2]
QUORUM_JS = ROOT / ".tools" / "quorum-js" / "node_modules"


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalNetwork, list[dict[str, Any]]]]:
    """What `conclavium local up --quorum` starts; the parties as it writes them to local.json."""
    if shutil.which("node") is None or not (QUORUM_JS / "web3js-quorum").is_dir():
        pytest.skip("web3js-quorum is not installed: run scripts/install-tools.sh")
    need_tools()
    compiled()
    n = start_network(tmp_path_factory.mktemp("quorumtx"), redis=True, eth=True, quorum=True)
    try:
        doc = json.loads((n.dir / "local.json").read_text())["applications"]["quorum"]
        assert doc["ca"] == "service_cert.pem" and len(doc["parties"]) == 3
        yield n, doc["parties"]
    finally:
        n.stop()


def public_rpc(n: LocalNetwork, method: str, params: list[Any]) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    req = Request(f"{n.gateway_url}/rpc", data=body, headers={"Content-Type": "application/json"})
    with urlopen(req, timeout=10) as r:
        return json.loads(r.read())["result"]


def wait_parties(n: LocalNetwork, urls: list[str], keys: list[str]) -> None:
    ctx = ssl.create_default_context(cafile=str(n.dir / "service_cert.pem"))
    want = {"keys": [{"key": k} for k in sorted(keys)]}
    deadline = time.monotonic() + 90
    last: Any = None
    while time.monotonic() < deadline:
        try:
            got = [json.loads(urlopen(f"{u}/partyinfo/keys", timeout=5, context=ctx).read()) for u in urls]
            if all(g == want for g in got):
                return
            last = got
        except OSError as e:
            last = e
        time.sleep(0.3)
    raise AssertionError(f"party keys not served everywhere: {last!r}")


async def test_private_erc20_between_parties(net: tuple[LocalNetwork, list[dict[str, Any]]], tmp_path: Path) -> None:
    n, parties = net
    urls, keys = [p["rpc"] for p in parties], [p["public_key"] for p in parties]
    wait_parties(n, urls, keys)
    supply = int.from_bytes(b"\x5e\xc7" + secrets.token_bytes(14), "big")  # a marker value
    token = compiled()["Token"]
    cfg = {
        "urls": urls,
        "ca": str(n.dir / "service_cert.pem"),
        "keys": keys,
        "accounts": [a["private_key"] for a in n.eth_accounts[:3]],
        "token": {"abi": token["abi"], "bytecode": token["bytecode"]},
        "supply": str(supply),
        "tokens": [p["token"] for p in parties],
    }
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    seen: list[bytes] = []
    nc = await nats.connect(n.nats_url)

    async def capture(m: Any) -> None:
        seen.append(m.subject.encode() + b" " + m.data)

    try:
        for subject in (">", "_INBOX.>"):
            await nc.subscribe(subject, cb=capture)
        out = await asyncio.to_thread(
            subprocess.run,
            ["node", str(ROOT / "tests" / "quorum" / "js" / "private_flow.js"), str(tmp_path / "cfg.json")],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "NODE_PATH": str(QUORUM_JS)},
        )
        assert out.returncode == 0, out.stderr[-3000:]
        got = json.loads(out.stdout.strip().splitlines()[-1])
        js = nc.jetstream()
        stream = streams.ledger_stream(n.opt.ledger)
        info = await js.stream_info(stream)
        for seq in range(1, info.state.last_seq + 1):
            seen.append((await js.get_msg(stream, seq)).data)
    finally:
        await nc.close()
    a_addr = n.eth_accounts[0]["address"].lower()
    # The parties: A deployed for {A, B}, sent 250 to B, B sent 50 back from its own endpoint.
    assert got["deployStatus"] is True and got["backStatus"] is True and got["transferLogs"] == 1
    assert got["aBalance"] == str(supply - 200)
    assert got["bBalanceAtB"] == "200" and got["bSeesA"] == str(supply - 200)
    assert got["aCodeLength"] > 1000 and got["aPayloadLength"] > 1000
    # C is no party: no code, an empty call, the marker's receipt only (no contract, no logs), no payload.
    assert got["cCode"] == "0x" and got["cBalance"] is None and got["cPayload"] == "0x"
    assert got["cReceipt"]["contractAddress"] is None and got["cReceipt"]["logs"] == []
    assert got["cTransferReceipt"]["logs"] == []
    assert got["marker"]["from"].lower() == a_addr and len(got["marker"]["input"]) == 2 + 128
    # The second group {A, C}: invisible to B, visible to C.
    assert got["bOtherCode"] == "0x" and got["cOtherCodeLength"] > 1000
    # A caller without a token gets nothing from a party endpoint.
    unauthenticated = Request(
        urls[0],
        data=json.dumps(
            {"jsonrpc": "2.0", "id": 1, "method": "eth_getCode", "params": [got["token"], "latest"]}
        ).encode(),
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(HTTPError) as e:
        await asyncio.to_thread(
            urlopen, unauthenticated, timeout=10, context=ssl.create_default_context(cafile=cfg["ca"])
        )
    assert e.value.code == 401 and got["aCodeLength"] > 1000
    # The public chain (the gateway) holds only the marker.
    assert public_rpc(n, "eth_getCode", [got["token"], "latest"]) == "0x"
    public = public_rpc(n, "eth_getTransactionReceipt", [got["deployHash"]])
    assert public["contractAddress"] is None and public["logs"] == [] and public["status"] == "0x1"
    # Nothing private on the untrusted path.
    r = aioredis.from_url(n.redis_url)
    try:
        async for k in r.scan_iter("*"):
            seen.append(k + b" " + (await r.get(k) or b""))
    finally:
        await r.aclose()
    for f in [*(n.dir / "logs").rglob("*"), *(n.dir / "nodes").rglob("*")]:
        if f.is_file():
            seen.append(f.read_bytes())
    everything = b"\n".join(seen)
    assert got["marker"]["input"][2:].encode() in everything, "the capture works: the public marker is there"
    word = supply.to_bytes(32, "big")
    deploy = bytes.fromhex(got["deployData"][2:])
    for needle in (word, word.hex().encode(), base64.b64encode(deploy)[-200:-8], str(supply).encode()):
        assert needle not in everything, f"{needle[:40]!r} leaked to the untrusted path"
    # The group's private state survives a restart of A's executor (replayed from its own files).
    n.procs["executor-0"].restart()
    ctx = ssl.create_default_context(cafile=cfg["ca"])

    def private_rpc(method: str, params: list[Any]) -> Any:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {cfg['tokens'][0]}"}
        with urlopen(Request(urls[0], data=body, headers=headers), timeout=10, context=ctx) as r:
            return json.loads(r.read()).get("result")

    def code_after_restart() -> Any:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                code = private_rpc("eth_getCode", [got["token"], "latest"])
                if code and code != "0x":
                    return code
            except OSError:
                pass
            time.sleep(0.5)
        raise AssertionError("A's endpoint did not serve the private contract again after the restart")

    assert len(await asyncio.to_thread(code_after_restart)) == got["aCodeLength"]
