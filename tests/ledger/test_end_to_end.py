"""A transaction's whole path through real processes: gateway → NATS → sequencer → three
executors → quorum commit → receipt verified offline."""

from __future__ import annotations

import asyncio

import pytest
from ledger_support import identity, user_keys, wait_all

from conclavium import receipt
from conclavium.local.network import LocalNetwork
from conclavium.sdk.client import Client, ClientError


async def test_thousand_transactions_commit_with_verifiable_receipts(network: LocalNetwork) -> None:
    keys = user_keys(network)
    clients = [Client(network.gateway_url, k) for k in keys]
    try:
        singles = await asyncio.gather(
            *(clients[i % 2].put("public:e2e", f"k{i}", {"i": i, "pad": "x" * 100}) for i in range(400))
        )
        batch_hashes: list[str] = []
        for b in range(6):
            txs = [
                await clients[b % 2].build([{"op": "put", "map": "public:e2e", "key": f"b{b}-{j}", "value": j}])
                for j in range(100)
            ]
            batch_hashes += await clients[b % 2].submit_batch(txs)
        hashes = list(singles) + batch_hashes
        assert len(set(hashes)) == 1000
        statuses = await wait_all(clients[0], hashes)
        assert all(s["status"] == "Committed" for s in statuses), [s for s in statuses if s["status"] != "Committed"][
            :3
        ]
        ident = identity(network)
        sample = hashes[::25] + hashes[-5:]
        receipts = await asyncio.gather(*(clients[0].receipt(h) for h in sample))
        for h, r in zip(sample, receipts, strict=True):
            v = receipt.verify(r, ident, tx_hash=h)
            assert len(v.signers) >= r["quorum"] >= 2 and len(v.members) >= ident.threshold
        clients[1].seen_height = clients[0].seen_height
        assert await clients[1].get("public:e2e", "k7") == {"i": 7, "pad": "x" * 100}
        assert await clients[0].get("public:e2e", "b3-42") == 42
    finally:
        for c in clients:
            await c.close()


async def test_private_map_needs_an_authorised_signed_query(network: LocalNetwork) -> None:
    alice_user, bob_user = user_keys(network)
    writer = Client(network.gateway_url, alice_user, **network.trust())
    other = Client(network.gateway_url, bob_user, **network.trust())
    anonymous = Client(network.gateway_url)
    try:
        h = await writer.put("medical", "patient-7", {"blood": "O-"})
        assert (await writer.wait(h))["status"] == "Committed"
        assert await writer.get("medical", "patient-7") == {"blood": "O-"}
        with pytest.raises(ClientError) as e:
            await other.get("medical", "patient-7")
        assert e.value.status == 404 and e.value.code == "not_found"
        with pytest.raises(ClientError) as e:
            await anonymous._request("GET", "/v1/state/medical/patient-7")
        assert e.value.status == 403 and e.value.code == "private_map"
    finally:
        for c in (writer, other, anonymous):
            await c.close()


async def test_every_executor_reaches_the_same_root(network: LocalNetwork) -> None:
    from conclavium.cli.local import _node_status

    names = [n for n in network.procs if n.startswith("executor-")]
    c = Client(network.gateway_url, user_keys(network)[0])
    try:
        h = await c.put("public:e2e", "root-check", 1)
        await c.wait(h)
        await c.receipt(h)
    finally:
        await c.close()
    for _ in range(50):
        st = await _node_status(network.nats_url, network.opt.ledger, names)
        heights = {s["committed_height"] for s in st}
        if len(heights) == 1:
            break
        await asyncio.sleep(0.1)
    assert len({s["root"] for s in st}) == 1 and len(heights) == 1, st
