"""Joining executors: a node with allowed code joins, is endorsed, receives the ledger secrets and
signs; nodes whose evidence the ledger's policy refuses never do."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from conclavium import node_messages, streams
from conclavium.attestation import expected_report_data, make_virtual_evidence
from conclavium.block import IntakeBatch, encode, entry_id
from conclavium.cli.local import _node_status
from conclavium.crypto import sealing
from conclavium.crypto.keys import PrivateKey
from conclavium.local.network import LocalNetwork
from conclavium.local.processes import Process, free_port, service_command
from conclavium.sdk.client import Client

EXPECTED_CHECK = {
    "disallowed measurement": "measurement",
    "evidence bound to another key": "report_data",
    "replayed evidence of another node": "report_data",
    "platform not allowed": "platform",
    "debug build": "debug",
}


@pytest.fixture(scope="module")
def join_net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    from conclavium.local.network import start_network

    net = start_network(tmp_path_factory.mktemp("join"), redis=False)
    yield net
    net.stop()


def _extra_executor(net: LocalNetwork, name: str) -> Process:
    port = free_port()
    argv = service_command("conclavium-executor", "services.executor.main")
    argv += ["--ledger", net.opt.ledger, "--nats-url", net.nats_url, "--name", name]
    argv += ["--data-dir", str(net.dir / "nodes" / name), "--http-port", str(port)]
    return Process(name, argv, net.dir / "logs" / f"{name}.log", port=port)


async def test_allowed_node_joins_catches_up_and_signs(join_net: LocalNetwork) -> None:
    user = Client(join_net.gateway_url, PrivateKey.from_file(str(join_net.dir / join_net.users[0]["key"])))
    extra = _extra_executor(join_net, "executor-9")
    try:
        for i in range(50):
            await user.put("public:join", f"before-{i}", i)
        extra.start()
        extra.wait_ready()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            (st,) = await _node_status(join_net.nats_url, join_net.opt.ledger, ["executor-9"])
            if st.get("ready"):
                break
            await asyncio.to_thread(join_net.endorse_nodes)  # its member (alice) endorses it once it joined
            await asyncio.sleep(0.3)
        assert st.get("ready"), st
        service = await user.service()
        while service["quorum"] != 3 and time.monotonic() < deadline:  # the answering executor may lag
            await asyncio.sleep(0.2)
            service = await user.service()
        node = next(n for n in service["nodes"] if n["name"] == "executor-9")
        assert node["status"] == "Trusted" and node["endorsed"] and node["platform"] == "virtual"
        assert service["quorum"] == 3  # four trusted executors: a majority is three
        h = await user.put("public:join", "after", 1)
        await user.wait(h)
        r = await user.receipt(h)
        signers = {s["node"] for s in r["signatures"]}
        deadline = time.monotonic() + 20
        while node["id"] not in signers and time.monotonic() < deadline:
            h = await user.put("public:join", "after", 2)
            await user.wait(h)
            signers = {s["node"] for s in (await user.receipt(h))["signatures"]}
        assert node["id"] in signers, "the new node signs commits"
        _, att = await user._request("GET", f"/v1/nodes/{node['id']}/attestation")
        assert att["claims"]["platform"] == "virtual" and att["evidence"]["platform"] == "virtual"
    finally:
        extra.stop()
        await user.close()


def _node_info(key: PrivateKey, enc_raw: bytes, evidence: dict[str, Any], name: str) -> node_messages.NodeInfo:
    return node_messages.NodeInfo(
        id=key.key_id, signing_key=key.public_key.pem, encryption_key=enc_raw.hex(), evidence=evidence, name=name
    )


def _virtual(measurement: bytes, report_data: bytes, debug: bool = False) -> dict[str, Any]:
    evidence = make_virtual_evidence(measurement, b"", report_data, debug=debug)
    return {"platform": "virtual", "evidence": base64.b64encode(evidence).decode()}


async def _submit_join(net: LocalNetwork, info: node_messages.NodeInfo, key: PrivateKey) -> str:
    msg = node_messages.Join(v=1, ledger=net.opt.ledger, ts=int(time.time() * 1000), node=info)
    entry = node_messages.make_entry(msg, key)
    nc = await nats.connect(net.nats_url)
    try:
        await nc.jetstream().publish(streams.intake_subject(net.opt.ledger), encode(IntakeBatch(entries=[entry])))
    finally:
        await nc.close()
    return entry_id(entry).hex()


def _fresh() -> tuple[PrivateKey, bytes, list[bytes]]:
    key = PrivateKey.generate()
    enc = sealing.public_bytes(sealing.generate_key())
    return key, enc, node_messages.bound_keys(key.public_key.spki, enc)


def _refused_cases(
    net: LocalNetwork, peer_evidence: dict[str, Any], vectors: Path
) -> dict[str, tuple[PrivateKey, node_messages.NodeInfo]]:
    cases = {}
    key, enc, bound = _fresh()
    cases["disallowed measurement"] = (
        key,
        _node_info(key, enc, _virtual(b"\xee" * 32, expected_report_data(bound)), "bad-measurement"),
    )
    key, enc, _ = _fresh()
    other = _fresh()[2]
    from conclavium.node_messages import VIRTUAL_DEV_MEASUREMENT

    good = bytes.fromhex(VIRTUAL_DEV_MEASUREMENT)
    cases["evidence bound to another key"] = (
        key,
        _node_info(key, enc, _virtual(good, expected_report_data(other)), "wrong-key"),
    )
    key, enc, _ = _fresh()
    cases["replayed evidence of another node"] = (key, _node_info(key, enc, peer_evidence, "replayer"))
    key, enc, _ = _fresh()
    quote = (vectors / "sgx" / "v3-dcapqvl" / "quote.bin").read_bytes()
    sgx = {"platform": "sgx", "evidence": base64.b64encode(quote).decode()}
    cases["platform not allowed"] = (key, _node_info(key, enc, sgx, "sgx-node"))
    key, enc, bound = _fresh()
    debug = _virtual(good, expected_report_data(bound), debug=True)
    cases["debug build"] = (key, _node_info(key, enc, debug, "debug-node"))
    return cases


async def test_refused_nodes_never_join_or_receive_secrets(join_net: LocalNetwork, attestation_vectors: Path) -> None:
    user = Client(join_net.gateway_url)
    try:
        service = await user.service()
        peer = next(n for n in service["nodes"] if n["name"] == "executor-1")
        _, att = await user._request("GET", f"/v1/nodes/{peer['id']}/attestation")
        hashes = {}
        for name, (key, info) in _refused_cases(join_net, att["evidence"], attestation_vectors).items():
            hashes[name] = (key.key_id, await _submit_join(join_net, info, key))
        for name, (_, h) in hashes.items():
            st = await user.wait(h)
            assert (st["status"], st["reason"]) == ("Invalid", "attestation_refused"), (name, st)
            assert EXPECTED_CHECK[name] in st["message"], (name, st["message"])
        # give any (wrong) endorsement time to happen, then check none did
        await asyncio.sleep(1.5)
        nodes = {n["id"]: n for n in (await user.service())["nodes"]}
        for name, (node_id, _) in hashes.items():
            assert node_id not in nodes, f"{name}: a refused node must not be recorded"
        endorsements = json.dumps((await user.service())["nodes"])
        assert all(node_id not in endorsements for node_id, _ in hashes.values())
    finally:
        await user.close()
